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
}

export function backendInfo(): BackendInfo {
  const r = native().runtime_info();
  const devices: BackendInfo['devices'] = [{ type: 'cpu', name: `cpu (${r.threads} threads, ${r.simd})` }];
  for (let i = 0; i < r.cudaDevices; i++) devices.push({ type: 'cuda', name: `cuda:${i}` });
  return {
    cuda: r.cuda,
    devices,
    blas: r.blas,
    threads: r.threads,
    simd: r.simd,
    version: packageVersion(),
    memory: { allocatedBytes: r.allocatedBytes, peakBytes: r.peakBytes, liveBuffers: r.liveBuffers },
  };
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
