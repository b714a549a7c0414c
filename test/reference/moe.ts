/**
 * Float64 references for the MoE family. The whole-block reference is a plain loop
 * per token over its top-K experts — no sorting, no index tensors — so it checks the
 * native route → sort → experts → combine pipeline end to end.
 *   weights: wg, wu [E, I, C]; wd [E, C, I]; assignment a = t*K + j.
 */
const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

export function moeRouteRef(logits: ArrayLike<number>, T: number, E: number, K: number, renorm: boolean) {
  const probs = new Float64Array(T * E), topkIdx = new Int32Array(T * K), topkW = new Float64Array(T * K);
  for (let t = 0; t < T; t++) {
    let m = -Infinity;
    for (let e = 0; e < E; e++) m = Math.max(m, logits[t * E + e]);
    let s = 0;
    for (let e = 0; e < E; e++) s += (probs[t * E + e] = Math.exp(logits[t * E + e] - m));
    for (let e = 0; e < E; e++) probs[t * E + e] /= s;
    const taken = new Set<number>();
    let ws = 0;
    for (let j = 0; j < K; j++) {
      let best = -1;
      for (let e = 0; e < E; e++) if (!taken.has(e) && (best < 0 || probs[t * E + e] > probs[t * E + best])) best = e;
      taken.add(best);
      topkIdx[t * K + j] = best;
      topkW[t * K + j] = probs[t * E + best];
      ws += probs[t * E + best];
    }
    if (renorm) for (let j = 0; j < K; j++) topkW[t * K + j] /= ws;
  }
  return { probs, topkIdx, topkW };
}

/** dlogits from dtopkW, with the top-K set held fixed (as autograd does). */
export function moeRouteBackwardRef(dtopkW: ArrayLike<number>, probs: ArrayLike<number>, topkIdx: ArrayLike<number>, T: number, E: number, K: number, renorm: boolean) {
  const dlogits = new Float64Array(T * E);
  for (let t = 0; t < T; t++) {
    const p = (e: number) => probs[t * E + e];
    const dp = new Float64Array(E);
    let s = 0;
    for (let j = 0; j < K; j++) s += p(topkIdx[t * K + j]);
    for (let j = 0; j < K; j++) {
      const e = topkIdx[t * K + j];
      if (!renorm) dp[e] += dtopkW[t * K + j];
      else {
        // w_j = p_j / s: ∂w_j/∂p_i = δ_ij / s − p_j / s²  (i in the top-K set)
        dp[e] += dtopkW[t * K + j] / s;
        for (let i = 0; i < K; i++) dp[topkIdx[t * K + i]] -= (dtopkW[t * K + j] * p(e)) / (s * s);
      }
    }
    let dot = 0;
    for (let e = 0; e < E; e++) dot += p(e) * dp[e];
    for (let e = 0; e < E; e++) dlogits[t * E + e] = p(e) * (dp[e] - dot);
  }
  return dlogits;
}

export interface ExpertWeightsF64 {
  wg: ArrayLike<number>;
  wu: ArrayLike<number>;
  wd: ArrayLike<number>;
}

/** One expert on one row: g = Wg x, u = Wu x, h = silu(g)·u, y = Wd h. */
export function expertRowRef(x: ArrayLike<number>, xOff: number, w: ExpertWeightsF64, e: number, C: number, I: number) {
  const g = new Float64Array(I), u = new Float64Array(I), y = new Float64Array(C), h = new Float64Array(I);
  for (let i = 0; i < I; i++) {
    for (let c = 0; c < C; c++) {
      g[i] += w.wg[(e * I + i) * C + c] * x[xOff + c];
      u[i] += w.wu[(e * I + i) * C + c] * x[xOff + c];
    }
    h[i] = g[i] * sigmoid(g[i]) * u[i];
  }
  for (let c = 0; c < C; c++) for (let i = 0; i < I; i++) y[c] += w.wd[(e * C + c) * I + i] * h[i];
  return { g, u, h, y };
}

/** Backward of one expert on one row: accumulates into dx (at dxOff) and the weight grads. */
export function expertRowBackwardRef(
  dy: ArrayLike<number>, dyOff: number, x: ArrayLike<number>, xOff: number, w: ExpertWeightsF64, e: number, C: number, I: number,
  dx: Float64Array | null, dxOff: number, dw: { wg: Float64Array; wu: Float64Array; wd: Float64Array } | null,
): void {
  const { g, u, h } = expertRowRef(x, xOff, w, e, C, I);
  for (let i = 0; i < I; i++) {
    let dh = 0;
    for (let c = 0; c < C; c++) {
      dh += dy[dyOff + c] * w.wd[(e * C + c) * I + i];
      if (dw) dw.wd[(e * C + c) * I + i] += dy[dyOff + c] * h[i];
    }
    const s = sigmoid(g[i]);
    const du = dh * g[i] * s;
    const dg = dh * u[i] * s * (1 + g[i] * (1 - s));
    for (let c = 0; c < C; c++) {
      if (dx) dx[dxOff + c] += dg * w.wg[(e * I + i) * C + c] + du * w.wu[(e * I + i) * C + c];
      if (dw) {
        dw.wg[(e * I + i) * C + c] += dg * x[xOff + c];
        dw.wu[(e * I + i) * C + c] += du * x[xOff + c];
      }
    }
  }
}

/** The whole MoE block, token by token. drop[a] truthy removes assignment a (no renorm over survivors). */
export function moeRef(
  x: ArrayLike<number>, logits: ArrayLike<number>, w: ExpertWeightsF64,
  T: number, E: number, K: number, C: number, I: number, renorm: boolean, drop: ArrayLike<number> | null = null,
) {
  const route = moeRouteRef(logits, T, E, K, renorm);
  const out = new Float64Array(T * C);
  for (let t = 0; t < T; t++)
    for (let j = 0; j < K; j++) {
      if (drop && drop[t * K + j]) continue;
      const { y } = expertRowRef(x, t * C, w, route.topkIdx[t * K + j], C, I);
      for (let c = 0; c < C; c++) out[t * C + c] += route.topkW[t * K + j] * y[c];
    }
  return { out, ...route };
}

/** Backward of moeRef from dout: dx, dlogits and the expert weight gradients. */
export function moeBackwardRef(
  dout: ArrayLike<number>, x: ArrayLike<number>, logits: ArrayLike<number>, w: ExpertWeightsF64,
  T: number, E: number, K: number, C: number, I: number, renorm: boolean, drop: ArrayLike<number> | null = null,
) {
  const route = moeRouteRef(logits, T, E, K, renorm);
  const dx = new Float64Array(T * C);
  const dw = { wg: new Float64Array(E * I * C), wu: new Float64Array(E * I * C), wd: new Float64Array(E * C * I) };
  const dtopkW = new Float64Array(T * K);
  for (let t = 0; t < T; t++)
    for (let j = 0; j < K; j++) {
      if (drop && drop[t * K + j]) continue;
      const e = route.topkIdx[t * K + j], wt = route.topkW[t * K + j];
      const { y } = expertRowRef(x, t * C, w, e, C, I);
      let d = 0;
      for (let c = 0; c < C; c++) d += dout[t * C + c] * y[c];
      dtopkW[t * K + j] = d;
      const dy = new Float64Array(C);
      for (let c = 0; c < C; c++) dy[c] = wt * dout[t * C + c];
      expertRowBackwardRef(dy, 0, x, t * C, w, e, C, I, dx, t * C, dw);
    }
  const dlogits = moeRouteBackwardRef(dtopkW, route.probs, route.topkIdx, T, E, K, renorm);
  return { dx, dlogits, dwGate: dw.wg, dwUp: dw.wu, dwDown: dw.wd, dtopkW };
}
