/**
 * Elementwise ops: add, mul, scale, axpy, fill, the gated residual x + g·F(x) of a
 * routed layer (forward and backward), bias add, sum of squares, dtype cast.
 * Each returns a new tensor unless `out` is given (which may alias an input).
 */
import { callNative } from './dispatch';
import { expectDtype, expectShape, expectFinite, rowsCols } from './validate';
import { Device, DType, Tensor } from '../tensor';

function outOrNew(op: string, out: Tensor | undefined, shape: readonly number[], dtype: DType, device: Device): Tensor {
  if (!out) return Tensor.empty(shape, dtype, device);
  expectDtype(op, 'out', out, dtype);
  expectShape(op, 'out', out, shape);
  return out;
}

function binary(op: 'add' | 'mul', a: Tensor, b: Tensor, out?: Tensor): Tensor {
  expectDtype(op, 'a', a, 'float32');
  expectDtype(op, 'b', b, 'float32');
  expectShape(op, 'b', b, a.shape);
  const o = outOrNew(op, out, a.shape, 'float32', a.device);
  callNative(op, [o.handle, a.handle, b.handle, a.numel]);
  return o;
}

export const add = (a: Tensor, b: Tensor, out?: Tensor): Tensor => binary('add', a, b, out);
export const mul = (a: Tensor, b: Tensor, out?: Tensor): Tensor => binary('mul', a, b, out);

export function scale(a: Tensor, s: number, out?: Tensor): Tensor {
  expectDtype('scale', 'a', a, 'float32');
  expectFinite('scale', 's', s);
  const o = outOrNew('scale', out, a.shape, 'float32', a.device);
  callNative('scale', [o.handle, a.handle, s, a.numel]);
  return o;
}

/** y += alpha * x (in place), returns y. */
export function axpy(y: Tensor, x: Tensor, alpha: number): Tensor {
  expectDtype('axpy', 'y', y, 'float32');
  expectDtype('axpy', 'x', x, 'float32');
  expectShape('axpy', 'x', x, y.shape);
  expectFinite('axpy', 'alpha', alpha);
  callNative('axpy', [y.handle, x.handle, alpha, y.numel]);
  return y;
}

export function fill(t: Tensor, value: number): Tensor {
  expectDtype('fill', 't', t, 'float32');
  callNative('fill', [t.handle, value, t.numel]);
  return t;
}

/** out = x + g[row] * f; g (one value per row) omitted means a plain residual add. */
export function gatedResidual(x: Tensor, f: Tensor, g?: Tensor, out?: Tensor): Tensor {
  const op = 'gatedResidual';
  expectDtype(op, 'x', x, 'float32');
  expectDtype(op, 'f', f, 'float32');
  expectShape(op, 'f', f, x.shape);
  const [R, C] = rowsCols(x);
  if (g) {
    expectDtype(op, 'g', g, 'float32');
    expectShape(op, 'g', g, [R], '[rows]');
  }
  const o = outOrNew(op, out, x.shape, 'float32', x.device);
  callNative('gated_residual_fwd', [o.handle, x.handle, f.handle, g ? g.handle : null, R, C]);
  return o;
}

/** Backward of gatedResidual: df = g·dout, dg[row] = <dout[row], f[row]> (dx = dout). */
export function gatedResidualBackward(dout: Tensor, f: Tensor, g?: Tensor, want = { df: true, dg: true }): { df?: Tensor; dg?: Tensor } {
  const op = 'gatedResidualBackward';
  expectDtype(op, 'dout', dout, 'float32');
  expectShape(op, 'f', f, dout.shape);
  const [R, C] = rowsCols(dout);
  if (g) expectShape(op, 'g', g, [R], '[rows]');
  const df = want.df ? Tensor.empty(dout.shape, 'float32', dout.device) : undefined;
  const dg = want.dg ? Tensor.empty([R], 'float32', dout.device) : undefined;
  callNative('gated_residual_bwd', [df?.handle ?? null, dg?.handle ?? null, dout.handle, f.handle, g ? g.handle : null, R, C]);
  return { df, dg };
}

/** x[row] += bias, in place (bias float32 or bfloat16, length = last dim). */
export function addBias(x: Tensor, bias: Tensor): Tensor {
  expectDtype('addBias', 'x', x, 'float32');
  expectDtype('addBias', 'bias', bias, ['float32', 'bfloat16']);
  const [R, C] = rowsCols(x);
  expectShape('addBias', 'bias', bias, [C], '[C]');
  callNative('add_bias_fwd', [x.handle, bias.handle, R, C]);
  return x;
}

/** dbias = sum over rows of dout (accumulated into `into` when given). */
export function addBiasBackward(dout: Tensor, into?: Tensor): Tensor {
  expectDtype('addBiasBackward', 'dout', dout, 'float32');
  const [R, C] = rowsCols(dout);
  const d = into ?? Tensor.empty([C], 'float32', dout.device);
  expectShape('addBiasBackward', 'into', d, [C], '[C]');
  callNative('add_bias_bwd', [d.handle, dout.handle, R, C, into !== undefined]);
  return d;
}

/** min(max(x, lo), hi) elementwise (OLMoE's clip_qkv). */
export function clamp(x: Tensor, lo: number, hi: number, out?: Tensor): Tensor {
  expectDtype('clamp', 'x', x, 'float32');
  expectFinite('clamp', 'lo', lo);
  expectFinite('clamp', 'hi', hi);
  const o = outOrNew('clamp', out, x.shape, 'float32', x.device);
  callNative('clamp_fwd', [o.handle, x.handle, lo, hi, x.numel]);
  return o;
}

/** Backward of clamp: dout where lo < x < hi, else 0. */
export function clampBackward(dout: Tensor, x: Tensor, lo: number, hi: number): Tensor {
  expectDtype('clampBackward', 'dout', dout, 'float32');
  expectShape('clampBackward', 'x', x, dout.shape);
  const dx = Tensor.empty(dout.shape, 'float32', dout.device);
  callNative('clamp_bwd', [dx.handle, dout.handle, x.handle, lo, hi, dout.numel]);
  return dx;
}

export function sumSquares(x: Tensor): number {
  expectDtype('sumSquares', 'x', x, 'float32');
  return callNative<number>('sum_squares', [x.handle, x.numel]);
}

/** float32 <-> bfloat16 (round to nearest even). */
export function cast(x: Tensor, dtype: 'float32' | 'bfloat16'): Tensor {
  expectDtype('cast', 'x', x, ['float32', 'bfloat16']);
  const o = Tensor.empty(x.shape, dtype, x.device);
  callNative('cast', [o.handle, x.handle, x.numel]);
  return o;
}
