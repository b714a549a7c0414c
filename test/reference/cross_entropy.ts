/**
 * Float64 references for the cross_entropy family: a plain log-softmax (max-subtracted)
 * and the mean over rows whose target is not ignoreIndex.
 */
export function crossEntropyRef(logits: ArrayLike<number>, targets: ArrayLike<number>, T: number, V: number, ignoreIndex = -100) {
  const lse = new Float64Array(T), rowLoss = new Float64Array(T);
  let total = 0, counted = 0;
  for (let t = 0; t < T; t++) {
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, logits[t * V + v]);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(logits[t * V + v] - m);
    lse[t] = m + Math.log(s);
    if (targets[t] === ignoreIndex) continue;
    rowLoss[t] = lse[t] - logits[t * V + targets[t]];
    total += rowLoss[t];
    counted++;
  }
  return { loss: counted > 0 ? total / counted : 0, counted, lse, rowLoss };
}

/** d(loss·dloss)/dlogits with loss = Σ rowLoss · scale (scale = dloss/counted for the mean). */
export function crossEntropyBackwardRef(logits: ArrayLike<number>, targets: ArrayLike<number>, T: number, V: number, ignoreIndex: number, scale: number) {
  const { lse } = crossEntropyRef(logits, targets, T, V, ignoreIndex);
  const d = new Float64Array(T * V);
  for (let t = 0; t < T; t++) {
    if (targets[t] === ignoreIndex) continue;
    for (let v = 0; v < V; v++) d[t * V + v] = Math.exp(logits[t * V + v] - lse[t]) * scale;
    d[t * V + targets[t]] -= scale;
  }
  return d;
}
