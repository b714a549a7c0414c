#!/usr/bin/env node
// Recipe for the embedded base models, trained from scratch by the project's own engine
// (full-parameter backward + AdamW on the same kernels). Needs `npm run build`, the
// corpus (scripts/corpus/prepare.js) and the tokenizer (scripts/corpus/train_tokenizer.py).
//
//   node scripts/models/train-base.js --model dense --minutes 15
//   node scripts/models/train-base.js --model moe --minutes 10
//
// Writes models/<name>/ (config.json, bf16 model.safetensors, tokenizer files) and appends
// the run's log to scripts/models/<name>-training.txt.
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..', '..');
const lib = require(path.join(root, 'dist', 'lib'));
const { pretrain, saveHfModel } = require(path.join(root, 'dist', 'lib', 'train', 'pretrain'));

const CONFIGS = {
  dense: {
    model_type: 'llama', vocab_size: 4096, hidden_size: 256, intermediate_size: 704, num_hidden_layers: 8,
    num_attention_heads: 8, num_key_value_heads: 4, max_position_embeddings: 2048, rms_norm_eps: 1e-5,
    rope_theta: 10000, tie_word_embeddings: true, eos_token_id: 0, pad_token_id: 1,
  },
  moe: {
    model_type: 'olmoe', vocab_size: 4096, hidden_size: 256, intermediate_size: 256, num_experts: 8,
    num_experts_per_tok: 2, norm_topk_prob: false, num_hidden_layers: 6, num_attention_heads: 8,
    num_key_value_heads: 8, max_position_embeddings: 2048, rms_norm_eps: 1e-5, rope_theta: 10000,
    tie_word_embeddings: false, eos_token_id: 0, pad_token_id: 1,
  },
};

function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}

async function main() {
  const name = arg('model', 'dense');
  const raw = CONFIGS[name];
  if (!raw) throw new Error(`--model expected ${Object.keys(CONFIGS).join(' or ')}`);
  const minutes = Number(arg('minutes', '15'));
  const seqLen = Number(arg('seq-len', '256'));
  const batchSize = Number(arg('batch-size', '16'));
  const lr = Number(arg('lr', '3e-3'));
  const seed = Number(arg('seed', '1'));
  const tokDir = path.join(root, 'models', 'tokenizer');
  const tok = lib.loadTokenizer(tokDir);
  const corpus = path.join(root, 'data', 'corpus');
  const opts = { seqLen, eosId: 0 };
  const train = lib.loadExamples(path.join(corpus, 'train.txt'), tok, opts).examples;
  const val = lib.loadExamples(path.join(corpus, 'validation.txt'), tok, opts).examples;
  const cfg = lib.syntheticConfig(raw);
  const model = lib.randomModel(cfg, { seed, init: 'pretrain' });
  // Steps from the time budget: measure one step first.
  const { forwardBackward, FullGrads } = require(path.join(root, 'dist', 'lib', 'train', 'backprop'));
  const probe = new lib.BatchStream(train, { batchSize, seed }).next();
  const full = new FullGrads();
  const t0 = Date.now();
  forwardBackward(model, probe, { fullParams: full });
  const stepSeconds = (Date.now() - t0) / 1000;
  full.dispose();
  const steps = Math.max(10, Math.floor((minutes * 60) / (stepSeconds * 1.08)));
  const logFile = path.join(__dirname, `${name}-training.txt`);
  const log = (s) => {
    process.stderr.write(s + '\n');
    fs.appendFileSync(logFile, s + '\n');
  };
  log(`# ${new Date().toISOString()} train ${name}: ${JSON.stringify(raw)}`);
  log(`# train ${train.length} sequences of ${seqLen}, validation ${val.length}; batch ${batchSize}; lr ${lr}; step ${stepSeconds.toFixed(2)} s → ${steps} steps (${minutes} min budget)`);
  const r = await pretrain(model, {
    train, val, steps, lr, batchSize, seed, valEvery: Math.max(50, Math.floor(steps / 8)), maxValBatches: 8,
    onProgress: (p) => {
      if (p.valLoss !== undefined || p.step % 25 === 0 || p.step === p.steps)
        log(`step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)} lr ${p.lr.toExponential(2)} ${p.tokensPerSecond.toFixed(0)} tok/s${p.valLoss !== undefined ? ` val ${p.valLoss.toFixed(4)} (ppl ${Math.exp(p.valLoss).toFixed(1)})` : ''}`);
    },
  });
  log(`# done: ${r.tokens} tokens in ${r.seconds.toFixed(0)} s; train loss ${r.trainLoss.toFixed(4)}; validation loss ${r.valLoss.toFixed(4)} (ppl ${Math.exp(r.valLoss).toFixed(2)})`);
  const out = path.join(root, 'models', name);
  saveHfModel(out, model, raw, tokDir, 'bfloat16');
  log(`# saved ${out}`);
  model.dispose();
}

main().catch((e) => {
  process.stderr.write(`train-base: ${e.stack || e}\n`);
  process.exit(1);
});
