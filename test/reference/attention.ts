/**
 * Float64 reference for the attention family: plain masked softmax attention (the full
 * score matrix, no tiling, no online softmax) and its backward, with the visibility rule
 * of csrc/include/rt/attention.h.
 */
export interface AttentionRefDims {
  B: number;
  Tq: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  scale: number;
  /** 0 = unlimited. */
  window: number;
  /** (B, Tq); null: i + (Tk - Tq). */
  qpos?: ArrayLike<number> | null;
  /** (B, Tk); null: j. */
  kpos?: ArrayLike<number> | null;
}

export const qposOf = (d: AttentionRefDims, b: number, i: number): number => (d.qpos ? d.qpos[b * d.Tq + i] : i + d.Tk - d.Tq);
export const kposOf = (d: AttentionRefDims, b: number, j: number): number => (d.kpos ? d.kpos[b * d.Tk + j] : j);

export function visible(qp: number, kp: number, window: number): boolean {
  return qp >= 0 && kp >= 0 && kp <= qp && (window <= 0 || qp - kp < window);
}

const qIdx = (d: AttentionRefDims, b: number, i: number, h: number) => ((b * d.Tq + i) * d.Hq + h) * d.D;
const kIdx = (d: AttentionRefDims, b: number, j: number, hk: number) => ((b * d.Tk + j) * d.Hkv + hk) * d.D;

/** Softmax probabilities P (Tk) of query (b, i, h); all zeros when no key is visible. Also returns lse. */
function probs(q: Float64Array, k: Float64Array, d: AttentionRefDims, b: number, i: number, h: number) {
  const hk = Math.floor(h / (d.Hq / d.Hkv));
  const s = new Float64Array(d.Tk).fill(-Infinity);
  let m = -Infinity;
  const qp = qposOf(d, b, i);
  for (let j = 0; j < d.Tk; j++) {
    if (!visible(qp, kposOf(d, b, j), d.window)) continue;
    let dot = 0;
    const qo = qIdx(d, b, i, h), ko = kIdx(d, b, j, hk);
    for (let c = 0; c < d.D; c++) dot += q[qo + c] * k[ko + c];
    s[j] = d.scale * dot;
    m = Math.max(m, s[j]);
  }
  const p = new Float64Array(d.Tk);
  if (m === -Infinity) return { p, lse: -Infinity, hk };
  let sum = 0;
  for (let j = 0; j < d.Tk; j++) sum += p[j] = s[j] === -Infinity ? 0 : Math.exp(s[j] - m);
  for (let j = 0; j < d.Tk; j++) p[j] /= sum;
  return { p, lse: m + Math.log(sum), hk };
}

/** out (B, Tq, Hq, D), lse (B, Hq, Tq). */
export function attentionRef(q: Float64Array, k: Float64Array, v: Float64Array, d: AttentionRefDims) {
  const out = new Float64Array(d.B * d.Tq * d.Hq * d.D);
  const lse = new Float64Array(d.B * d.Hq * d.Tq);
  for (let b = 0; b < d.B; b++)
    for (let h = 0; h < d.Hq; h++)
      for (let i = 0; i < d.Tq; i++) {
        const { p, lse: l, hk } = probs(q, k, d, b, i, h);
        lse[(b * d.Hq + h) * d.Tq + i] = l;
        const oo = qIdx(d, b, i, h);
        for (let j = 0; j < d.Tk; j++) {
          if (p[j] === 0) continue;
          const vo = kIdx(d, b, j, hk);
          for (let c = 0; c < d.D; c++) out[oo + c] += p[j] * v[vo + c];
        }
      }
  return { out, lse };
}

/**
 * Gradients of L = <dout, attention(q, k, v)>: dq (B, Tq, Hq, D), dk and dv (B, Tk, Hkv, D).
 * dS = P ⊙ (dP − rowsum(P ⊙ dP)), dP = dO·Vᵀ; dq = scale·dS·K, dk = scale·dSᵀ·Q, dv = Pᵀ·dO.
 */
export function attentionBackwardRef(dout: Float64Array, q: Float64Array, k: Float64Array, v: Float64Array, d: AttentionRefDims) {
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  for (let b = 0; b < d.B; b++)
    for (let h = 0; h < d.Hq; h++)
      for (let i = 0; i < d.Tq; i++) {
        const { p, hk } = probs(q, k, d, b, i, h);
        const qo = qIdx(d, b, i, h);
        const dp = new Float64Array(d.Tk);
        let rowsum = 0;
        for (let j = 0; j < d.Tk; j++) {
          if (p[j] === 0) continue;
          const vo = kIdx(d, b, j, hk);
          let s = 0;
          for (let c = 0; c < d.D; c++) s += dout[qo + c] * v[vo + c];
          dp[j] = s;
          rowsum += p[j] * s;
        }
        for (let j = 0; j < d.Tk; j++) {
          if (p[j] === 0) continue;
          const ko = kIdx(d, b, j, hk);
          const ds = p[j] * (dp[j] - rowsum) * d.scale;
          for (let c = 0; c < d.D; c++) {
            dq[qo + c] += ds * k[ko + c];
            dk[ko + c] += ds * q[qo + c];
            dv[ko + c] += p[j] * dout[qo + c];
          }
        }
      }
  return { dq, dk, dv };
}
