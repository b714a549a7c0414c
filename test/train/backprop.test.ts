/**
 * Router-only backpropagation through whole models: dL/dg for every granularity against
 * finite differences of the loss in a continuous gate offset, the router weight gradient
 * against its chain rule, and the op counter proof that no frozen weight gets a
 * weight-gradient GEMM.
 */
import * as path from 'path';
import { loadModel, CausalLM } from '../../lib/model/causal_lm';
import { Routers, Granularity, GRANULARITIES } from '../../lib/routing/routers';
import { forwardBackward, Batch, capacityLoss } from '../../lib/train/backprop';
import { Tensor, dispose, ops } from '../../lib';
import { Rng } from '../../lib/util/rng';
import { ROUTING_CASES } from '../helpers/routing';

const fixtures = path.join(__dirname, '..', 'fixtures', 'models');
let dense: CausalLM;
let moe: CausalLM;
beforeAll(async () => {
  dense = await loadModel(path.join(fixtures, 'qwen3'), { noTokenizer: true });
  moe = await loadModel(path.join(fixtures, 'qwen2_moe'), { noTokenizer: true });
});
afterAll(() => {
  dense.dispose();
  moe.dispose();
});

function makeBatch(rng: Rng, B: number, T: number, lengths: number[]): Batch {
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T).fill(-100), mask = new Int32Array(B * T);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < lengths[b]; t++) {
      ids[b * T + t] = 3 + Math.floor(rng.uniform() * 290);
      mask[b * T + t] = 1;
      if (t > 0) targets[b * T + t - 1] = ids[b * T + t];
    }
  return { ids, targets, mask, B, T };
}

/** Routers with random weights so that some executions are skipped and some run. */
function randomRouters(model: CausalLM, g: Granularity, rng: Rng, mode: 'mod' | 'keep-kv' = 'mod'): Routers {
  const r = new Routers(model.config, { granularity: g, layers: g === 'moe-token' || g === 'expert' ? [0, 1, 2] : [1, 2], mode });
  for (const [l, w] of r.weights) {
    w.write(rng.floats(w.numel, 0.6));
    r.thresholds.set(l, 0.5);
  }
  return r;
}

function zeroGrads(r: Routers): Map<number, Tensor> {
  const m = new Map<number, Tensor>();
  for (const [l, w] of r.weights) m.set(l, Tensor.zeros(w.shape).keep());
  return m;
}

const cases = ROUTING_CASES;

describe.each(cases)('%s (%s): router gradients', (g, mode) => {
  test('dL/dg (straight-through, through every later router) matches finite differences', () => {
    const rng = new Rng(g.length * 31 + (mode === 'mod' ? 1 : 2));
    const model = g === 'moe-token' || g === 'expert' ? moe : dense;
    const routers = randomRouters(model, g, rng, mode);
    const batch = makeBatch(rng, 2, 7, [7, 5]);
    const grads = zeroGrads(routers);
    const base = forwardBackward(model, batch, { routers, routerGrads: grads, collectGateGrads: true });
    expect(base.layers.length).toBe(routers.layers.length);
    const executed = base.layers.reduce((s, x) => s + x.executed, 0);
    const total = base.layers.reduce((s, x) => s + x.total, 0);
    expect(executed).toBeGreaterThan(0);
    const eps = 1e-2;
    let checked = 0;
    for (const l of routers.layers) {
      const dg = base.gateGrads!.get(l)!;
      // check up to 4 executions per layer (valid rows only for token/expert)
      const picks: number[] = [];
      for (let i = 0; i < dg.length && picks.length < 4; i += Math.max(1, Math.floor(dg.length / 5))) picks.push(i);
      for (const i of picks) {
        const lossAt = (d: number) => {
          const off = new Float32Array(dg.length);
          off[i] = d;
          return forwardBackward(model, batch, { routers, noGrad: true, gateOffsets: new Map([[l, off]]), surrogate: base.scores }).ce;
        };
        const numeric = (lossAt(eps) - lossAt(-eps)) / (2 * eps);
        expect(Math.abs(numeric - dg[i])).toBeLessThanOrEqual(2e-3 + 2e-2 * Math.abs(numeric));
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(0);
    void total;
    dispose([...grads.values()]);
    routers.dispose();
  });

  test('only router gradients are computed: no weight-gradient GEMM for frozen weights', () => {
    const rng = new Rng(7);
    const model = g === 'moe-token' || g === 'expert' ? moe : dense;
    const routers = randomRouters(model, g, rng, mode);
    const grads = zeroGrads(routers);
    ops.resetOpCounts();
    forwardBackward(model, makeBatch(rng, 2, 6, [6, 4]), { routers, routerGrads: grads, regularizer: { lambda: 0.5, targetSkip: 0.5, kind: 'global' } });
    const counts = ops.opCounts();
    expect(counts['matmul:weight-grad'] ?? 0).toBe(0);
    expect(counts['moe_experts_bwd:weight-grad'] ?? 0).toBe(0);
    let nonzero = 0;
    for (const t of grads.values()) nonzero += t.toFloat32Array().filter((v) => v !== 0).length;
    expect(nonzero).toBeGreaterThan(0);
    dispose([...grads.values()]);
    routers.dispose();
  });
});

test('router weight gradient follows the chain rule dw = Σ dg·s(1−s)·h (attn-token, single router)', () => {
  const rng = new Rng(99);
  const routers = new Routers(dense.config, { granularity: 'attn-token', layers: [2] });
  routers.weight(2).write(rng.floats(dense.config.hiddenSize, 0.5));
  const batch = makeBatch(rng, 1, 6, [6]);
  const grads = zeroGrads(routers);
  const r = forwardBackward(dense, batch, { routers, routerGrads: grads, collectGateGrads: true });
  const dg = r.gateGrads!.get(2)!;
  // Surrogate gate ĝ = g + s(w) − s(w0): its derivative wrt w at w0 is the STE gradient.
  // Check the directional derivative along a random direction by finite differences.
  const dir = rng.floats(dense.config.hiddenSize, 1);
  const w0 = routers.weight(2).toFloat32Array();
  const scoresAt = (w: Float32Array): Float32Array => {
    routers.weight(2).write(w);
    const probe = forwardBackward(dense, batch, { routers, noGrad: true, collectGateGrads: false });
    void probe;
    return new Float32Array(0);
  };
  void scoresAt;
  const analytic = ops.sumSquares(grads.get(2)!) >= 0 ? dot(grads.get(2)!.toFloat32Array(), dir) : 0;
  // numeric: loss with hard decisions frozen and offsets s(w0 ± εd) − s(w0); s computed by the router op on the saved input
  const h = routerInput(batch, 2);
  const s0 = sig(h, w0);
  const eps = 1e-3;
  const lossWith = (sign: number) => {
    const w = w0.map((v, i) => v + sign * eps * dir[i]);
    const s = sig(h, w);
    const off = s.map((v, i) => v - s0[i]);
    routers.weight(2).write(w0);
    return forwardBackward(dense, batch, { routers, noGrad: true, gateOffsets: new Map([[2, off]]) }).ce;
  };
  const numeric = (lossWith(1) - lossWith(-1)) / (2 * eps);
  expect(Math.abs(numeric - analytic)).toBeLessThanOrEqual(1e-3 + 2e-2 * Math.abs(numeric));
  expect(dg.length).toBe(6);
  dispose([...grads.values()]);
  routers.dispose();

  function routerInput(b: Batch, layer: number): Float32Array {
    // input_layernorm(x) at `layer`, from a forward of the first `layer` layers without routers
    const cfg = dense.config;
    const cache = dense.newCache(1, b.T);
    const out: Float32Array[] = [];
    // run the full model once while capturing: reuse forwardBackward's router hook by a probe router
    const probe = new Routers(cfg, { granularity: 'attn-token', layers: [layer] });
    const g = zeroGrads(probe);
    const res = forwardBackward(dense, b, { routers: probe, routerGrads: g, collectGateGrads: true });
    void res;
    cache.dispose();
    dispose([...g.values()]);
    // dw of a zero router with dscore = dg: not the input itself; fall back to computing h directly
    probe.dispose();
    out.push(computeNormedInput(b, layer));
    return out[0];
  }
});

function dot(a: ArrayLike<number>, b: ArrayLike<number>) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
function sig(h: Float32Array, w: Float32Array): Float32Array {
  const C = w.length;
  const n = h.length / C;
  const out = new Float32Array(n);
  for (let t = 0; t < n; t++) {
    let z = 0;
    for (let c = 0; c < C; c++) z += h[t * C + c] * w[c];
    out[t] = 1 / (1 + Math.exp(-z));
  }
  return out;
}
/** input_layernorm output at `layer` for a single unpadded sequence, via the inference path. */
function computeNormedInput(b: Batch, layer: number): Float32Array {
  const cfg = dense.config;
  const w = dense.weights;
  const ids = Tensor.from(b.ids, [b.T], 'int32');
  // run the model's first `layer` layers through the public forward by truncation: use a temporary model view
  const saved = w.layers.splice(layer);
  const savedCfgLayers = cfg.numLayers;
  (cfg as { numLayers: number }).numLayers = layer;
  const savedHead = w.lmHead;
  const savedNorm = w.finalNorm;
  const ones = Tensor.from(new Float32Array(cfg.hiddenSize).fill(1));
  try {
    // final norm = the target layer's input_layernorm, lm_head = identity (hidden × hidden)
    const eye = new Float32Array(cfg.hiddenSize * cfg.hiddenSize);
    for (let i = 0; i < cfg.hiddenSize; i++) eye[i * cfg.hiddenSize + i] = 1;
    const id = Tensor.from(eye, [cfg.hiddenSize, cfg.hiddenSize]);
    (w as { lmHead: Tensor }).lmHead = id;
    (w as { finalNorm: Tensor }).finalNorm = saved[0].inputNorm;
    const cache = dense.newCache(1, b.T);
    const out = dense.forward(b.ids, null, 1, b.T, cache);
    const data = out.toFloat32Array();
    dispose([out, id]);
    cache.dispose();
    return data;
  } finally {
    w.layers.push(...saved);
    (cfg as { numLayers: number }).numLayers = savedCfgLayers;
    (w as { lmHead: Tensor }).lmHead = savedHead;
    (w as { finalNorm: Tensor }).finalNorm = savedNorm;
    dispose([ids, ones]);
  }
}

describe('capacity regulariser', () => {
  const stats = [
    { layer: 1, executed: 8, total: 10 },
    { layer: 2, executed: 2, total: 10 },
  ];
  test('global: λ·max(0, ḡ − c) over all executions', () => {
    const r = capacityLoss(stats, { lambda: 2, targetSkip: 0.6, kind: 'global' });
    expect(r.loss).toBeCloseTo(2 * (0.5 - 0.4));
    expect(r.perLayerGrad.get(1)).toBeCloseTo(2 / 20);
    expect(capacityLoss(stats, { lambda: 2, targetSkip: 0.4, kind: 'global' }).loss).toBe(0);
  });
  test('per-layer and L1', () => {
    const p = capacityLoss(stats, { lambda: 1, targetSkip: 0.5, kind: 'per-layer' });
    expect(p.loss).toBeCloseTo(0.3);
    expect(p.perLayerGrad.get(1)).toBeCloseTo(0.1);
    expect(p.perLayerGrad.get(2)).toBe(0);
    const l1 = capacityLoss(stats, { lambda: 1, targetSkip: 0.5, kind: 'l1' });
    expect(l1.loss).toBeCloseTo(1.0);
  });
});

test('every granularity is covered', () => {
  expect(new Set(cases.map((c) => c[0]))).toEqual(new Set(GRANULARITIES));
});

test('a training step frees every intermediate (reshape views included): no native memory growth', async () => {
  const { backendInfo } = await import('../../lib');
  const { FullGrads } = await import('../../lib/train/backprop');
  const rng = new Rng(1);
  const routers = randomRouters(dense, 'attn-token', rng, 'mod');
  const grads = zeroGrads(routers);
  const full = new FullGrads();
  const batch = makeBatch(rng, 2, 6, [6, 4]);
  forwardBackward(dense, batch, { routers, routerGrads: grads });
  forwardBackward(dense, batch, { fullParams: full });
  const before = backendInfo().memory;
  for (let i = 0; i < 3; i++) {
    forwardBackward(dense, batch, { routers, routerGrads: grads });
    forwardBackward(dense, batch, { fullParams: full });
  }
  expect(backendInfo().memory.liveBuffers).toBe(before.liveBuffers);
  expect(backendInfo().memory.allocatedBytes).toBe(before.allocatedBytes);
  full.dispose();
  dispose([...grads.values()]);
  routers.dispose();
});
