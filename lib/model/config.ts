/**
 * config.json → one typed ModelConfig, for every supported family, accepting both
 * transformers 4.x keys (rope_theta, rope_scaling) and 5.x keys (rope_parameters),
 * and the aliases the families use (num_experts / num_local_experts, qkv_bias, …).
 * Keys that are read are listed in `usedKeys`; everything else the file holds is
 * reported in `ignoredKeys` so users see what the loader did not act on.
 */
import * as fs from 'fs';
import * as path from 'path';
import { RouterTuningError } from '../errors';

export const SUPPORTED_FAMILIES = ['llama', 'mistral', 'qwen2', 'qwen3', 'mixtral', 'olmoe', 'qwen2_moe', 'qwen3_moe'] as const;
export type Family = (typeof SUPPORTED_FAMILIES)[number];

export class ConfigError extends RouterTuningError {
  constructor(message: string) {
    super('RT_ERR_CONFIG', message);
    this.name = 'ConfigError';
  }
}

export interface RopeConfig {
  type: 'default' | 'llama3' | 'linear';
  theta: number;
  factor?: number;
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
}

export interface MoeConfig {
  numExperts: number;
  topK: number;
  /** Renormalise the top-k probabilities to sum to 1 (Mixtral always; others by norm_topk_prob). */
  normTopkProb: boolean;
  expertIntermediateSize: number;
  /** Qwen2-MoE: a dense shared expert with a sigmoid gate, added to every token. */
  sharedExpertIntermediateSize?: number;
  /** Layer l is MoE iff (l+1) % decoderSparseStep == 0 and l is not in mlpOnlyLayers. */
  decoderSparseStep: number;
  mlpOnlyLayers: number[];
}

export interface ModelConfig {
  family: Family;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  rope: RopeConfig;
  tieWordEmbeddings: boolean;
  /** Bias on q/k/v projections (qwen2, qwen2_moe; attention_bias elsewhere). */
  qkvBias: boolean;
  /** Bias on the output projection (attention_bias in llama-style configs). */
  oBias: boolean;
  mlpBias: boolean;
  /** q/k RMSNorm: 'head' per head over head_dim (qwen3*), 'full' over the whole projection (olmoe). */
  qkNorm: 'none' | 'head' | 'full';
  /** OLMoE clip_qkv: clamp q, k, v to ±clip. */
  clipQkv?: number;
  /** Sliding window per layer (null: full attention). */
  slidingWindow: (number | null)[];
  moe?: MoeConfig;
  bosTokenId?: number;
  eosTokenIds: number[];
  padTokenId?: number;
  ignoredKeys: string[];
}

/** Keys that only matter for training/regularisation in transformers, or are metadata. */
const INFORMATIONAL = new Set([
  'architectures', 'transformers_version', 'torch_dtype', 'dtype', 'use_cache', 'initializer_range', 'attention_dropout',
  'output_router_logits', 'router_aux_loss_coef', 'router_jitter_noise', 'pretraining_tp', '_name_or_path',
]);

class Reader {
  readonly used = new Set<string>();
  constructor(readonly raw: Record<string, unknown>, readonly file: string) {}

  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }
  get(key: string): unknown {
    this.used.add(key);
    return this.raw[key];
  }
  int(key: string, fallback?: number, min = 0): number {
    const v = this.get(key);
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new ConfigError(`${this.file}: missing required key "${key}" (an integer)`);
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min)
      throw new ConfigError(`${this.file}: "${key}" expected an integer >= ${min}, received ${JSON.stringify(v)}`);
    return v;
  }
  num(key: string, fallback?: number): number {
    const v = this.get(key);
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new ConfigError(`${this.file}: missing required key "${key}" (a number)`);
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`${this.file}: "${key}" expected a number, received ${JSON.stringify(v)}`);
    return v;
  }
  bool(key: string, fallback: boolean): boolean {
    const v = this.get(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') throw new ConfigError(`${this.file}: "${key}" expected true or false, received ${JSON.stringify(v)}`);
    return v;
  }
  /** First present key of several aliases. */
  intAlias(keys: string[], fallback?: number, min = 0): number {
    for (const k of keys) if (this.has(k)) return this.int(k, undefined, min);
    for (const k of keys) this.used.add(k);
    if (fallback !== undefined) return fallback;
    throw new ConfigError(`${this.file}: missing required key "${keys[0]}"${keys.length > 1 ? ` (or ${keys.slice(1).join(', ')})` : ''}`);
  }
}

function parseRope(r: Reader): RopeConfig {
  // 5.x: rope_parameters {rope_type, rope_theta, …}; 4.x: rope_theta + rope_scaling {rope_type|type, …}.
  let params: Record<string, unknown> | null = null;
  let theta: number | undefined;
  if (r.has('rope_parameters')) {
    params = r.get('rope_parameters') as Record<string, unknown>;
    if (typeof params !== 'object') throw new ConfigError(`${r.file}: "rope_parameters" expected an object`);
    // Per-layer-type rope parameters (e.g. {full_attention: {...}}): take full attention's.
    if (params.full_attention && typeof params.full_attention === 'object') params = params.full_attention as Record<string, unknown>;
    if (typeof params.rope_theta === 'number') theta = params.rope_theta;
  }
  if (theta === undefined) theta = r.num('rope_theta', 10000);
  else r.get('rope_theta');
  if (!params && r.has('rope_scaling')) params = r.get('rope_scaling') as Record<string, unknown>;
  else r.get('rope_scaling');
  const type = String(params?.rope_type ?? params?.type ?? 'default');
  if (type === 'default') return { type: 'default', theta };
  const num = (k: string): number => {
    const v = params![k];
    if (typeof v !== 'number') throw new ConfigError(`${r.file}: rope ${type} expects a numeric "${k}", received ${JSON.stringify(v)}`);
    return v;
  };
  if (type === 'llama3')
    return {
      type: 'llama3',
      theta,
      factor: num('factor'),
      lowFreqFactor: num('low_freq_factor'),
      highFreqFactor: num('high_freq_factor'),
      originalMaxPositionEmbeddings: num('original_max_position_embeddings'),
    };
  if (type === 'linear') return { type: 'linear', theta, factor: num('factor') };
  throw new ConfigError(`${r.file}: rope type "${type}" is not supported (supported: default, linear, llama3)`);
}

export function normalizeConfig(raw: Record<string, unknown>, file = 'config.json'): ModelConfig {
  const r = new Reader(raw, file);
  const modelType = r.get('model_type');
  if (typeof modelType !== 'string' || !(SUPPORTED_FAMILIES as readonly string[]).includes(modelType))
    throw new ConfigError(
      `${file}: model_type ${JSON.stringify(modelType)} is not supported; supported model types: ${SUPPORTED_FAMILIES.join(', ')}`,
    );
  const family = modelType as Family;
  const hiddenSize = r.int('hidden_size', undefined, 1);
  const numHeads = r.int('num_attention_heads', undefined, 1);
  const numKvHeads = r.int('num_key_value_heads', numHeads, 1);
  if (numHeads % numKvHeads !== 0)
    throw new ConfigError(`${file}: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  const headDim = r.has('head_dim') ? r.int('head_dim', undefined, 1) : (r.get('head_dim'), hiddenSize / numHeads);
  if (!Number.isInteger(headDim))
    throw new ConfigError(`${file}: hidden_size (${hiddenSize}) is not divisible by num_attention_heads (${numHeads}) and no head_dim is given`);
  const numLayers = r.int('num_hidden_layers', undefined, 1);
  const cfg: ModelConfig = {
    family,
    vocabSize: r.int('vocab_size', undefined, 1),
    hiddenSize,
    intermediateSize: r.int('intermediate_size', undefined, 1),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: r.num('rms_norm_eps', 1e-6),
    maxPositionEmbeddings: r.int('max_position_embeddings', 4096, 1),
    rope: parseRope(r),
    tieWordEmbeddings: r.bool('tie_word_embeddings', false),
    qkvBias: false,
    oBias: false,
    mlpBias: false,
    qkNorm: 'none',
    slidingWindow: new Array(numLayers).fill(null),
    eosTokenIds: [],
    ignoredKeys: [],
  };
  const act = r.get('hidden_act') ?? 'silu';
  if (act !== 'silu') throw new ConfigError(`${file}: hidden_act ${JSON.stringify(act)} is not supported (only silu / SwiGLU)`);

  switch (family) {
    case 'llama':
      cfg.qkvBias = cfg.oBias = r.bool('attention_bias', false);
      cfg.mlpBias = r.bool('mlp_bias', false);
      break;
    case 'qwen2':
    case 'qwen2_moe':
      cfg.qkvBias = r.bool('qkv_bias', true);
      break;
    case 'qwen3':
    case 'qwen3_moe':
      cfg.qkvBias = cfg.oBias = r.bool('attention_bias', false);
      cfg.qkNorm = 'head';
      break;
    case 'olmoe':
      cfg.qkvBias = cfg.oBias = r.bool('attention_bias', false);
      cfg.qkNorm = 'full';
      if (r.has('clip_qkv')) cfg.clipQkv = r.num('clip_qkv');
      else r.get('clip_qkv');
      break;
    default:
      break;
  }

  // Sliding window: mistral/mixtral apply it to every layer; qwen* only with use_sliding_window,
  // on the layers that layer_types marks (5.x) or from max_window_layers on (4.x).
  const window = r.has('sliding_window') ? r.int('sliding_window', undefined, 0) : (r.get('sliding_window'), 0);
  if (family === 'mistral' || family === 'mixtral') {
    if (window > 0) cfg.slidingWindow.fill(window);
  } else if (family.startsWith('qwen')) {
    const use = r.bool('use_sliding_window', false);
    const types = r.get('layer_types');
    const maxWindowLayers = r.int('max_window_layers', numLayers);
    if (use && window > 0) {
      for (let l = 0; l < numLayers; l++) {
        const sliding = Array.isArray(types) ? types[l] === 'sliding_attention' : l >= maxWindowLayers;
        cfg.slidingWindow[l] = sliding ? window : null;
      }
    }
  }

  if (family === 'mixtral' || family === 'olmoe' || family === 'qwen2_moe' || family === 'qwen3_moe') {
    const numExperts = r.intAlias(['num_experts', 'num_local_experts'], undefined, 1);
    const topK = r.int('num_experts_per_tok', 2, 1);
    if (topK > numExperts) throw new ConfigError(`${file}: num_experts_per_tok (${topK}) exceeds the number of experts (${numExperts})`);
    const moe: MoeConfig = {
      numExperts,
      topK,
      normTopkProb: family === 'mixtral' ? true : r.bool('norm_topk_prob', family === 'qwen3_moe'),
      expertIntermediateSize: family === 'mixtral' || family === 'olmoe' ? cfg.intermediateSize : r.int('moe_intermediate_size', undefined, 1),
      decoderSparseStep: family.startsWith('qwen') ? r.int('decoder_sparse_step', 1, 1) : 1,
      mlpOnlyLayers: [],
    };
    if (family.startsWith('qwen')) {
      const only = r.get('mlp_only_layers') ?? [];
      if (!Array.isArray(only) || !only.every((l) => Number.isInteger(l) && l >= 0 && l < numLayers))
        throw new ConfigError(`${file}: "mlp_only_layers" expected a list of layer indices in [0, ${numLayers}), received ${JSON.stringify(only)}`);
      moe.mlpOnlyLayers = only as number[];
    }
    if (family === 'qwen2_moe') moe.sharedExpertIntermediateSize = r.int('shared_expert_intermediate_size', undefined, 1);
    cfg.moe = moe;
  }

  const bos = r.get('bos_token_id');
  if (typeof bos === 'number') cfg.bosTokenId = bos;
  const eos = r.get('eos_token_id');
  cfg.eosTokenIds = typeof eos === 'number' ? [eos] : Array.isArray(eos) ? eos.filter((e): e is number => typeof e === 'number') : [];
  const pad = r.get('pad_token_id');
  if (typeof pad === 'number') cfg.padTokenId = pad;
  cfg.ignoredKeys = Object.keys(raw)
    .filter((k) => !r.used.has(k) && !INFORMATIONAL.has(k))
    .sort();
  return cfg;
}

export function readConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); a model folder needs config.json`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(`${file}: expected a JSON object`);
  return normalizeConfig(raw as Record<string, unknown>, file);
}

/** True when layer `l` of `cfg` uses the MoE block (else the dense MLP). */
export function isMoeLayer(cfg: ModelConfig, l: number): boolean {
  if (!cfg.moe) return false;
  return (l + 1) % cfg.moe.decoderSparseStep === 0 && !cfg.moe.mlpOnlyLayers.includes(l);
}
