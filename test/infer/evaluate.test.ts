import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadModel, CausalLM } from '../../lib/model/causal_lm';
import { evaluate, perplexityOf, attentionRedundancy, readMcItems } from '../../lib/infer/evaluate';
import { runCli } from '../helpers/cli';

const fixtures = path.join(__dirname, '..', 'fixtures', 'models');
const text = fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'data', 'text', 'a.txt'), 'utf8');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-eval-'));
let model: CausalLM;
beforeAll(async () => {
  model = await loadModel(path.join(fixtures, 'qwen3'));
});
afterAll(() => {
  model.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('perplexity: one window equals exp(mean NLL) from the logits; strided windows score every token once', async () => {
  const ids = [1, ...model.tokenizer!.encode(text)].slice(0, 40);
  const logits = await model.logits(ids);
  const V = model.config.vocabSize;
  let nll = 0;
  for (let p = 1; p < ids.length; p++) {
    const row = logits.subarray((p - 1) * V, p * V);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
    nll += lse - row[ids[p]];
  }
  const one = perplexityOf(model, ids, { window: 64, stride: 32, routing: false });
  expect(one.tokens).toBe(ids.length - 1);
  expect(one.perplexity).toBeCloseTo(Math.exp(nll / (ids.length - 1)), 3);
  const strided = perplexityOf(model, ids, { window: 16, stride: 8, routing: false });
  expect(strided.tokens).toBe(ids.length - 1);
  expect(strided.perplexity).toBeGreaterThan(0);
});

test('routers that skip nothing report the base numbers; static drop picks the redundant layer', async () => {
  const m = await loadModel(path.join(fixtures, 'qwen3'));
  try {
    const o = m.weights.layers[1].o.weight;
    o.write(new Float32Array(o.numel)); // layer 1's attention adds nothing: cos(in, out) = 1
    const ids = [1, ...m.tokenizer!.encode(text)].slice(0, 48);
    const sim = attentionRedundancy(m, ids, [0, 1, 2], 32);
    expect(sim.get(1)).toBeCloseTo(1, 6);
    expect(sim.get(1)!).toBeGreaterThan(Math.max(sim.get(0)!, sim.get(2)!));
    m.attachRouters({ granularity: 'attn-seq', layers: [0, 1, 2] });
    const zero = await evaluate(m, { text, window: 32 });
    expect(zero.routed!.perplexity).toBeCloseTo(zero.base.perplexity!, 6);
    expect(zero.routed!.skipRatio).toBe(0);
    expect(zero.staticDrop!.droppedLayers).toEqual([]);
    // routers that skip one of three layers: static drop at 1/3 drops layer 1
    m.routers!.thresholds.set(2, 0.99);
    const r = await evaluate(m, { text, window: 32 });
    expect(r.routed!.skipRatio).toBeCloseTo(1 / 3, 9);
    expect(r.staticDrop!.droppedLayers).toEqual([1]);
    expect(r.staticDrop!.perplexity).toBeCloseTo(r.base.perplexity!, 6);
  } finally {
    m.dispose();
  }
});

test('multiple-choice: acc and acc_norm from choice log-likelihoods; malformed lines name file:line', async () => {
  const file = path.join(tmp, 'mc.jsonl');
  fs.writeFileSync(file, ['{"context": "the quick brown", "choices": [" fox", " dog"], "label": 0}', '', '{"context": "call me", "choices": [" ishmael", " x"], "label": 1}'].join('\n'));
  const r = await evaluate(model, { task: 'multiple-choice', data: file });
  expect(r.items).toBe(2);
  expect(r.base.accuracy! * 2).toBeCloseTo(Math.round(r.base.accuracy! * 2), 9);
  fs.writeFileSync(file, '{"context": "a", "choices": ["b"], "label": 0}\n');
  expect(() => readMcItems(file)).toThrow(/mc.jsonl:1: expected \{"context": string, "choices"/);
  fs.writeFileSync(file, '{"context": "a", "choices": ["b", "c"], "label": 0}\nnot json\n');
  expect(() => readMcItems(file)).toThrow(/mc.jsonl:2: not valid JSON/);
});

test('router-tuning eval: table, --json (DESIGN §7) and a report folder with SVG plots', async () => {
  const dir = path.join(fixtures, 'qwen3');
  const routersFile = path.join(tmp, 'r.safetensors');
  const m = await loadModel(dir);
  m.attachRouters({ granularity: 'attn-seq', layers: [0, 1, 2] }).thresholds.set(1, 0.99);
  m.saveRouters(routersFile);
  m.dispose();
  const data = path.join(__dirname, '..', 'fixtures', 'data', 'text', 'a.txt');
  const a = await runCli(['eval', '--model', dir, '--routers', routersFile, '--data', data, '--window', '32']);
  expect(a.code).toBe(0);
  expect(a.out).toMatch(/no routers .*\nrouters .*\nstatic attention drop .*dropped layers/);
  const report = path.join(tmp, 'report');
  const b = await runCli(['eval', '--model', dir, '--routers', routersFile, '--data', data, '--window', '32', '--json', '--report', report]);
  const j = JSON.parse(b.out);
  expect(j.task).toBe('perplexity');
  expect(j.tokens).toBeGreaterThan(10);
  expect(j.routed.skipRatio).toBeCloseTo(1 / 3, 9);
  expect(j.staticDrop.droppedLayers).toHaveLength(1);
  for (const f of ['report.md', 'quality-vs-skip.svg', 'layer-skip.svg']) expect(fs.existsSync(path.join(report, f))).toBe(true);
  expect(fs.readFileSync(path.join(report, 'quality-vs-skip.svg'), 'utf8')).toMatch(/^<svg/);
  const c = await runCli(['eval', '--model', dir, '--data', data, '--task', 'mmlu']);
  expect(c.code).toBe(2);
  expect(c.err).toMatch(/--task expected perplexity or multiple-choice/);
});

test('perplexity with stride = window scores every token exactly once (windows overlap by one)', () => {
  const ids = [1, ...model.tokenizer!.encode(text)].slice(0, 41);
  expect(ids.length).toBeGreaterThan(20);
  for (const [w, s] of [[8, 8], [10, 4], [16, 16], [40, 40], [64, 32]]) expect(perplexityOf(model, ids, { window: w, stride: s, routing: false }).tokens).toBe(ids.length - 1);
});
