/**
 * Loads the native addon (CPU kernels, optional CUDA) through node-gyp-build:
 * prebuilds/ first, then build/Release. RT_ADDON=/path/to/router_tuning.node
 * overrides the search (used for side-by-side builds and sanitizer variants).
 * Each op module declares the typed subset of the addon it calls.
 */
import * as path from 'path';
import { RouterTuningError } from './errors';

export type NativeHandle = object & { readonly __rtHandle?: never };

/** Core runtime functions every module may use; op families add their own typed views. */
export interface NativeCore {
  tensor_alloc(numel: number, dtype: number, device?: number): NativeHandle;
  tensor_free(h: NativeHandle): void;
  tensor_write(h: NativeHandle, data: Float32Array | Int32Array | Uint16Array, offset: number): void;
  tensor_read(h: NativeHandle, data: Float32Array | Int32Array | Uint16Array, offset: number): void;
  tensor_copy(dst: NativeHandle, src: NativeHandle, dstOffset: number, srcOffset: number, count: number): void;
  tensor_info(h: NativeHandle): { numel: number; bytes: number; dtype: number; disposed: boolean; device: string };
  runtime_info(): {
    threads: number;
    simd: string;
    blas: string;
    cuda: boolean;
    cudaDevices: number;
    cudaDevice?: string;
    cudaReason?: string;
    cudaBlas?: string;
    cudaAllocatedBytes?: number;
    cudaPeakBytes?: number;
    cudaCachedBytes?: number;
    cudaLiveBuffers?: number;
    allocatedBytes: number;
    peakBytes: number;
    liveBuffers: number;
  };
  set_num_threads(n: number): void;
  cuda_synchronize(): void;
  cuda_empty_cache(): void;
  cuda_set_gemm_backend(backend: number): void;
  abiVersion: number;
}

let cached: (NativeCore & Record<string, unknown>) | undefined;

function loadAddon(): NativeCore & Record<string, unknown> {
  const override = process.env.RT_ADDON;
  const root = path.join(__dirname, '..', fs_exists(path.join(__dirname, '..', 'binding.gyp')) ? '' : '..');
  const attempts: string[] = [];
  if (override) {
    try {
      return require(path.resolve(override));
    } catch (e) {
      attempts.push(`RT_ADDON=${override}: ${(e as Error).message}`);
    }
  } else {
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const load = require('node-gyp-build') as (dir: string) => unknown;
      return load(root) as NativeCore & Record<string, unknown>;
    } catch (e) {
      attempts.push(`node-gyp-build(${root}): ${(e as Error).message}`);
    }
  }
  throw new RouterTuningError(
    'RT_ERR_LOAD',
    `router-tuning: could not load the native addon for ${process.platform}-${process.arch} ` +
      `(node ${process.versions.node}, abi ${process.versions.modules}).\n  ` +
      attempts.join('\n  ') +
      `\nFix: run \`npm run build\` in the package folder (needs g++ and libopenblas-dev), or set RT_ADDON to a built router_tuning.node.`,
  );
}

function fs_exists(p: string): boolean {
  try {
    require('fs').accessSync(p);
    return true;
  } catch {
    return false;
  }
}

/** The loaded addon (loaded on first use). */
export function native<T = NativeCore>(): T & NativeCore {
  if (!cached) cached = loadAddon();
  return cached as unknown as T & NativeCore;
}
