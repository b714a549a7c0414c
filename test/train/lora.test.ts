import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadModel, CausalLM } from '../../lib/model/causal_lm';
import { LoraSet } from '../../lib/train/lora';
import { forwardBackward, Batch } from '../../lib/train/backprop';
import { tune } from '../../lib/train/tune';
import { Routers } from '../../lib/routing/routers';
import { Tensor, dispose, ops } from '../../lib';
import { Rng } from '../../lib/util/rng';

const fixtures = path.join(__dirname, '..', 'fixtures', 'models');
let model: CausalLM;
beforeAll(async () => {
  model = await loadModel(path.join(fixtures, 'qwen2'), { noTokenizer: true });
});
afterAll(() => model.dispose());

function batch(seed: number): Batch {
  const rng = new Rng(seed);
  const B = 2, T = 6;
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T).fill(-100), mask = new Int32Array(B * T).fill(1);
  for (let i = 0; i < B * T; i++) ids[i] = 3 + Math.floor(rng.uniform() * 290);
  for (let b = 0; b < B; b++) for (let t = 0; t < T - 1; t++) targets[b * T + t] = ids[b * T + t + 1];
  return { ids, targets, mask, B, T };
}

test('LoRA gradients (dA, dB) match finite differences through the whole model', () => {
  const lora = new LoraSet(model, { rank: 2, alpha: 4, layers: [0, 2], seed: 1 });
  const rng = new Rng(4);
  for (const a of lora.adapters.values()) a.B.write(rng.floats(a.B.numel, 0.3));
  const b = batch(1);
  forwardBackward(model, b, { lora });
  const eps = 1e-2;
  let checked = 0;
  for (const name of ['model.layers.0.self_attn.q_proj', 'model.layers.2.mlp.down_proj', 'model.layers.0.self_attn.v_proj']) {
    const a = lora.adapters.get(name)!;
    for (const [p, g] of [[a.A, a.gA], [a.B, a.gB]] as const) {
      const grad = g.toFloat32Array();
      const vals = p.toFloat32Array();
      for (const i of [0, Math.floor(vals.length / 2), vals.length - 1]) {
        const at = (d: number) => {
          const v = vals.slice();
          v[i] += d;
          p.write(v);
          const r = forwardBackward(model, b, { lora, noGrad: true }).ce;
          p.write(vals);
          return r;
        };
        const numeric = (at(eps) - at(-eps)) / (2 * eps);
        expect(Math.abs(numeric - grad[i])).toBeLessThanOrEqual(2e-3 + 3e-2 * Math.abs(numeric));
        checked++;
      }
    }
  }
  expect(checked).toBe(18);
  lora.dispose();
});

test('with LoRA, weight-gradient GEMMs run only for the adapters (2 per adapter), never for a frozen weight', () => {
  const lora = new LoraSet(model, { rank: 4 });
  const routers = new Routers(model.config, { granularity: 'attn-seq' });
  const grads = new Map([...routers.weights].map(([l, w]) => [l, Tensor.zeros(w.shape).keep()]));
  ops.resetOpCounts();
  forwardBackward(model, batch(2), { routers, routerGrads: grads, lora });
  expect(ops.opCounts()['matmul:weight-grad']).toBe(2 * lora.adapters.size);
  expect(lora.adapters.size).toBe(3 * 7);
  dispose([...grads.values()]);
  routers.dispose();
  lora.dispose();
});

test('tune with loraRank trains adapters, saves them with the routers, and loadRouters applies them', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-lora-'));
  const m = await loadModel(path.join(fixtures, 'qwen2'), { noTokenizer: true });
  try {
    const examples = [batch(3), batch(4), batch(5), batch(6)].flatMap((b) => [0, 1].map((r) => ({ ids: b.ids.slice(r * b.T, (r + 1) * b.T), targets: b.targets.slice(r * b.T, (r + 1) * b.T) })));
    const base = await m.logits(Array.from(examples[0].ids));
    const file = path.join(tmp, 'r.safetensors');
    const r = await tune(m, { examples, valExamples: examples.slice(0, 2), loraRank: 2, steps: 6, lr: 0.01, batchSize: 4, valEvery: 0, out: file });
    expect(m.lora).toBeDefined();
    const tuned = await m.logits(Array.from(examples[0].ids));
    expect(Math.max(...tuned.map((v, i) => Math.abs(v - base[i])))).toBeGreaterThan(1e-4);
    const fresh = await loadModel(path.join(fixtures, 'qwen2'), { noTokenizer: true });
    fresh.loadRouters(file);
    expect(fresh.lora!.adapters.size).toBe(21);
    const again = await fresh.logits(Array.from(examples[0].ids));
    expect(Math.max(...again.map((v, i) => Math.abs(v - tuned[i])))).toBeLessThan(1e-5);
    fresh.dispose();
    r.routerSet.dispose();
  } finally {
    m.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('bad LoRA options are clear errors', () => {
  expect(() => new LoraSet(model, { rank: 0 })).toThrow("lora: 'rank' expected an integer >= 1, received 0");
  expect(() => new LoraSet(model, { rank: 2, layers: [9] })).toThrow('lora: layer 9 is out of range [0, 3)');
  expect(() => new LoraSet(model, { rank: 2, targets: ['x' as never] })).toThrow(/unknown target 'x'/);
});
