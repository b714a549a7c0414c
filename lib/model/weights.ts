/**
 * Weights of a causal LM, read from a checkpoint by Hugging Face parameter names and
 * checked against the config (every tensor present, every shape as the config says).
 * Large matrices (projections, embeddings, experts) keep the requested storage dtype
 * (bf16 stays bf16 unless float32 is asked for); norms, biases and gates are float32.
 * Experts are stacked per layer as [E, I, C] / [E, C, I] from either layout:
 * per-expert tensors (experts.N.gate_proj / Mixtral's w1 w3 w2) or fused 3-D tensors
 * (experts.gate_up_proj [E, 2I, C], experts.down_proj [E, C, I]).
 * Each tensor is read to the host and placed on the requested device one at a time, so
 * loading onto a GPU never holds more than one tensor (one expert) in host memory.
 */
import { cast, sumSquares } from '../ops/elementwise';
import { Checkpoint, SafetensorsError } from '../io/safetensors';
import { RouterTuningError } from '../errors';
import { DType, Device, Tensor, dispose } from '../tensor';
import { ModelConfig, isMoeLayer } from './config';

export interface LinearWeights {
  weight: Tensor; // [out, in]
  bias?: Tensor; // [out]
}

export interface MlpWeights {
  gate: LinearWeights;
  up: LinearWeights;
  down: LinearWeights;
}

export interface MoeWeights {
  router: LinearWeights; // [E, C]
  experts: { gate: Tensor; up: Tensor; down: Tensor }; // [E,I,C] [E,I,C] [E,C,I]
  shared?: MlpWeights;
  sharedGate?: LinearWeights; // [1, C]
}

export interface LayerWeights {
  inputNorm: Tensor;
  postAttnNorm: Tensor;
  q: LinearWeights;
  k: LinearWeights;
  v: LinearWeights;
  o: LinearWeights;
  qNorm?: Tensor;
  kNorm?: Tensor;
  mlp?: MlpWeights;
  moe?: MoeWeights;
}

export interface ModelWeights {
  embed: Tensor; // [V, C]
  layers: LayerWeights[];
  finalNorm: Tensor;
  lmHead: Tensor; // [V, C] (the embedding itself when tied)
  dtype: DType;
}

export class WeightError extends RouterTuningError {
  constructor(message: string) {
    super('RT_ERR_WEIGHTS', message);
    this.name = 'WeightError';
  }
}

/** Elements of a bf16 weight widened at a time by the finiteness check (4 MiB of fp32). */
const FINITE_CHUNK = 1 << 20;

class Loader {
  readonly loaded: Tensor[] = [];
  readonly used = new Set<string>();
  constructor(
    readonly ck: Checkpoint,
    readonly dtype: DType,
    readonly device: Device = 'cpu',
  ) {}

  private check(name: string, shape: number[]): void {
    if (!this.ck.has(name)) throw new WeightError(`${this.ck.dir}: tensor '${name}' (shape [${shape.join(', ')}]) is missing from the checkpoint`);
    const e = this.ck.entry(name);
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i]))
      throw new WeightError(`${this.ck.dir}: tensor '${name}' has shape [${e.shape.join(', ')}], the config expects [${shape.join(', ')}]`);
    this.used.add(name);
  }

  /**
   * A host tensor read from the checkpoint after a finiteness check: a NaN or ±Inf weight
   * (a corrupt or diverged checkpoint) is an error naming the tensor and the first bad
   * element, not silently NaN logits later. One native pass (sum of squares in double).
   */
  private finite(name: string, t: Tensor): Tensor {
    if (t.numel === 0) return t;
    // bf16 is widened a chunk at a time: a whole-tensor fp32 copy would raise peak memory
    // by twice the largest matrix (the load bench's peak RSS / weight bytes).
    const chunk = t.dtype === 'float32' ? t.numel : Math.min(t.numel, FINITE_CHUNK);
    const narrow = chunk < t.numel ? Tensor.empty([chunk], t.dtype) : undefined;
    try {
      for (let at = 0; at < t.numel; at += chunk) {
        const n = Math.min(chunk, t.numel - at);
        const part = narrow ? narrow.copyFrom(t, 0, at, n) : t;
        const wide = part.dtype === 'float32' ? part : cast(part, 'float32');
        try {
          if (Number.isFinite(sumSquares(wide))) continue;
          const values = wide.toFloat32Array().subarray(0, n);
          const i = values.findIndex((v) => !Number.isFinite(v));
          t.dispose();
          throw new WeightError(`${this.ck.dir}: tensor '${name}' holds a non-finite value (${values[i]} at element ${at + i}); expected finite weights`);
        } finally {
          if (wide !== part) wide.dispose();
        }
      }
      return t;
    } finally {
      narrow?.dispose();
    }
  }

  /** A host tensor read from the checkpoint, moved to the loader's device (the host copy freed). */
  private place(t: Tensor): Tensor {
    if (t.device === this.device) return t;
    try {
      return t.to(this.device);
    } finally {
      t.dispose();
    }
  }

  /** A matrix in the model's storage dtype. */
  matrix(name: string, shape: number[]): Tensor {
    this.check(name, shape);
    return this.keep(this.place(this.finite(name, this.ck.read(name, this.dtype))));
  }

  /** A small float32 tensor (norm weights, biases, gates). */
  vector(name: string, shape: number[]): Tensor {
    this.check(name, shape);
    return this.keep(this.place(this.finite(name, this.ck.read(name, 'float32'))));
  }

  /** Stacks E per-expert matrices [rows, cols] into one [E, rows, cols] tensor (each expert read on the host, copied into place). */
  stack(names: string[], rows: number, cols: number): Tensor {
    const out = this.keep(Tensor.empty([names.length, rows, cols], this.dtype, this.device));
    names.forEach((name, e) => {
      this.check(name, [rows, cols]);
      const t = this.finite(name, this.ck.read(name, this.dtype));
      try {
        out.copyFrom(t, e * rows * cols, 0, rows * cols);
      } finally {
        t.dispose();
      }
    });
    return out;
  }

  /** Rows [from, from+rows) of each expert of a fused [E, R, cols] tensor, as [E, rows, cols]. */
  slice(fused: Tensor, E: number, R: number, from: number, rows: number, cols: number): Tensor {
    const out = this.keep(Tensor.empty([E, rows, cols], fused.dtype, fused.device));
    for (let e = 0; e < E; e++) out.copyFrom(fused, e * rows * cols, (e * R + from) * cols, rows * cols);
    return out;
  }

  keep(t: Tensor): Tensor {
    this.loaded.push(t);
    return t;
  }

  drop(t: Tensor): void {
    const i = this.loaded.indexOf(t);
    if (i >= 0) this.loaded.splice(i, 1);
    t.dispose();
  }

  has(name: string): boolean {
    return this.ck.has(name);
  }
}

function linear(ld: Loader, prefix: string, out: number, inp: number, bias: boolean): LinearWeights {
  return {
    weight: ld.matrix(`${prefix}.weight`, [out, inp]),
    bias: bias ? ld.vector(`${prefix}.bias`, [out]) : undefined,
  };
}

function mlp(ld: Loader, prefix: string, C: number, I: number, bias: boolean): MlpWeights {
  return {
    gate: linear(ld, `${prefix}.gate_proj`, I, C, bias),
    up: linear(ld, `${prefix}.up_proj`, I, C, bias),
    down: linear(ld, `${prefix}.down_proj`, C, I, bias),
  };
}

function moe(ld: Loader, cfg: ModelConfig, l: number): MoeWeights {
  const m = cfg.moe!;
  const E = m.numExperts, I = m.expertIntermediateSize, C = cfg.hiddenSize;
  const base = `model.layers.${l}`;
  // Mixtral's saved layout lives under block_sparse_moe with w1 (gate), w3 (up), w2 (down).
  const mixtralSaved = cfg.family === 'mixtral' && ld.has(`${base}.block_sparse_moe.gate.weight`);
  const blk = mixtralSaved ? `${base}.block_sparse_moe` : `${base}.mlp`;
  const router = linear(ld, `${blk}.gate`, E, C, false);
  router.weight = toFloat32(ld, router.weight);
  let experts: MoeWeights['experts'];
  if (ld.has(`${blk}.experts.gate_up_proj`)) {
    const fused = ld.matrix(`${blk}.experts.gate_up_proj`, [E, 2 * I, C]);
    experts = {
      gate: ld.slice(fused, E, 2 * I, 0, I, C),
      up: ld.slice(fused, E, 2 * I, I, I, C),
      down: ld.matrix(`${blk}.experts.down_proj`, [E, C, I]),
    };
    ld.drop(fused);
  } else {
    const ids = [...Array(E).keys()];
    const n = (e: number, a: string, b: string) => `${blk}.experts.${e}.${mixtralSaved ? a : b}.weight`;
    experts = {
      gate: ld.stack(ids.map((e) => n(e, 'w1', 'gate_proj')), I, C),
      up: ld.stack(ids.map((e) => n(e, 'w3', 'up_proj')), I, C),
      down: ld.stack(ids.map((e) => n(e, 'w2', 'down_proj')), C, I),
    };
  }
  const w: MoeWeights = { router, experts };
  if (m.sharedExpertIntermediateSize) {
    w.shared = mlp(ld, `${blk}.shared_expert`, C, m.sharedExpertIntermediateSize, false);
    w.sharedGate = linear(ld, `${blk}.shared_expert_gate`, 1, C, false);
    w.sharedGate.weight = toFloat32(ld, w.sharedGate.weight);
  }
  return w;
}

function toFloat32(ld: Loader, t: Tensor): Tensor {
  if (t.dtype === 'float32') return t;
  const f = ld.keep(Tensor.from(t.toFloat32Array(), t.shape, 'float32', t.device));
  ld.drop(t);
  return f;
}

/** Reads and checks every weight the config calls for, onto `device`; frees what it read on failure. */
export function loadWeights(ck: Checkpoint, cfg: ModelConfig, dtype: DType, device: Device = 'cpu'): { weights: ModelWeights; unusedTensors: string[] } {
  const ld = new Loader(ck, dtype, device);
  const C = cfg.hiddenSize, D = cfg.headDim, Hq = cfg.numHeads, Hkv = cfg.numKvHeads;
  try {
    const embed = ld.matrix('model.embed_tokens.weight', [cfg.vocabSize, C]);
    const layers: LayerWeights[] = [];
    for (let l = 0; l < cfg.numLayers; l++) {
      const p = `model.layers.${l}`;
      const layer: LayerWeights = {
        inputNorm: ld.vector(`${p}.input_layernorm.weight`, [C]),
        postAttnNorm: ld.vector(`${p}.post_attention_layernorm.weight`, [C]),
        q: linear(ld, `${p}.self_attn.q_proj`, Hq * D, C, cfg.qkvBias),
        k: linear(ld, `${p}.self_attn.k_proj`, Hkv * D, C, cfg.qkvBias),
        v: linear(ld, `${p}.self_attn.v_proj`, Hkv * D, C, cfg.qkvBias),
        o: linear(ld, `${p}.self_attn.o_proj`, C, Hq * D, cfg.oBias),
      };
      if (cfg.qkNorm === 'head') {
        layer.qNorm = ld.vector(`${p}.self_attn.q_norm.weight`, [D]);
        layer.kNorm = ld.vector(`${p}.self_attn.k_norm.weight`, [D]);
      } else if (cfg.qkNorm === 'full') {
        layer.qNorm = ld.vector(`${p}.self_attn.q_norm.weight`, [Hq * D]);
        layer.kNorm = ld.vector(`${p}.self_attn.k_norm.weight`, [Hkv * D]);
      }
      if (isMoeLayer(cfg, l)) layer.moe = moe(ld, cfg, l);
      else layer.mlp = mlp(ld, `${p}.mlp`, C, cfg.intermediateSize, cfg.mlpBias);
      layers.push(layer);
    }
    const finalNorm = ld.vector('model.norm.weight', [C]);
    let lmHead = embed;
    if (!cfg.tieWordEmbeddings || ck.has('lm_head.weight')) {
      if (cfg.tieWordEmbeddings) ld.used.add('lm_head.weight');
      lmHead = cfg.tieWordEmbeddings ? embed : ld.matrix('lm_head.weight', [cfg.vocabSize, C]);
    }
    const unusedTensors = [...ck.entries.keys()].filter((n) => !ld.used.has(n) && !n.includes('rotary_emb.inv_freq')).sort();
    return { weights: { embed, layers, finalNorm, lmHead, dtype }, unusedTensors };
  } catch (e) {
    dispose(ld.loaded);
    if (e instanceof SafetensorsError || e instanceof WeightError) throw e;
    throw e;
  }
}

export function disposeWeights(w: ModelWeights): void {
  for (const t of weightTensors(w)) t.dispose();
}

/** Every distinct tensor of the weights (a tied lm_head counts once). */
export function weightTensors(w: ModelWeights): Set<Tensor> {
  const all = new Set<Tensor>();
  const add = (v: unknown) => {
    if (v instanceof Tensor) all.add(v);
    else if (v && typeof v === 'object') for (const x of Object.values(v)) add(x);
  };
  add(w);
  return all;
}

/**
 * Moves every weight to `device` in place (the same objects now hold the new tensors; a
 * tied lm_head stays tied) and disposes the old copies. Every copy is made before any old
 * tensor is freed, so a failed move (out of memory) leaves the weights as they were.
 */
export function moveWeights(w: ModelWeights, device: Device): void {
  const moved = new Map<Tensor, Tensor>();
  try {
    for (const t of weightTensors(w)) if (t.device !== device) moved.set(t, t.to(device).keep());
  } catch (e) {
    dispose([...moved.values()]);
    throw e;
  }
  if (moved.size === 0) return;
  const swap = (o: Record<string, unknown>) => {
    for (const [k, v] of Object.entries(o)) {
      if (v instanceof Tensor) {
        const n = moved.get(v);
        if (n) o[k] = n;
      } else if (v && typeof v === 'object') swap(v as Record<string, unknown>);
    }
  };
  swap(w as unknown as Record<string, unknown>);
  for (const old of moved.keys()) old.dispose();
}
