import { Tensor, dispose, ops } from '../../lib';
import { native } from '../../lib/native';
import { expectClose, f64, TOL } from '../helpers/compare';
import { checkGradient } from '../helpers/gradcheck';
import { Rng } from '../helpers/random';
import { crossEntropyBackwardRef, crossEntropyRef } from '../reference/cross_entropy';

const rng = new Rng(31337);

/** Targets in [0, V) with roughly `ignoredFraction` rows set to ignoreIndex. */
function targetsOf(T: number, V: number, ignoreIndex: number, ignoredFraction: number): Int32Array {
  return Int32Array.from({ length: T }, () => (rng.uniform() < ignoredFraction ? ignoreIndex : Math.floor(rng.uniform() * V)));
}

describe('cross entropy vs float64 reference', () => {
  test.each([
    [1, 1, 0, 1],
    [3, 17, 0, 1],
    [9, 511, 0.3, 4], // V just under one 512-logit block
    [7, 1537, 0.2, 8], // several blocks and a partial one
    [33, 1000, 0.5, 2],
  ])('T=%i V=%i ignored≈%f scale=%f: loss, lse, rowLoss, dlogits', (T, V, ignored, logitScale) => {
    const logits = rng.floats(T * V, logitScale);
    const targets = targetsOf(T, V, -100, ignored);
    const tl = Tensor.from(logits, [T, V]), tt = Tensor.from(targets);
    const r = ops.crossEntropy(tl, tt, { rowLoss: true });
    const ref = crossEntropyRef(f64(logits), targets, T, V);
    expect(r.counted).toBe(ref.counted);
    expect(Math.abs(r.loss - ref.loss)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(ref.loss)));
    expectClose(r.lse.toFloat32Array(), ref.lse, TOL.float32, 'lse');
    expectClose(r.rowLoss!.toFloat32Array(), ref.rowLoss, TOL.float32, 'rowLoss');
    const d = ops.crossEntropyBackward(tl, r.lse, tt);
    const scale = ref.counted > 0 ? 1 / ref.counted : 0;
    expectClose(d.toFloat32Array(), crossEntropyBackwardRef(f64(logits), targets, T, V, -100, scale), TOL.float32, 'dlogits');
    dispose([tl, tt, r.lse, r.rowLoss, d]);
  });

  test('huge and very negative logits stay stable (max-subtracted), custom ignoreIndex and scale', () => {
    const T = 4, V = 600;
    const logits = rng.floats(T * V);
    for (let v = 0; v < V; v++) {
      logits[v] += 1e4; // row 0 shifted far up
      logits[V + v] -= 3e4; // row 1 far down
    }
    logits[2 * V + 599] = 80; // row 2: one dominant logit in the last (partial) block
    logits[3 * V + 3] = -Infinity; // row 3: a masked-out logit
    const targets = Int32Array.from([5, 599, 599, 7]);
    const tl = Tensor.from(logits, [T, V]), tt = Tensor.from(targets);
    const r = ops.crossEntropy(tl, tt, { ignoreIndex: 7 });
    const ref = crossEntropyRef(f64(logits), targets, T, V, 7);
    expect(r.counted).toBe(3);
    expect(Math.abs(r.loss - ref.loss)).toBeLessThan(2e-3); // rows 0/1 carry ±3e4 offsets: float32 ulp there is 2e-3
    const d = ops.crossEntropyBackward(tl, r.lse, tt, { ignoreIndex: 7, scale: 0.25 });
    const dr = d.toFloat32Array();
    expect(dr.every(Number.isFinite)).toBe(true);
    expectClose(dr, crossEntropyBackwardRef(f64(logits), targets, T, V, 7, 0.25), { atol: 1e-4, rtol: 1e-3 }, 'dlogits');
    for (let v = 0; v < V; v++) expect(dr[3 * V + v]).toBe(0); // ignored row
    dispose([tl, tt, r.lse, d]);
  });

  test('every row ignored: loss 0 and counted 0 (not NaN); backward is all zeros', () => {
    const T = 3, V = 10;
    const tl = Tensor.from(rng.floats(T * V), [T, V]), tt = Tensor.from(new Int32Array([-100, -100, -100]));
    const r = ops.crossEntropy(tl, tt);
    expect(r.loss).toBe(0);
    expect(r.counted).toBe(0);
    const d = ops.crossEntropyBackward(tl, r.lse, tt);
    expect(Array.from(d.toFloat32Array()).every((v) => v === 0)).toBe(true);
    dispose([tl, tt, r.lse, d]);
  });

  test('in-place backward overwrites logits with dlogits; batched [B, T, V] shapes', () => {
    const B = 2, T = 3, V = 50;
    const logits = rng.floats(B * T * V);
    const targets = targetsOf(B * T, V, -100, 0);
    const tl = Tensor.from(logits, [B, T, V]), tt = Tensor.from(targets, [B, T]);
    const r = ops.crossEntropy(tl, tt);
    expect(r.lse.shape).toEqual([B, T]);
    const d = ops.crossEntropyBackward(tl, r.lse, tt, { inPlace: true });
    expect(d).toBe(tl);
    expectClose(tl.toFloat32Array(), crossEntropyBackwardRef(f64(logits), targets, B * T, V, -100, 1 / (B * T)), TOL.float32, 'in place');
    dispose([tl, tt, r.lse]);
  });

  test('loss is the same for 1 and 2 threads (deterministic mean)', () => {
    const T = 301, V = 257;
    const tl = Tensor.from(rng.floats(T * V), [T, V]), tt = Tensor.from(targetsOf(T, V, -100, 0.1));
    const threads = native().runtime_info().threads;
    const losses: number[] = [];
    try {
      for (const n of [1, 2]) {
        native().set_num_threads(n);
        const r = ops.crossEntropy(tl, tt);
        losses.push(r.loss);
        r.lse.dispose();
      }
    } finally {
      native().set_num_threads(threads);
    }
    expect(losses[1]).toBe(losses[0]);
    dispose([tl, tt]);
  });

  test('reference backward matches finite differences of the mean loss', () => {
    const T = 4, V = 5;
    const logits = f64(rng.floats(T * V, 2)), targets = [1, -100, 4, 0];
    const grad = crossEntropyBackwardRef(logits, targets, T, V, -100, 1 / 3);
    checkGradient((l) => crossEntropyRef(l, targets, T, V).loss, logits, grad, { label: 'dlogits' });
  });
});

describe('cross entropy guards (TS and binding)', () => {
  test('TS validation names op, argument, expected and received', () => {
    const l = Tensor.zeros([3, 5]), t = Tensor.zeros([3], 'int32'), lse = Tensor.zeros([3]);
    expect(() => ops.crossEntropy(l, Tensor.zeros([4], 'int32'))).toThrow("crossEntropy: 'targets' expected shape [T] = [3], received [4]");
    expect(() => ops.crossEntropy(l, Tensor.zeros([3]))).toThrow("crossEntropy: 'targets' expected dtype int32, received float32");
    expect(() => ops.crossEntropy(Tensor.zeros([3, 5], 'int32'), t)).toThrow("crossEntropy: 'logits' expected dtype float32, received int32");
    expect(() => ops.crossEntropy(l, t, { ignoreIndex: 0.5 })).toThrow("crossEntropy: 'ignoreIndex' expected an integer in [-2147483648, 2147483647], received 0.5");
    expect(() => ops.crossEntropyBackward(l, Tensor.zeros([2]), t)).toThrow("crossEntropyBackward: 'lse' expected shape [T] = [3], received [2]");
    expect(() => ops.crossEntropyBackward(l, lse, t, { scale: NaN })).toThrow("crossEntropyBackward: 'scale' expected a finite number, received NaN");
    dispose([l, t, lse]);
  });

  test('a target out of range is RT_ERR_INDEX naming row and value (TS and binding)', () => {
    const l = Tensor.zeros([4, 5]), lse = Tensor.zeros([4]);
    const bad = Tensor.from(new Int32Array([0, -100, 5, 1])), neg = Tensor.from(new Int32Array([0, -1, 2, 3]));
    expect(() => ops.crossEntropy(l, bad)).toThrow('cross_entropy_fwd: expected targets in [0, 5) or ignore_index -100, received targets[2] = 5');
    expect(() => ops.crossEntropy(l, neg)).toThrow('cross_entropy_fwd: expected targets in [0, 5) or ignore_index -100, received targets[1] = -1');
    expect(() => ops.crossEntropyBackward(l, lse, bad)).toThrow('cross_entropy_bwd: expected targets in [0, 5) or ignore_index -100, received targets[2] = 5');
    let code = '';
    try {
      ops.crossEntropy(l, neg, { ignoreIndex: 0 });
    } catch (e) {
      code = (e as { code: string }).code;
    }
    expect(code).toBe('RT_ERR_INDEX');
    const n = native() as any;
    expect(() => n.cross_entropy_fwd(null, lse.handle, l.handle, bad.handle, 4, 5, -100)).toThrow('received targets[2] = 5');
    dispose([l, lse, bad, neg]);
  });

  test('binding rejects short buffers, wrong dtypes, bad sizes and a bad scale', () => {
    const n = native() as any;
    const big = n.tensor_alloc(20, 0), small = n.tensor_alloc(3, 0), tg = n.tensor_alloc(4, 2), ftg = n.tensor_alloc(4, 0);
    n.tensor_write(tg, new Int32Array([0, 1, 2, 3]), 0);
    expect(() => n.cross_entropy_fwd(null, big, small, tg, 4, 5, -100)).toThrow("cross_entropy_fwd: 'logits' expected at least 20 elements, received 3");
    expect(() => n.cross_entropy_fwd(small, big, big, tg, 4, 5, -100)).toThrow("cross_entropy_fwd: 'row_loss' expected at least 4 elements, received 3");
    expect(() => n.cross_entropy_fwd(null, small, big, tg, 4, 5, -100)).toThrow("cross_entropy_fwd: 'lse' expected at least 4 elements, received 3");
    expect(() => n.cross_entropy_fwd(null, big, big, ftg, 4, 5, -100)).toThrow("cross_entropy_fwd: 'targets' expected dtype int32, received float32");
    expect(() => n.cross_entropy_fwd(null, big, big, tg, 4, 5, 2 ** 31)).toThrow(
      "cross_entropy_fwd: 'ignore_index' expected an integer in [-2147483648, 2147483647], received 2147483648",
    );
    expect(() => n.cross_entropy_fwd(null, big, big, tg, 4, 0, -100)).toThrow('cross_entropy_fwd: expected V >= 1 when T > 0, received T=4 V=0');
    expect(() => n.cross_entropy_fwd(null, big, big, tg, 5, 4, -100)).toThrow("cross_entropy_fwd: 'targets' expected at least 5 elements, received 4");
    expect(() => n.cross_entropy_bwd(small, big, big, tg, 4, 5, -100, 1)).toThrow("cross_entropy_bwd: 'dlogits' expected at least 20 elements, received 3");
    expect(() => n.cross_entropy_bwd(big, big, big, tg, 4, 5, -100, Infinity)).toThrow('cross_entropy_bwd: expected a finite dloss_scale, received inf');
    expect(() => n.cross_entropy_bwd(big, big, big, tg, 4, 5, -100)).toThrow('cross_entropy_bwd: expected 8 arguments, received 7');
    const r = n.cross_entropy_fwd(null, big, big, tg, 0, 5, -100); // no rows: loss 0, counted 0
    expect(r).toEqual({ loss: 0, counted: 0 });
    for (const h of [big, small, tg, ftg]) n.tensor_free(h);
  });
});
