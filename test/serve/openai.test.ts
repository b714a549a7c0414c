/**
 * The service's request validation and admission queue, without a server: chat prompts with
 * and without a chat template, routing defaults, limits; the bounded queue's slots.
 */
import * as fs from 'fs';
import * as path from 'path';
import { TextTokenizer, loadTokenizer } from '../../lib/model/tokenizer';
import { ApiError, RequestContext, parseRequest, parseRouting } from '../../lib/serve/openai';
import { BoundedQueue } from '../../lib/serve/queue';

const MODEL = path.join(__dirname, '..', '..', 'models', 'dense');
const withTemplate = loadTokenizer(MODEL);
const tokenizerJson = JSON.parse(fs.readFileSync(path.join(MODEL, 'tokenizer.json'), 'utf8'));
const withoutTemplate = new TextTokenizer(tokenizerJson, { eos_token: '<|endoftext|>' });

function ctx(tokenizer: TextTokenizer, o: Partial<RequestContext> = {}): RequestContext {
  return { tokenizer, vocabSize: 4096, limits: { maxPromptTokens: 100, maxTokens: 50, contextLength: 120 }, hasRouters: true, hasCalibration: true, ...o };
}

function apiError(f: () => unknown): ApiError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ApiError);
    return e as ApiError;
  }
  throw new Error('expected an ApiError');
}

describe('parseRequest', () => {
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: [{ type: 'text', text: 'Hello ' }, { type: 'text', text: 'there' }] },
  ];

  test('chat: the tokenizer chat template when there is one, else "role: content" lines', () => {
    const t = parseRequest('chat', { messages }, ctx(withTemplate));
    expect(t.promptFormat).toBe('chat_template');
    expect(withTemplate.decode(t.job.prompt)).toBe('system:\nBe brief.<|endoftext|>user:\nHello there<|endoftext|>assistant:\n');
    const p = parseRequest('chat', { messages }, ctx(withoutTemplate));
    expect(p.promptFormat).toBe('plain');
    expect(withoutTemplate.decode(p.job.prompt)).toBe('system: Be brief.\nuser: Hello there\nassistant:');
  });

  test('defaults: OpenAI temperature 1, completions 16 tokens, chat up to the limit, a fresh seed, routing on with routers', () => {
    const c = parseRequest('completion', { prompt: 'hi' }, ctx(withTemplate));
    expect(c.job).toMatchObject({ maxTokens: 16, temperature: 1, topP: 1, topK: 0, stop: [], ignoreEos: false, routing: { kind: 'on' } });
    expect(c.stream).toBe(false);
    const chat = parseRequest('chat', { messages, max_completion_tokens: 7 }, ctx(withTemplate));
    expect(chat.job.maxTokens).toBe(7);
    expect(parseRequest('chat', { messages }, ctx(withTemplate)).job.maxTokens).toBe(50);
    expect(parseRequest('completion', { prompt: 'hi' }, ctx(withTemplate, { hasRouters: false })).job.routing).toEqual({ kind: 'off' });
    expect(parseRequest('completion', { prompt: 'hi', seed: 42, stop: 'x' }, ctx(withTemplate)).job).toMatchObject({ seed: 42, stop: ['x'] });
  });

  test('routing values', () => {
    const c = { hasRouters: true, hasCalibration: true };
    expect(parseRouting('off', c)).toEqual({ kind: 'off' });
    expect(parseRouting({ target_skip: 0.25 }, c)).toEqual({ kind: 'target_skip', targetSkip: 0.25 });
    expect(parseRouting({ threshold: 0.6 }, c)).toEqual({ kind: 'threshold', threshold: 0.6 });
    expect(apiError(() => parseRouting('on', { hasRouters: false, hasCalibration: true })).code).toBe('routers_not_loaded');
    expect(apiError(() => parseRouting({ target_skip: 0.3 }, { hasRouters: true, hasCalibration: false })).code).toBe('calibration_unavailable');
    expect(apiError(() => parseRouting({ target_skip: 0.3, threshold: 0.2 }, c)).param).toBe('routing');
  });

  test('limits: prompt tokens, max_tokens, context length', () => {
    expect(apiError(() => parseRequest('completion', { prompt: Array(101).fill(5) }, ctx(withTemplate))).code).toBe('prompt_too_long');
    expect(apiError(() => parseRequest('completion', { prompt: 'x'.repeat(100 * 64 + 1) }, ctx(withTemplate))).code).toBe('prompt_too_long');
    const e = apiError(() => parseRequest('completion', { prompt: 'hi', max_tokens: 51 }, ctx(withTemplate)));
    expect([e.status, e.code, e.param]).toEqual([400, 'max_tokens_too_large', 'max_tokens']);
    expect(apiError(() => parseRequest('completion', { prompt: Array(90).fill(5), max_tokens: 40 }, ctx(withTemplate))).code).toBe('context_length_exceeded');
    // without max_tokens, the default shrinks to what the context leaves
    expect(parseRequest('chat', { messages: [{ role: 'user', content: 'hi' }] }, ctx(withTemplate, { limits: { maxPromptTokens: 100, maxTokens: 50, contextLength: 20 } })).job.maxTokens).toBeLessThan(20);
  });
});

describe('BoundedQueue', () => {
  test('runs up to the concurrency, queues up to the capacity, refuses beyond; release starts the next', () => {
    const started: number[] = [];
    const q = new BoundedQueue<number>(2, 1, (t) => started.push(t));
    expect([q.push(1), q.push(2), q.push(3), q.push(4)]).toEqual([true, true, true, false]);
    expect(started).toEqual([1, 2]);
    expect([q.inFlight, q.depth]).toEqual([2, 1]);
    q.release();
    expect(started).toEqual([1, 2, 3]);
    expect(q.push(5)).toBe(true);
    expect(q.remove(5)).toBe(true);
    expect(q.remove(3)).toBe(false); // already running
    q.release();
    q.release();
    expect([q.inFlight, q.depth]).toEqual([0, 0]);
  });
});
