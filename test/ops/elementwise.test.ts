import { Tensor, dispose, ops } from '../../lib';
import { native } from '../../lib/native';
import { expectClose, f64, TOL } from '../helpers/compare';
import { checkGradient, dot } from '../helpers/gradcheck';
import { Rng } from '../helpers/random';
import { addBiasRef, gatedResidualBackwardRef, gatedResidualRef } from '../reference/elementwise';

const rng = new Rng(1234);

describe('elementwise ops vs float64 reference', () => {
  test.each([[1], [7], [1023], [70001]])('add / mul / scale / axpy, n=%i', (n) => {
    const a = rng.floats(n), b = rng.floats(n);
    const ta = Tensor.from(a), tb = Tensor.from(b);
    const sum = ops.add(ta, tb), prod = ops.mul(ta, tb), sc = ops.scale(ta, -1.75);
    expectClose(sum.toFloat32Array(), f64(a).map((v, i) => v + b[i]), TOL.float32, 'add');
    expectClose(prod.toFloat32Array(), f64(a).map((v, i) => v * b[i]), TOL.float32, 'mul');
    expectClose(sc.toFloat32Array(), f64(a).map((v) => v * -1.75), TOL.float32, 'scale');
    ops.axpy(sum, tb, 0.5);
    expectClose(sum.toFloat32Array(), f64(a).map((v, i) => v + 1.5 * b[i]), TOL.float32, 'axpy');
    dispose([ta, tb, sum, prod, sc]);
  });

  test.each([
    [5, 3, true],
    [17, 129, false],
    [33, 1000, true],
  ])('gated residual R=%i C=%i gated=%s, forward and backward', (R, C, gated) => {
    const x = rng.floats(R * C), f = rng.floats(R * C), dout = rng.floats(R * C);
    const g = gated ? Float32Array.from({ length: R }, (_, i) => (i % 3 === 0 ? 0 : 1)) : null;
    const tx = Tensor.from(x, [R, C]), tf = Tensor.from(f, [R, C]), td = Tensor.from(dout, [R, C]);
    const tg = g ? Tensor.from(g) : undefined;
    const out = ops.gatedResidual(tx, tf, tg);
    expectClose(out.toFloat32Array(), gatedResidualRef(f64(x), f64(f), g && f64(g), R, C), TOL.float32, 'fwd');
    const { df, dg } = ops.gatedResidualBackward(td, tf, tg);
    const ref = gatedResidualBackwardRef(f64(dout), f64(f), g && f64(g), R, C);
    expectClose(df!.toFloat32Array(), ref.df, TOL.float32, 'df');
    expectClose(dg!.toFloat32Array(), ref.dg, TOL.reduction, 'dg');
    dispose([tx, tf, td, tg, out, df, dg]);
  });

  test('gated residual reference backward matches finite differences', () => {
    const R = 3, C = 4;
    const x = f64(rng.floats(R * C)), f = f64(rng.floats(R * C)), g = f64(rng.floats(R)), r = f64(rng.floats(R * C));
    const ref = gatedResidualBackwardRef(r, f, g, R, C);
    checkGradient((ff) => dot(gatedResidualRef(x, ff, g, R, C), r), f, ref.df, { label: 'df' });
    checkGradient((gg) => dot(gatedResidualRef(x, f, gg, R, C), r), g, ref.dg, { label: 'dg' });
  });

  test.each(['float32', 'bfloat16'] as const)('bias add (%s bias) and its backward', (dt) => {
    const R = 9, C = 37;
    const x = rng.floats(R * C), bias = rng.floats(C), dout = rng.floats(R * C);
    const tx = Tensor.from(x, [R, C]), tb = Tensor.from(bias, [C], dt);
    ops.addBias(tx, tb);
    const biasUsed = dt === 'bfloat16' ? f64(tb.toFloat32Array()) : f64(bias);
    expectClose(tx.toFloat32Array(), addBiasRef(f64(x), biasUsed, R, C), TOL.float32, 'addBias');
    const td = Tensor.from(dout, [R, C]);
    const db = ops.addBiasBackward(td);
    const ref = new Float64Array(C);
    for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) ref[c] += dout[r * C + c];
    expectClose(db.toFloat32Array(), ref, TOL.reduction, 'dbias');
    ops.addBiasBackward(td, db); // accumulates
    expectClose(db.toFloat32Array(), ref.map((v) => 2 * v), TOL.reduction, 'dbias accumulate');
    // finite differences: d/dbias of sum(r ⊙ (x + bias)) = column sums of r
    const xr = f64(x), rr = f64(dout);
    checkGradient((b) => dot(addBiasRef(xr, b, R, C), rr), f64(bias), ref, { label: 'bias grad' });
    dispose([tx, tb, td, db]);
  });

  test('sum of squares is exact to float64 accumulation', () => {
    const x = rng.floats(200003);
    let ref = 0;
    for (const v of x) ref += v * v;
    const t = Tensor.from(x);
    expect(Math.abs(ops.sumSquares(t) - ref) / ref).toBeLessThan(1e-6);
    t.dispose();
  });

  test('cast float32 <-> bfloat16 rounds to nearest even, both ways', () => {
    const x = new Float32Array([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, 65504, 1e-30, Infinity, NaN]);
    const t = Tensor.from(x);
    const b = ops.cast(t, 'bfloat16');
    const back = ops.cast(b, 'float32').toFloat32Array();
    expect(Array.from(back.slice(0, 5))).toEqual([1, 1, 1 + 4 * 2 ** -8, -2.5, 65536]);
    expect(Math.abs(back[5] - 1e-30) / 1e-30).toBeLessThan(2 ** -8);
    expect(back[6]).toBe(Infinity);
    expect(Number.isNaN(back[7])).toBe(true);
    // agrees with the TS conversion used by Tensor.from
    expect(Array.from(b.toBf16Bits())).toEqual(Array.from(Tensor.from(x, [8], 'bfloat16').toBf16Bits()));
    dispose([t, b]);
  });

  test('clamp forward, backward, and finite differences', () => {
    const n = 1001;
    const x = rng.floats(n, 2), dout = rng.floats(n);
    const tx = Tensor.from(x), td = Tensor.from(dout);
    const y = ops.clamp(tx, -1.5, 0.75);
    expectClose(y.toFloat32Array(), f64(x).map((v) => Math.min(Math.max(v, -1.5), 0.75)), TOL.float32, 'clamp');
    const dx = ops.clampBackward(td, tx, -1.5, 0.75);
    const ref = f64(dout).map((g, i) => (x[i] > -1.5 && x[i] < 0.75 ? g : 0));
    expectClose(dx.toFloat32Array(), ref, TOL.float32, 'clamp grad');
    const clampRef = (v: Float64Array) => v.map((a) => Math.min(Math.max(a, -1.5), 0.75));
    checkGradient((v) => dot(clampRef(v), f64(dout)), f64(x), ref, { eps: 1e-7, label: 'clamp', samples: 200 });
    expect(() => ops.clamp(tx, 1, Infinity)).toThrow("clamp: 'hi' expected a finite number, received Infinity");
    expect(() => (native() as any).clamp_fwd(y.handle, tx.handle, 1, -1, n)).toThrow('clamp_fwd: expected lo <= hi, received lo 1, hi -1');
    dispose([tx, td, y, dx]);
  });

  test('fill', () => {
    const t = ops.fill(Tensor.empty([5]), 2.5);
    expect(Array.from(t.toFloat32Array())).toEqual([2.5, 2.5, 2.5, 2.5, 2.5]);
    t.dispose();
  });
});

describe('elementwise guards (TS and binding)', () => {
  test('TS validation names op, argument, expected and received', () => {
    const a = Tensor.zeros([2, 3]), b = Tensor.zeros([3, 2]), i = Tensor.zeros([6], 'int32');
    expect(() => ops.add(a, b)).toThrow("add: 'b' expected shape [2, 3], received [3, 2]");
    expect(() => ops.mul(a, i)).toThrow("mul: 'b' expected dtype float32, received int32");
    expect(() => ops.gatedResidual(a, a, Tensor.zeros([3]))).toThrow("gatedResidual: 'g' expected shape [rows] = [2], received [3]");
    expect(() => ops.scale(a, NaN)).toThrow("scale: 's' expected a finite number, received NaN");
    dispose([a, b, i]);
  });

  test('binding rejects short buffers, wrong dtypes and bad sizes', () => {
    const n = native() as any;
    const small = n.tensor_alloc(3, 0), big = n.tensor_alloc(8, 0), ints = n.tensor_alloc(8, 2);
    expect(() => n.add(big, big, small, 8)).toThrow("add: 'b' expected at least 8 elements, received 3");
    expect(() => n.add(big, ints, big, 8)).toThrow("add: 'a' expected dtype float32, received int32");
    expect(() => n.add(big, big, big, -2)).toThrow(/add: 'n' expected an integer in \[0, \d+\], received -2/);
    expect(() => n.gated_residual_fwd(big, big, big, small, 4, 2)).toThrow("gated_residual_fwd: 'g' expected at least 4 elements, received 3");
    expect(() => n.add_bias_fwd(big, ints, 2, 4)).toThrow("add_bias_fwd: 'bias' expected dtype float32 or bfloat16, received int32");
    expect(() => n.cast(ints, big, 8)).toThrow("cast: 'out' expected dtype float32 or bfloat16, received int32");
    expect(() => n.add_bias_fwd(big, big, 2 ** 40, 2 ** 40)).toThrow(/overflows 2\^53/);
    for (const h of [small, big, ints]) n.tensor_free(h);
  });
});
