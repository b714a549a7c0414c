/**
 * Bench cases for the attention family.
 *
 * FLOP counts (compute cases) count only visible (query, key) pairs: a pair costs
 * 2·D for S = Q·Kᵀ and 2·D for P·V, so forward = 4·D·pairs·Hq (causal T×T: pairs =
 * T(T+1)/2 ≈ T²/2, i.e. 4·T²·D/2 per head); backward = 2.5× forward (five GEMMs: S, dP,
 * dV, dQ, dK). Tiles on the diagonal, exps and masking are overhead, not counted.
 * Decode is memory-bound: work = bytes of K and V read (queries and outputs are tiny).
 */
import { BenchCase, randomTensor } from '../harness';
import { Tensor, dispose, ops } from '../../lib';
import { Rng } from '../../lib/util/rng';

/** Visible pairs of a causal T×T attention with an optional sliding window (0 = none). */
function causalPairs(T: number, window = 0): number {
  let pairs = 0;
  for (let i = 0; i < T; i++) pairs += window > 0 ? Math.min(i + 1, window) : i + 1;
  return pairs;
}

function prefillCase(
  rng: Rng,
  pass: 'fwd' | 'bwd',
  B: number,
  T: number,
  Hq: number,
  Hkv: number,
  D: number,
  window = 0,
): BenchCase {
  const fwdFlops = 4 * D * causalPairs(T, window) * Hq * B;
  const tag = `B=${B} T=${T} Hq=${Hq} Hkv=${Hkv} D=${D}${window ? ` window=${window}` : ''} causal`;
  return {
    suite: 'kernels',
    name: pass === 'fwd' ? `attention_fwd ${tag} (4·D·pairs·Hq FLOPs)` : `attention_bwd ${tag} (2.5× fwd FLOPs)`,
    kind: 'compute',
    work: pass === 'fwd' ? fwdFlops : 2.5 * fwdFlops,
    target: 0.5,
    setup() {
      const q = randomTensor(rng, [B, T, Hq, D]);
      const k = randomTensor(rng, [B, T, Hkv, D]);
      const v = randomTensor(rng, [B, T, Hkv, D]);
      const opts = { window };
      if (pass === 'fwd') {
        let last: Tensor[] = [];
        return {
          run: () => {
            dispose(last);
            const r = ops.attention(q, k, v, opts);
            last = [r.out, r.lse];
          },
          dispose: () => dispose([q, k, v, ...last]),
        };
      }
      const { out, lse } = ops.attention(q, k, v, opts);
      const dout = randomTensor(rng, [B, T, Hq, D]);
      let last: (Tensor | undefined)[] = [];
      return {
        run: () => {
          dispose(last);
          const g = ops.attentionBackward(dout, q, k, v, out, lse, opts);
          last = [g.dq, g.dk, g.dv];
        },
        dispose: () => dispose([q, k, v, out, lse, dout, ...last]),
      };
    },
  };
}

function decodeCase(rng: Rng, B: number, Tk: number, Hq: number, Hkv: number, D: number): BenchCase {
  return {
    suite: 'kernels',
    name: `attention_fwd decode B=${B} Tq=1 Tk=${Tk} Hq=${Hq} Hkv=${Hkv} D=${D} (bytes of K and V)`,
    kind: 'memory',
    work: 2 * B * Tk * Hkv * D * 4,
    target: 0.5,
    setup() {
      const q = randomTensor(rng, [B, 1, Hq, D]);
      const k = randomTensor(rng, [B, Tk, Hkv, D]);
      const v = randomTensor(rng, [B, Tk, Hkv, D]);
      let last: Tensor[] = [];
      return {
        run: () => {
          dispose(last);
          const r = ops.attention(q, k, v);
          last = [r.out, r.lse];
        },
        dispose: () => dispose([q, k, v, ...last]),
      };
    },
  };
}

export function attentionCases(): BenchCase[] {
  const rng = new Rng(23);
  return [
    prefillCase(rng, 'fwd', 1, 2048, 8, 8, 128),
    prefillCase(rng, 'bwd', 1, 2048, 8, 8, 128),
    // GQA 4:1 with a sliding window: most key tiles of a query block are skipped.
    prefillCase(rng, 'fwd', 1, 4096, 16, 4, 128, 1024),
    prefillCase(rng, 'bwd', 1, 4096, 16, 4, 128, 1024),
    // Decode: 4 sequences × 2048 cached tokens × 8 kv heads: 64 MiB of K and V per step.
    decodeCase(rng, 4, 2048, 8, 8, 128),
    decodeCase(rng, 4, 2048, 32, 8, 128),
  ];
}
