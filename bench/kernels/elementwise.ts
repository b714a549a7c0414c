/** Bench cases for the elementwise family: sizes far beyond the last-level cache. */
import { BenchCase, randomTensor } from '../harness';
import { dispose, ops } from '../../lib';
import { Rng } from '../../lib/util/rng';

const N = 16 * 1024 * 1024; // 64 MiB per operand

export function elementwiseCases(): BenchCase[] {
  const rng = new Rng(11);
  return [
    {
      suite: 'kernels',
      name: `add n=${N}`,
      kind: 'memory',
      work: 3 * N * 4,
      target: 0.5,
      setup() {
        const a = randomTensor(rng, [N]), b = randomTensor(rng, [N]), o = randomTensor(rng, [N]);
        return { run: () => void ops.add(a, b, o), dispose: () => dispose([a, b, o]) };
      },
    },
    {
      suite: 'kernels',
      name: `gated_residual_fwd 4096x4096`,
      kind: 'memory',
      work: 3 * N * 4,
      target: 0.5,
      setup() {
        const x = randomTensor(rng, [4096, 4096]), f = randomTensor(rng, [4096, 4096]), o = randomTensor(rng, [4096, 4096]);
        const g = randomTensor(rng, [4096]);
        return { run: () => void ops.gatedResidual(x, f, g, o), dispose: () => dispose([x, f, o, g]) };
      },
    },
  ];
}
