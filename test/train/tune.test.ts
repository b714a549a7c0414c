/**
 * The trainer end to end on small models: routers learn to skip layers made redundant by
 * construction, resume is bit-identical, --steps 0 routers execute everything, and
 * calibration hits the requested skip ratio.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadModel, CausalLM } from '../../lib/model/causal_lm';
import { tune, evaluateRouted } from '../../lib/train/tune';
import { Example } from '../../lib/train/data';
import { loadRouters } from '../../lib/routing/checkpoint';
import { Tensor } from '../../lib';

const fixtures = path.join(__dirname, '..', 'fixtures', 'models');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-tune-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

import { sampleFrom as sample } from './sample_helper';
import { ops } from '../../lib';
import { Granularity } from '../../lib/routing/routers';

function zero(t: Tensor): void {
  t.write(new Float32Array(t.numel));
}

/**
 * A fixture made decisive and realistic: a sharper lm_head (peaked predictions, so a
 * useful layer matters), a shared component in every hidden state (as real LLMs have;
 * bias-free token routers need it), and a part made redundant by `redundant`.
 */
async function constructed(family: string, redundant: (m: CausalLM) => void): Promise<CausalLM> {
  const m = await loadModel(path.join(fixtures, family), { noTokenizer: true });
  const head = ops.scale(m.weights.lmHead, 4);
  m.weights.lmHead.copyFrom(head);
  head.dispose();
  const e = m.weights.embed.toFloat32Array();
  const C = m.config.hiddenSize;
  for (let v = 0; v < e.length / C; v++) e[v * C] += 5;
  m.weights.embed.write(e);
  redundant(m);
  return m;
}

const learning: [Granularity, string, 'mod' | 'keep-kv', (m: CausalLM) => void][] = [
  ['attn-seq', 'qwen3', 'mod', (m) => zero(m.weights.layers[1].o.weight)],
  ['attn-token', 'qwen3', 'mod', (m) => zero(m.weights.layers[1].o.weight)],
  ['attn-token', 'qwen3', 'keep-kv', (m) => zero(m.weights.layers[1].o.weight)],
  ['mlp-seq', 'qwen3', 'mod', (m) => zero(m.weights.layers[1].mlp!.down.weight)],
  ['mlp-token', 'qwen3', 'mod', (m) => zero(m.weights.layers[1].mlp!.down.weight)],
  ['block-seq', 'qwen3', 'mod', (m) => (zero(m.weights.layers[1].o.weight), zero(m.weights.layers[1].mlp!.down.weight))],
  ['block-token', 'qwen3', 'mod', (m) => (zero(m.weights.layers[1].o.weight), zero(m.weights.layers[1].mlp!.down.weight))],
  ['moe-token', 'qwen3_moe', 'mod', (m) => zero(m.weights.layers[1].moe!.experts.down)],
];

describe.each(learning)('%s on %s (%s) with layer 1 made redundant', (granularity, family, mode, redundant) => {
  test('the routers skip exactly that layer, hit the target ratio, and the loss does not rise', async () => {
    const model = await constructed(family, redundant);
    try {
      const train = sample(model, 48, 16, 1), val = sample(model, 16, 16, 2);
      const base = evaluateRouted(model, undefined, val, 8);
      const r = await tune(model, { examples: train, valExamples: val, granularity, mode, layers: [0, 1, 2], targetSkip: 1 / 3, lambda: 0.5, steps: 100, lr: 0.02, batchSize: 8, seed: 3, valEvery: 0 });
      const frac = Object.fromEntries(r.layers.map((l) => [l.layer, l.executedFraction]));
      if (granularity.endsWith('-seq') || granularity.startsWith('attn') || granularity.startsWith('block')) {
        expect(frac).toEqual({ 0: 1, 1: 0, 2: 1 });
        expect(r.skipRatio).toBeCloseTo(1 / 3, 9);
        expect(r.valLoss).toBeLessThanOrEqual(base.loss + 1e-4);
      } else {
        // Token-level MLP/MoE routers are bias-free linear maps of each token's own state:
        // a few tokens whose MLP barely matters are skipped too (measured: 4% of layer 0's).
        expect(frac[1]).toBe(0);
        expect(Math.min(frac[0], frac[2])).toBeGreaterThanOrEqual(0.94);
        expect(Math.abs(r.skipRatio - 1 / 3)).toBeLessThanOrEqual(0.035);
        expect(r.valLoss).toBeLessThanOrEqual(base.loss * 1.05);
      }
      r.routerSet.dispose();
    } finally {
      model.dispose();
    }
  });
});

test('expert routers on qwen3_moe learn to drop the assignments to an expert that outputs nothing', async () => {
  const model = await constructed('qwen3_moe', (m) => {
    // expert 2 of every layer outputs zero: its down projection is zeroed
    for (const l of m.weights.layers) {
      const d = l.moe!.experts.down;
      const per = d.numel / m.config.moe!.numExperts;
      d.write(new Float32Array(per), 2 * per);
    }
  });
  try {
    const train = sample(model, 48, 16, 1), val = sample(model, 16, 16, 2);
    const base = evaluateRouted(model, undefined, val, 8);
    const r = await tune(model, { examples: train, valExamples: val, granularity: 'expert', layers: [0, 1, 2], targetSkip: 0.1, lambda: 0.5, steps: 100, lr: 0.02, batchSize: 8, seed: 3, valEvery: 0 });
    // With the shared hidden direction, layers 0 and 1 route every token to the same two
    // experts (never expert 2), layer 2 sends half of its assignments to expert 2: those
    // are the ones the routers drop, at no cost in loss.
    expect(r.valLoss).toBeLessThanOrEqual(base.loss + 1e-4);
    expect(r.skipRatio).toBeGreaterThanOrEqual(0.09);
    const frac = Object.fromEntries(r.layers.map((l) => [l.layer, l.executedFraction]));
    expect(frac[0]).toBe(1);
    expect(frac[1]).toBe(1);
    expect(frac[2]).toBeLessThan(0.6);
    const C = model.config.hiddenSize;
    const w2 = r.routerSet.weight(2).toFloat32Array();
    const along = Array.from({ length: model.config.moe!.numExperts }, (_, e) => w2[e * C]);
    expect(Math.min(...along)).toBe(along[2]);
    expect(along[2]).toBeLessThan(0);
    r.routerSet.dispose();
  } finally {
    model.dispose();
  }
});

describe('router-tuning on a model with a redundant attention layer', () => {
  let model: CausalLM;
  let train: Example[];
  let val: Example[];
  beforeAll(async () => {
    model = await constructed('qwen3', (m) => zero(m.weights.layers[1].o.weight));
    train = sample(model, 48, 16, 1);
    val = sample(model, 16, 16, 2);
  });
  afterAll(() => model.dispose());

  test('resume after an interruption equals the uninterrupted run, bit for bit', async () => {
    const common = { examples: train, valExamples: val, granularity: 'attn-token' as const, layers: [1, 2], steps: 8, lr: 0.02, batchSize: 4, gradAccum: 2, seed: 5, valEvery: 0, targetSkip: 0.3 };
    const full = await tune(model, { ...common, out: path.join(tmp, 'full.safetensors') });
    const part = await tune(model, { ...common, out: path.join(tmp, 'part.safetensors'), stopAfter: 3 });
    expect(part.steps).toBe(3);
    part.routerSet.dispose();
    const resumed = await tune(model, { ...common, out: path.join(tmp, 'resumed.safetensors'), resume: path.join(tmp, 'part.safetensors') });
    for (const l of [1, 2]) {
      expect(Array.from(resumed.routerSet.weight(l).toFloat32Array())).toEqual(Array.from(full.routerSet.weight(l).toFloat32Array()));
    }
    const a = loadRouters(path.join(tmp, 'full.safetensors'), model);
    expect(Array.from(a.weight(2).toFloat32Array())).toEqual(Array.from(full.routerSet.weight(2).toFloat32Array()));
    expect(a.metadata.step).toBe('8');
    a.dispose();
    full.routerSet.dispose();
    resumed.routerSet.dispose();
  });

  test('--steps 0 saves freshly initialised routers that execute everything', async () => {
    const file = path.join(tmp, 'zero.safetensors');
    const r = await tune(model, { examples: train, valExamples: val, granularity: 'mlp-token', steps: 0, out: file });
    expect(r.skipRatio).toBe(0);
    const loaded = loadRouters(file, model);
    expect(loaded.granularity).toBe('mlp-token');
    expect(Array.from(loaded.weight(loaded.layers[0]).toFloat32Array()).every((v) => v === 0)).toBe(true);
    loaded.dispose();
    r.routerSet.dispose();
  });

  test('calibration sets the threshold so the held-out skip ratio equals the target', async () => {
    const r = await tune(model, { examples: train, valExamples: val, granularity: 'attn-token', mode: 'keep-kv', layers: [0, 1, 2], steps: 10, lr: 0.02, batchSize: 8, targetSkip: 0.5, lambda: 0.1, calibrate: true, valEvery: 0 });
    expect(r.calibrated).toBe(true);
    const total = val.reduce((s, e) => s + e.ids.length, 0) * 3;
    expect(Math.abs(r.skipRatio - 0.5)).toBeLessThanOrEqual(2 / total + 1e-9);
    r.routerSet.dispose();
  });

  test('bad options are clear errors', async () => {
    await expect(tune(model, { examples: train, steps: -1 })).rejects.toThrow("tune: 'steps' expected an integer >= 0, received -1");
    await expect(tune(model, { examples: train, targetSkip: 1 })).rejects.toThrow(/'targetSkip' expected a number in \[0, 1\)/);
    await expect(tune(model, {})).rejects.toThrow(/no training data/);
    await expect(tune(model, { examples: train, granularity: 'expert' })).rejects.toThrow(/needs a mixture-of-experts model/);
    await expect(tune(model, { examples: train, resume: path.join(tmp, 'nope.safetensors') })).rejects.toThrow(/cannot open/);
  });
});


test('model.attachRouters / saveRouters / loadRouters round-trip, and mismatched checkpoints are refused', async () => {
  const tmp2 = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-attach-'));
  const model = await loadModel(path.join(fixtures, 'qwen3'), { noTokenizer: true });
  const other = await loadModel(path.join(fixtures, 'qwen2'), { noTokenizer: true });
  try {
    const r = model.attachRouters({ granularity: 'block-token', layers: [0, 2], threshold: 0.4, mode: 'keep-kv' });
    r.weight(2).write(new Float32Array(r.weight(2).numel).fill(0.25));
    const file = path.join(tmp2, 'r.safetensors');
    model.saveRouters(file);
    const back = model.loadRouters(file);
    expect(back.granularity).toBe('block-token');
    expect(back.layers).toEqual([0, 2]);
    expect(back.mode).toBe('keep-kv');
    expect(back.thresholds.get(2)).toBe(0.4);
    expect(back.weight(2).toFloat32Array()[5]).toBe(0.25);
    expect(() => other.loadRouters(file)).toThrow(/trained on another base model/);
    expect(() => model.loadRouters(path.join(fixtures, 'qwen3', 'model.safetensors'))).toThrow(/not a router checkpoint/);
    expect(() => model.attachRouters({ granularity: 'attn-seq', layers: [7] })).toThrow('attachRouters: layer 7 is out of range [0, 3)');
    r.dispose();
  } finally {
    model.dispose();
    other.dispose();
    fs.rmSync(tmp2, { recursive: true, force: true });
  }
});
