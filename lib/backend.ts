/** Facts about the loaded backends: `backendInfo()` of the public API. */
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
