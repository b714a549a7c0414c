/**
 * The OpenAI-compatible surface: request validation for /v1/completions and
 * /v1/chat/completions (into a job for the model worker), response and stream-chunk
 * bodies, and OpenAI-shaped errors `{ error: { message, type, param, code } }`.
 * Everything here runs on the main thread and touches no native code: prompts are
 * tokenized (and chat templates rendered) with the pure-JS tokenizer before a job is queued,
 * so limits are enforced without occupying the model worker.
 */
import { randomBytes, randomInt } from 'crypto';
import type { TextTokenizer, ChatMessage } from '../model/tokenizer';
import type { JobRequest, JobStats, FinishReason, RoutingRequest } from './protocol';

export type ErrorType = 'invalid_request_error' | 'rate_limit_error' | 'server_error' | 'not_found_error';

/** An error the server answers with `status` and an OpenAI-shaped body. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType,
    readonly code: string,
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): { error: { message: string; type: ErrorType; param: string | null; code: string } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

const invalid = (message: string, param: string | null, code = 'invalid_value') => new ApiError(400, message, 'invalid_request_error', code, param);

export interface ServeLimits {
  maxPromptTokens: number;
  /** Largest accepted `max_tokens`. */
  maxTokens: number;
  /** Prompt + generated tokens must fit the model's positions. */
  contextLength: number;
}

export interface RequestContext {
  tokenizer: TextTokenizer;
  bosTokenId?: number;
  vocabSize: number;
  limits: ServeLimits;
  /** Routing when the request names none: 'on' with routers loaded, else 'off'. */
  hasRouters: boolean;
  hasCalibration: boolean;
}

export type PromptFormat = 'text' | 'tokens' | 'chat_template' | 'plain';

export interface ParsedRequest {
  job: Omit<JobRequest, 'id'>;
  stream: boolean;
  includeUsage: boolean;
  promptFormat: PromptFormat;
}

type Body = Record<string, unknown>;

function asObject(body: unknown): Body {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw invalid('the request body must be a JSON object', null, 'invalid_json');
  return body as Body;
}

function optNumber(b: Body, key: string, lo: number, hi: number, opts: { int?: boolean; loOpen?: boolean } = {}): number | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  const range = `${opts.loOpen ? '(' : '['}${lo}, ${hi}]`;
  if (typeof v !== 'number' || !Number.isFinite(v) || (opts.int && !Number.isInteger(v)) || v < lo || v > hi || (opts.loOpen && v === lo))
    throw invalid(`'${key}' must be ${opts.int ? 'an integer' : 'a number'} in ${range}, received ${JSON.stringify(v)}`, key);
  return v;
}

function rejectUnsupported(b: Body, chat: boolean): void {
  const n = b.n;
  if (n !== undefined && n !== null && n !== 1) throw invalid(`'n' must be 1 (one choice per request), received ${JSON.stringify(n)}`, 'n', 'unsupported_parameter');
  if (!chat) {
    if (b.best_of !== undefined && b.best_of !== null && b.best_of !== 1) throw invalid("'best_of' is not supported (must be 1)", 'best_of', 'unsupported_parameter');
    if (b.echo === true) throw invalid("'echo' is not supported", 'echo', 'unsupported_parameter');
    if (b.logprobs !== undefined && b.logprobs !== null) throw invalid("'logprobs' is not supported", 'logprobs', 'unsupported_parameter');
    if (b.suffix !== undefined && b.suffix !== null) throw invalid("'suffix' is not supported", 'suffix', 'unsupported_parameter');
  } else {
    if (b.logprobs === true) throw invalid("'logprobs' is not supported", 'logprobs', 'unsupported_parameter');
    if (b.tools !== undefined && b.tools !== null) throw invalid("'tools' is not supported", 'tools', 'unsupported_parameter');
  }
  for (const k of ['presence_penalty', 'frequency_penalty'])
    if (b[k] !== undefined && b[k] !== null && b[k] !== 0) throw invalid(`'${k}' is not supported (must be 0)`, k, 'unsupported_parameter');
}

function parseStop(b: Body): string[] {
  const v = b.stop;
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length > 16 || list.some((s) => typeof s !== 'string' || s.length === 0))
    throw invalid("'stop' must be a non-empty string or a list of at most 16 non-empty strings", 'stop');
  return list as string[];
}

export function parseRouting(v: unknown, ctx: Pick<RequestContext, 'hasRouters' | 'hasCalibration'>): RoutingRequest {
  if (v === undefined || v === null) return { kind: ctx.hasRouters ? 'on' : 'off' };
  let r: RoutingRequest;
  if (v === 'off') r = { kind: 'off' };
  else if (v === 'on') r = { kind: 'on' };
  else if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 1 && 'target_skip' in v) {
    const t = (v as { target_skip: unknown }).target_skip;
    if (typeof t !== 'number' || !(t >= 0 && t < 1)) throw invalid(`'routing.target_skip' must be a number in [0, 1), received ${JSON.stringify(t)}`, 'routing');
    r = { kind: 'target_skip', targetSkip: t };
  } else if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 1 && 'threshold' in v) {
    const t = (v as { threshold: unknown }).threshold;
    if (typeof t !== 'number' || !(t > 0 && t < 1)) throw invalid(`'routing.threshold' must be a number in (0, 1), received ${JSON.stringify(t)}`, 'routing');
    r = { kind: 'threshold', threshold: t };
  } else throw invalid(`'routing' must be "off", "on", {"target_skip": number} or {"threshold": number}, received ${JSON.stringify(v)}`, 'routing');
  if (r.kind !== 'off' && !ctx.hasRouters)
    throw invalid(`routing ${JSON.stringify(v)} needs routers, and this server has none (start it with --routers FILE); use "off"`, 'routing', 'routers_not_loaded');
  if (r.kind === 'target_skip' && !ctx.hasCalibration)
    throw invalid('routing {"target_skip"} needs calibration text, and this server has none (start it with --calibration PATH)', 'routing', 'calibration_unavailable');
  return r;
}

function withBos(ids: number[], bos: number | undefined): number[] {
  return bos !== undefined && ids[0] !== bos ? [bos, ...ids] : ids;
}

/**
 * A text prompt is tokenized here, on the main thread. Beyond ~64 characters a token no
 * prompt can fit the limit, so such text is refused before tokenizing (bounds the work).
 */
function encodeText(text: string, ctx: RequestContext, param: string): number[] {
  if (text.length > ctx.limits.maxPromptTokens * 64)
    throw invalid(`the prompt (${text.length} characters) is longer than this server's limit of ${ctx.limits.maxPromptTokens} prompt tokens`, param, 'prompt_too_long');
  return withBos(ctx.tokenizer.encode(text), ctx.bosTokenId);
}

function parsePrompt(v: unknown, ctx: RequestContext): { ids: number[]; format: PromptFormat } {
  if (typeof v === 'string') return { ids: encodeText(v, ctx, 'prompt'), format: 'text' };
  if (Array.isArray(v)) {
    if (v.length > 0 && v.every((x) => typeof x === 'number')) {
      const bad = v.findIndex((x) => !Number.isInteger(x) || x < 0 || x >= ctx.vocabSize);
      if (bad >= 0) throw invalid(`'prompt' token ${JSON.stringify(v[bad])} at index ${bad} is not a token id in [0, ${ctx.vocabSize})`, 'prompt');
      return { ids: v as number[], format: 'tokens' };
    }
    if (v.length === 1) return parsePrompt(v[0], ctx);
    if (v.length > 1) throw invalid('only one prompt per request is supported (send one request per prompt)', 'prompt', 'unsupported_parameter');
  }
  throw invalid("'prompt' must be a non-empty string or a non-empty array of token ids", 'prompt', v === undefined ? 'missing_field' : 'invalid_value');
}

function messageText(content: unknown, i: number): string {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) return '';
  if (Array.isArray(content) && content.every((p) => p && typeof p === 'object' && (p as { type?: unknown }).type === 'text' && typeof (p as { text?: unknown }).text === 'string'))
    return content.map((p) => (p as { text: string }).text).join('');
  throw invalid(`'messages[${i}].content' must be a string or a list of {"type": "text", "text": string} parts`, `messages[${i}].content`);
}

function parseMessages(v: unknown, ctx: RequestContext): { ids: number[]; format: PromptFormat } {
  if (!Array.isArray(v) || v.length === 0) throw invalid("'messages' must be a non-empty array of {role, content}", 'messages', v === undefined ? 'missing_field' : 'invalid_value');
  const messages: ChatMessage[] = v.map((m, i) => {
    if (!m || typeof m !== 'object' || typeof (m as { role?: unknown }).role !== 'string' || !(m as { role: string }).role)
      throw invalid(`'messages[${i}]' must be an object with a string 'role'`, `messages[${i}]`);
    return { role: (m as { role: string }).role, content: messageText((m as { content?: unknown }).content, i) };
  });
  const chars = messages.reduce((a, m) => a + m.content.length + m.role.length, 0);
  if (chars > ctx.limits.maxPromptTokens * 64)
    throw invalid(`the messages (${chars} characters) are longer than this server's limit of ${ctx.limits.maxPromptTokens} prompt tokens`, 'messages', 'prompt_too_long');
  if (ctx.tokenizer.hasChatTemplate) {
    let text: string;
    try {
      text = ctx.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
    } catch (e) {
      throw invalid(`the model's chat template failed on these messages: ${(e as Error).message}`, 'messages');
    }
    return { ids: withBos(ctx.tokenizer.encode(text), ctx.bosTokenId), format: 'chat_template' };
  }
  // no template: a plain transcript, ending where the assistant's turn begins
  const text = messages.map((m) => `${m.role}: ${m.content}`).join('\n') + '\nassistant:';
  return { ids: withBos(ctx.tokenizer.encode(text), ctx.bosTokenId), format: 'plain' };
}

/** Validates a /v1/completions or /v1/chat/completions body into a worker job. */
export function parseRequest(kind: 'completion' | 'chat', body: unknown, ctx: RequestContext): ParsedRequest {
  const b = asObject(body);
  rejectUnsupported(b, kind === 'chat');
  const { limits } = ctx;
  // cheap checks first, tokenization last
  const maxTokensKey = kind === 'chat' && b.max_completion_tokens !== undefined && b.max_completion_tokens !== null ? 'max_completion_tokens' : 'max_tokens';
  const requested = b[maxTokensKey];
  if (requested !== undefined && requested !== null) {
    if (typeof requested !== 'number' || !Number.isInteger(requested) || requested < 1)
      throw invalid(`'${maxTokensKey}' must be an integer >= 1, received ${JSON.stringify(requested)}`, maxTokensKey);
    if (requested > limits.maxTokens)
      throw invalid(`'${maxTokensKey}' is ${requested}; this server allows at most ${limits.maxTokens}`, maxTokensKey, 'max_tokens_too_large');
  }
  const temperature = optNumber(b, 'temperature', 0, 2) ?? 1;
  const topP = optNumber(b, 'top_p', 0, 1, { loOpen: true }) ?? 1;
  const topK = optNumber(b, 'top_k', 0, ctx.vocabSize, { int: true }) ?? 0;
  const seedIn = optNumber(b, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, { int: true });
  const stop = parseStop(b);
  if (b.stream !== undefined && b.stream !== null && typeof b.stream !== 'boolean') throw invalid("'stream' must be a boolean", 'stream');
  if (b.ignore_eos !== undefined && b.ignore_eos !== null && typeof b.ignore_eos !== 'boolean') throw invalid("'ignore_eos' must be a boolean", 'ignore_eos');
  const stream = b.stream === true;
  const so = b.stream_options as { include_usage?: unknown } | undefined | null;
  const includeUsage = !!(so && typeof so === 'object' && so.include_usage === true);
  const routing = parseRouting(b.routing, ctx);
  const { ids, format } = kind === 'chat' ? parseMessages(b.messages, ctx) : parsePrompt(b.prompt, ctx);
  if (ids.length > limits.maxPromptTokens)
    throw invalid(`the prompt is ${ids.length} tokens; this server allows at most ${limits.maxPromptTokens}`, kind === 'chat' ? 'messages' : 'prompt', 'prompt_too_long');
  const room = limits.contextLength - ids.length;
  if (room < 1) throw invalid(`the prompt is ${ids.length} tokens and leaves no room in the model's context of ${limits.contextLength}`, kind === 'chat' ? 'messages' : 'prompt', 'context_length_exceeded');
  let maxTokens: number;
  if (requested !== undefined && requested !== null) {
    maxTokens = requested as number;
    if (maxTokens > room)
      throw invalid(`the prompt (${ids.length} tokens) plus '${maxTokensKey}' (${maxTokens}) exceeds the model's context of ${limits.contextLength} tokens`, maxTokensKey, 'context_length_exceeded');
  } else maxTokens = Math.min(kind === 'chat' ? limits.maxTokens : 16, room);
  // OpenAI semantics: no seed means a different sample each time
  const seed = seedIn !== undefined ? seedIn >>> 0 : randomInt(0, 2 ** 32 - 1);
  const ignoreEos = b.ignore_eos === true;
  return { job: { prompt: ids, maxTokens, temperature, topP, topK, seed, stop, ignoreEos, routing }, stream, includeUsage, promptFormat: format };
}

// ---- responses

export interface RouterTuningInfo {
  routing: RoutingRequest['kind'];
  granularity?: string;
  thresholds?: Record<string, number>;
  calibration?: { target_skip: number; threshold: number; skip_ratio: number; ms: number; cached: boolean };
  skip_ratio: number;
  layers: { layer: number; executed_fraction: number }[];
  /** Routed layers that ran for at least one token (token routers) or the sequence (seq routers). */
  executed_layers: number[];
  /** Routed layers skipped for every token / the whole sequence. */
  skipped_layers: number[];
  kv_bytes: number;
  kv_bytes_saved: number;
  prefill_tokens_per_second: number;
  decode_tokens_per_second: number;
  queue_ms: number;
  seed: number;
  prompt_format: PromptFormat;
}

export function routerTuningInfo(job: Omit<JobRequest, 'id'>, stats: JobStats, o: { granularity?: string; queueMs: number; promptFormat: PromptFormat }): RouterTuningInfo {
  const round = (x: number, d = 6) => Math.round(x * 10 ** d) / 10 ** d;
  return {
    routing: job.routing.kind,
    granularity: job.routing.kind === 'off' ? undefined : o.granularity,
    thresholds: stats.thresholds,
    calibration: stats.calibration && {
      target_skip: stats.calibration.targetSkip,
      threshold: stats.calibration.threshold,
      skip_ratio: stats.calibration.skipRatio,
      ms: stats.calibration.ms,
      cached: stats.calibration.cached,
    },
    skip_ratio: round(stats.skipRatio),
    layers: stats.layers.map((l) => ({ layer: l.layer, executed_fraction: round(l.executedFraction) })),
    executed_layers: stats.layers.filter((l) => l.executedFraction > 0).map((l) => l.layer),
    skipped_layers: stats.layers.filter((l) => l.executedFraction === 0).map((l) => l.layer),
    kv_bytes: stats.kvBytes,
    kv_bytes_saved: stats.kvBytesSaved,
    prefill_tokens_per_second: round(stats.prefillTokensPerSecond, 1),
    decode_tokens_per_second: round(stats.decodeTokensPerSecond, 1),
    queue_ms: o.queueMs,
    seed: job.seed,
    prompt_format: o.promptFormat,
  };
}

export function newId(kind: 'completion' | 'chat'): string {
  return `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usageOf(stats: JobStats): Usage {
  return { prompt_tokens: stats.promptTokens, completion_tokens: stats.generatedTokens, total_tokens: stats.promptTokens + stats.generatedTokens };
}

export interface Envelope {
  id: string;
  created: number;
  model: string;
}

export function completionBody(kind: 'completion' | 'chat', e: Envelope, text: string, finishReason: FinishReason, usage: Usage, ext: RouterTuningInfo): Record<string, unknown> {
  const choice =
    kind === 'chat'
      ? { index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: finishReason }
      : { text, index: 0, logprobs: null, finish_reason: finishReason };
  return { id: e.id, object: kind === 'chat' ? 'chat.completion' : 'text_completion', created: e.created, model: e.model, choices: [choice], usage, router_tuning: ext };
}

/** One streamed chunk: a text delta, or (text null) the chat role opener, or the finish. */
export function chunkBody(
  kind: 'completion' | 'chat',
  e: Envelope,
  delta: { text?: string; role?: boolean; finishReason?: FinishReason },
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const finish = delta.finishReason ?? null;
  if (kind === 'chat') {
    const d: Record<string, string> = {};
    if (delta.role) d.role = 'assistant';
    if (delta.text !== undefined) d.content = delta.text;
    return { id: e.id, object: 'chat.completion.chunk', created: e.created, model: e.model, choices: [{ index: 0, delta: d, logprobs: null, finish_reason: finish }], ...extra };
  }
  return { id: e.id, object: 'text_completion', created: e.created, model: e.model, choices: [{ text: delta.text ?? '', index: 0, logprobs: null, finish_reason: finish }], ...extra };
}

/** The usage-only chunk sent last when `stream_options.include_usage` is set. */
export function usageChunk(kind: 'completion' | 'chat', e: Envelope, usage: Usage): Record<string, unknown> {
  return { id: e.id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created: e.created, model: e.model, choices: [], usage };
}
