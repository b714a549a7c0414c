/**
 * Row gather / scatter: token-level skipping gathers the executed tokens (router
 * `execIdx`), runs the layer on them, and scatters the results back into the residual
 * stream. Gather's backward is a scatter-add into zeros; scatter's is a gather.
 * Indices are int32 in [0, rows); the native kernels reject anything else (RT_ERR_INDEX).
 */
import { callNative } from './dispatch';
import { expectDtype, expectInt, expectRank, expectShape, rowsCols } from './validate';
import { ShapeError } from '../errors';
import { Device, Tensor } from '../tensor';

/** A float32 tensor of zeros, filled natively (no JS-side buffer). */
function nativeZeros(shape: readonly number[], device: Device): Tensor {
  const t = Tensor.empty(shape, 'float32', device);
  if (t.numel > 0) callNative('fill', [t.handle, 0, t.numel]);
  return t;
}

function expectIndex(op: string, idx: Tensor): number {
  expectDtype(op, 'idx', idx, 'int32');
  expectRank(op, 'idx', idx, 1);
  return idx.shape[0];
}

function expectMatrix(op: string, name: string, t: Tensor): [number, number] {
  expectDtype(op, name, t, 'float32');
  if (t.rank < 1) throw new ShapeError(`${op}: '${name}' expected shape [rows, C], received []`);
  return rowsCols(t);
}

/**
 * out[n] = x[idx[n]]. x: [R, C] (or [..., C], rows flattened); idx: int32 [N] → [N, C],
 * a new tensor unless `out` ([N, C] float32) is given.
 */
export function gatherRows(x: Tensor, idx: Tensor, out?: Tensor): Tensor {
  const op = 'gatherRows';
  const [R, C] = expectMatrix(op, 'x', x);
  const N = expectIndex(op, idx);
  if (out) {
    expectDtype(op, 'out', out, 'float32');
    expectShape(op, 'out', out, [N, C], '[N, C]');
  }
  const o = out ?? Tensor.empty([N, C], 'float32', x.device);
  try {
    callNative('gather_rows', [o.handle, x.handle, idx.handle, N, R, C]);
  } catch (e) {
    if (!out) o.dispose();
    throw e;
  }
  return o;
}

/**
 * into[idx[n]] = y[n] (accumulate false: with repeated indices the last n wins) or
 * into[idx[n]] += y[n] (accumulate true: repeats add up), in place; returns `into`.
 * into: [R, C] (or [..., C]); y: [N, C]; idx: int32 [N].
 */
export function scatterRows(into: Tensor, y: Tensor, idx: Tensor, opts: { accumulate?: boolean } = {}): Tensor {
  const op = 'scatterRows';
  const [R, C] = expectMatrix(op, 'into', into);
  const N = expectIndex(op, idx);
  expectDtype(op, 'y', y, 'float32');
  expectShape(op, 'y', y, [N, C], '[N, C]');
  callNative('scatter_rows', [into.handle, y.handle, idx.handle, N, R, C, opts.accumulate ?? false]);
  return into;
}

/** Backward of gatherRows: dx [R, C] = zeros with dout[n] added at row idx[n]. */
export function gatherRowsBackward(dout: Tensor, idx: Tensor, rows: number): Tensor {
  const op = 'gatherRowsBackward';
  const N = expectIndex(op, idx);
  expectDtype(op, 'dout', dout, 'float32');
  expectRank(op, 'dout', dout, 2);
  expectShape(op, 'dout', dout, [N, -1], '[N, C]');
  expectInt(op, 'rows', rows, 0);
  const C = dout.shape[1];
  const dx = nativeZeros([rows, C], dout.device);
  try {
    callNative('scatter_rows', [dx.handle, dout.handle, idx.handle, N, rows, C, true]);
  } catch (e) {
    dx.dispose();
    throw e;
  }
  return dx;
}

/**
 * Backward of scatterRows with respect to y: dy [N, C] = dout[idx[n]]. (The gradient
 * with respect to `into` is dout itself when accumulating, and dout with the rows idx
 * zeroed when overwriting.)
 */
export function scatterRowsBackward(dout: Tensor, idx: Tensor): Tensor {
  const op = 'scatterRowsBackward';
  const [R, C] = expectMatrix(op, 'dout', dout);
  const N = expectIndex(op, idx);
  const dy = Tensor.empty([N, C], 'float32', dout.device);
  try {
    callNative('gather_rows', [dy.handle, dout.handle, idx.handle, N, R, C]);
  } catch (e) {
    dy.dispose();
    throw e;
  }
  return dy;
}
