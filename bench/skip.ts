/**
 * Skip suite: prefill and decode tokens/s of a ~134M-parameter Llama-shaped model
 * (hidden 768, intermediate 2048, 12 layers, 12 heads, vocab 32000, fp32, random weights)
 * at contexts 512 and 2048, with 0, ~25% and ~50% of attention executions skipped at
 * sequence level (whole layers) and token level (mod), against the ideal speedup
 * predicted from the removed work:
 *   prefill: FLOPs per token  = Σ_layers [attn: 8C² + 2·T·C (causal scores), mlp: 6·C·I] + 2·C·V / T
 *            (generation computes logits for the last prompt token only)
 *   decode:  bytes per token  = Σ_layers [attn: 16C² + 8·ctx·C (K/V read), mlp: 12·C·I] + 4·C·V
 * Skipping a fraction s_l of layer l's attention removes s_l of its attention terms.
 * Target: measured speedup ≥ 0.9 × ideal.
 */
import { randomModel, syntheticConfig } from '../lib/model/random';
import { Routers } from '../lib/routing/routers';
import { generateBatch } from '../lib/infer/generate';
import type { CausalLM } from '../lib/model/causal_lm';
import { Rng } from '../lib/util/rng';
import type { CaseResult } from './harness';

interface Setting {
  name: string;
  level: 'none' | 'seq' | 'token';
  /** seq: layers that skip; token: layers with a random-weight router at τ = 0.5 (~half the tokens skip). */
  layers: number[];
}

function attach(model: CausalLM, s: Setting, rng: Rng): void {
  model.routers?.dispose();
  model.routers = undefined;
  if (s.level === 'none') return;
  const L = model.config.numLayers;
  if (s.level === 'seq') {
    // routers on every layer; τ above σ(0) = 0.5 skips, below executes (zero weights)
    const r = new Routers(model.config, { granularity: 'attn-seq', layers: [...Array(L).keys()] });
    for (let l = 0; l < L; l++) r.thresholds.set(l, s.layers.includes(l) ? 0.99 : 0.01);
    model.routers = r;
    return;
  }
  const r = new Routers(model.config, { granularity: 'attn-token', mode: 'mod', layers: s.layers });
  for (const w of r.weights.values()) w.write(rng.floats(w.numel, 1));
  model.routers = r;
}

export async function runSkipSuite(log: (s: string) => void, opts: { contexts?: number[]; decodeTokens?: number } = {}): Promise<CaseResult[]> {
  const cfg = syntheticConfig({ vocab_size: 32000, hidden_size: 768, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 12, num_key_value_heads: 12 });
  log('  building the 134M-parameter synthetic model …');
  const model = randomModel(cfg, { seed: 1 });
  const C = cfg.hiddenSize, I = cfg.intermediateSize, V = cfg.vocabSize, L = cfg.numLayers;
  const settings: Setting[] = [
    { name: 'no skipping', level: 'none', layers: [] },
    { name: 'seq: 3/12 attention layers skipped', level: 'seq', layers: [5, 7, 9] },
    { name: 'seq: 6/12 attention layers skipped', level: 'seq', layers: [3, 5, 6, 7, 9, 10] },
    { name: 'token (mod): routers on 6/12 layers', level: 'token', layers: [3, 5, 6, 7, 9, 10] },
    { name: 'token (mod): routers on 12/12 layers', level: 'token', layers: [...Array(L).keys()] },
  ];
  const results: CaseResult[] = [];
  const rng = new Rng(5);
  try {
    for (const ctx of opts.contexts ?? [512, 2048]) {
      const prompt = Array.from({ length: ctx }, () => 3 + Math.floor(rng.uniform() * (V - 3)));
      let base: { prefill: number; decode: number } | undefined;
      for (const s of settings) {
        attach(model, s, new Rng(7));
        // warm-up (allocator, page faults), then the measured run
        await generateBatch(model, [prompt.slice(0, 64)], { maxTokens: 2, stopAtEos: false });
        // median of 3 runs (the machine is shared and noisy)
        const runs: Awaited<ReturnType<typeof generateBatch>>[number]["stats"][] = [];
        for (let i = 0; i < 3; i++) runs.push((await generateBatch(model, [prompt], { maxTokens: opts.decodeTokens ?? 16, stopAtEos: false }))[0].stats);
        const med = (f: (x: (typeof runs)[number]) => number) => runs.map(f).sort((a, b) => a - b)[1];
        const st = { ...runs[0], prefillTokensPerSecond: med((x) => x.prefillTokensPerSecond), decodeTokensPerSecond: med((x) => x.decodeTokensPerSecond) };
        // skipped fraction of attention per layer, measured
        const skipOf = new Map<number, number>();
        for (const l of st.layers) skipOf.set(l.layer, 1 - l.executedFraction);
        let flops = 0, flopsLeft = 0, bytes = 0, bytesLeft = 0;
        for (let l = 0; l < L; l++) {
          const sk = skipOf.get(l) ?? 0;
          const attnF = 8 * C * C + 2 * ctx * C, mlpF = 6 * C * I;
          const attnB = 16 * C * C + 8 * ctx * C, mlpB = 12 * C * I;
          flops += attnF + mlpF;
          flopsLeft += attnF * (1 - sk) + mlpF;
          bytes += attnB + mlpB;
          bytesLeft += attnB * (1 - sk) + mlpB;
        }
        flops += (2 * C * V) / ctx;
        flopsLeft += (2 * C * V) / ctx;
        bytes += 4 * C * V;
        bytesLeft += 4 * C * V;
        const prefill = st.prefillTokensPerSecond, decode = st.decodeTokensPerSecond;
        if (!base) base = { prefill, decode };
        const idealPrefill = flops / flopsLeft, idealDecode = bytes / bytesLeft;
        const spP = prefill / base.prefill, spD = decode / base.decode;
        const tag = `ctx ${ctx}, ${s.name} (skip ${(st.skipRatio * 100).toFixed(0)}%)`;
        log(`  ${tag.padEnd(64)} prefill ${prefill.toFixed(0)} tok/s (${spP.toFixed(2)}× / ideal ${idealPrefill.toFixed(2)}×), decode ${decode.toFixed(1)} tok/s (${spD.toFixed(2)}× / ideal ${idealDecode.toFixed(2)}×)`);
        results.push({ suite: 'skip', name: `prefill tok/s, ${tag}`, value: prefill, unit: 'tok/s', fraction: NaN, seconds: ctx / prefill });
        results.push({ suite: 'skip', name: `decode tok/s, ${tag}`, value: decode, unit: 'tok/s', fraction: NaN, seconds: 1 / decode });
        if (s.level !== 'none') {
          results.push({ suite: 'skip', name: `prefill speedup / ideal (${idealPrefill.toFixed(3)}×), ${tag}`, value: spP / idealPrefill, unit: 'x', fraction: NaN, target: 0.9, seconds: 0, higherIsBetter: true });
          results.push({ suite: 'skip', name: `decode speedup / ideal (${idealDecode.toFixed(3)}×), ${tag}`, value: spD / idealDecode, unit: 'x', fraction: NaN, target: 0.9, seconds: 0, higherIsBetter: true });
        }
      }
    }
  } finally {
    model.dispose();
  }
  return results;
}
