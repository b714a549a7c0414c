/**
 * Tensor: a shape and dtype over native, 64-byte aligned memory.
 *
 * Memory is freed deterministically: `t.dispose()`, or `tidy(fn)`, which disposes
 * every tensor created inside `fn` except those it returns or `keep()`s. The native
 * finalizer frees what JS drops without disposing (a safety net, not the plan).
 * Reshaped views share storage and reference-count it.
 */
import { ArgumentError, DisposedError, DTypeError, ShapeError } from './errors';
import { native, NativeHandle } from './native';

export type DType = 'float32' | 'bfloat16' | 'int32';
export type Device = 'cpu' | 'cuda';

const DEVICE_CODE: Record<Device, number> = { cpu: 0, cuda: 1 };

export const DTYPE_CODE: Record<DType, number> = { float32: 0, bfloat16: 1, int32: 2 };
export const DTYPE_BYTES: Record<DType, number> = { float32: 4, bfloat16: 2, int32: 4 };

export type TensorData = Float32Array | Int32Array | Uint16Array | ArrayLike<number>;

class Storage {
  refs = 1;
  constructor(
    public handle: NativeHandle | null,
    readonly numel: number,
  ) {}
  release(): void {
    if (--this.refs === 0 && this.handle) {
      native().tensor_free(this.handle);
      this.handle = null;
    }
  }
}

const scopeStack: Set<Tensor>[] = [];

export function shapeNumel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new ShapeError(`tensor: expected non-negative integer dimensions, received [${shape.join(', ')}]`);
    n *= d;
  }
  if (n > 2 ** 46) throw new ShapeError(`tensor: [${shape.join(', ')}] has too many elements (${n})`);
  return n;
}

export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: Device;
  readonly numel: number;
  private storage: Storage | null;

  private constructor(storage: Storage, shape: readonly number[], dtype: DType, device: Device) {
    this.storage = storage;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.device = device;
    this.numel = shapeNumel(shape);
    const scope = scopeStack[scopeStack.length - 1];
    if (scope) scope.add(this);
  }

  /** Uninitialised tensor on `device` ('cuda' needs a CUDA build and a GPU). */
  static empty(shape: readonly number[], dtype: DType = 'float32', device: Device = 'cpu'): Tensor {
    const numel = shapeNumel(shape);
    if (!(dtype in DTYPE_CODE)) throw new DTypeError(`tensor: unknown dtype '${dtype}', expected float32, bfloat16 or int32`);
    if (!(device in DEVICE_CODE)) throw new ArgumentError(`tensor: unknown device '${device}', expected cpu or cuda`);
    const handle = device === 'cpu' ? native().tensor_alloc(numel, DTYPE_CODE[dtype]) : native().tensor_alloc(numel, DTYPE_CODE[dtype], DEVICE_CODE[device]);
    return new Tensor(new Storage(handle, numel), shape, dtype, device);
  }

  static zeros(shape: readonly number[], dtype: DType = 'float32', device: Device = 'cpu'): Tensor {
    const t = Tensor.empty(shape, dtype, device);
    if (t.numel > 0) t.write(dtype === 'float32' ? new Float32Array(t.numel) : dtype === 'int32' ? new Int32Array(t.numel) : new Uint16Array(t.numel));
    return t;
  }

  /**
   * A tensor holding `data`. For bfloat16, `data` is float values (rounded to nearest
   * even) unless it is a Uint16Array, taken as raw bfloat16 bits.
   */
  static from(data: TensorData, shape?: readonly number[], dtype?: DType, device: Device = 'cpu'): Tensor {
    const dt: DType = dtype ?? (data instanceof Int32Array ? 'int32' : 'float32');
    const sh = shape ?? [data.length];
    const numel = shapeNumel(sh);
    if (numel !== data.length)
      throw new ShapeError(`tensor: shape [${sh.join(', ')}] needs ${numel} values, received ${data.length}`);
    const t = Tensor.empty(sh, dt, device);
    if (dt === 'bfloat16' && !(data instanceof Uint16Array)) {
      t.write(floatToBf16Bits(data));
    } else if (dt === 'int32') {
      const arr = data instanceof Int32Array ? data : Int32Array.from(data as ArrayLike<number>);
      for (let i = 0; i < arr.length; i++) {
        const v = (data as ArrayLike<number>)[i];
        if (v !== arr[i]) throw new DTypeError(`tensor: int32 data holds a non-int32 value ${v} at index ${i}`);
      }
      t.write(arr);
    } else if (dt === 'float32') {
      t.write(data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>));
    } else {
      t.write(data as Uint16Array);
    }
    return t;
  }

  get disposed(): boolean {
    return this.storage === null || this.storage.handle === null;
  }

  /** The native handle; throws if disposed. */
  get handle(): NativeHandle {
    if (!this.storage || !this.storage.handle)
      throw new DisposedError(`tensor [${this.shape.join(', ')}] ${this.dtype} was used after dispose()`);
    return this.storage.handle;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** Copies `data` (matching typed array) into the tensor at element `offset`. */
  write(data: Float32Array | Int32Array | Uint16Array, offset = 0): this {
    native().tensor_write(this.handle, data, offset);
    return this;
  }

  /** float32 values (bfloat16 widened). */
  toFloat32Array(): Float32Array {
    if (this.dtype === 'int32') throw new DTypeError(`tensor: toFloat32Array() on an int32 tensor; use toInt32Array()`);
    if (this.dtype === 'bfloat16') return bf16BitsToFloat(this.toBf16Bits());
    const out = new Float32Array(this.numel);
    native().tensor_read(this.handle, out, 0);
    return out;
  }

  toInt32Array(): Int32Array {
    if (this.dtype !== 'int32') throw new DTypeError(`tensor: toInt32Array() on a ${this.dtype} tensor`);
    const out = new Int32Array(this.numel);
    native().tensor_read(this.handle, out, 0);
    return out;
  }

  toBf16Bits(): Uint16Array {
    if (this.dtype !== 'bfloat16') throw new DTypeError(`tensor: toBf16Bits() on a ${this.dtype} tensor`);
    const out = new Uint16Array(this.numel);
    native().tensor_read(this.handle, out, 0);
    return out;
  }

  toArray(): number[] {
    return Array.from(this.dtype === 'int32' ? this.toInt32Array() : this.toFloat32Array());
  }

  /** A view with another shape over the same storage (same element count). */
  reshape(shape: readonly number[]): Tensor {
    const n = shapeNumel(shape);
    if (n !== this.numel)
      throw new ShapeError(`reshape: [${this.shape.join(', ')}] has ${this.numel} elements, [${shape.join(', ')}] needs ${n}`);
    void this.handle; // throws if disposed
    this.storage!.refs++;
    return new Tensor(this.storage!, shape, this.dtype, this.device);
  }

  /** A copy in new storage. */
  clone(): Tensor {
    const t = Tensor.empty(this.shape, this.dtype, this.device);
    native().tensor_copy(t.handle, this.handle, 0, 0, this.numel);
    return t;
  }

  /** This tensor on `device`: itself when already there, else a copy (the caller owns it). */
  to(device: Device): Tensor {
    void this.handle; // throws if disposed
    if (device === this.device) return this;
    const t = Tensor.empty(this.shape, this.dtype, device);
    if (this.numel > 0) native().tensor_copy(t.handle, this.handle, 0, 0, this.numel);
    return t;
  }

  /** Copies `count` elements from `src` (same dtype) at `srcOffset` into this at `dstOffset`. */
  copyFrom(src: Tensor, dstOffset = 0, srcOffset = 0, count = src.numel - srcOffset): this {
    native().tensor_copy(this.handle, src.handle, dstOffset, srcOffset, count);
    return this;
  }

  /** Frees the storage now (views share it: it is freed when the last one is disposed). */
  dispose(): void {
    if (!this.storage) return;
    this.storage.release();
    this.storage = null;
    for (const scope of scopeStack) scope.delete(this);
  }

  /** Removes the tensor from every enclosing tidy() scope so it outlives them. */
  keep(): this {
    for (const scope of scopeStack) scope.delete(this);
    return this;
  }

  toString(): string {
    return `Tensor([${this.shape.join(', ')}], ${this.dtype}${this.device === 'cpu' ? '' : `, ${this.device}`}${this.disposed ? ', disposed' : ''})`;
  }
}

function collectTensors(value: unknown, into: Set<Tensor>, depth = 0): void {
  if (depth > 4 || value === null || typeof value !== 'object') return;
  if (value instanceof Tensor) {
    into.add(value);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collectTensors(v, into, depth + 1);
    return;
  }
  if (Object.getPrototypeOf(value) === Object.prototype || value instanceof Map) {
    const values = value instanceof Map ? value.values() : Object.values(value as object);
    for (const v of values) collectTensors(v, into, depth + 1);
  }
}

/**
 * Runs `fn` in a scope: every tensor created inside it is disposed at the end, except
 * tensors in its result (a Tensor, or arrays/plain objects of them) and kept ones.
 * The survivors move to the enclosing scope.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopeStack.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopeStack.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopeStack.pop();
  const survivors = new Set<Tensor>();
  collectTensors(result, survivors);
  for (const t of scope) if (!survivors.has(t)) t.dispose();
  const parent = scopeStack[scopeStack.length - 1];
  if (parent) for (const t of survivors) if (scope.has(t)) parent.add(t);
  return result;
}

/** Disposes every tensor in a value (Tensor, arrays, plain objects). */
export function dispose(value: unknown): void {
  const found = new Set<Tensor>();
  collectTensors(value, found);
  for (const t of found) t.dispose();
}

/** float values → bfloat16 bits, round to nearest even (NaN stays NaN). */
export function floatToBf16Bits(data: ArrayLike<number>): Uint16Array {
  const f = Float32Array.from(data);
  const u = new Uint32Array(f.buffer);
  const out = new Uint16Array(f.length);
  for (let i = 0; i < u.length; i++) {
    const bits = u[i];
    if ((bits & 0x7f800000) === 0x7f800000 && bits & 0x007fffff) out[i] = (bits >>> 16) | 0x40;
    else out[i] = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

export function bf16BitsToFloat(bits: Uint16Array): Float32Array {
  const u = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) u[i] = bits[i] << 16;
  return new Float32Array(u.buffer);
}
