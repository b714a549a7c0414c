/**
 * Fused softmax cross-entropy over the vocabulary (the LM loss):
 *   lse = logsumexp(logits[t]),  rowLoss[t] = lse[t] − logits[t, target[t]],
 *   loss = mean of rowLoss over counted rows (targets ≠ ignoreIndex); 0 when none count.
 * `crossEntropyBackward` gives (softmax − onehot)·scale without storing probabilities.
 */
import { callNative } from './dispatch';
import { expectDtype, expectFinite, expectInt, expectShape, rowsCols } from './validate';
import { ShapeError } from '../errors';
import { Tensor } from '../tensor';

const I32_MIN = -(2 ** 31), I32_MAX = 2 ** 31 - 1;

export interface CrossEntropyOptions {
  /** target value of rows that are not counted (default -100, as PyTorch) */
  ignoreIndex?: number;
  /** also return the per-row losses (0 on ignored rows) */
  rowLoss?: boolean;
}

function checkLogitsTargets(op: string, logits: Tensor, targets: Tensor): [number, number] {
  expectDtype(op, 'logits', logits, 'float32');
  expectDtype(op, 'targets', targets, 'int32');
  if (logits.rank < 1) throw new ShapeError(`${op}: 'logits' expected shape [T, V], received []`);
  expectShape(op, 'targets', targets, logits.shape.slice(0, -1), '[T]');
  return rowsCols(logits);
}

/**
 * logits [T, V] float32 (or [..., V]), targets int32 [T] (or [...]) with values in
 * [0, V) or ignoreIndex → { loss (mean over counted rows), counted, lse [T],
 * rowLoss [T] (when asked) }.
 */
export function crossEntropy(
  logits: Tensor,
  targets: Tensor,
  opts: CrossEntropyOptions = {},
): { loss: number; counted: number; lse: Tensor; rowLoss?: Tensor } {
  const op = 'crossEntropy';
  const [T, V] = checkLogitsTargets(op, logits, targets);
  const ignoreIndex = opts.ignoreIndex ?? -100;
  expectInt(op, 'ignoreIndex', ignoreIndex, I32_MIN, I32_MAX);
  const lse = Tensor.empty(targets.shape, 'float32', logits.device);
  const rowLoss = opts.rowLoss ? Tensor.empty(targets.shape, 'float32', logits.device) : undefined;
  try {
    const r = callNative<{ loss: number; counted: number }>('cross_entropy_fwd', [
      rowLoss?.handle ?? null, lse.handle, logits.handle, targets.handle, T, V, ignoreIndex,
    ]);
    return { loss: r.loss, counted: r.counted, lse, rowLoss };
  } catch (e) {
    lse.dispose(); // a target out of range
    rowLoss?.dispose();
    throw e;
  }
}

export interface CrossEntropyBackwardOptions {
  ignoreIndex?: number;
  /** dloss scale (dL/dloss divided by the row count); default 1/counted (0 when none count) */
  scale?: number;
  /** write dlogits over logits and return it (default false) */
  inPlace?: boolean;
}

/**
 * Backward of `crossEntropy` for loss = mean: logits [T, V], lse [T] (from the forward),
 * targets [T] → dlogits [T, V] = (softmax(logits) − onehot(target))·scale on counted
 * rows, 0 on ignored rows (a new tensor, or logits itself with { inPlace: true }).
 */
export function crossEntropyBackward(logits: Tensor, lse: Tensor, targets: Tensor, opts: CrossEntropyBackwardOptions = {}): Tensor {
  const op = 'crossEntropyBackward';
  const [T, V] = checkLogitsTargets(op, logits, targets);
  expectDtype(op, 'lse', lse, 'float32');
  expectShape(op, 'lse', lse, targets.shape, '[T]');
  const ignoreIndex = opts.ignoreIndex ?? -100;
  expectInt(op, 'ignoreIndex', ignoreIndex, I32_MIN, I32_MAX);
  let scale = opts.scale;
  if (scale === undefined) {
    let counted = 0;
    for (const y of targets.toInt32Array()) if (y !== ignoreIndex) counted++;
    scale = counted > 0 ? 1 / counted : 0;
  }
  expectFinite(op, 'scale', scale);
  const out = opts.inPlace ? logits : Tensor.empty(logits.shape, 'float32', logits.device);
  try {
    callNative('cross_entropy_bwd', [out.handle, logits.handle, lse.handle, targets.handle, T, V, ignoreIndex, scale]);
  } catch (e) {
    if (!opts.inPlace) out.dispose(); // a target out of range
    throw e;
  }
  return out;
}
