import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ArgumentError } from '../../lib/errors';
import { ConfigError, readConfig } from '../../lib/model/config';
import { Checkpoint } from '../../lib/io/safetensors';
import { GGUF_DEFAULT_ALIGNMENT, GgufTokenType, GgufType, permuteRopeRows, writeGgufFromCheckpoint } from '../../lib/io/gguf';
import { randomModel, syntheticConfig } from '../../lib/model/random';
import { saveHfModel } from '../../lib/train/pretrain';

const fixtures = path.join(__dirname, '..', 'fixtures', 'models');
const llamaDir = path.join(fixtures, 'llama');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-gguf-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// ---- a small independent GGUF reader -------------------------------------------------

interface TensorInfo { name: string; dims: number[]; type: number; offset: number }
interface Parsed {
  version: number;
  kv: Map<string, { type: number; elem?: number; value: unknown }>;
  tensors: TensorInfo[];
  dataStart: number;
  buf: Buffer;
}

function parseGguf(file: string): Parsed {
  const buf = fs.readFileSync(file);
  let p = 0;
  const u32 = () => { const v = buf.readUInt32LE(p); p += 4; return v; };
  const u64 = () => { const v = Number(buf.readBigUInt64LE(p)); p += 8; return v; };
  const str = () => { const n = u64(); const s = buf.toString('utf8', p, p + n); p += n; return s; };
  const scalar = (t: number): unknown => {
    switch (t) {
      case GgufType.UINT8: return buf.readUInt8(p++);
      case GgufType.INT8: return buf.readInt8(p++);
      case GgufType.UINT16: { const v = buf.readUInt16LE(p); p += 2; return v; }
      case GgufType.INT16: { const v = buf.readInt16LE(p); p += 2; return v; }
      case GgufType.UINT32: return u32();
      case GgufType.INT32: { const v = buf.readInt32LE(p); p += 4; return v; }
      case GgufType.FLOAT32: { const v = buf.readFloatLE(p); p += 4; return v; }
      case GgufType.BOOL: return buf.readUInt8(p++) !== 0;
      case GgufType.STRING: return str();
      case GgufType.UINT64: return u64();
      case GgufType.INT64: { const v = Number(buf.readBigInt64LE(p)); p += 8; return v; }
      case GgufType.FLOAT64: { const v = buf.readDoubleLE(p); p += 8; return v; }
      default: throw new Error(`unknown GGUF value type ${t} at byte ${p}`);
    }
  };
  expect(buf.toString('latin1', 0, 4)).toBe('GGUF');
  p = 4;
  const version = u32();
  const nTensors = u64();
  const nKv = u64();
  const kv = new Map<string, { type: number; elem?: number; value: unknown }>();
  for (let i = 0; i < nKv; i++) {
    const key = str();
    const type = u32();
    if (type === GgufType.ARRAY) {
      const elem = u32();
      const n = u64();
      const value: unknown[] = [];
      for (let j = 0; j < n; j++) value.push(scalar(elem));
      kv.set(key, { type, elem, value });
    } else kv.set(key, { type, value: scalar(type) });
  }
  const tensors: TensorInfo[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str();
    const nd = u32();
    const dims: number[] = [];
    for (let j = 0; j < nd; j++) dims.push(u64());
    tensors.push({ name, dims, type: u32(), offset: u64() });
  }
  const align = (kv.get('general.alignment')?.value as number | undefined) ?? 32;
  const dataStart = Math.ceil(p / align) * align;
  for (let i = p; i < dataStart; i++) expect(buf[i]).toBe(0);
  return { version, kv, tensors, dataStart, buf };
}

function tensorData(g: Parsed, name: string): Float32Array {
  const t = g.tensors.find((x) => x.name === name);
  if (!t) throw new Error(`no tensor ${name}`);
  const n = t.dims.reduce((a, d) => a * d, 1);
  const at = g.dataStart + t.offset;
  return new Float32Array(g.buf.buffer.slice(g.buf.byteOffset + at, g.buf.byteOffset + at + n * 4));
}

function ckData(dir: string, name: string): Float32Array {
  const t = Checkpoint.open(dir).read(name, 'float32');
  try {
    return t.toFloat32Array();
  } finally {
    t.dispose();
  }
}

/** numpy's W.reshape(H, 2, D/2, C).swapaxes(1, 2).reshape(H·D, C), by strides. */
function reshapeSwap(w: Float32Array, H: number, D: number, C: number): Float32Array {
  const half = D / 2;
  const out = new Float32Array(w.length);
  // output index [h, i, j, c] (shape H, D/2, 2, C) reads input [h, j, i, c] (shape H, 2, D/2, C)
  let o = 0;
  for (let h = 0; h < H; h++)
    for (let i = 0; i < half; i++)
      for (let j = 0; j < 2; j++)
        for (let c = 0; c < C; c++) out[o++] = w[((h * 2 + j) * half + i) * C + c];
  return out;
}

// ---- tests ----------------------------------------------------------------------------

describe('GGUF writer', () => {
  const file = path.join(tmp, 'llama.gguf');
  let g: Parsed;
  beforeAll(() => {
    writeGgufFromCheckpoint(llamaDir, file, { name: 'fixture' });
    g = parseGguf(file);
  });

  test('header and llama.* metadata follow the config', () => {
    const cfg = readConfig(llamaDir);
    expect(g.version).toBe(3);
    const val = (k: string) => g.kv.get(k)?.value;
    const type = (k: string) => g.kv.get(k)?.type;
    expect(val('general.architecture')).toBe('llama');
    expect(val('general.name')).toBe('fixture');
    expect(val('general.alignment')).toBe(GGUF_DEFAULT_ALIGNMENT);
    expect(val('general.file_type')).toBe(0);
    const u32s: [string, number][] = [
      ['llama.vocab_size', 300],
      ['llama.context_length', 256],
      ['llama.embedding_length', 64],
      ['llama.block_count', 3],
      ['llama.feed_forward_length', 96],
      ['llama.attention.head_count', 4],
      ['llama.attention.head_count_kv', 2],
      ['llama.attention.key_length', 16],
      ['llama.attention.value_length', 16],
      ['llama.rope.dimension_count', 16],
      ['tokenizer.ggml.bos_token_id', 1],
      ['tokenizer.ggml.eos_token_id', 2],
      ['tokenizer.ggml.unknown_token_id', 0],
    ];
    for (const [k, v] of u32s) {
      expect([k, val(k)]).toEqual([k, v]);
      expect([k, type(k)]).toEqual([k, GgufType.UINT32]);
    }
    expect(type('llama.rope.freq_base')).toBe(GgufType.FLOAT32);
    expect(val('llama.rope.freq_base')).toBeCloseTo(cfg.rope.theta, 3);
    expect(type('llama.attention.layer_norm_rms_epsilon')).toBe(GgufType.FLOAT32);
    expect(val('llama.attention.layer_norm_rms_epsilon') as number).toBeCloseTo(1e-6, 12);
    expect(val('tokenizer.ggml.model')).toBe('llama');
  });

  test('the synthetic vocabulary has vocab_size unique pieces with byte tokens and specials', () => {
    const tokens = g.kv.get('tokenizer.ggml.tokens')!;
    const scores = g.kv.get('tokenizer.ggml.scores')!;
    const types = g.kv.get('tokenizer.ggml.token_type')!;
    expect([tokens.elem, scores.elem, types.elem]).toEqual([GgufType.STRING, GgufType.FLOAT32, GgufType.INT32]);
    const t = tokens.value as string[], ty = types.value as number[];
    expect(t.length).toBe(300);
    expect((scores.value as number[]).length).toBe(300);
    expect(ty.length).toBe(300);
    expect(new Set(t).size).toBe(300);
    expect([t[0], t[1], t[2]]).toEqual(['<unk>', '<s>', '</s>']);
    expect([ty[0], ty[1], ty[2]]).toEqual([GgufTokenType.UNKNOWN, GgufTokenType.CONTROL, GgufTokenType.CONTROL]);
    expect(t.indexOf('<0x0A>')).toBeGreaterThan(2);
    expect(ty.filter((x) => x === GgufTokenType.BYTE).length).toBe(256);
    expect(ty[t.indexOf('▁')]).toBe(GgufTokenType.NORMAL); // text round-trips through llama.cpp's SPM tokenizer
  });

  test('tensor names, shapes (dims innermost first), types and alignment', () => {
    const names = g.tensors.map((t) => t.name);
    const expected = ['token_embd.weight', 'rope_freqs.weight', 'output_norm.weight'];
    for (let l = 0; l < 3; l++)
      for (const s of ['attn_norm', 'attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_norm', 'ffn_gate', 'ffn_up', 'ffn_down']) expected.push(`blk.${l}.${s}.weight`);
    expect([...names].sort()).toEqual([...expected].sort());
    expect(names).not.toContain('output.weight'); // tied embeddings: llama.cpp reuses token_embd
    const dims = (n: string) => g.tensors.find((t) => t.name === n)!.dims;
    expect(dims('token_embd.weight')).toEqual([64, 300]);
    expect(dims('blk.0.attn_q.weight')).toEqual([64, 64]);
    expect(dims('blk.0.attn_k.weight')).toEqual([64, 32]);
    expect(dims('blk.0.attn_v.weight')).toEqual([64, 32]);
    expect(dims('blk.0.attn_output.weight')).toEqual([64, 64]);
    expect(dims('blk.1.ffn_gate.weight')).toEqual([64, 96]);
    expect(dims('blk.1.ffn_up.weight')).toEqual([64, 96]);
    expect(dims('blk.1.ffn_down.weight')).toEqual([96, 64]);
    expect(dims('blk.2.attn_norm.weight')).toEqual([64]);
    expect(dims('rope_freqs.weight')).toEqual([8]);
    expect(g.dataStart % 32).toBe(0);
    const sorted = [...g.tensors].sort((a, b) => a.offset - b.offset);
    let end = 0;
    for (const t of sorted) {
      expect(t.type).toBe(0); // GGML_TYPE_F32
      expect(t.offset % 32).toBe(0);
      expect(t.offset).toBeGreaterThanOrEqual(end); // no overlap
      end = t.offset + t.dims.reduce((a, d) => a * d, 1) * 4;
    }
    expect(g.buf.length).toBeGreaterThanOrEqual(g.dataStart + end);
    expect(g.buf.length - (g.dataStart + end)).toBeLessThan(32);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  test('weights are copied as is, except Q/K rows permuted as the converter does', () => {
    for (const [gn, hn] of [
      ['token_embd.weight', 'model.embed_tokens.weight'],
      ['blk.1.attn_v.weight', 'model.layers.1.self_attn.v_proj.weight'],
      ['blk.2.ffn_down.weight', 'model.layers.2.mlp.down_proj.weight'],
      ['output_norm.weight', 'model.norm.weight'],
    ])
      expect(tensorData(g, gn)).toEqual(ckData(llamaDir, hn));
    for (let l = 0; l < 3; l++) {
      const q = ckData(llamaDir, `model.layers.${l}.self_attn.q_proj.weight`);
      const k = ckData(llamaDir, `model.layers.${l}.self_attn.k_proj.weight`);
      const gq = tensorData(g, `blk.${l}.attn_q.weight`), gk = tensorData(g, `blk.${l}.attn_k.weight`);
      expect(gq).toEqual(reshapeSwap(q, 4, 16, 64));
      expect(gk).toEqual(reshapeSwap(k, 2, 16, 64)); // k: permuted over the KV heads
      expect(gq).not.toEqual(q);
      expect(permuteRopeRows(q, 64, 64, 4)).toEqual(gq);
    }
  });

  test('the permutation turns HF rotate-half RoPE into llama.cpp adjacent-pair RoPE', () => {
    const Wq = ckData(llamaDir, 'model.layers.0.self_attn.q_proj.weight');
    const Wg = tensorData(g, 'blk.0.attn_q.weight');
    const H = 4, D = 16, C = 64, half = D / 2, pos = 5;
    const x = Float64Array.from({ length: C }, (_, i) => Math.sin(i * 1.7 + 0.3));
    const mv = (W: Float32Array) => Float64Array.from({ length: H * D }, (_, r) => { let s = 0; for (let c = 0; c < C; c++) s += W[r * C + c] * x[c]; return s; });
    const theta = (i: number) => pos * 10000 ** (-(2 * i) / D);
    const qh = mv(Wq), qg = mv(Wg);
    const hf = new Float64Array(H * D), gg = new Float64Array(H * D);
    for (let h = 0; h < H; h++)
      for (let i = 0; i < half; i++) {
        const c = Math.cos(theta(i)), s = Math.sin(theta(i));
        // HF: pairs (i, i + D/2)
        const a = qh[h * D + i], b = qh[h * D + half + i];
        hf[h * D + i] = a * c - b * s;
        hf[h * D + half + i] = b * c + a * s;
        // llama.cpp LLAMA_ROPE_TYPE_NORM: pairs (2i, 2i + 1)
        const u = qg[h * D + 2 * i], v = qg[h * D + 2 * i + 1];
        gg[h * D + 2 * i] = u * c - v * s;
        gg[h * D + 2 * i + 1] = v * c + u * s;
      }
    // same rotated vector, with each head's rows interleaved
    for (let h = 0; h < H; h++)
      for (let i = 0; i < half; i++)
        for (let j = 0; j < 2; j++) expect(gg[h * D + 2 * i + j]).toBeCloseTo(hf[h * D + j * half + i], 5);
  });

  test('llama3 RoPE scaling is stored as rope_freqs divisors', () => {
    const f = tensorData(g, 'rope_freqs.weight');
    // config: factor 8, low 1, high 4, original 64, theta 1e4, D 16
    const want = Array.from({ length: 8 }, (_, i) => {
      const freq = 1 / 10000 ** ((2 * i) / 16);
      const wl = (2 * Math.PI) / freq;
      if (wl < 64 / 4) return 1;
      if (wl > 64 / 1) return 8;
      const smooth = (64 / wl - 1) / (4 - 1);
      return 1 / ((1 - smooth) / 8 + smooth);
    });
    for (let i = 0; i < 8; i++) expect(f[i]).toBeCloseTo(want[i], 4);
    expect(f[0]).toBe(1);
    expect(f[7]).toBe(8);
  });

  test('untied embeddings write output.weight; default RoPE writes no rope_freqs', () => {
    const raw = { vocab_size: 260, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 4, tie_word_embeddings: false };
    const model = randomModel(syntheticConfig(raw), { seed: 3 });
    const dir = path.join(tmp, 'untied');
    try {
      saveHfModel(dir, model, { model_type: 'llama', rms_norm_eps: 1e-5, ...raw }, llamaDir, 'float32');
    } finally {
      model.dispose();
    }
    const out = path.join(tmp, 'untied.gguf');
    const r = writeGgufFromCheckpoint(dir, out);
    const u = parseGguf(out);
    expect(r.tensors.length).toBe(u.tensors.length);
    const names = u.tensors.map((t) => t.name);
    expect(names).toContain('output.weight');
    expect(names).not.toContain('rope_freqs.weight');
    expect(u.tensors.find((t) => t.name === 'output.weight')!.dims).toEqual([32, 260]);
    expect(tensorData(u, 'output.weight')).toEqual(ckData(dir, 'lm_head.weight'));
    expect((u.kv.get('tokenizer.ggml.tokens')!.value as string[]).length).toBe(260);
    expect(u.kv.get('general.name')!.value).toBe('untied');
  });

  test('bad input: non-Llama families, a sliding window, a missing folder', () => {
    expect(() => writeGgufFromCheckpoint(path.join(fixtures, 'qwen2'), path.join(tmp, 'q.gguf'))).toThrow(ConfigError);
    expect(() => writeGgufFromCheckpoint(path.join(fixtures, 'qwen2'), path.join(tmp, 'q.gguf'))).toThrow(/not a Llama-family model/);
    expect(() => writeGgufFromCheckpoint(path.join(fixtures, 'mixtral'), path.join(tmp, 'm.gguf'))).toThrow(/not a Llama-family model/);
    expect(() => writeGgufFromCheckpoint(path.join(fixtures, 'mistral'), path.join(tmp, 'm.gguf'))).toThrow(/sliding window/);
    expect(() => writeGgufFromCheckpoint(path.join(tmp, 'nope'), path.join(tmp, 'n.gguf'))).toThrow(ArgumentError);
    expect(() => writeGgufFromCheckpoint(path.join(tmp, 'nope'), path.join(tmp, 'n.gguf'))).toThrow(/does not exist/);
    expect(fs.existsSync(path.join(tmp, 'q.gguf')) || fs.existsSync(path.join(tmp, 'n.gguf'))).toBe(false);
    expect(() => permuteRopeRows(new Float32Array(12), 6, 2, 2)).toThrow(/even head size/);
  });
});
