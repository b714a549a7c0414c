/**
 * Bench cases for the MoE family at a Mixtral-like small shape: T = 512 tokens, E = 8
 * experts, top-2, C = 1024, I = 2816. GEMM-bound: the work is 3·2·A·C·I FLOPs (A = T·K
 * live assignments) for the forward, the same for the dx-only backward (dH = dy·Wd,
 * dX = dG·Wg + dU·Wu), against the sgemm ceiling.
 */
import { BenchCase, randomTensor } from '../harness';
import { dispose, ops } from '../../lib';
import { Rng } from '../../lib/util/rng';

const T = 512, E = 8, K = 2, C = 1024, I = 2816;
const A = T * K;
const FLOPS = 3 * 2 * A * C * I;

function experts(rng: Rng, dtype: 'float32' | 'bfloat16') {
  return {
    gate: randomTensor(rng, [E, I, C], 1 / 32, dtype),
    up: randomTensor(rng, [E, I, C], 1 / 32, dtype),
    down: randomTensor(rng, [E, C, I], 1 / 53, dtype),
  };
}

export function moeCases(): BenchCase[] {
  const rng = new Rng(29);
  const fwd = (dtype: 'float32' | 'bfloat16'): BenchCase => ({
    suite: 'kernels',
    name: `moe forward T=${T} E=${E} K=${K} C=${C} I=${I} ${dtype} weights`,
    kind: 'compute',
    work: FLOPS,
    target: 0.7,
    setup() {
      const W = experts(rng, dtype), x = randomTensor(rng, [T, C]), logits = randomTensor(rng, [T, E]);
      return {
        run: () => {
          const { out, cache } = ops.moeForward(x, logits, W, { topK: K, renorm: true });
          dispose([out, cache]);
        },
        dispose: () => dispose([W, x, logits]),
      };
    },
  });
  return [
    fwd('float32'),
    fwd('bfloat16'),
    {
      suite: 'kernels',
      name: `moe backward dx only (router-only training) T=${T} E=${E} K=${K} C=${C} I=${I}`,
      kind: 'compute',
      work: FLOPS,
      target: 0.7,
      setup() {
        const W = experts(rng, 'float32'), x = randomTensor(rng, [T, C]), logits = randomTensor(rng, [T, E]);
        const dout = randomTensor(rng, [T, C]);
        const { out, cache } = ops.moeForward(x, logits, W, { topK: K, renorm: true });
        return {
          run: () => dispose(ops.moeBackward(dout, cache, { needInput: true, needWeights: false })),
          dispose: () => dispose([W, x, logits, dout, out, cache]),
        };
      },
    },
  ];
}
