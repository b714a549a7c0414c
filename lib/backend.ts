/** Facts about the loaded backends: `backendInfo()` of the public API. */
import { ArgumentError } from './errors';
import { native } from './native';

export interface BackendInfo {
  cuda: boolean;
  devices: { type: 'cpu' | 'cuda'; name: string }[];
  blas: string;
  threads: number;
  simd: string;
  version: string;
  memory: { allocatedBytes: number; peakBytes: number; liveBuffers: number };
  /** GEMM library of the CUDA backend ("cublas …" found at run time, or "builtin"). */
  cudaBlas?: string;
  /** Device memory of the CUDA caching allocator. */
  cudaMemory?: { allocatedBytes: number; peakBytes: number; cachedBytes: number; liveBuffers: number };
  /** Why CUDA is unavailable (built without nvcc, no GPU, driver error). */
  cudaReason?: string;
}

export function backendInfo(): BackendInfo {
  const r = native().runtime_info();
  const devices: BackendInfo['devices'] = [{ type: 'cpu', name: `cpu (${r.threads} threads, ${r.simd})` }];
  if (r.cuda) devices.push({ type: 'cuda', name: `cuda:0 ${r.cudaDevice ?? ''}`.trim() });
  const info: BackendInfo = {
    cuda: r.cuda,
    devices,
    blas: r.blas,
    threads: r.threads,
    simd: r.simd,
    version: packageVersion(),
    memory: { allocatedBytes: r.allocatedBytes, peakBytes: r.peakBytes, liveBuffers: r.liveBuffers },
  };
  if (r.cuda) {
    info.cudaBlas = r.cudaBlas;
    info.cudaMemory = {
      allocatedBytes: r.cudaAllocatedBytes ?? 0,
      peakBytes: r.cudaPeakBytes ?? 0,
      cachedBytes: r.cudaCachedBytes ?? 0,
      liveBuffers: r.cudaLiveBuffers ?? 0,
    };
  } else {
    info.cudaReason = r.cudaReason;
  }
  return info;
}

/** Resizes the engine's thread pool (default RT_NUM_THREADS or all cores). */
export function setNumThreads(n: number): void {
  native().set_num_threads(n);
}

/** CPU compute dtype of GEMMs whose weights are stored in bfloat16 (see setComputeDtype). */
export type ComputeDtype = 'float32' | 'bfloat16';

interface ComputeDtypeNative {
  set_compute_dtype(code: number, emulate: number): void;
  compute_dtype(): { dtype: number; bf16Native: boolean };
}
const computeNative = () => native() as unknown as ComputeDtypeNative;

/**
 * Selects how the CPU multiplies by weights stored in bfloat16 (process-wide; default
 * 'float32'). 'float32' widens the weights and multiplies in fp32. 'bfloat16' rounds the
 * activations to bf16 per GEMM and multiplies in bf16 with fp32 accumulation: AVX-512
 * BF16 (vdpbf16ps) where the CPU has it, widened fp32 arithmetic on the same rounded
 * values elsewhere. Only compute-bound GEMMs (more than 16 rows) change; decoding
 * (one row per sequence) reads bf16 weights either way. Weights become bf16 at load:
 * `loadModel(dir, { dtype: 'bfloat16' })` — which is loadModel's default while the compute
 * dtype is 'bfloat16' — or randomModel(cfg, { dtype: 'bfloat16' }).
 */
export function setComputeDtype(dtype: ComputeDtype, opts: { emulate?: boolean } = {}): void {
  if (dtype !== 'float32' && dtype !== 'bfloat16')
    throw new ArgumentError(`setComputeDtype: 'dtype' expected 'float32' or 'bfloat16', received ${String(dtype)}`);
  // emulate (tests): the fallback of CPUs without AVX512_BF16, on any CPU
  computeNative().set_compute_dtype(dtype === 'bfloat16' ? 1 : 0, opts.emulate ? 1 : 0);
}

/** The current compute dtype, and whether this CPU runs bf16 natively (AVX512_BF16). */
export function computeDtype(): { dtype: ComputeDtype; bf16Native: boolean } {
  const r = computeNative().compute_dtype();
  return { dtype: r.dtype === 1 ? 'bfloat16' : 'float32', bf16Native: r.bf16Native };
}

function packageVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const pkg = require(rel);
      if (pkg.name === 'router-tuning') return pkg.version;
    } catch {
      /* try the next location */
    }
  }
  return '0.0.0';
}
