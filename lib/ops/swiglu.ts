/**
 * SwiGLU activation of the gated MLP: out = silu(gate) ⊙ up, silu(g) = g·sigmoid(g).
 * Safe for any finite |gate| (no overflow, no NaN).
 */
import { callNative } from './dispatch';
import { expectDtype, expectShape } from './validate';
import { Tensor } from '../tensor';

/** gate, up [...] float32 (same shape) → out [...] (a new tensor, or `out` when given; it may alias an input). */
export function swiglu(gate: Tensor, up: Tensor, out?: Tensor): Tensor {
  const op = 'swiglu';
  expectDtype(op, 'gate', gate, 'float32');
  expectDtype(op, 'up', up, 'float32');
  expectShape(op, 'up', up, gate.shape);
  if (out) {
    expectDtype(op, 'out', out, 'float32');
    expectShape(op, 'out', out, gate.shape);
  }
  const o = out ?? Tensor.empty(gate.shape, 'float32', gate.device);
  callNative('swiglu_fwd', [o.handle, gate.handle, up.handle, gate.numel]);
  return o;
}

/**
 * Backward of `swiglu`: dout, gate, up [...] float32 → { dgate, dup } (new tensors):
 *   dgate = dout⊙up⊙s⊙(1 + gate⊙(1 − s)), dup = dout⊙gate⊙s, s = sigmoid(gate).
 */
export function swigluBackward(dout: Tensor, gate: Tensor, up: Tensor): { dgate: Tensor; dup: Tensor } {
  const op = 'swigluBackward';
  expectDtype(op, 'dout', dout, 'float32');
  expectDtype(op, 'gate', gate, 'float32');
  expectDtype(op, 'up', up, 'float32');
  expectShape(op, 'gate', gate, dout.shape);
  expectShape(op, 'up', up, dout.shape);
  const dgate = Tensor.empty(dout.shape, 'float32', dout.device), dup = Tensor.empty(dout.shape, 'float32', dout.device);
  callNative('swiglu_bwd', [dgate.handle, dup.handle, dout.handle, gate.handle, up.handle, dout.numel]);
  return { dgate, dup };
}
