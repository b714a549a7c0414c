/**
 * Bench cases for the rope family at T = 8192 tokens, H = 32 heads, D = 128 (128 MiB
 * of q). Bytes: reads x, writes out (8·T·H·D), plus pos (4·T) and invFreq (2·D).
 * In place moves the same bytes through one buffer (the model's usual call).
 */
import { BenchCase, randomTensor } from '../harness';
import { Tensor, dispose, ops } from '../../lib';
import { callNative } from '../../lib/ops/dispatch';
import { Rng } from '../../lib/util/rng';

const T = 8192, H = 32, D = 128;
const BYTES = 8 * T * H * D + 4 * T + 2 * D;

function inputs(rng: Rng) {
  const x = randomTensor(rng, [T, H, D]);
  const pos = Tensor.from(Int32Array.from({ length: T }, (_, i) => i));
  const invFreq = Tensor.from(ops.ropeInvFreq(D, 500000, { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }));
  return { x, pos, invFreq };
}

export function ropeCases(): BenchCase[] {
  const rng = new Rng(22);
  return [
    {
      suite: 'kernels',
      name: `rope_fwd T=${T} H=${H} D=${D}`,
      kind: 'memory',
      work: BYTES,
      target: 0.5,
      setup() {
        const { x, pos, invFreq } = inputs(rng);
        const out = Tensor.empty([T, H, D]);
        return {
          run: () => callNative('rope_fwd', [out.handle, x.handle, pos.handle, invFreq.handle, 1, T, H, D]),
          dispose: () => dispose([x, pos, invFreq, out]),
        };
      },
    },
    {
      suite: 'kernels',
      name: `rope_fwd in place T=${T} H=${H} D=${D}`,
      kind: 'memory',
      work: BYTES,
      target: 0.5,
      setup() {
        const { x, pos, invFreq } = inputs(rng);
        return { run: () => void ops.rope(x, pos, invFreq, { inPlace: true }), dispose: () => dispose([x, pos, invFreq]) };
      },
    },
    {
      suite: 'kernels',
      name: `rope_bwd in place T=${T} H=${H} D=${D}`,
      kind: 'memory',
      work: BYTES,
      target: 0.5,
      setup() {
        const { x, pos, invFreq } = inputs(rng);
        return { run: () => void ops.ropeBackward(x, pos, invFreq, { inPlace: true }), dispose: () => dispose([x, pos, invFreq]) };
      },
    },
  ];
}
