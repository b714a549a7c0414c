/**
 * Bench cases for the router family: fused scoring over h far beyond the caches.
 * Memory-bound: the work is the bytes of h read (plus dh read and written for the
 * backward); the outputs are a few numbers per row.
 */
import { BenchCase, randomTensor } from '../harness';
import { Tensor, dispose, ops } from '../../lib';
import { Rng } from '../../lib/util/rng';

const T = 16384, C = 4096; // h = 256 MiB
const B = 4, S = 4096; // pooled: 4 sequences of 4096 tokens, 256 MiB

export function routerCases(): BenchCase[] {
  const rng = new Rng(21);
  return [
    {
      suite: 'kernels',
      name: `router_token_fwd ${T}x${C}`,
      kind: 'memory',
      work: T * C * 4,
      target: 0.5,
      setup() {
        const h = randomTensor(rng, [T, C]), w = randomTensor(rng, [C], 0.02);
        return { run: () => dispose(ops.routerScoreTokens(h, w, 0.5)), dispose: () => dispose([h, w]) };
      },
    },
    {
      suite: 'kernels',
      name: `router_seq_fwd ${B}x${S}x${C} masked`,
      kind: 'memory',
      work: B * S * C * 4,
      target: 0.5,
      setup() {
        const h = randomTensor(rng, [B, S, C]), w = randomTensor(rng, [C], 0.02);
        const mask = Tensor.from(Int32Array.from({ length: B * S }, (_, i) => (i % S < S - 100 * (i / S | 0) ? 1 : 0)), [B, S], 'int32');
        return { run: () => dispose(ops.routerScoreSequences(h, w, 0.5, mask)), dispose: () => dispose([h, w, mask]) };
      },
    },
    {
      suite: 'kernels',
      name: `router_token_bwd ${T}x${C} (dw + dh)`,
      kind: 'memory',
      work: 3 * T * C * 4, // read h; read and write dh
      target: 0.5,
      setup() {
        const h = randomTensor(rng, [T, C]), w = randomTensor(rng, [C], 0.02);
        const fwd = ops.routerScoreTokens(h, w, 0.5);
        const ds = randomTensor(rng, [T]);
        const dw = Tensor.zeros([C]), dh = Tensor.empty([T, C]);
        ops.fill(dh, 0);
        const run = () => void ops.routerScoreTokensBackward(ds, fwd.score, h, w, { weightGradInto: dw, inputGradInto: dh });
        return { run, dispose: () => dispose([h, w, fwd, ds, dw, dh]) };
      },
    },
  ];
}
