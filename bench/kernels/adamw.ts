/**
 * Bench case for the adamw family at n = 16M parameters (64 MiB per tensor).
 * Bytes: reads p, m, v, g and writes p, m, v: 28·n.
 */
import { BenchCase, randomTensor } from '../harness';
import { Tensor, dispose, ops } from '../../lib';
import { Rng } from '../../lib/util/rng';

const N = 16 * 1024 * 1024;

export function adamwCases(): BenchCase[] {
  const rng = new Rng(25);
  return [
    {
      suite: 'kernels',
      name: `adamw_step n=${N}`,
      kind: 'memory',
      work: 28 * N,
      target: 0.5,
      setup() {
        const p = randomTensor(rng, [N]), g = randomTensor(rng, [N], 1e-3);
        const state = { m: Tensor.zeros([N]), v: Tensor.zeros([N]) };
        let step = 0;
        return {
          run: () => void ops.adamwStep(p, g, state, { lr: 1e-5, step: ++step }),
          dispose: () => dispose([p, g, state]),
        };
      },
    },
  ];
}
