/**
 * Float64 reference of one torch.optim.AdamW step (amsgrad off, maximize off), as in
 * PyTorch's _single_tensor_adam with decoupled weight decay:
 *   param *= 1 − lr·wd ; m = m + (1 − β1)(g − m) ; v = β2·v + (1 − β2)·g²
 *   param −= lr/(1 − β1^step) · m / (sqrt(v)/sqrt(1 − β2^step) + eps)
 * (g is the gradient times gradScale). Updates p, m, v in place.
 */
export interface AdamwRefOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
  gradScale?: number;
}

export function adamwStepRef(p: Float64Array, m: Float64Array, v: Float64Array, grad: ArrayLike<number>, o: AdamwRefOptions): void {
  const bc1 = 1 - o.beta1 ** o.step, bc2 = 1 - o.beta2 ** o.step;
  const stepSize = o.lr / bc1, bc2Sqrt = Math.sqrt(bc2);
  for (let i = 0; i < p.length; i++) {
    const g = grad[i] * (o.gradScale ?? 1);
    p[i] *= 1 - o.lr * o.weightDecay;
    m[i] += (1 - o.beta1) * (g - m[i]);
    v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
    p[i] -= (stepSize * m[i]) / (Math.sqrt(v[i]) / bc2Sqrt + o.eps);
  }
}
