/**
 * Tune suite: one router-tuning step (routers on the default layers, router-only
 * backprop) against one full-parameter step (every weight gradient) on the same model and
 * batch, and the tokens/s of tuning. Target: router-only ≤ 0.75× the full step's time.
 */
import { randomModel, syntheticConfig } from '../lib/model/random';
import { Routers } from '../lib/routing/routers';
import { forwardBackward, FullGrads, Batch } from '../lib/train/backprop';
import { Tensor, dispose } from '../lib';
import { Rng } from '../lib/util/rng';
import { CaseResult, timeRun } from './harness';

export function runTuneSuite(log: (s: string) => void): CaseResult[] {
  const cfg = syntheticConfig({
    vocab_size: 8192,
    hidden_size: 512,
    intermediate_size: 1408,
    num_hidden_layers: 8,
    num_attention_heads: 8,
    num_key_value_heads: 8,
  });
  const model = randomModel(cfg, { seed: 1 });
  const B = 4, T = 256;
  const rng = new Rng(2);
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T), mask = new Int32Array(B * T).fill(1);
  for (let i = 0; i < B * T; i++) ids[i] = Math.floor(rng.uniform() * cfg.vocabSize);
  for (let i = 0; i < B * T; i++) targets[i] = (i + 1) % T === 0 ? -100 : ids[i + 1];
  const batch: Batch = { ids, targets, mask, B, T };
  const results: CaseResult[] = [];
  try {
    for (const granularity of ['attn-seq', 'attn-token', 'block-token'] as const) {
      const routers = new Routers(cfg, { granularity });
      const grads = new Map<number, Tensor>([...routers.weights].map(([l, w]) => [l, Tensor.zeros(w.shape).keep()]));
      const regularizer = { lambda: 1, targetSkip: 0.25, kind: 'global' as const };
      const tRouter = timeRun(() => void forwardBackward(model, batch, { routers, routerGrads: grads, regularizer }), 2, 3);
      dispose([...grads.values()]);
      routers.dispose();
      results.push({ suite: 'tune', name: `router-tuning step (${granularity}, layers ${routers.layers.join(',')}), ${B}x${T} tokens`, value: tRouter * 1e3, unit: 'ms', fraction: NaN, seconds: tRouter });
      results.push({ suite: 'tune', name: `router-tuning tokens/s (${granularity})`, value: (B * T) / tRouter, unit: 'tok/s', fraction: NaN, seconds: tRouter });
    }
    const full = new FullGrads();
    const tFull = timeRun(() => void forwardBackward(model, batch, { fullParams: full }), 2, 3);
    full.dispose();
    results.push({ suite: 'tune', name: `full-parameter step (all weight gradients), ${B}x${T} tokens`, value: tFull * 1e3, unit: 'ms', fraction: NaN, seconds: tFull });
    const tSeq = results[0].seconds;
    results.push({ suite: 'tune', name: 'router-only / full-parameter step time (attn-seq)', value: tSeq / tFull, unit: 'x', fraction: NaN, target: 0.75, lowerIsBetter: true, seconds: tSeq });
    log(`  router step ${(tSeq * 1e3).toFixed(0)} ms vs full step ${(tFull * 1e3).toFixed(0)} ms: ${(tSeq / tFull).toFixed(3)}×`);
  } finally {
    model.dispose();
  }
  return results;
}
