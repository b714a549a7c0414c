/**
 * Evaluation with and without routers, against the static Attention Drop baseline at the
 * same skip ratio (DESIGN.md §1):
 *   perplexity        strided windows over a text (each token scored once, with up to
 *                     `window` tokens of context)
 *   multiple-choice   lm-evaluation-harness style JSONL {context, choices, label}: the
 *                     choice with the highest log-likelihood (acc) and the highest
 *                     log-likelihood per byte (acc_norm)
 * Static Attention Drop ranks the routed candidate layers by the cosine similarity of each
 * attention block's input and output hidden states on calibration text and drops the most
 * redundant ones, as many as the routers' skip ratio implies.
 */
import * as fs from 'fs';
import { ArgumentError, RouterTuningError } from '../errors';

import type { CausalLM, RoutingStats } from '../model/causal_lm';
import { Routers } from '../routing/routers';

export interface EvaluateOptions {
  task?: 'perplexity' | 'multiple-choice';
  /** Text file (perplexity) or JSONL (multiple-choice); or pass `text` / `items`. */
  data?: string;
  text?: string;
  items?: McItem[];
  /** Perplexity window (default min(1024, max positions)) and stride (default window / 2). */
  window?: number;
  stride?: number;
  /** Cap on tokens (perplexity) or items (multiple-choice) scored. */
  limit?: number;
  /** Also evaluate static Attention Drop at the routers' skip ratio (default true with routers). */
  staticDrop?: boolean;
  /** Text used to rank layers for static drop (default: the evaluation text / contexts). */
  calibrationText?: string;
}

export interface McItem {
  context: string;
  choices: string[];
  label: number;
}

export interface EvalMetrics {
  perplexity?: number;
  /** perplexity task: fraction of tokens whose most likely prediction is the next token */
  nextTokenAccuracy?: number;
  accuracy?: number;
  accuracyNorm?: number;
  skipRatio: number;
  droppedLayers?: number[];
  layers?: { layer: number; executedFraction: number }[];
}

export interface EvalResult {
  task: 'perplexity' | 'multiple-choice';
  tokens?: number;
  items?: number;
  base: EvalMetrics;
  routed?: EvalMetrics;
  staticDrop?: EvalMetrics;
}

function logSoftmaxAt(row: Float32Array, target: number): number {
  let m = -Infinity;
  for (const v of row) m = Math.max(m, v);
  let s = 0;
  for (const v of row) s += Math.exp(v - m);
  return row[target] - m - Math.log(s);
}

function statsSummary(stats: RoutingStats): { skipRatio: number; layers: { layer: number; executedFraction: number }[] } {
  let e = 0, t = 0;
  const layers = [...stats.layers.entries()].sort((a, b) => a[0] - b[0]).map(([layer, s]) => {
    e += s.executed;
    t += s.total;
    return { layer, executedFraction: s.total ? s.executed / s.total : 1 };
  });
  return { skipRatio: t ? 1 - e / t : 0, layers };
}

/** Mean NLL per token over strided windows; every token after the first is scored once. */
export function perplexityOf(model: CausalLM, ids: number[], o: { window: number; stride: number; routing: boolean; stats?: RoutingStats }): { perplexity: number; tokens: number; accuracy: number } {
  const V = model.config.vocabSize;
  let nll = 0, count = 0, correct = 0, scoredUpTo = 1; // position of the next token to score
  for (let start = 0; scoredUpTo < ids.length; start = Math.min(start + o.stride, scoredUpTo - 1)) {
    // the next window starts at most one token before the first unscored one, so that
    // token has context (with stride = window, windows overlap by exactly one token)
    const end = Math.min(ids.length, start + o.window);
    const chunk = Int32Array.from(ids.slice(start, end));
    const cache = model.newCache(1, chunk.length);
    const out = model.forward(chunk, null, 1, chunk.length, cache, { routing: o.routing, stats: o.stats });
    const logits = out.toFloat32Array();
    out.dispose();
    cache.dispose();
    for (let p = Math.max(scoredUpTo, start + 1); p < end; p++) {
      const row = logits.subarray((p - 1 - start) * V, (p - start) * V);
      nll -= logSoftmaxAt(row, ids[p]);
      let best = 0;
      for (let j = 1; j < V; j++) if (row[j] > row[best]) best = j;
      if (best === ids[p]) correct++;
      count++;
    }
    scoredUpTo = end;
    if (end === ids.length) break;
  }
  return { perplexity: Math.exp(nll / Math.max(1, count)), tokens: count, accuracy: count ? correct / count : 0 };
}

/** Log-likelihood of each choice's tokens after the context. */
function choiceScores(model: CausalLM, item: McItem, routing: boolean, stats?: RoutingStats): number[] {
  const tok = model.tokenizer!;
  const ctxIds = tok.encode(item.context);
  const bos = model.config.bosTokenId;
  const V = model.config.vocabSize;
  return item.choices.map((choice) => {
    const full = tok.encode(item.context + choice);
    // the choice's tokens: what follows the context's tokens (robust to merges at the seam)
    let common = 0;
    while (common < ctxIds.length && common < full.length && ctxIds[common] === full[common]) common++;
    const seq = bos !== undefined && full[0] !== bos ? [bos, ...full] : full;
    const offset = seq.length - full.length;
    const first = Math.max(common + offset, 1);
    const ids = Int32Array.from(seq);
    const cache = model.newCache(1, ids.length);
    const out = model.forward(ids, null, 1, ids.length, cache, { routing, stats });
    const logits = out.toFloat32Array();
    out.dispose();
    cache.dispose();
    let ll = 0;
    for (let p = first; p < ids.length; p++) ll += logSoftmaxAt(logits.subarray((p - 1) * V, p * V), ids[p]);
    return ll;
  });
}

export function readMcItems(file: string): McItem[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new RouterTuningError('RT_ERR_DATA', `${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const items: McItem[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new RouterTuningError('RT_ERR_DATA', `${file}:${i + 1}: not valid JSON (${(e as Error).message})`);
    }
    const o = v as Partial<McItem>;
    if (typeof o?.context !== 'string' || !Array.isArray(o.choices) || o.choices.length < 2 || !o.choices.every((c) => typeof c === 'string') || !Number.isInteger(o.label) || o.label! < 0 || o.label! >= o.choices.length)
      throw new RouterTuningError('RT_ERR_DATA', `${file}:${i + 1}: expected {"context": string, "choices": [string, string, …], "label": index into choices}`);
    items.push(o as McItem);
  });
  if (items.length === 0) throw new RouterTuningError('RT_ERR_DATA', `${file}: no items`);
  return items;
}

/**
 * Ranks `candidates` by the mean cosine similarity between each attention block's input
 * and output hidden states over `ids` (higher = more redundant).
 */
export function attentionRedundancy(model: CausalLM, ids: number[], candidates: number[], window: number): Map<number, number> {
  const sums = new Map<number, { s: number; n: number }>();
  for (let start = 0; start < ids.length; start += window) {
    const chunk = Int32Array.from(ids.slice(start, start + window));
    if (chunk.length < 2) break;
    const cache = model.newCache(1, chunk.length);
    const out = model.forward(chunk, null, 1, chunk.length, cache, {
      routing: false,
      logitsRows: Int32Array.of(chunk.length - 1),
      onAttention: (l, before, after) => {
        if (!candidates.includes(l)) return;
        const a = before.toFloat32Array(), b = after.toFloat32Array();
        const C = before.shape[1];
        const acc = sums.get(l) ?? { s: 0, n: 0 };
        for (let r = 0; r < a.length / C; r++) {
          let dot = 0, na = 0, nb = 0;
          for (let c = 0; c < C; c++) {
            const x = a[r * C + c], y = b[r * C + c];
            dot += x * y;
            na += x * x;
            nb += y * y;
          }
          acc.s += dot / Math.sqrt(na * nb + 1e-30);
          acc.n++;
        }
        sums.set(l, acc);
      },
    });
    out.dispose();
    cache.dispose();
  }
  return new Map(candidates.map((l) => [l, sums.get(l) ? sums.get(l)!.s / sums.get(l)!.n : 0]));
}

/** Seq-level routers that always skip the attention of `layers` (and execute the rest). */
export function staticDropRouters(model: CausalLM, layers: number[]): Routers {
  const all = [...Array(model.config.numLayers).keys()];
  const r = new Routers(model.config, { granularity: 'attn-seq', layers: all }, model.device);
  for (const l of all) r.thresholds.set(l, layers.includes(l) ? 0.99 : 0.01); // σ(0) = 0.5
  return r;
}

export async function evaluate(model: CausalLM, options: EvaluateOptions = {}): Promise<EvalResult> {
  const task = options.task ?? 'perplexity';
  if (task !== 'perplexity' && task !== 'multiple-choice') throw new ArgumentError(`evaluate: 'task' expected perplexity or multiple-choice, received '${task}'`);
  if (!model.tokenizer) throw new ArgumentError('evaluate: the model needs its tokenizer');
  const routers = model.routers;
  const withStatic = (options.staticDrop ?? true) && routers !== undefined;
  const maxPos = model.config.maxPositionEmbeddings;
  const window = options.window ?? Math.min(1024, maxPos);
  const stride = options.stride ?? Math.max(1, Math.floor(window / 2));
  if (!Number.isInteger(window) || window < 2) throw new ArgumentError(`evaluate: 'window' expected an integer >= 2, received ${window}`);
  if (!Number.isInteger(stride) || stride < 1 || stride > window) throw new ArgumentError(`evaluate: 'stride' expected an integer in [1, window], received ${stride}`);

  let run: (routing: boolean, stats?: RoutingStats) => EvalMetrics;
  let size: { tokens?: number; items?: number };
  let calibIds: number[];
  if (task === 'perplexity') {
    let text = options.text;
    if (text === undefined) {
      if (!options.data) throw new ArgumentError('evaluate: perplexity needs `data` (a text file) or `text`');
      try {
        text = fs.readFileSync(options.data, 'utf8');
      } catch (e) {
        throw new RouterTuningError('RT_ERR_DATA', `${options.data}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
    }
    let ids = model.tokenizer.encode(text);
    const bos = model.config.bosTokenId;
    if (bos !== undefined) ids = [bos, ...ids];
    if (options.limit) ids = ids.slice(0, options.limit + 1);
    if (ids.length < 2) throw new RouterTuningError('RT_ERR_DATA', 'evaluate: the text has fewer than 2 tokens');
    calibIds = options.calibrationText ? model.tokenizer.encode(options.calibrationText) : ids;
    run = (routing, stats) => {
      const r = perplexityOf(model, ids, { window, stride, routing, stats });
      size = { tokens: r.tokens };
      return { perplexity: r.perplexity, nextTokenAccuracy: r.accuracy, skipRatio: 0 };
    };
  } else {
    let items = options.items ?? (options.data ? readMcItems(options.data) : undefined);
    if (!items) throw new ArgumentError('evaluate: multiple-choice needs `data` (JSONL) or `items`');
    if (options.limit) items = items.slice(0, options.limit);
    const its = items;
    calibIds = options.calibrationText ? model.tokenizer.encode(options.calibrationText) : model.tokenizer.encode(its.map((i) => i.context).join('\n'));
    run = (routing, stats) => {
      let acc = 0, accNorm = 0;
      for (const item of its) {
        const ll = choiceScores(model, item, routing, stats);
        const best = ll.indexOf(Math.max(...ll));
        const norm = ll.map((v, i) => v / Math.max(1, Buffer.byteLength(item.choices[i], 'utf8')));
        const bestN = norm.indexOf(Math.max(...norm));
        if (best === item.label) acc++;
        if (bestN === item.label) accNorm++;
      }
      size = { items: its.length };
      return { accuracy: acc / its.length, accuracyNorm: accNorm / its.length, skipRatio: 0 };
    };
  }
  size = {};
  const base = run(false);
  const result: EvalResult = { task, ...size, base };
  if (!routers) return result;
  const stats: RoutingStats = { layers: new Map() };
  const routed = run(true, stats);
  Object.assign(routed, statsSummary(stats));
  result.routed = routed;
  if (withStatic) {
    // as many dropped attention layers as the routers' skip ratio over their layers implies
    const candidates = routers.layers;
    const k = Math.round(routed.skipRatio * candidates.length);
    const sim = attentionRedundancy(model, calibIds.slice(0, 4 * window), candidates, window);
    const dropped = [...candidates].sort((a, b) => sim.get(b)! - sim.get(a)! || a - b).slice(0, k).sort((a, b) => a - b);
    const saved = model.routers;
    const sd = staticDropRouters(model, dropped);
    model.routers = sd;
    try {
      const m = run(true);
      result.staticDrop = { ...m, skipRatio: k / candidates.length, droppedLayers: dropped };
    } finally {
      model.routers = saved;
      sd.dispose();
    }
  }
  return result;
}

