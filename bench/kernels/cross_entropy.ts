/**
 * Bench cases for the cross_entropy family at T = 1024 rows of V = 32000 (125 MiB of
 * logits). Bytes: forward reads logits once (4·T·V) plus targets and writes lse (8·T);
 * backward reads logits and writes dlogits (8·T·V) plus lse and targets (8·T). The
 * forward also evaluates one exp per logit, so it is the case closest to compute-bound.
 */
import { BenchCase, randomTensor } from '../harness';
import { Tensor, dispose, ops } from '../../lib';
import { callNative } from '../../lib/ops/dispatch';
import { Rng } from '../../lib/util/rng';

const T = 1024, V = 32000;

function inputs(rng: Rng) {
  const logits = randomTensor(rng, [T, V], 2);
  const targets = Tensor.from(rng.ints(T, 0, V));
  return { logits, targets };
}

export function crossEntropyCases(): BenchCase[] {
  const rng = new Rng(24);
  return [
    {
      suite: 'kernels',
      name: `cross_entropy_fwd T=${T} V=${V}`,
      kind: 'memory',
      work: 4 * T * V + 8 * T,
      target: 0.5,
      setup() {
        const { logits, targets } = inputs(rng);
        return {
          run: () => ops.crossEntropy(logits, targets).lse.dispose(),
          dispose: () => dispose([logits, targets]),
        };
      },
    },
    {
      suite: 'kernels',
      name: `cross_entropy_bwd T=${T} V=${V}`,
      kind: 'memory',
      work: 8 * T * V + 8 * T,
      target: 0.5,
      setup() {
        const { logits, targets } = inputs(rng);
        const { lse } = ops.crossEntropy(logits, targets);
        const d = Tensor.empty([T, V]);
        return {
          run: () => callNative('cross_entropy_bwd', [d.handle, logits.handle, lse.handle, targets.handle, T, V, -100, 1 / T]),
          dispose: () => dispose([logits, targets, lse, d]),
        };
      },
    },
  ];
}
