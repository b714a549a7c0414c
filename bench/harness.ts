/**
 * Bench harness: times cases, measures the machine's ceilings in the same run, and
 * reports each case as a rate and a fraction of the relevant ceiling.
 *   memory-bound cases: bytes moved / time  vs  large-copy bandwidth (read + write)
 *   compute-bound cases: FLOPs / time        vs  OpenBLAS sgemm at 2048³
 */
import { Tensor, dispose } from '../lib';
import { callNative } from '../lib/ops/dispatch';
import { Rng } from '../lib/util/rng';

export interface BenchCase {
  suite: string;
  name: string;
  /** 'memory': rate in GB/s vs copy; 'compute': GFLOP/s vs sgemm. */
  kind: 'memory' | 'compute';
  /** Bytes read + written per run (memory) or FLOPs per run (compute). */
  work: number;
  /** The target fraction of the ceiling (from the issue), if any. */
  target?: number;
  setup(): { run: () => void; dispose: () => void };
}

export interface CaseResult {
  suite: string;
  name: string;
  value: number;
  unit: string;
  fraction: number;
  target?: number;
  seconds: number;
  /** For metrics such as memory ratios: the target is an upper bound. */
  lowerIsBetter?: boolean;
  /** For plain ratios (not fractions of a ceiling): the target is a lower bound on value. */
  higherIsBetter?: boolean;
}

export interface Ceilings {
  copyGBps: number;
  gemmGFLOPS: number;
}

/** Median seconds per run: batches of runs until `minSeconds` in total (after one warm-up). */
export function timeRun(run: () => void, minSeconds = 0.4, minBatches = 5): number {
  run();
  const samples: number[] = [];
  let reps = 1;
  let total = 0;
  // grow the batch until one batch takes >= 20 ms, so timer noise is small
  for (;;) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < reps; i++) run();
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    if (dt >= 0.02 || reps >= 1 << 16) {
      samples.push(dt / reps);
      total += dt;
      break;
    }
    reps *= 2;
  }
  while (samples.length < minBatches || total < minSeconds) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < reps; i++) run();
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    samples.push(dt / reps);
    total += dt;
    if (samples.length > 200) break;
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)];
}

export function randomTensor(rng: Rng, shape: number[], scale = 1, dtype: 'float32' | 'bfloat16' = 'float32'): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.from(rng.floats(n, scale), shape, dtype);
}

/** Copy bandwidth (256 MiB buffer, counted as read + write) and sgemm rate at 2048³. */
export function measureCeilings(): Ceilings {
  const n = 64 * 1024 * 1024; // floats = 256 MiB
  const a = Tensor.empty([n]);
  const b = Tensor.empty([n]);
  callNative('fill', [a.handle, 1, n]);
  const tCopy = timeRun(() => callNative('tensor_copy', [b.handle, a.handle, 0, 0, n]), 0.5, 5);
  dispose([a, b]);
  const copyGBps = (2 * n * 4) / tCopy / 1e9;

  const m = 2048;
  const rng = new Rng(7);
  const x = randomTensor(rng, [m, m]);
  const w = randomTensor(rng, [m, m]);
  const c = Tensor.empty([m, m]);
  let gemmGFLOPS = NaN;
  try {
    const tGemm = timeRun(() => callNative('matmul', [c.handle, x.handle, w.handle, 0, 0, 1, m, m, m, 0, 0, 0, 1, 0]), 1, 3);
    gemmGFLOPS = (2 * m * m * m) / tGemm / 1e9;
  } catch (e) {
    process.stderr.write(`bench: sgemm ceiling unavailable: ${(e as Error).message}\n`);
  } finally {
    dispose([x, w, c]);
  }
  return { copyGBps, gemmGFLOPS };
}

export function runCase(c: BenchCase, ceilings: Ceilings): CaseResult {
  const inst = c.setup();
  try {
    const seconds = timeRun(inst.run);
    if (c.kind === 'memory') {
      const value = c.work / seconds / 1e9;
      return { suite: c.suite, name: c.name, value, unit: 'GB/s', fraction: value / ceilings.copyGBps, target: c.target, seconds };
    }
    const value = c.work / seconds / 1e9;
    return { suite: c.suite, name: c.name, value, unit: 'GFLOP/s', fraction: value / ceilings.gemmGFLOPS, target: c.target, seconds };
  } finally {
    inst.dispose();
  }
}
