/**
 * CUDA against CPU: every op family, forward and backward, on odd shapes and fresh
 * random inputs, with the same inputs placed on each device (DESIGN.md §5). Runs under
 * node's built-in test runner (`npm run test:cuda`) so a GPU machine needs only node and
 * the built addon — no jest. Without a GPU every case is skipped with a printed notice.
 *
 * Tolerances: fp32 kernels match the CPU to fp32 rounding; GEMMs run on tensor cores
 * (TF32 for fp32 weights, bf16 for bf16 weights and attention) with fp32 accumulation.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';

import { backendInfo } from '../../lib/backend';
import { native } from '../../lib/native';
import { Device, DType, Tensor, dispose, tidy } from '../../lib/tensor';
import * as ops from '../../lib/ops';
import { Rng } from '../../lib/util/rng';
import { closeMismatches, maxAbs, Tolerance } from '../helpers/compare';

const info = backendInfo();
const skip = info.cuda ? false : `no CUDA: ${info.cudaReason ?? 'the addon was built without CUDA or no GPU is present'}`;
if (skip) console.log(`# CUDA parity tests skipped — ${skip}`);
else console.log(`# CUDA parity on ${info.devices.map((d) => d.name).join(', ')}; GEMM: ${info.cudaBlas}`);

const FP32: Tolerance = { atol: 1e-4, rtol: 1e-3 };
const TC: Tolerance = { atol: 3e-2, rtol: 3e-2 }; // tensor-core GEMMs (tf32 / bf16 operands)
const EXACT: Tolerance = { atol: 0, rtol: 0 };
/**
 * GEMM outputs: the rounding of K products (TF32 on cuBLAS's fp32 path, bf16 on the
 * built-in kernel) grows with sqrt(K)·|a|·|b|, so the bound is a fraction of the largest
 * output rather than of each element (a wrong element is off by O(max), not O(1e-2·max)).
 */
const GEMM = { maxRel: 1e-2 };
type Bound = Tolerance | typeof GEMM;

type Value = Tensor | number | undefined | Value[] | { [k: string]: Value };

/** Host data of every tensor in a result tree, keyed by path. */
function flatten(v: Value, path = '', out = new Map<string, ArrayLike<number>>()): Map<string, ArrayLike<number>> {
  if (v === undefined) return out;
  if (typeof v === 'number') out.set(path, [v]);
  else if (v instanceof Tensor) out.set(path, v.dtype === 'int32' ? v.toInt32Array() : v.toFloat32Array());
  else if (Array.isArray(v)) v.forEach((x, i) => flatten(x, `${path}[${i}]`, out));
  else for (const [k, x] of Object.entries(v)) flatten(x, path ? `${path}.${k}` : k, out);
  return out;
}

/** Host inputs, placed on a device on demand. */
class Inputs {
  private rng: Rng;
  private made: { data: Float32Array | Int32Array | Uint16Array; shape: number[]; dtype: DType }[] = [];
  constructor(seed: number) {
    this.rng = new Rng(seed);
  }
  floats(shape: number[], scale = 1, dtype: DType = 'float32'): number {
    const n = shape.reduce((a, b) => a * b, 1);
    this.made.push({ data: this.rng.floats(n, scale), shape, dtype });
    return this.made.length - 1;
  }
  ints(shape: number[], lo: number, hi: number): number {
    const n = shape.reduce((a, b) => a * b, 1);
    this.made.push({ data: this.rng.ints(n, lo, hi), shape, dtype: 'int32' });
    return this.made.length - 1;
  }
  values(data: Int32Array | Float32Array, shape: number[]): number {
    this.made.push({ data, shape, dtype: data instanceof Int32Array ? 'int32' : 'float32' });
    return this.made.length - 1;
  }
  on(device: Device): Tensor[] {
    return this.made.map((m) => Tensor.from(m.data, m.shape, m.dtype, device));
  }
}

/**
 * Runs `body` on CPU and on CUDA with the same inputs and compares every output
 * (int32 outputs exactly; `tol` or per-key tolerances for the rest).
 */
function parity(inputs: Inputs, body: (t: Tensor[]) => Value, tol: Bound = FP32): void {
  const run = (device: Device) =>
    tidy(() => {
      const t = inputs.on(device);
      const result = flatten(body(t));
      return result;
    });
  const cpu = run('cpu');
  const gpu = run('cuda');
  assert.deepEqual([...gpu.keys()], [...cpu.keys()], 'same outputs on both devices');
  const problems: string[] = [];
  for (const [key, want] of cpu) {
    const got = gpu.get(key)!;
    const isInt = want instanceof Int32Array;
    const t = isInt ? EXACT : 'maxRel' in tol ? { atol: tol.maxRel * maxAbs(want), rtol: 0 } : tol;
    const bad = closeMismatches(got, want, t);
    if (bad.length) problems.push(`${key || 'result'}: ${bad.join('; ')}`);
  }
  assert.equal(problems.length, 0, problems.join('\n'));
}

function expectCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (e: Error & { code?: string }) => {
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    return true;
  });
}

test('runtime: tensors round-trip through device memory; devices do not mix', { skip }, () => {
  const data = new Rng(1).floats(1001);
  const g = Tensor.from(data, [1001], 'float32', 'cuda');
  assert.equal(g.device, 'cuda');
  assert.deepEqual(g.toFloat32Array(), data);
  const back = g.to('cpu');
  assert.deepEqual(back.toFloat32Array(), data);
  const c = g.clone();
  assert.deepEqual(c.toFloat32Array(), data);
  expectCode(() => ops.swiglu(g, back), 'RT_ERR_DEVICE');
  dispose([g, back, c]);
  const bf = Tensor.from(new Uint16Array([0x3f80, 0xc000, 0x7fc0]), [3], 'bfloat16', 'cuda');
  assert.deepEqual(Array.from(bf.toBf16Bits()), [0x3f80, 0xc000, 0x7fc0]);
  bf.dispose();
  const before = backendInfo().cudaMemory!;
  const many = Array.from({ length: 50 }, () => Tensor.empty([1 << 16], 'float32', 'cuda'));
  dispose(many);
  const after = backendInfo().cudaMemory!;
  assert.equal(after.allocatedBytes, before.allocatedBytes, 'every allocation returned');
});

test('matmul: plain, transposed, batched, broadcast, alpha/beta, bf16 weights, both GEMM backends', { skip }, () => {
  for (const backend of [0, 1]) {
    native().cuda_set_gemm_backend(backend);
    try {
      const x = new Inputs(11);
      x.floats([37, 53]);
      x.floats([53, 29]);
      x.floats([29, 53]);
      x.floats([3, 37, 53]);
      x.floats([37, 29]);
      x.floats([29, 53], 1, 'bfloat16');
      x.floats([3, 53, 37]);
      parity(
        x,
        ([a, b, bt, a3, c0, wbf, b3]) => {
          const out = Tensor.empty([37, 29], 'float32', a.device).copyFrom(c0);
          return {
            plain: ops.matmul(a, b),
            transB: ops.matmul(a, bt, { transB: true }),
            batchBroadcast: ops.matmul(a3, b),
            batched: ops.matmul(a3, b3, {}),
            transA: ops.matmul(b, bt, { transA: true, transB: true }),
            alphaBeta: ops.matmul(a, b, { alpha: 0.5, beta: -2, out }),
            bf16: ops.linear(a, wbf),
          };
        },
        GEMM,
      );
      const big = new Inputs(12);
      big.floats([300, 517], 0.1);
      big.floats([700, 517], 0.1, 'bfloat16');
      parity(big, ([a, w]) => ops.linear(a, w), GEMM);
    } finally {
      native().cuda_set_gemm_backend(0);
    }
  }
});

test('linear backward: input and weight gradients, frozen weight runs no weight-grad', { skip }, () => {
  const x = new Inputs(13);
  x.floats([19, 40]);
  x.floats([24, 40]);
  x.floats([19, 24]);
  x.floats([24]);
  parity(
    x,
    ([inp, w, dy, b]) => {
      const y = ops.linear(inp, w, b);
      const g = ops.linearBackward(dy, inp, w, { needInput: true, needWeight: true, needBias: true });
      return { y, ...g };
    },
    TC,
  );
});

test('elementwise: scale, axpy, fill, gated residual, bias, clamp, sum of squares, casts', { skip }, () => {
  const x = new Inputs(21);
  x.floats([13, 77]);
  x.floats([13, 77]);
  x.floats([13]);
  x.floats([77]);
  x.floats([13, 77], 3);
  parity(x, ([a, f, g, bias, wide]) => {
    const y = a.clone();
    ops.axpy(y, f, -0.75);
    const filled = ops.fill(Tensor.empty([5, 3], 'float32', a.device), 2.5);
    const biased = a.clone();
    ops.addBias(biased, bias);
    const gr = ops.gatedResidualBackward(f, a, g);
    const bf = ops.cast(wide, 'bfloat16');
    return {
      scale: ops.scale(a, 1.7),
      axpy: y,
      fill: filled,
      gated: ops.gatedResidual(a, f, g),
      gatedDf: gr.df,
      gatedDg: gr.dg,
      bias: biased,
      biasGrad: ops.addBiasBackward(a),
      clamp: ops.clamp(wide, -2, 2.5),
      clampGrad: ops.clampBackward(a, wide, -2, 2.5),
      sumSquares: ops.sumSquares(wide),
      toBf16: bf,
      fromBf16: ops.cast(bf, 'float32'),
    };
  });
});

test('embedding: float32 and bfloat16 tables, repeated ids, backward; bad id is RT_ERR_INDEX', { skip }, () => {
  const x = new Inputs(31);
  x.floats([50, 33]);
  x.floats([50, 33], 1, 'bfloat16');
  x.ints([2, 23], 0, 50);
  x.floats([2, 23, 33]);
  parity(x, ([table, tableBf, ids, dout]) => ({
    f32: ops.embedding(ids, table),
    bf16: ops.embedding(ids, tableBf),
    grad: ops.embeddingBackward(dout, ids, 50),
  }));
  const table = Tensor.from(new Rng(1).floats(20), [10, 2], 'float32', 'cuda');
  const ids = Tensor.from(new Int32Array([1, 10, 2]), [3], 'int32', 'cuda');
  expectCode(() => ops.embedding(ids, table), 'RT_ERR_INDEX');
  dispose([table, ids]);
});

test('rmsnorm: forward and backward, narrow and wide rows', { skip }, () => {
  for (const [R, C] of [
    [13, 100],
    [7, 4096],
    [3, 1001],
  ]) {
    const x = new Inputs(41 + C);
    x.floats([R, C]);
    x.floats([C]);
    x.floats([R, C]);
    parity(x, ([h, w, dout]) => {
      const f = ops.rmsnorm(h, w, 1e-6);
      return { ...f, ...ops.rmsnormBackward(dout, h, w, f.rstd) };
    });
  }
});

test('rope: forward and backward at scattered positions', { skip }, () => {
  const x = new Inputs(51);
  x.floats([9, 3, 64]);
  x.ints([9], 0, 4000);
  x.values(ops.ropeInvFreq(64, 10000), [32]);
  x.floats([9, 3, 64]);
  parity(x, ([h, pos, inv, dout]) => ({
    fwd: ops.rope(h, pos, inv, { attnScale: 1.25 }),
    bwd: ops.ropeBackward(dout, pos, inv, { attnScale: 1.25 }),
  }));
});

test('swiglu: forward and backward on an odd length', { skip }, () => {
  const x = new Inputs(61);
  x.floats([1003], 3);
  x.floats([1003]);
  x.floats([1003]);
  parity(x, ([g, u, d]) => ({ fwd: ops.swiglu(g, u), ...ops.swigluBackward(d, g, u) }));
});

test('cross-entropy: loss, row losses, ignored rows, backward', { skip }, () => {
  const x = new Inputs(71);
  x.floats([17, 1000], 4);
  const targets = new Rng(72).ints(17, 0, 1000);
  targets[3] = -100;
  targets[9] = -100;
  x.values(targets, [17]);
  parity(x, ([logits, t]) => {
    const f = ops.crossEntropy(logits, t, { rowLoss: true });
    return { loss: f.loss, counted: f.counted, lse: f.lse, rowLoss: f.rowLoss, grad: ops.crossEntropyBackward(logits, f.lse, t) };
  });
});

test('router: fused token scoring with on-device compaction, sequence pooling, backward', { skip }, () => {
  for (const [T, C] of [
    [1, 64],
    [37, 96],
    [5000, 128],
  ]) {
    const x = new Inputs(81 + T);
    x.floats([T, C]);
    x.floats([C], 0.3);
    x.floats([T]);
    parity(x, ([h, w, dscore]) => {
      const s = ops.routerScoreTokens(h, w, 0.5);
      return { score: s.score, gate: s.gate, execIdx: s.execIdx, count: s.count, ...ops.routerScoreTokensBackward(dscore, s.score, h, w) };
    });
  }
  const x = new Inputs(91);
  x.floats([3, 11, 40]);
  x.floats([40], 0.5);
  const mask = new Int32Array(33).fill(1);
  mask.fill(0, 11 + 7, 22); // sequence 1 padded after 7 tokens
  x.values(mask, [3, 11]);
  x.floats([3]);
  parity(x, ([h, w, m, dscore]) => {
    const s = ops.routerScoreSequences(h, w, 0.5, m);
    return { ...s, ...ops.routerScoreSequencesBackward(dscore, s.score, s.pooled, w, { mask: m, seqLen: 11 }) };
  });
});

test('gather/scatter rows and their backwards; bad index is RT_ERR_INDEX', { skip }, () => {
  const x = new Inputs(101);
  x.floats([29, 36]);
  x.values(new Int32Array([3, 0, 28, 7, 7, 15]), [6]);
  x.floats([6, 36]);
  x.values(new Int32Array([3, 0, 28, 7, 9, 15]), [6]);
  parity(x, ([h, idx, y, uniq]) => {
    const into = h.clone();
    ops.scatterRows(into, y, uniq);
    const acc = h.clone();
    ops.scatterRows(acc, y, idx, { accumulate: true });
    return {
      gather: ops.gatherRows(h, idx),
      scatter: into,
      scatterAcc: acc,
      gatherGrad: ops.gatherRowsBackward(y, idx, 29),
      scatterGrad: ops.scatterRowsBackward(h, uniq),
    };
  });
  const h = Tensor.from(new Rng(1).floats(20), [10, 2], 'float32', 'cuda');
  const bad = Tensor.from(new Int32Array([0, -1]), [2], 'int32', 'cuda');
  expectCode(() => ops.gatherRows(h, bad), 'RT_ERR_INDEX');
  dispose([h, bad]);
});

test('moe: route, sort, grouped experts (f32 and bf16), combine, and backwards', { skip }, () => {
  for (const dtype of ['float32', 'bfloat16'] as DType[]) {
    const T = 23,
      E = 5,
      K = 2,
      C = 24,
      I = 40;
    const x = new Inputs(111);
    x.floats([T, E], 2);
    x.floats([T, C]);
    x.floats([E, I, C], 0.2, dtype);
    x.floats([E, I, C], 0.2, dtype);
    x.floats([E, C, I], 0.2, dtype);
    x.floats([T, C]);
    parity(
      x,
      ([logits, h, gate, up, down, dout]) => {
        const r = ops.moeRoute(logits, { topK: K, renorm: true });
        const sorted = ops.moeSort(r.topkIdx, E);
        const ex = ops.moeExperts(h, sorted, { gate, up, down }, { saveActivations: true });
        const out = ops.moeCombine(ex.y, sorted.invPerm, r.topkW);
        const dc = ops.moeCombineBackward(dout, ex.y, sorted.invPerm, r.topkW);
        const de = ops.moeExpertsBackward(dc.dy!, h, sorted, { gate, up, down }, { actGate: ex.actGate!, actUp: ex.actUp! }, { needWeights: dtype === 'float32' });
        const dl = ops.moeRouteBackward(dc.dtopkW!, r.probs, r.topkIdx, { renorm: true });
        return { route: r as never, perm: sorted.perm, invPerm: sorted.invPerm, bounds: sorted.bounds, live: sorted.live, y: ex.y, out, dc: dc as never, de: de as never, dl };
      },
      TC,
    );
  }
});

test('attention: causal GQA forward/backward at head dims 64, 128 and 40; routed subsets; window; decode', { skip }, () => {
  for (const [B, Tq, Tk, Hq, Hkv, D] of [
    [2, 37, 37, 4, 2, 64],
    [1, 130, 130, 2, 1, 128],
    [2, 19, 19, 3, 3, 40],
    [1, 1, 77, 4, 2, 128],
  ]) {
    const x = new Inputs(121 + D + Tq);
    x.floats([B, Tq, Hq, D]);
    x.floats([B, Tk, Hkv, D]);
    x.floats([B, Tk, Hkv, D]);
    x.floats([B, Tq, Hq, D]);
    parity(
      x,
      ([q, k, v, dout]) => {
        const f = ops.attention(q, k, v);
        const fw = ops.attention(q, k, v, { window: 5 });
        return { out: f.out, lse: f.lse, window: fw.out, ...ops.attentionBackward(dout, q, k, v, f.out, f.lse) };
      },
      TC,
    );
  }
  // A routed subset: 9 of 20 tokens execute, at their original positions; one padded key.
  const x = new Inputs(131);
  x.floats([1, 9, 2, 64]);
  x.floats([1, 9, 2, 64]);
  x.floats([1, 9, 2, 64]);
  x.values(new Int32Array([0, 2, 3, 7, 8, 11, 15, 16, 19]), [1, 9]);
  x.values(new Int32Array([0, 2, 3, 7, -1, 11, 15, 16, 19]), [1, 9]);
  x.floats([1, 9, 2, 64]);
  parity(
    x,
    ([q, k, v, qpos, kpos, dout]) => {
      const f = ops.attention(q, k, v, { qpos, kpos });
      return { out: f.out, lse: f.lse, ...ops.attentionBackward(dout, q, k, v, f.out, f.lse, { qpos, kpos }) };
    },
    TC,
  );
});

test('adamw: one fused step with weight decay and bias correction', { skip }, () => {
  const x = new Inputs(141);
  x.floats([1001]);
  x.floats([1001]);
  x.floats([1001], 0.1);
  x.values(Float32Array.from(new Rng(142).floats(1001), (f) => f * f * 0.01), [1001]);
  parity(x, ([p, g, m, v]) => {
    ops.adamwStep(p, g, { m, v }, { lr: 1e-3, weightDecay: 0.1, step: 3 });
    return { p, m, v };
  });
});
