/**
 * Text generation with dynamic depth: greedy or sampled (temperature, top-k, top-p,
 * seeded), EOS and stop strings, a batch of prompts of different lengths (left-padded),
 * streaming token by token. With seq-level routers the skip decision is made at prefill
 * and reused for every generated token; with token-level routers every token is routed.
 * Final stats: prefill/decode tokens/s, executed fraction per routed layer, skip ratio,
 * KV bytes allocated and saved against an unrouted cache.
 */
import { ArgumentError } from '../errors';
import { Rng } from '../util/rng';
import type { CausalLM, RoutingStats } from '../model/causal_lm';

export interface GenerateOptions {
  maxTokens?: number;
  /** 0 (default) = greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** Stop when the generated text contains one of these (the stop string is cut off). */
  stop?: string[];
  /** Stop at the model's EOS token(s) (default true). */
  stopAtEos?: boolean;
  /** Use the attached routers (default true). */
  routing?: boolean;
}

export interface GenerateStats {
  promptTokens: number;
  generatedTokens: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  skipRatio: number;
  /** K/V bytes really allocated. */
  kvBytes: number;
  /** K/V slots that skipping left unwritten, in bytes (against every layer running for every token). */
  kvBytesSaved: number;
  layers: { layer: number; executedFraction: number }[];
}

export interface GenerateResult {
  text: string;
  tokens: number[];
  stats: GenerateStats;
}

export interface GeneratedToken {
  /** Index of the prompt in the batch. */
  index: number;
  token: number;
  /** The text this token adds. */
  text: string;
}

function checkOptions(o: GenerateOptions): Required<Omit<GenerateOptions, 'stop'>> & { stop: string[] } {
  const r = {
    maxTokens: o.maxTokens ?? 64,
    temperature: o.temperature ?? 0,
    topK: o.topK ?? 0,
    topP: o.topP ?? 1,
    seed: o.seed ?? 0,
    stop: o.stop ?? [],
    stopAtEos: o.stopAtEos ?? true,
    routing: o.routing ?? true,
  };
  const bad = (m: string) => new ArgumentError(`generate: ${m}`);
  if (!Number.isInteger(r.maxTokens) || r.maxTokens < 0 || r.maxTokens > 1 << 20) throw bad(`'maxTokens' expected an integer in [0, 1048576], received ${r.maxTokens}`);
  if (!(r.temperature >= 0) || !Number.isFinite(r.temperature)) throw bad(`'temperature' expected a number >= 0, received ${r.temperature}`);
  if (!Number.isInteger(r.topK) || r.topK < 0) throw bad(`'topK' expected an integer >= 0, received ${r.topK}`);
  if (!(r.topP > 0 && r.topP <= 1)) throw bad(`'topP' expected a number in (0, 1], received ${r.topP}`);
  if (!Array.isArray(r.stop) || r.stop.some((s) => typeof s !== 'string' || s.length === 0)) throw bad(`'stop' expected a list of non-empty strings`);
  return r;
}

/** Picks the next token from one row of logits. */
export function pickToken(logits: Float32Array, o: { temperature: number; topK: number; topP: number }, rng: Rng): number {
  const V = logits.length;
  if (o.temperature === 0) {
    let best = 0;
    for (let j = 1; j < V; j++) if (logits[j] > logits[best]) best = j;
    return best;
  }
  let order = Array.from({ length: V }, (_, j) => j).sort((a, b) => logits[b] - logits[a] || a - b);
  if (o.topK > 0) order = order.slice(0, o.topK);
  const m = logits[order[0]];
  const p = order.map((j) => Math.exp((logits[j] - m) / o.temperature));
  let sum = p.reduce((a, b) => a + b, 0);
  if (o.topP < 1) {
    let acc = 0, keep = 0;
    while (keep < p.length && acc < o.topP * sum) acc += p[keep++];
    order = order.slice(0, keep);
    p.length = keep;
    sum = acc;
  }
  let u = rng.uniform() * sum;
  for (let i = 0; i < p.length; i++) {
    u -= p[i];
    if (u <= 0) return order[i];
  }
  return order[order.length - 1];
}

/**
 * Generates for a batch of prompts (text, or token ids), streaming each new token through
 * `onToken`. Returns one result per prompt.
 */
export async function generateBatch(
  model: CausalLM,
  prompts: (string | number[])[],
  options: GenerateOptions = {},
  onToken?: (t: GeneratedToken) => void,
): Promise<GenerateResult[]> {
  const it = generateStream(model, prompts, options);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
    onToken?.(r.value);
  }
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** The streaming core: yields every new token as it is chosen; returns the results. */
export async function* generateStream(
  model: CausalLM,
  prompts: (string | number[])[],
  options: GenerateOptions = {},
): AsyncGenerator<GeneratedToken, GenerateResult[], void> {
  const o = checkOptions(options);
  if (prompts.length === 0) throw new ArgumentError('generate: expected at least one prompt');
  const tok = model.tokenizer;
  const promptIds = prompts.map((p, i) => {
    if (typeof p === 'string') {
      if (!tok) throw new ArgumentError('generate: the model was loaded without a tokenizer; pass token ids');
      const ids = tok.encode(p);
      const bos = model.config.bosTokenId;
      return bos !== undefined && ids[0] !== bos ? [bos, ...ids] : ids;
    }
    if (!Array.isArray(p) || p.length === 0) throw new ArgumentError(`generate: prompt ${i} is empty`);
    return p;
  });
  if (promptIds.some((p) => p.length === 0)) throw new ArgumentError('generate: a prompt encodes to no tokens');
  const B = promptIds.length;
  const T = Math.max(...promptIds.map((p) => p.length));
  const V = model.config.vocabSize;
  const eos = new Set(o.stopAtEos ? model.config.eosTokenIds : []);
  const rng = new Rng(o.seed);
  const stats: RoutingStats = { layers: new Map() };
  const cache = model.newCache(B, T + o.maxTokens);
  const out: number[][] = promptIds.map(() => []);
  const texts = promptIds.map(() => '');
  const done = new Array(B).fill(o.maxTokens === 0);
  let prefillSeconds = 0, decodeSeconds = 0, decodeTokens = 0;
  try {
    // prefill: left-padded [B, T]
    const ids = new Int32Array(B * T), mask = new Int32Array(B * T);
    promptIds.forEach((p, b) => p.forEach((id, i) => {
      ids[b * T + T - p.length + i] = id;
      mask[b * T + T - p.length + i] = 1;
    }));
    let t0 = process.hrtime.bigint();
    // only each sequence's last row needs logits (left padding: row b·T + T − 1)
    const lastRows = Int32Array.from({ length: B }, (_, b) => b * T + T - 1);
    let logits = model.forward(ids, B > 1 ? mask : null, B, T, cache, { routing: o.routing, stats, logitsRows: lastRows });
    let rows = logits.toFloat32Array();
    logits.dispose();
    prefillSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    let lastRow = (b: number) => rows.subarray(b * V, (b + 1) * V);
    for (let step = 0; step < o.maxTokens && done.some((d) => !d); step++) {
      const next = new Int32Array(B), nmask = new Int32Array(B);
      for (let b = 0; b < B; b++) {
        if (done[b]) continue;
        const token = pickToken(lastRow(b), o, rng);
        out[b].push(token);
        let piece = '';
        if (tok) {
          const full = tok.decode(out[b], { skipSpecialTokens: true });
          piece = full.slice(texts[b].length);
          texts[b] = full;
        }
        yield { index: b, token, text: piece };
        if (eos.has(token)) done[b] = true;
        for (const s of o.stop) {
          const at = texts[b].indexOf(s);
          if (at >= 0) {
            texts[b] = texts[b].slice(0, at);
            done[b] = true;
          }
        }
        if (out[b].length >= o.maxTokens) done[b] = true;
        if (!done[b]) {
          next[b] = token;
          nmask[b] = 1;
        }
      }
      if (done.every((d) => d)) break;
      // One macrotask turn per token: timers and I/O of the host service run, and N-API
      // finalizers of the step's disposed tensors are processed (a loop that never turned
      // the event loop kept them queued: resident memory grew ~0.4 MB per call).
      await yieldToEventLoop();
      t0 = process.hrtime.bigint();
      logits = model.forward(next, B > 1 ? nmask : null, B, 1, cache, { routing: o.routing, stats });
      rows = logits.toFloat32Array();
      logits.dispose();
      decodeSeconds += Number(process.hrtime.bigint() - t0) / 1e9;
      decodeTokens += nmask.reduce((a, b) => a + b, 0);
      lastRow = (b: number) => rows.subarray(b * V, (b + 1) * V);
    }
    const layers = [...stats.layers.entries()].sort((a, b) => a[0] - b[0]).map(([layer, s]) => ({ layer, executedFraction: s.total ? s.executed / s.total : 1 }));
    const exec = [...stats.layers.values()].reduce((a, s) => a + s.executed, 0);
    const total = [...stats.layers.values()].reduce((a, s) => a + s.total, 0);
    const promptTokens = promptIds.reduce((a, p) => a + p.length, 0);
    const common: GenerateStats = {
      promptTokens,
      generatedTokens: out.reduce((a, t) => a + t.length, 0),
      prefillTokensPerSecond: prefillSeconds > 0 ? promptTokens / prefillSeconds : 0,
      decodeTokensPerSecond: decodeSeconds > 0 ? decodeTokens / decodeSeconds : 0,
      skipRatio: total ? 1 - exec / total : 0,
      kvBytes: cache.bytes,
      kvBytesSaved: cache.savedBytes,
      layers,
    };
    return out.map((tokens, b) => ({ text: texts[b], tokens, stats: common }));
  } finally {
    cache.dispose();
  }
}
