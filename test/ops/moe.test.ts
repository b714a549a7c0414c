import { Tensor, dispose, ops } from '../../lib';
import { native } from '../../lib/native';
import { expectClose, f64, TOL } from '../helpers/compare';
import { checkGradient, dot } from '../helpers/gradcheck';
import { Rng } from '../helpers/random';
import {
  ExpertWeightsF64, expertRowBackwardRef, expertRowRef, moeBackwardRef, moeRef, moeRouteBackwardRef, moeRouteRef,
} from '../reference/moe';

const rng = new Rng(31337);
/** Uniform floats with standard deviation `scale` (Math.log/cos are slow under jest; uniform() is not). */
const rand = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * 1.7320508 * scale);
const EXACT = { atol: 0, rtol: 0 };

type WDtype = 'float32' | 'bfloat16';

/** Expert weights as tensors and, for the reference, the exact values the kernel sees (bf16 widened). */
function makeExperts(E: number, C: number, I: number, dtype: WDtype) {
  const t = {
    gate: Tensor.from(rand(E * I * C, 1 / Math.sqrt(C)), [E, I, C], dtype),
    up: Tensor.from(rand(E * I * C, 1 / Math.sqrt(C)), [E, I, C], dtype),
    down: Tensor.from(rand(E * C * I, 1 / Math.sqrt(I)), [E, C, I], dtype),
  };
  const f: ExpertWeightsF64 = { wg: f64(t.gate.toFloat32Array()), wu: f64(t.up.toFloat32Array()), wd: f64(t.down.toFloat32Array()) };
  return { t, f };
}

/** Expert id of each sorted row, from bounds. */
function rowExperts(bounds: Int32Array): number[] {
  const out: number[] = [];
  for (let e = 0; e + 1 < bounds.length; e++) for (let p = bounds[e]; p < bounds[e + 1]; p++) out.push(e);
  return out;
}

describe('moe route', () => {
  test.each([
    [13, 5, 2, true],
    [13, 5, 2, false],
    [29, 8, 2, true],
    [7, 8, 1, false],
    [11, 3, 3, true],
  ])('T=%i E=%i K=%i renorm=%s: forward and backward vs reference', (T, E, K, renorm) => {
    const logits = rand(T * E, 2), dw = rand(T * K);
    const tl = Tensor.from(logits, [T, E]);
    const r = ops.moeRoute(tl, { topK: K, renorm });
    const ref = moeRouteRef(f64(logits), T, E, K, renorm);
    expectClose(r.probs.toFloat32Array(), ref.probs, TOL.float32, 'probs');
    expect(Array.from(r.topkIdx.toInt32Array())).toEqual(Array.from(ref.topkIdx));
    expectClose(r.topkW.toFloat32Array(), ref.topkW, TOL.float32, 'topkW');
    const tdw = Tensor.from(dw, [T, K]);
    const dl = ops.moeRouteBackward(tdw, r.probs, r.topkIdx, { renorm });
    expectClose(dl.toFloat32Array(), moeRouteBackwardRef(f64(dw), ref.probs, ref.topkIdx, T, E, K, renorm), TOL.float32, 'dlogits');
    dispose([tl, r, tdw, dl]);
  });

  test('ties go to the lower expert id', () => {
    const tl = Tensor.from(Float32Array.from([1, 3, 3, 0, /* */ 2, 2, 2, 2, /* */ 0, 5, 1, 5]), [3, 4]);
    const r = ops.moeRoute(tl, { topK: 3, renorm: true });
    expect(Array.from(r.topkIdx.toInt32Array())).toEqual([1, 2, 0, 0, 1, 2, 1, 3, 2]);
    expectClose(r.topkW.toFloat32Array().slice(3, 6), [1 / 3, 1 / 3, 1 / 3], TOL.float32, 'uniform weights');
    dispose([tl, r]);
  });

  test.each([true, false])('reference route backward matches finite differences (renorm=%s, top-K set fixed)', (renorm) => {
    const T = 4, E = 6, K = 3;
    // well-separated logits: a 1e-6 step never changes the top-K set
    const logits = new Float64Array(T * E);
    for (let t = 0; t < T; t++) {
      const order = Array.from({ length: E }, (_, i) => i).sort(() => rng.uniform() - 0.5);
      for (let e = 0; e < E; e++) logits[t * E + order[e]] = 0.4 * e + 0.1 * rng.uniform();
    }
    const r = f64(rand(T * K));
    const ref = moeRouteRef(logits, T, E, K, renorm);
    const analytic = moeRouteBackwardRef(r, ref.probs, ref.topkIdx, T, E, K, renorm);
    checkGradient((l) => {
      const o = moeRouteRef(l, T, E, K, renorm);
      expect(Array.from(o.topkIdx)).toEqual(Array.from(ref.topkIdx));
      return dot(o.topkW, r);
    }, logits, analytic, { label: 'dlogits' });
  });
});

describe('moe sort', () => {
  test.each([
    [13, 5, 2, 0],
    [29, 8, 2, 0.25],
    [7, 8, 1, 0.5],
    [4, 3, 3, 1],
  ])('T=%i E=%i K=%i drop fraction %f: stable counting sort with inverse', (T, E, K, dropFrac) => {
    const ids = new Int32Array(T * K);
    for (let t = 0; t < T; t++) {
      const pick = Array.from({ length: E }, (_, i) => i).sort(() => rng.uniform() - 0.5).slice(0, K);
      for (let j = 0; j < K; j++) ids[t * K + j] = rng.uniform() < dropFrac ? -1 : pick[j];
    }
    const ti = Tensor.from(ids, [T, K], 'int32');
    const s = ops.moeSort(ti, E);
    const expected = Array.from(ids.keys()).filter((a) => ids[a] >= 0).sort((a, b) => ids[a] - ids[b] || a - b);
    expect(s.live).toBe(expected.length);
    const perm = s.perm.toInt32Array(), inv = s.invPerm.toInt32Array(), bounds = s.bounds.toInt32Array();
    expect(Array.from(perm.slice(0, s.live))).toEqual(expected);
    expect(Array.from(perm.slice(s.live))).toEqual(new Array(T * K - s.live).fill(-1));
    for (let a = 0; a < T * K; a++) expect(inv[a]).toBe(ids[a] < 0 ? -1 : expected.indexOf(a));
    for (let e = 0; e <= E; e++) expect(bounds[e]).toBe(Array.from(ids).filter((v) => v >= 0 && v < e).length);
    dispose([ti, s]);
  });
});

describe('moe experts and combine primitives vs reference', () => {
  test.each([
    [13, 5, 2, 17, 11, 'float32', 0],
    [13, 5, 2, 17, 11, 'bfloat16', 0.2],
    [20, 8, 2, 9, 7, 'float32', 0.3],
    [9, 4, 1, 6, 5, 'float32', 0],
    [1100, 2, 1, 8, 6, 'float32', 0], // several 512-row blocks per expert
    [20, 3, 2, 300, 280, 'bfloat16', 0.1], // several 256-column blocks (both I and C)
  ] as const)('T=%i E=%i K=%i C=%i I=%i %s weights, drop %f', (T, E, K, C, I, dtype, dropFrac) => {
    const x = rand(T * C), logits = rand(T * E, 2);
    const { t: W, f: wf } = makeExperts(E, C, I, dtype);
    const tx = Tensor.from(x, [T, C]), tl = Tensor.from(logits, [T, E]);
    const route = ops.moeRoute(tl, { topK: K, renorm: true });
    const ids = route.topkIdx.toInt32Array();
    for (let a = 0; a < ids.length; a++) if (rng.uniform() < dropFrac) ids[a] = -1;
    const tids = Tensor.from(ids, [T, K], 'int32');
    const sorted = ops.moeSort(tids, E);
    const A = sorted.live;
    const perm = sorted.perm.toInt32Array(), experts = rowExperts(sorted.bounds.toInt32Array());

    const { y, actGate, actUp } = ops.moeExperts(tx, sorted, W);
    const yRef = new Float64Array(A * C), gRef = new Float64Array(A * I), uRef = new Float64Array(A * I);
    for (let p = 0; p < A; p++) {
      const r = expertRowRef(x, Math.floor(perm[p] / K) * C, wf, experts[p], C, I);
      yRef.set(r.y, p * C);
      gRef.set(r.g, p * I);
      uRef.set(r.u, p * I);
    }
    expectClose(y.toFloat32Array(), yRef, TOL.float32, 'y');
    expectClose(actGate!.toFloat32Array(), gRef, TOL.float32, 'actGate');
    expectClose(actUp!.toFloat32Array(), uRef, TOL.float32, 'actUp');

    // experts backward: dx and weight gradients
    const dy = rand(A * C), tdy = Tensor.from(dy, [A, C]);
    const g = ops.moeExpertsBackward(tdy, tx, sorted, W, { actGate: actGate!, actUp: actUp! }, { needInput: true, needWeights: true });
    const dxRef = new Float64Array(T * C);
    const dwRef = { wg: new Float64Array(E * I * C), wu: new Float64Array(E * I * C), wd: new Float64Array(E * C * I) };
    for (let p = 0; p < A; p++) {
      const t = Math.floor(perm[p] / K);
      expertRowBackwardRef(dy, p * C, x, t * C, wf, experts[p], C, I, dxRef, t * C, dwRef);
    }
    expectClose(g.dx!.toFloat32Array(), dxRef, TOL.reduction, 'dx');
    expectClose(g.dwGate!.toFloat32Array(), dwRef.wg, TOL.reduction, 'dwGate');
    expectClose(g.dwUp!.toFloat32Array(), dwRef.wu, TOL.reduction, 'dwUp');
    expectClose(g.dwDown!.toFloat32Array(), dwRef.wd, TOL.reduction, 'dwDown');

    // combine and its backward
    const out = ops.moeCombine(y, sorted.invPerm, route.topkW);
    const inv = sorted.invPerm.toInt32Array(), w = route.topkW.toFloat32Array(), yv = y.toFloat32Array();
    const outRef = new Float64Array(T * C);
    for (let a = 0; a < T * K; a++) if (inv[a] >= 0) for (let c = 0; c < C; c++) outRef[Math.floor(a / K) * C + c] += w[a] * yv[inv[a] * C + c];
    expectClose(out.toFloat32Array(), outRef, TOL.float32, 'combine');
    const dout = rand(T * C), tdout = Tensor.from(dout, [T, C]);
    const cb = ops.moeCombineBackward(tdout, y, sorted.invPerm, route.topkW);
    const dyRef = new Float64Array(A * C), dwtRef = new Float64Array(T * K);
    for (let a = 0; a < T * K; a++) {
      const t = Math.floor(a / K), p = inv[a];
      if (p < 0) continue;
      for (let c = 0; c < C; c++) {
        dyRef[p * C + c] = w[a] * dout[t * C + c];
        dwtRef[a] += dout[t * C + c] * yv[p * C + c];
      }
    }
    expectClose(cb.dy!.toFloat32Array(), dyRef, TOL.float32, 'combine dy');
    expectClose(cb.dtopkW!.toFloat32Array(), dwtRef, TOL.reduction, 'combine dtopkW');
    dispose([tx, tl, route, tids, sorted, W, y, actGate, actUp, tdy, g, out, tdout, cb]);
  });

  test('experts backward skips what is not asked: dx only, or weight grads only', () => {
    const T = 11, E = 3, K = 2, C = 5, I = 4;
    const { t: W } = makeExperts(E, C, I, 'float32');
    const tx = Tensor.from(rand(T * C), [T, C]), tl = Tensor.from(rand(T * E), [T, E]);
    const route = ops.moeRoute(tl, { topK: K, renorm: false });
    const sorted = ops.moeSort(route.topkIdx, E);
    const f = ops.moeExperts(tx, sorted, W);
    const tdy = Tensor.from(rand(sorted.live * C), [sorted.live, C]);
    const acts = { actGate: f.actGate!, actUp: f.actUp! };
    ops.resetOpCounts();
    const onlyDx = ops.moeExpertsBackward(tdy, tx, sorted, W, acts, { needInput: true, needWeights: false });
    expect(onlyDx.dwGate).toBeUndefined();
    expect(ops.opCounts()['moe_experts_bwd:weight-grad']).toBeUndefined();
    const onlyW = ops.moeExpertsBackward(tdy, tx, sorted, W, acts, { needInput: false, needWeights: true });
    expect(onlyW.dx).toBeUndefined();
    expect(ops.opCounts()['moe_experts_bwd:weight-grad']).toBe(1);
    const both = ops.moeExpertsBackward(tdy, tx, sorted, W, acts, { needInput: true, needWeights: true });
    expectClose(onlyDx.dx!.toFloat32Array(), both.dx!.toFloat32Array(), EXACT, 'dx alone = dx with weights');
    expectClose(onlyW.dwDown!.toFloat32Array(), both.dwDown!.toFloat32Array(), EXACT, 'dwDown alone = dwDown with dx');
    dispose([W, tx, tl, route, sorted, f, tdy, onlyDx, onlyW, both]);
  });
});

describe('moeForward / moeBackward (whole block) vs the per-token reference', () => {
  test.each([
    [13, 5, 2, 17, 11, 'float32', true, false],
    [13, 5, 2, 17, 11, 'float32', false, true],
    [21, 8, 2, 12, 10, 'bfloat16', true, true],
    [10, 8, 1, 9, 13, 'float32', false, false],
  ] as const)('T=%i E=%i K=%i C=%i I=%i %s renorm=%s dropped=%s', (T, E, K, C, I, dtype, renorm, dropped) => {
    const x = rand(T * C), logits = rand(T * E, 2), dout = rand(T * C);
    const { t: W, f: wf } = makeExperts(E, C, I, dtype);
    const drop = dropped ? Int32Array.from({ length: T * K }, (_, a) => (a % 3 === 1 ? 1 : 0)) : null;
    const tx = Tensor.from(x, [T, C]), tl = Tensor.from(logits, [T, E]), tdrop = drop ? Tensor.from(drop, [T, K], 'int32') : undefined;
    const { out, cache } = ops.moeForward(tx, tl, W, { topK: K, renorm, dropMask: tdrop });
    const ref = moeRef(f64(x), f64(logits), wf, T, E, K, C, I, renorm, drop);
    expectClose(out.toFloat32Array(), ref.out, TOL.float32, 'out');
    if (drop) expect(cache.sorted.live).toBe(T * K - drop.reduce((s, v) => s + v, 0));

    const tdout = Tensor.from(dout, [T, C]);
    const g = ops.moeBackward(tdout, cache, { needInput: true, needWeights: true });
    const gref = moeBackwardRef(f64(dout), f64(x), f64(logits), wf, T, E, K, C, I, renorm, drop);
    expectClose(g.dx!.toFloat32Array(), gref.dx, TOL.reduction, 'dx');
    expectClose(g.dgateLogits.toFloat32Array(), gref.dlogits, TOL.reduction, 'dgateLogits');
    expectClose(g.dwGate!.toFloat32Array(), gref.dwGate, TOL.reduction, 'dwGate');
    expectClose(g.dwUp!.toFloat32Array(), gref.dwUp, TOL.reduction, 'dwUp');
    expectClose(g.dwDown!.toFloat32Array(), gref.dwDown, TOL.reduction, 'dwDown');
    // router-only backprop: no weight gradients, no weight-gradient kernel call
    ops.resetOpCounts();
    const g2 = ops.moeBackward(tdout, cache, { needInput: false });
    expect(g2.dx).toBeUndefined();
    expect(g2.dwGate).toBeUndefined();
    expect(ops.opCounts()['moe_experts_bwd']).toBeUndefined();
    expectClose(g2.dgateLogits.toFloat32Array(), g.dgateLogits.toFloat32Array(), EXACT, 'dgateLogits alone');
    // dispose(cache) frees the intermediates but not the caller's x and weights
    dispose(cache);
    expect(cache.y.disposed).toBe(true);
    expect(tx.disposed || W.gate.disposed).toBe(false);
    dispose([tx, tl, tdrop, out, W, tdout, g, g2]);
  });

  test('reference backward matches finite differences (x, logits, weights)', () => {
    const T = 5, E = 4, K = 2, C = 6, I = 5;
    const x = f64(rand(T * C)), r = f64(rand(T * C));
    const logits = new Float64Array(T * E);
    for (let t = 0; t < T; t++) {
      const order = Array.from({ length: E }, (_, i) => i).sort(() => rng.uniform() - 0.5);
      for (let e = 0; e < E; e++) logits[t * E + order[e]] = 0.5 * e + 0.1 * rng.uniform();
    }
    const wf = { wg: f64(rand(E * I * C, 0.4)), wu: f64(rand(E * I * C, 0.4)), wd: f64(rand(E * C * I, 0.4)) };
    const drop = Int32Array.from({ length: T * K }, (_, a) => (a === 3 ? 1 : 0));
    for (const renorm of [true, false]) {
      const g = moeBackwardRef(r, x, logits, wf, T, E, K, C, I, renorm, drop);
      const loss = (xx: Float64Array, ll: Float64Array, w: ExpertWeightsF64) => dot(moeRef(xx, ll, w, T, E, K, C, I, renorm, drop).out, r);
      checkGradient((xx) => loss(xx, logits, wf), x, g.dx, { label: 'dx' });
      checkGradient((ll) => loss(x, ll, wf), logits, g.dlogits, { label: 'dlogits' });
      checkGradient((v) => loss(x, logits, { ...wf, wg: v }), wf.wg, g.dwGate, { label: 'dwGate', samples: 40 });
      checkGradient((v) => loss(x, logits, { ...wf, wu: v }), wf.wu, g.dwUp, { label: 'dwUp', samples: 40 });
      checkGradient((v) => loss(x, logits, { ...wf, wd: v }), wf.wd, g.dwDown, { label: 'dwDown', samples: 40 });
    }
  });

  test('deterministic across thread counts (forward and backward)', () => {
    const T = 600, E = 8, K = 2, C = 64, I = 300;
    const { t: W } = makeExperts(E, C, I, 'float32');
    const tx = Tensor.from(rand(T * C), [T, C]), tl = Tensor.from(rand(T * E), [T, E]), tdout = Tensor.from(rand(T * C), [T, C]);
    const run = () => {
      const { out, cache } = ops.moeForward(tx, tl, W, { topK: K, renorm: true });
      const g = ops.moeBackward(tdout, cache, { needWeights: true });
      const vals = [out, g.dx!, g.dgateLogits, g.dwGate!, g.dwUp!, g.dwDown!].map((t) => Buffer.from(t.toFloat32Array().buffer));
      dispose([out, cache, g]);
      return vals;
    };
    const a = run();
    const threads = native().runtime_info().threads;
    native().set_num_threads(threads === 1 ? 3 : 1);
    let b;
    try {
      b = run();
    } finally {
      native().set_num_threads(threads);
    }
    for (let i = 0; i < a.length; i++) expect(b[i].equals(a[i])).toBe(true); // bit-identical
    dispose([W, tx, tl, tdout]);
  });
});

describe('moe guards (TS and binding)', () => {
  test('TS validation names op, argument, expected and received', () => {
    const E = 5, C = 4, I = 3, T = 6;
    const { t: W } = makeExperts(E, C, I, 'float32');
    const x = Tensor.zeros([T, C]), logits = Tensor.zeros([T, E]);
    expect(() => ops.moeRoute(logits, { topK: 6, renorm: true })).toThrow("moeRoute: 'topK' expected an integer in [1, 5], received 6");
    expect(() => ops.moeRoute(Tensor.zeros([T, E], 'int32'), { topK: 2, renorm: true })).toThrow("moeRoute: 'logits' expected dtype float32, received int32");
    expect(() => ops.moeSort(Tensor.zeros([T, 2]), E)).toThrow("moeSort: 'topkIdx' expected dtype int32, received float32");
    expect(() => ops.moeSort(Tensor.zeros([T, 2], 'int32'), 1)).toThrow(/moeSort: 'numExperts' expected an integer in \[2, \d+\], received 1/);
    expect(() => ops.moeForward(x, Tensor.zeros([T, 4]), W, { topK: 2, renorm: true })).toThrow("moeForward: 'gateLogits' expected shape [T, E] = [6, 5], received [6, 4]");
    expect(() => ops.moeForward(Tensor.zeros([T, 3]), logits, W, { topK: 2, renorm: true })).toThrow("moeForward: 'x' expected shape [T, C] = [*, 4], received [6, 3]");
    const badDown = { ...W, down: Tensor.zeros([E, I, C]) };
    expect(() => ops.moeForward(x, logits, badDown, { topK: 2, renorm: true })).toThrow("moeForward: 'experts.down' expected shape [E, C, I] = [5, 4, 3], received [5, 3, 4]");
    const mixed = { ...W, up: Tensor.zeros([E, I, C], 'bfloat16') };
    expect(() => ops.moeForward(x, logits, mixed, { topK: 2, renorm: true })).toThrow("moeForward: 'experts.up' expected dtype float32 (the dtype of 'experts.gate'), received bfloat16");
    expect(() => ops.moeForward(x, logits, W, { topK: 2, renorm: true, dropMask: Tensor.zeros([T, 3], 'int32') })).toThrow(
      "moeForward: 'dropMask' expected shape [T, K] = [6, 2], received [6, 3]",
    );
    const route = ops.moeRoute(logits, { topK: 2, renorm: true });
    const sorted = ops.moeSort(route.topkIdx, E);
    expect(() => ops.moeExperts(Tensor.zeros([T + 1, C]), sorted, W)).toThrow("moeExperts: 'sorted.perm' expected shape [T*K] = [14], received [12]");
    expect(() => ops.moeCombine(Tensor.zeros([sorted.live, C]), sorted.invPerm, Tensor.zeros([T, 3]))).toThrow("moeCombine: 'topkW' expected shape [T, K] = [6, 2], received [6, 3]");
    expect(() => ops.moeRouteBackward(Tensor.zeros([T, 3]), route.probs, route.topkIdx, { renorm: true })).toThrow(
      "moeRouteBackward: 'dtopkW' expected shape [T, K] = [6, 2], received [6, 3]",
    );
    const y = Tensor.zeros([sorted.live, C]);
    expect(() => ops.moeExpertsBackward(y, x, sorted, W, { actGate: Tensor.zeros([sorted.live, I + 1]), actUp: Tensor.zeros([sorted.live, I]) })).toThrow(
      `moeExpertsBackward: 'actGate' expected shape [A, I] = [${sorted.live}, ${I}], received [${sorted.live}, ${I + 1}]`,
    );
    dispose([W, x, logits, badDown.down, mixed.up, route, sorted, y]);
  });

  test('index tensors out of range: RT_ERR_INDEX naming position and value', () => {
    const ids = Tensor.from(Int32Array.from([0, 1, 2, 5]), [2, 2], 'int32');
    expect(() => ops.moeSort(ids, 5)).toThrow('moe_sort: topk_idx[3] = 5 is out of range [0, 5) (-1 marks a dropped assignment)');
    const neg = Tensor.from(Int32Array.from([0, -2, 2, 1]), [2, 2], 'int32');
    expect(() => ops.moeSort(neg, 5)).toThrow('moe_sort: topk_idx[1] = -2 is out of range [0, 5)');
    try {
      ops.moeSort(ids, 5);
    } catch (e) {
      expect((e as { code: string }).code).toBe('RT_ERR_INDEX');
    }
    const dropped = Tensor.from(Int32Array.from([0, -1, 2, 1]), [2, 2], 'int32'), probs = Tensor.zeros([2, 5]), dw = Tensor.zeros([2, 2]);
    expect(() => ops.moeRouteBackward(dw, probs, dropped, { renorm: true })).toThrow('moe_route_bwd: topk_idx[1] = -1 is out of range [0, 5)');
    const inv = Tensor.from(Int32Array.from([0, 1, 7, -1]), [2, 2], 'int32');
    expect(() => ops.moeCombine(Tensor.zeros([3, 4]), inv, dw)).toThrow('moe_combine_fwd: inv_perm[2] = 7 is out of range [0, 3)');
    const rep = Tensor.from(Int32Array.from([0, 1, 1, -1]), [2, 2], 'int32');
    expect(() => ops.moeCombineBackward(Tensor.zeros([2, 4]), Tensor.zeros([3, 4]), rep, dw)).toThrow("moe_combine_bwd: inv_perm[2] = 1 repeats an earlier assignment's row");
    dispose([ids, neg, dropped, probs, dw, inv, rep]);
  });

  test('binding rejects short buffers, wrong dtypes, bad sizes and bad sort tensors', () => {
    const n = native() as any;
    const f = (k: number) => n.tensor_alloc(k, 0), i = (k: number) => n.tensor_alloc(k, 2), b = (k: number) => n.tensor_alloc(k, 1);
    const T = 3, E = 4, K = 2, C = 5, I = 3;
    const probs = f(T * E), idx = i(T * K), w = f(T * K), logits = f(T * E);
    n.tensor_write(logits, Float32Array.from({ length: T * E }, (_, k) => k % 7), 0);
    expect(() => n.moe_route_fwd(probs, idx, w, logits, T, E, 5, true)).toThrow("moe_route_fwd: 'K' expected an integer in [1, 4], received 5");
    expect(() => n.moe_route_fwd(probs, idx, w, logits, T, 0, 1, true)).toThrow(/moe_route_fwd: 'E' expected an integer in \[1, \d+\], received 0/);
    expect(() => n.moe_route_fwd(probs, w, w, logits, T, E, K, true)).toThrow("moe_route_fwd: 'topk_idx' expected dtype int32, received float32");
    expect(() => n.moe_route_fwd(probs, idx, w, f(5), T, E, K, true)).toThrow("moe_route_fwd: 'logits' expected at least 12 elements, received 5");
    n.moe_route_fwd(probs, idx, w, logits, T, E, K, true);
    expect(() => n.moe_route_bwd(f(T * E), w, probs, idx, T, E, K, 'x')).toThrow("moe_route_bwd: 'renorm' expected a boolean");
    const perm = i(T * K), inv = i(T * K), bounds = i(E + 1);
    expect(() => n.moe_sort(perm, inv, i(E), idx, T, E, K)).toThrow("moe_sort: 'bounds' expected at least 5 elements, received 4");
    const live = n.moe_sort(perm, inv, bounds, idx, T, E, K);
    expect(live).toBe(T * K);
    const x = f(T * C), y = f(T * K * C), ag = f(T * K * I), au = f(T * K * I);
    const wg = f(E * I * C), wu = f(E * I * C), wd = f(E * C * I);
    for (const t of [x, wg, wu, wd]) n.tensor_write(t, new Float32Array(n.tensor_info(t).numel), 0);
    n.moe_experts_fwd(y, ag, au, x, perm, bounds, wg, wu, wd, T, E, K, C, I);
    expect(() => n.moe_experts_fwd(y, ag, au, x, perm, bounds, wg, b(E * I * C), wd, T, E, K, C, I)).toThrow(
      "moe_experts_fwd: 'w_up' expected dtype float32 (the dtype of 'w_gate'), received bfloat16",
    );
    expect(() => n.moe_experts_fwd(y, ag, au, x, perm, bounds, i(E * I * C), wu, wd, T, E, K, C, I)).toThrow(
      "moe_experts_fwd: 'w_gate' expected dtype float32 or bfloat16, received int32",
    );
    expect(() => n.moe_experts_fwd(y, ag, au, x, perm, bounds, wg, wu, f(7), T, E, K, C, I)).toThrow("moe_experts_fwd: 'w_down' expected at least 60 elements, received 7");
    expect(() => n.moe_experts_fwd(f(3), ag, au, x, perm, bounds, wg, wu, wd, T, E, K, C, I)).toThrow("moe_experts_fwd: 'y' expected at least 30 elements, received 3");
    expect(() => n.moe_experts_fwd(y, ag, null, x, perm, bounds, wg, wu, wd, T, E, K, C, I)).toThrow(
      'moe_experts_fwd: expected act_gate and act_up both given or both NULL, received only act_gate',
    );
    // corrupt sort tensors: the kernel validates before touching any row
    const bad = i(E + 1);
    n.tensor_write(bad, Int32Array.from([1, 2, 3, 4, 6]), 0);
    expect(() => n.moe_experts_fwd(y, ag, au, x, perm, bad, wg, wu, wd, T, E, K, C, I)).toThrow('moe_experts_fwd: expected bounds[0] = 0, received 1');
    n.tensor_write(bad, Int32Array.from([0, 3, 2, 4, 6]), 0);
    expect(() => n.moe_experts_fwd(y, ag, au, x, perm, bad, wg, wu, wd, T, E, K, C, I)).toThrow(
      'moe_experts_fwd: expected non-decreasing bounds, received bounds[2] = 2 < bounds[1] = 3',
    );
    n.tensor_write(bad, Int32Array.from([0, 1, 2, 4, 9]), 0);
    expect(() => n.moe_experts_fwd(y, ag, au, x, perm, bad, wg, wu, wd, T, E, K, C, I)).toThrow('moe_experts_fwd: expected bounds[E] <= T*K = 6, received bounds[4] = 9');
    const badPerm = i(T * K);
    n.tensor_write(badPerm, Int32Array.from([0, 1, 2, 3, 4, 6]), 0);
    expect(() => n.moe_experts_fwd(y, ag, au, x, badPerm, bounds, wg, wu, wd, T, E, K, C, I)).toThrow('moe_experts_fwd: perm[5] = 6 is out of range [0, 6)');
    n.tensor_write(badPerm, Int32Array.from([0, 1, 2, 3, 4, 1]), 0);
    const dy = f(T * K * C);
    expect(() => n.moe_experts_bwd(f(T * C), null, null, null, dy, x, badPerm, bounds, wg, wu, wd, ag, au, T, E, K, C, I)).toThrow(
      'moe_experts_bwd: perm[5] = 1 repeats perm[1]',
    );
    expect(() => n.moe_experts_bwd(f(2), null, null, null, dy, x, perm, bounds, wg, wu, wd, ag, au, T, E, K, C, I)).toThrow(
      "moe_experts_bwd: 'dx' expected at least 15 elements, received 2",
    );
    expect(() => n.moe_experts_bwd(null, null, f(2), null, dy, x, perm, bounds, wg, wu, wd, ag, au, T, E, K, C, I)).toThrow(
      "moe_experts_bwd: 'dw_up' expected at least 60 elements, received 2",
    );
    expect(() => n.moe_experts_bwd(null, null, null, null, dy, x, perm, bounds, wg, wu, wd, null, au, T, E, K, C, I)).toThrow(
      "moe_experts_bwd: 'act_gate' expected a tensor handle, received null",
    );
    const out = f(T * C);
    expect(() => n.moe_combine_fwd(out, y, inv, w, T, K, C, 7)).toThrow("moe_combine_fwd: 'y' expected at least 35 elements, received 30");
    expect(() => n.moe_combine_fwd(out, y, w, w, T, K, C, 6)).toThrow("moe_combine_fwd: 'inv_perm' expected dtype int32, received float32");
    expect(() => n.moe_combine_bwd(null, f(2), out, y, inv, w, T, K, C, 6)).toThrow("moe_combine_bwd: 'dtopk_w' expected at least 6 elements, received 2");
    expect(() => n.moe_combine_bwd(null, null, out, y, inv, w, T, K, C)).toThrow('moe_combine_bwd: expected 10 arguments, received 9');
    for (const h of [probs, idx, w, logits, perm, inv, bounds, x, y, ag, au, wg, wu, wd, bad, badPerm, dy, out]) n.tensor_free(h);
  });
});
