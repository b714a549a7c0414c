import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runCli } from '../helpers/cli';
import { SUPPORTED_FAMILIES } from '../../lib/model/config';
import { GRANULARITIES } from '../../lib/routing/routers';

const fixtures = path.join(__dirname, '..', 'fixtures', 'models');
const data = path.join(__dirname, '..', 'fixtures', 'data');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-tune-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));


const moeFamilies = new Set(['mixtral', 'olmoe', 'qwen2_moe', 'qwen3_moe']);
const cases: [string, string][] = [];
for (const f of SUPPORTED_FAMILIES)
  for (const g of GRANULARITIES) if (moeFamilies.has(f) || (g !== 'moe-token' && g !== 'expert')) cases.push([f, g]);

describe('router-tuning tune --json on every family and granularity', () => {
  test.each(cases)('%s / %s', async (family, granularity) => {
    const out = path.join(tmp, `${family}-${granularity}.safetensors`);
    const r = await runCli(['tune', '--model', path.join(fixtures, family), '--data', path.join(data, 'text'), '--granularity', granularity, '--steps', '2', '--seq-len', '24', '--batch-size', '2', '--out', out, '--json']);
    expect(r.err).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j).toMatchObject({ routers: out, granularity, steps: 2 });
    expect(Number.isFinite(j.trainLoss)).toBe(true);
    expect(j.skipRatio).toBeGreaterThanOrEqual(0);
    expect(j.layers.length).toBeGreaterThan(0);
    for (const l of j.layers) expect(l.executedFraction).toBeGreaterThanOrEqual(0);
    expect(fs.existsSync(out)).toBe(true);
  });
});

test('instruction JSONL trains on responses; --steps 0 routers execute everything', async () => {
  const out = path.join(tmp, 'zero.safetensors');
  const r = await runCli(['tune', '--model', path.join(fixtures, 'llama'), '--data', path.join(data, 'instruct.jsonl'), '--steps', '0', '--seq-len', '64', '--out', out, '--json']);
  expect(r.code).toBe(0);
  const j = JSON.parse(r.out);
  expect(j.skipRatio).toBe(0);
  expect(j.layers.every((l: { executedFraction: number }) => l.executedFraction === 1)).toBe(true);
});

test('usage errors exit 2 with a message', async () => {
  const a = await runCli(['tune', '--model', path.join(fixtures, 'llama')]);
  expect(a.code).toBe(2);
  expect(a.err).toMatch(/--data PATH is required/);
  const b = await runCli(['tune', '--model', path.join(fixtures, 'llama'), '--data', data, '--granularity', 'layer-seq']);
  expect(b.code).toBe(2);
  expect(b.err).toMatch(/--granularity expected one of attn-seq/);
  const c = await runCli(['tune', '--model', path.join(fixtures, 'llama'), '--data', data, '--steps', 'ten']);
  expect(c.err).toMatch(/--steps expected an integer, received 'ten'/);
  const d = await runCli(['tune', '--model', path.join(fixtures, 'llama'), '--data', path.join(tmp, 'missing.txt')]);
  expect(d.code).toBe(2);
  expect(d.err).toMatch(/missing.txt/);
  const e = await runCli(['tune', '--model', path.join(fixtures, 'llama'), '--data', data, '--granularity', 'expert', '--steps', '1']);
  expect(e.code).toBe(2);
  expect(e.err).toMatch(/needs a mixture-of-experts model/);
});
