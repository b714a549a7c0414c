/**
 * e2e suite: prefill and decode tokens/s of synthetic Llama-shaped models (random weights,
 * fp32) at contexts 128, 512 and 2048, each as a fraction of its roofline measured on this
 * machine in the same run:
 *
 *   prefill roofline tok/s = sgemm rate (2048³) / FLOPs per prompt token, where
 *     FLOPs per token = 2·(active non-embedding matmul weights)            (projections, MLP or top-k experts)
 *                     + Σ_layers 2·Hq·D·(T+1)                               (causal QKᵀ and PV, averaged over positions)
 *                     + 2·C·V / T                                           (lm_head on the last token only)
 *   decode roofline tok/s = read bandwidth / bytes read per generated token, where
 *     bytes per token = active weight bytes (projections, MLP or the top-k experts, norms, lm_head,
 *                       one embedding row) + K/V bytes read (2·L·Hkv·D·4 per context position,
 *                       at the mean context of the measured steps)
 *
 * The read bandwidth (`readGBps`) is a read-only pass over 256 MiB: the faster of a
 * sum-of-squares reduction and a GEMV (one row times a 8192×8192 f32 matrix), both native
 * ops, counted as bytes read. The copy ceiling (`copyGBps`) counts read + write bytes and is
 * not used for the decode roofline.
 *
 * Prefill computes the last token's logits only (logitsRows); decode is greedy steps after
 * the prefill (argmax on the host included in the step time).
 */
import { Tensor, dispose, ops } from '../lib';
import { callNative } from '../lib/ops/dispatch';
import { randomModel, syntheticConfig } from '../lib/model/random';
import { isMoeLayer, ModelConfig } from '../lib/model/config';
import type { CausalLM } from '../lib/model/causal_lm';
import { Rng } from '../lib/util/rng';
import { CaseResult, Ceilings, timeRun } from './harness';

/** The ceilings with the read-only bandwidth the decode rooflines use. */
export interface BenchCeilings extends Ceilings {
  readGBps?: number;
}

/** A result row: CaseResult plus the DESIGN.md §7 fields of the e2e and peers suites. */
export interface ReportCase extends CaseResult {
  /** The predicted value (e2e: the roofline tok/s). */
  ideal?: number;
  peer?: string;
  peerValue?: number;
  /** Ours over the peer's, higher is better for us. */
  ratio?: number;
  /** The peer did not run: why. */
  skipped?: string;
  /** Free-form detail for the markdown table. */
  note?: string;
  /** e2e: which model, context and phase (for the grouped table), and the ceilings its roofline used. */
  e2e?: { model: string; params: number; activeParams: number; ctx: number; phase: 'prefill' | 'decode'; decodeTokens?: number; gemmGFLOPS: number; readGBps: number };
}

// ---------------------------------------------------------------------------- ceilings

/** Read-only bandwidth over 256 MiB: the faster of sumSquares and a GEMV (bytes read / s). */
export function measureReadBandwidth(opts: { bytes?: number; minSeconds?: number } = {}): { readGBps: number; sumSquaresGBps: number; gemvGBps: number } {
  const side = Math.round(Math.sqrt((opts.bytes ?? 256 * 2 ** 20) / 4));
  const n = side * side;
  const minS = opts.minSeconds ?? 0.5;
  const a = Tensor.empty([side, side]);
  const x = Tensor.from(new Float32Array(side).fill(1), [1, side]);
  try {
    callNative('fill', [a.handle, 0.5, n]);
    const tSum = timeRun(() => void ops.sumSquares(a), minS, 5);
    const tGemv = timeRun(() => ops.linear(x, a).dispose(), minS, 5);
    const sumSquaresGBps = (n * 4) / tSum / 1e9;
    const gemvGBps = (n * 4) / tGemv / 1e9;
    return { readGBps: Math.max(sumSquaresGBps, gemvGBps), sumSquaresGBps, gemvGBps };
  } finally {
    dispose([a, x]);
  }
}

// ---------------------------------------------------------------------------- models

/** The reference model of every comparison (the issue): ~134M parameters, fp32, untied. */
export const REFERENCE_134M: Record<string, unknown> = {
  model_type: 'llama',
  vocab_size: 32000,
  hidden_size: 768,
  intermediate_size: 2048,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  num_key_value_heads: 12,
  tie_word_embeddings: false,
  hidden_act: 'silu',
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 4096,
  attention_bias: false,
  mlp_bias: false,
  bos_token_id: null,
  eos_token_id: 0,
  pad_token_id: 1,
};

export interface E2eModel {
  key: string;
  label: string;
  raw: Record<string, unknown>;
  /** Prefill repetitions (median) at context ctx. */
  prefillReps(ctx: number): number;
  /** Of those, how many also decode (median of their tokens/s). */
  decodeReps(ctx: number): number;
  decodeTokens(ctx: number): number;
}

const llama = (o: Record<string, unknown>): Record<string, unknown> => ({ ...REFERENCE_134M, ...o });

export const E2E_MODELS: E2eModel[] = [
  {
    key: '20M',
    label: '~23M dense (hidden 256, inter 768, 8 layers, 4 heads, vocab 32000)',
    raw: llama({ hidden_size: 256, intermediate_size: 768, num_hidden_layers: 8, num_attention_heads: 4, num_key_value_heads: 4 }),
    prefillReps: () => 5,
    decodeReps: () => 3,
    decodeTokens: () => 32,
  },
  {
    key: '134M',
    label: '134M dense reference (hidden 768, inter 2048, 12 layers, 12 heads, vocab 32000)',
    raw: { ...REFERENCE_134M },
    prefillReps: (ctx) => (ctx >= 2048 ? 3 : 5),
    decodeReps: () => 3,
    decodeTokens: (ctx) => (ctx >= 2048 ? 16 : 32),
  },
  {
    key: '500M',
    label: '~490M dense (hidden 1280, inter 3584, 20 layers, 20 heads, vocab 32000)',
    raw: llama({ hidden_size: 1280, intermediate_size: 3584, num_hidden_layers: 20, num_attention_heads: 20, num_key_value_heads: 20 }),
    prefillReps: (ctx) => (ctx >= 2048 ? 2 : 3),
    decodeReps: () => 2,
    decodeTokens: (ctx) => (ctx >= 2048 ? 8 : 16),
  },
  {
    key: 'MoE',
    label: 'OLMoE-like MoE, ~142M total (hidden 512, 8 experts top-2, expert inter 1024, 8 layers, vocab 32000)',
    raw: {
      model_type: 'olmoe',
      vocab_size: 32000,
      hidden_size: 512,
      intermediate_size: 1024,
      num_hidden_layers: 8,
      num_attention_heads: 8,
      num_key_value_heads: 8,
      num_experts: 8,
      num_experts_per_tok: 2,
      norm_topk_prob: false,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      max_position_embeddings: 4096,
      eos_token_id: 0,
      pad_token_id: 1,
    },
    prefillReps: (ctx) => (ctx >= 2048 ? 3 : 5),
    decodeReps: () => 3,
    decodeTokens: (ctx) => (ctx >= 2048 ? 16 : 32),
  },
];

/** The smoke-test model of --quick (numbers are not meaningful). */
export const QUICK_MODEL: E2eModel = {
  key: 'tiny',
  label: 'tiny smoke-test model (hidden 64, 2 layers, vocab 512)',
  raw: llama({ vocab_size: 512, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 2 }),
  prefillReps: () => 1,
  decodeReps: () => 1,
  decodeTokens: () => 4,
};

export const E2E_CONTEXTS = [128, 512, 2048];
export const QUICK_CONTEXTS = [16, 32];

// ---------------------------------------------------------------------------- work model

export interface WorkModel {
  /** Every parameter (embedding and lm_head included). */
  params: number;
  /** Parameters a token touches (top-k experts only; embedding table excluded, lm_head included). */
  activeParams: number;
  /** Matmul weights one token multiplies through in the decoder layers (active experts only). */
  layerMatmulParams: number;
  /** Norm weights read per token. */
  normParams: number;
}

export function workModel(cfg: ModelConfig): WorkModel {
  const C = cfg.hiddenSize, D = cfg.headDim, Hq = cfg.numHeads, Hkv = cfg.numKvHeads, V = cfg.vocabSize;
  let params = 0, layerMatmul = 0, norms = C; // final norm
  for (let l = 0; l < cfg.numLayers; l++) {
    const attn = C * Hq * D * 2 + C * Hkv * D * 2;
    let nrm = 2 * C;
    if (cfg.qkNorm === 'head') nrm += 2 * D;
    else if (cfg.qkNorm === 'full') nrm += Hq * D + Hkv * D;
    norms += nrm;
    params += attn + nrm;
    layerMatmul += attn;
    if (isMoeLayer(cfg, l)) {
      const m = cfg.moe!;
      const expert = 3 * C * m.expertIntermediateSize;
      const router = m.numExperts * C;
      let shared = 0;
      if (m.sharedExpertIntermediateSize) shared = 3 * C * m.sharedExpertIntermediateSize + C;
      params += router + m.numExperts * expert + shared;
      layerMatmul += router + m.topK * expert + shared;
    } else {
      params += 3 * C * cfg.intermediateSize;
      layerMatmul += 3 * C * cfg.intermediateSize;
    }
  }
  const embed = V * C;
  const head = cfg.tieWordEmbeddings ? 0 : V * C;
  params += embed + head;
  return { params, activeParams: layerMatmul + norms + V * C, layerMatmulParams: layerMatmul, normParams: norms };
}

/** FLOPs per prompt token of a T-token prefill with last-token logits. */
export function prefillFlopsPerToken(cfg: ModelConfig, T: number): number {
  const w = workModel(cfg);
  const attn = cfg.numLayers * 2 * cfg.numHeads * cfg.headDim * (T + 1);
  return 2 * w.layerMatmulParams + attn + (2 * cfg.hiddenSize * cfg.vocabSize) / T;
}

/** Bytes read per decode step at mean context `ctx` (fp32 weights and cache). */
export function decodeBytesPerToken(cfg: ModelConfig, ctx: number, weightBytes = 4): number {
  const w = workModel(cfg);
  const weights = (w.layerMatmulParams + cfg.vocabSize * cfg.hiddenSize) * weightBytes + w.normParams * 4 + cfg.hiddenSize * weightBytes;
  const kv = cfg.numLayers * 2 * cfg.numKvHeads * cfg.headDim * 4 * ctx;
  return weights + kv;
}

// ---------------------------------------------------------------------------- measurement

export interface GenerationTiming {
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  prefillSeconds: number[];
  /** Per decode run: seconds for all its steps. */
  decodeSeconds: number[];
  decodeTokens: number;
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
  return best;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/**
 * Times `prefillReps` prefills of `prompt` (a fresh cache each, last-token logits only); the
 * first `decodeReps` of them continue with `decodeTokens` greedy steps. Returns the median
 * prefill tokens/s and the median decode tokens/s (decode tokens / that run's decode time).
 * One warm-up (a short prefill and two steps) comes first.
 */
export function measureGeneration(model: CausalLM, prompt: number[], o: { prefillReps: number; decodeReps: number; decodeTokens: number }): GenerationTiming {
  const T = prompt.length;
  const ids = Int32Array.from(prompt);
  const last = Int32Array.from([T - 1]);
  const step = (cache: ReturnType<CausalLM['newCache']>, token: number): Float32Array => {
    const lg = model.forward(Int32Array.from([token]), null, 1, 1, cache);
    try {
      return lg.toFloat32Array();
    } finally {
      lg.dispose();
    }
  };
  // warm-up: allocator, page faults of the weights, thread pool
  {
    const n = Math.min(T, 64);
    const cache = model.newCache(1, n + 2);
    try {
      const lg = model.forward(ids.subarray(0, n), null, 1, n, cache, { logitsRows: Int32Array.from([n - 1]) });
      const row = lg.toFloat32Array();
      lg.dispose();
      step(cache, argmax(row));
    } finally {
      cache.dispose();
    }
  }
  const prefillSeconds: number[] = [], decodeSeconds: number[] = [];
  for (let r = 0; r < Math.max(o.prefillReps, o.decodeReps, 1); r++) {
    const cache = model.newCache(1, T + o.decodeTokens);
    try {
      let t0 = process.hrtime.bigint();
      const lg = model.forward(ids, null, 1, T, cache, { logitsRows: last });
      let row = lg.toFloat32Array();
      lg.dispose();
      prefillSeconds.push(Number(process.hrtime.bigint() - t0) / 1e9);
      if (r >= o.decodeReps || o.decodeTokens <= 0) continue;
      t0 = process.hrtime.bigint();
      for (let s = 0; s < o.decodeTokens; s++) row = step(cache, argmax(row));
      decodeSeconds.push(Number(process.hrtime.bigint() - t0) / 1e9);
    } finally {
      cache.dispose();
    }
  }
  return {
    prefillTokensPerSecond: T / median(prefillSeconds),
    decodeTokensPerSecond: decodeSeconds.length ? o.decodeTokens / median(decodeSeconds) : NaN,
    prefillSeconds,
    decodeSeconds,
    decodeTokens: o.decodeTokens,
  };
}

/** A deterministic prompt of `n` ids in [lo, hi). */
export function randomPrompt(n: number, seed: number, lo: number, hi: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => lo + Math.floor(rng.uniform() * (hi - lo)));
}

// ---------------------------------------------------------------------------- suite

export interface E2eOptions {
  /** Tiny model and contexts, one repetition: a smoke test (numbers are not meaningful). */
  quick?: boolean;
  /** Only combinations whose name `e2e <model> ctx <T>` contains this text ('e2e' selects all). */
  filter?: string;
  /**
   * Measures the ceilings again right before and right after each model (main: not in quick
   * mode) and uses the larger of each, so each model's fractions compare it with the machine as
   * it was while it ran (a shared machine's load drifts over minutes).
   */
  remeasure?: () => BenchCeilings;
  models?: E2eModel[];
  contexts?: number[];
}

export function e2eCaseName(m: E2eModel, ctx: number): string {
  return `e2e ${m.key} ctx ${ctx}`;
}

export function runE2eSuite(log: (s: string) => void, ceilings: BenchCeilings, opts: E2eOptions = {}): ReportCase[] {
  const models = opts.models ?? (opts.quick ? [QUICK_MODEL] : E2E_MODELS);
  const contexts = opts.contexts ?? (opts.quick ? QUICK_CONTEXTS : E2E_CONTEXTS);
  const results: ReportCase[] = [];
  const selected = (m: E2eModel, ctx: number) => !opts.filter || opts.filter === 'e2e' || e2eCaseName(m, ctx).includes(opts.filter);
  for (const m of models) {
    const ctxs = contexts.filter((c) => selected(m, c));
    if (ctxs.length === 0) continue;
    const cfg = syntheticConfig(m.raw);
    const wm = workModel(cfg);
    log(`  e2e ${m.key}: building ${m.label} — ${(wm.params / 1e6).toFixed(1)}M parameters (${((wm.params * 4) / 2 ** 30).toFixed(2)} GiB fp32) …`);
    const t0 = Date.now();
    const model = randomModel(cfg, { seed: 1 });
    log(`    built in ${((Date.now() - t0) / 1e3).toFixed(1)} s`);
    const measured: { ctx: number; dt: number; r: GenerationTiming }[] = [];
    let before = ceilings;
    if (opts.remeasure) before = opts.remeasure();
    try {
      for (const ctx of ctxs) {
        const prompt = randomPrompt(ctx, 100 + ctx, 2, Math.min(cfg.vocabSize, 4096));
        const dt = m.decodeTokens(ctx);
        const t1 = Date.now();
        const r = measureGeneration(model, prompt, { prefillReps: m.prefillReps(ctx), decodeReps: m.decodeReps(ctx), decodeTokens: dt });
        measured.push({ ctx, dt, r });
        log(`    ctx ${String(ctx).padStart(4)}: prefill ${r.prefillTokensPerSecond.toFixed(1).padStart(8)} tok/s, decode ${r.decodeTokensPerSecond.toFixed(1).padStart(7)} tok/s  [${((Date.now() - t1) / 1e3).toFixed(1)} s]`);
      }
    } finally {
      model.dispose();
    }
    // The ceilings before and after the model's runs: the larger of each is the best estimate
    // of the machine's capacity while it ran (a shared machine's load drifts).
    let bw = ceilings.readGBps ?? ceilings.copyGBps;
    let gemm = ceilings.gemmGFLOPS;
    if (opts.remeasure) {
      const after = opts.remeasure();
      bw = Math.max(before.readGBps ?? before.copyGBps, after.readGBps ?? after.copyGBps);
      gemm = Math.max(before.gemmGFLOPS, after.gemmGFLOPS);
      log(
        `    ceilings before/after: read ${(before.readGBps ?? before.copyGBps).toFixed(2)}/${(after.readGBps ?? after.copyGBps).toFixed(2)} GB/s, ` +
          `sgemm ${before.gemmGFLOPS.toFixed(1)}/${after.gemmGFLOPS.toFixed(1)} GFLOP/s (the larger of each is used)`,
      );
    }
    for (const { ctx, dt, r } of measured) {
      const pf = prefillFlopsPerToken(cfg, ctx);
      const prefillRoof = (gemm * 1e9) / pf;
      // mean context over the measured steps: ctx … ctx + dt − 1
      const db = decodeBytesPerToken(cfg, ctx + (dt - 1) / 2);
      const decodeRoof = (bw * 1e9) / db;
      const info = { model: m.key, params: wm.params, activeParams: wm.activeParams, ctx, gemmGFLOPS: gemm, readGBps: bw };
      results.push({
        suite: 'e2e',
        name: `prefill tok/s, ${m.key}, ctx ${ctx} (last-token logits)`,
        value: r.prefillTokensPerSecond,
        unit: 'tok/s',
        fraction: r.prefillTokensPerSecond / prefillRoof,
        ideal: prefillRoof,
        seconds: ctx / r.prefillTokensPerSecond,
        note: `${(pf / 1e6).toFixed(1)} MFLOP/token`,
        e2e: { ...info, phase: 'prefill' },
      });
      results.push({
        suite: 'e2e',
        name: `decode tok/s, ${m.key}, ctx ${ctx} (${dt} greedy steps)`,
        value: r.decodeTokensPerSecond,
        unit: 'tok/s',
        fraction: r.decodeTokensPerSecond / decodeRoof,
        ideal: decodeRoof,
        seconds: 1 / r.decodeTokensPerSecond,
        note: `${(db / 1e6).toFixed(1)} MB/token`,
        e2e: { ...info, phase: 'decode', decodeTokens: dt },
      });
      log(
        `    ctx ${String(ctx).padStart(4)}: prefill ${((r.prefillTokensPerSecond / prefillRoof) * 100).toFixed(1)}% of ${prefillRoof.toFixed(0)} tok/s, ` +
          `decode ${((r.decodeTokensPerSecond / decodeRoof) * 100).toFixed(1)}% of ${decodeRoof.toFixed(1)} tok/s`,
      );
    }
  }
  return results;
}

/** The e2e rows as one markdown table (model, context, prefill and decode with their rooflines). */
export function e2eTable(rows: ReportCase[]): string {
  const lines = [
    '| model | params (active) | ctx | prefill tok/s | roofline | fraction | decode tok/s | roofline | fraction | ceilings used (sgemm, read) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const key = (r: ReportCase) => `${r.e2e!.model}|${r.e2e!.ctx}`;
  const groups = new Map<string, { prefill?: ReportCase; decode?: ReportCase }>();
  for (const r of rows) {
    if (!r.e2e) continue;
    const g = groups.get(key(r)) ?? {};
    g[r.e2e.phase] = r;
    groups.set(key(r), g);
  }
  const f = (n: number | undefined, d: number) => (n === undefined || !Number.isFinite(n) ? '' : n.toFixed(d));
  const pct = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '' : `${(n * 100).toFixed(1)}%`);
  for (const g of groups.values()) {
    const e = (g.prefill ?? g.decode)!.e2e!;
    const params = e.params === e.activeParams ? `${(e.params / 1e6).toFixed(1)}M` : `${(e.params / 1e6).toFixed(1)}M (${(e.activeParams / 1e6).toFixed(1)}M)`;
    lines.push(
      `| ${e.model} | ${params} | ${e.ctx} | ${f(g.prefill?.value, 1)} | ${f(g.prefill?.ideal, 0)} | ${pct(g.prefill?.fraction)} | ${f(g.decode?.value, 1)} | ${f(g.decode?.ideal, 1)} | ${pct(g.decode?.fraction)} | ${e.gemmGFLOPS.toFixed(0)} GFLOP/s, ${e.readGBps.toFixed(1)} GB/s |`,
    );
  }
  return lines.join('\n');
}
