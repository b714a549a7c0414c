/**
 * The main-thread side of the model worker: spawns it, admits jobs through the bounded
 * queue, routes the worker's streamed messages to each job's handlers, cancels, restarts a
 * crashed worker, and shuts down (cancel or finish in-flight work, then terminate).
 *
 * Compiled, the worker is dist/lib/serve/worker.js. Run from TypeScript sources (ts-jest,
 * ts-node), the worker thread has no TS loader, so it is started from a small bootstrap
 * that compiles lib/*.ts on require with the `typescript` package (transpile only).
 */
import * as path from 'path';
import { Worker } from 'worker_threads';
import { RouterTuningError } from '../errors';
import { BoundedQueue } from './queue';
import type { FinishReason, FromWorker, JobRequest, JobStats, ModelDescription, ToWorker, WorkerInit } from './protocol';

export interface JobResult {
  text: string;
  tokens: number[];
  finishReason: FinishReason;
  stats: JobStats;
}

export interface JobFailure {
  message: string;
  code?: string;
  status: number;
}

export interface JobHandlers {
  /** The job got a worker slot (left the queue). */
  onStart?(): void;
  /** A piece of generated text (stop strings already held back). */
  onText(text: string): void;
  onDone(result: JobResult): void;
  onError(err: JobFailure): void;
  /** The generation was stopped (client gone, or shutdown) and its slot released. */
  onCancelled?(): void;
}

export interface JobHandle {
  readonly id: number;
  /** Stops the job: drops it from the queue, or tells the worker to stop at its next token. */
  cancel(): void;
}

interface Task {
  job: JobRequest;
  handlers: JobHandlers;
  state: 'queued' | 'running' | 'finished';
  cancelRequested: boolean;
}

export interface EngineOptions {
  concurrency: number;
  queue: number;
}

function spawnWorker(init: WorkerInit): Worker {
  const ext = path.extname(__filename);
  const entry = path.join(__dirname, `worker${ext}`);
  const workerData = { routerTuningServe: true, init };
  if (ext !== '.ts') return new Worker(entry, { workerData });
  const ts = require.resolve('typescript');
  const bootstrap = `
    const fs = require('fs');
    const ts = require(${JSON.stringify(ts)});
    require.extensions['.ts'] = (module, filename) => {
      const out = ts.transpileModule(fs.readFileSync(filename, 'utf8'), {
        fileName: filename,
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, sourceMap: false },
      });
      module._compile(out.outputText, filename);
    };
    require(${JSON.stringify(entry)});
  `;
  return new Worker(bootstrap, { eval: true, workerData });
}

export class Engine {
  private worker!: Worker;
  private readonly tasks = new Map<number, Task>();
  private readonly queue: BoundedQueue<Task>;
  private nextId = 1;
  private closing = false;
  private restarts = 0;
  /** 'loading' until the worker reports ready; 'restarting' after a crash. */
  status: 'loading' | 'ready' | 'restarting' | 'stopped' = 'loading';
  model!: ModelDescription;

  private constructor(
    private readonly init: WorkerInit,
    opts: EngineOptions,
  ) {
    this.queue = new BoundedQueue<Task>(opts.concurrency, opts.queue, (t) => this.dispatch(t));
  }

  /** Starts the worker and resolves once the model is loaded (rejects with the load error). */
  static async start(init: WorkerInit, opts: EngineOptions): Promise<Engine> {
    const e = new Engine(init, opts);
    await e.spawn();
    return e;
  }

  get concurrency(): number {
    return this.queue.concurrency;
  }

  get capacity(): number {
    return this.queue.capacity;
  }

  get queueDepth(): number {
    return this.queue.depth;
  }

  get inFlight(): number {
    return this.queue.inFlight;
  }

  get workerRestarts(): number {
    return this.restarts;
  }

  private spawn(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const w = spawnWorker(this.init);
      this.worker = w;
      let ready = false;
      w.on('message', (m: FromWorker) => {
        if (m.type === 'ready') {
          ready = true;
          this.model = m.model;
          this.status = 'ready';
          resolve();
          return;
        }
        if (m.type === 'fatal') {
          // the worker's own error class does not cross the thread; its code does
          const err = new RouterTuningError(m.code ?? 'RT_ERR_SERVE', m.message);
          void w.terminate();
          if (!ready) reject(err);
          return;
        }
        this.onWorkerMessage(m);
      });
      w.on('error', (err) => {
        if (!ready) reject(err);
        else this.onWorkerGone(w, err.message);
      });
      w.on('exit', (code) => {
        if (!ready) reject(new Error(`the model worker exited (code ${code}) before loading the model`));
        else this.onWorkerGone(w, `the model worker exited (code ${code})`);
      });
    });
  }

  /** A crashed worker: fail its running jobs, start a fresh one, then resume the queue. */
  private onWorkerGone(w: Worker, why: string): void {
    if (w !== this.worker || this.closing) return;
    this.status = 'restarting';
    for (const t of [...this.tasks.values()]) {
      if (t.state !== 'running') continue;
      this.settle(t);
      t.handlers.onError({ message: `generation failed: ${why}`, code: 'worker_crashed', status: 500 });
    }
    this.restarts++;
    this.spawn().then(
      () => this.queue.pump(),
      (e) => {
        this.status = 'stopped';
        for (const t of this.queue.drain()) {
          this.tasks.delete(t.job.id);
          t.handlers.onError({ message: `the model worker could not restart: ${(e as Error).message}`, code: 'worker_crashed', status: 503 });
        }
      },
    );
  }

  private send(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  private dispatch(t: Task): void {
    t.state = 'running';
    t.handlers.onStart?.();
    this.send({ type: 'job', job: t.job });
  }

  /** Marks a running task finished and frees its slot. */
  private settle(t: Task): void {
    if (t.state === 'finished') return;
    const wasRunning = t.state === 'running';
    t.state = 'finished';
    this.tasks.delete(t.job.id);
    if (wasRunning) this.queue.release();
  }

  private onWorkerMessage(m: FromWorker): void {
    if (m.type === 'ready' || m.type === 'fatal') return;
    const t = this.tasks.get(m.id);
    if (!t) return;
    switch (m.type) {
      case 'started':
        return;
      case 'token':
        if (!t.cancelRequested) t.handlers.onText(m.text);
        return;
      case 'done':
        this.settle(t);
        t.handlers.onDone({ text: m.text, tokens: m.tokens, finishReason: m.finishReason, stats: m.stats });
        return;
      case 'error':
        this.settle(t);
        t.handlers.onError({ message: m.message, code: m.code, status: m.status });
        return;
      case 'cancelled':
        this.settle(t);
        t.handlers.onCancelled?.();
        return;
    }
  }

  /** Admits a job, or returns null when the queue is full (or the engine is shutting down). */
  submit(job: Omit<JobRequest, 'id'>, handlers: JobHandlers): JobHandle | null {
    if (this.closing || this.status === 'stopped') return null;
    const id = this.nextId++;
    const t: Task = { job: { ...job, id }, handlers, state: 'queued', cancelRequested: false };
    this.tasks.set(id, t);
    if (!this.queue.push(t)) {
      this.tasks.delete(id);
      return null;
    }
    return { id, cancel: () => this.cancel(t) };
  }

  private cancel(t: Task): void {
    if (t.state === 'finished' || t.cancelRequested) return;
    t.cancelRequested = true;
    if (t.state === 'queued' && this.queue.remove(t)) {
      t.state = 'finished';
      this.tasks.delete(t.job.id);
      t.handlers.onCancelled?.();
      return;
    }
    this.send({ type: 'cancel', id: t.job.id });
  }

  /** Cancels every queued and running job (each gets onCancelled once the worker has stopped it). */
  cancelAll(): void {
    for (const t of [...this.tasks.values()]) this.cancel(t);
  }

  get closingDown(): boolean {
    return this.closing;
  }

  /**
   * Stops admitting jobs, refuses the queued ones (onError 503), lets running generations
   * finish for up to `graceMs`, cancels what is left, then terminates the worker.
   */
  shutdown(graceMs = 10_000): Promise<void> {
    if (!this.shutdownDone) {
      this.closing = true;
      this.shutdownDone = this.stop(graceMs);
    }
    return this.shutdownDone;
  }

  private shutdownDone?: Promise<void>;

  private async stop(graceMs: number): Promise<void> {
    for (const t of this.queue.drain()) {
      t.state = 'finished';
      this.tasks.delete(t.job.id);
      t.handlers.onError({ message: 'the server is shutting down', code: 'shutting_down', status: 503 });
    }
    const deadline = Date.now() + graceMs;
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    if (this.inFlight > 0) {
      this.cancelAll();
      const hard = Date.now() + 2000;
      while (this.inFlight > 0 && Date.now() < hard) await new Promise((r) => setTimeout(r, 10));
    }
    if (this.status === 'ready') {
      // the worker frees its model and closes its port; terminate if it does not exit promptly
      let timer: NodeJS.Timeout | undefined;
      const exited = new Promise<void>((r) => this.worker.once('exit', () => r()));
      this.send({ type: 'shutdown' });
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 2000)))]);
      clearTimeout(timer);
    }
    this.status = 'stopped';
    await this.worker.terminate();
    for (const t of [...this.tasks.values()]) {
      this.settle(t);
      t.handlers.onCancelled?.();
    }
  }
}
