/**
 * Whole-model conformance: every family's logits against Hugging Face transformers
 * (fixtures made by scripts/golden/make_fixtures.py), prefill, token-by-token with the
 * KV cache, a left-padded batch, and greedy generation.
 */
import * as fs from 'fs';
import * as path from 'path';
import { loadModel, CausalLM } from '../../lib/model/causal_lm';
import { decodeFloat32 as decode, maxAbs, maxDiff } from '../helpers/compare';

const root = path.join(__dirname, '..', 'fixtures', 'models');
const families = ['llama', 'mistral', 'qwen2', 'qwen3', 'mixtral', 'olmoe', 'qwen2_moe', 'qwen3_moe', 'qwen3_moe-fused', 'llama-bf16'];

describe.each(families.map((f) => [f]))('%s matches transformers', (family) => {
  const dir = path.join(root, family);
  const golden = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
  // 1e-4 relative to the largest logit (the bound). The bf16 checkpoint's reference
  // is that checkpoint run by transformers in fp32, so the same bound applies to it.
  const tol = 1e-4;
  let model: CausalLM;
  beforeAll(async () => {
    model = await loadModel(dir);
  });
  afterAll(() => model.dispose());

  test('prefill logits', async () => {
    for (const p of golden.prompts) {
      const ref = decode(p.logits);
      const got = await model.logits(p.ids);
      expect(got.length).toBe(ref.length);
      expect(maxDiff(got, ref)).toBeLessThanOrEqual(tol * maxAbs(ref));
    }
  });

  test('token-by-token decoding with the KV cache', () => {
    const p = golden.prompts[1];
    const ref = decode(p.logits);
    const V = golden.vocab;
    const cache = model.newCache(1, p.ids.length);
    try {
      for (let t = 0; t < p.ids.length; t++) {
        const out = model.forward(Int32Array.of(p.ids[t]), null, 1, 1, cache);
        const row = out.toFloat32Array();
        out.dispose();
        const refRow = ref.subarray(t * V, (t + 1) * V);
        expect(maxDiff(row, refRow)).toBeLessThanOrEqual(tol * maxAbs(ref));
      }
    } finally {
      cache.dispose();
    }
  });

  test('left-padded batch', async () => {
    const lp = golden.leftPadded;
    const ref = decode(lp.logits);
    const seqs = lp.ids.map((row: number[], b: number) => row.filter((_: number, i: number) => lp.mask[b][i] === 1));
    const { logits, mask } = await model.logitsBatch(seqs, { padding: 'left' });
    const V = golden.vocab;
    for (let r = 0; r < mask.length; r++) {
      if (!mask[r]) continue;
      expect(maxDiff(logits.subarray(r * V, (r + 1) * V), ref.subarray(r * V, (r + 1) * V))).toBeLessThanOrEqual(tol * maxAbs(ref));
    }
  });

  test('right-padded batch equals the unpadded prompts', async () => {
    const a = golden.prompts[0], c = golden.prompts[2];
    const { logits, T } = await model.logitsBatch([a.ids, c.ids], { padding: 'right' });
    const V = golden.vocab;
    [a, c].forEach((p: { ids: number[]; logits: string }, b: number) => {
      const ref = decode(p.logits);
      const got = logits.subarray(b * T * V, (b * T + p.ids.length) * V);
      expect(maxDiff(got, ref)).toBeLessThanOrEqual(tol * maxAbs(ref));
    });
  });

  test('greedy generation', async () => {
    const g = golden.greedy;
    const tokens = await model.generateGreedy(g.ids, g.maxNewTokens);
    expect(tokens).toEqual(g.tokens);
  });
});

test('an fp32 checkpoint loaded as bfloat16 matches within bf16 tolerance', async () => {
  const dir = path.join(root, 'qwen3');
  const golden = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
  const model = await loadModel(dir, { dtype: 'bfloat16' });
  try {
    expect(model.weights.layers[0].q.weight.dtype).toBe('bfloat16');
    for (const p of golden.prompts) {
      const ref = decode(p.logits);
      const got = await model.logits(p.ids);
      expect(maxDiff(got, ref)).toBeLessThanOrEqual(3e-2 * maxAbs(ref));
    }
  } finally {
    model.dispose();
  }
});
