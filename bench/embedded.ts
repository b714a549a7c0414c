/**
 * Embedded suite: runs the main job (router-tuning tune with no model or data) in a child
 * process and reports its test-split numbers against the targets:
 *   dense test perplexity far below a unigram model's;
 *   at 25% of attention layers skipped, perplexity rises ≤ 2% relative and by at most half
 *   of what static Attention Drop loses at the same ratio.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { CaseResult } from './harness';

export function runEmbeddedSuite(log: (s: string) => void): CaseResult[] {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-bench-main-'));
  try {
    const cli = path.join(__dirname, '..', 'lib', 'cli', 'main.js');
    log('  running the main job (router-tuning tune) …');
    const t0 = Date.now();
    const out = execFileSync(process.execPath, [cli, 'tune', '--json', '--out', path.join(tmp, 'routers.safetensors'), '--report', path.join(tmp, 'report')], { maxBuffer: 1 << 24 }).toString();
    const seconds = (Date.now() - t0) / 1000;
    const j = JSON.parse(out);
    const e = j.eval;
    const rise = (m: { perplexity: number }) => m.perplexity / e.base.perplexity - 1;
    log(`  main job ${seconds.toFixed(0)} s: ppl ${e.base.perplexity.toFixed(2)} → routers ${e.routed.perplexity.toFixed(2)} (skip ${(e.routed.skipRatio * 100).toFixed(0)}%), static drop ${e.staticDrop.perplexity.toFixed(2)}; unigram ${e.unigramPerplexity.toFixed(1)}`);
    const c = (name: string, value: number, unit: string, extra: Partial<CaseResult> = {}): CaseResult => ({ suite: 'embedded', name, value, unit, fraction: NaN, seconds, ...extra });
    return [
      c('main job wall time', seconds, 's'),
      c('test perplexity, no routers', e.base.perplexity, 'ppl'),
      c('test perplexity, unigram model', e.unigramPerplexity, 'ppl'),
      c(`test perplexity, tuned ${j.granularity} routers (skip ${(e.routed.skipRatio * 100).toFixed(0)}% of the ${e.routed.layers.length} routed layers' executions)`, e.routed.perplexity, 'ppl'),
      c(`test perplexity, static attention drop (layers ${e.staticDrop.droppedLayers.join(',')})`, e.staticDrop.perplexity, 'ppl'),
      c('relative perplexity rise, routers', rise(e.routed), 'x', { target: 0.02, lowerIsBetter: true }),
      c('relative perplexity rise, static drop', rise(e.staticDrop), 'x'),
      c('routers rise / static-drop rise', rise(e.staticDrop) > 0 ? rise(e.routed) / rise(e.staticDrop) : NaN, 'x', { target: 0.5, lowerIsBetter: true }),
      c('next-token accuracy, no routers', e.base.nextTokenAccuracy, 'fraction'),
      c('next-token accuracy, tuned routers', e.routed.nextTokenAccuracy, 'fraction'),
      c('decode tok/s, no routers', e.base.decodeTokensPerSecond, 'tok/s'),
      c('decode tok/s, tuned routers', e.routed.decodeTokensPerSecond, 'tok/s'),
      c('prefill tok/s, no routers', e.base.prefillTokensPerSecond, 'tok/s'),
      c('prefill tok/s, tuned routers', e.routed.prefillTokensPerSecond, 'tok/s'),
    ];
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
