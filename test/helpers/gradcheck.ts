/**
 * Finite-difference gradient check of a float64 reference: central differences of a
 * scalar loss against the analytic gradient, on every element (or a random sample of
 * `samples` elements for large inputs). Native backward kernels are then checked
 * against the same analytic reference, so every backward is tied to the forward.
 */
import { Tolerance } from './compare';

export function checkGradient(
  loss: (x: Float64Array) => number,
  x: Float64Array,
  analytic: ArrayLike<number>,
  opts: { eps?: number; tol?: Tolerance; samples?: number; label?: string } = {},
): void {
  const eps = opts.eps ?? 1e-6;
  const tol = opts.tol ?? { atol: 1e-6, rtol: 1e-5 };
  const n = x.length;
  const idx: number[] = [];
  if (!opts.samples || opts.samples >= n) for (let i = 0; i < n; i++) idx.push(i);
  else for (let s = 0; s < opts.samples; s++) idx.push(Math.floor(((s * 2654435761) % 4294967296) / 4294967296 * n));
  const bad: string[] = [];
  for (const i of idx) {
    const saved = x[i];
    x[i] = saved + eps;
    const up = loss(x);
    x[i] = saved - eps;
    const down = loss(x);
    x[i] = saved;
    const numeric = (up - down) / (2 * eps);
    if (Math.abs(numeric - analytic[i]) > tol.atol + tol.rtol * Math.abs(numeric)) {
      if (bad.length < 5) bad.push(`[${i}] analytic ${analytic[i]}, numeric ${numeric}`);
    }
  }
  if (bad.length) throw new Error(`${opts.label ?? 'gradient'} disagrees with finite differences:\n  ${bad.join('\n  ')}`);
}

/** Random projection loss L = sum(r ⊙ y): its gradient wrt y is r. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
