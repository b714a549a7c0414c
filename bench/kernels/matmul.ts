/**
 * Bench cases for the matmul family: the GEMMs of a Linear layer at prefill size
 * (compute-bound, vs the sgemm ceiling at 2048³), batched small GEMMs (attention-like),
 * the two backward GEMMs, and decode M = 1 (memory-bound: the weight read once).
 */
import { BenchCase, randomTensor } from '../harness';
import { Tensor, dispose, ops } from '../../lib';
import { Rng } from '../../lib/util/rng';

const gemmFlops = (batch: number, M: number, N: number, K: number) => 2 * batch * M * N * K;

export function matmulCases(): BenchCase[] {
  const rng = new Rng(21);
  const cases: BenchCase[] = [];
  for (const dt of ['float32', 'bfloat16'] as const) {
    const tag = dt === 'float32' ? 'f32' : 'bf16';
    cases.push({
      suite: 'kernels',
      name: `matmul x·Wᵀ 512x2048 · (2048x2048)ᵀ ${tag} W`,
      kind: 'compute',
      work: gemmFlops(1, 512, 2048, 2048),
      target: 0.7,
      setup() {
        const x = randomTensor(rng, [512, 2048]), w = randomTensor(rng, [2048, 2048], 0.02, dt), out = Tensor.empty([512, 2048]);
        return { run: () => void ops.matmul(x, w, { transB: true, out }), dispose: () => dispose([x, w, out]) };
      },
    });
  }
  cases.push(
    {
      suite: 'kernels',
      name: 'matmul 2048x2048x2048 f32',
      kind: 'compute',
      work: gemmFlops(1, 2048, 2048, 2048),
      target: 0.7,
      setup() {
        const a = randomTensor(rng, [2048, 2048]), b = randomTensor(rng, [2048, 2048]), out = Tensor.empty([2048, 2048]);
        return { run: () => void ops.matmul(a, b, { out }), dispose: () => dispose([a, b, out]) };
      },
    },
    {
      suite: 'kernels',
      name: 'matmul batched 16 x (256x256x256) f32',
      kind: 'compute',
      work: gemmFlops(16, 256, 256, 256),
      target: 0.7,
      setup() {
        const a = randomTensor(rng, [16, 256, 256]), b = randomTensor(rng, [16, 256, 256]), out = Tensor.empty([16, 256, 256]);
        return { run: () => void ops.matmul(a, b, { out }), dispose: () => dispose([a, b, out]) };
      },
    },
    {
      suite: 'kernels',
      name: 'matmul weight-grad dW += dyᵀ·x (linearBackward) 512 rows, 2048x2048',
      kind: 'compute',
      work: gemmFlops(1, 2048, 2048, 512),
      target: 0.7,
      setup() {
        const x = randomTensor(rng, [512, 2048]), dy = randomTensor(rng, [512, 2048]), w = randomTensor(rng, [2048, 2048], 0.02, 'bfloat16');
        const dw = Tensor.zeros([2048, 2048]);
        return {
          run: () => void ops.linearBackward(dy, x, w, { needInput: false, needWeight: true, needBias: false, weightGradInto: dw }),
          dispose: () => dispose([x, dy, w, dw]),
        };
      },
    },
    {
      suite: 'kernels',
      name: 'matmul input-grad dx = dy·W 512x2048 · 2048x2048 bf16 W',
      kind: 'compute',
      work: gemmFlops(1, 512, 2048, 2048),
      target: 0.7,
      setup() {
        const dy = randomTensor(rng, [512, 2048]), w = randomTensor(rng, [2048, 2048], 0.02, 'bfloat16'), out = Tensor.empty([512, 2048]);
        return { run: () => void ops.matmul(dy, w, { out }), dispose: () => dispose([dy, w, out]) };
      },
    },
  );
  // Decode: one token through a 4096x4096 Linear; the weight is read once (bytes = weight bytes).
  for (const dt of ['float32', 'bfloat16'] as const) {
    const tag = dt === 'float32' ? 'f32' : 'bf16';
    cases.push({
      suite: 'kernels',
      name: `matmul decode M=1 · (4096x4096)ᵀ ${tag} W`,
      kind: 'memory',
      work: 4096 * 4096 * (dt === 'float32' ? 4 : 2),
      target: 0.5,
      setup() {
        const x = randomTensor(rng, [1, 4096]), w = randomTensor(rng, [4096, 4096], 0.02, dt), out = Tensor.empty([1, 4096]);
        return { run: () => void ops.matmul(x, w, { transB: true, out }), dispose: () => dispose([x, w, out]) };
      },
    });
  }
  return cases;
}
