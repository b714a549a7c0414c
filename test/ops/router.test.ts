import { Tensor, dispose, ops } from '../../lib';
import { native } from '../../lib/native';
import { expectClose, f64, TOL } from '../helpers/compare';
import { checkGradient, dot } from '../helpers/gradcheck';
import { Rng } from '../helpers/random';
import { routerSeqBackwardRef, routerSeqRef, routerTokenBackwardRef, routerTokenRef } from '../reference/router';

const rng = new Rng(4242);
/** Uniform floats with standard deviation `scale` (Math.log/cos are slow under jest; uniform() is not). */
const rand = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * 1.7320508 * scale);

/** A gate is a hard decision: rows whose float64 score is within `margin` of τ may flip in fp32. */
function gatesAgree(native: Float32Array, ref: Float64Array, refScore: Float64Array, threshold: number, label: string) {
  for (let i = 0; i < ref.length; i++) {
    if (Math.abs(refScore[i] - threshold) < 1e-5) continue;
    if (native[i] !== ref[i]) throw new Error(`${label}: gate[${i}] = ${native[i]}, expected ${ref[i]} (score ${refScore[i]})`);
  }
}

describe('router token scoring vs float64 reference', () => {
  test.each([
    [1, 1, 0.5],
    [13, 17, 0.5],
    [257, 33, 0.45],
    [1000, 129, 0.55],
    [4099, 61, 0.5], // several chunks: exercises the parallel compaction
  ])('T=%i C=%i threshold=%f: score, gate, execIdx, count', (T, C, thr) => {
    const h = rand(T * C), w = rand(C, 0.3);
    const th = Tensor.from(h, [T, C]), tw = Tensor.from(w);
    const r = ops.routerScoreTokens(th, tw, thr);
    const ref = routerTokenRef(f64(h), f64(w), T, C, thr);
    expectClose(r.score.toFloat32Array(), ref.score, TOL.float32, 'score');
    const gate = r.gate.toFloat32Array();
    gatesAgree(gate, ref.gate, ref.score, thr, 'gate');
    const exec = Array.from(r.execIdx.toInt32Array());
    expect(r.count).toBe(exec.length);
    expect(r.execIdx.shape).toEqual([r.count]);
    // exec_idx is exactly the ascending list of native gate = 1 rows
    expect(exec).toEqual(Array.from(gate).flatMap((g, i) => (g ? [i] : [])));
    expect(Math.abs(r.count - ref.execIdx.length)).toBeLessThanOrEqual(ref.score.filter((s) => Math.abs(s - thr) < 1e-5).length);
    dispose([th, tw, r]);
  });

  test('leading dims are kept: h [B, T, C] gives score [B, T] and flat row indices', () => {
    const B = 3, T = 5, C = 7;
    const h = rand(B * T * C), w = rand(C);
    const th = Tensor.from(h, [B, T, C]), tw = Tensor.from(w);
    const r = ops.routerScoreTokens(th, tw, 0.5);
    expect(r.score.shape).toEqual([B, T]);
    const ref = routerTokenRef(f64(h), f64(w), B * T, C, 0.5);
    expect(Array.from(r.execIdx.toInt32Array())).toEqual(ref.execIdx);
    dispose([th, tw, r]);
  });

  test('zero-initialised router executes every token (σ(0) = 0.5 ≥ τ = 0.5); τ > 1 executes none', () => {
    const T = 37, C = 11;
    const th = Tensor.from(rand(T * C), [T, C]), tw = Tensor.zeros([C]);
    const all = ops.routerScoreTokens(th, tw, 0.5);
    expect(all.count).toBe(T);
    expect(Array.from(all.execIdx.toInt32Array())).toEqual(Array.from({ length: T }, (_, i) => i));
    const none = ops.routerScoreTokens(th, tw, 1.5);
    expect(none.count).toBe(0);
    expect(none.execIdx.shape).toEqual([0]);
    dispose([th, tw, all, none]);
  });

  test('deterministic across runs and thread counts', () => {
    const T = 3001, C = 257;
    const th = Tensor.from(rand(T * C), [T, C]), tw = Tensor.from(rand(C, 0.1));
    const ds = Tensor.from(rand(T));
    const a = ops.routerScoreTokens(th, tw, 0.5);
    const ga = ops.routerScoreTokensBackward(ds, a.score, th, tw);
    const threads = native().runtime_info().threads;
    native().set_num_threads(threads === 1 ? 2 : 1);
    let b, gb;
    try {
      b = ops.routerScoreTokens(th, tw, 0.5);
      gb = ops.routerScoreTokensBackward(ds, b.score, th, tw);
    } finally {
      native().set_num_threads(threads);
    }
    expect(Array.from(b.score.toFloat32Array())).toEqual(Array.from(a.score.toFloat32Array()));
    expect(Array.from(b.execIdx.toInt32Array())).toEqual(Array.from(a.execIdx.toInt32Array()));
    expect(Array.from(gb.dw!.toFloat32Array())).toEqual(Array.from(ga.dw!.toFloat32Array()));
    dispose([th, tw, ds, a, b, ga, gb]);
  });
});

describe('router token backward', () => {
  test('reference backward matches finite differences (dw and dh)', () => {
    const T = 4, C = 5;
    const h = f64(rand(T * C)), w = f64(rand(C, 0.5)), r = f64(rand(T));
    const { score } = routerTokenRef(h, w, T, C, 0.5);
    const ref = routerTokenBackwardRef(r, score, h, w, T, C);
    checkGradient((ww) => dot(routerTokenRef(h, ww, T, C, 0.5).score, r), w, ref.dw, { label: 'dw' });
    checkGradient((hh) => dot(routerTokenRef(hh, w, T, C, 0.5).score, r), h, ref.dh, { label: 'dh' });
  });

  test.each([
    [13, 17],
    [300, 65],
    [700, 450], // several dw partial chunks
  ])('native vs reference T=%i C=%i, accumulating into given tensors', (T, C) => {
    const h = rand(T * C), w = rand(C, 0.2), ds = rand(T);
    const th = Tensor.from(h, [T, C]), tw = Tensor.from(w), tds = Tensor.from(ds);
    const fwd = ops.routerScoreTokens(th, tw, 0.5);
    const s = fwd.score.toFloat32Array();
    const ref = routerTokenBackwardRef(f64(ds), f64(s), f64(h), f64(w), T, C);
    const { dw, dh } = ops.routerScoreTokensBackward(tds, fwd.score, th, tw);
    expectClose(dw!.toFloat32Array(), ref.dw, TOL.reduction, 'dw');
    expectClose(dh!.toFloat32Array(), ref.dh, TOL.float32, 'dh');
    // accumulation into caller tensors; needInput false leaves dh out
    const g2 = ops.routerScoreTokensBackward(tds, fwd.score, th, tw, { weightGradInto: dw, needInput: false });
    expect(g2.dw).toBe(dw);
    expect(g2.dh).toBeUndefined();
    expectClose(dw!.toFloat32Array(), ref.dw.map((v) => 2 * v), TOL.reduction, 'dw accumulated');
    ops.routerScoreTokensBackward(tds, fwd.score, th, tw, { inputGradInto: dh, needWeight: false });
    expectClose(dh!.toFloat32Array(), ref.dh.map((v) => 2 * v), TOL.float32, 'dh accumulated');
    dispose([th, tw, tds, fwd, dw, dh]);
  });
});

describe('router sequence scoring', () => {
  function mask(B: number, T: number): Int32Array {
    const m = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const len = 1 + ((b * 7) % T); // right padding, every sequence has ≥ 1 token
      for (let t = 0; t < len; t++) m[b * T + t] = 1;
    }
    return m;
  }

  test.each([
    [1, 1, 1, false],
    [3, 13, 17, true],
    [5, 70, 129, false],
    [2, 700, 450, true], // several time chunks per sequence
  ])('B=%i T=%i C=%i masked=%s: forward and backward vs reference', (B, T, C, masked) => {
    const h = rand(B * T * C), w = rand(C, 2), ds = rand(B);
    const m = masked ? mask(B, T) : null;
    const th = Tensor.from(h, [B, T, C]), tw = Tensor.from(w), tm = m ? Tensor.from(m, [B, T], 'int32') : undefined;
    const r = ops.routerScoreSequences(th, tw, 0.5, tm);
    const ref = routerSeqRef(f64(h), m, f64(w), B, T, C, 0.5);
    expectClose(r.pooled.toFloat32Array(), ref.pooled, TOL.reduction, 'pooled');
    expectClose(r.score.toFloat32Array(), ref.score, TOL.reduction, 'score');
    gatesAgree(r.gate.toFloat32Array(), ref.gate, ref.score, 0.5, 'gate');
    const gate = r.gate.toFloat32Array();
    expect(Array.from(r.execIdx.toInt32Array())).toEqual(Array.from(gate).flatMap((g, i) => (g ? [i] : [])));
    expect(r.count).toBe(r.execIdx.numel);

    const tds = Tensor.from(ds);
    const g = ops.routerScoreSequencesBackward(tds, r.score, r.pooled, tw, { seqLen: T, mask: tm });
    const bref = routerSeqBackwardRef(f64(ds), f64(r.score.toFloat32Array()), f64(r.pooled.toFloat32Array()), m, f64(w), B, T, C);
    expectClose(g.dw!.toFloat32Array(), bref.dw, TOL.reduction, 'dw');
    expectClose(g.dh!.toFloat32Array(), bref.dh, TOL.float32, 'dh');
    dispose([th, tw, tm, r, tds, g]);
  });

  test('reference backward matches finite differences (masked)', () => {
    const B = 3, T = 4, C = 3;
    const h = f64(rand(B * T * C)), w = f64(rand(C)), r = f64(rand(B));
    const m = Int32Array.from([1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1]);
    const fwd = routerSeqRef(h, m, w, B, T, C, 0.5);
    const ref = routerSeqBackwardRef(r, fwd.score, fwd.pooled, m, w, B, T, C);
    checkGradient((ww) => dot(routerSeqRef(h, m, ww, B, T, C, 0.5).score, r), w, ref.dw, { label: 'dw' });
    checkGradient((hh) => dot(routerSeqRef(hh, m, w, B, T, C, 0.5).score, r), h, ref.dh, { label: 'dh' });
  });
});

describe('router guards (TS and binding)', () => {
  test('TS validation names op, argument, expected and received', () => {
    const h = Tensor.zeros([4, 3]), w = Tensor.zeros([3]), w2 = Tensor.zeros([2]), hi = Tensor.zeros([4, 3], 'int32');
    const h3 = Tensor.zeros([2, 4, 3]);
    expect(() => ops.routerScoreTokens(h, w2, 0.5)).toThrow("routerScoreTokens: 'w' expected shape [C] = [3], received [2]");
    expect(() => ops.routerScoreTokens(hi, w, 0.5)).toThrow("routerScoreTokens: 'h' expected dtype float32, received int32");
    expect(() => ops.routerScoreTokens(w, w, 0.5)).toThrow("routerScoreTokens: 'h' expected shape [..., C] of rank >= 2, received [3]");
    expect(() => ops.routerScoreTokens(h, w, NaN)).toThrow("routerScoreTokens: 'threshold' expected a finite number, received NaN");
    expect(() => ops.routerScoreTokensBackward(w2, w2, h, w)).toThrow("routerScoreTokensBackward: 'dscore' expected shape [4], received [2]");
    expect(() => ops.routerScoreTokensBackward(Tensor.zeros([4]), Tensor.zeros([4]), h, w, { weightGradInto: w2 })).toThrow(
      "routerScoreTokensBackward: 'weightGradInto' expected shape [3], received [2]",
    );
    expect(() => ops.routerScoreSequences(h, w, 0.5)).toThrow("routerScoreSequences: 'h' expected rank 3, received rank 2 [4, 3]");
    expect(() => ops.routerScoreSequences(h3, w, 0.5, Tensor.zeros([2, 4]))).toThrow("routerScoreSequences: 'mask' expected dtype int32, received float32");
    expect(() => ops.routerScoreSequences(h3, w, 0.5, Tensor.zeros([2, 3], 'int32'))).toThrow(
      "routerScoreSequences: 'mask' expected shape [B, T] = [2, 4], received [2, 3]",
    );
    const pooled = Tensor.zeros([2, 3]), s2 = Tensor.zeros([2]);
    expect(() => ops.routerScoreSequencesBackward(s2, s2, pooled, w, { seqLen: 0 })).toThrow(
      /routerScoreSequencesBackward: 'seqLen' expected an integer in \[1, \d+\], received 0/,
    );
    dispose([h, w, w2, hi, h3, pooled, s2]);
  });

  test('a sequence with no valid token is an error naming the sequence (TS and binding)', () => {
    const h = Tensor.from(rand(2 * 3 * 4), [2, 3, 4]), w = Tensor.zeros([4]);
    const m = Tensor.from(Int32Array.from([1, 0, 0, 0, 0, 0]), [2, 3], 'int32');
    expect(() => ops.routerScoreSequences(h, w, 0.5, m)).toThrow('router_seq_fwd: sequence 1 has no valid token');
    const s = Tensor.zeros([2]), p = Tensor.zeros([2, 4]);
    expect(() => ops.routerScoreSequencesBackward(s, s, p, w, { seqLen: 3, mask: m })).toThrow('router_seq_bwd: sequence 1 has no valid token');
    try {
      ops.routerScoreSequences(h, w, 0.5, m);
    } catch (e) {
      expect((e as { code: string }).code).toBe('RT_ERR_ARG');
    }
    dispose([h, w, m, s, p]);
  });

  test('binding rejects short buffers, wrong dtypes and bad sizes', () => {
    const n = native() as any;
    const f = (k: number) => n.tensor_alloc(k, 0), i = (k: number) => n.tensor_alloc(k, 2);
    const T = 4, C = 3;
    const score = f(T), gate = f(T), idx = i(T), h = f(T * C), w = f(C), small = f(2), ints = i(T), idxSmall = i(2);
    expect(() => n.router_token_fwd(score, gate, idx, small, w, T, C, 0.5)).toThrow("router_token_fwd: 'h' expected at least 12 elements, received 2");
    expect(() => n.router_token_fwd(score, gate, idxSmall, h, w, T, C, 0.5)).toThrow("router_token_fwd: 'exec_idx' expected at least 4 elements, received 2");
    expect(() => n.router_token_fwd(score, gate, score, h, w, T, C, 0.5)).toThrow("router_token_fwd: 'exec_idx' expected dtype int32, received float32");
    expect(() => n.router_token_fwd(ints, gate, idx, h, w, T, C, 0.5)).toThrow("router_token_fwd: 'score' expected dtype float32, received int32");
    expect(() => n.router_token_fwd(score, gate, idx, h, w, -1, C, 0.5)).toThrow(/router_token_fwd: 'T' expected an integer in \[0, \d+\], received -1/);
    expect(() => n.router_token_fwd(score, gate, idx, h, w, T, C, NaN)).toThrow("router_token_fwd: 'threshold' expected a number, received NaN");
    expect(() => n.router_token_fwd(score, gate, idx, h, w, T, C)).toThrow('router_token_fwd: expected 8 arguments, received 7');
    n.tensor_write(h, new Float32Array(T * C), 0);
    n.tensor_write(w, new Float32Array(C), 0);
    expect(n.router_token_fwd(score, gate, idx, h, w, T, C, 0.5)).toBe(T); // σ(0) = 0.5 ≥ 0.5: every row
    expect(() => n.router_token_bwd(small, null, score, score, h, w, T, C)).toThrow("router_token_bwd: 'dw' expected at least 3 elements, received 2");
    expect(() => n.router_token_bwd(null, small, score, score, h, w, T, C)).toThrow("router_token_bwd: 'dh' expected at least 12 elements, received 2");
    expect(() => n.router_token_bwd(null, null, small, score, h, w, T, C)).toThrow("router_token_bwd: 'dscore' expected at least 4 elements, received 2");
    const B = 2, S = 2;
    const pooled = f(B * C);
    expect(() => n.router_seq_fwd(pooled, score, gate, idx, h, f(B * S), w, B, S, C, 0.5)).toThrow("router_seq_fwd: 'mask' expected dtype int32, received float32");
    expect(() => n.router_seq_fwd(pooled, score, gate, idx, h, n.tensor_alloc(3, 2), w, B, S, C, 0.5)).toThrow("router_seq_fwd: 'mask' expected at least 4 elements, received 3");
    expect(() => n.router_seq_fwd(small, score, gate, idx, h, null, w, B, S, C, 0.5)).toThrow("router_seq_fwd: 'pooled' expected at least 6 elements, received 2");
    expect(() => n.router_seq_fwd(pooled, score, gate, idx, h, null, w, 2 ** 30, 2 ** 30, 2 ** 30, 0.5)).toThrow(/overflows 2\^53/);
    expect(() => n.router_seq_bwd(null, null, score, score, small, null, w, B, S, C)).toThrow("router_seq_bwd: 'pooled' expected at least 6 elements, received 2");
    expect(() => n.router_seq_bwd(null, null, score, score, pooled, null, w, B, S, C, 1)).toThrow('router_seq_bwd: expected 10 arguments, received 11');
    for (const x of [score, gate, idx, h, w, small, ints, idxSmall, pooled]) n.tensor_free(x);
  });
});
