/**
 * Bench cases for the rmsnorm family, at a size far beyond the caches:
 * R = 8192 rows of C = 4096 (128 MiB per activation). Bytes counted honestly:
 *   forward  reads x, w; writes out, rstd:                   4·(2·R·C + C + R)
 *   backward reads dout, x, w, rstd and dw; writes dx and dw: 4·(3·R·C + 3·C + R)
 * (the per-block dw partials, 64·C floats, stay in cache and are not counted).
 * The kernels are called on preallocated outputs (the TS ops allocate theirs per call,
 * which would time page faults on fresh 128 MiB buffers, not the kernel).
 */
import { BenchCase, randomTensor } from '../harness';
import { Tensor, dispose, ops } from '../../lib';
import { callNative } from '../../lib/ops/dispatch';
import { Rng } from '../../lib/util/rng';

const R = 8192, C = 4096;

export function rmsnormCases(): BenchCase[] {
  const rng = new Rng(21);
  return [
    {
      suite: 'kernels',
      name: `rmsnorm_fwd ${R}x${C}`,
      kind: 'memory',
      work: 4 * (2 * R * C + C + R),
      target: 0.5,
      setup() {
        const x = randomTensor(rng, [R, C]), w = randomTensor(rng, [C]);
        const out = Tensor.empty([R, C]), rstd = Tensor.empty([R]);
        return {
          run: () => callNative('rmsnorm_fwd', [out.handle, rstd.handle, x.handle, w.handle, R, C, 1e-6]),
          dispose: () => dispose([x, w, out, rstd]),
        };
      },
    },
    {
      suite: 'kernels',
      name: `rmsnorm_bwd ${R}x${C} (dx and dw)`,
      kind: 'memory',
      work: 4 * (3 * R * C + 3 * C + R),
      target: 0.5,
      setup() {
        const x = randomTensor(rng, [R, C]), w = randomTensor(rng, [C]), dout = randomTensor(rng, [R, C]);
        const { out, rstd } = ops.rmsnorm(x, w, 1e-6);
        out.dispose();
        const dx = Tensor.empty([R, C]), dw = Tensor.zeros([C]);
        return {
          run: () => callNative('rmsnorm_bwd', [dx.handle, dw.handle, dout.handle, x.handle, w.handle, rstd.handle, R, C]),
          dispose: () => dispose([x, w, dout, rstd, dx, dw]),
        };
      },
    },
  ];
}
