/**
 * The opt-in bf16 compute mode (setComputeDtype('bfloat16')): GEMMs whose B is stored in
 * bfloat16 and that have more than 16 rows round A to bf16 and multiply in bf16 with
 * fp32 accumulation — natively with AVX-512 BF16 (vdpbf16ps), or, where the CPU lacks it
 * (forced here with setComputeDtype's emulate option), on the same rounded values in fp32.
 *
 * References: the float64 product of the bf16-rounded operands (tight: only the fp32
 * summation order differs), the fp32 compute mode (bf16 tolerances: A's rounding), and
 * the finite-difference-checked float64 linear backward (bf16 tolerances).
 */
import { ArgumentError, Tensor, computeDtype, dispose, ops, randomModel, setComputeDtype, syntheticConfig } from '../../lib';
import { expectClose, f64, TOL } from '../helpers/compare';
import { checkGradient, dot } from '../helpers/gradcheck';
import { Rng } from '../helpers/random';
import { linearBackwardRef, linearRef, matmulRef } from '../reference/matmul';

const rng = new Rng(777);

/** x rounded to bf16 (nearest even), as float64. */
function roundBf16(x: ArrayLike<number>): Float64Array {
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  return Float64Array.from(x, (v) => {
    f[0] = v;
    const b = u[0];
    u[0] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) << 16;
    return f[0];
  });
}

/** Accumulation-order differences only (the operands are the same bf16 values). */
const TOL_ORDER = { atol: 1e-4, rtol: 1e-3 };

const TRANS = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
] as const;

// M > 16 (compute-bound path); odd K (a zero pad in the k-pairs), N across several
// 64-column panels with a ragged tail, M not a multiple of the 6-row microkernel.
const SHAPES = [
  [17, 33, 65],
  [40, 130, 7],
  [64, 64, 64],
  [100, 257, 96],
  [23, 1, 300],
];

let emulateMode = false;

function withMode<T>(dtype: 'float32' | 'bfloat16', fn: () => T): T {
  setComputeDtype(dtype, { emulate: emulateMode });
  try {
    return fn();
  } finally {
    setComputeDtype('float32');
  }
}

describe.each([
  ['native (AVX-512 BF16 where the CPU has it)', false],
  ['emulated (widened fp32 on bf16-rounded A)', true],
])('bf16 compute mode, %s', (_, emulate) => {
  beforeAll(() => {
    emulateMode = emulate;
  });
  afterAll(() => {
    emulateMode = false;
    setComputeDtype('float32');
  });

  test('computeDtype reports whether the kernel runs natively', () => {
    withMode('bfloat16', () => {
      if (emulate) expect(computeDtype().bf16Native).toBe(false);
    });
  });

  test.each(SHAPES)('matmul M=%i N=%i K=%i, every transpose: vs float64 of the rounded operands and vs fp32 mode', (M, N, K) => {
    for (const [transA, transB] of TRANS) {
      const a = rng.floats(M * K, 1 / Math.sqrt(K)), b = rng.floats(K * N);
      const ta = Tensor.from(a, transA ? [K, M] : [M, K]);
      const tb = Tensor.from(b, transB ? [N, K] : [K, N], 'bfloat16');
      const bUsed = f64(tb.toFloat32Array());
      const c16 = withMode('bfloat16', () => ops.matmul(ta, tb, { transA, transB }));
      const c32 = ops.matmul(ta, tb, { transA, transB });
      const label = `tA=${transA} tB=${transB}`;
      expectClose(c16.toFloat32Array(), matmulRef(roundBf16(a), bUsed, M, N, K, transA, transB), TOL_ORDER, `bf16 mode ${label}`);
      expectClose(c16.toFloat32Array(), c32.toFloat32Array(), TOL.bfloat16, `bf16 vs fp32 mode ${label}`);
      dispose([ta, tb, c16, c32]);
    }
  });

  test('alpha, beta into an existing output, and a batched B', () => {
    const batch = 3, M = 29, N = 70, K = 33;
    const a = rng.floats(batch * M * K, 0.2), b = rng.floats(batch * N * K), c0 = rng.floats(batch * M * N);
    const ta = Tensor.from(a, [batch, M, K]), tb = Tensor.from(b, [batch, N, K], 'bfloat16');
    const out = Tensor.from(c0, [batch, M, N]);
    withMode('bfloat16', () => ops.matmul(ta, tb, { transB: true, alpha: 0.5, beta: -1.5, out }));
    const bUsed = tb.toFloat32Array(), aR = roundBf16(a);
    const expected = new Float64Array(batch * M * N);
    for (let i = 0; i < batch; i++) {
      const r = matmulRef(aR.subarray(i * M * K, (i + 1) * M * K), f64(bUsed.subarray(i * N * K, (i + 1) * N * K)), M, N, K, false, true);
      for (let j = 0; j < M * N; j++) expected[i * M * N + j] = 0.5 * r[j] - 1.5 * c0[i * M * N + j];
    }
    expectClose(out.toFloat32Array(), expected, TOL_ORDER, 'alpha/beta batched');
    dispose([ta, tb, out]);
  });

  test('non-finite inputs propagate (beta = 0 never reads the output)', () => {
    const M = 20, N = 20, K = 8;
    const a = rng.floats(M * K);
    a[3] = NaN;
    const ta = Tensor.from(a, [M, K]), tb = Tensor.from(rng.floats(N * K), [N, K], 'bfloat16');
    const out = Tensor.from(new Float32Array(M * N).fill(NaN), [M, N]);
    withMode('bfloat16', () => ops.matmul(ta, tb, { transB: true, out }));
    const c = out.toFloat32Array();
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) expect(Number.isNaN(c[m * N + n])).toBe(m === 0);
    dispose([ta, tb, out]);
  });

  test('linear forward and backward in bf16 mode vs the finite-difference-checked reference', () => {
    const R = 37, inF = 48, outF = 70;
    const x = rng.floats(R * inF), w = rng.floats(outF * inF, 1 / Math.sqrt(inF)), dy = rng.floats(R * outF);
    const tx = Tensor.from(x, [R, inF]), tw = Tensor.from(w, [outF, inF], 'bfloat16'), tdy = Tensor.from(dy, [R, outF]);
    const wUsed = f64(tw.toFloat32Array());
    const { y, g } = withMode('bfloat16', () => ({ y: ops.linear(tx, tw), g: ops.linearBackward(tdy, tx, tw, { needInput: true, needWeight: true, needBias: false }) }));
    expectClose(y.toFloat32Array(), linearRef(roundBf16(x), wUsed, null, R, inF, outF), TOL_ORDER, 'y vs rounded reference');
    expectClose(y.toFloat32Array(), linearRef(x, wUsed, null, R, inF, outF), TOL.bfloat16, 'y vs exact reference');
    const ref = linearBackwardRef(dy, x, wUsed, R, inF, outF);
    // the reference gradients are the finite-difference-checked ones (test/ops/matmul.test.ts); spot-check here too
    checkGradient((xx) => dot(linearRef(xx, wUsed, null, R, inF, outF), f64(dy)), f64(x), ref.dx, { label: 'linear dx', samples: 40 });
    expectClose(g.dx!.toFloat32Array(), ref.dx, TOL.bfloat16, 'dx (bf16 mode)');
    expectClose(g.dw!.toFloat32Array(), ref.dw, TOL.reduction, 'dw (B = x is fp32: exact path)');
    dispose([tx, tw, tdy, y, g]);
  });
});

describe('bf16 compute mode leaves the other paths alone', () => {
  afterEach(() => setComputeDtype('float32'));

  test('fp32 weights and decode-sized GEMMs (M <= 16) are bit-identical to fp32 mode', () => {
    for (const [M, dt] of [
      [40, 'float32'],
      [1, 'bfloat16'],
      [16, 'bfloat16'],
    ] as const) {
      const N = 50, K = 70;
      const ta = Tensor.from(rng.floats(M * K), [M, K]), tb = Tensor.from(rng.floats(N * K), [N, K], dt);
      const c32 = ops.matmul(ta, tb, { transB: true });
      const c16 = withMode('bfloat16', () => ops.matmul(ta, tb, { transB: true }));
      expect(Array.from(c16.toFloat32Array())).toEqual(Array.from(c32.toFloat32Array()));
      dispose([ta, tb, c32, c16]);
    }
  });

  test('setComputeDtype validates its argument and computeDtype reports the mode', () => {
    expect(computeDtype().dtype).toBe('float32');
    expect(() => setComputeDtype('int32' as never)).toThrow(ArgumentError);
    expect(() => setComputeDtype('int32' as never)).toThrow("setComputeDtype: 'dtype' expected 'float32' or 'bfloat16', received int32");
    setComputeDtype('bfloat16');
    expect(computeDtype().dtype).toBe('bfloat16');
    expect(typeof computeDtype().bf16Native).toBe('boolean');
  });

  test('a model with bf16 weights: bf16-mode logits and greedy tokens track fp32 mode', async () => {
    const cfg = syntheticConfig({ vocab_size: 96, hidden_size: 64, intermediate_size: 136, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 128 });
    const model = randomModel(cfg, { seed: 3, dtype: 'bfloat16' });
    try {
      const ids = Array.from({ length: 40 }, (_, i) => (i * 37 + 5) % 96);
      const l32 = await model.logits(ids);
      setComputeDtype('bfloat16');
      const l16 = await model.logits(ids);
      let maxDiff = 0, scale = 0;
      for (let i = 0; i < l32.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(l32[i] - l16[i]));
        scale = Math.max(scale, Math.abs(l32[i]));
      }
      expect(maxDiff).toBeGreaterThan(0); // the mode really changed the arithmetic
      expect(maxDiff).toBeLessThan(0.05 * scale + 0.05);
      const tokens = await model.generateGreedy(ids.slice(0, 20), 4);
      expect(tokens).toHaveLength(4);
    } finally {
      model.dispose();
    }
  });
});
