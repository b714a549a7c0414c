/**
 * The model worker's scheduler, in-process (no thread): generations interleaved token by
 * token, each at its own routing, give exactly what each gives alone; a cancelled
 * generation stops and frees its KV cache.
 */
import * as path from 'path';
import { loadModel, CausalLM } from '../../lib/model/causal_lm';
import { generateBatch } from '../../lib/infer/generate';
import { backendInfo } from '../../lib/backend';
import { Tensor } from '../../lib/tensor';
import { Rng } from '../../lib/util/rng';
import { ModelWorker } from '../../lib/serve/worker';
import type { FromWorker, JobRequest } from '../../lib/serve/protocol';

const MODEL = path.join(__dirname, '..', '..', 'models', 'dense');
let model: CausalLM;

beforeAll(async () => {
  model = await loadModel(MODEL);
  const r = model.attachRouters({ granularity: 'attn-token', mode: 'mod' });
  const rng = new Rng(11);
  for (const l of r.layers) {
    r.weights.get(l)!.dispose();
    r.weights.set(l, Tensor.from(rng.floats(model.config.hiddenSize, 0.05), [model.config.hiddenSize]).keep());
  }
});
afterAll(() => model.dispose());

function job(id: number, routing: JobRequest['routing'], prompt: number[], maxTokens = 10): JobRequest {
  return { id, prompt, maxTokens, temperature: 0, topP: 1, topK: 0, seed: 0, stop: [], ignoreEos: true, routing };
}

function run(w: ModelWorker, msgs: FromWorker[], ids: number[]): Promise<void> {
  return new Promise((resolve) => {
    const check = () => (ids.every((id) => msgs.some((m) => 'id' in m && m.id === id && ['done', 'error', 'cancelled'].includes(m.type))) ? resolve() : setTimeout(check, 5));
    check();
  });
}

test('interleaved generations at different routings equal each one run alone; thresholds do not leak', async () => {
  const msgs: FromWorker[] = [];
  const w = new ModelWorker(model, { model: MODEL }, (m) => msgs.push(m));
  const prompts = [[17, 42, 99, 7], [301, 12, 5], [1000, 2000, 3000, 4000, 5]];
  const routings: JobRequest['routing'][] = [{ kind: 'on' }, { kind: 'threshold', threshold: 0.7 }, { kind: 'off' }];
  routings.forEach((r, i) => w.onMessage({ type: 'job', job: job(i + 1, r, prompts[i]) }));
  await run(w, msgs, [1, 2, 3]);
  // the worker really interleaved: some token of job 1 came after a token of job 2
  const order = msgs.filter((m) => m.type === 'token').map((m) => (m as { id: number }).id);
  expect(order.lastIndexOf(1)).toBeGreaterThan(order.indexOf(2));
  const done = (id: number) => msgs.find((m) => m.type === 'done' && m.id === id) as Extract<FromWorker, { type: 'done' }>;
  const r = model.routers!;
  const alone = async (i: number, threshold?: number) => {
    if (threshold !== undefined) for (const l of r.layers) r.thresholds.set(l, threshold);
    try {
      return (await generateBatch(model, [prompts[i]], { maxTokens: 10, stopAtEos: false, routing: routings[i].kind !== 'off' }))[0];
    } finally {
      for (const l of r.layers) r.thresholds.set(l, 0.5);
    }
  };
  const expected = [await alone(0), await alone(1, 0.7), await alone(2)];
  for (let i = 0; i < 3; i++) {
    const d = done(i + 1);
    expect(d.tokens).toEqual(expected[i].tokens);
    expect(d.stats.skipRatio).toBeCloseTo(expected[i].stats.skipRatio, 12);
    expect(d.stats.kvBytes).toBe(expected[i].stats.kvBytes);
    // streamed pieces add up to the text
    expect(msgs.filter((m) => m.type === 'token' && m.id === i + 1).map((m) => (m as { text: string }).text).join('')).toBe(d.text);
  }
  expect(done(2).stats.skipRatio).toBeGreaterThan(done(1).stats.skipRatio);
  expect(done(2).stats.thresholds).toEqual({ 3: 0.7, 4: 0.7, 5: 0.7, 6: 0.7 });
  expect(done(3).stats.thresholds).toBeUndefined();
  expect([...r.thresholds.values()]).toEqual([0.5, 0.5, 0.5, 0.5]);
});

test('a cancelled generation stops within a token and frees its KV cache', async () => {
  const before = backendInfo().memory.allocatedBytes;
  const msgs: FromWorker[] = [];
  const w = new ModelWorker(model, { model: MODEL }, (m) => {
    msgs.push(m);
    if (m.type === 'token' && m.id === 1 && msgs.filter((x) => x.type === 'token').length === 3) w.onMessage({ type: 'cancel', id: 1 });
  });
  w.onMessage({ type: 'job', job: job(1, { kind: 'off' }, [5, 6, 7], 500) });
  await run(w, msgs, [1]);
  expect(msgs[msgs.length - 1]).toEqual({ type: 'cancelled', id: 1 });
  expect(msgs.filter((m) => m.type === 'token').length).toBeLessThanOrEqual(4);
  expect(w.idle).toBe(true);
  expect(backendInfo().memory.allocatedBytes).toBe(before);
  // a request for routing with no routers fails cleanly with a 400
  const saved = model.routers;
  model.routers = undefined;
  try {
    const w2 = new ModelWorker(model, { model: MODEL }, (m) => msgs.push(m));
    w2.onMessage({ type: 'job', job: job(9, { kind: 'on' }, [5, 6]) });
    await run(w2, msgs, [9]);
    expect(msgs[msgs.length - 1]).toMatchObject({ type: 'error', id: 9, status: 400 });
  } finally {
    model.routers = saved;
  }
});
