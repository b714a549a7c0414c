/**
 * The main job: `router-tuning tune` with no model or data router-tunes the embedded dense
 * model on the embedded corpus's train split, then measures on the test split (never used
 * for training, tuning or calibration) the model without routers, with the tuned routers,
 * and static Attention Drop at the same skip ratio: test perplexity, next-token accuracy,
 * skip ratio, prefill and decode tokens/s. Prints a table, writes a report folder
 * (markdown + SVG), and with --json prints the tune object with its `eval` part.
 */
import * as fs from 'fs';
import * as path from 'path';
import { writeFileAtomic } from '../util/atomic';
import type { CausalLM } from '../model/causal_lm';
import type { EvalMetrics, EvalResult } from '../infer/evaluate';

export const EMBEDDED_ROOT = path.join(__dirname, fs.existsSync(path.join(__dirname, '..', '..', 'models')) ? path.join('..', '..') : path.join('..', '..', '..'));
export const EMBEDDED_MODEL = path.join(EMBEDDED_ROOT, 'models', 'dense');
export const EMBEDDED_CORPUS = path.join(EMBEDDED_ROOT, 'data', 'corpus');

export interface MainJobRow extends EvalMetrics {
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}

/** Prefill and decode speed of the model as configured (routers on or off). */
export async function speedOf(model: CausalLM, prompt: number[], routing: boolean, decodeTokens = 32): Promise<{ prefill: number; decode: number }> {
  const { generateBatch } = await import('../infer/generate');
  await generateBatch(model, [prompt.slice(0, 32)], { maxTokens: 2, routing, stopAtEos: false });
  const r = await generateBatch(model, [prompt], { maxTokens: decodeTokens, routing, stopAtEos: false });
  return { prefill: r[0].stats.prefillTokensPerSecond, decode: r[0].stats.decodeTokensPerSecond };
}

export async function measureAll(model: CausalLM, testText: string, o: { window: number; limit: number }): Promise<{ eval: EvalResult; rows: Record<'base' | 'routed' | 'staticDrop', MainJobRow> }> {
  const { evaluate, staticDropRouters } = await import('../infer/evaluate');
  const ev = await evaluate(model, { task: 'perplexity', text: testText, window: o.window, stride: o.window, limit: o.limit });
  const ids = model.tokenizer!.encode(testText).slice(0, o.window);
  const base = await speedOf(model, ids, false);
  const routed = await speedOf(model, ids, true);
  const saved = model.routers;
  const sd = staticDropRouters(model, ev.staticDrop?.droppedLayers ?? []);
  model.routers = sd;
  let stat: { prefill: number; decode: number };
  try {
    stat = await speedOf(model, ids, true);
  } finally {
    model.routers = saved;
    sd.dispose();
  }
  const row = (m: EvalMetrics | undefined, s: { prefill: number; decode: number }): MainJobRow => ({ ...(m ?? { skipRatio: 0 }), prefillTokensPerSecond: s.prefill, decodeTokensPerSecond: s.decode });
  return { eval: ev, rows: { base: row(ev.base, base), routed: row(ev.routed, routed), staticDrop: row(ev.staticDrop, stat) } };
}

/** Perplexity of an add-one-smoothed unigram model fitted on `train`, scored on `test`. */
export function unigramPerplexity(train: ArrayLike<number>, test: ArrayLike<number>, vocab: number): number {
  const counts = new Float64Array(vocab).fill(1);
  for (let i = 0; i < train.length; i++) counts[train[i]]++;
  const total = counts.reduce((a, b) => a + b, 0);
  let nll = 0;
  for (let i = 0; i < test.length; i++) nll -= Math.log(counts[test[i]] / total);
  return Math.exp(nll / Math.max(1, test.length));
}

export function mainJobTable(rows: Record<'base' | 'routed' | 'staticDrop', MainJobRow>, tokens: number): string {
  const lines = [
    `test split: ${tokens} tokens`,
    `${'model'.padEnd(24)}${'perplexity'.padStart(12)}${'next-token acc'.padStart(16)}${'skip ratio'.padStart(12)}${'prefill tok/s'.padStart(15)}${'decode tok/s'.padStart(14)}`,
  ];
  for (const [name, r] of [['no routers', rows.base], ['tuned routers', rows.routed], ['static attention drop', rows.staticDrop]] as const) {
    lines.push(
      `${name.padEnd(24)}${r.perplexity!.toFixed(3).padStart(12)}${((r.nextTokenAccuracy ?? 0) * 100).toFixed(2).padStart(15)}%${((r.skipRatio * 100).toFixed(1) + '%').padStart(12)}${r.prefillTokensPerSecond.toFixed(0).padStart(15)}${r.decodeTokensPerSecond.toFixed(1).padStart(14)}`,
    );
  }
  return lines.join('\n');
}

export function writeMainJobReport(dir: string, rows: Record<'base' | 'routed' | 'staticDrop', MainJobRow>, tune: Record<string, unknown>, tokens: number, unigram?: number): void {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { lineChartSvg, barChartSvg } = require('../infer/plots') as typeof import('../infer/plots');
  fs.mkdirSync(dir, { recursive: true });
  const write = (name: string, text: string) => writeFileAtomic(path.join(dir, name), text);
  write(
    'quality-vs-skip.svg',
    lineChartSvg('test perplexity vs skip ratio', 'skip ratio (routed layers)', 'perplexity (lower is better)', [
      { label: 'tuned routers', color: '#3b7dd8', points: [{ x: 0, y: rows.base.perplexity! }, { x: rows.routed.skipRatio, y: rows.routed.perplexity! }] },
      { label: 'static attention drop', color: '#d8643b', points: [{ x: 0, y: rows.base.perplexity! }, { x: rows.staticDrop.skipRatio, y: rows.staticDrop.perplexity! }] },
    ]),
  );
  const layers = (rows.routed.layers ?? []) as { layer: number; executedFraction: number }[];
  write('layer-skip.svg', barChartSvg('skip rate per routed layer (test split)', layers.map((l) => ({ label: String(l.layer), value: 1 - l.executedFraction })), 'skipped'));
  const md = [
    '# router-tuning: the main job',
    '',
    `Routers: ${tune.granularity}, ${tune.steps} steps, saved to \`${tune.routers}\`. Test split: ${tokens} tokens (never used for training, tuning or calibration).`,
    '',
    '| model | test perplexity | next-token accuracy | skip ratio | prefill tok/s | decode tok/s |',
    '|---|---:|---:|---:|---:|---:|',
    ...([['no routers', rows.base], ['tuned routers', rows.routed], ['static attention drop', rows.staticDrop]] as const).map(
      ([n, r]) => `| ${n} | ${r.perplexity!.toFixed(3)} | ${((r.nextTokenAccuracy ?? 0) * 100).toFixed(2)}% | ${(r.skipRatio * 100).toFixed(1)}% | ${r.prefillTokensPerSecond.toFixed(0)} | ${r.decodeTokensPerSecond.toFixed(1)} |`,
    ),
    '',
    unigram !== undefined ? `A unigram model (token frequencies of the same train text) scores perplexity ${unigram.toFixed(1)} on these tokens.` : '',
    '',
    `Static attention drop removed layers ${(rows.staticDrop.droppedLayers ?? []).join(', ') || 'none'} (most redundant by input/output cosine similarity).`,
    '',
    '![quality vs skip ratio](quality-vs-skip.svg)',
    '',
    '![skip rate per layer](layer-skip.svg)',
    '',
  ].join('\n');
  write('report.md', md);
}
