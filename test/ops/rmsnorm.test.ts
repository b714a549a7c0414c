import { Tensor, dispose, ops } from '../../lib';
import { native } from '../../lib/native';
import { expectClose, f64, TOL } from '../helpers/compare';
import { checkGradient, dot } from '../helpers/gradcheck';
import { Rng } from '../helpers/random';
import { rmsnormBackwardRef, rmsnormRef } from '../reference/rmsnorm';

const rng = new Rng(2024);

describe('rmsnorm vs float64 reference', () => {
  test.each([
    [1, 1, 1e-6],
    [3, 7, 1e-5],
    [17, 129, 1e-6],
    [65, 1000, 1e-5], // several dw blocks (rows per block > 1)
    [301, 67, 1e-6], // rows not a multiple of the 64 dw blocks
  ])('R=%i C=%i eps=%f: forward, dx, dw', (R, C, eps) => {
    const x = rng.floats(R * C, 2), w = rng.floats(C), dout = rng.floats(R * C);
    const tx = Tensor.from(x, [R, C]), tw = Tensor.from(w), td = Tensor.from(dout, [R, C]);
    const { out, rstd } = ops.rmsnorm(tx, tw, eps);
    const ref = rmsnormRef(f64(x), f64(w), R, C, eps);
    expectClose(out.toFloat32Array(), ref.out, TOL.float32, 'out');
    expectClose(rstd.toFloat32Array(), ref.rstd, TOL.float32, 'rstd');
    const { dx, dw } = ops.rmsnormBackward(td, tx, tw, rstd);
    const bref = rmsnormBackwardRef(f64(dout), f64(x), f64(w), R, C, eps);
    expectClose(dx!.toFloat32Array(), bref.dx, TOL.float32, 'dx');
    expectClose(dw!.toFloat32Array(), bref.dw, TOL.reduction, 'dw');
    dispose([tx, tw, td, out, rstd, dx, dw]);
  });

  test('per-head q/k norm shape: x [T, H, D] with w [D], rstd [T, H]', () => {
    const T = 5, H = 3, D = 16;
    const x = rng.floats(T * H * D), w = rng.floats(D);
    const tx = Tensor.from(x, [T, H, D]), tw = Tensor.from(w);
    const { out, rstd } = ops.rmsnorm(tx, tw, 1e-6);
    expect(out.shape).toEqual([T, H, D]);
    expect(rstd.shape).toEqual([T, H]);
    expectClose(out.toFloat32Array(), rmsnormRef(f64(x), f64(w), T * H, D, 1e-6).out, TOL.float32, 'out');
    dispose([tx, tw, out, rstd]);
  });

  test('large and tiny magnitudes stay finite and accurate (rows of 1e18 and 1e-18)', () => {
    const R = 2, C = 33;
    const x = new Float32Array(R * C);
    for (let c = 0; c < C; c++) {
      x[c] = 1e18 * (c % 3 === 0 ? -1 : 1) * (1 + c / C);
      x[C + c] = 1e-18 * (1 + c / C);
    }
    const w = rng.floats(C);
    const tx = Tensor.from(x, [R, C]), tw = Tensor.from(w);
    const { out, rstd } = ops.rmsnorm(tx, tw, 0);
    expectClose(out.toFloat32Array(), rmsnormRef(f64(x), f64(w), R, C, 0).out, TOL.float32, 'out');
    dispose([tx, tw, out, rstd]);
  });

  test('options: dx only, dw only, dw accumulated into weightGradInto', () => {
    const R = 9, C = 31;
    const x = rng.floats(R * C), w = rng.floats(C), dout = rng.floats(R * C);
    const tx = Tensor.from(x, [R, C]), tw = Tensor.from(w), td = Tensor.from(dout, [R, C]);
    const { out, rstd } = ops.rmsnorm(tx, tw, 1e-5);
    const bref = rmsnormBackwardRef(f64(dout), f64(x), f64(w), R, C, 1e-5);
    const onlyDx = ops.rmsnormBackward(td, tx, tw, rstd, { needWeight: false });
    expect(onlyDx.dw).toBeUndefined();
    expectClose(onlyDx.dx!.toFloat32Array(), bref.dx, TOL.float32, 'dx only');
    const into = Tensor.from(new Float32Array(C).fill(0.5));
    const onlyDw = ops.rmsnormBackward(td, tx, tw, rstd, { needInput: false, weightGradInto: into });
    expect(onlyDw.dx).toBeUndefined();
    expect(onlyDw.dw).toBe(into);
    expectClose(into.toFloat32Array(), bref.dw.map((v) => v + 0.5), TOL.reduction, 'dw into');
    dispose([tx, tw, td, out, rstd, onlyDx.dx, into]);
  });

  test('dw is bitwise identical for 1 and 2 threads (fixed reduction order)', () => {
    const R = 1000, C = 77;
    const x = rng.floats(R * C), w = rng.floats(C), dout = rng.floats(R * C);
    const tx = Tensor.from(x, [R, C]), tw = Tensor.from(w), td = Tensor.from(dout, [R, C]);
    const { out, rstd } = ops.rmsnorm(tx, tw, 1e-6);
    const threads = native().runtime_info().threads;
    const results: Float32Array[] = [];
    try {
      for (const n of [1, 2, 3]) {
        native().set_num_threads(n);
        const { dx, dw } = ops.rmsnormBackward(td, tx, tw, rstd);
        results.push(dw!.toFloat32Array());
        dispose([dx, dw]);
      }
    } finally {
      native().set_num_threads(threads);
    }
    expect(Array.from(results[1])).toEqual(Array.from(results[0]));
    expect(Array.from(results[2])).toEqual(Array.from(results[0]));
    dispose([tx, tw, td, out, rstd]);
  });

  test('reference backward matches finite differences', () => {
    const R = 3, C = 5, eps = 1e-5;
    const x = f64(rng.floats(R * C)), w = f64(rng.floats(C)), r = f64(rng.floats(R * C));
    const ref = rmsnormBackwardRef(r, x, w, R, C, eps);
    checkGradient((xx) => dot(rmsnormRef(xx, w, R, C, eps).out, r), x, ref.dx, { label: 'dx' });
    checkGradient((ww) => dot(rmsnormRef(x, ww, R, C, eps).out, r), w, ref.dw, { label: 'dw' });
  });
});

describe('rmsnorm guards (TS and binding)', () => {
  test('TS validation names op, argument, expected and received', () => {
    const x = Tensor.zeros([4, 6]), w5 = Tensor.zeros([5]), w6 = Tensor.zeros([6]), xi = Tensor.zeros([4, 6], 'int32');
    const r4 = Tensor.zeros([4]), r3 = Tensor.zeros([3]), s = Tensor.zeros([]);
    expect(() => ops.rmsnorm(x, w5, 1e-6)).toThrow("rmsnorm: 'w' expected shape [C] = [6], received [5]");
    expect(() => ops.rmsnorm(xi, w6, 1e-6)).toThrow("rmsnorm: 'x' expected dtype float32, received int32");
    expect(() => ops.rmsnorm(x, w6, -1)).toThrow("rmsnorm: 'eps' expected a number >= 0, received -1");
    expect(() => ops.rmsnorm(x, w6, NaN)).toThrow("rmsnorm: 'eps' expected a finite number, received NaN");
    expect(() => ops.rmsnorm(s, w6, 1e-6)).toThrow("rmsnorm: 'x' expected shape [..., C] (rank >= 1), received []");
    expect(() => ops.rmsnormBackward(x, x, w6, r3)).toThrow("rmsnormBackward: 'rstd' expected shape [rows] = [4], received [3]");
    expect(() => ops.rmsnormBackward(Tensor.zeros([4, 5]), x, w6, r4)).toThrow("rmsnormBackward: 'dout' expected shape [4, 6], received [4, 5]");
    expect(() => ops.rmsnormBackward(x, x, w6, r4, { weightGradInto: w5 })).toThrow(
      "rmsnormBackward: 'weightGradInto' expected shape [C] = [6], received [5]",
    );
    expect(() => ops.rmsnormBackward(x, x, w6, r4, { needWeight: false, weightGradInto: w6 })).toThrow(
      "rmsnormBackward: 'weightGradInto' expected only with needWeight, received needWeight=false",
    );
    dispose([x, w5, w6, xi, r4, r3, s]);
  });

  test('binding rejects short buffers, wrong dtypes, bad sizes and a bad eps', () => {
    const n = native() as any;
    const big = n.tensor_alloc(24, 0), small = n.tensor_alloc(3, 0), ints = n.tensor_alloc(24, 2);
    expect(() => n.rmsnorm_fwd(big, null, small, big, 4, 6, 1e-6)).toThrow("rmsnorm_fwd: 'x' expected at least 24 elements, received 3");
    expect(() => n.rmsnorm_fwd(big, small, big, big, 4, 6, 1e-6)).toThrow("rmsnorm_fwd: 'rstd' expected at least 4 elements, received 3");
    expect(() => n.rmsnorm_fwd(big, null, big, small, 4, 6, 1e-6)).toThrow("rmsnorm_fwd: 'w' expected at least 6 elements, received 3");
    expect(() => n.rmsnorm_fwd(ints, null, big, big, 4, 6, 1e-6)).toThrow("rmsnorm_fwd: 'out' expected dtype float32, received int32");
    expect(() => n.rmsnorm_fwd(big, null, big, big, -4, 6, 1e-6)).toThrow(/rmsnorm_fwd: 'R' expected an integer in \[0, \d+\], received -4/);
    expect(() => n.rmsnorm_fwd(big, null, big, big, 4, 0, 1e-6)).toThrow("rmsnorm_fwd: expected C >= 1 when R > 0, received R=4 C=0");
    expect(() => n.rmsnorm_fwd(big, null, big, big, 4, 6, -1e-6)).toThrow("rmsnorm_fwd: expected eps >= 0 and finite, received -1e-06");
    expect(() => n.rmsnorm_fwd(big, null, big, big, 4, 6, Infinity)).toThrow("rmsnorm_fwd: expected eps >= 0 and finite, received inf");
    expect(() => n.rmsnorm_fwd(big, null, big, big, 2 ** 40, 2 ** 40, 1e-6)).toThrow(/overflows 2\^53/);
    expect(() => n.rmsnorm_fwd(big, null, big, big, 4, 6)).toThrow('rmsnorm_fwd: expected 7 arguments, received 6');
    expect(() => n.rmsnorm_bwd(big, big, big, big, big, small, 4, 6)).toThrow("rmsnorm_bwd: 'rstd' expected at least 4 elements, received 3");
    expect(() => n.rmsnorm_bwd(null, small, big, big, big, big, 4, 6)).toThrow("rmsnorm_bwd: 'dw' expected at least 6 elements, received 3");
    expect(() => n.rmsnorm_bwd(big, null, big, ints, big, big, 4, 6)).toThrow("rmsnorm_bwd: 'x' expected dtype float32, received int32");
    expect(() => n.rmsnorm_bwd(big, null, big, big, big, big, 4, 0)).toThrow("rmsnorm_bwd: expected C >= 1 when R > 0, received R=4 C=0");
    for (const h of [big, small, ints]) n.tensor_free(h);
  });
});
