/**
 * RMSNorm over the last dimension (Llama / Qwen, no bias):
 *   out = (x * rstd) * w,  rstd = 1 / sqrt(mean(x^2) + eps)
 * `rmsnormBackward` gives dx and/or dw (dw accumulates deterministically: the same
 * bits for any thread count). Qwen3's per-head q/k norm is the same op on
 * x [T, H, D] with w [D].
 */
import { callNative } from './dispatch';
import { fill } from './elementwise';
import { expectDtype, expectFinite, expectShape, rowsCols } from './validate';
import { ArgumentError, ShapeError } from '../errors';
import { Tensor } from '../tensor';

function expectAtLeastRank1(op: string, x: Tensor): void {
  if (x.rank < 1) throw new ShapeError(`${op}: 'x' expected shape [..., C] (rank >= 1), received []`);
}

/**
 * x [..., C] float32, w [C] float32, eps >= 0
 *   → out [..., C] (a new tensor), rstd [...] (one per row, kept for the backward).
 */
export function rmsnorm(x: Tensor, w: Tensor, eps: number): { out: Tensor; rstd: Tensor } {
  const op = 'rmsnorm';
  expectDtype(op, 'x', x, 'float32');
  expectDtype(op, 'w', w, 'float32');
  expectAtLeastRank1(op, x);
  const [R, C] = rowsCols(x);
  expectShape(op, 'w', w, [C], '[C]');
  expectFinite(op, 'eps', eps);
  if (eps < 0) throw new ArgumentError(`${op}: 'eps' expected a number >= 0, received ${eps}`);
  const out = Tensor.empty(x.shape, 'float32', x.device);
  const rstd = Tensor.empty(x.shape.slice(0, -1), 'float32', x.device);
  callNative('rmsnorm_fwd', [out.handle, rstd.handle, x.handle, w.handle, R, C, eps]);
  return { out, rstd };
}

export interface RmsnormBackwardOptions {
  /** compute dx (default true) */
  needInput?: boolean;
  /** compute dw (default true) */
  needWeight?: boolean;
  /** accumulate dw into this [C] tensor instead of a new zeroed one */
  weightGradInto?: Tensor;
}

/**
 * Backward of `rmsnorm`: dout, x [..., C], w [C], rstd [...] (from the forward)
 *   → dx [..., C] (when needInput), dw [C] (when needWeight; added into weightGradInto
 *   when given, which is then returned as dw).
 *   dx = rstd·(dout⊙w) − x·rstd³/C·Σ(dout⊙w⊙x),  dw = Σ_rows dout⊙x·rstd.
 */
export function rmsnormBackward(
  dout: Tensor,
  x: Tensor,
  w: Tensor,
  rstd: Tensor,
  opts: RmsnormBackwardOptions = {},
): { dx?: Tensor; dw?: Tensor } {
  const op = 'rmsnormBackward';
  const needInput = opts.needInput ?? true;
  const needWeight = opts.needWeight ?? true;
  expectDtype(op, 'dout', dout, 'float32');
  expectDtype(op, 'x', x, 'float32');
  expectDtype(op, 'w', w, 'float32');
  expectDtype(op, 'rstd', rstd, 'float32');
  expectAtLeastRank1(op, x);
  expectShape(op, 'dout', dout, x.shape);
  const [R, C] = rowsCols(x);
  expectShape(op, 'w', w, [C], '[C]');
  expectShape(op, 'rstd', rstd, x.shape.slice(0, -1), '[rows]');
  const into = opts.weightGradInto;
  if (into) {
    if (!needWeight) throw new ArgumentError(`${op}: 'weightGradInto' expected only with needWeight, received needWeight=false`);
    expectDtype(op, 'weightGradInto', into, 'float32');
    expectShape(op, 'weightGradInto', into, [C], '[C]');
  }
  const dx = needInput ? Tensor.empty(x.shape, 'float32', x.device) : undefined;
  const dw = needWeight ? (into ?? fill(Tensor.empty([C], 'float32', x.device), 0)) : undefined;
  if (dx || dw) callNative('rmsnorm_bwd', [dx?.handle ?? null, dw?.handle ?? null, dout.handle, x.handle, w.handle, rstd.handle, R, C]);
  return { dx, dw };
}
