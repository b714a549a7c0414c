/**
 * Float64 references for the router family: MindSkip scoring s = σ(w · h), hard gate
 * s ≥ τ, executed rows ascending; sequence pooling over valid tokens; and the
 * straight-through backward (dscore is dL/dgate = dL/ds).
 */
const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

export function routerTokenRef(h: ArrayLike<number>, w: ArrayLike<number>, T: number, C: number, threshold: number) {
  const score = new Float64Array(T), gate = new Float64Array(T);
  const execIdx: number[] = [];
  for (let t = 0; t < T; t++) {
    let z = 0;
    for (let c = 0; c < C; c++) z += w[c] * h[t * C + c];
    score[t] = sigmoid(z);
    gate[t] = score[t] >= threshold ? 1 : 0;
    if (gate[t]) execIdx.push(t);
  }
  return { score, gate, execIdx };
}

export function routerTokenBackwardRef(dscore: ArrayLike<number>, score: ArrayLike<number>, h: ArrayLike<number>, w: ArrayLike<number>, T: number, C: number) {
  const dw = new Float64Array(C), dh = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    const dz = dscore[t] * score[t] * (1 - score[t]);
    for (let c = 0; c < C; c++) {
      dw[c] += dz * h[t * C + c];
      dh[t * C + c] = dz * w[c];
    }
  }
  return { dw, dh };
}

const valid = (mask: ArrayLike<number> | null, i: number) => !mask || mask[i] !== 0;

export function routerSeqRef(
  h: ArrayLike<number>, mask: ArrayLike<number> | null, w: ArrayLike<number>, B: number, T: number, C: number, threshold: number,
) {
  const pooled = new Float64Array(B * C), score = new Float64Array(B), gate = new Float64Array(B);
  const execIdx: number[] = [];
  for (let b = 0; b < B; b++) {
    let n = 0;
    for (let t = 0; t < T; t++) {
      if (!valid(mask, b * T + t)) continue;
      n++;
      for (let c = 0; c < C; c++) pooled[b * C + c] += h[(b * T + t) * C + c];
    }
    if (n === 0) throw new Error(`sequence ${b} has no valid token`);
    let z = 0;
    for (let c = 0; c < C; c++) {
      pooled[b * C + c] /= n;
      z += w[c] * pooled[b * C + c];
    }
    score[b] = sigmoid(z);
    gate[b] = score[b] >= threshold ? 1 : 0;
    if (gate[b]) execIdx.push(b);
  }
  return { pooled, score, gate, execIdx };
}

export function routerSeqBackwardRef(
  dscore: ArrayLike<number>, score: ArrayLike<number>, pooled: ArrayLike<number>, mask: ArrayLike<number> | null,
  w: ArrayLike<number>, B: number, T: number, C: number,
) {
  const dw = new Float64Array(C), dh = new Float64Array(B * T * C);
  for (let b = 0; b < B; b++) {
    const dz = dscore[b] * score[b] * (1 - score[b]);
    let n = 0;
    for (let t = 0; t < T; t++) n += valid(mask, b * T + t) ? 1 : 0;
    for (let c = 0; c < C; c++) dw[c] += dz * pooled[b * C + c];
    for (let t = 0; t < T; t++)
      if (valid(mask, b * T + t)) for (let c = 0; c < C; c++) dh[(b * T + t) * C + c] = (dz * w[c]) / n;
  }
  return { dw, dh };
}
