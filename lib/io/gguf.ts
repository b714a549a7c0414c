/**
 * GGUF v3 writer for Llama-family checkpoints: a Hugging Face checkpoint folder
 * (config.json + *.safetensors) → one GGUF file with float32 tensors that llama.cpp
 * loads as architecture 'llama' (what llama.cpp's convert_hf_to_gguf.py writes for
 * LlamaForCausalLM / MistralForCausalLM, --outtype f32).
 *
 * Layout (little-endian; gguf-py's GGUFWriter):
 *   u32 magic "GGUF" | u32 version 3 | u64 tensor count | u64 metadata count
 *   metadata: { string key, u32 value type, value }*   (string = u64 length + UTF-8 bytes;
 *             array = u32 element type, u64 count, elements)
 *   tensor infos: { string name, u32 n_dims, u64 dims[n_dims] (innermost first: the reverse
 *                   of the row-major shape), u32 ggml type (F32 = 0), u64 offset }*
 *   zero padding to general.alignment (32), then the data region; every tensor starts at its
 *   offset from the region's start, a multiple of the alignment, and is padded to it.
 *
 * Tensors: token_embd, output_norm, output (absent when the embeddings are tied: llama.cpp
 * then reuses token_embd), rope_freqs (llama3 RoPE scaling: per-frequency divisors), and
 * blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up,
 * ffn_down}.weight (+ .bias where the checkpoint has biases).
 *
 * Q/K rows: Hugging Face Llama checkpoints rotate the halves of each head (rotate_half:
 * pairs (i, i + D/2)); llama.cpp's LLM_ARCH_LLAMA rotates adjacent pairs (2i, 2i + 1). The
 * converter therefore permutes the rows of q_proj and k_proj (and their biases) per head:
 *   W.reshape(H, 2, D/2, C).swapaxes(1, 2).reshape(H·D, C)
 * i.e. GGUF row h·D + 2i + j is HF row h·D + j·D/2 + i (H = KV heads for k_proj).
 *
 * Vocabulary: the checkpoint's tokenizer is not carried over. A synthetic SentencePiece-style
 * ('llama') vocabulary of exactly vocab_size tokens is written: <unk>, <s>, </s> on the
 * config's special ids, the 256 byte tokens <0x00>…<0xFF>, the piece '▁', then placeholder
 * pieces (text encodes as bytes and round-trips; nothing merges into the placeholders). It is
 * meant for running the weights on token ids (benches, parity checks), not for text.
 *
 * The file is assembled in memory and written atomically (lib/util/atomic.ts), so it must
 * fit in one Buffer (4 GiB on Node 20: ~1B float32 parameters).
 */
import * as fs from 'fs';
import * as path from 'path';
import { constants as bufferConstants } from 'buffer';
import { ArgumentError } from '../errors';
import { ConfigError, ModelConfig, readConfig } from '../model/config';
import { writeFileAtomic } from '../util/atomic';
import { Checkpoint, StEntry, SafetensorsError, readEntry } from './safetensors';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml tensor type of every tensor written (GGML_TYPE_F32). */
export const GGML_TYPE_F32 = 0;
/** general.file_type LLAMA_FTYPE_ALL_F32. */
export const LLAMA_FTYPE_ALL_F32 = 0;

/** GGUF metadata value types (gguf-py GGUFValueType). */
export enum GgufType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** llama.cpp token types (gguf-py TokenType). */
export enum GgufTokenType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

/** Families llama.cpp's converter maps to architecture 'llama' (mistral: without a sliding window). */
const GGUF_LLAMA_FAMILIES = ['llama', 'mistral'];

export interface GgufWriteOptions {
  /** general.name (default: the checkpoint folder's name). */
  name?: string;
  /** Progress lines (one per written stage). */
  log?: (s: string) => void;
}

export interface GgufWriteResult {
  file: string;
  bytes: number;
  tensors: { name: string; shape: number[] }[];
  vocabSize: number;
}

type KvValue =
  | { type: GgufType.UINT32 | GgufType.INT32 | GgufType.FLOAT32; value: number }
  | { type: GgufType.BOOL; value: boolean }
  | { type: GgufType.STRING; value: string }
  | { type: GgufType.ARRAY; elem: GgufType.STRING; value: string[] }
  | { type: GgufType.ARRAY; elem: GgufType.FLOAT32; value: Float32Array }
  | { type: GgufType.ARRAY; elem: GgufType.INT32; value: Int32Array };

/** Growable little-endian byte writer for the header. */
class ByteWriter {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }
  i32(v: number): void {
    this.ensure(4);
    this.buf.writeInt32LE(v, this.length);
    this.length += 4;
  }
  u64(v: number): void {
    this.ensure(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  f32(v: number): void {
    this.ensure(4);
    this.buf.writeFloatLE(v, this.length);
    this.length += 4;
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf.writeUInt8(v, this.length);
    this.length += 1;
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.ensure(b.length);
    b.copy(this.buf, this.length);
    this.length += b.length;
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function writeKv(w: ByteWriter, key: string, v: KvValue): void {
  w.str(key);
  w.u32(v.type);
  switch (v.type) {
    case GgufType.UINT32:
      w.u32(v.value);
      break;
    case GgufType.INT32:
      w.i32(v.value);
      break;
    case GgufType.FLOAT32:
      w.f32(v.value);
      break;
    case GgufType.BOOL:
      w.u8(v.value ? 1 : 0);
      break;
    case GgufType.STRING:
      w.str(v.value);
      break;
    case GgufType.ARRAY:
      w.u32(v.elem);
      w.u64(v.value.length);
      if (v.elem === GgufType.STRING) for (const s of v.value as string[]) w.str(s);
      else if (v.elem === GgufType.FLOAT32) for (const x of v.value as Float32Array) w.f32(x);
      else for (const x of v.value as Int32Array) w.i32(x);
      break;
  }
}

const pad = (n: number, align: number) => Math.ceil(n / align) * align;

/**
 * The HF → GGUF row permutation of a q_proj / k_proj weight [rows = nHead·D, cols] (or a
 * bias: cols = 1): GGUF row h·D + 2i + j ← HF row h·D + j·D/2 + i.
 */
export function permuteRopeRows(src: Float32Array, rows: number, cols: number, nHead: number): Float32Array {
  if (src.length !== rows * cols) throw new ArgumentError(`permuteRopeRows: expected ${rows}×${cols} = ${rows * cols} values, received ${src.length}`);
  const D = rows / nHead;
  if (!Number.isInteger(D) || D % 2 !== 0)
    throw new ArgumentError(`permuteRopeRows: ${rows} rows are not ${nHead} heads of an even head size`);
  const half = D / 2;
  const out = new Float32Array(src.length);
  for (let h = 0; h < nHead; h++)
    for (let i = 0; i < half; i++)
      for (let j = 0; j < 2; j++) {
        const from = h * D + j * half + i, to = h * D + 2 * i + j;
        out.set(src.subarray(from * cols, (from + 1) * cols), to * cols);
      }
  return out;
}

/**
 * llama3 RoPE scaling as llama.cpp stores it (rope_freqs.weight [D/2]): per frequency, the
 * divisor applied to base^(−2i/D) (convert_hf_to_gguf.py LlamaModel.generate_extra_tensors).
 */
export function llama3RopeFactors(cfg: ModelConfig): Float32Array {
  const r = cfg.rope;
  const D = cfg.headDim;
  const factor = r.factor ?? 8, low = r.lowFreqFactor ?? 1, high = r.highFreqFactor ?? 4;
  const oldCtx = r.originalMaxPositionEmbeddings ?? 8192;
  const lowWavelen = oldCtx / low, highWavelen = oldCtx / high;
  const out = new Float32Array(D / 2);
  for (let i = 0; i < D / 2; i++) {
    const freq = Math.fround(1 / Math.fround(r.theta ** Math.fround((2 * i) / D)));
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = factor;
    else {
      const smooth = (oldCtx / wavelen - low) / (high - low);
      out[i] = 1 / ((1 - smooth) / factor + smooth);
    }
  }
  return out;
}

/** The synthetic 'llama' (SentencePiece) vocabulary: exactly cfg.vocabSize unique pieces. */
export function syntheticVocab(cfg: ModelConfig): { tokens: string[]; scores: Float32Array; types: Int32Array; bos: number; eos: number; unk?: number } {
  const V = cfg.vocabSize;
  const bos = cfg.bosTokenId ?? 1;
  const eos = cfg.eosTokenIds[0] ?? 2;
  for (const [what, id] of [['bos_token_id', bos], ['eos_token_id', eos]] as const)
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new ConfigError(`GGUF: ${what} ${id} is outside the vocabulary (vocab_size ${V})`);
  const tokens = new Array<string>(V);
  const types = new Int32Array(V).fill(GgufTokenType.NORMAL);
  const scores = new Float32Array(V);
  tokens[bos] = '<s>';
  types[bos] = GgufTokenType.CONTROL;
  if (eos !== bos) {
    tokens[eos] = '</s>';
    types[eos] = GgufTokenType.CONTROL;
  }
  let eosN = 0;
  for (const e of cfg.eosTokenIds.slice(1))
    if (Number.isInteger(e) && e >= 0 && e < V && tokens[e] === undefined) {
      tokens[e] = `<eos_${++eosN}>`;
      types[e] = GgufTokenType.CONTROL;
    }
  let unk: number | undefined;
  if (tokens[0] === undefined) {
    unk = 0;
    tokens[0] = '<unk>';
    types[0] = GgufTokenType.UNKNOWN;
  }
  let byte = 0, space = false;
  for (let i = 0; i < V; i++) {
    if (tokens[i] !== undefined) continue;
    if (byte < 256) {
      tokens[i] = `<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`;
      types[i] = GgufTokenType.BYTE;
      byte++;
    } else if (!space) {
      // the word-boundary piece: without it '▁' falls back to its UTF-8 bytes and text does not round-trip
      tokens[i] = '▁';
      space = true;
    } else {
      tokens[i] = `▁t${i}`;
      scores[i] = -i;
    }
  }
  return { tokens, scores, types, bos, eos, unk };
}

interface PlannedTensor {
  name: string;
  /** Row-major shape (as in the checkpoint); written reversed in the tensor info. */
  shape: number[];
  /** Where the values come from: a checkpoint entry, or computed values. */
  entry?: StEntry;
  values?: Float32Array;
  /** Q/K row permutation: heads of the projection. */
  permuteHeads?: number;
  offset: number;
  bytes: number;
}

/**
 * Converts the Llama-family checkpoint folder `dir` to a GGUF f32 file at `file` (written
 * atomically). Throws ConfigError for families llama.cpp does not run as 'llama', and
 * SafetensorsError for missing or misshapen tensors.
 */
export function writeGgufFromCheckpoint(dir: string, file: string, opts: GgufWriteOptions = {}): GgufWriteResult {
  if (!fs.existsSync(dir)) throw new ArgumentError(`writeGguf: model folder ${dir} does not exist`);
  const cfg = readConfig(dir);
  if (!GGUF_LLAMA_FAMILIES.includes(cfg.family))
    throw new ConfigError(
      `writeGguf: model_type "${cfg.family}" is not a Llama-family model; the GGUF writer supports ${GGUF_LLAMA_FAMILIES.join(', ')} (llama.cpp architecture 'llama')`,
    );
  if (cfg.slidingWindow.some((w) => w !== null))
    throw new ConfigError(`writeGguf: ${cfg.family} with a sliding window is not supported (llama.cpp's 'llama' architecture attends to the full context)`);
  if (cfg.qkNorm !== 'none' || cfg.clipQkv !== undefined || cfg.moe)
    throw new ConfigError(`writeGguf: q/k norms, clip_qkv and MoE layers are not supported by the 'llama' GGUF writer`);
  if (cfg.headDim % 2 !== 0) throw new ConfigError(`writeGguf: head_dim ${cfg.headDim} is odd; RoPE needs an even head size`);
  const log = opts.log ?? (() => {});
  const ck = Checkpoint.open(dir);

  const C = cfg.hiddenSize, I = cfg.intermediateSize, V = cfg.vocabSize, D = cfg.headDim;
  const Hq = cfg.numHeads, Hkv = cfg.numKvHeads;
  const plan: PlannedTensor[] = [];
  const add = (name: string, hf: string, shape: number[], permuteHeads?: number) => {
    const entry = ck.entry(hf);
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i]))
      throw new SafetensorsError(`${dir}: tensor '${hf}' has shape [${entry.shape.join(', ')}], the config implies [${shape.join(', ')}]`);
    plan.push({ name, shape, entry, permuteHeads, offset: 0, bytes: 0 });
  };
  const addOpt = (name: string, hf: string, shape: number[], permuteHeads?: number) => {
    if (ck.has(hf)) add(name, hf, shape, permuteHeads);
  };

  add('token_embd.weight', 'model.embed_tokens.weight', [V, C]);
  if (cfg.rope.type === 'llama3') plan.push({ name: 'rope_freqs.weight', shape: [D / 2], values: llama3RopeFactors(cfg), offset: 0, bytes: 0 });
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`, b = `blk.${l}`;
    add(`${b}.attn_norm.weight`, `${p}.input_layernorm.weight`, [C]);
    add(`${b}.attn_q.weight`, `${p}.self_attn.q_proj.weight`, [Hq * D, C], Hq);
    add(`${b}.attn_k.weight`, `${p}.self_attn.k_proj.weight`, [Hkv * D, C], Hkv);
    add(`${b}.attn_v.weight`, `${p}.self_attn.v_proj.weight`, [Hkv * D, C]);
    add(`${b}.attn_output.weight`, `${p}.self_attn.o_proj.weight`, [C, Hq * D]);
    if (cfg.qkvBias) {
      add(`${b}.attn_q.bias`, `${p}.self_attn.q_proj.bias`, [Hq * D], Hq);
      add(`${b}.attn_k.bias`, `${p}.self_attn.k_proj.bias`, [Hkv * D], Hkv);
      add(`${b}.attn_v.bias`, `${p}.self_attn.v_proj.bias`, [Hkv * D]);
    }
    if (cfg.oBias) addOpt(`${b}.attn_output.bias`, `${p}.self_attn.o_proj.bias`, [C]);
    add(`${b}.ffn_norm.weight`, `${p}.post_attention_layernorm.weight`, [C]);
    add(`${b}.ffn_gate.weight`, `${p}.mlp.gate_proj.weight`, [I, C]);
    add(`${b}.ffn_up.weight`, `${p}.mlp.up_proj.weight`, [I, C]);
    add(`${b}.ffn_down.weight`, `${p}.mlp.down_proj.weight`, [C, I]);
    if (cfg.mlpBias) {
      add(`${b}.ffn_gate.bias`, `${p}.mlp.gate_proj.bias`, [I]);
      add(`${b}.ffn_up.bias`, `${p}.mlp.up_proj.bias`, [I]);
      add(`${b}.ffn_down.bias`, `${p}.mlp.down_proj.bias`, [C]);
    }
  }
  add('output_norm.weight', 'model.norm.weight', [C]);
  // tied embeddings: no output tensor; llama.cpp falls back to token_embd (as the converter writes it)
  if (!cfg.tieWordEmbeddings) add('output.weight', 'lm_head.weight', [V, C]);

  // metadata
  const vocab = syntheticVocab(cfg);
  const u32 = (value: number): KvValue => ({ type: GgufType.UINT32, value });
  const f32 = (value: number): KvValue => ({ type: GgufType.FLOAT32, value });
  const str = (value: string): KvValue => ({ type: GgufType.STRING, value });
  const kv: [string, KvValue][] = [
    ['general.architecture', str('llama')],
    ['general.name', str(opts.name ?? path.basename(path.resolve(dir)))],
    ['general.alignment', u32(GGUF_DEFAULT_ALIGNMENT)],
    ['general.file_type', u32(LLAMA_FTYPE_ALL_F32)],
    ['llama.vocab_size', u32(V)],
    ['llama.context_length', u32(cfg.maxPositionEmbeddings)],
    ['llama.embedding_length', u32(C)],
    ['llama.block_count', u32(cfg.numLayers)],
    ['llama.feed_forward_length', u32(I)],
    ['llama.attention.head_count', u32(Hq)],
    ['llama.attention.head_count_kv', u32(Hkv)],
    ['llama.attention.key_length', u32(D)],
    ['llama.attention.value_length', u32(D)],
    ['llama.attention.layer_norm_rms_epsilon', f32(cfg.rmsNormEps)],
    ['llama.rope.dimension_count', u32(D)],
    ['llama.rope.freq_base', f32(cfg.rope.theta)],
  ];
  if (cfg.rope.type === 'linear') {
    kv.push(['llama.rope.scaling.type', str('linear')]);
    kv.push(['llama.rope.scaling.factor', f32(cfg.rope.factor ?? 1)]);
  }
  kv.push(
    ['tokenizer.ggml.model', str('llama')],
    ['tokenizer.ggml.tokens', { type: GgufType.ARRAY, elem: GgufType.STRING, value: vocab.tokens }],
    ['tokenizer.ggml.scores', { type: GgufType.ARRAY, elem: GgufType.FLOAT32, value: vocab.scores }],
    ['tokenizer.ggml.token_type', { type: GgufType.ARRAY, elem: GgufType.INT32, value: vocab.types }],
    ['tokenizer.ggml.bos_token_id', u32(vocab.bos)],
    ['tokenizer.ggml.eos_token_id', u32(vocab.eos)],
  );
  if (vocab.unk !== undefined) kv.push(['tokenizer.ggml.unknown_token_id', u32(vocab.unk)]);

  // layout: offsets relative to the data region, each padded to the alignment
  const align = GGUF_DEFAULT_ALIGNMENT;
  let dataBytes = 0;
  for (const t of plan) {
    t.bytes = t.shape.reduce((a, d) => a * d, 1) * 4;
    t.offset = dataBytes;
    dataBytes += pad(t.bytes, align);
  }
  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(GGUF_VERSION);
  w.u64(plan.length);
  w.u64(kv.length);
  for (const [k, v] of kv) writeKv(w, k, v);
  for (const t of plan) {
    w.str(t.name);
    w.u32(t.shape.length);
    for (let j = t.shape.length - 1; j >= 0; j--) w.u64(t.shape[j]);
    w.u32(GGML_TYPE_F32);
    w.u64(t.offset);
  }
  const header = w.bytes();
  const dataStart = pad(header.length, align);
  const total = dataStart + dataBytes;
  if (total > bufferConstants.MAX_LENGTH)
    throw new ArgumentError(`writeGguf: the GGUF file would be ${total} bytes, more than this runtime's largest buffer (${bufferConstants.MAX_LENGTH} bytes)`);
  log(`  GGUF: ${plan.length} tensors, ${(total / 2 ** 20).toFixed(1)} MiB → ${file}`);
  const out = Buffer.alloc(total);
  header.copy(out, 0);

  const fds = new Map<string, number>();
  try {
    for (const t of plan) {
      const at = dataStart + t.offset;
      if (t.values) {
        Buffer.from(t.values.buffer, t.values.byteOffset, t.values.byteLength).copy(out, at);
        continue;
      }
      const e = t.entry!;
      let vals: Float32Array | undefined;
      if (e.dtype === 'F32') {
        let fd = fds.get(e.file);
        if (fd === undefined) fds.set(e.file, (fd = fs.openSync(e.file, 'r')));
        let got = 0;
        while (got < t.bytes) {
          const r = fs.readSync(fd, out, at + got, t.bytes - got, e.begin + got);
          if (r === 0) throw new SafetensorsError(`${e.file}: tensor '${e.name}' is truncated (file ended early)`);
          got += r;
        }
        if (t.permuteHeads) vals = new Float32Array(out.buffer, out.byteOffset + at, t.bytes / 4).slice();
      } else {
        const tensor = readEntry(e, 'float32');
        try {
          vals = tensor.toFloat32Array();
        } finally {
          tensor.dispose();
        }
      }
      if (t.permuteHeads) {
        const rows = t.shape[0], cols = t.shape.length > 1 ? t.shape[1] : 1;
        vals = permuteRopeRows(vals!, rows, cols, t.permuteHeads);
      }
      if (vals) Buffer.from(vals.buffer, vals.byteOffset, vals.byteLength).copy(out, at);
    }
  } finally {
    for (const fd of fds.values()) fs.closeSync(fd);
  }
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  writeFileAtomic(file, out);
  return { file, bytes: total, tensors: plan.map((t) => ({ name: t.name, shape: t.shape })), vocabSize: V };
}
