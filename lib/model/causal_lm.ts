/**
 * CausalLM: the decoder-only transformer of every supported family, on the native ops.
 *
 *   x = embed(ids)
 *   per layer:  h = rmsnorm(x);  q,k,v = proj(h) (+bias, q/k norm, RoPE);  x += o(attn(q, K, V))
 *               h = rmsnorm(x);  x += mlp(h)  |  moe(h) (+ sigmoid-gated shared expert)
 *   logits = lm_head(rmsnorm(x))
 *
 * Batches are [B, T] with a 0/1 attention mask (left or right padding): a token's
 * position is its index among the sequence's real tokens, padding has position −1 and
 * is invisible to attention. The KV cache keeps [B, capacity, Hkv, D] per layer with a
 * position per slot (−1 = empty or padding), so prefill and token-by-token decoding run
 * the same code.
 */
import * as fs from 'fs';
import { Checkpoint } from '../io/safetensors';
import { ArgumentError, RouterTuningError } from '../errors';
import * as ops from '../ops';
import { DType, Device, Tensor, dispose, tidy } from '../tensor';
import { ModelConfig, readConfig } from './config';
import { TextTokenizer, loadTokenizer } from './tokenizer';
import { LayerWeights, LinearWeights, MlpWeights, MoeWeights, ModelWeights, disposeWeights, loadWeights, moveWeights } from './weights';
import { requireDevice } from '../infer/device';
import { computeDtype } from '../backend';
import { LoraSet, loadLora as loadLoraFile } from '../train/lora';
import { KVCache, LayerKV } from '../infer/kv_cache';
import { GenerateOptions, GenerateResult, GeneratedToken, generateBatch, generateStream } from '../infer/generate';
export { KVCache } from '../infer/kv_cache';
import { RouterOptions, Routers } from '../routing/routers';
import { loadRouters as loadRouterFile, saveRouters as saveRouterFile } from '../routing/checkpoint';

export interface LoadModelOptions {
  /** Where the weights live and every forward/backward/generate runs (default 'cpu'; 'cuda' needs a CUDA build and a GPU). */
  device?: Device;
  /** Storage dtype of the large matrices; default: float32 for F32/F16 checkpoints, bfloat16 for BF16 ones (and for every checkpoint while setComputeDtype('bfloat16') is on). */
  dtype?: 'float32' | 'bfloat16';
  /** Skip loading tokenizer.json (logits-only use). Default false: a model folder needs one. */
  noTokenizer?: boolean;
}

/** Executed/total counts per routed layer, accumulated over forwards (seq: per sequence at prefill; token: per token). */
export interface RoutingStats {
  layers: Map<number, { executed: number; total: number }>;
}

export interface ForwardOptions {
  /** Use the attached routers (default true when routers are attached). */
  routing?: boolean;
  /** Accumulates executed/total counts per routed layer. */
  stats?: RoutingStats;
  /**
   * Rows of [B·T] whose logits to compute (default: every row). Generation needs only each
   * sequence's last row at prefill; the output is then [rows.length, V].
   */
  logitsRows?: Int32Array;
  /** Observes each layer's residual stream before and after its attention block (static-drop calibration). */
  onAttention?: (layer: number, before: Tensor, after: Tensor) => void;
}

interface InferCtx {
  B: number;
  T: number;
  N: number;
  pos: Int32Array;
  validRows: Int32Array;
  cache: KVCache;
  prefill: boolean;
  routers?: Routers;
  stats?: RoutingStats;
  mask: Int32Array | null;
  onAttention?: (layer: number, before: Tensor, after: Tensor) => void;
  /**
   * Int tensors (positions, slots, row indices) made during this forward, reused when a
   * later layer needs the same values: without routing every layer has the same
   * positions, cache slots and key positions, so a decode step writes 4 small tensors
   * instead of ~50 (each a native call). Disposed when the forward ends.
   */
  intMemo: { data: Int32Array; t: Tensor }[];
}

/** Most int tensors a forward memoises (routing can make every layer's rows differ). */
const INT_MEMO_MAX = 16;

const allRows = (rows: Int32Array, N: number) => rows.length === N;

export class CausalLM {
  /** RoPE cos/sin scale, from the config. */
  readonly attnScale: number;
  private _invFreq: Tensor;
  private _device: Device;
  private disposed = false;
  /** The attached routers (attachRouters, loadRouters, or a finished tune()). */
  routers?: Routers;
  /** LoRA adapters applied on top of the frozen projections (from tune with loraRank, or loadRouters). */
  lora?: LoraSet;

  constructor(
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    readonly tokenizer: TextTokenizer | undefined,
    readonly dir: string,
  ) {
    const rope = config.rope;
    const { invFreq, attentionScaling } = ops.ropeParameters(config.headDim, rope.theta, {
      rope_type: rope.type,
      factor: rope.factor,
      low_freq_factor: rope.lowFreqFactor,
      high_freq_factor: rope.highFreqFactor,
      original_max_position_embeddings: rope.originalMaxPositionEmbeddings,
    });
    this._device = weights.embed.device;
    this._invFreq = Tensor.from(invFreq, undefined, 'float32', this._device).keep();
    this.attnScale = attentionScaling;
  }

  /** RoPE inverse frequencies [D/2] (on the model's device). */
  get invFreq(): Tensor {
    return this._invFreq;
  }

  /** The device holding the weights; every tensor a forward/backward/generate creates lives there too. */
  get device(): Device {
    return this._device;
  }

  /**
   * Moves every weight, the attached routers and LoRA adapters to `device`, disposing the
   * old copies, and returns the model (a no-op when it is already there). Caches made
   * before the move belong to the old device: make new ones. All weight copies are made
   * before any old one is freed, so a failed move (no CUDA, out of memory) changes nothing
   * of the weights.
   */
  to(device: Device): this {
    this.ensureLive('to');
    const dev = requireDevice('model.to', device);
    if (dev === this._device) return this;
    const invFreq = this._invFreq.to(dev).keep();
    try {
      moveWeights(this.weights, dev);
    } catch (e) {
      invFreq.dispose();
      throw e;
    }
    this._invFreq.dispose();
    this._invFreq = invFreq;
    this._device = dev;
    this.routers?.to(dev);
    this.lora?.to(dev);
    return this;
  }

  private ensureLive(op: string): void {
    if (this.disposed) throw new RouterTuningError('RT_ERR_DISPOSED', `${op}: the model was disposed`);
  }

  /** A KV cache for `batch` sequences (capacity is a hint; slots are allocated as used). */
  newCache(batch: number, capacity: number): KVCache {
    return new KVCache(batch, capacity, this.config, this._device);
  }

  /** Validates token ids against the vocabulary. */
  private checkIds(op: string, ids: ArrayLike<number>): void {
    const V = this.config.vocabSize;
    for (let i = 0; i < ids.length; i++) {
      const t = ids[i];
      if (!Number.isInteger(t) || t < 0 || t >= V)
        throw new ArgumentError(`${op}: token id ${t} at position ${i} is outside the vocabulary [0, ${V})`);
    }
  }

  /**
   * Appends a [B, T] block of tokens (row-major ids, 0/1 mask or all ones) to the cache
   * and returns the logits of every new token, [B·T, V] (padding rows are meaningless).
   * With routers attached, skipped layers are really skipped: only the executed rows are
   * gathered, computed and scattered back, and skipped work gets no KV slot.
   */
  forward(ids: Int32Array, mask: Int32Array | null, B: number, T: number, cache: KVCache, opts: ForwardOptions = {}): Tensor {
    this.ensureLive('forward');
    if (ids.length !== B * T) throw new ArgumentError(`forward: expected ${B * T} ids for [B, T] = [${B}, ${T}], received ${ids.length}`);
    if (cache.batch !== B) throw new ArgumentError(`forward: the cache holds ${cache.batch} sequences, the input ${B}`);
    if (mask && mask.length !== B * T) throw new ArgumentError(`forward: expected a mask of ${B * T} values, received ${mask.length}`);
    this.checkIds('forward', ids);
    if (cache.device !== this._device) throw new ArgumentError(`forward: the cache lives on ${cache.device}, the model on ${this._device} (make the cache with model.newCache after model.to)`);
    if ((opts.routing ?? true) && this.routers && this.routers.device !== this._device)
      throw new ArgumentError(`forward: the routers live on ${this.routers.device}, the model on ${this._device} (attach them with model.attachRouters/loadRouters, or call routers.to('${this._device}'))`);
    const cfg = this.config;
    const N = B * T;
    const pos = new Int32Array(N);
    const valid: number[] = [];
    for (let b = 0; b < B; b++)
      for (let t = 0; t < T; t++) {
        const r = b * T + t;
        if (!mask || mask[r] !== 0) {
          pos[r] = cache.nextPos[b]++;
          valid.push(r);
        } else pos[r] = -1;
      }
    const routing = opts.routing ?? true;
    const ctx: InferCtx = {
      B,
      T,
      N,
      pos,
      validRows: Int32Array.from(valid),
      cache,
      prefill: cache.steps === 0,
      routers: routing ? this.routers : undefined,
      stats: opts.stats,
      mask,
      onAttention: opts.onAttention,
      intMemo: [],
    };
    cache.steps++;
    try {
      return this.forwardLayers(ids, ctx, opts);
    } finally {
      for (const e of ctx.intMemo) e.t.dispose();
    }
  }

  private forwardLayers(ids: Int32Array, ctx: InferCtx, opts: ForwardOptions): Tensor {
    const cfg = this.config;
    const N = ctx.N;
    return tidy(() => {
      const idT = this.ints(ids, [N]);
      let x = ops.embedding(idT, this.weights.embed); // [B·T, C]
      for (let l = 0; l < cfg.numLayers; l++) {
        const prev = x;
        x = tidy(() => this.layer(l, x, ctx));
        if (x !== prev) prev.dispose();
      }
      const last = opts.logitsRows ? this.take(x, opts.logitsRows) : x;
      const { out: hf } = ops.rmsnorm(last, this.weights.finalNorm, cfg.rmsNormEps);
      return ops.linear(hf, this.weights.lmHead);
    });
  }

  /** An int32 tensor (ids, positions, row indices) on the model's device. */
  private ints(data: Int32Array, shape: readonly number[]): Tensor {
    return Tensor.from(data, shape, 'int32', this._device);
  }

  /** `ints(data, shape)`, shared with earlier calls of this forward that had the same values (see InferCtx.intMemo); never modify it. */
  private ctxInts(ctx: InferCtx, data: Int32Array, shape: readonly number[]): Tensor {
    const n = data.length;
    search: for (const e of ctx.intMemo) {
      const t = e.t;
      if (e.data.length !== n || t.shape.length !== shape.length) continue;
      for (let i = 0; i < shape.length; i++) if (t.shape[i] !== shape[i]) continue search;
      for (let i = 0; i < n; i++) if (e.data[i] !== data[i]) continue search;
      return t;
    }
    if (ctx.intMemo.length >= INT_MEMO_MAX) return this.ints(data, shape);
    const t = this.ints(data, shape).keep();
    ctx.intMemo.push({ data: data.slice(), t });
    return t;
  }

  /** Rows of `t` ([N, C]) listed in `rows`; `t` itself when rows is every row in order. */
  private take(t: Tensor, rows: Int32Array): Tensor {
    if (allRows(rows, t.shape[0])) return t;
    return ops.gatherRows(t, this.ints(rows, [rows.length]));
  }

  /** x + f on `rows` (a fresh tensor). */
  private addRows(x: Tensor, f: Tensor, rows: Int32Array): Tensor {
    if (allRows(rows, x.shape[0])) return ops.gatedResidual(x, f);
    const out = x.clone();
    if (rows.length) ops.scatterRows(out, f, this.ints(rows, [rows.length]), { accumulate: true });
    return out;
  }

  private record(ctx: InferCtx, l: number, executed: number, total: number): void {
    if (!ctx.stats) return;
    const s = ctx.stats.layers.get(l) ?? { executed: 0, total: 0 };
    s.executed += executed;
    s.total += total;
    ctx.stats.layers.set(l, s);
  }

  /**
   * The rows (of the valid ones) that run a routed part of layer l, deciding from `h`.
   * seq: one decision per sequence at prefill, reused while decoding; token: per token.
   */
  private decide(l: number, h: Tensor, ctx: InferCtx): Int32Array {
    const r = ctx.routers!;
    const tau = r.thresholds.get(l)!;
    const w = r.weight(l);
    if (r.level === 'seq') {
      let dec = ctx.cache.seqDecisions.get(l);
      if (!dec) {
        const { B, T } = ctx;
        const maskT = this.ints(ctx.mask ?? new Int32Array(B * T).fill(1), [B, T]);
        const s = ops.routerScoreSequences(h.reshape([B, T, h.shape[1]]), w, tau, maskT);
        dec = Uint8Array.from(s.gate.toFloat32Array());
        ctx.cache.seqDecisions.set(l, dec);
        this.record(ctx, l, dec.reduce((a, b) => a + b, 0), B);
      }
      const d = dec;
      return ctx.validRows.filter((row) => d[Math.floor(row / ctx.T)] === 1);
    }
    const s = ops.routerScoreTokens(h, w, tau);
    const gate = s.gate.toFloat32Array();
    const rows = ctx.validRows.filter((row) => gate[row] === 1);
    this.record(ctx, l, rows.length, ctx.validRows.length);
    return rows;
  }

  private layer(l: number, x: Tensor, ctx: InferCtx): Tensor {
    const cfg = this.config;
    const w = this.weights.layers[l];
    const D = cfg.headDim, Hq = cfg.numHeads, Hkv = cfg.numKvHeads;
    const r = ctx.routers?.has(l) ? ctx.routers : undefined;
    const target = r?.target;
    const { out: h } = ops.rmsnorm(x, w.inputNorm, cfg.rmsNormEps);
    // ---- attention: which tokens query, which write K/V
    let attnRows = ctx.validRows;
    let kvRows = ctx.validRows;
    const lkv = ctx.cache.layers[l];
    if (target === 'attn' || target === 'block') {
      attnRows = this.decide(l, h, ctx);
      kvRows = r!.level === 'token' && r!.mode === 'keep-kv' ? ctx.validRows : attnRows;
      if (!lkv.assigned) lkv.assignRows(r!.level === 'seq' ? ctx.cache.seqDecisions.get(l)! : new Uint8Array(ctx.B).fill(1));
    } else if (!lkv.assigned) lkv.assignRows(new Uint8Array(ctx.B).fill(1));
    let x1 = x;
    if (kvRows.length > 0) {
      const pre = `model.layers.${l}.self_attn`;
      const hk = this.take(h, kvRows);
      const kvPos = this.ctxInts(ctx, kvRows.map((row) => ctx.pos[row]), [kvRows.length]);
      let k = this.proj(hk, w.k, `${pre}.k_proj`);
      let v = this.proj(hk, w.v, `${pre}.v_proj`);
      k = this.qkNormClip(k, w.kNorm, Hkv);
      if (cfg.clipQkv !== undefined) v = ops.clamp(v, -cfg.clipQkv, cfg.clipQkv);
      // k and q are fresh projection outputs: rotate them in place
      const kr = ops.rope(k.reshape([kvRows.length, Hkv, D]), kvPos, this.invFreq, { attnScale: this.attnScale, inPlace: true });
      this.appendKV(lkv, kr.reshape([kvRows.length, Hkv * D]), v, kvRows, ctx);
      if (attnRows.length > 0) {
        const same = attnRows === kvRows;
        const hq = same ? hk : this.take(h, attnRows);
        const qPos = same ? kvPos : this.ctxInts(ctx, attnRows.map((row) => ctx.pos[row]), [attnRows.length]);
        let q = this.proj(hq, w.q, `${pre}.q_proj`);
        q = this.qkNormClip(q, w.qNorm, Hq);
        const qr = ops.rope(q.reshape([attnRows.length, Hq, D]), qPos, this.invFreq, { attnScale: this.attnScale, inPlace: true });
        const att = this.attendCached(l, qr.reshape([attnRows.length, Hq * D]), attnRows, lkv, ctx);
        const o = this.proj(att, w.o, `${pre}.o_proj`);
        x1 = this.addRows(x, o, attnRows);
      }
    }
    ctx.onAttention?.(l, x, x1);
    // ---- MLP / MoE
    const { out: h2 } = ops.rmsnorm(x1, w.postAttnNorm, cfg.rmsNormEps);
    let mlpRows = ctx.validRows;
    if (target === 'mlp' || target === 'moe') mlpRows = this.decide(l, h2, ctx);
    else if (target === 'block') mlpRows = attnRows;
    if (mlpRows.length === 0) return x1 === x ? x.clone() : x1;
    const h2e = this.take(h2, mlpRows);
    const f = w.mlp ? this.mlp(h2e, w.mlp, `model.layers.${l}.mlp`) : this.moeDelta(l, h2e, w.moe!, target === 'expert' ? ctx : undefined);
    return this.addRows(x1, f, mlpRows);
  }

  /** q/k RMSNorm (per head or over the projection) and OLMoE's clip, as the family says. */
  private qkNormClip(t: Tensor, norm: Tensor | undefined, heads: number): Tensor {
    const cfg = this.config;
    let out = t;
    if (cfg.qkNorm === 'head') out = ops.rmsnorm(t.reshape([t.shape[0] * heads, cfg.headDim]), norm!, cfg.rmsNormEps).out.reshape(t.shape);
    else if (cfg.qkNorm === 'full') out = ops.rmsnorm(t, norm!, cfg.rmsNormEps).out;
    if (cfg.clipQkv !== undefined) out = ops.clamp(out, -cfg.clipQkv, cfg.clipQkv);
    return out;
  }

  /** Writes K/V rows of the tokens `rows` into their sequences' next slots of layer cache `lkv`. */
  private appendKV(lkv: LayerKV, k: Tensor, v: Tensor, rows: Int32Array, ctx: InferCtx): void {
    const extra = new Int32Array(lkv.rows);
    for (const row of rows) extra[lkv.rowOf[Math.floor(row / ctx.T)]]++;
    lkv.reserve(extra, ctx.prefill);
    const slots = new Int32Array(rows.length);
    rows.forEach((row, i) => {
      const cr = lkv.rowOf[Math.floor(row / ctx.T)];
      const slot = lkv.used[cr]++;
      slots[i] = cr * lkv.cap + slot;
      lkv.slotPos[cr * lkv.cap + slot] = ctx.pos[row];
    });
    const idx = this.ctxInts(ctx, slots, [slots.length]);
    const e = lkv.rowElems;
    ops.scatterRows(lkv.k!.reshape([lkv.rows * lkv.cap, e]), k, idx);
    ops.scatterRows(lkv.v!.reshape([lkv.rows * lkv.cap, e]), v.reshape([rows.length, e]), idx);
  }

  /**
   * Attention of the query rows `rows` (q: [n, Hq·D], positions ctx.pos) over their
   * sequences' cached K/V: queries are arranged per cache row ([rows, Tq, Hq, D], padding
   * with position −1), attended, and brought back in `rows` order.
   */
  private attendCached(l: number, q: Tensor, rows: Int32Array, lkv: LayerKV, ctx: InferCtx): Tensor {
    const cfg = this.config;
    const D = cfg.headDim, Hq = cfg.numHeads, Hkv = cfg.numKvHeads;
    const R = lkv.rows;
    const per = new Int32Array(R);
    const where = new Int32Array(rows.length);
    rows.forEach((row, i) => {
      const cr = lkv.rowOf[Math.floor(row / ctx.T)];
      where[i] = cr;
      per[cr]++;
    });
    const Tq = Math.max(1, ...per);
    const arrange = new Int32Array(R * Tq);
    const qpos = new Int32Array(R * Tq).fill(-1);
    const back = new Int32Array(rows.length);
    const fill = new Int32Array(R);
    rows.forEach((row, i) => {
      const cr = where[i];
      const at = cr * Tq + fill[cr]++;
      arrange[at] = i;
      qpos[at] = ctx.pos[row];
      back[i] = at;
    });
    const identity = R * Tq === rows.length && back.every((a, i) => a === i);
    const qa = identity ? q : ops.gatherRows(q, this.ctxInts(ctx, arrange, [R * Tq]));
    const window = cfg.slidingWindow[l] ?? 0;
    const { out } = ops.attention(qa.reshape([R, Tq, Hq, D]), lkv.k!.reshape([R, lkv.cap, Hkv, D]), lkv.v!.reshape([R, lkv.cap, Hkv, D]), {
      qpos: this.ctxInts(ctx, qpos, [R, Tq]),
      kpos: this.ctxInts(ctx, lkv.slotPos, [R, lkv.cap]),
      window,
    });
    const flat = out.reshape([R * Tq, Hq * D]);
    return identity ? flat : ops.gatherRows(flat, this.ctxInts(ctx, back, [rows.length]));
  }

  /** A projection, with its LoRA adapter when one is attached. */
  private proj(x: Tensor, w: LinearWeights, name: string): Tensor {
    if (this.lora?.adapters.has(name)) {
      const { y, u } = this.lora.forward(name, x, w);
      u?.dispose();
      return y;
    }
    return ops.linear(x, w.weight, w.bias);
  }

  private mlp(h: Tensor, w: MlpWeights, name?: string): Tensor {
    const g = name ? this.proj(h, w.gate, `${name}.gate_proj`) : ops.linear(h, w.gate.weight, w.gate.bias);
    const u = name ? this.proj(h, w.up, `${name}.up_proj`) : ops.linear(h, w.up.weight, w.up.bias);
    const a = ops.swiglu(g, u);
    return name ? this.proj(a, w.down, `${name}.down_proj`) : ops.linear(a, w.down.weight, w.down.bias);
  }

  /**
   * The MoE block's output for rows h [n, C]. With expert routers (ctx given), each top-k
   * assignment whose router score σ(w_e·h) is below τ is dropped: never computed.
   */
  private moeDelta(l: number, h: Tensor, w: MoeWeights, ctx?: InferCtx): Tensor {
    const m = this.config.moe!;
    const logits = ops.linear(h, w.router.weight);
    const routing = ops.moeRoute(logits, { topK: m.topK, renorm: m.normTopkProb });
    let topkIdx = routing.topkIdx;
    if (ctx) {
      const r = ctx.routers!;
      const tau = r.thresholds.get(l)!;
      const z = ops.linear(h, r.weight(l)).toFloat32Array();
      const E = m.numExperts, K = m.topK;
      const idx = routing.topkIdx.toInt32Array();
      let kept = 0;
      for (let i = 0; i < idx.length; i++) {
        const t = Math.floor(i / K);
        if (1 / (1 + Math.exp(-z[t * E + idx[i]])) < tau) idx[i] = -1;
        else kept++;
      }
      this.record(ctx, l, kept, idx.length);
      topkIdx = this.ints(idx, routing.topkIdx.shape);
    }
    const sorted = ops.moeSort(topkIdx, m.numExperts);
    const { y } = ops.moeExperts(h, sorted, w.experts, { saveActivations: false });
    let out = ops.moeCombine(y, sorted.invPerm, routing.topkW);
    if (w.shared) {
      // Qwen2-MoE: shared expert scaled by sigmoid(shared_expert_gate · h), per token.
      const s = this.mlp(h, w.shared);
      const gate = ops.routerScoreTokens(h, w.sharedGate!.weight.reshape([h.shape[1]]), 0.5).score;
      out = ops.gatedResidual(out, s, gate);
    }
    return out;
  }

  /** Logits [T, V] (row-major) for one sequence of token ids; `routing: false` ignores attached routers. */
  async logits(ids: ArrayLike<number>, opts: { routing?: boolean } = {}): Promise<Float32Array> {
    this.ensureLive('logits');
    const arr = Int32Array.from(ids);
    if (arr.length === 0) throw new ArgumentError('logits: expected at least one token id, received none');
    const cache = this.newCache(1, arr.length);
    try {
      const out = this.forward(arr, null, 1, arr.length, cache, { routing: opts.routing });
      const data = out.toFloat32Array();
      out.dispose();
      return data;
    } finally {
      cache.dispose();
    }
  }

  /**
   * Logits for a batch of sequences of different lengths, padded on the left or right:
   * { logits [B, T, V] row-major, mask [B, T], T }. Padding rows are zeros.
   */
  async logitsBatch(batch: number[][], opts: { padding?: 'left' | 'right' } = {}): Promise<{ logits: Float32Array; mask: Int32Array; T: number }> {
    this.ensureLive('logitsBatch');
    const B = batch.length;
    if (B === 0) throw new ArgumentError('logitsBatch: expected at least one sequence');
    const T = Math.max(...batch.map((s) => s.length));
    if (T === 0) throw new ArgumentError('logitsBatch: every sequence is empty');
    const ids = new Int32Array(B * T);
    const mask = new Int32Array(B * T);
    batch.forEach((seq, b) => {
      const off = opts.padding === 'right' ? 0 : T - seq.length;
      seq.forEach((id, i) => {
        ids[b * T + off + i] = id;
        mask[b * T + off + i] = 1;
      });
    });
    const cache = this.newCache(B, T);
    try {
      const out = this.forward(ids, mask, B, T, cache);
      const data = out.toFloat32Array();
      out.dispose();
      const V = this.config.vocabSize;
      for (let r = 0; r < B * T; r++) if (!mask[r]) data.fill(0, r * V, (r + 1) * V);
      return { logits: data, mask, T };
    } finally {
      cache.dispose();
    }
  }

  /** Greedy decoding with the KV cache: the new token ids (stops early at an EOS id when given). */
  async generateGreedy(prompt: ArrayLike<number>, maxNewTokens: number, opts: { eosTokenIds?: number[] } = {}): Promise<number[]> {
    this.ensureLive('generateGreedy');
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0)
      throw new ArgumentError(`generateGreedy: 'maxNewTokens' expected an integer >= 0, received ${maxNewTokens}`);
    const ids = Array.from(prompt);
    if (ids.length === 0) throw new ArgumentError('generateGreedy: expected a non-empty prompt');
    // the generation loop of generateBatch, greedy, cut at the first of the given EOS ids
    const [r] = await generateBatch(this, [ids], { maxTokens: maxNewTokens, stopAtEos: false });
    const stop = r.tokens.findIndex((t) => opts.eosTokenIds?.includes(t));
    return stop >= 0 ? r.tokens.slice(0, stop + 1) : r.tokens;
  }

  /**
   * Generates from one prompt (text or token ids) as an async iterator of tokens; its
   * return value is the final { text, tokens, stats } (see generateBatch for batches).
   */
  async *generate(prompt: string | number[], options: GenerateOptions = {}): AsyncGenerator<GeneratedToken, GenerateResult, void> {
    this.ensureLive('generate');
    const results = yield* generateStream(this, [prompt], options);
    return results[0];
  }

  /** Attaches fresh (zero-initialised: execute everything) routers, replacing any attached ones. */
  attachRouters(opts: RouterOptions): Routers {
    this.ensureLive('attachRouters');
    const r = new Routers(this.config, opts, this._device);
    this.routers?.dispose();
    this.routers = r;
    return r;
  }

  /** Saves the attached routers (safetensors + metadata), atomically. */
  saveRouters(file: string): void {
    this.ensureLive('saveRouters');
    if (!this.routers) throw new ArgumentError('saveRouters: no routers are attached (attachRouters, loadRouters or tune first)');
    saveRouterFile(file, this, this.routers, this.lora ? { lora: this.lora.metadata() } : {}, this.lora?.tensors());
  }

  /** Loads routers saved for this model and attaches them. */
  loadRouters(file: string, opts: { allowOtherModel?: boolean } = {}): Routers {
    this.ensureLive('loadRouters');
    const r = loadRouterFile(file, this, opts);
    let lora: LoraSet | undefined;
    try {
      lora = loadLoraFile(file, this);
    } catch (e) {
      r.dispose();
      throw e;
    }
    this.routers?.dispose();
    this.routers = r;
    this.lora?.dispose();
    this.lora = lora;
    return r;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    disposeWeights(this.weights);
    this._invFreq.dispose();
    this.routers?.dispose();
    this.routers = undefined;
    this.lora?.dispose();
    this.lora = undefined;
  }
}

/** Loads a Hugging Face model folder (config.json, *.safetensors, tokenizer.json). */
export async function loadModel(dir: string, opts: LoadModelOptions = {}): Promise<CausalLM> {
  // checked before reading anything: an unknown name, or CUDA missing from the build or machine
  const device = opts.device === undefined ? 'cpu' : requireDevice('loadModel', opts.device);
  if (!fs.existsSync(dir)) throw new ArgumentError(`loadModel: model folder ${dir} does not exist`);
  const config = readConfig(dir);
  const tokenizer = opts.noTokenizer ? undefined : loadTokenizer(dir);
  const ck = Checkpoint.open(dir);
  const stored = ck.entries.get('model.embed_tokens.weight')?.dtype;
  // bf16 compute mode: weights become bf16 once, here (setComputeDtype)
  const dtype: DType = opts.dtype ?? (stored === 'BF16' || computeDtype().dtype === 'bfloat16' ? 'bfloat16' : 'float32');
  const { weights } = loadWeights(ck, config, dtype, device);
  return new CausalLM(config, weights, tokenizer, dir);
}
