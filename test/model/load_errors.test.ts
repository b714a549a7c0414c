import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadModel } from '../../lib/model/causal_lm';
import { Checkpoint, writeSafetensors } from '../../lib/io/safetensors';
import { Tensor, dispose } from '../../lib';
import { runCli } from '../helpers/cli';

const fixture = path.join(__dirname, '..', 'fixtures', 'models', 'qwen2');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-load-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of the fixture whose weights are edited by `edit` (name → tensor map). */
function variant(name: string, edit?: (t: Record<string, Tensor>) => void, drop: string[] = []): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const f of fs.readdirSync(fixture)) if (!drop.includes(f)) fs.copyFileSync(path.join(fixture, f), path.join(dir, f));
  if (edit) {
    const ck = Checkpoint.open(fixture);
    const tensors: Record<string, Tensor> = {};
    for (const n of ck.entries.keys()) tensors[n] = ck.read(n);
    edit(tensors);
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    dispose(Object.values(tensors));
  }
  return dir;
}

describe('loading bad model folders', () => {
  test('tensor missing for the config', async () => {
    const dir = variant('missing-tensor', (t) => {
      t['model.layers.1.self_attn.k_proj.bias'].dispose();
      delete t['model.layers.1.self_attn.k_proj.bias'];
    });
    await expect(loadModel(dir)).rejects.toThrow(/tensor 'model.layers.1.self_attn.k_proj.bias' \(shape \[32\]\) is missing from the checkpoint/);
  });

  test('shape not matching the config', async () => {
    const dir = variant('bad-shape', (t) => {
      t['model.layers.0.mlp.up_proj.weight'].dispose();
      t['model.layers.0.mlp.up_proj.weight'] = Tensor.zeros([95, 64]);
    });
    await expect(loadModel(dir)).rejects.toThrow(/'model.layers.0.mlp.up_proj.weight' has shape \[95, 64\], the config expects \[96, 64\]/);
  });

  test('missing config.json and tokenizer.json', async () => {
    await expect(loadModel(variant('no-config', undefined, ['config.json']))).rejects.toThrow(/config.json: cannot read \(ENOENT\)/);
    await expect(loadModel(variant('no-tok', undefined, ['tokenizer.json']))).rejects.toThrow(/tokenizer.json: missing/);
    await expect(loadModel(path.join(tmp, 'nope'))).rejects.toThrow(/model folder .*nope does not exist/);
  });

  test('token ids outside the vocabulary and a disposed model', async () => {
    const model = await loadModel(fixture);
    await expect(model.logits([1, 300])).rejects.toThrow('forward: token id 300 at position 1 is outside the vocabulary [0, 300)');
    await expect(model.logits([-1])).rejects.toThrow(/token id -1 at position 0/);
    await expect(model.logits([])).rejects.toThrow(/at least one token id/);
    model.dispose();
    await expect(model.logits([1])).rejects.toThrow(/the model was disposed/);
  });

  test('no native memory is leaked by a failed load', async () => {
    const { backendInfo } = await import('../../lib');
    const before = backendInfo().memory.liveBuffers;
    const dir = variant('late-failure', (t) => {
      t['model.norm.weight'].dispose();
      delete t['model.norm.weight'];
    });
    await expect(loadModel(dir)).rejects.toThrow(/model.norm.weight/);
    expect(backendInfo().memory.liveBuffers).toBe(before);
  });
});

describe('router-tuning logits', () => {

  test('--json prints shape and row-major logits; --out writes raw float32', async () => {
    const golden = JSON.parse(fs.readFileSync(path.join(fixture, 'golden.json'), 'utf8'));
    const p = golden.prompts[0];
    const r = await runCli(['logits', '--model', fixture, '--ids', p.ids.join(','), '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.shape).toEqual([p.ids.length, 300]);
    const ref = new Float32Array(Buffer.from(p.logits, 'base64').buffer.slice(0));
    const m = Math.max(...ref.map(Math.abs));
    expect(Math.max(...j.logits.map((v: number, i: number) => Math.abs(v - ref[i])))).toBeLessThanOrEqual(1e-4 * m);
    const file = path.join(tmp, 'logits.bin');
    expect((await runCli(['logits', '--model', fixture, '--ids', '1,2', '--out', file])).code).toBe(0);
    expect(fs.statSync(file).size).toBe(2 * 300 * 4);
  });

  test('bad usage and bad input exit 2 with a message', async () => {
    expect((await runCli(['logits', '--model', fixture])).err).toMatch(/--ids is required/);
    const bad = await runCli(['logits', '--model', fixture, '--ids', '1,x', '--json']);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--ids expected comma-separated non-negative integers, received 'x'/);
    const oov = await runCli(['logits', '--model', fixture, '--ids', '1,999', '--json']);
    expect(oov.code).toBe(2);
    expect(oov.err).toMatch(/token id 999 at position 1 is outside the vocabulary/);
    const missing = await runCli(['logits', '--model', path.join(tmp, 'none'), '--ids', '1', '--json']);
    expect(missing.code).toBe(2);
  });
});
