/**
 * The HTTP service end to end over real HTTP on 127.0.0.1 (port 0), on the embedded
 * 7M-parameter model with token-level routers made for the test: completions, chat,
 * SSE streaming, per-request routing, errors and limits, the bounded queue (429), /health
 * while a long generation runs, /metrics, client disconnects, and graceful shutdown.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createServer, RouterTuningServer } from '../../lib/serve/server';
import { loadModel } from '../../lib/model/causal_lm';
import { generateBatch } from '../../lib/infer/generate';
import { Tensor } from '../../lib/tensor';
import { Rng } from '../../lib/util/rng';
import { runCli } from '../helpers/cli';

const MODEL = path.join(__dirname, '..', '..', 'models', 'dense');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-serve-'));
const routersFile = path.join(tmp, 'routers.safetensors');
let server: RouterTuningServer;
let base: string;

/** Token-level (mod) attention routers with random weights, so some tokens really skip. */
async function makeRouters(): Promise<void> {
  const m = await loadModel(MODEL);
  try {
    const r = m.attachRouters({ granularity: 'attn-token', mode: 'mod' });
    const rng = new Rng(7);
    for (const l of r.layers) {
      r.weights.get(l)!.dispose();
      r.weights.set(l, Tensor.from(rng.floats(m.config.hiddenSize, 0.05), [m.config.hiddenSize]).keep());
    }
    m.saveRouters(routersFile);
  } finally {
    m.dispose();
  }
}

beforeAll(async () => {
  await makeRouters();
  server = await createServer({
    model: MODEL,
    routers: routersFile,
    port: 0,
    concurrency: 1,
    queue: 1,
    maxBodyBytes: 64 * 1024,
    maxPromptTokens: 64,
    maxTokens: 1500,
    calibrationTokens: 512,
    shutdownGraceMs: 20_000,
  });
  base = (await server.listen()).url;
});

afterAll(async () => {
  await server?.close(0);
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function post(route: string, body: unknown, init: RequestInit = {}): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(base + route, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body), ...init });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined, headers: res.headers };
}

/** Reads a server-sent event stream into its parsed `data:` payloads (the last one is '[DONE]'). */
async function sse(res: Response, onEvent?: (e: any) => void): Promise<any[]> {
  const events: any[] = [];
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let at: number;
    while ((at = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, at);
      buf = buf.slice(at + 2);
      expect(block.startsWith('data: ')).toBe(true);
      const data = block.slice(6);
      const e = data === '[DONE]' ? data : JSON.parse(data);
      events.push(e);
      onEvent?.(e);
    }
  }
  expect(buf).toBe('');
  return events;
}

/** Starts a long streamed generation and resolves once its first token has arrived. */
async function startLongStream(): Promise<{ abort: () => void; done: Promise<unknown> }> {
  const ctl = new AbortController();
  const res = await fetch(base + '/v1/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'It was a dark and stormy night', max_tokens: 1500, temperature: 0, ignore_eos: true, stream: true, routing: 'off' }),
    signal: ctl.signal,
  });
  expect(res.status).toBe(200);
  let first!: () => void;
  const gotFirst = new Promise<void>((r) => (first = r));
  const done = sse(res, (e) => {
    if (e !== '[DONE]' && e.choices?.[0]?.text) first();
  }).catch((e) => e);
  await gotFirst;
  return { abort: () => ctl.abort(), done };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function getJson(route: string): Promise<any> {
  return (await fetch(base + route)).json();
}

async function waitIdle(): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const h = await getJson('/health');
    if (h.in_flight === 0 && h.queue_depth === 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('the server did not become idle');
}

describe('serve: completions and chat', () => {
  test('POST /v1/completions: OpenAI-shaped body, the same text as generate() in-process', async () => {
    const r = await post('/v1/completions', { prompt: 'The whale', max_tokens: 12, temperature: 0, routing: 'off' });
    expect(r.status).toBe(200);
    const b = r.json;
    expect(b.object).toBe('text_completion');
    expect(b.id).toMatch(/^cmpl-/);
    expect(b.model).toBe('dense');
    expect(typeof b.created).toBe('number');
    expect(b.choices).toHaveLength(1);
    expect(['stop', 'length']).toContain(b.choices[0].finish_reason);
    expect(b.usage.prompt_tokens).toBeGreaterThan(0);
    expect(b.usage.total_tokens).toBe(b.usage.prompt_tokens + b.usage.completion_tokens);
    expect(b.router_tuning).toMatchObject({ routing: 'off', skip_ratio: 0, layers: [], kv_bytes_saved: 0, prompt_format: 'text' });
    expect(b.router_tuning.kv_bytes).toBeGreaterThan(0);
    expect(b.router_tuning.decode_tokens_per_second).toBeGreaterThan(0);
    const m = await loadModel(MODEL);
    try {
      const [g] = await generateBatch(m, ['The whale'], { maxTokens: 12, temperature: 0 });
      expect(b.choices[0].text).toBe(g.text);
      expect(b.usage.completion_tokens).toBe(g.tokens.length);
    } finally {
      m.dispose();
    }
  });

  test('a token-id prompt; routing on skips layers and saves KV bytes; default routing is on', async () => {
    const prompt = [17, 42, 99, 7, 301, 12];
    const off = (await post('/v1/completions', { prompt, max_tokens: 8, temperature: 0, routing: 'off', ignore_eos: true })).json;
    const on = (await post('/v1/completions', { prompt, max_tokens: 8, temperature: 0, routing: 'on', ignore_eos: true })).json;
    const dflt = (await post('/v1/completions', { prompt, max_tokens: 8, temperature: 0, ignore_eos: true })).json;
    expect(off.router_tuning.prompt_format).toBe('tokens');
    expect(off.usage.prompt_tokens).toBe(prompt.length);
    expect(on.router_tuning.routing).toBe('on');
    expect(on.router_tuning.granularity).toBe('attn-token');
    expect(on.router_tuning.layers.map((l: { layer: number }) => l.layer)).toEqual([3, 4, 5, 6]);
    expect(on.router_tuning.skip_ratio).toBeGreaterThan(0);
    expect(on.router_tuning.kv_bytes_saved).toBeGreaterThan(0);
    expect(on.router_tuning.kv_bytes).toBeLessThan(off.router_tuning.kv_bytes);
    expect([...on.router_tuning.executed_layers, ...on.router_tuning.skipped_layers].sort()).toEqual([3, 4, 5, 6]);
    expect(dflt.router_tuning.routing).toBe('on');
    expect(dflt.choices[0].text).toBe(on.choices[0].text);
  });

  test('routing {threshold} and {target_skip}: calibrated once per target, then cached', async () => {
    const prompt = 'Call me Ishmael. Some years ago';
    const lo = (await post('/v1/completions', { prompt, max_tokens: 4, temperature: 0, routing: { threshold: 1e-6 } })).json;
    expect(lo.router_tuning.skip_ratio).toBe(0); // σ(s) ≥ 1e-6 for any sensible score: nothing skipped
    expect(Object.values(lo.router_tuning.thresholds)).toEqual([1e-6, 1e-6, 1e-6, 1e-6]);
    const a = await post('/v1/completions', { prompt, max_tokens: 4, temperature: 0, routing: { target_skip: 0.5 } });
    expect(a.status).toBe(200);
    const c = a.json.router_tuning.calibration;
    expect(c.target_skip).toBe(0.5);
    expect(c.cached).toBe(false);
    expect(c.threshold).toBeGreaterThan(0);
    expect(c.threshold).toBeLessThan(1);
    expect(Math.abs(c.skip_ratio - 0.5)).toBeLessThan(0.1);
    const b = (await post('/v1/completions', { prompt, max_tokens: 4, temperature: 0, routing: { target_skip: 0.5 } })).json.router_tuning;
    expect(b.calibration.cached).toBe(true);
    expect(b.calibration.threshold).toBe(c.threshold);
    // the per-request thresholds did not leak into a plain 'on' request
    const on = (await post('/v1/completions', { prompt, max_tokens: 4, temperature: 0, routing: 'on' })).json.router_tuning;
    expect(Object.values(on.thresholds)).toEqual([0.5, 0.5, 0.5, 0.5]);
  });

  test('POST /v1/chat/completions renders the chat template', async () => {
    const r = await post('/v1/chat/completions', { model: 'anything', messages: [{ role: 'user', content: 'Tell me about the sea.' }], max_tokens: 10, temperature: 0.7, seed: 5 });
    expect(r.status).toBe(200);
    const b = r.json;
    expect(b.object).toBe('chat.completion');
    expect(b.id).toMatch(/^chatcmpl-/);
    expect(b.model).toBe('dense');
    expect(b.choices[0].message.role).toBe('assistant');
    expect(typeof b.choices[0].message.content).toBe('string');
    expect(b.router_tuning.prompt_format).toBe('chat_template');
    expect(b.router_tuning.seed).toBe(5);
    // a seed makes sampling reproducible
    const again = (await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'Tell me about the sea.' }], max_tokens: 10, temperature: 0.7, seed: 5 })).json;
    expect(again.choices[0].message.content).toBe(b.choices[0].message.content);
  });

  test('stop strings end the text before the stop string', async () => {
    const full = (await post('/v1/completions', { prompt: 'The whale', max_tokens: 24, temperature: 0, routing: 'off', ignore_eos: true })).json.choices[0].text as string;
    const stop = full.trim().split(/\s+/)[2];
    const cut = (await post('/v1/completions', { prompt: 'The whale', max_tokens: 24, temperature: 0, routing: 'off', ignore_eos: true, stop: [stop] })).json;
    expect(cut.choices[0].text).toBe(full.slice(0, full.indexOf(stop)));
    expect(cut.choices[0].finish_reason).toBe('stop');
  });
});

describe('serve: streaming', () => {
  test('completion stream: data chunks, a final chunk with usage and router_tuning, [DONE]; same text as unstreamed', async () => {
    const body = { prompt: 'The whale', max_tokens: 16, temperature: 0, routing: 'on', stop: ['\n\n'] };
    const plain = (await post('/v1/completions', body)).json;
    const res = await fetch(base + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = await sse(res);
    expect(events[events.length - 1]).toBe('[DONE]');
    const chunks = events.slice(0, -1);
    for (const c of chunks) expect(c.object).toBe('text_completion');
    const last = chunks[chunks.length - 1];
    expect(last.choices[0].finish_reason).toBe(plain.choices[0].finish_reason);
    expect(last.usage).toEqual(plain.usage);
    expect(last.router_tuning.skip_ratio).toBe(plain.router_tuning.skip_ratio);
    expect(chunks.map((c) => c.choices[0].text).join('')).toBe(plain.choices[0].text);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
  });

  test('chat stream: a role chunk, content deltas, usage chunk with stream_options.include_usage', async () => {
    const res = await fetch(base + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello' }], max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } }),
    });
    const events = await sse(res);
    expect(events.pop()).toBe('[DONE]');
    expect(events[0].object).toBe('chat.completion.chunk');
    expect(events[0].choices[0].delta.role).toBe('assistant');
    const usage = events.pop();
    expect(usage.choices).toEqual([]);
    expect(usage.usage.completion_tokens).toBeGreaterThan(0);
    const fin = events[events.length - 1];
    expect(fin.choices[0].finish_reason).not.toBeNull();
    expect(fin.router_tuning.prompt_format).toBe('chat_template');
  });
});

describe('serve: errors and limits', () => {
  test('bad JSON → 400 invalid_json', async () => {
    const r = await post('/v1/completions', '{"prompt": "x",');
    expect(r.status).toBe(400);
    expect(r.json.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_json' });
    expect(typeof r.json.error.message).toBe('string');
    const arr = await post('/v1/completions', '[1, 2]');
    expect(arr.status).toBe(400);
    expect(arr.json.error.code).toBe('invalid_json');
  });

  test('oversized body → 413', async () => {
    const r = await post('/v1/completions', { prompt: 'a '.repeat(40_000) });
    expect(r.status).toBe(413);
    expect(r.json.error).toMatchObject({ type: 'invalid_request_error', code: 'request_too_large' });
  });

  test('too many prompt tokens → 400 prompt_too_long; too large max_tokens → 400', async () => {
    const long = await post('/v1/completions', { prompt: 'the sea and the whale '.repeat(40) });
    expect(long.status).toBe(400);
    expect(long.json.error).toMatchObject({ code: 'prompt_too_long', param: 'prompt' });
    const ids = await post('/v1/completions', { prompt: Array.from({ length: 65 }, (_, i) => i + 2) });
    expect(ids.json.error.code).toBe('prompt_too_long');
    const big = await post('/v1/completions', { prompt: 'x', max_tokens: 1501 });
    expect(big.status).toBe(400);
    expect(big.json.error).toMatchObject({ code: 'max_tokens_too_large', param: 'max_tokens' });
    expect(big.json.error.message).toMatch(/1500/);
  });

  test('other bad requests: 400 with the offending parameter; unknown route 404', async () => {
    const cases: [string, unknown, string][] = [
      ['/v1/completions', { prompt: 'x', temperature: -1 }, 'temperature'],
      ['/v1/completions', { prompt: 'x', routing: 'sometimes' }, 'routing'],
      ['/v1/completions', { prompt: 'x', routing: { target_skip: 1.5 } }, 'routing'],
      ['/v1/completions', { prompt: [5, 99999] }, 'prompt'],
      ['/v1/completions', { prompt: 'x', n: 2 }, 'n'],
      ['/v1/completions', {}, 'prompt'],
      ['/v1/chat/completions', { messages: [] }, 'messages'],
      ['/v1/chat/completions', { messages: [{ content: 'no role' }] }, 'messages[0]'],
    ];
    for (const [route, body, param] of cases) {
      const r = await post(route, body);
      expect([route, r.status]).toEqual([route, 400]);
      expect(r.json.error.param).toBe(param);
    }
    const nf = await fetch(base + '/v2/nothing');
    expect(nf.status).toBe(404);
    expect(((await nf.json()) as { error: { code: string } }).error.code).toBe('not_found');
  });
});

describe('serve: load and liveness', () => {
  test('/health answers within 50 ms while a long generation runs', async () => {
    const long = await startLongStream();
    try {
      const times: number[] = [];
      for (let i = 0; i < 9; i++) {
        const t0 = performance.now();
        const body = await getJson('/health');
        times.push(performance.now() - t0);
        expect(body.status).toBe('ok');
        expect(body.in_flight).toBe(1);
      }
      times.sort((a, b) => a - b);
      expect(times[Math.floor(times.length / 2)]).toBeLessThan(50);
    } finally {
      long.abort();
      await long.done;
      await waitIdle();
    }
  });

  test('queue full → 429 with Retry-After; a disconnect frees the slot and the queued request is served', async () => {
    const long = await startLongStream(); // holds the only slot
    const queued = post('/v1/completions', { prompt: 'queued', max_tokens: 3, temperature: 0 }); // takes the only queue place
    let h: any;
    for (let i = 0; i < 500; i++) {
      h = await getJson('/health');
      if (h.queue_depth === 1) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(h).toMatchObject({ in_flight: 1, queue_depth: 1, queue_capacity: 1 });
    const full = await post('/v1/completions', { prompt: 'one too many', max_tokens: 3 });
    expect(full.status).toBe(429);
    expect(full.json.error).toMatchObject({ type: 'rate_limit_error', code: 'queue_full' });
    expect(Number(full.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const fullStream = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], stream: true });
    expect(fullStream.status).toBe(429);
    // the client of the long stream goes away: the worker stops it, the queued request runs
    long.abort();
    await long.done;
    const q = await queued;
    expect(q.status).toBe(200);
    expect(q.json.usage.completion_tokens).toBeGreaterThan(0);
    await waitIdle();
  });

  test('a client disconnecting mid-stream cancels its generation and frees the worker', async () => {
    const long = await startLongStream();
    long.abort();
    await long.done;
    await waitIdle();
    const t0 = Date.now();
    const next = await post('/v1/completions', { prompt: 'next', max_tokens: 4, temperature: 0 });
    expect(next.status).toBe(200);
    expect(next.json.router_tuning.queue_ms).toBeLessThan(Date.now() - t0 + 1);
    const metrics = await (await fetch(base + '/metrics')).text();
    expect(Number(/router_tuning_cancelled_generations_total (\d+)/.exec(metrics)![1])).toBeGreaterThanOrEqual(3);
  });

  test('/metrics: Prometheus text with requests, tokens, throughput, skip ratio, queue, KV bytes', async () => {
    const res = await fetch(base + '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const name of [
      'router_tuning_requests_total',
      'router_tuning_generated_tokens_total',
      'router_tuning_tokens_per_second',
      'router_tuning_skip_ratio',
      'router_tuning_request_skip_ratio',
      'router_tuning_queue_depth',
      'router_tuning_in_flight',
      'router_tuning_kv_bytes_total',
      'router_tuning_kv_bytes_saved_total',
      'router_tuning_request_duration_seconds',
    ])
      expect(text).toContain(`# TYPE ${name} `);
    expect(text).toMatch(/router_tuning_requests_total\{route="\/v1\/completions",status="200"\} [1-9]/);
    expect(text).toMatch(/router_tuning_requests_total\{route="\/v1\/completions",status="429"\} 1/);
    expect(text).toMatch(/router_tuning_requests_total\{route="\/v1\/completions",status="413"\} 1/);
    expect(Number(/router_tuning_generated_tokens_total (\d+)/.exec(text)![1])).toBeGreaterThan(0);
    expect(Number(/router_tuning_kv_bytes_saved_total (\d+)/.exec(text)![1])).toBeGreaterThan(0);
    expect(text).toMatch(/router_tuning_queue_depth 0\n/);
    // every sample line is `name{labels} value` with a number value
    for (const line of text.split('\n').filter((l) => l && !l.startsWith('#'))) expect(line).toMatch(/^[a-z_]+(\{[^}]*\})? -?[0-9.e+]+$/);
    const health = await getJson('/health');
    expect(health).toMatchObject({ status: 'ok', model: 'dense', queue_depth: 0, in_flight: 0, concurrency: 1 });
    expect(health.uptime_s).toBeGreaterThan(0);
  });

  test('graceful shutdown: a running generation finishes, then the server stops', async () => {
    const running = post('/v1/completions', { prompt: 'last words', max_tokens: 40, temperature: 0, ignore_eos: true });
    for (let i = 0; i < 500 && (await getJson('/health')).in_flight === 0; i++) await new Promise((r) => setTimeout(r, 5));
    const closed = server.close();
    const r = await running;
    expect(r.status).toBe(200);
    expect(r.json.usage.completion_tokens).toBe(40);
    await closed;
    await expect(fetch(base + '/health')).rejects.toThrow();
  });
});

describe('serve: CLI', () => {
  test('serve --help, and bad flags exit 2', async () => {
    const help = await runCli(['serve', '--help']);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/usage: router-tuning serve/);
    expect(help.out).toMatch(/--max-prompt-tokens/);
    expect((await runCli(['serve', '--port', 'x'])).code).toBe(2);
    expect((await runCli(['serve', '--concurrency', '0'])).code).toBe(2);
    expect((await runCli(['serve', '--model', path.join(tmp, 'nothing')])).code).toBe(2);
    expect((await runCli(['serve', '--bogus'])).code).toBe(2);
    expect((await runCli(['--help'])).out).toMatch(/serve/);
  });
});
