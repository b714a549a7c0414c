/**
 * AdamW optimiser step with PyTorch's torch.optim.AdamW semantics (decoupled weight
 * decay, bias correction, amsgrad off), fused into one pass over the parameters:
 *   g' = grad·gradScale ; p ← p·(1 − lr·wd) ; m ← lerp(m, g', 1 − β1) ; v ← β2·v + (1 − β2)·g'²
 *   p ← p − lr/(1 − β1^step) · m / (sqrt(v)/sqrt(1 − β2^step) + eps)
 */
import { callNative } from './dispatch';
import { expectDtype, expectFinite, expectInt, expectShape } from './validate';
import { ArgumentError } from '../errors';
import { Tensor } from '../tensor';

export interface AdamwState {
  /** first moment, shaped like the parameter (start from zeros) */
  m: Tensor;
  /** second moment, shaped like the parameter (start from zeros) */
  v: Tensor;
}

export interface AdamwOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** 1-based step count (bias correction) */
  step: number;
  /** multiplies the gradient first (e.g. 1/accumulation steps, or unscaling) */
  gradScale?: number;
}

/**
 * One AdamW step, in place: param, state.m and state.v are updated; returns param.
 * param, grad, m, v: float32, all the same shape. Defaults: beta1 0.9, beta2 0.999,
 * eps 1e-8, weightDecay 0.01 (PyTorch's AdamW defaults), gradScale 1.
 */
export function adamwStep(param: Tensor, grad: Tensor, state: AdamwState, opts: AdamwOptions): Tensor {
  const op = 'adamwStep';
  expectDtype(op, 'param', param, 'float32');
  expectDtype(op, 'grad', grad, 'float32');
  expectDtype(op, 'm', state.m, 'float32');
  expectDtype(op, 'v', state.v, 'float32');
  expectShape(op, 'grad', grad, param.shape);
  expectShape(op, 'm', state.m, param.shape);
  expectShape(op, 'v', state.v, param.shape);
  const { lr, step } = opts;
  const beta1 = opts.beta1 ?? 0.9, beta2 = opts.beta2 ?? 0.999, eps = opts.eps ?? 1e-8;
  const weightDecay = opts.weightDecay ?? 0.01, gradScale = opts.gradScale ?? 1;
  expectFinite(op, 'lr', lr);
  if (lr < 0) throw new ArgumentError(`${op}: 'lr' expected a number >= 0, received ${lr}`);
  for (const [name, b] of [['beta1', beta1], ['beta2', beta2]] as const) {
    expectFinite(op, name, b);
    if (b < 0 || b >= 1) throw new ArgumentError(`${op}: '${name}' expected a number in [0, 1), received ${b}`);
  }
  expectFinite(op, 'eps', eps);
  if (eps < 0) throw new ArgumentError(`${op}: 'eps' expected a number >= 0, received ${eps}`);
  expectFinite(op, 'weightDecay', weightDecay);
  if (weightDecay < 0) throw new ArgumentError(`${op}: 'weightDecay' expected a number >= 0, received ${weightDecay}`);
  expectFinite(op, 'gradScale', gradScale);
  expectInt(op, 'step', step, 1);
  callNative('adamw_step', [
    param.handle, state.m.handle, state.v.handle, grad.handle, param.numel,
    lr, beta1, beta2, eps, weightDecay, step, gradScale,
  ]);
  return param;
}
