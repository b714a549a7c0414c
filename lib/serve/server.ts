/**
 * The HTTP service (fastify): OpenAI-style /v1/completions and /v1/chat/completions with
 * SSE streaming and per-request routing, /v1/models, /health and /metrics (Prometheus).
 *
 * The event loop only parses, validates, tokenizes and writes; every forward runs in the
 * model worker (engine.ts). Admission: a bounded queue in front of a fixed number of
 * generation slots — 429 with Retry-After when it is full. Limits: body bytes (413),
 * prompt tokens and max_tokens (400). A client that disconnects cancels its generation;
 * its slot is freed once the worker has stopped (within one token).
 */
import * as fs from 'fs';
import * as path from 'path';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { readConfig } from '../model/config';
import { loadTokenizer, TextTokenizer } from '../model/tokenizer';
import { Engine, JobResult, JobFailure } from './engine';
import { Metrics } from './metrics';
import {
  ApiError,
  ParsedRequest,
  RequestContext,
  chunkBody,
  completionBody,
  newId,
  parseRequest,
  routerTuningInfo,
  usageChunk,
  usageOf,
} from './openai';
import type { ModelDescription } from './protocol';

export interface ServeOptions {
  /** Model folder (default: the embedded model, models/dense). */
  model?: string;
  /** Routers saved by `tune` (default: none; requests then run without routing). */
  routers?: string;
  /** Text the `target_skip` calibration runs on (default: the embedded corpus's validation split, when present). */
  calibration?: string | false;
  /** Calibration tokens (default 1024). */
  calibrationTokens?: number;
  /** Default 127.0.0.1 (loopback only). */
  host?: string;
  /** Default 8080; 0 picks a free port. */
  port?: number;
  /** Generations the worker runs at once, interleaved token by token (default 1). */
  concurrency?: number;
  /** Requests that may wait for a slot (default 32); beyond that, 429. */
  queue?: number;
  /** Largest request body in bytes (default 1 MiB); beyond that, 413. */
  maxBodyBytes?: number;
  /** Largest prompt in tokens (default: the model's context length). */
  maxPromptTokens?: number;
  /** Largest `max_tokens` (default min(1024, context length)). */
  maxTokens?: number;
  /** Milliseconds close() lets running generations finish before cancelling them (default 10000). */
  shutdownGraceMs?: number;
  device?: 'cpu' | 'cuda';
  /** Engine thread-pool size (default RT_NUM_THREADS or all cores). */
  threads?: number;
}

export interface ServeAddress {
  url: string;
  host: string;
  port: number;
}

const DEFAULTS = { host: '127.0.0.1', port: 8080, concurrency: 1, queue: 32, maxBodyBytes: 1 << 20, shutdownGraceMs: 10_000 };

function embeddedPaths(): { model: string; calibration: string } {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { EMBEDDED_MODEL, EMBEDDED_CORPUS } = require('../cli/main_job') as typeof import('../cli/main_job');
  return { model: EMBEDDED_MODEL, calibration: path.join(EMBEDDED_CORPUS, 'validation.txt') };
}

function positiveInt(name: string, v: number | undefined, fallback: number, min = 1): number {
  const x = v ?? fallback;
  if (!Number.isInteger(x) || x < min) throw new RangeError(`serve: '${name}' expected an integer >= ${min}, received ${v}`);
  return x;
}

export class RouterTuningServer {
  private address?: ServeAddress;
  private closing?: Promise<void>;
  /** Average generation time (s), for Retry-After. */
  private avgSeconds = 1;

  private constructor(
    readonly app: FastifyInstance,
    readonly engine: Engine,
    readonly metrics: Metrics,
    readonly options: Required<Pick<ServeOptions, 'host' | 'port' | 'shutdownGraceMs'>>,
  ) {}

  /** @internal */
  static create(app: FastifyInstance, engine: Engine, metrics: Metrics, options: Required<Pick<ServeOptions, 'host' | 'port' | 'shutdownGraceMs'>>): RouterTuningServer {
    return new RouterTuningServer(app, engine, metrics, options);
  }

  get model(): ModelDescription {
    return this.engine.model;
  }

  /** Binds host:port (port 0: a free one) and resolves with the address. */
  async listen(): Promise<ServeAddress> {
    await this.app.listen({ host: this.options.host, port: this.options.port });
    const a = this.app.server.address();
    const port = a && typeof a === 'object' ? a.port : this.options.port;
    const host = this.options.host;
    this.address = { host, port, url: `http://${host.includes(':') ? `[${host}]` : host}:${port}` };
    return this.address;
  }

  get url(): string | undefined {
    return this.address?.url;
  }

  /** @internal */
  noteDuration(seconds: number): void {
    this.avgSeconds = 0.8 * this.avgSeconds + 0.2 * seconds;
  }

  /** Seconds until a slot is likely free: the queue ahead of a new request, at the average generation time. */
  retryAfter(): number {
    const e = this.engine;
    return Math.max(1, Math.min(60, Math.ceil((this.avgSeconds * (e.queueDepth + 1)) / e.concurrency)));
  }

  get draining(): boolean {
    return this.closing !== undefined;
  }

  /**
   * Graceful shutdown: stop accepting connections, refuse queued requests (503), let running
   * generations finish for up to `graceMs` (then cancel them), terminate the worker.
   */
  close(graceMs = this.options.shutdownGraceMs): Promise<void> {
    if (!this.closing) {
      this.closing = (async () => {
        const closed = this.app.close();
        await this.engine.shutdown(graceMs);
        // every generation has answered; a connection still open after a moment is a client
        // holding an idle keep-alive socket it opened mid-shutdown
        const late = setTimeout(() => this.app.server.closeAllConnections(), 1000);
        await closed;
        clearTimeout(late);
        this.metrics.stop();
      })();
    }
    return this.closing;
  }

  /** Cancels every running generation now (a second SIGINT); close() then completes promptly. */
  abort(): void {
    this.engine.cancelAll();
  }
}

/** Loads the model in a worker thread and builds the app; call `listen()` to serve. */
export async function createServer(opts: ServeOptions = {}): Promise<RouterTuningServer> {
  const embedded = embeddedPaths();
  const modelDir = opts.model ?? embedded.model;
  if (!fs.existsSync(path.join(modelDir, 'config.json'))) {
    const { ArgumentError } = await import('../errors');
    throw new ArgumentError(`serve: ${modelDir}: no model there (config.json missing)`);
  }
  const concurrency = positiveInt('concurrency', opts.concurrency, DEFAULTS.concurrency);
  const queue = positiveInt('queue', opts.queue, DEFAULTS.queue, 0);
  const maxBodyBytes = positiveInt('maxBodyBytes', opts.maxBodyBytes, DEFAULTS.maxBodyBytes);
  const calibration = opts.calibration === false ? undefined : (opts.calibration ?? (fs.existsSync(embedded.calibration) ? embedded.calibration : undefined));
  // main-thread copies of the config and tokenizer: validation and tokenization happen here
  const config = readConfig(modelDir);
  const tokenizer: TextTokenizer = loadTokenizer(modelDir);
  const context = config.maxPositionEmbeddings;
  const limits = {
    maxPromptTokens: positiveInt('maxPromptTokens', opts.maxPromptTokens, context),
    maxTokens: positiveInt('maxTokens', opts.maxTokens, Math.min(1024, context)),
    contextLength: context,
  };
  const engine = await Engine.start(
    { model: modelDir, routers: opts.routers, calibration, calibrationTokens: opts.calibrationTokens, device: opts.device, threads: opts.threads },
    { concurrency, queue },
  );
  const metrics = new Metrics();
  // loaded here, not at import: `import 'router-tuning'` stays light for users who never serve
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const Fastify = require('fastify') as typeof import('fastify').default;
  const app = Fastify({ bodyLimit: maxBodyBytes, logger: false, return503OnClosing: true, forceCloseConnections: 'idle' });
  const server = RouterTuningServer.create(app, engine, metrics, {
    host: opts.host ?? DEFAULTS.host,
    port: opts.port ?? DEFAULTS.port,
    shutdownGraceMs: opts.shutdownGraceMs ?? DEFAULTS.shutdownGraceMs,
  });
  const ctx = (): RequestContext => ({
    tokenizer,
    bosTokenId: config.bosTokenId,
    vocabSize: config.vocabSize,
    limits,
    hasRouters: engine.model.routers !== undefined,
    hasCalibration: calibration !== undefined,
  });

  // every response, streamed or not, is counted when its connection side is done
  app.addHook('onRequest', async (req, reply) => {
    const t0 = process.hrtime.bigint();
    // draining: a keep-alive connection closes after its response, so close() need not
    // wait out the keep-alive timeout of connections that were busy when it began
    const socket = req.raw.socket; // (the response lets go of it on finish)
    reply.raw.once('finish', () => {
      if (server.draining) socket.end();
    });
    reply.raw.once('close', () => {
      const route = req.routeOptions.url ?? 'unmatched';
      metrics.request(route, reply.raw.statusCode, Number(process.hrtime.bigint() - t0) / 1e9);
    });
  });

  app.setErrorHandler((err: FastifyError | ApiError, _req, reply) => {
    if (err instanceof ApiError) return reply.code(err.status).send(err.body());
    const e = err as FastifyError;
    let api: ApiError;
    if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') api = new ApiError(413, `the request body is larger than this server's limit of ${maxBodyBytes} bytes`, 'invalid_request_error', 'request_too_large');
    else if (e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || e instanceof SyntaxError)
      api = new ApiError(400, `the request body is not valid JSON: ${e.message}`, 'invalid_request_error', 'invalid_json');
    else if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') api = new ApiError(415, `unsupported content type; send application/json (${e.message})`, 'invalid_request_error', 'unsupported_media_type');
    else if ((e.statusCode ?? 500) < 500) api = new ApiError(e.statusCode!, e.message, 'invalid_request_error', (e.code ?? 'bad_request').toLowerCase());
    else api = new ApiError(500, `internal error: ${e.message}`, 'server_error', 'server_error');
    return reply.code(api.status).send(api.body());
  });

  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send(new ApiError(404, `no route ${req.method} ${req.url}`, 'not_found_error', 'not_found').body());
  });

  app.get('/health', async (_req, reply) => {
    const status = server.draining ? 'draining' : engine.status === 'ready' ? 'ok' : engine.status;
    return reply.code(status === 'ok' ? 200 : 503).send({
      status,
      model: engine.model.name,
      model_dir: engine.model.dir,
      routers: engine.model.routers ? engine.model.routers.file : null,
      uptime_s: Math.round((Date.now() - metrics.startedAt) / 100) / 10,
      queue_depth: engine.queueDepth,
      queue_capacity: engine.capacity,
      in_flight: engine.inFlight,
      concurrency: engine.concurrency,
    });
  });

  app.get('/metrics', async (_req, reply) => {
    const body = metrics.render({
      queueDepth: engine.queueDepth,
      queueCapacity: engine.capacity,
      inFlight: engine.inFlight,
      concurrency: engine.concurrency,
      ready: engine.status === 'ready' && !server.draining,
      workerRestarts: engine.workerRestarts,
    });
    return reply.type('text/plain; version=0.0.4; charset=utf-8').send(body);
  });

  app.get('/v1/models', async () => {
    const m = engine.model;
    return { object: 'list', data: [{ id: m.name, object: 'model', created: Math.floor(metrics.startedAt / 1000), owned_by: 'router-tuning', router_tuning: { family: m.family, layers: m.numLayers, context_length: m.maxPositionEmbeddings, routers: m.routers ?? null } }] };
  });

  const generate = (kind: 'completion' | 'chat') => async (req: FastifyRequest, reply: FastifyReply) => {
    if (server.draining || engine.closingDown) throw new ApiError(503, 'the server is shutting down', 'server_error', 'shutting_down');
    const parsed = parseRequest(kind, req.body, ctx());
    return parsed.stream ? stream(kind, parsed, reply) : single(kind, parsed, reply);
  };

  const envelope = (kind: 'completion' | 'chat') => ({ id: newId(kind), created: Math.floor(Date.now() / 1000), model: engine.model.name });

  const recordDone = (r: JobResult, parsed: ParsedRequest, t0: number) => {
    server.noteDuration((Date.now() - t0) / 1000);
    metrics.generation({ ...r.stats, routed: parsed.job.routing.kind !== 'off' });
  };

  const queueFull = (): ApiError => {
    const e = new ApiError(429, `the server is busy: ${engine.inFlight} generation(s) running and ${engine.queueDepth} waiting (queue limit ${engine.capacity}); retry later`, 'rate_limit_error', 'queue_full');
    return e;
  };

  const failure = (f: JobFailure): ApiError =>
    new ApiError(f.status, f.message, f.status >= 500 ? 'server_error' : 'invalid_request_error', f.status === 503 ? 'shutting_down' : (f.code ?? 'server_error').toLowerCase());

  function single(kind: 'completion' | 'chat', parsed: ParsedRequest, reply: FastifyReply): FastifyReply {
    const env = envelope(kind);
    const t0 = Date.now();
    let startedAt = t0;
    let gone = false;
    const handle = engine.submit(parsed.job, {
      onStart: () => (startedAt = Date.now()),
      onText: () => undefined,
      onDone: (r) => {
        recordDone(r, parsed, t0);
        const ext = routerTuningInfo(parsed.job, r.stats, { granularity: engine.model.routers?.granularity, queueMs: startedAt - t0, promptFormat: parsed.promptFormat });
        if (!gone) reply.code(200).send(completionBody(kind, env, r.text, r.finishReason, usageOf(r.stats), ext));
      },
      onError: (f) => {
        if (!gone) {
          const e = failure(f);
          reply.code(e.status).send(e.body());
        }
      },
      onCancelled: () => {
        metrics.cancellation();
        if (!gone) {
          const e = new ApiError(503, 'the generation was cancelled (server shutting down)', 'server_error', 'shutting_down');
          reply.code(503).send(e.body());
        }
      },
    });
    if (!handle) {
      if (engine.closingDown) throw new ApiError(503, 'the server is shutting down', 'server_error', 'shutting_down');
      reply.header('retry-after', String(server.retryAfter()));
      throw queueFull();
    }
    // a client that goes away before the answer cancels its generation
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) {
        gone = true;
        handle.cancel();
      }
    });
    return reply;
  }

  function stream(kind: 'completion' | 'chat', parsed: ParsedRequest, reply: FastifyReply): FastifyReply {
    const env = envelope(kind);
    const t0 = Date.now();
    let startedAt = t0;
    const res = reply.raw;
    let open = false;
    let ended = false;
    const write = (obj: unknown) => {
      if (!ended) res.write(`data: ${JSON.stringify(obj)}\n\n`);
    };
    const end = () => {
      if (ended) return;
      res.write('data: [DONE]\n\n');
      ended = true;
      res.end();
    };
    const openStream = () => {
      if (open) return;
      open = true;
      reply.hijack();
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      if (kind === 'chat') write(chunkBody(kind, env, { role: true, text: '' }));
    };
    const handle = engine.submit(parsed.job, {
      onStart: () => (startedAt = Date.now()),
      onText: (text) => {
        openStream();
        write(chunkBody(kind, env, { text }));
      },
      onDone: (r) => {
        recordDone(r, parsed, t0);
        openStream();
        const ext = routerTuningInfo(parsed.job, r.stats, { granularity: engine.model.routers?.granularity, queueMs: startedAt - t0, promptFormat: parsed.promptFormat });
        write(chunkBody(kind, env, { finishReason: r.finishReason }, { router_tuning: ext, ...(parsed.includeUsage ? {} : { usage: usageOf(r.stats) }) }));
        if (parsed.includeUsage) write(usageChunk(kind, env, usageOf(r.stats)));
        end();
      },
      onError: (f) => {
        const e = failure(f);
        if (!open) {
          if (!res.headersSent && !ended) reply.code(e.status).send(e.body());
          ended = true;
          return;
        }
        write(e.body());
        end();
      },
      onCancelled: () => {
        metrics.cancellation();
        if (open && !res.destroyed) {
          write(new ApiError(503, 'the generation was cancelled (server shutting down)', 'server_error', 'shutting_down').body());
          end();
        } else if (!open && !res.destroyed) reply.code(503).send(new ApiError(503, 'the generation was cancelled (server shutting down)', 'server_error', 'shutting_down').body());
        ended = true;
      },
    });
    if (!handle) {
      if (engine.closingDown) throw new ApiError(503, 'the server is shutting down', 'server_error', 'shutting_down');
      reply.header('retry-after', String(server.retryAfter()));
      throw queueFull();
    }
    // headers go out now (a queued stream shows the client it was admitted); the generation
    // is cancelled as soon as the client disconnects
    openStream();
    res.once('close', () => {
      if (!ended) {
        ended = true;
        handle.cancel();
      }
    });
    return reply;
  }

  app.post('/v1/completions', generate('completion'));
  app.post('/v1/chat/completions', generate('chat'));
  return server;
}
