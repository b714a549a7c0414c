/**
 * Causal grouped-query attention (flash-style, online softmax) and its backward.
 *
 * Shapes: q [B, Tq, Hq, D], k and v [B, Tk, Hkv, D] with Hq % Hkv == 0 (query head h
 * reads kv head ⌊h / (Hq/Hkv)⌋); out [B, Tq, Hq, D]; lse [B, Hq, Tq] (natural-log
 * logsumexp of the scaled scores, -inf for a query that sees no key).
 *
 * Visibility: key j is visible to query i iff kpos[j] >= 0, qpos[i] >= 0,
 * kpos[j] <= qpos[i] and (window == 0 or qpos[i] - kpos[j] < window).
 * qpos [B, Tq] / kpos [B, Tk] (int32) default to i + (Tk - Tq) and j: the queries are
 * the last Tq keys. Negative positions mark padding. Routed subsets (Mixture-of-Depths
 * token routing) pass the tokens' original positions, in any order.
 */
import { callNative } from './dispatch';
import { expectDtype, expectFinite, expectInt, expectRank, expectShape } from './validate';
import { ShapeError } from '../errors';
import { Tensor } from '../tensor';

export interface AttentionOptions {
  /** Score scale; default 1/sqrt(D). */
  scale?: number;
  /** Query positions [B, Tq] int32; default i + (Tk - Tq). */
  qpos?: Tensor;
  /** Key positions [B, Tk] int32; default j. */
  kpos?: Tensor;
  /** Sliding window: a query sees keys with qpos - kpos < window; 0 (default) = unlimited. */
  window?: number;
}

interface AttentionDims {
  B: number;
  Tq: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  scale: number;
  window: number;
}

function checkInputs(op: string, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): AttentionDims {
  expectDtype(op, 'q', q, 'float32');
  expectDtype(op, 'k', k, 'float32');
  expectDtype(op, 'v', v, 'float32');
  expectRank(op, 'q', q, 4);
  const [B, Tq, Hq, D] = q.shape;
  if (D < 1) throw new ShapeError(`${op}: 'q' expected head dim D >= 1, received shape [${q.shape.join(', ')}]`);
  if (Hq < 1) throw new ShapeError(`${op}: 'q' expected at least one head, received shape [${q.shape.join(', ')}]`);
  expectShape(op, 'k', k, [B, -1, -1, D], '[B, Tk, Hkv, D]');
  const [, Tk, Hkv] = k.shape;
  if (Hkv < 1 || Hq % Hkv !== 0)
    throw new ShapeError(`${op}: 'k' expected a kv head count dividing Hq = ${Hq}, received ${Hkv} (shape [${k.shape.join(', ')}])`);
  expectShape(op, 'v', v, k.shape, '[B, Tk, Hkv, D]');
  if (opts.qpos) {
    expectDtype(op, 'qpos', opts.qpos, 'int32');
    expectShape(op, 'qpos', opts.qpos, [B, Tq], '[B, Tq]');
  }
  if (opts.kpos) {
    expectDtype(op, 'kpos', opts.kpos, 'int32');
    expectShape(op, 'kpos', opts.kpos, [B, Tk], '[B, Tk]');
  }
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  expectFinite(op, 'scale', scale);
  const window = opts.window ?? 0;
  expectInt(op, 'window', window, 0);
  return { B, Tq, Tk, Hq, Hkv, D, scale, window };
}

const dimArgs = (d: AttentionDims) => [d.B, d.Tq, d.Tk, d.Hq, d.Hkv, d.D, d.scale, d.window];

/**
 * out[b, i, h] = Σ_j softmax_j(scale · q[b, i, h]·k[b, j, h/G]) v[b, j, h/G] over visible keys j.
 * Returns out [B, Tq, Hq, D] (zeros for a query that sees no key) and lse [B, Hq, Tq].
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): { out: Tensor; lse: Tensor } {
  const d = checkInputs('attention', q, k, v, opts);
  const out = Tensor.empty(q.shape, 'float32', q.device);
  const lse = Tensor.empty([d.B, d.Hq, d.Tq], 'float32', q.device);
  callNative('attention_fwd', [
    out.handle,
    lse.handle,
    q.handle,
    k.handle,
    v.handle,
    opts.qpos?.handle ?? null,
    opts.kpos?.handle ?? null,
    ...dimArgs(d),
  ]);
  return { out, lse };
}

/**
 * Backward of `attention` (flash-attention-2 recomputation from `out` and `lse`).
 * dout, out [B, Tq, Hq, D]; lse [B, Hq, Tq] as returned by `attention` with the same
 * options. Returns dq [B, Tq, Hq, D] (unless needQ is false) and dk, dv
 * [B, Tk, Hkv, D] (unless needKV is false).
 */
export function attentionBackward(
  dout: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  opts: AttentionOptions = {},
  want: { needQ?: boolean; needKV?: boolean } = {},
): { dq?: Tensor; dk?: Tensor; dv?: Tensor } {
  const op = 'attentionBackward';
  const d = checkInputs(op, q, k, v, opts);
  expectDtype(op, 'dout', dout, 'float32');
  expectShape(op, 'dout', dout, q.shape, '[B, Tq, Hq, D]');
  expectDtype(op, 'out', out, 'float32');
  expectShape(op, 'out', out, q.shape, '[B, Tq, Hq, D]');
  expectDtype(op, 'lse', lse, 'float32');
  expectShape(op, 'lse', lse, [d.B, d.Hq, d.Tq], '[B, Hq, Tq]');
  const needQ = want.needQ ?? true;
  const needKV = want.needKV ?? true;
  const dq = needQ ? Tensor.empty(q.shape, 'float32', q.device) : undefined;
  const dk = needKV ? Tensor.empty(k.shape, 'float32', q.device) : undefined;
  const dv = needKV ? Tensor.empty(v.shape, 'float32', q.device) : undefined;
  if (needQ || needKV)
    callNative('attention_bwd', [
      dq?.handle ?? null,
      dk?.handle ?? null,
      dv?.handle ?? null,
      dout.handle,
      q.handle,
      k.handle,
      v.handle,
      out.handle,
      lse.handle,
      opts.qpos?.handle ?? null,
      opts.kpos?.handle ?? null,
      ...dimArgs(d),
    ]);
  return { dq, dk, dv };
}
