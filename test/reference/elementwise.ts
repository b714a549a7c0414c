/** Float64 references for the elementwise family. */
export function gatedResidualRef(x: Float64Array, f: Float64Array, g: Float64Array | null, R: number, C: number): Float64Array {
  const out = new Float64Array(R * C);
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) out[r * C + c] = x[r * C + c] + (g ? g[r] : 1) * f[r * C + c];
  return out;
}

export function gatedResidualBackwardRef(dout: Float64Array, f: Float64Array, g: Float64Array | null, R: number, C: number) {
  const df = new Float64Array(R * C);
  const dg = new Float64Array(R);
  for (let r = 0; r < R; r++)
    for (let c = 0; c < C; c++) {
      df[r * C + c] = (g ? g[r] : 1) * dout[r * C + c];
      dg[r] += dout[r * C + c] * f[r * C + c];
    }
  return { df, dg };
}

export function addBiasRef(x: Float64Array, bias: Float64Array, R: number, C: number): Float64Array {
  const out = new Float64Array(R * C);
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) out[r * C + c] = x[r * C + c] + bias[c];
  return out;
}
