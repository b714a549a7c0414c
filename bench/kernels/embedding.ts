/**
 * Bench cases for the embedding family: a 32768-token batch gathered from a
 * 32000 x 2048 table (256 MiB f32) and the scatter-add backward. Memory-bound:
 * work = bytes of rows read + written.
 */
import { BenchCase, randomTensor } from '../harness';
import { Tensor, dispose, ops } from '../../lib';
import { Rng } from '../../lib/util/rng';

const T = 32768, V = 32000, C = 2048;

export function embeddingCases(): BenchCase[] {
  const rng = new Rng(31);
  const ids = () => Tensor.from(rng.ints(T, 0, V), [T]);
  const cases: BenchCase[] = [];
  for (const dt of ['float32', 'bfloat16'] as const) {
    cases.push({
      suite: 'kernels',
      name: `embedding fwd ${T} tokens x ${C} from ${V}x${C} ${dt === 'float32' ? 'f32' : 'bf16'}`,
      kind: 'memory',
      work: T * C * ((dt === 'float32' ? 4 : 2) + 4),
      target: 0.5,
      setup() {
        const table = randomTensor(rng, [V, C], 1, dt), tids = ids(), out = Tensor.empty([T, C]);
        return { run: () => void ops.embedding(tids, table, out), dispose: () => dispose([table, tids, out]) };
      },
    });
  }
  // Backward: dout read once, each distinct row of dtable read and written once.
  const idArr = rng.ints(T, 0, V);
  const distinct = new Set(idArr).size;
  cases.push({
    suite: 'kernels',
    name: `embedding bwd ${T} tokens x ${C} into ${V}x${C} (${distinct} distinct rows)`,
    kind: 'memory',
    work: T * C * 4 + 2 * distinct * C * 4,
    target: 0.5,
    setup() {
      const dout = randomTensor(rng, [T, C]), tids = Tensor.from(idArr, [T]), dtable = ops.fill(Tensor.empty([V, C]), 0);
      return { run: () => void ops.embeddingBackward(dout, tids, V, dtable), dispose: () => dispose([dout, tids, dtable]) };
    },
  });
  return cases;
}
