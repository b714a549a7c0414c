/**
 * Server metrics in the Prometheus text exposition format (version 0.0.4), hand-written:
 * counters of requests by route and status, prompt and generated tokens, KV bytes; gauges
 * of queue depth, in-flight generations, throughput over the last 10 s and the last
 * request's skip ratio; histograms of request latency and per-request skip ratio.
 */

import { monitorEventLoopDelay, IntervalHistogram } from 'perf_hooks';

const LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const SKIP_BUCKETS = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
const THROUGHPUT_WINDOW_MS = 10_000;
const LOOP_RESOLUTION_MS = 10;

class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly buckets: number[]) {
    this.counts = buckets.map(() => 0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]) this.counts[i]++;
  }
  render(name: string, labels = ''): string[] {
    const sep = labels ? ',' : '';
    const out = this.buckets.map((b, i) => `${name}_bucket{${labels}${sep}le="${b}"} ${this.counts[i]}`);
    out.push(`${name}_bucket{${labels}${sep}le="+Inf"} ${this.count}`);
    const braces = labels ? `{${labels}}` : '';
    out.push(`${name}_sum${braces} ${num(this.sum)}`, `${name}_count${braces} ${this.count}`);
    return out;
  }
}

function num(v: number): string {
  return Number.isFinite(v) ? String(Math.round(v * 1e6) / 1e6) : '0';
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

export interface GenerationSample {
  promptTokens: number;
  generatedTokens: number;
  skipRatio: number;
  kvBytes: number;
  kvBytesSaved: number;
  decodeTokensPerSecond: number;
  prefillTokensPerSecond: number;
  /** Whether the request ran with routers. */
  routed: boolean;
}

export class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly latency = new Map<string, Histogram>();
  private readonly skip = new Histogram(SKIP_BUCKETS);
  private promptTokens = 0;
  private generatedTokens = 0;
  private kvBytes = 0;
  private kvBytesSaved = 0;
  private rejected = 0;
  private cancelled = 0;
  private lastSkipRatio = 0;
  private lastDecode = 0;
  private lastPrefill = 0;
  private lastKvBytes = 0;
  /** (time, generated tokens) of recent completions for the throughput gauge. */
  private recent: { at: number; tokens: number }[] = [];
  readonly startedAt = Date.now();
  /** Delay of the HTTP thread's event loop: the proof that model work stays off it. */
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });

  constructor() {
    this.loopDelay.enable();
  }

  /** Stops the event-loop monitor (server closed). */
  stop(): void {
    this.loopDelay.disable();
  }

  request(route: string, status: number, seconds: number): void {
    const key = `${route}\u0000${status}`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
    let h = this.latency.get(route);
    if (!h) this.latency.set(route, (h = new Histogram(LATENCY_BUCKETS)));
    h.observe(seconds);
    if (status === 429) this.rejected++;
  }

  generation(s: GenerationSample): void {
    this.promptTokens += s.promptTokens;
    this.generatedTokens += s.generatedTokens;
    this.recent.push({ at: Date.now(), tokens: s.generatedTokens });
    this.kvBytes += s.kvBytes;
    this.kvBytesSaved += s.kvBytesSaved;
    this.lastKvBytes = s.kvBytes;
    this.lastDecode = s.decodeTokensPerSecond;
    this.lastPrefill = s.prefillTokensPerSecond;
    if (s.routed) {
      this.lastSkipRatio = s.skipRatio;
      this.skip.observe(s.skipRatio);
    }
  }

  cancellation(): void {
    this.cancelled++;
  }

  /** Generated tokens per second over the last 10 s. */
  throughput(now = Date.now()): number {
    this.recent = this.recent.filter((r) => now - r.at <= THROUGHPUT_WINDOW_MS);
    const tokens = this.recent.reduce((a, r) => a + r.tokens, 0);
    const span = Math.min(THROUGHPUT_WINDOW_MS, now - this.startedAt) / 1000;
    return span > 0 ? tokens / span : 0;
  }

  render(g: { queueDepth: number; queueCapacity: number; inFlight: number; concurrency: number; ready: boolean; workerRestarts: number }): string {
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, samples: string[]) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples);
    metric(
      'router_tuning_requests_total',
      'counter',
      'HTTP requests by route and status code.',
      [...this.requests].map(([k, v]) => {
        const [route, status] = k.split('\u0000');
        return `router_tuning_requests_total{route="${escapeLabel(route)}",status="${status}"} ${v}`;
      }),
    );
    metric('router_tuning_request_duration_seconds', 'histogram', 'HTTP request latency by route (streams: until the last byte).', [...this.latency].flatMap(([route, h]) => h.render('router_tuning_request_duration_seconds', `route="${escapeLabel(route)}"`)));
    metric('router_tuning_rejected_requests_total', 'counter', 'Requests refused because the queue was full (429).', [`router_tuning_rejected_requests_total ${this.rejected}`]);
    metric('router_tuning_cancelled_generations_total', 'counter', 'Generations stopped because the client went away or the server shut down.', [`router_tuning_cancelled_generations_total ${this.cancelled}`]);
    metric('router_tuning_prompt_tokens_total', 'counter', 'Prompt tokens of completed generations.', [`router_tuning_prompt_tokens_total ${this.promptTokens}`]);
    metric('router_tuning_generated_tokens_total', 'counter', 'Tokens generated by completed generations.', [`router_tuning_generated_tokens_total ${this.generatedTokens}`]);
    metric('router_tuning_tokens_per_second', 'gauge', 'Tokens of generations completed in the last 10 seconds, per second.', [`router_tuning_tokens_per_second ${num(this.throughput())}`]);
    metric('router_tuning_decode_tokens_per_second', 'gauge', 'Decode speed of the last completed generation.', [`router_tuning_decode_tokens_per_second ${num(this.lastDecode)}`]);
    metric('router_tuning_prefill_tokens_per_second', 'gauge', 'Prefill speed of the last completed generation.', [`router_tuning_prefill_tokens_per_second ${num(this.lastPrefill)}`]);
    metric('router_tuning_skip_ratio', 'gauge', 'Skip ratio of the last routed generation (skipped over all routed executions).', [`router_tuning_skip_ratio ${num(this.lastSkipRatio)}`]);
    metric('router_tuning_request_skip_ratio', 'histogram', 'Skip ratio per routed generation.', this.skip.render('router_tuning_request_skip_ratio'));
    metric('router_tuning_kv_bytes_total', 'counter', 'KV-cache bytes allocated by completed generations.', [`router_tuning_kv_bytes_total ${this.kvBytes}`]);
    metric('router_tuning_kv_bytes_saved_total', 'counter', 'KV-cache bytes that skipped layers left unallocated.', [`router_tuning_kv_bytes_saved_total ${this.kvBytesSaved}`]);
    metric('router_tuning_kv_bytes', 'gauge', 'KV-cache bytes of the last completed generation.', [`router_tuning_kv_bytes ${this.lastKvBytes}`]);
    metric('router_tuning_queue_depth', 'gauge', 'Requests waiting for a generation slot.', [`router_tuning_queue_depth ${g.queueDepth}`]);
    metric('router_tuning_queue_capacity', 'gauge', 'Most requests that may wait (beyond: 429).', [`router_tuning_queue_capacity ${g.queueCapacity}`]);
    metric('router_tuning_in_flight', 'gauge', 'Generations running in the model worker.', [`router_tuning_in_flight ${g.inFlight}`]);
    metric('router_tuning_concurrency', 'gauge', 'Generations the model worker runs at once.', [`router_tuning_concurrency ${g.concurrency}`]);
    metric('router_tuning_up', 'gauge', '1 when the model worker is loaded and serving.', [`router_tuning_up ${g.ready ? 1 : 0}`]);
    metric('router_tuning_worker_restarts_total', 'counter', 'Model worker restarts after a crash.', [`router_tuning_worker_restarts_total ${g.workerRestarts}`]);
    // the monitor's samples include its 10 ms timer interval: report only the delay beyond it
    const late = (ns: number) => num(Math.max(0, ns - LOOP_RESOLUTION_MS * 1e6) / 1e9);
    const d = this.loopDelay;
    metric('router_tuning_event_loop_delay_seconds', 'gauge', 'Event-loop delay of the HTTP thread since start (sampled every 10 ms), by quantile.', [
      `router_tuning_event_loop_delay_seconds{quantile="0.5"} ${late(d.percentile(50))}`,
      `router_tuning_event_loop_delay_seconds{quantile="0.99"} ${late(d.percentile(99))}`,
      `router_tuning_event_loop_delay_seconds{quantile="1"} ${late(d.max)}`,
    ]);
    const mem = process.memoryUsage();
    metric('process_resident_memory_bytes', 'gauge', 'Resident memory of the server process.', [`process_resident_memory_bytes ${mem.rss}`]);
    metric('process_start_time_seconds', 'gauge', 'Start time of the server, seconds since the epoch.', [`process_start_time_seconds ${Math.floor(this.startedAt / 1000)}`]);
    return lines.join('\n') + '\n';
  }
}
