/**
 * Messages between the HTTP side (main thread) and the model worker (worker_threads).
 * The worker owns the model; the main thread sends fully validated jobs (token ids, sampling
 * options, routing) and receives streamed text pieces, then one terminal message per job:
 * `done`, `error` or `cancelled`.
 */

import type { GenerateStats } from '../infer/generate';

/** Per-request routing, resolved on the main thread from the request's `routing` field. */
export type RoutingRequest =
  | { kind: 'off' }
  | { kind: 'on' }
  | { kind: 'target_skip'; targetSkip: number }
  | { kind: 'threshold'; threshold: number };

export interface WorkerInit {
  model: string;
  routers?: string;
  /** Text file/folder the target_skip calibration runs on (default: none → target_skip is refused). */
  calibration?: string;
  /** Tokens of calibration text (default 1024). */
  calibrationTokens?: number;
  device?: 'cpu' | 'cuda';
  threads?: number;
}

export interface JobRequest {
  id: number;
  prompt: number[];
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  stop: string[];
  /** Keep generating past the model's EOS token (vLLM's `ignore_eos`; load tests). */
  ignoreEos: boolean;
  routing: RoutingRequest;
}

/** The generation's own stats (GenerateStats), plus what the service adds. */
export interface JobStats extends GenerateStats {
  /** Thresholds the routed layers ran at (absent with routing off). */
  thresholds?: Record<string, number>;
  /** target_skip requests: the calibrated threshold, the skip ratio it gave on the calibration text, and the time it took (0 when cached). */
  calibration?: { targetSkip: number; threshold: number; skipRatio: number; ms: number; cached: boolean };
}

export type FinishReason = 'stop' | 'length';

export type ToWorker = { type: 'job'; job: JobRequest } | { type: 'cancel'; id: number } | { type: 'shutdown' };

export interface ModelDescription {
  name: string;
  dir: string;
  family: string;
  numLayers: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  routers?: { file: string; granularity: string; layers: number[]; mode: string; thresholds: Record<string, number> };
  calibration: boolean;
  threads: number;
}

export type FromWorker =
  | { type: 'ready'; model: ModelDescription }
  | { type: 'fatal'; message: string; code?: string }
  | { type: 'started'; id: number }
  | { type: 'token'; id: number; text: string; token: number }
  | { type: 'done'; id: number; text: string; tokens: number[]; finishReason: FinishReason; stats: JobStats }
  | { type: 'error'; id: number; message: string; code?: string; status: number }
  | { type: 'cancelled'; id: number };
