/** Float64 references for the embedding family: table [V, C], ids [T], out [T, C]. */
export function embeddingRef(ids: ArrayLike<number>, table: ArrayLike<number>, C: number): Float64Array {
  const out = new Float64Array(ids.length * C);
  for (let t = 0; t < ids.length; t++) for (let c = 0; c < C; c++) out[t * C + c] = table[ids[t] * C + c];
  return out;
}

/** dtable [V, C] = Σ_t onehot(ids[t]) ⊗ dout[t]. */
export function embeddingBackwardRef(dout: ArrayLike<number>, ids: ArrayLike<number>, V: number, C: number): Float64Array {
  const dtable = new Float64Array(V * C);
  for (let t = 0; t < ids.length; t++) for (let c = 0; c < C; c++) dtable[ids[t] * C + c] += dout[t * C + c];
  return dtable;
}
