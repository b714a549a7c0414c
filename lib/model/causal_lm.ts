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
import { DType, Tensor, dispose, tidy } from '../tensor';
import { ModelConfig, readConfig } from './config';
import { TextTokenizer, loadTokenizer } from './tokenizer';
import { LayerWeights, LinearWeights, MlpWeights, MoeWeights, ModelWeights, disposeWeights, loadWeights } from './weights';
import { LoraSet, loadLora as loadLoraFile } from '../train/lora';
import { RouterOptions, Routers } from '../routing/routers';
import { loadRouters as loadRouterFile, saveRouters as saveRouterFile } from '../routing/checkpoint';

export interface LoadModelOptions {
  device?: 'cpu';
  /** Storage dtype of the large matrices; default: float32 for F32/F16 checkpoints, bfloat16 for BF16 ones. */
  dtype?: 'float32' | 'bfloat16';
  /** Skip loading tokenizer.json (logits-only use). Default false: a model folder needs one. */
  noTokenizer?: boolean;
}

export class KVCache {
  readonly k: Tensor[];
  readonly v: Tensor[];
  /** Position of each slot, [B, capacity]; −1 = empty or padding. */
  readonly slotPos: Int32Array;
  /** Slots filled so far (the same for every sequence of the batch). */
  used = 0;
  /** Next position of each sequence (= its number of real tokens so far). */
  readonly nextPos: Int32Array;

  constructor(
    readonly batch: number,
    readonly capacity: number,
    cfg: ModelConfig,
  ) {
    const shape = [batch, capacity, cfg.numKvHeads, cfg.headDim];
    this.k = [];
    this.v = [];
    // Zeroed: empty slots are masked out, but attention multiplies their (zero) probability
    // by their values, so they must hold finite numbers, never uninitialised memory.
    for (let l = 0; l < cfg.numLayers; l++) {
      this.k.push(Tensor.zeros(shape).keep());
      this.v.push(Tensor.zeros(shape).keep());
    }
    this.slotPos = new Int32Array(batch * capacity).fill(-1);
    this.nextPos = new Int32Array(batch);
  }

  get bytes(): number {
    return this.k.reduce((s, t) => s + t.numel * 8, 0);
  }

  dispose(): void {
    dispose([this.k, this.v]);
  }
}

export class CausalLM {
  private readonly invFreq: Tensor;
  private readonly attnScale: number;
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
    this.invFreq = Tensor.from(invFreq).keep();
    this.attnScale = attentionScaling;
  }

  private ensureLive(op: string): void {
    if (this.disposed) throw new RouterTuningError('RT_ERR_DISPOSED', `${op}: the model was disposed`);
  }

  newCache(batch: number, capacity: number): KVCache {
    return new KVCache(batch, capacity, this.config);
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
   */
  forward(ids: Int32Array, mask: Int32Array | null, B: number, T: number, cache: KVCache): Tensor {
    this.ensureLive('forward');
    if (ids.length !== B * T) throw new ArgumentError(`forward: expected ${B * T} ids for [B, T] = [${B}, ${T}], received ${ids.length}`);
    if (cache.batch !== B) throw new ArgumentError(`forward: the cache holds ${cache.batch} sequences, the input ${B}`);
    if (cache.used + T > cache.capacity)
      throw new ArgumentError(`forward: ${cache.used} cached + ${T} new tokens exceed the cache capacity ${cache.capacity}`);
    this.checkIds('forward', ids);
    const cfg = this.config;
    // Positions of the new tokens, and the slot table after appending them.
    const qpos = new Int32Array(B * T);
    for (let b = 0; b < B; b++)
      for (let t = 0; t < T; t++) {
        const valid = !mask || mask[b * T + t] !== 0;
        const p = valid ? cache.nextPos[b]++ : -1;
        qpos[b * T + t] = p;
        cache.slotPos[b * cache.capacity + cache.used + t] = p;
      }
    const start = cache.used;
    cache.used += T;
    return tidy(() => {
      const idT = Tensor.from(ids, [B * T], 'int32');
      const qposT = Tensor.from(qpos, [B, T], 'int32');
      const ropePos = Tensor.from(qpos.map((p) => Math.max(p, 0)), [B * T], 'int32');
      const kposT = Tensor.from(cache.slotPos, [B, cache.capacity], 'int32');
      let x = ops.embedding(idT, this.weights.embed); // [B·T, C]
      for (let l = 0; l < cfg.numLayers; l++) {
        const prev = x;
        x = tidy(() => this.layer(l, x, { B, T, start, cache, qposT, kposT, ropePos }));
        prev.dispose();
      }
      const { out: hf } = ops.rmsnorm(x, this.weights.finalNorm, cfg.rmsNormEps);
      return ops.linear(hf, this.weights.lmHead);
    });
  }

  private layer(
    l: number,
    x: Tensor,
    ctx: { B: number; T: number; start: number; cache: KVCache; qposT: Tensor; kposT: Tensor; ropePos: Tensor },
  ): Tensor {
    const cfg = this.config;
    const w = this.weights.layers[l];
    const { B, T } = ctx;
    const N = B * T, D = cfg.headDim, Hq = cfg.numHeads, Hkv = cfg.numKvHeads;
    const { out: h } = ops.rmsnorm(x, w.inputNorm, cfg.rmsNormEps);
    const pre = `model.layers.${l}.self_attn`;
    let q = this.proj(h, w.q, `${pre}.q_proj`);
    let k = this.proj(h, w.k, `${pre}.k_proj`);
    const v = this.proj(h, w.v, `${pre}.v_proj`);
    let vv = v;
    if (cfg.qkNorm === 'head') {
      q = ops.rmsnorm(q.reshape([N * Hq, D]), w.qNorm!, cfg.rmsNormEps).out;
      k = ops.rmsnorm(k.reshape([N * Hkv, D]), w.kNorm!, cfg.rmsNormEps).out;
    } else if (cfg.qkNorm === 'full') {
      q = ops.rmsnorm(q, w.qNorm!, cfg.rmsNormEps).out;
      k = ops.rmsnorm(k, w.kNorm!, cfg.rmsNormEps).out;
    }
    if (cfg.clipQkv !== undefined) {
      // OLMoE: clamp q, k, v to ±clip_qkv after the q/k norms, before RoPE.
      const c = cfg.clipQkv;
      q = ops.clamp(q, -c, c);
      k = ops.clamp(k, -c, c);
      vv = ops.clamp(v, -c, c);
    }
    const qr = ops.rope(q.reshape([N, Hq, D]), ctx.ropePos, this.invFreq, { attnScale: this.attnScale });
    const kr = ops.rope(k.reshape([N, Hkv, D]), ctx.ropePos, this.invFreq, { attnScale: this.attnScale });
    // Append the new keys/values to each sequence's slots.
    const kc = ctx.cache.k[l], vc = ctx.cache.v[l];
    const rowElems = Hkv * D;
    for (let b = 0; b < B; b++) {
      const dst = (b * ctx.cache.capacity + ctx.start) * rowElems;
      kc.copyFrom(kr, dst, b * T * rowElems, T * rowElems);
      vc.copyFrom(vv, dst, b * T * rowElems, T * rowElems);
    }
    const window = cfg.slidingWindow[l] ?? 0;
    const { out: att } = ops.attention(qr.reshape([B, T, Hq, D]), kc, vc, { qpos: ctx.qposT, kpos: ctx.kposT, window });
    const o = this.proj(att.reshape([N, Hq * D]), w.o, `${pre}.o_proj`);
    const x1 = ops.gatedResidual(x, o);
    const { out: h2 } = ops.rmsnorm(x1, w.postAttnNorm, cfg.rmsNormEps);
    if (w.mlp) return ops.gatedResidual(x1, this.mlp(h2, w.mlp, `model.layers.${l}.mlp`));
    return this.moe(x1, h2, w.moe!);
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

  private moe(x: Tensor, h: Tensor, w: MoeWeights): Tensor {
    const m = this.config.moe!;
    const logits = ops.linear(h, w.router.weight);
    const routing = ops.moeRoute(logits, { topK: m.topK, renorm: m.normTopkProb });
    const sorted = ops.moeSort(routing.topkIdx, m.numExperts);
    const { y } = ops.moeExperts(h, sorted, w.experts, { saveActivations: false });
    let out = ops.gatedResidual(x, ops.moeCombine(y, sorted.invPerm, routing.topkW));
    if (w.shared) {
      // Qwen2-MoE: shared expert scaled by sigmoid(shared_expert_gate · h), per token.
      const s = this.mlp(h, w.shared);
      const gate = ops.routerScoreTokens(h, w.sharedGate!.weight.reshape([h.shape[1]]), 0.5).score;
      out = ops.gatedResidual(out, s, gate);
    }
    return out;
  }

  /** Logits [T, V] (row-major) for one sequence of token ids. */
  async logits(ids: ArrayLike<number>): Promise<Float32Array> {
    this.ensureLive('logits');
    const arr = Int32Array.from(ids);
    if (arr.length === 0) throw new ArgumentError('logits: expected at least one token id, received none');
    const cache = this.newCache(1, arr.length);
    try {
      const out = this.forward(arr, null, 1, arr.length, cache);
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
    const ids = Int32Array.from(prompt);
    if (ids.length === 0) throw new ArgumentError('generateGreedy: expected a non-empty prompt');
    const cache = this.newCache(1, ids.length + maxNewTokens);
    const V = this.config.vocabSize;
    const outTokens: number[] = [];
    try {
      let logits = this.forward(ids, null, 1, ids.length, cache);
      for (let i = 0; i < maxNewTokens; i++) {
        const rows = logits.shape[0];
        const last = new Float32Array(V);
        const all = logits.toFloat32Array();
        last.set(all.subarray((rows - 1) * V, rows * V));
        logits.dispose();
        let best = 0;
        for (let j = 1; j < V; j++) if (last[j] > last[best]) best = j;
        outTokens.push(best);
        if (opts.eosTokenIds?.includes(best) || i === maxNewTokens - 1) break;
        logits = this.forward(Int32Array.of(best), null, 1, 1, cache);
      }
      return outTokens;
    } finally {
      cache.dispose();
    }
  }

  /** Attaches fresh (zero-initialised: execute everything) routers, replacing any attached ones. */
  attachRouters(opts: RouterOptions): Routers {
    this.ensureLive('attachRouters');
    const r = new Routers(this.config, opts);
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
    this.invFreq.dispose();
    this.routers?.dispose();
    this.routers = undefined;
    this.lora?.dispose();
    this.lora = undefined;
  }
}

/** Loads a Hugging Face model folder (config.json, *.safetensors, tokenizer.json). */
export async function loadModel(dir: string, opts: LoadModelOptions = {}): Promise<CausalLM> {
  if (opts.device && opts.device !== 'cpu')
    throw new ArgumentError(`loadModel: device '${opts.device}' is not available in this build (expected 'cpu')`);
  if (!fs.existsSync(dir)) throw new ArgumentError(`loadModel: model folder ${dir} does not exist`);
  const config = readConfig(dir);
  const tokenizer = opts.noTokenizer ? undefined : loadTokenizer(dir);
  const ck = Checkpoint.open(dir);
  const stored = ck.entries.get('model.embed_tokens.weight')?.dtype;
  const dtype: DType = opts.dtype ?? (stored === 'BF16' ? 'bfloat16' : 'float32');
  const { weights } = loadWeights(ck, config, dtype);
  return new CausalLM(config, weights, tokenizer, dir);
}
