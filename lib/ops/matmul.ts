/**
 * Matrix products: `matmul` (2-D and batched 3-D, transposes, alpha/beta, broadcast),
 * `linear` (x·Wᵀ + bias, the Linear layer, weight float32 or bfloat16) and their
 * backwards. Every GEMM goes through the one native kernel `matmul`
 * (csrc/cpu/matmul.cc); gradient GEMMs carry a dispatch tag ('input-grad',
 * 'weight-grad', 'grad-a', 'grad-b') so tests can prove which ones ran — router-only
 * backprop must never run a 'matmul:weight-grad' for a frozen weight.
 *
 * Shapes: op(A) is [M, K], op(B) is [K, N], C is [M, N]; op(X) = Xᵀ when trans is set.
 */
import { callNative } from './dispatch';
import { addBias, addBiasBackward, cast } from './elementwise';
import { expectDtype, expectFinite, expectRank, expectShape } from './validate';
import { ArgumentError, ShapeError } from '../errors';
import { Tensor } from '../tensor';

/** One native GEMM call: C[i] = alpha·op(A[i])·op(B[i]) + beta·C[i], i < batch. */
interface Gemm {
  transA: boolean;
  transB: boolean;
  batch: number;
  M: number;
  N: number;
  K: number;
  /** Elements between batch items; 0 broadcasts one matrix to every item. */
  strideA: number;
  strideB: number;
  strideC: number;
  alpha: number;
  beta: number;
}

/** Runs one GEMM into c; when `fresh`, c was created for this call and is disposed if it throws. */
function gemm(c: Tensor, a: Tensor, b: Tensor, g: Gemm, tag?: string, fresh = true): Tensor {
  try {
    callNative(
      'matmul',
      [c.handle, a.handle, b.handle, g.transA, g.transB, g.batch, g.M, g.N, g.K, g.strideA, g.strideB, g.strideC, g.alpha, g.beta],
      tag,
    );
  } catch (e) {
    if (fresh) c.dispose();
    throw e;
  }
  return c;
}

export interface MatmulOptions {
  /** Use Aᵀ: a is [K, M] (or [batch, K, M]). */
  transA?: boolean;
  /** Use Bᵀ: b is [N, K] (or [batch, N, K]) — a Linear weight [out, in] is b with transB. */
  transB?: boolean;
  alpha?: number;
  /** Scales the existing contents of `out` (needs `out` when non-zero). */
  beta?: number;
  /** Output tensor [M, N] or [batch, M, N], float32; must not be `a` or `b`. */
  out?: Tensor;
}

interface MatmulShape {
  batch: number;
  M: number;
  N: number;
  K: number;
  batchedA: boolean;
  batchedB: boolean;
  outShape: number[];
}

/** Checks ranks, dtypes and the shared K; returns the GEMM sizes. */
function matmulShape(op: string, a: Tensor, b: Tensor, transA: boolean, transB: boolean): MatmulShape {
  expectDtype(op, 'a', a, 'float32');
  expectDtype(op, 'b', b, ['float32', 'bfloat16']);
  expectRank(op, 'a', a, [2, 3]);
  expectRank(op, 'b', b, [2, 3]);
  const batchedA = a.rank === 3, batchedB = b.rank === 3;
  const batch = batchedA ? a.shape[0] : batchedB ? b.shape[0] : 1;
  const [ar, ac] = a.shape.slice(-2);
  const M = transA ? ac : ar, K = transA ? ar : ac;
  const lead = batchedB ? [batchedA ? batch : -1] : [];
  const bShape = transB ? [-1, K] : [K, -1];
  expectShape(op, 'b', b, [...lead, ...bShape], transB ? (batchedB ? '[batch, N, K]' : '[N, K]') : batchedB ? '[batch, K, N]' : '[K, N]');
  const N = transB ? b.shape[b.rank - 2] : b.shape[b.rank - 1];
  return { batch, M, N, K, batchedA, batchedB, outShape: batchedA || batchedB ? [batch, M, N] : [M, N] };
}

/**
 * C = alpha·op(A)·op(B) + beta·C.
 *   a [M, K] | [batch, M, K] (transA: [K, M] | [batch, K, M]), float32
 *   b [K, N] | [batch, K, N] (transB: [N, K] | [batch, N, K]), float32 or bfloat16
 *   → [M, N], or [batch, M, N] when either is batched (the 2-D one is broadcast).
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const op = 'matmul';
  const transA = opts.transA ?? false, transB = opts.transB ?? false;
  const alpha = opts.alpha ?? 1, beta = opts.beta ?? 0;
  expectFinite(op, 'alpha', alpha);
  expectFinite(op, 'beta', beta);
  const s = matmulShape(op, a, b, transA, transB);
  let out = opts.out;
  if (out) {
    expectDtype(op, 'out', out, 'float32');
    expectShape(op, 'out', out, s.outShape);
  } else {
    if (beta !== 0) throw new ArgumentError(`${op}: 'beta' expected 0 when no 'out' is given, received ${beta}`);
    out = Tensor.empty(s.outShape, 'float32', a.device);
  }
  const fresh = out !== opts.out;
  return gemm(out, a, b, {
    transA,
    transB,
    batch: s.batch,
    M: s.M,
    N: s.N,
    K: s.K,
    strideA: s.batchedA ? s.M * s.K : 0,
    strideB: s.batchedB ? s.K * s.N : 0,
    strideC: s.M * s.N,
    alpha,
    beta,
  }, undefined, fresh);
}

export interface MatmulBackwardOptions {
  transA?: boolean;
  transB?: boolean;
  /** The forward's alpha (gradients scale by it). */
  alpha?: number;
  /** Compute dA (default true). */
  needA?: boolean;
  /** Compute dB (default true). */
  needB?: boolean;
}

/** Sum over the leading batch dim of t [batch, ...rest] → [...rest], disposing t. */
function sumBatch(t: Tensor, rest: number[]): Tensor {
  const flat = t.reshape([t.shape[0], t.numel / t.shape[0]]);
  const sum = addBiasBackward(flat); // column sums of [batch, rows·cols]
  flat.dispose();
  t.dispose();
  const shaped = sum.reshape(rest);
  sum.dispose();
  return shaped;
}

/**
 * Gradients of C = alpha·op(A)·op(B) (see `matmul`) given dC (shape of C):
 *   dA (shape of a) = alpha·dC·op(B)ᵀ (transposed back when transA),
 *   dB (shape of b, float32 even when b is bfloat16) = alpha·op(A)ᵀ·dC (transposed back when transB).
 * A broadcast (2-D) operand of a batched product gets the sum over the batch.
 */
export function matmulBackward(dc: Tensor, a: Tensor, b: Tensor, opts: MatmulBackwardOptions = {}): { da?: Tensor; db?: Tensor } {
  const op = 'matmulBackward';
  const transA = opts.transA ?? false, transB = opts.transB ?? false, alpha = opts.alpha ?? 1;
  expectFinite(op, 'alpha', alpha);
  const s = matmulShape(op, a, b, transA, transB);
  expectDtype(op, 'dc', dc, 'float32');
  expectShape(op, 'dc', dc, s.outShape);
  const { batch, M, N, K } = s;
  const sA = s.batchedA ? M * K : 0, sB = s.batchedB ? K * N : 0, sC = s.batchedA || s.batchedB ? M * N : 0;
  const result: { da?: Tensor; db?: Tensor } = {};

  if (opts.needA ?? true) {
    // Reduce over the batch when a is broadcast over a batched b.
    const reduce = !s.batchedA && batch > 1;
    const aRest = a.shape.slice(-2);
    const da = Tensor.empty(reduce ? [batch, ...aRest] : a.shape, 'float32', a.device);
    const sD = reduce || s.batchedA ? M * K : 0;
    if (!transA) {
      // dA [M, K] = dC [M, N] · op(B)ᵀ
      gemm(da, dc, b, { transA: false, transB: !transB, batch, M, N: K, K: N, strideA: sC, strideB: sB, strideC: sD, alpha, beta: 0 }, 'grad-a');
    } else {
      // dA [K, M] = op(B) [K, N] · dCᵀ; op(B) goes in the A slot, which is float32 only.
      const b32 = b.dtype === 'bfloat16' ? cast(b, 'float32') : b;
      try {
        gemm(da, b32, dc, { transA: transB, transB: true, batch, M: K, N: M, K: N, strideA: sB, strideB: sC, strideC: sD, alpha, beta: 0 }, 'grad-a');
      } finally {
        if (b32 !== b) b32.dispose();
      }
    }
    result.da = reduce ? sumBatch(da, aRest) : da;
  }

  if (opts.needB ?? true) {
    const bRest = b.shape.slice(-2);
    const reduce = !s.batchedB && batch > 1;
    if (reduce && !transA) {
      // Σ_i op(A_i)ᵀ·dC_i over a contiguous batch is one GEMM over the stacked rows [batch·M].
      const db = Tensor.empty(bRest, 'float32', b.device);
      if (!transB) gemm(db, a, dc, { transA: true, transB: false, batch: 1, M: K, N, K: batch * M, strideA: 0, strideB: 0, strideC: 0, alpha, beta: 0 }, 'grad-b');
      else gemm(db, dc, a, { transA: true, transB: false, batch: 1, M: N, N: K, K: batch * M, strideA: 0, strideB: 0, strideC: 0, alpha, beta: 0 }, 'grad-b');
      result.db = db;
    } else {
      const db = Tensor.empty(reduce ? [batch, ...bRest] : b.shape, 'float32', b.device);
      const sD = reduce || s.batchedB ? K * N : 0;
      // !transB: dB [K, N] = op(A)ᵀ·dC;  transB: dB [N, K] = dCᵀ·op(A)
      if (!transB) gemm(db, a, dc, { transA: !transA, transB: false, batch, M: K, N, K: M, strideA: sA, strideB: sC, strideC: sD, alpha, beta: 0 }, 'grad-b');
      else gemm(db, dc, a, { transA: true, transB: transA, batch, M: N, N: K, K: M, strideA: sC, strideB: sA, strideC: sD, alpha, beta: 0 }, 'grad-b');
      result.db = reduce ? sumBatch(db, bRest) : db;
    }
  }
  return result;
}

/** Checks x [..., in] against weight [out, in]; returns R (rows of x), in, out. */
function linearRows(op: string, x: Tensor, weight: Tensor): { R: number; inF: number; outF: number } {
  expectDtype(op, 'x', x, 'float32');
  expectDtype(op, 'weight', weight, ['float32', 'bfloat16']);
  expectRank(op, 'weight', weight, 2);
  const [outF, inF] = weight.shape;
  if (x.rank < 1 || x.shape[x.rank - 1] !== inF)
    throw new ShapeError(`${op}: 'x' expected shape [..., in] = [..., ${inF}], received [${x.shape.join(', ')}]`);
  return { R: x.shape.slice(0, -1).reduce((p, d) => p * d, 1), inF, outF };
}

/**
 * Linear layer y = x·Wᵀ (+ bias).
 *   x [..., in] float32, weight [out, in] float32 or bfloat16 (widened on the fly),
 *   bias [out] float32 or bfloat16 → y [..., out] float32.
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  const op = 'linear';
  const { R, inF, outF } = linearRows(op, x, weight);
  if (bias) {
    expectDtype(op, 'bias', bias, ['float32', 'bfloat16']);
    expectShape(op, 'bias', bias, [outF], '[out]');
  }
  const y = Tensor.empty([...x.shape.slice(0, -1), outF], 'float32', x.device);
  gemm(y, x, weight, { transA: false, transB: true, batch: 1, M: R, N: outF, K: inF, strideA: 0, strideB: 0, strideC: 0, alpha: 1, beta: 0 });
  if (bias && y.numel > 0) addBias(y, bias);
  return y;
}

export interface LinearBackwardOptions {
  /** Compute dx = dy·W ('matmul:input-grad'). */
  needInput: boolean;
  /** Compute dW = dyᵀ·x ('matmul:weight-grad'); false for a frozen weight. */
  needWeight: boolean;
  /** Compute db = Σ_rows dy. */
  needBias: boolean;
  /** Accumulate dW into this float32 [out, in] tensor (gradient accumulation) and return it. */
  weightGradInto?: Tensor;
  /** Accumulate db into this float32 [out] tensor and return it. */
  biasGradInto?: Tensor;
}

/**
 * Backward of `linear`: dy [..., out], x [..., in] (the forward input), weight [out, in].
 *   dx [..., in] = dy·W;  dW [out, in] = dyᵀ·x (float32);  db [out] = Σ_rows dy.
 * Only the requested gradients are computed: a frozen weight never costs a GEMM.
 */
export function linearBackward(dy: Tensor, x: Tensor, weight: Tensor, opts: LinearBackwardOptions): { dx?: Tensor; dw?: Tensor; db?: Tensor } {
  const op = 'linearBackward';
  const { R, inF, outF } = linearRows(op, x, weight);
  const lead = x.shape.slice(0, -1);
  expectDtype(op, 'dy', dy, 'float32');
  expectShape(op, 'dy', dy, [...lead, outF], '[..., out]');
  const result: { dx?: Tensor; dw?: Tensor; db?: Tensor } = {};
  if (opts.needInput) {
    const dx = Tensor.empty(x.shape, 'float32', x.device);
    gemm(dx, dy, weight, { transA: false, transB: false, batch: 1, M: R, N: inF, K: outF, strideA: 0, strideB: 0, strideC: 0, alpha: 1, beta: 0 }, 'input-grad');
    result.dx = dx;
  }
  if (opts.needWeight) {
    const into = opts.weightGradInto;
    if (into) {
      expectDtype(op, 'weightGradInto', into, 'float32');
      expectShape(op, 'weightGradInto', into, [outF, inF], '[out, in]');
    }
    const dw = into ?? Tensor.empty([outF, inF], 'float32', x.device);
    gemm(dw, dy, x, { transA: true, transB: false, batch: 1, M: outF, N: inF, K: R, strideA: 0, strideB: 0, strideC: 0, alpha: 1, beta: into ? 1 : 0 }, 'weight-grad', !into);
    result.dw = dw;
  }
  if (opts.needBias) {
    const into = opts.biasGradInto;
    if (into) {
      expectDtype(op, 'biasGradInto', into, 'float32');
      expectShape(op, 'biasGradInto', into, [outF], '[out]');
    }
    const dy2 = dy.reshape([R, outF]);
    try {
      result.db = addBiasBackward(dy2, into);
    } finally {
      dy2.dispose();
    }
  }
  return result;
}
