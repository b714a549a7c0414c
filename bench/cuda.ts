/**
 * CUDA suite: `npm run bench:cuda` = `node dist/bench/main.js --suite cuda [--json] [--out DIR] [--filter TEXT]`.
 *
 * Ceilings, measured in the same run on the GPU:
 *   copy   device-to-device tensor_copy of a 2 GiB float32 tensor (bytes read + written)
 *   GEMM   matmul fp32 A [8192, 8192] × bf16 B [8192, 8192]ᵀ (the Linear path: A cast to
 *          bf16, cuBLAS bf16 GEMM) — the ceiling of every compute-bound case; also reported:
 *          fp32 × fp32 (TF32) and the built-in tensor-core kernel (cuda_set_gemm_backend(1)).
 * Timing: warm-up, then N iterations (5–20) between two cuda_synchronize() calls, wall clock
 * (process.hrtime.bigint), median of 3 repeats. Memory-bound cases report GB/s of the bytes
 * the kernel really reads and writes (counted per op as in bench/kernels) and the fraction
 * of the copy ceiling; compute-bound cases TFLOP/s and the fraction of the bf16 GEMM ceiling.
 * Memory-bound cases work on ≥ 1 GB of data. Each case is independent: an exception is
 * recorded in its row and the suite goes on; GPU memory is freed between cases.
 * Decode case: a synthetic ~1.2B-parameter Llama (hidden 2048, 16 layers, bf16) on the GPU,
 * decode tokens/s with no routers vs attn-seq routers forcing 4/16 attention layers off
 * (target ≥ 1.2×); skipped with a note when the model classes cannot live on CUDA.
 * Without a usable GPU the suite prints "CUDA bench skipped: <reason>" and exits 0.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tensor, backendInfo, dispose, ops, tidy } from '../lib';
import { NativeCore, native } from '../lib/native';
import { callNative } from '../lib/ops/dispatch';
import { writeFileAtomic } from '../lib/util/atomic';
import { Rng } from '../lib/util/rng';
import { CausalLM } from '../lib/model/causal_lm';
import { randomModel, syntheticConfig } from '../lib/model/random';
import { generateBatch } from '../lib/infer/generate';
import type { ModelConfig } from '../lib/model/config';
import type { CaseResult } from './harness';

const SUITE = 'cuda';

export interface CudaSuiteOptions {
  json: boolean;
  /** Write results.json and results.md here (only when --out was given). */
  out?: string;
  filter?: string;
  /** The bench arguments, for the command line in results.md. */
  argv: string[];
}

/** A CPU-suite case row; `value` is NaN when the case failed or was skipped. */
export interface CudaResult extends CaseResult {
  error?: string;
  skipped?: string;
}

export interface CudaCeilings {
  /** D2D copy, GB/s of bytes read + written. */
  copyGBps: number;
  /** The bf16 GEMM rate in GFLOP/s (the §7 `gemmGFLOPS` key; = bf16GemmTFLOPS × 1000). */
  gemmGFLOPS: number;
  bf16GemmTFLOPS: number;
  tf32GemmTFLOPS: number;
  builtinGemmTFLOPS: number;
}

interface CudaCase {
  name: string;
  kind: 'memory' | 'compute';
  /** Bytes read + written (memory) or FLOPs (compute) per run. */
  work: number;
  target?: number;
  /** Allocates the inputs (every tensor made here is disposed after the case) and returns the timed body. */
  setup(): () => void;
}

// ---------------------------------------------------------------------------------------
// timing and data helpers

const sync = (): void => native().cuda_synchronize();
const now = (): bigint => process.hrtime.bigint();
const secondsSince = (t0: bigint): number => Number(now() - t0) / 1e9;

/**
 * Median seconds per run: `warmup` runs, then `repeats` batches of N runs (N from 5 to 20,
 * about 50 ms per batch; 2 when one run takes over 0.2 s), each between two synchronizes.
 */
export function timeCuda(run: () => void, opts: { warmup?: number; repeats?: number; minIters?: number; maxIters?: number } = {}): number {
  const warmup = opts.warmup ?? 2, repeats = opts.repeats ?? 3;
  const minIters = opts.minIters ?? 5, maxIters = opts.maxIters ?? 20;
  sync();
  for (let i = 0; i < warmup; i++) run();
  sync();
  let t0 = now();
  run();
  sync();
  const est = Math.max(secondsSince(t0), 1e-6);
  const iters = est > 0.2 ? 2 : Math.min(maxIters, Math.max(minIters, Math.ceil(0.05 / est)));
  const samples: number[] = [];
  for (let r = 0; r < repeats; r++) {
    sync();
    t0 = now();
    for (let i = 0; i < iters; i++) run();
    sync();
    samples.push(secondsSince(t0) / iters);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)];
}

const CHUNK = 1 << 22; // 4M elements of host-generated random data, tiled on the device

/** Uniform random values with standard deviation `std` (fast to generate). */
function randomChunk(n: number, std: number, rng: Rng): Float32Array {
  const a = std * Math.sqrt(3);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rng.uniform() * 2 - 1) * a;
  return out;
}

/**
 * A random tensor on the GPU: 4M random elements uploaded once and tiled with
 * device-to-device copies (generating GBs of random numbers in JS would take seconds).
 * The bandwidth cases read the big tensor's own addresses, so the period does not help caching.
 */
function cudaRandom(rng: Rng, shape: number[], std = 1, dtype: 'float32' | 'bfloat16' = 'float32'): Tensor {
  const t = Tensor.empty(shape, dtype, 'cuda');
  const n = t.numel;
  if (n === 0) return t;
  const m = Math.min(n, CHUNK);
  const src = Tensor.from(randomChunk(m, std, rng), [m], dtype, 'cuda');
  try {
    for (let off = 0; off < n; off += m) t.copyFrom(src, off, 0, Math.min(m, n - off));
  } catch (e) {
    t.dispose();
    throw e;
  } finally {
    src.dispose();
  }
  return t;
}

const cudaFilled = (shape: number[], value: number): Tensor => ops.fill(Tensor.empty(shape, 'float32', 'cuda'), value);
const cudaInts = (data: Int32Array, shape?: number[]): Tensor => Tensor.from(data, shape ?? [data.length], 'int32', 'cuda');

/** Returns the caching allocator's blocks to the driver (errors ignored: best effort). */
function freeGpu(): void {
  try {
    sync();
    native().cuda_empty_cache();
  } catch {
    /* nothing more to free */
  }
}

function errorMessage(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.split('\n')[0].slice(0, 300);
}

const GB = 1e9;
const TFLOP = 1e12;

// ---------------------------------------------------------------------------------------
// ceilings

function measureCudaCeilings(log: (s: string) => void, rows: CudaResult[]): CudaCeilings {
  const c: CudaCeilings = { copyGBps: NaN, gemmGFLOPS: NaN, bf16GemmTFLOPS: NaN, tf32GemmTFLOPS: NaN, builtinGemmTFLOPS: NaN };
  const attempt = (name: string, unit: string, body: () => { value: number; seconds: number; fraction?: number }): number => {
    try {
      const r = tidy(body);
      rows.push({ suite: SUITE, name, value: r.value, unit, fraction: r.fraction ?? NaN, seconds: r.seconds });
      return r.value;
    } catch (e) {
      const error = errorMessage(e);
      log(`  ${name}: failed: ${error}`);
      rows.push({ suite: SUITE, name, value: NaN, unit, fraction: NaN, seconds: NaN, error });
      return NaN;
    } finally {
      freeGpu();
    }
  };

  // 512M floats = 2 GiB, source and destination distinct
  const n = 512 * 1024 * 1024;
  c.copyGBps = attempt(`ceiling: D2D copy ${n} f32 (2 GiB, read + write)`, 'GB/s', () => {
    const a = cudaFilled([n], 1), b = Tensor.empty([n], 'float32', 'cuda');
    const s = timeCuda(() => b.copyFrom(a, 0, 0, n));
    return { value: (2 * n * 4) / s / GB, seconds: s };
  });

  const M = 8192;
  const flops = 2 * M * M * M;
  const gemm = (bDtype: 'float32' | 'bfloat16') => {
    const rng = new Rng(bDtype === 'bfloat16' ? 3 : 4);
    const a = cudaRandom(rng, [M, M]), b = cudaRandom(rng, [M, M], 1 / Math.sqrt(M), bDtype), out = Tensor.empty([M, M], 'float32', 'cuda');
    const s = timeCuda(() => void ops.matmul(a, b, { transB: true, out }), { maxIters: 10 });
    return { value: flops / s / TFLOP, seconds: s };
  };
  c.bf16GemmTFLOPS = attempt(`ceiling: GEMM f32 A·(bf16 B)ᵀ ${M}³ (A cast to bf16, bf16 GEMM)`, 'TFLOP/s', () => gemm('bfloat16'));
  c.gemmGFLOPS = c.bf16GemmTFLOPS * 1000;
  c.tf32GemmTFLOPS = attempt(`GEMM f32 A·(f32 B)ᵀ ${M}³ (TF32)`, 'TFLOP/s', () => {
    const r = gemm('float32');
    return { ...r, fraction: r.value / c.bf16GemmTFLOPS };
  });
  c.builtinGemmTFLOPS = attempt(`GEMM f32 A·(bf16 B)ᵀ ${M}³, built-in tensor-core kernel (gemm backend 1)`, 'TFLOP/s', () => {
    native().cuda_set_gemm_backend(1);
    try {
      const r = gemm('bfloat16');
      return { ...r, fraction: r.value / c.bf16GemmTFLOPS };
    } finally {
      native().cuda_set_gemm_backend(0);
    }
  });
  return c;
}

// ---------------------------------------------------------------------------------------
// kernel cases (the families of bench/kernels, at GPU sizes)

function kernelCases(): CudaCase[] {
  const rng = new Rng(41);
  const cases: CudaCase[] = [];

  // Router scoring + compaction: h [T, C] = 1 GiB; bytes of h read (outputs: a few numbers per row).
  {
    const T = 65536, C = 4096;
    cases.push({
      name: `router_token_fwd + compaction ${T}x${C} (τ = 0.5)`,
      kind: 'memory',
      work: T * C * 4,
      target: 0.7,
      setup() {
        const h = cudaRandom(rng, [T, C]), w = cudaRandom(rng, [C], 0.02);
        return () => dispose(ops.routerScoreTokens(h, w, 0.5));
      },
    });
  }

  // Gather / scatter half the rows of a 1 GiB residual stream (ascending, distinct, like execIdx).
  {
    const R = 65536, C = 4096, N = R / 2;
    const rows = () => {
      const keep = new Int32Array(N);
      for (let i = 0; i < N; i++) keep[i] = 2 * i + (rng.uniform() < 0.5 ? 0 : 1);
      return cudaInts(keep);
    };
    cases.push(
      {
        name: `gather_rows ${N} of ${R}x${C}`,
        kind: 'memory',
        work: 2 * N * C * 4,
        target: 0.7,
        setup() {
          const x = cudaRandom(rng, [R, C]), idx = rows(), out = Tensor.empty([N, C], 'float32', 'cuda');
          return () => void ops.gatherRows(x, idx, out);
        },
      },
      {
        name: `scatter_rows ${N} into ${R}x${C}`,
        kind: 'memory',
        work: 2 * N * C * 4,
        target: 0.7,
        setup() {
          const into = cudaRandom(rng, [R, C]), y = cudaRandom(rng, [N, C]), idx = rows();
          return () => void ops.scatterRows(into, y, idx);
        },
      },
    );
  }

  // RMSNorm forward: reads x, w; writes out, rstd (preallocated, as bench/kernels/rmsnorm.ts).
  {
    const R = 65536, C = 4096;
    cases.push({
      name: `rmsnorm_fwd ${R}x${C}`,
      kind: 'memory',
      work: 4 * (2 * R * C + C + R),
      target: 0.7,
      setup() {
        const x = cudaRandom(rng, [R, C]), w = cudaRandom(rng, [C]);
        const out = Tensor.empty([R, C], 'float32', 'cuda'), rstd = Tensor.empty([R], 'float32', 'cuda');
        return () => callNative('rmsnorm_fwd', [out.handle, rstd.handle, x.handle, w.handle, R, C, 1e-6]);
      },
    });
  }

  // RoPE forward: reads x, writes out (8·T·H·D) plus pos and invFreq.
  {
    const T = 65536, H = 32, D = 128;
    cases.push({
      name: `rope_fwd T=${T} H=${H} D=${D}`,
      kind: 'memory',
      work: 8 * T * H * D + 4 * T + 2 * D,
      target: 0.7,
      setup() {
        const x = cudaRandom(rng, [T, H, D]);
        const pos = cudaInts(Int32Array.from({ length: T }, (_, i) => i));
        const invFreq = Tensor.from(ops.ropeInvFreq(D, 500000), undefined, 'float32', 'cuda');
        const out = Tensor.empty([T, H, D], 'float32', 'cuda');
        return () => callNative('rope_fwd', [out.handle, x.handle, pos.handle, invFreq.handle, 1, T, H, D]);
      },
    });
  }

  // SwiGLU forward: reads gate, up; writes out (12·n), 1 GiB per operand.
  {
    const N = 256 * 1024 * 1024;
    cases.push({
      name: `swiglu_fwd n=${N}`,
      kind: 'memory',
      work: 12 * N,
      target: 0.7,
      setup() {
        const gate = cudaRandom(rng, [N], 3), up = cudaRandom(rng, [N]), out = Tensor.empty([N], 'float32', 'cuda');
        return () => void ops.swiglu(gate, up, out);
      },
    });
  }

  // Embedding forward: T rows of C gathered from a V×C table into 1 GiB of output.
  {
    const T = 131072, V = 32000, C = 2048;
    for (const dt of ['float32', 'bfloat16'] as const) {
      cases.push({
        name: `embedding fwd ${T} tokens x ${C} from ${V}x${C} ${dt === 'float32' ? 'f32' : 'bf16'}`,
        kind: 'memory',
        work: T * C * ((dt === 'float32' ? 4 : 2) + 4),
        setup() {
          const table = cudaRandom(rng, [V, C], 1, dt), ids = cudaInts(rng.ints(T, 0, V)), out = Tensor.empty([T, C], 'float32', 'cuda');
          return () => void ops.embedding(ids, table, out);
        },
      });
    }
  }

  // Cross-entropy forward: reads the logits once (1.05 GB) plus targets, writes lse.
  {
    const T = 8192, V = 32000;
    cases.push({
      name: `cross_entropy_fwd T=${T} V=${V}`,
      kind: 'memory',
      work: 4 * T * V + 8 * T,
      setup() {
        const logits = cudaRandom(rng, [T, V], 2), targets = cudaInts(rng.ints(T, 0, V));
        return () => ops.crossEntropy(logits, targets).lse.dispose();
      },
    });
  }

  // AdamW: reads p, m, v, g; writes p, m, v (28·n), 1 GiB per tensor.
  {
    const N = 256 * 1024 * 1024;
    cases.push({
      name: `adamw_step n=${N}`,
      kind: 'memory',
      work: 28 * N,
      setup() {
        const p = cudaRandom(rng, [N]), g = cudaRandom(rng, [N], 1e-3);
        const state = { m: cudaFilled([N], 0), v: cudaFilled([N], 0) };
        let step = 0;
        return () => void ops.adamwStep(p, g, state, { lr: 1e-5, step: ++step });
      },
    });
  }

  // Attention prefill, causal: forward 4·B·H·T²·D / 2 FLOPs, backward 2.5× that.
  {
    const B = 1, T = 4096, H = 32, D = 128;
    const fwdFlops = (4 * B * H * T * T * D) / 2;
    const tag = `B=${B} T=${T} H=${H} D=${D} causal`;
    cases.push(
      {
        name: `attention_fwd ${tag} (4·B·H·T²·D/2 FLOPs)`,
        kind: 'compute',
        work: fwdFlops,
        target: 0.4,
        setup() {
          const q = cudaRandom(rng, [B, T, H, D]), k = cudaRandom(rng, [B, T, H, D]), v = cudaRandom(rng, [B, T, H, D]);
          return () => tidy(() => void ops.attention(q, k, v));
        },
      },
      {
        name: `attention_bwd ${tag} (2.5× fwd FLOPs)`,
        kind: 'compute',
        work: 2.5 * fwdFlops,
        setup() {
          const q = cudaRandom(rng, [B, T, H, D]), k = cudaRandom(rng, [B, T, H, D]), v = cudaRandom(rng, [B, T, H, D]);
          const { out, lse } = ops.attention(q, k, v);
          const dout = cudaRandom(rng, [B, T, H, D]);
          return () => tidy(() => void ops.attentionBackward(dout, q, k, v, out, lse));
        },
      },
    );
  }

  // MoE experts forward, bf16 weights: 3 GEMMs of 2·A·C·I FLOPs, A = T·K live assignments.
  {
    const T = 8192, E = 8, K = 2, C = 2048, I = 5632;
    cases.push({
      name: `moe forward T=${T} E=${E} top-${K} C=${C} I=${I} bf16 weights (3·2·T·K·C·I FLOPs)`,
      kind: 'compute',
      work: 3 * 2 * T * K * C * I,
      setup() {
        const W = {
          gate: cudaRandom(rng, [E, I, C], 1 / Math.sqrt(C), 'bfloat16'),
          up: cudaRandom(rng, [E, I, C], 1 / Math.sqrt(C), 'bfloat16'),
          down: cudaRandom(rng, [E, C, I], 1 / Math.sqrt(I), 'bfloat16'),
        };
        const x = cudaRandom(rng, [T, C]);
        // host-generated logits: a realistic, uneven top-2 spread over the experts
        const logits = Tensor.from(randomChunk(T * E, 1, rng), [T, E], 'float32', 'cuda');
        return () =>
          tidy(() => {
            const { out, cache } = ops.moeForward(x, logits, W, { topK: K, renorm: true });
            dispose([out, cache]);
          });
      },
    });
  }

  // The Linear GEMMs of a 1B Llama layer at T = 2048 (x f32, W bf16 [out, in], transB).
  {
    const T = 2048, Cin = 2048;
    for (const outF of [2048, 5632]) {
      cases.push({
        name: `linear x·Wᵀ ${T}x${Cin} · (${outF}x${Cin})ᵀ bf16 W`,
        kind: 'compute',
        work: 2 * T * outF * Cin,
        setup() {
          const x = cudaRandom(rng, [T, Cin]), w = cudaRandom(rng, [outF, Cin], 1 / Math.sqrt(Cin), 'bfloat16');
          const out = Tensor.empty([T, outF], 'float32', 'cuda');
          return () => void ops.matmul(x, w, { transB: true, out });
        },
      });
    }
  }
  return cases;
}

function runKernelCase(c: CudaCase, ceilings: CudaCeilings): CudaResult {
  const base = { suite: SUITE, name: c.name, unit: c.kind === 'memory' ? 'GB/s' : 'TFLOP/s', target: c.target };
  try {
    // every tensor the setup makes is disposed when the tidy ends, also when it throws
    const seconds = tidy(() => timeCuda(c.setup()));
    const value = c.kind === 'memory' ? c.work / seconds / GB : c.work / seconds / TFLOP;
    const fraction = value / (c.kind === 'memory' ? ceilings.copyGBps : ceilings.bf16GemmTFLOPS);
    return { ...base, value, fraction, seconds };
  } catch (e) {
    return { ...base, value: NaN, fraction: NaN, seconds: NaN, error: errorMessage(e) };
  } finally {
    freeGpu();
  }
}

// ---------------------------------------------------------------------------------------
// decode speedup with 25% of the attention layers skipped at sequence level

class Unavailable extends Error {}

/** The devices holding a model's weights ('mixed' when they differ). */
function modelDevice(m: CausalLM): string {
  const devs = new Set<string>();
  const walk = (v: unknown, depth: number): void => {
    if (depth > 5 || v === null || typeof v !== 'object') return;
    if (v instanceof Tensor) {
      devs.add(v.device);
      return;
    }
    if (Array.isArray(v)) for (const x of v) walk(x, depth + 1);
    else if (Object.getPrototypeOf(v) === Object.prototype) for (const x of Object.values(v as object)) walk(x, depth + 1);
  };
  walk(m.weights, 0);
  if (devs.size === 0) return String((m as unknown as { device?: unknown }).device ?? 'unknown');
  return devs.size === 1 ? [...devs][0] : 'mixed';
}

type RandomModelWithDevice = (cfg: ModelConfig, opts: Record<string, unknown>) => CausalLM;

/**
 * A random bf16 model on the GPU, through whichever API the model classes offer:
 * randomModel(cfg, { device: 'cuda' }) or model.to('cuda'). Returns every model object to
 * dispose (a copying to() leaves the CPU original). Throws Unavailable when neither works.
 */
async function randomModelOnCuda(cfg: ModelConfig, seed: number): Promise<{ model: CausalLM; owned: CausalLM[] }> {
  const owned: CausalLM[] = [];
  try {
    const m0 = (randomModel as unknown as RandomModelWithDevice)(cfg, { seed, dtype: 'bfloat16', device: 'cuda' });
    owned.push(m0);
    if (modelDevice(m0) === 'cuda') return { model: m0, owned };
    const to = (m0 as unknown as { to?: (device: string) => unknown }).to;
    if (typeof to !== 'function') throw new Unavailable('randomModel ignores { device } and CausalLM has no to(device)');
    let moved = to.call(m0, 'cuda');
    if (moved && typeof (moved as Promise<unknown>).then === 'function') moved = await moved;
    const m1 = moved instanceof CausalLM ? moved : m0;
    if (m1 !== m0) owned.push(m1);
    const dev = modelDevice(m1);
    if (dev !== 'cuda') throw new Unavailable(`model.to('cuda') left the weights on ${dev}`);
    return { model: m1, owned };
  } catch (e) {
    // a copy may share tensors with its original: dispose the copy first (dispose is idempotent)
    for (const m of owned.reverse()) m.dispose();
    throw e;
  }
}

function disposeModels(owned: CausalLM[]): void {
  for (const m of [...owned].reverse()) {
    try {
      m.dispose();
    } catch {
      /* already gone */
    }
  }
}

/**
 * Routers on every layer at attn-seq (as bench/skip.ts); `off` layers are forced off
 * (τ 0.99 > σ(0) with zero weights), the others on (τ 0.01).
 */
function attachForcedRouters(model: CausalLM, off: number[]): void {
  const L = model.config.numLayers;
  // attachRouters places the weights on the model's device (where the API has devices)
  const r = model.attachRouters({ granularity: 'attn-seq', layers: [...Array(L).keys()] });
  for (let l = 0; l < L; l++) r.thresholds.set(l, off.includes(l) ? 0.99 : 0.01);
  if (modelDevice(model) !== 'cuda') return;
  const rr = r as unknown as { to?: (device: string) => unknown };
  if (typeof rr.to === 'function') {
    rr.to('cuda'); // a no-op when already there
    return;
  }
  for (const [l, w] of [...r.weights]) {
    if (w.device === 'cuda') continue;
    r.weights.set(l, w.to('cuda').keep());
    w.dispose();
  }
}

function detachRouters(model: CausalLM): void {
  model.routers?.dispose();
  model.routers = undefined;
}

async function decodeCases(log: (s: string) => void): Promise<CudaResult[]> {
  const L = 16, C = 2048, I = 5632, V = 32000, Hq = 32, Hkv = 8, D = C / Hq;
  const off = [7, 9, 11, 13]; // 25% of the attention layers
  const promptLen = 128, decodeSteps = 64;
  const tag = `Llama ${L}L C=${C} I=${I} bf16, prompt ${promptLen}, ${decodeSteps} greedy steps`;
  const skippedRow = (why: string): CudaResult[] => [
    { suite: SUITE, name: `decode speedup, ${off.length}/${L} attention layers skipped (attn-seq), ${tag}`, value: NaN, unit: 'x', fraction: NaN, target: 1.2, seconds: NaN, higherIsBetter: true, skipped: why },
  ];

  // Probe with a tiny model first: no 10-second build of 1.2B parameters for nothing.
  const tiny = syntheticConfig({ vocab_size: 256, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 });
  try {
    const probe = await randomModelOnCuda(tiny, 1);
    disposeModels(probe.owned);
  } catch (e) {
    const why = e instanceof Unavailable ? e.message : errorMessage(e);
    log(`  decode case skipped: model on CUDA not available (${why})`);
    return skippedRow(`model on CUDA not available (${why})`);
  } finally {
    freeGpu();
  }

  const cfg = syntheticConfig({ vocab_size: V, hidden_size: C, intermediate_size: I, num_hidden_layers: L, num_attention_heads: Hq, num_key_value_heads: Hkv });
  log(`  building the ${tag.split(',')[0]} synthetic model (~1.2B parameters) on the GPU …`);
  const t0 = now();
  let built: { model: CausalLM; owned: CausalLM[] };
  try {
    built = await randomModelOnCuda(cfg, 1);
  } catch (e) {
    freeGpu();
    if (e instanceof Unavailable) return skippedRow(`model on CUDA not available (${e.message})`);
    throw e;
  }
  log(`  built in ${secondsSince(t0).toFixed(1)} s`);
  const { model, owned } = built;
  const rng = new Rng(5);
  const prompt = Array.from({ length: promptLen }, () => 3 + Math.floor(rng.uniform() * (V - 3)));
  type Stats = Awaited<ReturnType<typeof generateBatch>>[number]['stats'];
  const settings = [
    { name: 'no routers', attach: () => detachRouters(model) },
    { name: `attn-seq routers, layers ${off.join(',')} forced off`, attach: () => attachForcedRouters(model, off) },
  ];
  const runs: Stats[][] = settings.map(() => []);
  try {
    for (const s of settings) {
      s.attach();
      await generateBatch(model, [prompt.slice(0, 32)], { maxTokens: 4, stopAtEos: false }); // warm-up
    }
    // interleaved repeats (drift hits both settings alike); maxTokens = steps + 1: the first
    // token comes from the prefill logits, each further one costs a decode forward
    for (let rep = 0; rep < 3; rep++)
      for (let i = 0; i < settings.length; i++) {
        settings[i].attach();
        runs[i].push((await generateBatch(model, [prompt], { maxTokens: decodeSteps + 1, stopAtEos: false }))[0].stats);
      }
  } finally {
    detachRouters(model);
    disposeModels(owned);
    freeGpu();
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const out: CudaResult[] = [];
  const decode = runs.map((r) => med(r.map((x) => x.decodeTokensPerSecond)));
  const prefill = runs.map((r) => med(r.map((x) => x.prefillTokensPerSecond)));
  settings.forEach((s, i) => {
    const skip = runs[i][0].skipRatio;
    const name = `${s.name} (skip ${(skip * 100).toFixed(0)}%), ${tag}`;
    out.push({ suite: SUITE, name: `prefill tok/s, ${name}`, value: prefill[i], unit: 'tok/s', fraction: NaN, seconds: promptLen / prefill[i] });
    out.push({ suite: SUITE, name: `decode tok/s, ${name}`, value: decode[i], unit: 'tok/s', fraction: NaN, seconds: 1 / decode[i] });
  });
  // ideal from the bytes a decode step reads: bf16 weights, f32 K/V at the mean context, lm head
  const ctx = promptLen + decodeSteps / 2;
  const attnB = 2 * (2 * C * Hq * D + 2 * C * Hkv * D) + 2 * ctx * Hkv * D * 4, mlpB = 2 * 3 * C * I;
  const bytes = L * (attnB + mlpB) + 2 * C * V;
  const ideal = bytes / (bytes - off.length * attnB);
  const speedup = decode[1] / decode[0];
  log(`  decode ${decode[0].toFixed(1)} → ${decode[1].toFixed(1)} tok/s: ${speedup.toFixed(3)}× (bytes-ideal ${ideal.toFixed(3)}×, target ≥ 1.2×)`);
  out.push({
    suite: SUITE,
    name: `decode speedup, ${off.length}/${L} attention layers skipped (attn-seq; bytes-ideal ${ideal.toFixed(3)}×), ${tag}`,
    value: speedup,
    unit: 'x',
    fraction: NaN,
    target: 1.2,
    seconds: 0,
    higherIsBetter: true,
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// reporting

function fmt(n: number, digits = 2): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '–';
}

function met(r: CudaResult): string {
  if (r.target === undefined || r.error || r.skipped) return '';
  const ok = r.higherIsBetter ? r.value >= r.target : r.fraction >= r.target;
  return ok ? 'yes' : '**no**';
}

function markdownTable(results: CudaResult[]): string {
  const lines = ['| case | time (ms) | rate | fraction of ceiling | target | met |', '|---|---:|---:|---:|---:|:-:|'];
  for (const r of results) {
    const name = r.name.replace(/\|/g, '\\|');
    if (r.error || r.skipped) {
      const note = (r.error ? `error: ${r.error}` : `skipped: ${r.skipped}`).replace(/\|/g, '\\|');
      lines.push(`| ${name} | | ${note} | | | |`);
      continue;
    }
    const time = Number.isFinite(r.seconds) && r.seconds > 0 ? fmt(r.seconds * 1e3, 3) : '';
    const frac = Number.isFinite(r.fraction) ? `${fmt(r.fraction * 100, 1)}%` : '';
    const target = r.target === undefined ? '' : r.higherIsBetter ? `≥ ${r.target}` : `${fmt(r.target * 100, 0)}%`;
    lines.push(`| ${name} | ${time} | ${fmt(r.value, r.unit === 'x' ? 3 : 2)} ${r.unit} | ${frac} | ${target} | ${met(r)} |`);
  }
  return lines.join('\n');
}

function logRow(log: (s: string) => void, r: CudaResult): void {
  if (r.error) log(`  ${r.name.padEnd(72)} error: ${r.error}`);
  else if (r.skipped) log(`  ${r.name.padEnd(72)} skipped: ${r.skipped}`);
  else {
    const frac = Number.isFinite(r.fraction) ? `${fmt(r.fraction * 100, 1).padStart(6)}%` : '';
    log(`  ${r.name.padEnd(72)} ${fmt(r.value, r.unit === 'x' ? 3 : 1).padStart(9)} ${r.unit.padEnd(7)} ${frac}`);
  }
}

function jsonCase(r: CudaResult): Record<string, unknown> {
  return {
    suite: r.suite,
    name: r.name,
    value: Number.isFinite(r.value) ? r.value : null,
    unit: r.unit,
    ...(Number.isFinite(r.fraction) ? { fraction: r.fraction } : {}),
    ...(r.target !== undefined ? { target: r.target } : {}),
    ...(Number.isFinite(r.seconds) ? { seconds: r.seconds } : {}),
    ...(r.error ? { error: r.error } : {}),
    ...(r.skipped ? { skipped: r.skipped } : {}),
  };
}

function machine(): Record<string, unknown> {
  const info = backendInfo();
  let rt: ReturnType<NativeCore['runtime_info']> | undefined;
  try {
    rt = native().runtime_info();
  } catch {
    rt = undefined;
  }
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    threads: info.threads,
    node: process.version,
    version: info.version,
    cuda: info.cuda,
    cudaDevices: rt?.cudaDevices ?? 0,
    ...(rt?.cudaDevice ? { gpu: rt.cudaDevice } : {}),
    ...(rt?.cudaBlas ? { cudaBlas: rt.cudaBlas } : {}),
  };
}

/** Why CUDA cannot be used, or undefined when it can. */
function cudaUnavailable(): string | undefined {
  let info;
  try {
    info = backendInfo();
  } catch (e) {
    return `the native addon did not load: ${errorMessage(e)}`;
  }
  const n = native() as unknown as Record<string, unknown>;
  if (typeof n.cuda_synchronize !== 'function') return 'the native addon has no CUDA entry points (stale build?)';
  if (info.cuda) return undefined;
  // the backend's own words: "built without CUDA …" or the driver's error
  try {
    native().cuda_synchronize();
  } catch (e) {
    return errorMessage(e);
  }
  return 'backendInfo().cuda is false (no usable CUDA device)';
}

function writeOutputs(opts: CudaSuiteOptions, report: object, md: string): void {
  if (!opts.out) return;
  fs.mkdirSync(opts.out, { recursive: true });
  writeFileAtomic(path.join(opts.out, 'results.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileAtomic(path.join(opts.out, 'results.md'), md);
}

/** Runs the CUDA suite; returns the exit code (0 also when skipped for want of a GPU). */
export async function runCudaSuite(opts: CudaSuiteOptions): Promise<number> {
  const log = (s: string) => (opts.json ? process.stderr : process.stdout).write(s + '\n');
  const cmd = `npm run bench -- ${opts.argv.join(' ')}`.trim();
  const mach = machine();
  const reason = cudaUnavailable();
  if (reason) {
    log(`CUDA bench skipped: ${reason}`);
    const report = { skipped: true, reason, machine: mach, ceilings: {}, cases: [] };
    writeOutputs(opts, report, [`# Bench: cuda`, '', `Command: \`${cmd}\``, '', `CUDA bench skipped: ${reason}`, ''].join('\n'));
    if (opts.json) process.stdout.write(JSON.stringify(report) + '\n');
    return 0;
  }
  const started = now();
  log(`machine: ${mach.cpu}, ${mach.cores} cores; GPU ${mach.gpu ?? 'cuda:0'} (${mach.cudaBlas ?? 'unknown BLAS'})`);
  log('measuring GPU ceilings (2 GiB D2D copy, 8192³ GEMMs) …');
  const results: CudaResult[] = [];
  const ceilings = measureCudaCeilings(log, results);
  for (const r of results) logRow(log, r);
  log(`ceilings: copy ${fmt(ceilings.copyGBps, 1)} GB/s, bf16 GEMM ${fmt(ceilings.bf16GemmTFLOPS, 1)} TFLOP/s (TF32 ${fmt(ceilings.tf32GemmTFLOPS, 1)}, built-in ${fmt(ceilings.builtinGemmTFLOPS, 1)})`);
  const want = (name: string) => !opts.filter || name.includes(opts.filter);
  for (const c of kernelCases()) {
    if (!want(c.name)) continue;
    const r = runKernelCase(c, ceilings);
    results.push(r);
    logRow(log, r);
  }
  if (!opts.filter || 'decode'.includes(opts.filter) || opts.filter.includes('decode')) {
    try {
      for (const r of await decodeCases(log)) {
        results.push(r);
        logRow(log, r);
      }
    } catch (e) {
      const r: CudaResult = { suite: SUITE, name: 'decode speedup (attn-seq, 25% of attention layers skipped)', value: NaN, unit: 'x', fraction: NaN, target: 1.2, seconds: NaN, higherIsBetter: true, error: errorMessage(e) };
      results.push(r);
      logRow(log, r);
    } finally {
      freeGpu();
    }
  }
  const wall = secondsSince(started);
  log(`cuda suite: ${wall.toFixed(1)} s`);
  const finite = Object.fromEntries(Object.entries(ceilings).filter(([, v]) => Number.isFinite(v)));
  const report = { machine: mach, ceilings: finite, cases: results.map(jsonCase), seconds: wall };
  const md = [
    `# Bench: cuda`,
    '',
    `Command: \`${cmd}\``,
    '',
    `Machine: GPU ${mach.gpu ?? 'cuda:0'} (${mach.cudaBlas ?? 'unknown BLAS'}), host ${mach.cpu}, ${mach.cores} cores, ${mach.memoryGiB} GiB, Node ${mach.node}`,
    '',
    `Ceilings (same run): D2D copy ${fmt(ceilings.copyGBps, 1)} GB/s (read + write), bf16 GEMM 8192³ ${fmt(ceilings.bf16GemmTFLOPS, 1)} TFLOP/s ` +
      `(TF32 ${fmt(ceilings.tf32GemmTFLOPS, 1)}, built-in kernel ${fmt(ceilings.builtinGemmTFLOPS, 1)}). Memory-bound fractions are of the copy rate, compute-bound ones of the bf16 GEMM rate.`,
    '',
    markdownTable(results),
    '',
    `Suite wall time: ${wall.toFixed(1)} s`,
    '',
  ].join('\n');
  writeOutputs(opts, report, md);
  if (opts.json) process.stdout.write(JSON.stringify(report) + '\n');
  else if (opts.out) log(`\nwrote ${path.join(opts.out, 'results.md')}`);
  return 0;
}
