import { Tensor, dispose, ops } from '../../lib';
import { native } from '../../lib/native';
import { expectClose, f64, TOL } from '../helpers/compare';
import { checkGradient, dot } from '../helpers/gradcheck';
import { Rng } from '../helpers/random';
import { swigluBackwardRef, swigluRef } from '../reference/swiglu';

const rng = new Rng(99);

describe('swiglu vs float64 reference', () => {
  test.each([[1], [15], [17], [1023], [20011]])('n=%i: forward and backward', (n) => {
    const gate = rng.floats(n, 3), up = rng.floats(n), dout = rng.floats(n);
    const tg = Tensor.from(gate), tu = Tensor.from(up), td = Tensor.from(dout);
    const out = ops.swiglu(tg, tu);
    expectClose(out.toFloat32Array(), swigluRef(f64(gate), f64(up)), TOL.float32, 'swiglu');
    const { dgate, dup } = ops.swigluBackward(td, tg, tu);
    const ref = swigluBackwardRef(f64(dout), f64(gate), f64(up));
    expectClose(dgate.toFloat32Array(), ref.dgate, TOL.float32, 'dgate');
    expectClose(dup.toFloat32Array(), ref.dup, TOL.float32, 'dup');
    dispose([tg, tu, td, out, dgate, dup]);
  });

  test('shape [T, I] is kept, and out may alias an input', () => {
    const T = 6, I = 37;
    const gate = rng.floats(T * I), up = rng.floats(T * I);
    const tg = Tensor.from(gate, [T, I]), tu = Tensor.from(up, [T, I]);
    const ref = swigluRef(f64(gate), f64(up));
    const out = ops.swiglu(tg, tu, tg);
    expect(out).toBe(tg);
    expect(out.shape).toEqual([T, I]);
    expectClose(tg.toFloat32Array(), ref, TOL.float32, 'in place');
    dispose([tg, tu]);
  });

  test('large |gate| is finite and exact in the limit (no overflow, no NaN)', () => {
    const gate = Float32Array.from([-1e30, -3e38, -1000, -100, -88.8, -87, 87, 88.8, 100, 1000, 1e30, 2e38, 0, -0, 20, -20, 5]);
    const n = gate.length;
    const up = new Float32Array(n).fill(1.5), dout = new Float32Array(n).fill(-1);
    const tg = Tensor.from(gate), tu = Tensor.from(up), td = Tensor.from(dout);
    const out = ops.swiglu(tg, tu).toFloat32Array();
    const { dgate, dup } = ops.swigluBackward(td, tg, tu);
    const dg = dgate.toFloat32Array(), du = dup.toFloat32Array();
    for (let i = 0; i < n; i++) {
      for (const [name, v] of [['out', out[i]], ['dgate', dg[i]], ['dup', du[i]]] as const)
        if (!Number.isFinite(v)) throw new Error(`${name}[${i}] = ${v} for gate ${gate[i]}`);
    }
    const ref = swigluRef(f64(gate), f64(up));
    const bref = swigluBackwardRef(f64(dout), f64(gate), f64(up));
    expectClose(out, ref, TOL.float32, 'out');
    expectClose(dg, bref.dgate, TOL.float32, 'dgate');
    expectClose(du, bref.dup, TOL.float32, 'dup');
    expect(out[0]).toBe(-0); // silu(-1e30) = -1e30·0
    expect(dg[0]).toBe(-0);
    expect(dg[10]).toBe(-1.5); // silu'(1e30) = 1 exactly
    expect(out[11]).toBe(Math.fround(3e38)); // 2e38·1.5, the largest gate that stays finite
    dispose([tg, tu, td, dgate, dup]);
  });

  test('reference backward matches finite differences', () => {
    const n = 9;
    const gate = f64(rng.floats(n, 3)), up = f64(rng.floats(n)), r = f64(rng.floats(n));
    const ref = swigluBackwardRef(r, gate, up);
    checkGradient((g) => dot(swigluRef(g, up), r), gate, ref.dgate, { label: 'dgate' });
    checkGradient((u) => dot(swigluRef(gate, u), r), up, ref.dup, { label: 'dup' });
  });
});

describe('swiglu guards (TS and binding)', () => {
  test('TS validation names op, argument, expected and received', () => {
    const a = Tensor.zeros([2, 3]), b = Tensor.zeros([3, 2]), i = Tensor.zeros([2, 3], 'int32');
    expect(() => ops.swiglu(a, b)).toThrow("swiglu: 'up' expected shape [2, 3], received [3, 2]");
    expect(() => ops.swiglu(i, a)).toThrow("swiglu: 'gate' expected dtype float32, received int32");
    expect(() => ops.swiglu(a, a, b)).toThrow("swiglu: 'out' expected shape [2, 3], received [3, 2]");
    expect(() => ops.swigluBackward(a, a, b)).toThrow("swigluBackward: 'up' expected shape [2, 3], received [3, 2]");
    expect(() => ops.swigluBackward(a, i, a)).toThrow("swigluBackward: 'gate' expected dtype float32, received int32");
    dispose([a, b, i]);
  });

  test('binding rejects short buffers, wrong dtypes and bad sizes', () => {
    const n = native() as any;
    const big = n.tensor_alloc(8, 0), small = n.tensor_alloc(3, 0), ints = n.tensor_alloc(8, 2);
    expect(() => n.swiglu_fwd(big, big, small, 8)).toThrow("swiglu_fwd: 'up' expected at least 8 elements, received 3");
    expect(() => n.swiglu_fwd(big, ints, big, 8)).toThrow("swiglu_fwd: 'gate' expected dtype float32, received int32");
    expect(() => n.swiglu_fwd(big, big, big, -1)).toThrow(/swiglu_fwd: 'n' expected an integer in \[0, \d+\], received -1/);
    expect(() => n.swiglu_fwd(big, big, big, 2.5)).toThrow("swiglu_fwd: 'n' expected an integer, received 2.500000");
    expect(() => n.swiglu_bwd(big, small, big, big, big, 8)).toThrow("swiglu_bwd: 'dup' expected at least 8 elements, received 3");
    expect(() => n.swiglu_bwd(big, big, ints, big, big, 8)).toThrow("swiglu_bwd: 'dout' expected dtype float32, received int32");
    expect(() => n.swiglu_bwd(big, big, big, big, null, 8)).toThrow("swiglu_bwd: 'up' expected a tensor handle, received null");
    for (const h of [big, small, ints]) n.tensor_free(h);
  });
});
