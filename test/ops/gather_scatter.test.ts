import { Tensor, dispose, ops } from '../../lib';
import { native } from '../../lib/native';
import { expectClose, f64, TOL } from '../helpers/compare';
import { checkGradient, dot } from '../helpers/gradcheck';
import { Rng } from '../helpers/random';
import { gatherRowsBackwardRef, gatherRowsRef, scatterRowsBackwardRef, scatterRowsRef } from '../reference/gather_scatter';

const rng = new Rng(777);
/** Uniform floats with standard deviation `scale` (Math.log/cos are slow under jest; uniform() is not). */
const rand = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * 1.7320508 * scale);
/** Ascending distinct rows (what the router's execIdx looks like), about half of R. */
const ascending = (R: number) => Int32Array.from(Array.from({ length: R }, (_, i) => i).filter(() => rng.uniform() < 0.5));

describe('gather / scatter vs float64 reference', () => {
  test.each([
    [1, 1, 'ascending'],
    [13, 17, 'ascending'],
    [300, 129, 'ascending'],
    [37, 5, 'repeated'],
    [301, 257, 'repeated'],
  ] as const)('R=%i C=%i %s indices: gather, scatter, scatter-add', (R, C, kind) => {
    const idx = kind === 'ascending' ? ascending(R) : rng.ints(2 * R + 3, 0, R); // repeats → column-block path
    const N = idx.length;
    const x = rand(R * C), y = rand(N * C), base = rand(R * C);
    const tx = Tensor.from(x, [R, C]), ti = Tensor.from(idx, [N], 'int32'), ty = Tensor.from(y, [N, C]);
    const g = ops.gatherRows(tx, ti);
    expect(g.shape).toEqual([N, C]);
    expectClose(g.toFloat32Array(), gatherRowsRef(f64(x), idx, C), { atol: 0, rtol: 0 }, 'gather');
    const into = Tensor.empty([N, C]);
    expect(ops.gatherRows(tx, ti, into)).toBe(into);
    expectClose(into.toFloat32Array(), gatherRowsRef(f64(x), idx, C), { atol: 0, rtol: 0 }, 'gather into out');
    into.dispose();
    for (const accumulate of [false, true]) {
      const into = Tensor.from(base, [R, C]);
      expect(ops.scatterRows(into, ty, ti, { accumulate })).toBe(into);
      const tol = accumulate ? TOL.float32 : { atol: 0, rtol: 0 };
      expectClose(into.toFloat32Array(), scatterRowsRef(f64(base), f64(y), idx, C, accumulate), tol, `scatter accumulate=${accumulate}`);
      into.dispose();
    }
    dispose([tx, ti, ty, g]);
  });

  test('backward helpers: gather ↔ scatter-add, checked by finite differences of the references', () => {
    const R = 6, C = 3;
    const idx = Int32Array.from([4, 1, 4, 0]); // a repeat: the gradient adds up
    const N = idx.length;
    const x = f64(rand(R * C)), r = f64(rand(N * C));
    const dxRef = gatherRowsBackwardRef(r, idx, R, C);
    checkGradient((xx) => dot(gatherRowsRef(xx, idx, C), r), x, dxRef, { label: 'gather dx' });
    const y = f64(rand(N * C)), base = f64(rand(R * C)), rr = f64(rand(R * C));
    const distinct = Int32Array.from([5, 2, 0, 3]);
    const dyRef = scatterRowsBackwardRef(rr, distinct, C);
    checkGradient((yy) => dot(scatterRowsRef(base, yy, distinct, C, false), rr), y, dyRef, { label: 'scatter dy' });
    checkGradient((yy) => dot(scatterRowsRef(base, yy, idx, C, true), rr), y, scatterRowsBackwardRef(rr, idx, C), { label: 'scatter-add dy' });

    const tr = Tensor.from(Float32Array.from(r), [N, C]), ti = Tensor.from(idx, [N], 'int32'), trr = Tensor.from(Float32Array.from(rr), [R, C]);
    const dx = ops.gatherRowsBackward(tr, ti, R);
    expectClose(dx.toFloat32Array(), dxRef, TOL.float32, 'gatherRowsBackward');
    const dy = ops.scatterRowsBackward(trr, ti);
    expectClose(dy.toFloat32Array(), scatterRowsBackwardRef(rr, idx, C), TOL.float32, 'scatterRowsBackward');
    dispose([tr, ti, trr, dx, dy]);
  });

  test('scatter with repeated indices is deterministic across thread counts (last write wins; adds in index order)', () => {
    const R = 50, C = 1000, N = 400;
    const idx = rng.ints(N, 0, R), y = rand(N * C), base = rand(R * C);
    const ti = Tensor.from(idx, [N], 'int32'), ty = Tensor.from(y, [N, C]);
    const run = (accumulate: boolean) => {
      const into = Tensor.from(base, [R, C]);
      ops.scatterRows(into, ty, ti, { accumulate });
      const out = into.toFloat32Array();
      into.dispose();
      return out;
    };
    const a = [run(false), run(true)];
    const threads = native().runtime_info().threads;
    native().set_num_threads(threads === 1 ? 2 : 1);
    let b;
    try {
      b = [run(false), run(true)];
    } finally {
      native().set_num_threads(threads);
    }
    expect(Array.from(b[0])).toEqual(Array.from(a[0]));
    expect(Array.from(b[1])).toEqual(Array.from(a[1]));
    // the sum follows index order exactly as the sequential float32 loop does
    const seq = Float32Array.from(base);
    for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) seq[idx[n] * C + c] = Math.fround(seq[idx[n] * C + c] + y[n * C + c]);
    expect(Array.from(a[1])).toEqual(Array.from(seq));
    dispose([ti, ty]);
  });

  test('empty index list and leading dims', () => {
    const x = Tensor.from(rand(2 * 3 * 4), [2, 3, 4]), empty = Tensor.from(new Int32Array(0), [0], 'int32');
    expect(ops.gatherRows(x, empty).shape).toEqual([0, 4]);
    const idx = Tensor.from(Int32Array.from([5, 0]), [2], 'int32');
    const g = ops.gatherRows(x, idx); // rows of x seen as [6, 4]
    expect(Array.from(g.toFloat32Array())).toEqual(Array.from(x.toFloat32Array().slice(20, 24)).concat(Array.from(x.toFloat32Array().slice(0, 4))));
    dispose([x, empty, idx, g]);
  });
});

describe('gather / scatter guards (TS and binding)', () => {
  test('TS validation names op, argument, expected and received', () => {
    const x = Tensor.zeros([4, 3]), fi = Tensor.zeros([2]), i2 = Tensor.zeros([2, 1], 'int32'), idx = Tensor.from(Int32Array.from([0, 3]), [2], 'int32');
    expect(() => ops.gatherRows(x, fi)).toThrow("gatherRows: 'idx' expected dtype int32, received float32");
    expect(() => ops.gatherRows(x, i2)).toThrow("gatherRows: 'idx' expected rank 1, received rank 2 [2, 1]");
    expect(() => ops.gatherRows(Tensor.zeros([4, 3], 'bfloat16'), idx)).toThrow("gatherRows: 'x' expected dtype float32, received bfloat16");
    expect(() => ops.scatterRows(x, Tensor.zeros([3, 3]), idx)).toThrow("scatterRows: 'y' expected shape [N, C] = [2, 3], received [3, 3]");
    expect(() => ops.gatherRows(x, idx, Tensor.zeros([3, 3]))).toThrow("gatherRows: 'out' expected shape [N, C] = [2, 3], received [3, 3]");
    expect(() => ops.gatherRowsBackward(Tensor.zeros([3, 3]), idx, 4)).toThrow("gatherRowsBackward: 'dout' expected shape [N, C] = [2, *], received [3, 3]");
    expect(() => ops.gatherRowsBackward(Tensor.zeros([2, 3]), idx, -1)).toThrow(/gatherRowsBackward: 'rows' expected an integer in \[0, \d+\], received -1/);
    dispose([x, fi, i2, idx]);
  });

  test('out-of-range indices: RT_ERR_INDEX naming position, value and R (TS path and binding)', () => {
    const x = Tensor.zeros([4, 3]), y = Tensor.zeros([3, 3]);
    const bad = Tensor.from(Int32Array.from([0, 2, 4]), [3], 'int32'), neg = Tensor.from(Int32Array.from([-1, 0, 0]), [3], 'int32');
    expect(() => ops.gatherRows(x, bad)).toThrow('gather_rows: idx[2] = 4 is out of range [0, 4)');
    expect(() => ops.scatterRows(x, y, neg)).toThrow('scatter_rows: idx[0] = -1 is out of range [0, 4)');
    expect(() => ops.gatherRowsBackward(y, bad, 4)).toThrow('scatter_rows: idx[2] = 4 is out of range [0, 4)');
    expect(() => ops.scatterRowsBackward(x, bad)).toThrow('gather_rows: idx[2] = 4 is out of range [0, 4)');
    try {
      ops.gatherRows(x, bad);
    } catch (e) {
      expect((e as { code: string }).code).toBe('RT_ERR_INDEX');
    }
    dispose([x, y, bad, neg]);
  });

  test('binding rejects short buffers, wrong dtypes and bad sizes', () => {
    const n = native() as any;
    const out = n.tensor_alloc(6, 0), x = n.tensor_alloc(12, 0), small = n.tensor_alloc(5, 0), idx = n.tensor_alloc(2, 2), fidx = n.tensor_alloc(2, 0);
    n.tensor_write(idx, Int32Array.from([1, 3]), 0);
    expect(() => n.gather_rows(small, x, idx, 2, 4, 3)).toThrow("gather_rows: 'out' expected at least 6 elements, received 5");
    expect(() => n.gather_rows(out, small, idx, 2, 4, 3)).toThrow("gather_rows: 'x' expected at least 12 elements, received 5");
    expect(() => n.gather_rows(out, x, fidx, 2, 4, 3)).toThrow("gather_rows: 'idx' expected dtype int32, received float32");
    expect(() => n.gather_rows(out, x, idx, 3, 4, 2)).toThrow("gather_rows: 'idx' expected at least 3 elements, received 2");
    expect(() => n.gather_rows(out, x, idx, 2, 4, -3)).toThrow(/gather_rows: 'C' expected an integer in \[0, \d+\], received -3/);
    expect(() => n.gather_rows(out, x, idx, 2, 3, 3)).toThrow('gather_rows: idx[1] = 3 is out of range [0, 3)');
    expect(() => n.scatter_rows(x, out, idx, 2, 4, 3, 'yes')).toThrow("scatter_rows: 'accumulate' expected a boolean");
    expect(() => n.scatter_rows(small, out, idx, 2, 4, 3, true)).toThrow("scatter_rows: 'out' expected at least 12 elements, received 5");
    expect(() => n.scatter_rows(x, small, idx, 2, 4, 3, true)).toThrow("scatter_rows: 'y' expected at least 6 elements, received 5");
    expect(() => n.scatter_rows(x, out, idx, 2, 3, 3, false)).toThrow('scatter_rows: idx[1] = 3 is out of range [0, 3)');
    expect(() => n.scatter_rows(x, out, idx, 2, 4, 3)).toThrow('scatter_rows: expected 7 arguments, received 6');
    n.gather_rows(out, x, idx, 2, 4, 3); // valid call works
    for (const h of [out, x, small, idx, fidx]) n.tensor_free(h);
  });
});
