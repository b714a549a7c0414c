/**
 * Whole models on the GPU: every fixture family's logits against Hugging Face's
 * (the same golden fixtures as test/model/golden.test.ts), the KV-cache decode path,
 * routed inference, and router-tuning steps on the device against the same steps on
 * the CPU. Node's test runner (`npm run test:cuda`); skipped with a notice without a GPU.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';

import { backendInfo } from '../../lib/backend';
import { loadModel } from '../../lib/model/causal_lm';
import { tune } from '../../lib/train/tune';
import { decodeFloat32 as decode, maxAbs, maxDiff } from '../helpers/compare';

const info = backendInfo();
const skip = info.cuda ? false : `no CUDA: ${info.cudaReason ?? 'unavailable'}`;
if (skip) console.log(`# CUDA model tests skipped — ${skip}`);

const root = path.join(__dirname, '..', '..', '..', 'test', 'fixtures');
const families = ['llama', 'mistral', 'qwen2', 'qwen3', 'mixtral', 'olmoe', 'qwen2_moe', 'qwen3_moe', 'qwen3_moe-fused', 'llama-bf16'];

// GEMMs and attention run on tensor cores (TF32 / bf16 operands, fp32 accumulation):
// a few parts in a thousand of the largest logit, against 1e-4 for the fp32 CPU path.
const TOL = 2e-2;

for (const family of families) {
  test(`${family}: logits on cuda match transformers; KV-cache decode matches prefill`, { skip }, async () => {
    const dir = path.join(root, 'models', family);
    const golden = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
    const model = await loadModel(dir, { device: 'cuda' });
    try {
      assert.equal(model.device, 'cuda');
      for (const p of golden.prompts) {
        const ref = decode(p.logits);
        const got = await model.logits(p.ids);
        assert.equal(got.length, ref.length);
        const d = maxDiff(got, ref);
        assert.ok(d <= TOL * maxAbs(ref), `${family}: max |diff| ${d} > ${TOL} x ${maxAbs(ref)}`);
      }
      const p = golden.prompts[1];
      const ref = decode(p.logits);
      const V = golden.vocab;
      const cache = model.newCache(1, p.ids.length);
      try {
        for (let t = 0; t < p.ids.length; t++) {
          const out = model.forward(Int32Array.of(p.ids[t]), null, 1, 1, cache);
          const row = out.toFloat32Array();
          out.dispose();
          const d = maxDiff(row, ref.subarray(t * V, (t + 1) * V));
          assert.ok(d <= TOL * maxAbs(ref), `${family} decode step ${t}: max |diff| ${d}`);
        }
      } finally {
        cache.dispose();
      }
    } finally {
      model.dispose();
    }
  });
}

test('router-tuning on cuda: a few token-level steps train like the same steps on the CPU', { skip }, async () => {
  const dir = path.join(root, 'models', 'llama');
  const data = path.join(root, 'data', 'text');
  const opts = { data, granularity: 'attn-token' as const, steps: 4, seqLen: 32, batchSize: 2, lr: 0.02, seed: 5, valEvery: 0, maxValBatches: 1 };
  const results = [];
  for (const device of ['cpu', 'cuda'] as const) {
    const model = await loadModel(dir, { device });
    try {
      const r = await tune(model, opts);
      results.push(r);
      const w = r.routerSet;
      assert.ok(w, 'routers returned');
    } finally {
      model.dispose();
    }
  }
  const [cpu, gpu] = results;
  assert.ok(Number.isFinite(gpu.trainLoss), `finite loss on cuda, got ${gpu.trainLoss}`);
  assert.ok(Math.abs(gpu.trainLoss - cpu.trainLoss) <= 0.02 * Math.abs(cpu.trainLoss) + 1e-3, `train loss cuda ${gpu.trainLoss} vs cpu ${cpu.trainLoss}`);
  assert.ok(Math.abs(gpu.valLoss - cpu.valLoss) <= 0.02 * Math.abs(cpu.valLoss) + 1e-3, `val loss cuda ${gpu.valLoss} vs cpu ${cpu.valLoss}`);
});

test('cuda memory: a model load, forward and dispose return every device buffer', { skip }, async () => {
  const before = backendInfo().cudaMemory!.allocatedBytes;
  const model = await loadModel(path.join(root, 'models', 'qwen3'), { device: 'cuda' });
  await model.logits([1, 2, 3, 4]);
  model.dispose();
  assert.equal(backendInfo().cudaMemory!.allocatedBytes, before);
});
