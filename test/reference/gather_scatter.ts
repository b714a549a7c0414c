/** Float64 references for row gather / scatter (and each other's backward). */
export function gatherRowsRef(x: ArrayLike<number>, idx: ArrayLike<number>, C: number): Float64Array {
  const out = new Float64Array(idx.length * C);
  for (let n = 0; n < idx.length; n++) for (let c = 0; c < C; c++) out[n * C + c] = x[idx[n] * C + c];
  return out;
}

/** A new array: `into` with y[n] written (or added) at row idx[n], n in order. */
export function scatterRowsRef(into: ArrayLike<number>, y: ArrayLike<number>, idx: ArrayLike<number>, C: number, accumulate: boolean): Float64Array {
  const out = Float64Array.from(into);
  for (let n = 0; n < idx.length; n++)
    for (let c = 0; c < C; c++) out[idx[n] * C + c] = (accumulate ? out[idx[n] * C + c] : 0) + y[n * C + c];
  return out;
}

/** Backward of gather: scatter-add of dout into zeros [R, C]. */
export function gatherRowsBackwardRef(dout: ArrayLike<number>, idx: ArrayLike<number>, R: number, C: number): Float64Array {
  return scatterRowsRef(new Float64Array(R * C), dout, idx, C, true);
}

/** Backward of scatter with respect to y: a gather of dout. */
export const scatterRowsBackwardRef = gatherRowsRef;
