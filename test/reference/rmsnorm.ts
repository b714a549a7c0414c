/** Float64 references for the rmsnorm family: y = x·rstd·w, rstd = 1/sqrt(mean(x²) + eps). */
export function rmsnormRef(x: ArrayLike<number>, w: ArrayLike<number>, R: number, C: number, eps: number) {
  const out = new Float64Array(R * C), rstd = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[r * C + c] ** 2;
    rstd[r] = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) out[r * C + c] = x[r * C + c] * rstd[r] * w[c];
  }
  return { out, rstd };
}

/**
 * Backward, written from the chain rule (rstd recomputed from x, not taken from the forward):
 *   dx_j = rstd·dout_j·w_j − x_j·rstd³/C·Σ_i dout_i·w_i·x_i,  dw_j = Σ_rows dout_j·x_j·rstd
 */
export function rmsnormBackwardRef(dout: ArrayLike<number>, x: ArrayLike<number>, w: ArrayLike<number>, R: number, C: number, eps: number) {
  const dx = new Float64Array(R * C), dw = new Float64Array(C);
  for (let r = 0; r < R; r++) {
    let ss = 0, dot = 0;
    for (let c = 0; c < C; c++) {
      ss += x[r * C + c] ** 2;
      dot += dout[r * C + c] * w[c] * x[r * C + c];
    }
    const rs = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) {
      dx[r * C + c] = rs * dout[r * C + c] * w[c] - (x[r * C + c] * rs ** 3 * dot) / C;
      dw[c] += dout[r * C + c] * x[r * C + c] * rs;
    }
  }
  return { dx, dw };
}
