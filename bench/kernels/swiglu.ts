/**
 * Bench cases for the swiglu family at n = 32M elements (128 MiB per operand).
 * Bytes: forward reads gate, up and writes out (12·n); backward reads dout, gate, up
 * and writes dgate, dup (20·n). Outputs are preallocated (see rmsnorm.ts).
 */
import { BenchCase, randomTensor } from '../harness';
import { Tensor, dispose, ops } from '../../lib';
import { callNative } from '../../lib/ops/dispatch';
import { Rng } from '../../lib/util/rng';

const N = 32 * 1024 * 1024;

export function swigluCases(): BenchCase[] {
  const rng = new Rng(23);
  return [
    {
      suite: 'kernels',
      name: `swiglu_fwd n=${N}`,
      kind: 'memory',
      work: 12 * N,
      target: 0.5,
      setup() {
        const gate = randomTensor(rng, [N], 3), up = randomTensor(rng, [N]), out = Tensor.empty([N]);
        return { run: () => void ops.swiglu(gate, up, out), dispose: () => dispose([gate, up, out]) };
      },
    },
    {
      suite: 'kernels',
      name: `swiglu_bwd n=${N}`,
      kind: 'memory',
      work: 20 * N,
      target: 0.5,
      setup() {
        const gate = randomTensor(rng, [N], 3), up = randomTensor(rng, [N]), dout = randomTensor(rng, [N]);
        const dgate = Tensor.empty([N]), dup = Tensor.empty([N]);
        return {
          run: () => callNative('swiglu_bwd', [dgate.handle, dup.handle, dout.handle, gate.handle, up.handle, N]),
          dispose: () => dispose([gate, up, dout, dgate, dup]),
        };
      },
    },
  ];
}
