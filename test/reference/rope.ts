/**
 * Float64 references for the rope family (HF rotate-half): angle = pos·invFreq in
 * float64, y1 = x1·cos − x2·sin, y2 = x2·cos + x1·sin, times attnScale; the backward is
 * the transposed rotation. Also the llama3 inverse-frequency formula in plain float64.
 */
export function ropeRef(x: ArrayLike<number>, pos: ArrayLike<number>, invFreq: ArrayLike<number>, T: number, H: number, D: number, attnScale = 1) {
  const out = new Float64Array(T * H * D), half = D / 2;
  for (let t = 0; t < T; t++)
    for (let i = 0; i < half; i++) {
      const a = pos[t] * invFreq[i];
      const c = Math.cos(a) * attnScale, s = Math.sin(a) * attnScale;
      for (let h = 0; h < H; h++) {
        const o = (t * H + h) * D;
        const x1 = x[o + i], x2 = x[o + i + half];
        out[o + i] = x1 * c - x2 * s;
        out[o + i + half] = x2 * c + x1 * s;
      }
    }
  return out;
}

export function ropeBackwardRef(dout: ArrayLike<number>, pos: ArrayLike<number>, invFreq: ArrayLike<number>, T: number, H: number, D: number, attnScale = 1) {
  const dx = new Float64Array(T * H * D), half = D / 2;
  for (let t = 0; t < T; t++)
    for (let i = 0; i < half; i++) {
      const a = pos[t] * invFreq[i];
      const c = Math.cos(a) * attnScale, s = Math.sin(a) * attnScale;
      for (let h = 0; h < H; h++) {
        const o = (t * H + h) * D;
        const d1 = dout[o + i], d2 = dout[o + i + half];
        dx[o + i] = d1 * c + d2 * s;
        dx[o + i + half] = d2 * c - d1 * s;
      }
    }
  return dx;
}

/**
 * Llama 3.1 frequency scaling in float64, written from the published formula (Meta's
 * llama-models `apply_scaling`, mirrored by transformers' `_compute_llama3_parameters`):
 *   invFreq_i = theta^(−2i/D); wavelen = 2π/invFreq
 *   wavelen < old/high → unchanged; wavelen > old/low → invFreq/factor;
 *   otherwise s = (old/wavelen − low)/(high − low), (1 − s)·invFreq/factor + s·invFreq.
 */
export function llama3InvFreqRef(D: number, theta: number, factor: number, low: number, high: number, old: number): Float64Array {
  const out = new Float64Array(D / 2);
  for (let i = 0; i < D / 2; i++) {
    const f = 1 / Math.pow(theta, (2 * i) / D);
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < old / high) out[i] = f;
    else if (wavelen > old / low) out[i] = f / factor;
    else {
      const s = (old / wavelen - low) / (high - low);
      out[i] = ((1 - s) * f) / factor + s * f;
    }
  }
  return out;
}
