import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { randomModel, syntheticConfig } from '../../lib/model/random';
import { forwardBackward, FullGrads, Batch } from '../../lib/train/backprop';
import { namedWeights, pretrain, saveHfModel } from '../../lib/train/pretrain';
import { loadModel } from '../../lib/model/causal_lm';
import { Example } from '../../lib/train/data';
import { Rng } from '../../lib/util/rng';

const fixtures = path.join(__dirname, '..', 'fixtures', 'models');

function batch(seed: number, V: number): Batch {
  const rng = new Rng(seed);
  const B = 2, T = 7;
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T).fill(-100), mask = new Int32Array(B * T);
  const lens = [7, 5];
  for (let b = 0; b < B; b++)
    for (let t = 0; t < lens[b]; t++) {
      ids[b * T + t] = Math.floor(rng.uniform() * V);
      mask[b * T + t] = 1;
      if (t > 0) targets[b * T + t - 1] = ids[b * T + t];
    }
  return { ids, targets, mask, B, T };
}

const dense = { vocab_size: 50, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, tie_word_embeddings: true };
const moe = { ...dense, model_type: 'olmoe', num_experts: 4, num_experts_per_tok: 2, tie_word_embeddings: false, clip_qkv: 2 };

describe.each([
  ['llama (tied)', dense],
  ['olmoe (experts, q/k norm, clip)', moe],
])('full-parameter backward on %s', (_name, raw) => {
  test('every weight gradient matches finite differences', () => {
    const model = randomModel(syntheticConfig(raw), { seed: 3 });
    try {
      const b = batch(1, 50);
      const full = new FullGrads();
      forwardBackward(model, b, { fullParams: full });
      const weights = namedWeights(model);
      let checked = 0;
      for (const [name, w] of weights) {
        const g = full.grads.get(name);
        expect({ name, has: g !== undefined }).toEqual({ name, has: true });
        const grad = g!.toFloat32Array();
        const vals = w.toFloat32Array();
        for (const i of [0, Math.floor(vals.length / 3), vals.length - 1]) {
          const at = (d: number) => {
            const v = vals.slice();
            v[i] += d;
            w.write(v);
            const r = forwardBackward(model, b, { noGrad: true }).ce;
            w.write(vals);
            return r;
          };
          const eps = 1e-3 // small enough that no top-k expert choice flips;
          const numeric = (at(eps) - at(-eps)) / (2 * eps);
          expect({ name, i, ok: Math.abs(numeric - grad[i]) <= 3e-3 + 3e-2 * Math.abs(numeric) }).toEqual({ name, i, ok: true });
          checked++;
        }
      }
      expect(checked).toBe(3 * weights.size);
      full.dispose();
    } finally {
      model.dispose();
    }
  });
});

test('pretraining lowers the loss, and the exported folder loads with the same logits', async () => {
  const raw = { ...dense, vocab_size: 300 };
  const model = randomModel(syntheticConfig(raw), { seed: 4 });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-pretrain-'));
  try {
    // a repetitive "language": the model can learn it quickly
    const seqs: Example[] = [];
    for (let i = 0; i < 16; i++) {
      const ids = Int32Array.from({ length: 17 }, (_, t) => 3 + ((t * 7 + i) % 40));
      seqs.push({ ids: ids.slice(0, 16), targets: ids.slice(1) });
    }
    const before = (await pretrain(model, { train: seqs, val: seqs, steps: 0, lr: 1e-2, batchSize: 8 })).valLoss;
    const r = await pretrain(model, { train: seqs, val: seqs, steps: 60, lr: 1e-2, batchSize: 8, weightDecay: 0 });
    expect(r.valLoss).toBeLessThan(before * 0.7);
    const dir = path.join(tmp, 'model');
    saveHfModel(dir, model, { model_type: 'llama', rms_norm_eps: 1e-5, ...raw }, path.join(fixtures, 'llama'), 'float32');
    const loaded = await loadModel(dir);
    const ids = Array.from(seqs[0].ids);
    const a = await model.logits(ids), b2 = await loaded.logits(ids);
    expect(Math.max(...a.map((v, i) => Math.abs(v - b2[i])))).toBeLessThan(1e-5);
    loaded.dispose();
  } finally {
    model.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
