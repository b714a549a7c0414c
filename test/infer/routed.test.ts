/**
 * Dynamic-depth inference: real skipping (gather → compute → scatter) agrees with the
 * training-semantics forward that computes every layer in full and gates it; routers that
 * skip nothing change nothing; seq decisions are fixed at prefill; KV bytes are the slots
 * really allocated.
 */
import * as path from 'path';
import { loadModel, CausalLM, RoutingStats } from '../../lib/model/causal_lm';
import { Granularity, Routers } from '../../lib/routing/routers';
import { forwardBackward, Batch } from '../../lib/train/backprop';
import { generateBatch } from '../../lib/infer/generate';
import { Rng } from '../../lib/util/rng';
import { ROUTING_CASES } from '../helpers/routing';

const fixtures = path.join(__dirname, '..', 'fixtures', 'models');
let dense: CausalLM;
let moe: CausalLM;
beforeAll(async () => {
  dense = await loadModel(path.join(fixtures, 'qwen3'));
  moe = await loadModel(path.join(fixtures, 'qwen2_moe'));
});
afterAll(() => {
  dense.dispose();
  moe.dispose();
});

const cases = ROUTING_CASES;
const modelFor = (g: Granularity) => (g === 'moe-token' || g === 'expert' ? moe : dense);

function batchOf(rng: Rng, lengths: number[], T: number): Batch {
  const B = lengths.length;
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T).fill(-100), mask = new Int32Array(B * T);
  lengths.forEach((n, b) => {
    for (let t = 0; t < n; t++) {
      ids[b * T + t] = 3 + Math.floor(rng.uniform() * 290);
      mask[b * T + t] = 1;
    }
    for (let t = 0; t < n - 1; t++) targets[b * T + t] = ids[b * T + t + 1];
  });
  return { ids, targets, mask, B, T };
}

function ceFromLogits(logits: Float32Array, targets: Int32Array, V: number): number {
  let sum = 0, n = 0;
  for (let r = 0; r < targets.length; r++) {
    if (targets[r] < 0) continue;
    const row = logits.subarray(r * V, (r + 1) * V);
    let m = -Infinity;
    for (const v of row) m = Math.max(m, v);
    let s = 0;
    for (const v of row) s += Math.exp(v - m);
    sum += m + Math.log(s) - row[targets[r]];
    n++;
  }
  return sum / n;
}

describe.each(cases)('%s (%s)', (g, mode) => {
  test('routers that skip nothing leave logits bit-identical', async () => {
    const model = modelFor(g);
    const ids = [1, 17, 42, 99, 7, 23, 5];
    const base = await model.logits(ids);
    const r = model.attachRouters({ granularity: g, mode, layers: g === 'moe-token' || g === 'expert' ? [0, 1, 2] : [0, 1, 2] });
    try {
      expect(Array.from(await model.logits(ids))).toEqual(Array.from(base));
      expect(Array.from(await model.logits(ids, { routing: false }))).toEqual(Array.from(base));
    } finally {
      r.dispose();
      model.routers = undefined;
    }
  });

  test('real skipping computes what the full-compute, gated forward computes (padded batch)', () => {
    const model = modelFor(g);
    const rng = new Rng(g.length * 7 + (mode === 'mod' ? 0 : 1));
    const routers = new Routers(model.config, { granularity: g, mode, layers: [0, 1, 2] });
    for (const w of routers.weights.values()) w.write(rng.floats(w.numel, 0.6));
    model.routers = routers;
    try {
      const batch = batchOf(rng, [9, 6, 8], 9);
      const ref = forwardBackward(model, batch, { routers, noGrad: true });
      const skipped = ref.layers.reduce((a, s) => a + s.total - s.executed, 0);
      expect(skipped).toBeGreaterThan(0);
      const cache = model.newCache(batch.B, batch.T);
      const stats: RoutingStats = { layers: new Map() };
      const out = model.forward(batch.ids, batch.mask, batch.B, batch.T, cache, { stats });
      const logits = out.toFloat32Array();
      out.dispose();
      cache.dispose();
      const ce = ceFromLogits(logits, batch.targets, model.config.vocabSize);
      expect(Math.abs(ce - ref.ce)).toBeLessThanOrEqual(1e-5 * Math.abs(ref.ce));
      for (const s of ref.layers) expect(stats.layers.get(s.layer)).toEqual({ executed: s.executed, total: s.total });
    } finally {
      routers.dispose();
      model.routers = undefined;
    }
  });
});

test('seq-level decode uses exactly the layers chosen at prefill', () => {
  const rng = new Rng(5);
  const routers = new Routers(dense.config, { granularity: 'attn-seq', layers: [0, 1, 2] });
  for (const w of routers.weights.values()) w.write(rng.floats(w.numel, 1));
  dense.routers = routers;
  try {
    const prompt = Int32Array.from([1, 17, 42, 99, 7]);
    const run = (flip: boolean) => {
      const cache = dense.newCache(1, 8);
      const stats: RoutingStats = { layers: new Map() };
      dense.forward(prompt, null, 1, prompt.length, cache, { stats }).dispose();
      const decisions = [...cache.seqDecisions.entries()].map(([l, d]) => [l, Array.from(d)]);
      if (flip) for (const w of routers.weights.values()) w.write(w.toFloat32Array().map((v) => -v));
      const out = dense.forward(Int32Array.of(11), null, 1, 1, cache, { stats });
      const row = out.toFloat32Array();
      out.dispose();
      if (flip) for (const w of routers.weights.values()) w.write(w.toFloat32Array().map((v) => -v));
      cache.dispose();
      return { row, decisions, stats };
    };
    const a = run(false), b = run(true);
    expect(a.decisions).toEqual(b.decisions);
    expect(Array.from(b.row)).toEqual(Array.from(a.row));
    // counted once per sequence, at prefill
    for (const s of a.stats.layers.values()) expect(s.total).toBe(1);
  } finally {
    routers.dispose();
    dense.routers = undefined;
  }
});

test('KV bytes are the slots really allocated; skipped layers and tokens get none', () => {
  const rng = new Rng(9);
  const cfg = dense.config;
  const slotBytes = 2 * cfg.numKvHeads * cfg.headDim * 4;
  for (const [g, mode] of [['attn-seq', 'mod'], ['attn-token', 'mod'], ['attn-token', 'keep-kv']] as const) {
    const routers = new Routers(cfg, { granularity: g, mode, layers: [0, 1, 2] });
    for (const w of routers.weights.values()) w.write(rng.floats(w.numel, 1));
    dense.routers = routers;
    try {
      const batch = batchOf(rng, [7, 5], 7);
      const cache = dense.newCache(2, 7);
      dense.forward(batch.ids, batch.mask, 2, 7, cache).dispose();
      let expected = 0, used = 0;
      for (const l of cache.layers) {
        expected += l.rows * l.cap * slotBytes;
        used += l.used.reduce((a, b) => a + b, 0);
      }
      expect(cache.bytes).toBe(expected);
      // exact allocation at prefill: allocated slots = the longest row of each layer
      for (const l of cache.layers) expect(l.cap).toBe(l.rows ? Math.max(...l.used) : 0);
      expect(cache.unroutedBytes).toBe(12 * cfg.numLayers * slotBytes);
      if (mode === 'keep-kv') expect(used).toBe(12 * cfg.numLayers);
      else expect(used).toBeLessThan(12 * cfg.numLayers);
      cache.dispose();
    } finally {
      routers.dispose();
      dense.routers = undefined;
    }
  }
});

describe('generate', () => {
  test('greedy generation with routers that skip nothing equals generation without routers', async () => {
    const plain = await generateBatch(dense, [[1, 17, 42, 99, 7]], { maxTokens: 8, stopAtEos: false });
    const r = dense.attachRouters({ granularity: 'attn-token' });
    try {
      const routed = await generateBatch(dense, [[1, 17, 42, 99, 7]], { maxTokens: 8, stopAtEos: false });
      expect(routed[0].tokens).toEqual(plain[0].tokens);
      expect(routed[0].stats.skipRatio).toBe(0);
      expect(routed[0].stats.layers.map((l) => l.executedFraction)).toEqual([1]);
      expect(await dense.generateGreedy([1, 17, 42, 99, 7], 8)).toEqual(plain[0].tokens);
    } finally {
      r.dispose();
      dense.routers = undefined;
    }
  });

  test('a batch of prompts of different lengths gives each prompt its own greedy continuation', async () => {
    const prompts = [[1, 5, 6, 7, 8, 9, 10], [1, 299], [1, 17, 42]];
    const batch = await generateBatch(dense, prompts, { maxTokens: 6, stopAtEos: false });
    for (let i = 0; i < prompts.length; i++) {
      const single = await generateBatch(dense, [prompts[i]], { maxTokens: 6, stopAtEos: false });
      expect(batch[i].tokens).toEqual(single[0].tokens);
    }
  });

  test('streaming, sampling with a seed, stop strings and stats', async () => {
    const it = dense.generate('the quick brown', { maxTokens: 12, temperature: 0.8, topK: 40, topP: 0.95, seed: 3, stopAtEos: false });
    const streamed: number[] = [];
    let r = await it.next();
    while (!r.done) {
      streamed.push(r.value.token);
      r = await it.next();
    }
    const result = r.value;
    expect(result.tokens).toEqual(streamed);
    expect(result.tokens.length).toBe(12);
    const again = await generateBatch(dense, ['the quick brown'], { maxTokens: 12, temperature: 0.8, topK: 40, topP: 0.95, seed: 3, stopAtEos: false });
    expect(again[0].tokens).toEqual(result.tokens);
    expect(result.stats.kvBytes).toBeGreaterThan(0);
    expect(result.stats.prefillTokensPerSecond).toBeGreaterThan(0);
    expect(result.stats.decodeTokensPerSecond).toBeGreaterThan(0);
    // stop string: cut at the first occurrence of a piece of the text it produced
    const piece = result.text.slice(2, 4);
    if (piece.length === 2) {
      const stopped = await generateBatch(dense, ['the quick brown'], { maxTokens: 12, temperature: 0.8, topK: 40, topP: 0.95, seed: 3, stopAtEos: false, stop: [piece] });
      expect(stopped[0].text).toBe(result.text.slice(0, result.text.indexOf(piece)));
    }
  });

  test('bad options are clear errors', async () => {
    await expect(generateBatch(dense, ['x'], { maxTokens: -1 })).rejects.toThrow("generate: 'maxTokens' expected an integer in [0, 1048576], received -1");
    await expect(generateBatch(dense, ['x'], { topP: 0 })).rejects.toThrow(/'topP' expected a number in \(0, 1\]/);
    await expect(generateBatch(dense, [[1, 999]], {})).rejects.toThrow(/token id 999 at position 1 is outside the vocabulary/);
    await expect(generateBatch(dense, [], {})).rejects.toThrow(/at least one prompt/);
  });
});

test('router-tuning generate CLI streams text and reports stats; --json and usage errors', async () => {
  const { runCli } = await import('../helpers/cli');
  const dir = path.join(fixtures, 'qwen3');
  const a = await runCli(['generate', '--model', dir, '--prompt', 'the quick', '--max-tokens', '6']);
  expect(a.code).toBe(0);
  expect(a.out.startsWith('the quick')).toBe(true);
  expect(a.err).toMatch(/prefill .* tok\/s, decode .* tok\/s, skip ratio/);
  const b = await runCli(['generate', '--model', dir, '--prompt', 'the quick', '--prompt', 'call me', '--max-tokens', '4', '--json']);
  const j = JSON.parse(b.out);
  expect(j).toHaveLength(2);
  expect(j[0].tokens).toHaveLength(4);
  expect(j[0].stats).toHaveProperty('kvBytesSaved');
  const c = await runCli(['generate', '--model', dir]);
  expect(c.code).toBe(2);
  expect(c.err).toMatch(/--prompt TEXT is required/);
  const d = await runCli(['generate', '--model', dir, '--prompt', 'x', '--routers', path.join(fixtures, 'nope.safetensors')]);
  expect(d.code).toBe(2);
  expect(d.err).toMatch(/cannot open/);
});

describe('every family and granularity: real skipping equals the gated full-compute forward', () => {
  const families = ['llama', 'mistral', 'qwen2', 'qwen3', 'mixtral', 'olmoe', 'qwen2_moe', 'qwen3_moe'];
  const moeFamilies = new Set(['mixtral', 'olmoe', 'qwen2_moe', 'qwen3_moe']);
  test.each(families.map((f) => [f]))('%s', async (family) => {
    const model = await loadModel(path.join(fixtures, family), { noTokenizer: true });
    try {
      const grans: Granularity[] = ['attn-seq', 'attn-token', 'mlp-seq', 'mlp-token', 'block-seq', 'block-token'];
      if (moeFamilies.has(family)) grans.push('moe-token', 'expert');
      for (const g of grans) {
        const rng = new Rng(family.length * 13 + g.length);
        const routers = new Routers(model.config, { granularity: g, layers: [0, 1, 2] });
        for (const w of routers.weights.values()) w.write(rng.floats(w.numel, 0.6));
        model.routers = routers;
        // longer than mistral's sliding window (8): the window applies to the cached subset too
        const batch = batchOf(rng, [12, 9], 12);
        const ref = forwardBackward(model, batch, { routers, noGrad: true });
        const cache = model.newCache(batch.B, batch.T);
        const out = model.forward(batch.ids, batch.mask, batch.B, batch.T, cache);
        const ce = ceFromLogits(out.toFloat32Array(), batch.targets, model.config.vocabSize);
        out.dispose();
        cache.dispose();
        expect({ g, diff: Math.abs(ce - ref.ce) <= 1e-5 * Math.abs(ref.ce) }).toEqual({ g, diff: true });
        routers.dispose();
        model.routers = undefined;
      }
    } finally {
      model.dispose();
    }
  });
});
