/**
 * Load suite: time and peak resident memory to load a synthetic ~0.5B-parameter
 * Llama-shaped checkpoint stored as sharded bf16 safetensors. The checkpoint is made once
 * into a cache folder (RT_BENCH_CACHE, default <tmp>/router-tuning-bench); the load runs
 * in a fresh child process so its peak RSS is the loader's alone.
 * Target: peak RSS ≤ 1.3 × the in-memory size of the loaded weights.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { CaseResult } from './harness';

const CONFIG = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 32000,
  hidden_size: 1024,
  intermediate_size: 2816,
  num_hidden_layers: 32,
  num_attention_heads: 16,
  num_key_value_heads: 16,
  max_position_embeddings: 4096,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
};

function tensorList(): [string, number[]][] {
  const C = CONFIG.hidden_size, I = CONFIG.intermediate_size, V = CONFIG.vocab_size;
  const list: [string, number[]][] = [['model.embed_tokens.weight', [V, C]]];
  for (let l = 0; l < CONFIG.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    list.push([`${p}.input_layernorm.weight`, [C]], [`${p}.post_attention_layernorm.weight`, [C]]);
    for (const n of ['q', 'k', 'v', 'o']) list.push([`${p}.self_attn.${n}_proj.weight`, [C, C]]);
    list.push([`${p}.mlp.gate_proj.weight`, [I, C]], [`${p}.mlp.up_proj.weight`, [I, C]], [`${p}.mlp.down_proj.weight`, [C, I]]);
  }
  list.push(['model.norm.weight', [C]], ['lm_head.weight', [V, C]]);
  return list;
}

/** Writes the synthetic checkpoint (4 shards + index) unless it is already there. */
export function ensureSyntheticCheckpoint(dir: string, log: (s: string) => void): { params: number; bytes: number } {
  const tensors = tensorList();
  const params = tensors.reduce((s, [, sh]) => s + sh.reduce((a, b) => a * b, 1), 0);
  const bytes = params * 2;
  const marker = path.join(dir, '.complete');
  if (fs.existsSync(marker)) return { params, bytes };
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  log(`writing a synthetic ${(params / 1e6).toFixed(0)}M-parameter bf16 checkpoint to ${dir} …`);
  const shards = 4;
  const perShard = Math.ceil(tensors.length / shards);
  const weightMap: Record<string, string> = {};
  // A block of small finite bf16 values, reused as every tensor's data.
  const block = Buffer.alloc(1 << 20);
  for (let i = 0; i < block.length; i += 2) block.writeUInt16LE(0x3c00 + ((i * 7919) % 512), i);
  for (let s = 0; s < shards; s++) {
    const part = tensors.slice(s * perShard, (s + 1) * perShard);
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    let off = 0;
    for (const [name, shape] of part) {
      const n = shape.reduce((a, b) => a * b, 1) * 2;
      header[name] = { dtype: 'BF16', shape, data_offsets: [off, off + n] };
      off += n;
      weightMap[name] = file;
    }
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - (json.length % 8)) % 8);
    const fd = fs.openSync(path.join(dir, file), 'w');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    fs.writeSync(fd, len);
    fs.writeSync(fd, json);
    for (let left = off; left > 0; left -= block.length) fs.writeSync(fd, block, 0, Math.min(block.length, left));
    fs.closeSync(fd);
  }
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: bytes }, weight_map: weightMap }));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(CONFIG, null, 2));
  fs.writeFileSync(marker, '');
  return { params, bytes };
}

export function runLoadSuite(log: (s: string) => void): CaseResult[] {
  const dir = path.join(process.env.RT_BENCH_CACHE ?? path.join(os.tmpdir(), 'router-tuning-bench'), 'synthetic-0.5b-bf16');
  const { params, bytes } = ensureSyntheticCheckpoint(dir, log);
  const lib = path.join(__dirname, '..', 'lib');
  const script = `
    const { loadModel, backendInfo } = require(${JSON.stringify(lib)});
    const t0 = process.hrtime.bigint();
    loadModel(${JSON.stringify(dir)}, { noTokenizer: true }).then((m) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const weightBytes = backendInfo().memory.allocatedBytes;
      process.stdout.write(JSON.stringify({ seconds, weightBytes, maxRssBytes: process.resourceUsage().maxRSS * 1024 }));
      m.dispose();
    });`;
  const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { env: process.env, maxBuffer: 1 << 20 }).toString());
  const ratio = out.maxRssBytes / out.weightBytes;
  log(`  loaded ${(params / 1e6).toFixed(0)}M params (${(bytes / 2 ** 30).toFixed(2)} GiB bf16) in ${out.seconds.toFixed(2)} s, peak RSS ${(out.maxRssBytes / 2 ** 30).toFixed(2)} GiB = ${ratio.toFixed(3)}× the weights`);
  return [
    { suite: 'load', name: `load ${(params / 1e6).toFixed(0)}M bf16 sharded: seconds`, value: out.seconds, unit: 's', fraction: NaN, seconds: out.seconds },
    { suite: 'load', name: 'load throughput', value: bytes / out.seconds / 1e9, unit: 'GB/s', fraction: NaN, seconds: out.seconds },
    { suite: 'load', name: 'peak RSS / loaded weight bytes', value: ratio, unit: 'x', fraction: NaN, target: 1.3, seconds: out.seconds, lowerIsBetter: true },
  ];
}
