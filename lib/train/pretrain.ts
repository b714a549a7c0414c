/**
 * Full-parameter training from scratch on the project's own kernels (the embedded
 * default models are made this way): every weight is trainable, AdamW with a cosine
 * schedule, gradient clipping, validation perplexity, and export to a Hugging Face
 * folder (config.json, bf16 safetensors, tokenizer files) that transformers loads too.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ArgumentError } from '../errors';
import { Tensor, dispose } from '../tensor';
import { writeSafetensors } from '../io/safetensors';
import * as ops from '../ops';
import type { CausalLM } from '../model/causal_lm';
import { isMoeLayer } from '../model/config';
import { forwardBackward, FullGrads } from './backprop';
import { BatchStream, Example, collate } from './data';
import { AdamW, Param, clipGradNorm } from './optimizer';
import { learningRate } from './schedule';
import { writeFileAtomic } from '../util/atomic';

/** Every trainable weight of the model by the name backprop uses for its gradient. */
export function namedWeights(model: CausalLM): Map<string, Tensor> {
  const w = model.weights;
  const m = new Map<string, Tensor>();
  m.set('model.embed_tokens.weight', w.embed);
  w.layers.forEach((l, i) => {
    const p = `model.layers.${i}`;
    m.set(`${p}.input_layernorm.weight`, l.inputNorm);
    m.set(`${p}.post_attention_layernorm.weight`, l.postAttnNorm);
    for (const k of ['q', 'k', 'v', 'o'] as const) {
      m.set(`${p}.self_attn.${k}_proj.weight`, l[k].weight);
      if (l[k].bias) m.set(`${p}.self_attn.${k}_proj.bias`, l[k].bias!);
    }
    if (l.qNorm) m.set(`${p}.self_attn.q_norm.weight`, l.qNorm);
    if (l.kNorm) m.set(`${p}.self_attn.k_norm.weight`, l.kNorm);
    if (l.mlp) for (const k of ['gate', 'up', 'down'] as const) m.set(`${p}.mlp.${k}_proj.weight`, l.mlp[k].weight);
    if (l.moe) {
      m.set(`${p}.mlp.gate.weight`, l.moe.router.weight);
      m.set(`${p}.mlp.experts.gate`, l.moe.experts.gate);
      m.set(`${p}.mlp.experts.up`, l.moe.experts.up);
      m.set(`${p}.mlp.experts.down`, l.moe.experts.down);
    }
  });
  m.set('model.norm.weight', w.finalNorm);
  if (w.lmHead !== w.embed) m.set('lm_head.weight', w.lmHead);
  return m;
}

export interface PretrainOptions {
  train: Example[];
  val: Example[];
  steps: number;
  lr: number;
  batchSize: number;
  warmupSteps?: number;
  minLrRatio?: number;
  weightDecay?: number;
  maxGradNorm?: number;
  seed?: number;
  valEvery?: number;
  maxValBatches?: number;
  onProgress?: (p: { step: number; steps: number; loss: number; lr: number; tokensPerSecond: number; etaSeconds: number; valLoss?: number }) => void;
}

export function validationLoss(model: CausalLM, val: Example[], batchSize: number, maxBatches: number): number {
  let sum = 0, n = 0;
  for (let i = 0, b = 0; i < val.length && b < maxBatches; i += batchSize, b++) {
    const r = forwardBackward(model, collate(val.slice(i, i + batchSize)), { noGrad: true });
    sum += r.ce * r.counted;
    n += r.counted;
  }
  return n ? sum / n : NaN;
}

export async function pretrain(model: CausalLM, o: PretrainOptions): Promise<{ trainLoss: number; valLoss: number; tokens: number; seconds: number }> {
  const weights = namedWeights(model);
  for (const [name, t] of weights)
    if (t.dtype !== 'float32') throw new ArgumentError(`pretrain: weight ${name} is ${t.dtype}; training needs float32 weights`);
  const full = new FullGrads();
  const params: Param[] = [...weights].map(([name, value]) => ({ name, value, grad: full.get(name, value.shape) }));
  const opt = new AdamW(params, { weightDecay: o.weightDecay ?? 0.1, beta2: 0.95 });
  const stream = new BatchStream(o.train, { batchSize: o.batchSize, seed: o.seed ?? 0, shuffle: true });
  const t0 = Date.now();
  let tokens = 0, emaLoss = NaN, valLoss = NaN;
  try {
    for (let step = 0; step < o.steps; step++) {
      opt.zeroGrad();
      const batch = stream.next();
      const r = forwardBackward(model, batch, { fullParams: full });
      const { norm, scale } = clipGradNorm(params, o.maxGradNorm ?? 1);
      const lr = learningRate(step, { lr: o.lr, warmupSteps: o.warmupSteps ?? Math.floor(o.steps * 0.05), totalSteps: o.steps, minLrRatio: o.minLrRatio ?? 0.1 });
      if (Number.isFinite(norm)) opt.step(lr, scale);
      tokens += batch.mask.reduce((a, b) => a + b, 0);
      emaLoss = Number.isNaN(emaLoss) ? r.ce : 0.98 * emaLoss + 0.02 * r.ce;
      if (o.valEvery && (step + 1) % o.valEvery === 0) valLoss = validationLoss(model, o.val, o.batchSize, o.maxValBatches ?? 8);
      const s = (Date.now() - t0) / 1000;
      o.onProgress?.({ step: step + 1, steps: o.steps, loss: emaLoss, lr, tokensPerSecond: tokens / Math.max(s, 1e-9), etaSeconds: (s / (step + 1)) * (o.steps - step - 1), valLoss: o.valEvery && (step + 1) % o.valEvery === 0 ? valLoss : undefined });
    }
  } finally {
    opt.dispose();
    full.dispose();
  }
  valLoss = validationLoss(model, o.val, o.batchSize, o.maxValBatches ?? 32);
  return { trainLoss: emaLoss, valLoss, tokens, seconds: (Date.now() - t0) / 1000 };
}

/**
 * Writes a Hugging Face model folder: config.json (`rawConfig`), model.safetensors in
 * `dtype`, and the tokenizer files from `tokenizerDir`. Experts are written per expert
 * (experts.N.gate_proj / up_proj / down_proj), the layout transformers saves.
 */
export function saveHfModel(dir: string, model: CausalLM, rawConfig: Record<string, unknown>, tokenizerDir: string, dtype: 'float32' | 'bfloat16' = 'bfloat16'): void {
  fs.mkdirSync(dir, { recursive: true });
  const tensors: Record<string, Tensor> = {};
  const temp: Tensor[] = [];
  const put = (name: string, t: Tensor) => {
    const c = dtype === 'bfloat16' && t.dtype === 'float32' ? ops.cast(t, 'bfloat16') : t;
    if (c !== t) temp.push(c);
    tensors[name] = c;
  };
  try {
    for (const [name, t] of namedWeights(model)) {
      const m = /^(model\.layers\.\d+\.mlp)\.experts\.(gate|up|down)$/.exec(name);
      if (!m) {
        put(name, t);
        continue;
      }
      const [E, R, Cc] = t.shape;
      for (let e = 0; e < E; e++) {
        const one = Tensor.empty([R, Cc]).copyFrom(t, 0, e * R * Cc, R * Cc);
        temp.push(one);
        put(`${m[1]}.experts.${e}.${m[2]}_proj.weight`, one);
      }
    }
    void isMoeLayer;
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  } finally {
    dispose(temp);
  }
  const cfg = { ...rawConfig, torch_dtype: dtype, architectures: [rawConfig.model_type === 'olmoe' ? 'OlmoeForCausalLM' : 'LlamaForCausalLM'] };
  writeFileAtomic(path.join(dir, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
    const src = path.join(tokenizerDir, f);
    if (fs.existsSync(src)) fs.copyFileSync(src, path.join(dir, f));
  }
}
