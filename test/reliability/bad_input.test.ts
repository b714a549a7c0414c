/**
 * The bad-input catalogue (issue 9): every case feeds the engine something broken and
 * asserts a clear error — the thrown message names what was expected and what was
 * received — and no crash. Cases are grouped by surface: safetensors, config, tokenizer,
 * data, API, CLI. (The HTTP service's cases live in test/serve/.)
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Tensor, dispose, ops } from '../../lib';
import { SafetensorsFile, Checkpoint } from '../../lib/io/safetensors';
import { readConfig } from '../../lib/model/config';
import { loadTokenizer, TextTokenizer } from '../../lib/model/tokenizer';
import { loadModel } from '../../lib/model/causal_lm';
import { loadExamples } from '../../lib/train/data';
import { runCli } from '../helpers/cli';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-bad-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const fixture = path.join(__dirname, '..', 'fixtures', 'models', 'llama');

function file(name: string, content: string | Buffer): string {
  const p = path.join(tmp, name);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
  return p;
}

/** A raw safetensors file: 8-byte little-endian header length, JSON header, data. */
function safetensors(name: string, header: unknown, data: Buffer, headerLen?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLen ?? BigInt(json.length));
  return file(name, Buffer.concat([len, json, data]));
}

/** A copy of the llama fixture with one file replaced (or removed when content is null). */
function modelDir(name: string, replace: Record<string, string | Buffer | null>): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(fixture)) fs.copyFileSync(path.join(fixture, f), path.join(dir, f));
  for (const [f, c] of Object.entries(replace)) {
    if (c === null) fs.rmSync(path.join(dir, f), { force: true });
    else fs.writeFileSync(path.join(dir, f), c);
  }
  return dir;
}

function configWith(edit: (c: Record<string, unknown>) => void): string {
  const c = JSON.parse(fs.readFileSync(path.join(fixture, 'config.json'), 'utf8'));
  edit(c);
  return JSON.stringify(c);
}

const f32 = (n: number) => Buffer.alloc(4 * n);

type Case = [name: string, run: () => unknown, expected: RegExp];

async function expectClearError(run: () => unknown, expected: RegExp): Promise<void> {
  let error: unknown;
  try {
    await run();
  } catch (e) {
    error = e;
  }
  // Native errors come from the main realm, not jest's sandbox: check the shape, not instanceof.
  expect(error).toEqual(expect.objectContaining({ message: expect.any(String) }));
  expect((error as Error).message).toMatch(expected);
  expect((error as Error).message).not.toMatch(/undefined is not|cannot read propert|is not a function/i);
}

const safetensorsCases: Case[] = [
  ['file shorter than the 8-byte header length', () => SafetensorsFile.open(file('short.safetensors', Buffer.from([1, 2, 3]))), /short|8|truncated/i],
  ['header length past the end of the file', () => SafetensorsFile.open(safetensors('len.safetensors', { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32(1), 10_000n)), /header length 10000 runs past the end of the file/],
  ['absurd header length (2^60)', () => SafetensorsFile.open(safetensors('huge.safetensors', {}, f32(0), 1n << 60n)), /header length 1152921504606846976 runs past the end/],
  ['header not JSON', () => SafetensorsFile.open(safetensors('json.safetensors', '{"a": [', f32(0))), /JSON/i],
  ['header JSON not an object', () => SafetensorsFile.open(safetensors('arr.safetensors', '[1,2]', f32(0))), /object/i],
  ['unknown dtype', () => SafetensorsFile.open(safetensors('dtype.safetensors', { a: { dtype: 'Q4', shape: [1], data_offsets: [0, 4] } }, f32(1))), /unsupported dtype "Q4"/],
  ['negative dimension', () => SafetensorsFile.open(safetensors('neg.safetensors', { a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, f32(1))), /shape \[-1\] is not a list of non-negative integers/],
  ['byte length not matching dtype × shape', () => SafetensorsFile.open(safetensors('len2.safetensors', { a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(3))), /F32 shape \[3\] needs 12 bytes, data_offsets span 8/],
  ['data offsets past the end of the file', () => SafetensorsFile.open(safetensors('oob.safetensors', { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32(2))), /data_offsets \[0, 16\] are outside the data region/],
  ['overlapping tensors', () => SafetensorsFile.open(safetensors('overlap.safetensors', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, f32(3))), /overlap/i],
  ['offsets reversed', () => SafetensorsFile.open(safetensors('rev.safetensors', { a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, f32(1))), /offset/i],
  ['missing file', () => SafetensorsFile.open(path.join(tmp, 'nope.safetensors')), /nope\.safetensors/],
  ['checkpoint folder without weights', () => Checkpoint.open(fs.mkdtempSync(path.join(tmp, 'empty-'))), /safetensors/i],
  ['NaN in a weight', () => loadModel(modelDir('nan', { 'model.safetensors': nanWeights() })), /NaN|finite/i],
];

function nanWeights(): Buffer {
  const buf = fs.readFileSync(path.join(fixture, 'model.safetensors'));
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString());
  const entry = header['model.norm.weight'];
  const out = Buffer.from(buf);
  const at = 8 + headerLen + entry.data_offsets[0];
  if (entry.dtype === 'F32') out.writeFloatLE(NaN, at);
  else out.writeUInt16LE(0x7fc0, at);
  return out;
}

const configCases: Case[] = [
  ['config.json missing', () => loadModel(modelDir('nocfg', { 'config.json': null })), /config\.json/],
  ['config.json not JSON', () => loadModel(modelDir('badcfg', { 'config.json': '{ "model_type": ' })), /config\.json.*JSON|JSON.*config/i],
  ['unsupported model_type', () => loadModel(modelDir('gpt2', { 'config.json': configWith((c) => (c.model_type = 'gpt2')) })), /gpt2/],
  ['missing hidden_size', () => loadModel(modelDir('nohidden', { 'config.json': configWith((c) => delete c.hidden_size) })), /hidden_size/],
  ['heads not dividing kv heads', () => loadModel(modelDir('heads', { 'config.json': configWith((c) => (c.num_key_value_heads = 3)) })), /head/i],
  ['non-integer layer count', () => loadModel(modelDir('layers', { 'config.json': configWith((c) => (c.num_hidden_layers = 2.5)) })), /num_hidden_layers/],
  ['negative vocabulary', () => loadModel(modelDir('vocab', { 'config.json': configWith((c) => (c.vocab_size = -5)) })), /vocab_size/],
];

const tokenizerCases: Case[] = [
  ['tokenizer.json missing', () => loadModel(modelDir('notok', { 'tokenizer.json': null })), /tokenizer\.json/],
  ['tokenizer.json corrupt', () => loadTokenizer(modelDir('badtok', { 'tokenizer.json': '{"model": {"type": "BPE", "vocab": 3' })), /tokenizer/i],
  ['tokenizer.json of the wrong shape', () => loadTokenizer(modelDir('shape-tok', { 'tokenizer.json': '{"hello": 1}' })), /tokenizer/i],
];

let tok: TextTokenizer;
beforeAll(async () => {
  tok = await loadTokenizer(fixture);
});
const examples = (p: string, seqLen = 16) => loadExamples(p, tok, { seqLen });

const dataCases: Case[] = [
  ['malformed JSONL line names file:line', () => examples(file('bad.jsonl', '{"text": "ok ok ok"}\n{"text": \n')), /bad\.jsonl:2/],
  ['empty dataset', () => examples(file('empty.txt', '')), /empty|no examples|no text/i],
  ['JSONL line without a text field', () => examples(file('field.jsonl', '{"body": "x"}\n')), /field\.jsonl:1/],
  ['missing data path', () => examples(path.join(tmp, 'nothing.txt')), /nothing\.txt/],
  ['sequence length too short', () => examples(file('ok.txt', 'some text here'), 1), /seqLen.*>= 2.*received 1/],
];

const apiCases: Case[] = [
  ['tensor shape not matching the data', () => Tensor.from([1, 2, 3], [2, 2]), /shape \[2, 2\] needs 4 values, received 3/],
  ['negative dimension', () => Tensor.empty([2, -1]), /non-negative integer dimensions/],
  ['absurd tensor size', () => Tensor.empty([2 ** 30, 2 ** 30]), /too many elements/],
  ['int32 tensor from fractional data', () => Tensor.from([1.5], [1], 'int32'), /non-int32 value 1\.5/],
  ['unknown dtype', () => Tensor.empty([1], 'float16' as never), /unknown dtype 'float16'/],
  ['matmul with mismatched inner sizes', () => withTensors([[2, 3], [4, 5]], (a, b) => ops.matmul(a, b)), /'b' expected shape \[K, N\] = \[3, \*\], received \[4, 5\]/],
  ['embedding id out of range', () => withTensors([[5, 4]], (table) => ops.embedding(Tensor.from(new Int32Array([0, 7]), [2], 'int32'), table)), /expected values in \[0, V\) = \[0, 5\), received ids\[1\] = 7/],
  ['gather index out of range', () => withTensors([[3, 2]], (x) => ops.gatherRows(x, Tensor.from(new Int32Array([3]), [1], 'int32'))), /out of range/],
  ['tensor used after dispose', () => {
    const t = Tensor.from([1, 2]);
    t.dispose();
    return t.toFloat32Array();
  }, /used after dispose/],
  ['model used after dispose', async () => {
    const m = await loadModel(fixture);
    m.dispose();
    return m.logits([1, 2]);
  }, /dispos/i],
  ['token id past the vocabulary', async () => {
    const m = await loadModel(fixture);
    try {
      return await m.logits([1, 10_000_000]);
    } finally {
      m.dispose();
    }
  }, /10000000|out of range|vocab/i],
  ['empty prompt', async () => {
    const m = await loadModel(fixture);
    try {
      return await m.logits([]);
    } finally {
      m.dispose();
    }
  }, /empty|at least one/i],
];

function withTensors(shapes: number[][], fn: (...t: Tensor[]) => unknown): unknown {
  const ts = shapes.map((s) => Tensor.zeros(s));
  try {
    return fn(...ts);
  } finally {
    dispose(ts);
  }
}

const cliCases: Case[] = [
  ['unknown command', () => cliError(['frobnicate']), /frobnicate/],
  ['unknown flag', () => cliError(['info', '--nope']), /--nope/],
  ['missing model folder', () => cliError(['logits', '--model', path.join(tmp, 'absent'), '--ids', '1', '--json']), /absent/],
  ['flag without its value', () => cliError(['generate', '--model', fixture, '--prompt']), /--prompt/],
  ['non-numeric integer flag', () => cliError(['generate', '--model', fixture, '--prompt', 'hi', '--max-tokens', 'many']), /--max-tokens/],
  ['missing data file for tune', () => cliError(['tune', '--model', fixture, '--data', path.join(tmp, 'gone.txt')]), /gone\.txt/],
];

/** Runs the CLI and throws its stderr as an error when the exit code is 2 (bad usage/input); no stack traces. */
async function cliError(argv: string[]): Promise<never> {
  const r = await runCli(argv);
  if (r.code !== 2) throw new Error(`expected exit code 2, got ${r.code}: ${r.err}`);
  if (/\n\s+at /.test(r.err)) throw new Error(`stack trace printed for a user error: ${r.err}`);
  throw new Error(r.err);
}

const groups: [string, Case[]][] = [
  ['safetensors', safetensorsCases],
  ['config', configCases],
  ['tokenizer', tokenizerCases],
  ['data', dataCases],
  ['API', apiCases],
  ['CLI', cliCases],
];

test('the catalogue holds at least 40 cases', () => {
  expect(groups.reduce((n, [, cases]) => n + cases.length, 0)).toBeGreaterThanOrEqual(40);
});

for (const [group, cases] of groups) {
  describe(`bad input: ${group}`, () => {
    test.each(cases.map((c) => [c[0], c] as const))('%s', async (_name, c) => {
      await expectClearError(c[1], c[2]);
    });
  });
}
