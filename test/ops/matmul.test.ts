import { Tensor, dispose, ops } from '../../lib';
import { native } from '../../lib/native';
import { expectClose, f64, TOL } from '../helpers/compare';
import { checkGradient, dot } from '../helpers/gradcheck';
import { Rng } from '../helpers/random';
import { linearBackwardRef, linearRef, matmulBackwardRef, matmulRef } from '../reference/matmul';

const rng = new Rng(4242);
const n = () => native() as any;

/** Uniform values with unit variance: fresh random data, cheaper to draw than normals for big operands. */
function randoms(count: number, scale = 1): Float32Array {
  const out = new Float32Array(count);
  const s = scale * Math.sqrt(3);
  for (let i = 0; i < count; i++) out[i] = (2 * rng.uniform() - 1) * s;
  return out;
}

/** Random operands for op(A) [M, K] · op(B) [K, N], scaled so results are O(1). */
function operands(M: number, N: number, K: number, transA: boolean, transB: boolean, bDtype: 'float32' | 'bfloat16' = 'float32') {
  const a = randoms(M * K, 1 / Math.sqrt(Math.max(1, K))), b = randoms(K * N);
  const ta = Tensor.from(a, transA ? [K, M] : [M, K]);
  const tb = Tensor.from(b, transB ? [N, K] : [K, N], bDtype);
  // bf16 reference: the float64 product of the bf16-rounded values
  const bUsed = bDtype === 'bfloat16' ? f64(tb.toFloat32Array()) : f64(b);
  return { a: f64(a), b: bUsed, ta, tb };
}

const TRANS = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
] as const;

// M, N, K: odd shapes, the small-M (memory-bound) path (M <= 16), the panel-split
// sgemm path (M > 16), K and N beyond one bf16 widening panel (256 × 2048).
const SHAPES = [
  [1, 1, 1],
  [3, 5, 7],
  [17, 33, 65],
  [129, 2, 257],
  [1, 300, 1000],
  [5, 77, 513],
  [16, 130, 40],
  [40, 700, 70],
];

describe('matmul vs float64 reference', () => {
  test.each(SHAPES)('float32 M=%i N=%i K=%i, every transpose combination', (M, N, K) => {
    for (const [transA, transB] of TRANS) {
      const { a, b, ta, tb } = operands(M, N, K, transA, transB);
      const c = ops.matmul(ta, tb, { transA, transB });
      expect(c.shape).toEqual([M, N]);
      expectClose(c.toFloat32Array(), matmulRef(a, b, M, N, K, transA, transB), TOL.float32, `tA=${transA} tB=${transB}`);
      dispose([ta, tb, c]);
    }
  });

  test.each([
    [1, 300, 1000],
    [3, 257, 129],
    [40, 260, 2060], // two N panels and two K panels: the K-panel accumulation
    [20, 33, 7],
  ])('bfloat16 B M=%i N=%i K=%i vs the reference on the bf16-rounded values', (M, N, K) => {
    for (const [transA, transB] of TRANS) {
      const { a, b, ta, tb } = operands(M, N, K, transA, transB, 'bfloat16');
      const c = ops.matmul(ta, tb, { transA, transB });
      expectClose(c.toFloat32Array(), matmulRef(a, b, M, N, K, transA, transB), TOL.float32, `bf16 tA=${transA} tB=${transB}`);
      dispose([ta, tb, c]);
    }
  });

  test.each([
    [1, 70, 33],
    [9, 50, 31],
    [64, 64, 64],
  ])('alpha and beta accumulate into out; beta = 0 ignores NaN in out (M=%i N=%i K=%i)', (M, N, K) => {
    for (const dt of ['float32', 'bfloat16'] as const) {
      const { a, b, ta, tb } = operands(M, N, K, false, true, dt);
      const c0 = rng.floats(M * N);
      const out = Tensor.from(c0, [M, N]);
      ops.matmul(ta, tb, { transB: true, alpha: -0.5, beta: 1.5, out });
      expectClose(out.toFloat32Array(), matmulRef(a, b, M, N, K, false, true, -0.5, 1.5, c0), TOL.float32, `${dt} alpha/beta`);
      out.write(new Float32Array(M * N).fill(NaN));
      ops.matmul(ta, tb, { transB: true, alpha: 2, out });
      expectClose(out.toFloat32Array(), matmulRef(a, b, M, N, K, false, true, 2), TOL.float32, `${dt} beta=0 over NaN`);
      dispose([ta, tb, out]);
    }
  });

  test('K = 0 gives beta·C; empty M or N gives an empty result', () => {
    const a = Tensor.empty([3, 0]), b = Tensor.empty([0, 4]);
    const out = Tensor.from(new Float32Array(12).fill(2), [3, 4]);
    ops.matmul(a, b, { out, beta: 0.5 });
    expect(Array.from(out.toFloat32Array())).toEqual(new Array(12).fill(1));
    ops.matmul(a, b, { out });
    expect(Array.from(out.toFloat32Array())).toEqual(new Array(12).fill(0));
    const e = ops.matmul(Tensor.empty([0, 5]), Tensor.empty([5, 6]));
    expect(e.shape).toEqual([0, 6]);
    dispose([a, b, out, e]);
  });

  test.each([
    [4, 3, 5, 7],
    [3, 17, 33, 65],
    [2, 1, 300, 64],
    [16, 24, 24, 24],
  ])('batched B=%i M=%i N=%i K=%i: both batched, b broadcast, a broadcast, every transpose', (B, M, N, K) => {
    for (const [transA, transB] of TRANS) {
      for (const dt of ['float32', 'bfloat16'] as const) {
        const a = randoms(B * M * K, 1 / Math.sqrt(K)), b = randoms(B * K * N);
        const ta = Tensor.from(a, transA ? [B, K, M] : [B, M, K]);
        const tb = Tensor.from(b, transB ? [B, N, K] : [B, K, N], dt);
        const bv = dt === 'bfloat16' ? f64(tb.toFloat32Array()) : f64(b);
        const tb2 = Tensor.from(b.subarray(0, K * N), transB ? [N, K] : [K, N], dt);
        const ta2 = Tensor.from(a.subarray(0, M * K), transA ? [K, M] : [M, K]);
        const both = ops.matmul(ta, tb, { transA, transB });
        const bcastB = ops.matmul(ta, tb2, { transA, transB });
        const bcastA = ops.matmul(ta2, tb, { transA, transB });
        expect(both.shape).toEqual([B, M, N]);
        const ref = (i: number, j: number) =>
          matmulRef(a.subarray(i * M * K, (i + 1) * M * K), bv.subarray(j * K * N, (j + 1) * K * N), M, N, K, transA, transB);
        const label = `${dt} tA=${transA} tB=${transB}`;
        // items stacked: item i of the expected output from ref(i, i) / ref(i, 0) / ref(0, i)
        const cat = (f: (i: number) => Float64Array) => {
          const out = new Float64Array(B * M * N);
          for (let i = 0; i < B; i++) out.set(f(i), i * M * N);
          return out;
        };
        expectClose(both.toFloat32Array(), cat((i) => ref(i, i)), TOL.float32, `batched ${label}`);
        expectClose(bcastB.toFloat32Array(), cat((i) => ref(i, 0)), TOL.float32, `b broadcast ${label}`);
        expectClose(bcastA.toFloat32Array(), cat((i) => ref(0, i)), TOL.float32, `a broadcast ${label}`);
        dispose([ta, tb, ta2, tb2, both, bcastB, bcastA]);
      }
    }
  });

  test('binding: padded batch strides and stride 0 broadcast', () => {
    const B = 3, M = 5, N = 6, K = 7, sa = M * K + 3, sb = K * N + 5, sc = M * N + 2;
    const a = rng.floats(B * sa), b = rng.floats(B * sb), c0 = rng.floats(B * sc);
    const ta = Tensor.from(a), tb = Tensor.from(b), tc = Tensor.from(c0);
    n().matmul(tc.handle, ta.handle, tb.handle, 0, 1, B, M, N, K, sa, 0, sc, 1, 1);
    const got = tc.toFloat32Array();
    for (let i = 0; i < B; i++) {
      const ref = matmulRef(a.subarray(i * sa), b, M, N, K, false, true, 1, 1, c0.subarray(i * sc));
      expectClose(got.subarray(i * sc, i * sc + M * N), ref, TOL.float32, `item ${i}`);
      // the padding between items is untouched
      expect(Array.from(got.subarray(i * sc + M * N, (i + 1) * sc))).toEqual(Array.from(c0.subarray(i * sc + M * N, (i + 1) * sc)));
    }
    dispose([ta, tb, tc]);
  });

  test('bf16 weights are widened panel by panel, never into a full fp32 copy', () => {
    const N = 2048, K = 2048; // a full fp32 copy would be 16 MiB
    const w = Tensor.from(new Uint16Array(N * K).fill(0x3f80), [N, K], 'bfloat16'); // all 1.0
    for (const M of [1, 64]) {
      const x = Tensor.from(randoms(M * K), [M, K]);
      const out = Tensor.empty([M, N]);
      // ballast up to the previous high-water mark, so any scratch raises the peak
      const info = n().runtime_info();
      const ballast = Tensor.empty([Math.ceil(Math.max(0, info.peakBytes - info.allocatedBytes) / 4) + 16]);
      const before = n().runtime_info();
      ops.matmul(x, w, { transB: true, out });
      const after = n().runtime_info();
      const scratchPeak = after.peakBytes - before.allocatedBytes;
      expect(scratchPeak).toBeGreaterThan(0); // the measurement sees the scratch …
      // … which is at most one 256 × 2048 fp32 panel (2 MiB) per thread (M = 1: one widened row, no panel)
      expect(scratchPeak).toBeLessThanOrEqual(before.threads * (M === 1 ? 64 * 1024 : 2 * 2 ** 20 + 4096));
      expect(after.allocatedBytes).toBe(before.allocatedBytes);
      expectClose(out.toFloat32Array().subarray(0, 8), new Float64Array(8).fill(dot(x.toFloat32Array().subarray(0, K), new Float32Array(K).fill(1))), TOL.reduction, 'ones');
      dispose([x, out, ballast]);
    }
    w.dispose();
  });
});

describe('linear and backward', () => {
  test.each([
    [[7, 13], 5, 'float32', true],
    [[2, 3, 33], 17, 'bfloat16', true],
    [[1, 64], 300, 'bfloat16', false],
    [[65, 40], 129, 'float32', false],
  ] as const)('x %j, out=%i, %s weight, bias=%s: forward and backward vs reference', (xShape, outF, dt, withBias) => {
    const inF = xShape[xShape.length - 1];
    const R = xShape.reduce((p: number, d: number) => p * d, 1) / inF;
    const x = rng.floats(R * inF), w = rng.floats(outF * inF, 1 / Math.sqrt(inF)), bias = rng.floats(outF), dy = rng.floats(R * outF);
    const tx = Tensor.from(x, xShape), tw = Tensor.from(w, [outF, inF], dt), tbias = withBias ? Tensor.from(bias, [outF], dt) : undefined;
    const wUsed = f64(tw.toFloat32Array()), biasUsed = tbias ? f64(tbias.toFloat32Array()) : null;
    const y = ops.linear(tx, tw, tbias);
    expect(y.shape).toEqual([...xShape.slice(0, -1), outF]);
    expectClose(y.toFloat32Array(), linearRef(x, wUsed, biasUsed, R, inF, outF), TOL.float32, 'linear');

    const tdy = Tensor.from(dy, y.shape);
    const g = ops.linearBackward(tdy, tx, tw, { needInput: true, needWeight: true, needBias: true });
    const ref = linearBackwardRef(dy, x, wUsed, R, inF, outF);
    expect(g.dx!.shape).toEqual(xShape);
    expectClose(g.dx!.toFloat32Array(), ref.dx, TOL.float32, 'dx');
    expectClose(g.dw!.toFloat32Array(), ref.dw, TOL.reduction, 'dw');
    expectClose(g.db!.toFloat32Array(), ref.db, TOL.reduction, 'db');
    // accumulation into existing gradients
    ops.linearBackward(tdy, tx, tw, { needInput: false, needWeight: true, needBias: true, weightGradInto: g.dw, biasGradInto: g.db });
    expectClose(g.dw!.toFloat32Array(), ref.dw.map((v) => 2 * v), TOL.reduction, 'dw accumulated');
    expectClose(g.db!.toFloat32Array(), ref.db.map((v) => 2 * v), TOL.reduction, 'db accumulated');
    dispose([tx, tw, tbias, y, tdy, g]);
  });

  test('reference backward of linear and matmul matches finite differences', () => {
    const R = 3, inF = 4, outF = 5;
    const x = f64(rng.floats(R * inF)), w = f64(rng.floats(outF * inF)), b = f64(rng.floats(outF)), r = f64(rng.floats(R * outF));
    const ref = linearBackwardRef(r, x, w, R, inF, outF);
    checkGradient((xx) => dot(linearRef(xx, w, b, R, inF, outF), r), x, ref.dx, { label: 'linear dx' });
    checkGradient((ww) => dot(linearRef(x, ww, b, R, inF, outF), r), w, ref.dw, { label: 'linear dw' });
    checkGradient((bb) => dot(linearRef(x, w, bb, R, inF, outF), r), b, ref.db, { label: 'linear db' });
    const M = 3, N = 4, K = 5;
    for (const [tA, tB] of TRANS) {
      const a = f64(rng.floats(M * K)), bm = f64(rng.floats(K * N)), dc = f64(rng.floats(M * N));
      const g = matmulBackwardRef(dc, a, bm, M, N, K, tA, tB, 0.7);
      checkGradient((aa) => dot(matmulRef(aa, bm, M, N, K, tA, tB, 0.7), dc), a, g.da, { label: `da tA=${tA} tB=${tB}` });
      checkGradient((bb) => dot(matmulRef(a, bb, M, N, K, tA, tB, 0.7), dc), bm, g.db, { label: `db tA=${tA} tB=${tB}` });
    }
  });

  test('a frozen weight never gets a weight-gradient GEMM', () => {
    const x = Tensor.from(rng.floats(6 * 8), [6, 8]), w = Tensor.from(rng.floats(4 * 8), [4, 8], 'bfloat16'), dy = Tensor.from(rng.floats(24), [6, 4]);
    ops.resetOpCounts();
    const g = ops.linearBackward(dy, x, w, { needInput: true, needWeight: false, needBias: false });
    let counts = ops.opCounts();
    expect(counts['matmul:input-grad']).toBe(1);
    expect(counts['matmul:weight-grad']).toBeUndefined();
    expect(g.dw).toBeUndefined();
    expect(g.db).toBeUndefined();
    const h = ops.linearBackward(dy, x, w, { needInput: false, needWeight: true, needBias: false });
    counts = ops.opCounts();
    expect(counts['matmul:weight-grad']).toBe(1);
    expect(counts['matmul:input-grad']).toBe(1);
    expect(h.dx).toBeUndefined();
    dispose([x, w, dy, g, h]);
  });
});

describe('matmulBackward vs float64 reference', () => {
  test.each([
    [3, 5, 7],
    [17, 33, 65],
    [1, 40, 300],
  ])('2-D M=%i N=%i K=%i, every transpose, f32 and bf16 B', (M, N, K) => {
    for (const [transA, transB] of TRANS)
      for (const dt of ['float32', 'bfloat16'] as const) {
        const { a, b, ta, tb } = operands(M, N, K, transA, transB, dt);
        const dc = rng.floats(M * N);
        const tdc = Tensor.from(dc, [M, N]);
        const g = ops.matmulBackward(tdc, ta, tb, { transA, transB, alpha: 1.25 });
        const ref = matmulBackwardRef(dc, a, b, M, N, K, transA, transB, 1.25);
        expect(g.da!.shape).toEqual(ta.shape);
        expect(g.db!.shape).toEqual(tb.shape);
        expect(g.db!.dtype).toBe('float32');
        expectClose(g.da!.toFloat32Array(), ref.da, TOL.reduction, `da ${dt} tA=${transA} tB=${transB}`);
        expectClose(g.db!.toFloat32Array(), ref.db, TOL.reduction, `db ${dt} tA=${transA} tB=${transB}`);
        dispose([ta, tb, tdc, g]);
      }
  });

  test.each([
    ['both batched', true, true],
    ['b broadcast', true, false],
    ['a broadcast', false, true],
  ] as const)('batched (%s), every transpose: gradients sum over the batch for a broadcast operand', (_, batchedA, batchedB) => {
    const B = 3, M = 4, N = 6, K = 5;
    for (const [transA, transB] of TRANS) {
      const a = rng.floats((batchedA ? B : 1) * M * K), b = rng.floats((batchedB ? B : 1) * K * N), dc = rng.floats(B * M * N);
      const aShape = transA ? [K, M] : [M, K], bShape = transB ? [N, K] : [K, N];
      const ta = Tensor.from(a, batchedA ? [B, ...aShape] : aShape), tb = Tensor.from(b, batchedB ? [B, ...bShape] : bShape);
      const tdc = Tensor.from(dc, [B, M, N]);
      const g = ops.matmulBackward(tdc, ta, tb, { transA, transB });
      const da = new Float64Array(a.length), db = new Float64Array(b.length);
      for (let i = 0; i < B; i++) {
        const ai = batchedA ? i : 0, bi = batchedB ? i : 0;
        const r = matmulBackwardRef(dc.subarray(i * M * N), a.subarray(ai * M * K), b.subarray(bi * K * N), M, N, K, transA, transB);
        r.da.forEach((v, j) => (da[ai * M * K + j] += v));
        r.db.forEach((v, j) => (db[bi * K * N + j] += v));
      }
      expect(g.da!.shape).toEqual(ta.shape);
      expect(g.db!.shape).toEqual(tb.shape);
      expectClose(g.da!.toFloat32Array(), da, TOL.reduction, `da tA=${transA} tB=${transB}`);
      expectClose(g.db!.toFloat32Array(), db, TOL.reduction, `db tA=${transA} tB=${transB}`);
      dispose([ta, tb, tdc, g]);
    }
  });

  test('needA / needB skip the other gradient', () => {
    const ta = Tensor.from(rng.floats(12), [3, 4]), tb = Tensor.from(rng.floats(20), [4, 5]), dc = Tensor.from(rng.floats(15), [3, 5]);
    ops.resetOpCounts();
    const g = ops.matmulBackward(dc, ta, tb, { needB: false });
    expect(g.db).toBeUndefined();
    expect(ops.opCounts()['matmul:grad-a']).toBe(1);
    expect(ops.opCounts()['matmul:grad-b']).toBeUndefined();
    dispose([ta, tb, dc, g]);
  });
});

describe('matmul guards (TS and binding)', () => {
  test('TS validation names op, argument, expected and received', () => {
    const a = Tensor.zeros([2, 3]), b = Tensor.zeros([4, 5]), i = Tensor.zeros([3, 5], 'int32'), v = Tensor.zeros([3]);
    const bf = Tensor.zeros([2, 3], 'bfloat16');
    expect(() => ops.matmul(a, b)).toThrow("matmul: 'b' expected shape [K, N] = [3, *], received [4, 5]");
    expect(() => ops.matmul(a, b, { transB: true })).toThrow("matmul: 'b' expected shape [N, K] = [*, 3], received [4, 5]");
    expect(() => ops.matmul(a, i)).toThrow("matmul: 'b' expected dtype float32 or bfloat16, received int32");
    expect(() => ops.matmul(bf, a, { transB: true })).toThrow("matmul: 'a' expected dtype float32, received bfloat16");
    expect(() => ops.matmul(v, b)).toThrow("matmul: 'a' expected rank 2 or 3, received rank 1 [3]");
    expect(() => ops.matmul(a, a, { transB: true, beta: 1 })).toThrow("matmul: 'beta' expected 0 when no 'out' is given, received 1");
    expect(() => ops.matmul(a, a, { transB: true, out: Tensor.zeros([3, 2]) })).toThrow("matmul: 'out' expected shape [2, 2], received [3, 2]");
    expect(() => ops.matmul(a, a, { transB: true, alpha: Infinity })).toThrow("matmul: 'alpha' expected a finite number, received Infinity");
    const a3 = Tensor.zeros([2, 2, 3]), b3 = Tensor.zeros([3, 3, 4]);
    expect(() => ops.matmul(a3, b3)).toThrow("matmul: 'b' expected shape [batch, K, N] = [2, 3, *], received [3, 3, 4]");
    const w = Tensor.zeros([4, 3]);
    expect(() => ops.linear(Tensor.zeros([2, 5]), w)).toThrow("linear: 'x' expected shape [..., in] = [..., 3], received [2, 5]");
    expect(() => ops.linear(a, w, Tensor.zeros([3]))).toThrow("linear: 'bias' expected shape [out] = [4], received [3]");
    expect(() => ops.linearBackward(Tensor.zeros([2, 3]), a, w, { needInput: true, needWeight: false, needBias: false })).toThrow(
      "linearBackward: 'dy' expected shape [..., out] = [2, 4], received [2, 3]",
    );
    expect(() =>
      ops.linearBackward(Tensor.zeros([2, 4]), a, w, { needInput: false, needWeight: true, needBias: false, weightGradInto: Tensor.zeros([3, 4]) }),
    ).toThrow("linearBackward: 'weightGradInto' expected shape [out, in] = [4, 3], received [3, 4]");
    expect(() => ops.matmulBackward(Tensor.zeros([2, 3]), a, Tensor.zeros([3, 4]))).toThrow("matmulBackward: 'dc' expected shape [2, 4], received [2, 3]");
    dispose([a, b, i, v, bf, a3, b3, w]);
  });

  test('binding rejects short buffers, wrong dtypes, bad sizes and strides, aliasing', () => {
    const nn = n();
    const h = (numel: number, dt = 0) => nn.tensor_alloc(numel, dt);
    const c = h(12), a = h(12), b = h(12), small = h(11), ints = h(12, 2), bf = h(12, 1), big = h(100), big2 = h(100);
    // c = a(3x4) · b(4x3)
    expect(() => nn.matmul(c, a, small, 0, 0, 1, 3, 3, 4, 0, 0, 0, 1, 0)).toThrow("matmul: 'b' expected at least 12 elements, received 11");
    expect(() => nn.matmul(small, a, b, 0, 0, 1, 3, 4, 4, 0, 0, 0, 1, 0)).toThrow("matmul: 'c' expected at least 12 elements, received 11");
    expect(() => nn.matmul(c, ints, b, 0, 0, 1, 3, 3, 4, 0, 0, 0, 1, 0)).toThrow("matmul: 'a' expected dtype float32, received int32");
    expect(() => nn.matmul(c, bf, b, 0, 0, 1, 3, 3, 4, 0, 0, 0, 1, 0)).toThrow("matmul: 'a' expected dtype float32, received bfloat16");
    expect(() => nn.matmul(c, a, ints, 0, 0, 1, 3, 3, 4, 0, 0, 0, 1, 0)).toThrow("matmul: 'b' expected dtype float32 or bfloat16, received int32");
    expect(() => nn.matmul(c, a, b, 0, 0, 1, -3, 3, 4, 0, 0, 0, 1, 0)).toThrow(/matmul: 'M' expected an integer in \[0, \d+\], received -3/);
    expect(() => nn.matmul(c, a, b, 0, 0, 1, 3, 3, 4, -1, 0, 0, 1, 0)).toThrow(/matmul: 'strideA' expected an integer in \[0, \d+\], received -1/);
    expect(() => nn.matmul(c, a, b, 0, 0, 1, 3, 3, 4, 0, 0, 0, NaN, 0)).toThrow("matmul: 'alpha' expected a number, received NaN");
    // batched: every buffer must hold (batch-1)·stride + matrix elements
    expect(() => nn.matmul(big, a, big2, 0, 0, 2, 3, 3, 4, 12, 0, 9, 1, 0)).toThrow("matmul: 'a' expected at least 24 elements, received 12");
    expect(() => nn.matmul(big, big2, b, 0, 0, 2, 3, 3, 4, 12, 12, 9, 1, 0)).toThrow("matmul: 'b' expected at least 24 elements, received 12");
    // strides: a non-zero stride smaller than one matrix overlaps items; the output cannot broadcast
    expect(() => nn.matmul(big, big2, b, 0, 0, 2, 3, 3, 4, 5, 0, 9, 1, 0)).toThrow("matmul: expected stride_a = 0 (broadcast) or >= M*K = 12, received 5");
    expect(() => nn.matmul(big, a, big2, 0, 0, 2, 3, 3, 4, 0, 11, 9, 1, 0)).toThrow("matmul: expected stride_b = 0 (broadcast) or >= K*N = 12, received 11");
    expect(() => nn.matmul(big, a, b, 0, 0, 2, 3, 3, 4, 0, 0, 8, 1, 0)).toThrow("matmul: expected stride_c >= M*N = 9 (the output cannot be broadcast), received 8");
    expect(() => nn.matmul(big, a, b, 0, 0, 2, 3, 3, 4, 0, 0, 0, 1, 0)).toThrow("matmul: expected stride_c >= M*N = 9 (the output cannot be broadcast), received 0");
    expect(() => nn.matmul(a, a, b, 0, 0, 1, 3, 3, 4, 0, 0, 0, 1, 0)).toThrow("matmul: 'c' expected a buffer distinct from 'a', received the same tensor");
    expect(() => nn.matmul(c, a, 7, 0, 0, 1, 3, 3, 4, 0, 0, 0, 1, 0)).toThrow("matmul: 'b' expected a tensor handle, received a number");
    expect(() => nn.matmul(c, a, b, 0, 0, 1, 3, 3, 4, 0, 0, 0, 1)).toThrow('matmul: expected 14 arguments, received 13');
    expect(() => nn.matmul(big, big2, big2, 0, 0, 1, 2 ** 31, 1, 1, 0, 0, 0, 1, 0)).toThrow(/matmul: '[ca]' expected at least 2147483648 elements/);
    for (const x of [c, a, b, small, ints, bf, big, big2]) nn.tensor_free(x);
  });
});
