/**
 * Bench cases for gather / scatter: half the rows of a 16384×4096 residual stream
 * (what token-level skipping at a 50% skip ratio moves). Memory-bound: the work is
 * the bytes read and written.
 */
import { BenchCase, randomTensor } from '../harness';
import { Tensor, dispose, ops } from '../../lib';
import { Rng } from '../../lib/util/rng';

const R = 16384, C = 4096, N = R / 2;

export function gatherScatterCases(): BenchCase[] {
  const rng = new Rng(23);
  // every other row plus a shuffle of where the gaps are: ascending, distinct (like execIdx)
  const rows = () => {
    const keep: number[] = [];
    for (let r = 0; r < R; r += 2) keep.push(r + (rng.uniform() < 0.5 ? 0 : 1));
    return Tensor.from(Int32Array.from(keep), [N], 'int32');
  };
  return [
    {
      suite: 'kernels',
      name: `gather_rows ${N} of ${R}x${C}`,
      kind: 'memory',
      work: 2 * N * C * 4,
      target: 0.5,
      setup() {
        const x = randomTensor(rng, [R, C]), idx = rows(), out = Tensor.empty([N, C]);
        // into a preallocated output: a fresh 128 MiB tensor per run would time page faults, not the gather
        return { run: () => void ops.gatherRows(x, idx, out), dispose: () => dispose([x, idx, out]) };
      },
    },
    {
      suite: 'kernels',
      name: `scatter_rows ${N} into ${R}x${C}`,
      kind: 'memory',
      work: 2 * N * C * 4,
      target: 0.5,
      setup() {
        const into = randomTensor(rng, [R, C]), y = randomTensor(rng, [N, C]), idx = rows();
        return { run: () => void ops.scatterRows(into, y, idx), dispose: () => dispose([into, y, idx]) };
      },
    },
    {
      suite: 'kernels',
      name: `scatter_rows accumulate ${N} into ${R}x${C}`,
      kind: 'memory',
      work: 3 * N * C * 4,
      target: 0.5,
      setup() {
        const into = randomTensor(rng, [R, C]), y = randomTensor(rng, [N, C], 1e-3), idx = rows();
        return { run: () => void ops.scatterRows(into, y, idx, { accumulate: true }), dispose: () => dispose([into, y, idx]) };
      },
    },
    {
      suite: 'kernels',
      name: `scatter_rows accumulate, repeated indices ${N} into ${R}x${C}`,
      kind: 'memory',
      work: 3 * N * C * 4,
      target: 0.5,
      setup() {
        const into = randomTensor(rng, [R, C]), y = randomTensor(rng, [N, C], 1e-3);
        const idx = Tensor.from(Int32Array.from({ length: N }, (_, n) => Math.floor(n / 2) * 2), [N], 'int32');
        return { run: () => void ops.scatterRows(into, y, idx, { accumulate: true }), dispose: () => dispose([into, y, idx]) };
      },
    },
  ];
}
