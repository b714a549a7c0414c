/**
 * The model worker (a worker_threads thread): it owns the model, its routers and every KV
 * cache, so forwards — synchronous native calls — never block the HTTP event loop.
 *
 * Scheduling: the main thread never sends more jobs than the concurrency limit. The worker
 * interleaves its active generations token by token (round-robin over their streams) and
 * yields to its own event loop (setImmediate) after every round, so a `cancel` message is
 * seen within one token of each active job.
 *
 * Per-request routing: the routers' weights are shared; the thresholds are per request.
 * Forwards run one at a time on this thread, so the worker writes the request's thresholds
 * into the routers right before each step of that request (a Map write per routed layer)
 * — no request can observe another's thresholds. A `target_skip` threshold is calibrated
 * once (bisection of the measured skip ratio on the calibration text, as
 * `tune --calibrate`, but on the serving forward) and cached per target.
 */
import { isMainThread, parentPort, workerData } from 'worker_threads';
import type { MessagePort } from 'worker_threads';
import * as path from 'path';
import type { CausalLM, RoutingStats } from '../model/causal_lm';
import type { GenerateResult, GeneratedToken } from '../infer/generate';
import type { Example } from '../train/data';
import type { FinishReason, FromWorker, JobRequest, JobStats, ModelDescription, ToWorker, WorkerInit } from './protocol';
import { RouterTuningError } from '../errors';

interface Active {
  job: JobRequest;
  it: AsyncGenerator<GeneratedToken, GenerateResult[], void>;
  /** null: routing off; undefined: the routers' own thresholds. */
  thresholds: Map<number, number> | null | undefined;
  calibration?: JobStats['calibration'];
  cancelled: boolean;
  /** Generated text so far (untrimmed) and how much of it was sent. */
  full: string;
  sent: number;
  lastToken: number;
}

const CALIBRATION_SEQ_LEN = 256;

export class ModelWorker {
  private readonly active: Active[] = [];
  private readonly incoming: JobRequest[] = [];
  private readonly cancelled = new Set<number>();
  private running = false;
  private baseThresholds = new Map<number, number>();
  private calibrationExamples?: Example[];
  private readonly calibrated = new Map<number, { threshold: number; skipRatio: number }>();
  private stopping = false;

  constructor(
    private readonly model: CausalLM,
    private readonly init: WorkerInit,
    private readonly post: (m: FromWorker) => void,
  ) {
    if (model.routers) this.baseThresholds = new Map(model.routers.thresholds);
  }

  describe(threads: number): ModelDescription {
    const m = this.model;
    const r = m.routers;
    return {
      name: path.basename(path.resolve(m.dir)),
      dir: m.dir,
      family: m.config.family,
      numLayers: m.config.numLayers,
      vocabSize: m.config.vocabSize,
      maxPositionEmbeddings: m.config.maxPositionEmbeddings,
      routers: r
        ? { file: this.init.routers ?? '', granularity: r.granularity, layers: [...r.layers], mode: r.mode, thresholds: Object.fromEntries([...this.baseThresholds].map(([l, t]) => [String(l), t])) }
        : undefined,
      calibration: this.init.calibration !== undefined,
      threads,
    };
  }

  onMessage(msg: ToWorker): void {
    if (msg.type === 'job') {
      this.incoming.push(msg.job);
      void this.loop();
    } else if (msg.type === 'cancel') {
      const queued = this.incoming.findIndex((j) => j.id === msg.id);
      if (queued >= 0) {
        this.incoming.splice(queued, 1);
        this.post({ type: 'cancelled', id: msg.id });
        return;
      }
      const a = this.active.find((x) => x.job.id === msg.id);
      if (a) a.cancelled = true;
    } else if (msg.type === 'shutdown') {
      this.stopping = true;
      for (const a of this.active) a.cancelled = true;
      for (const j of this.incoming.splice(0)) this.post({ type: 'cancelled', id: j.id });
      void this.loop();
    }
  }

  /** Resolves a request's routing to the thresholds it runs at (calibrating a target_skip once). */
  private resolveRouting(job: JobRequest): Pick<Active, 'thresholds' | 'calibration'> {
    const r = this.model.routers;
    const routing = job.routing;
    if (routing.kind === 'off') return { thresholds: null };
    if (!r) throw new RouterTuningError('RT_ERR_ARG', `routing '${routing.kind}' needs routers; this server was started without --routers`);
    if (routing.kind === 'on') return { thresholds: undefined };
    if (routing.kind === 'threshold') return { thresholds: new Map(r.layers.map((l) => [l, routing.threshold])) };
    const key = Math.round(routing.targetSkip * 1000);
    let hit = this.calibrated.get(key);
    const t0 = Date.now();
    const cached = hit !== undefined;
    if (!hit) {
      const examples = this.loadCalibration();
      try {
        hit = this.calibrate(examples, key / 1000);
      } finally {
        for (const [l, t] of this.baseThresholds) r.thresholds.set(l, t);
      }
      this.calibrated.set(key, hit);
    }
    return {
      thresholds: new Map(r.layers.map((l) => [l, hit!.threshold])),
      calibration: { targetSkip: key / 1000, threshold: hit.threshold, skipRatio: hit.skipRatio, ms: Date.now() - t0, cached },
    };
  }

  /**
   * Skip ratio of the routers at one threshold on every routed layer, measured with the
   * serving forward itself (real skipping, logits of the last row only: no LM-head work).
   */
  private skipAt(examples: Example[], threshold: number): number {
    const r = this.model.routers!;
    for (const l of r.layers) r.thresholds.set(l, threshold);
    const stats: RoutingStats = { layers: new Map() };
    for (const ex of examples) {
      const T = ex.ids.length;
      const cache = this.model.newCache(1, T);
      try {
        this.model.forward(ex.ids, null, 1, T, cache, { routing: true, stats, logitsRows: Int32Array.of(T - 1) }).dispose();
      } finally {
        cache.dispose();
      }
    }
    let exec = 0, total = 0;
    for (const s of stats.layers.values()) {
      exec += s.executed;
      total += s.total;
    }
    return total ? 1 - exec / total : 0;
  }

  /**
   * The threshold (one for every routed layer) whose skip ratio on the calibration text is
   * closest to `target`: bisection, as `tune --calibrate` (a higher τ skips more).
   */
  private calibrate(examples: Example[], target: number): { threshold: number; skipRatio: number } {
    let lo = 0, hi = 1;
    let best = { threshold: 0.5, skipRatio: NaN, err: Infinity };
    for (let it = 0; it < 16; it++) {
      const mid = (lo + hi) / 2;
      const skip = this.skipAt(examples, mid);
      const err = Math.abs(skip - target);
      if (err < best.err) best = { threshold: mid, skipRatio: skip, err };
      if (err <= 0.002) break;
      if (skip < target) lo = mid;
      else hi = mid;
    }
    return { threshold: best.threshold, skipRatio: best.skipRatio };
  }

  private loadCalibration(): Example[] {
    if (this.calibrationExamples) return this.calibrationExamples;
    if (this.init.calibration === undefined)
      throw new RouterTuningError('RT_ERR_ARG', "routing {target_skip} needs calibration text; start the server with --calibration PATH");
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { loadExamples } = require('../train/data') as typeof import('../train/data');
    const tokens = this.init.calibrationTokens ?? 1024;
    const n = Math.max(1, Math.ceil(tokens / CALIBRATION_SEQ_LEN));
    const loaded = loadExamples(this.init.calibration, this.model.tokenizer!, {
      seqLen: CALIBRATION_SEQ_LEN,
      bosId: this.model.config.bosTokenId,
      eosId: this.model.config.eosTokenIds[0],
      // ~4 characters a token is plenty for byte-level BPE; read no more than needed
      maxChars: tokens * 8,
    });
    if (loaded.examples.length === 0) throw new RouterTuningError('RT_ERR_DATA', `${this.init.calibration}: no calibration text`);
    this.calibrationExamples = loaded.examples.slice(0, n);
    return this.calibrationExamples;
  }

  private start(job: JobRequest): void {
    let routing: Pick<Active, 'thresholds' | 'calibration'>;
    try {
      routing = this.resolveRouting(job);
    } catch (e) {
      this.fail(job.id, e);
      return;
    }
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { generateStream } = require('../infer/generate') as typeof import('../infer/generate');
    const it = generateStream(this.model, [job.prompt], {
      maxTokens: job.maxTokens,
      temperature: job.temperature,
      topK: job.topK,
      topP: job.topP,
      seed: job.seed,
      stop: job.stop,
      stopAtEos: !job.ignoreEos,
      routing: routing.thresholds !== null,
    });
    this.active.push({ job, it, ...routing, cancelled: false, full: '', sent: 0, lastToken: -1 });
    this.post({ type: 'started', id: job.id });
  }

  private fail(id: number, e: unknown): void {
    const err = e as Error & { code?: string };
    const bad = err instanceof RouterTuningError && ['RT_ERR_ARG', 'RT_ERR_DATA', 'RT_ERR_INDEX'].includes(err.code);
    this.post({ type: 'error', id, message: err.message ?? String(e), code: err.code, status: bad ? 400 : 500 });
  }

  private applyThresholds(a: Active): void {
    const r = this.model.routers;
    if (!r || a.thresholds === null) return;
    for (const [l, t] of a.thresholds ?? this.baseThresholds) r.thresholds.set(l, t);
  }

  /** Text safe to send: not a possible start of a stop string, not a half-decoded character. */
  private flush(a: Active): void {
    let end = a.full.length;
    const stops = a.job.stop;
    for (const s of stops) {
      const at = a.full.indexOf(s, Math.max(0, a.sent - s.length));
      if (at >= 0) end = Math.min(end, at);
    }
    const longest = stops.reduce((m, s) => Math.max(m, s.length), 0);
    if (longest > 1) end = Math.min(end, a.full.length - (longest - 1));
    while (end > a.sent && a.full.charCodeAt(end - 1) === 0xfffd) end--;
    if (end > a.sent) {
      this.post({ type: 'token', id: a.job.id, text: a.full.slice(a.sent, end), token: a.lastToken });
      a.sent = end;
    }
  }

  private finish(a: Active, results: GenerateResult[]): void {
    const r = results[0];
    const eos = new Set(this.model.config.eosTokenIds);
    const stopHit = a.job.stop.some((s) => a.full.includes(s));
    const last = r.tokens[r.tokens.length - 1];
    const finishReason: FinishReason = stopHit || (!a.job.ignoreEos && last !== undefined && eos.has(last)) ? 'stop' : r.tokens.length >= a.job.maxTokens ? 'length' : 'stop';
    // the final text is cut at a stop string; whatever of it was held back goes out now
    if (r.text.length > a.sent) this.post({ type: 'token', id: a.job.id, text: r.text.slice(a.sent), token: last ?? -1 });
    const routers = this.model.routers;
    const thresholds =
      a.thresholds === null || !routers ? undefined : Object.fromEntries([...(a.thresholds ?? this.baseThresholds)].map(([l, t]) => [String(l), t]));
    this.post({
      type: 'done',
      id: a.job.id,
      text: r.text,
      tokens: r.tokens,
      finishReason,
      stats: {
        promptTokens: r.stats.promptTokens,
        generatedTokens: r.stats.generatedTokens,
        prefillTokensPerSecond: r.stats.prefillTokensPerSecond,
        decodeTokensPerSecond: r.stats.decodeTokensPerSecond,
        skipRatio: r.stats.skipRatio,
        kvBytes: r.stats.kvBytes,
        kvBytesSaved: r.stats.kvBytesSaved,
        layers: r.stats.layers,
        thresholds,
        calibration: a.calibration,
      },
    });
  }

  private remove(a: Active): void {
    const i = this.active.indexOf(a);
    if (i >= 0) this.active.splice(i, 1);
  }

  /** Round-robin over the active generations, one token each per round. */
  private async loop(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.active.length || this.incoming.length) {
        while (this.incoming.length && !this.stopping) this.start(this.incoming.shift()!);
        for (const a of [...this.active]) {
          if (a.cancelled) {
            this.remove(a);
            try {
              await a.it.return([]); // runs generateStream's finally: the KV cache is freed
            } finally {
              this.post({ type: 'cancelled', id: a.job.id });
            }
            continue;
          }
          try {
            this.applyThresholds(a);
            const step = await a.it.next();
            if (step.done) {
              this.remove(a);
              this.finish(a, step.value);
            } else {
              a.full += step.value.text;
              a.lastToken = step.value.token;
              this.flush(a);
            }
          } catch (e) {
            this.remove(a);
            await a.it.return([]).catch(() => undefined);
            this.fail(a.job.id, e);
          }
        }
        // let cancel/job messages in before the next round
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      for (const [l, t] of this.baseThresholds) this.model.routers?.thresholds.set(l, t);
      this.running = false;
    }
  }

  get idle(): boolean {
    return this.active.length === 0 && this.incoming.length === 0;
  }
}

/** Worker entry: load the model, report ready, serve jobs until told to shut down. */
async function runWorker(port: MessagePort, init: WorkerInit): Promise<void> {
  const post = (m: FromWorker) => port.postMessage(m);
  let model: CausalLM;
  let worker: ModelWorker;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { loadModel } = require('../model/causal_lm') as typeof import('../model/causal_lm');
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { setNumThreads, backendInfo } = require('../backend') as typeof import('../backend');
    if (init.threads !== undefined) setNumThreads(init.threads);
    model = await loadModel(init.model, { device: init.device });
    if (!model.tokenizer) throw new RouterTuningError('RT_ERR_TOKENIZER', `${init.model}: serve needs the model's tokenizer`);
    if (init.routers) model.loadRouters(init.routers);
    worker = new ModelWorker(model, init, post);
    post({ type: 'ready', model: worker.describe(backendInfo().threads) });
  } catch (e) {
    post({ type: 'fatal', message: (e as Error).message, code: (e as { code?: string }).code });
    return;
  }
  port.on('message', (msg: ToWorker) => {
    worker.onMessage(msg);
    if (msg.type === 'shutdown') {
      // wait for the cancelled generations to release their caches, then free the model
      const check = () => {
        if (!worker.idle) return void setTimeout(check, 5);
        model.dispose();
        port.close();
      };
      check();
    }
  });
}

if (!isMainThread && parentPort && workerData && (workerData as { routerTuningServe?: unknown }).routerTuningServe) {
  void runWorker(parentPort, (workerData as { init: WorkerInit }).init);
}
