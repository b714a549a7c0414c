/**
 * Error classes of the public API. Every error thrown by router-tuning (from TS
 * validation or from the native addon) carries a `code`:
 *   RT_ERR_SHAPE   sizes/shapes inconsistent        RT_ERR_DTYPE  wrong element type
 *   RT_ERR_INDEX   an index out of range            RT_ERR_ARG    a bad scalar argument
 *   RT_ERR_DISPOSED a tensor used after dispose()   RT_ERR_NOMEM  allocation failed
 *   RT_ERR_UNAVAILABLE backend not built/present    RT_ERR_LOAD   native addon not loadable
 */
export class RouterTuningError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'RouterTuningError';
    this.code = code;
  }
}

export class ShapeError extends RouterTuningError {
  constructor(message: string) {
    super('RT_ERR_SHAPE', message);
    this.name = 'ShapeError';
  }
}

export class DTypeError extends RouterTuningError {
  constructor(message: string) {
    super('RT_ERR_DTYPE', message);
    this.name = 'DTypeError';
  }
}

export class ArgumentError extends RouterTuningError {
  constructor(message: string) {
    super('RT_ERR_ARG', message);
    this.name = 'ArgumentError';
  }
}

export class DisposedError extends RouterTuningError {
  constructor(message: string) {
    super('RT_ERR_DISPOSED', message);
    this.name = 'DisposedError';
  }
}
