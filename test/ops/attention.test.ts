import { Tensor, dispose, ops, setNumThreads } from '../../lib';
import { native } from '../../lib/native';
import { expectClose, f64, TOL } from '../helpers/compare';
import { checkGradient, dot } from '../helpers/gradcheck';
import { Rng } from '../helpers/random';
import { AttentionRefDims, attentionBackwardRef, attentionRef, qposOf } from '../reference/attention';

const rng = new Rng(4242);
// Backward sums over up to a few hundred queries/keys in fp32: reduction tolerances.
const BWD = TOL.reduction;

interface Case {
  B: number;
  Tq: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  window?: number;
  qpos?: Int32Array;
  kpos?: Int32Array;
  scale?: number;
}

interface Inputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  dout: Float32Array;
}

function inputsFor(c: Case): Inputs {
  return {
    q: rng.floats(c.B * c.Tq * c.Hq * c.D),
    k: rng.floats(c.B * c.Tk * c.Hkv * c.D),
    v: rng.floats(c.B * c.Tk * c.Hkv * c.D),
    dout: rng.floats(c.B * c.Tq * c.Hq * c.D),
  };
}

const refDims = (c: Case): AttentionRefDims => ({
  B: c.B,
  Tq: c.Tq,
  Tk: c.Tk,
  Hq: c.Hq,
  Hkv: c.Hkv,
  D: c.D,
  scale: c.scale ?? 1 / Math.sqrt(c.D),
  window: c.window ?? 0,
  qpos: c.qpos ?? null,
  kpos: c.kpos ?? null,
});

/** Native forward + backward for case c; everything read back as arrays, tensors freed. */
function runNative(c: Case, x: Inputs, want: { needQ?: boolean; needKV?: boolean } = {}) {
  const q = Tensor.from(x.q, [c.B, c.Tq, c.Hq, c.D]);
  const k = Tensor.from(x.k, [c.B, c.Tk, c.Hkv, c.D]);
  const v = Tensor.from(x.v, [c.B, c.Tk, c.Hkv, c.D]);
  const dout = Tensor.from(x.dout, [c.B, c.Tq, c.Hq, c.D]);
  const qpos = c.qpos ? Tensor.from(c.qpos, [c.B, c.Tq]) : undefined;
  const kpos = c.kpos ? Tensor.from(c.kpos, [c.B, c.Tk]) : undefined;
  const opts = { qpos, kpos, window: c.window, scale: c.scale };
  const { out, lse } = ops.attention(q, k, v, opts);
  const g = ops.attentionBackward(dout, q, k, v, out, lse, opts, want);
  const res = {
    out: out.toFloat32Array(),
    lse: lse.toFloat32Array(),
    dq: g.dq?.toFloat32Array(),
    dk: g.dk?.toFloat32Array(),
    dv: g.dv?.toFloat32Array(),
  };
  dispose([q, k, v, dout, qpos, kpos, out, lse, g.dq, g.dk, g.dv]);
  return res;
}

function checkAgainstReference(c: Case, label: string, x = inputsFor(c)) {
  const d = refDims(c);
  const got = runNative(c, x);
  const ref = attentionRef(f64(x.q), f64(x.k), f64(x.v), d);
  expectClose(got.out, ref.out, TOL.float32, `${label} out`);
  expectClose(got.lse, ref.lse, TOL.float32, `${label} lse`);
  const g = attentionBackwardRef(f64(x.dout), f64(x.q), f64(x.k), f64(x.v), d);
  expectClose(got.dq!, g.dq, BWD, `${label} dq`);
  expectClose(got.dk!, g.dk, BWD, `${label} dk`);
  expectClose(got.dv!, g.dv, BWD, `${label} dv`);
  return { got, ref, x };
}

/** Rows (b, i, h) of a (B, T, H, D) array, as a flat copy. */
function pickRows(a: ArrayLike<number>, T: number, H: number, D: number, b: number, rows: number[]): Float64Array {
  const out = new Float64Array(rows.length * H * D);
  rows.forEach((t, r) => {
    for (let e = 0; e < H * D; e++) out[r * H * D + e] = a[((b * T + t) * H) * D + e];
  });
  return out;
}

describe('attention vs float64 reference', () => {
  // [B, Tq, Tk, Hq, Hkv, D]: odd head dims, GQA 1/2/4, Tq = Tk beyond one 128 tile,
  // decode (Tq = 1) against long Tk, chunked prefill (Tq < Tk), Tq > Tk (early queries
  // have negative default positions: padding).
  test.each([
    [1, 7, 7, 1, 1, 5],
    [2, 33, 33, 4, 2, 33],
    [1, 131, 131, 2, 1, 64],
    [2, 45, 45, 4, 1, 80],
    [1, 60, 60, 2, 2, 96],
    [1, 1, 300, 4, 2, 96],
    [2, 1, 257, 4, 1, 128],
    [1, 40, 200, 2, 2, 128],
    [1, 150, 100, 2, 1, 16],
    [1, 3, 1100, 8, 2, 20], // decode path, Tq = 3, two key splits (1024 keys each), GEMM path (12 rows per kv head)
    [2, 2, 1100, 2, 2, 12], // decode path, dot-product path (2 rows per kv head), two splits
  ])('B=%i Tq=%i Tk=%i Hq=%i Hkv=%i D=%i: forward and backward', (B, Tq, Tk, Hq, Hkv, D) => {
    checkAgainstReference({ B, Tq, Tk, Hq, Hkv, D }, `[${B},${Tq},${Tk},${Hq},${Hkv},${D}]`);
  });

  test('decode path with padding, explicit positions and a window (split boundary at 1024 keys)', () => {
    const B = 2, Tq = 2, Tk = 1300;
    const kpos = new Int32Array(B * Tk), qpos = new Int32Array(B * Tq);
    for (let j = 0; j < Tk; j++) {
      kpos[j] = j < 40 ? -1 : j - 40; // left padding
      kpos[Tk + j] = Tk - 1 - j; // reversed order
    }
    qpos.set([1258, 1259, 700, -1]); // last query of batch 1 is padding
    for (const [Hq, Hkv, window] of [
      [4, 4, 0],
      [8, 2, 300],
    ])
      checkAgainstReference({ B, Tq, Tk, Hq, Hkv, D: 8, qpos, kpos, window }, `decode Hq=${Hq} Hkv=${Hkv} window=${window}`);
  });

  test('empty sizes: no keys gives zeros and lse -inf; no queries gives zero dk, dv', () => {
    for (const Tq of [2, 6]) {
      const c = { B: 2, Tq, Tk: 0, Hq: 2, Hkv: 1, D: 5 };
      const got = runNative(c, inputsFor(c));
      expect(Array.from(got.out).every((x) => x === 0)).toBe(true);
      expect(Array.from(got.lse).every((x) => x === -Infinity)).toBe(true);
      expect(Array.from(got.dq!).every((x) => x === 0)).toBe(true);
    }
    const c = { B: 1, Tq: 0, Tk: 7, Hq: 2, Hkv: 2, D: 3 };
    const got = runNative(c, inputsFor(c));
    expect(got.out.length).toBe(0);
    expect(Array.from(got.dk!).every((x) => x === 0) && got.dk!.length === 42).toBe(true);
    expect(Array.from(got.dv!).every((x) => x === 0)).toBe(true);
  });

  test('custom scale', () => {
    checkAgainstReference({ B: 1, Tq: 19, Tk: 19, Hq: 2, Hkv: 1, D: 12, scale: 0.7 }, 'scale 0.7');
  });

  test('Tq > Tk with default positions: the first Tq - Tk queries see nothing (zeros, lse -inf)', () => {
    const c = { B: 1, Tq: 9, Tk: 4, Hq: 2, Hkv: 2, D: 8 };
    const { got } = checkAgainstReference(c, 'Tq>Tk');
    for (let i = 0; i < 5; i++) for (let e = 0; e < c.Hq * c.D; e++) expect(got.out[i * c.Hq * c.D + e]).toBe(0);
    for (let h = 0; h < 2; h++) for (let i = 0; i < 5; i++) expect(got.lse[h * 9 + i]).toBe(-Infinity);
    expect(Number.isFinite(got.lse[5])).toBe(true);
  });

  test('sliding window: against the reference, across tile boundaries (T > 128)', () => {
    // T = 300 is three 128-tiles. window 1: every tile off the diagonal is skipped;
    // 130: tiles two blocks back are masked, not skipped; 299: tiles 0 and 1 lie entirely
    // inside the window of query block 1, tile 1 of block 2 (unmasked fast path), but tile 0
    // of block 2 misses by one (query 299, key 0).
    for (const window of [1, 130, 299]) checkAgainstReference({ B: 1, Tq: 300, Tk: 300, Hq: 2, Hkv: 1, D: 8, window }, `window ${window}`);
    checkAgainstReference({ B: 2, Tq: 70, Tk: 333, Hq: 4, Hkv: 2, D: 33, window: 97 }, 'GQA chunked window');
  });

  test('padding: negative positions; a fully padded query row gives zeros and lse -inf', () => {
    // batch 0 left-padded by 3, batch 1 has a padded hole in the middle and at the end
    const B = 2, T = 140;
    const pos = new Int32Array(B * T);
    for (let t = 0; t < T; t++) {
      pos[t] = t < 3 ? -1 : t - 3;
      pos[T + t] = (t >= 60 && t < 64) || t >= 137 ? -1 : t;
    }
    const c = { B, Tq: T, Tk: T, Hq: 4, Hkv: 2, D: 24, qpos: pos, kpos: pos };
    const { got, ref } = checkAgainstReference(c, 'padding');
    for (const [b, t] of [
      [0, 0],
      [0, 2],
      [1, 61],
      [1, 139],
    ])
      for (let h = 0; h < 4; h++) {
        for (let e = 0; e < 24; e++) expect(got.out[((b * T + t) * 4 + h) * 24 + e]).toBe(0);
        expect(got.lse[(b * 4 + h) * T + t]).toBe(-Infinity);
        expect(got.dq![((b * T + t) * 4 + h) * 24]).toBe(0);
      }
    expect(ref.lse[0]).toBe(-Infinity);
  });

  test('routed subset (mod mode): equals full attention with the other tokens padded out, in any order', () => {
    // A sequence of N tokens; a router keeps a subset S. Attention over just S with the
    // original positions must equal full-sequence attention where the others are padding.
    const N = 300, D = 16, Hq = 4, Hkv = 2;
    const keep: number[] = [];
    for (let t = 0; t < N; t++) if (rng.uniform() < 0.55) keep.push(t);
    const full = inputsFor({ B: 1, Tq: N, Tk: N, Hq, Hkv, D });
    const padded = new Int32Array(N).fill(-1);
    for (const t of keep) padded[t] = t;
    const fullRes = runNative({ B: 1, Tq: N, Tk: N, Hq, Hkv, D, qpos: padded, kpos: padded }, full);

    for (const order of ['sorted', 'shuffled']) {
      const idx = [...keep];
      if (order === 'shuffled')
        for (let i = idx.length - 1; i > 0; i--) {
          const j = Math.floor(rng.uniform() * (i + 1));
          [idx[i], idx[j]] = [idx[j], idx[i]];
        }
      const n = idx.length;
      const sub: Inputs = {
        q: Float32Array.from(pickRows(full.q, N, Hq, D, 0, idx)),
        k: Float32Array.from(pickRows(full.k, N, Hkv, D, 0, idx)),
        v: Float32Array.from(pickRows(full.v, N, Hkv, D, 0, idx)),
        dout: Float32Array.from(pickRows(full.dout, N, Hq, D, 0, idx)),
      };
      const pos = Int32Array.from(idx);
      const c = { B: 1, Tq: n, Tk: n, Hq, Hkv, D, qpos: pos, kpos: pos };
      const { got } = checkAgainstReference(c, `routed ${order}`, sub);
      expectClose(got.out, pickRows(fullRes.out, N, Hq, D, 0, idx), TOL.float32, `${order} out vs padded full`);
      expectClose(got.dq!, pickRows(fullRes.dq!, N, Hq, D, 0, idx), BWD, `${order} dq vs padded full`);
      expectClose(got.dk!, pickRows(fullRes.dk!, N, Hkv, D, 0, idx), BWD, `${order} dk vs padded full`);
    }
  });

  test('routed queries (keep-kv mode): a query subset over all keys equals those rows of full attention', () => {
    const N = 260, D = 20, Hq = 2, Hkv = 1;
    const full = inputsFor({ B: 1, Tq: N, Tk: N, Hq, Hkv, D });
    const fullRes = runNative({ B: 1, Tq: N, Tk: N, Hq, Hkv, D }, full);
    const idx = [0, 5, 6, 130, 129, 200, 259, 64];
    const qsub = Float32Array.from(pickRows(full.q, N, Hq, D, 0, idx));
    const c = { B: 1, Tq: idx.length, Tk: N, Hq, Hkv, D, qpos: Int32Array.from(idx) };
    const { got } = checkAgainstReference(c, 'keep-kv', { q: qsub, k: full.k, v: full.v, dout: rng.floats(qsub.length) });
    expectClose(got.out, pickRows(fullRes.out, N, Hq, D, 0, idx), TOL.float32, 'keep-kv rows vs full');
  });

  test('backward paths: dq only, dk/dv only, one thread vs the pool, deterministic', () => {
    const cases: Case[] = [
      { B: 1, Tq: 200, Tk: 200, Hq: 2, Hkv: 1, D: 32 }, // B·Hkv = 1: two-pass split on >1 thread
      { B: 2, Tq: 150, Tk: 150, Hq: 4, Hkv: 2, D: 32, window: 60 }, // fused one-pass
    ];
    for (const c of cases) {
      const x = inputsFor(c);
      const both = runNative(c, x);
      const onlyQ = runNative(c, x, { needKV: false });
      const onlyKV = runNative(c, x, { needQ: false });
      expect(onlyQ.dk).toBeUndefined();
      expect(onlyKV.dq).toBeUndefined();
      expectClose(onlyQ.dq!, both.dq!, { atol: 1e-6, rtol: 1e-5 }, 'dq only');
      expectClose(onlyKV.dk!, both.dk!, { atol: 1e-6, rtol: 1e-5 }, 'dk only');
      expectClose(onlyKV.dv!, both.dv!, { atol: 1e-6, rtol: 1e-5 }, 'dv only');
      const again = runNative(c, x);
      expect(Buffer.from(again.dq!.buffer).equals(Buffer.from(both.dq!.buffer))).toBe(true);
      expect(Buffer.from(again.dk!.buffer).equals(Buffer.from(both.dk!.buffer))).toBe(true);
      const threads = native().runtime_info().threads;
      setNumThreads(1);
      try {
        const serial = runNative(c, x);
        expectClose(serial.out, both.out, { atol: 1e-6, rtol: 1e-5 }, 'serial out');
        expectClose(serial.dq!, both.dq!, { atol: 1e-6, rtol: 1e-5 }, 'serial dq');
        expectClose(serial.dk!, both.dk!, { atol: 1e-6, rtol: 1e-5 }, 'serial dk');
      } finally {
        setNumThreads(threads);
      }
    }
  });

  test('reference backward matches finite differences (GQA, padding, window)', () => {
    const d: AttentionRefDims = {
      B: 2,
      Tq: 4,
      Tk: 6,
      Hq: 4,
      Hkv: 2,
      D: 3,
      scale: 0.8,
      window: 4,
      qpos: Int32Array.from([2, 3, 4, 5, -1, 1, 4, 5]),
      kpos: Int32Array.from([0, 1, 2, 3, 4, 5, 0, -1, 1, 2, 4, 5]),
    };
    const q = f64(rng.floats(d.B * d.Tq * d.Hq * d.D)),
      k = f64(rng.floats(d.B * d.Tk * d.Hkv * d.D)),
      v = f64(rng.floats(d.B * d.Tk * d.Hkv * d.D)),
      r = f64(rng.floats(d.B * d.Tq * d.Hq * d.D));
    const g = attentionBackwardRef(r, q, k, v, d);
    checkGradient((qq) => dot(attentionRef(qq, k, v, d).out, r), q, g.dq, { label: 'dq' });
    checkGradient((kk) => dot(attentionRef(q, kk, v, d).out, r), k, g.dk, { label: 'dk' });
    checkGradient((vv) => dot(attentionRef(q, k, vv, d).out, r), v, g.dv, { label: 'dv' });
    expect(qposOf(d, 1, 0)).toBe(-1);
    // the padded query (b=1, i=0) gets no gradient
    for (let e = 0; e < d.Hq * d.D; e++) expect(g.dq[(1 * d.Tq) * d.Hq * d.D + e]).toBe(0);
  });
});

describe('attention guards (TS and binding)', () => {
  test('TS validation names op, argument, expected and received', () => {
    const q = Tensor.zeros([1, 4, 4, 8]), k = Tensor.zeros([1, 5, 2, 8]), v = Tensor.zeros([1, 5, 2, 8]);
    const k3 = Tensor.zeros([1, 5, 3, 8]), kD = Tensor.zeros([1, 5, 2, 7]), q3 = Tensor.zeros([4, 4, 8]);
    const qi = Tensor.zeros([1, 4, 4, 8], 'int32');
    const qpos = Tensor.zeros([1, 4], 'int32'), badpos = Tensor.zeros([1, 5], 'int32'), fpos = Tensor.zeros([1, 4]);
    expect(() => ops.attention(q3, k, v)).toThrow("attention: 'q' expected rank 4, received rank 3 [4, 4, 8]");
    expect(() => ops.attention(qi, k, v)).toThrow("attention: 'q' expected dtype float32, received int32");
    expect(() => ops.attention(q, kD, v)).toThrow("attention: 'k' expected shape [B, Tk, Hkv, D] = [1, *, *, 8], received [1, 5, 2, 7]");
    expect(() => ops.attention(q, k3, k3)).toThrow("attention: 'k' expected a kv head count dividing Hq = 4, received 3");
    expect(() => ops.attention(q, k, k3)).toThrow("attention: 'v' expected shape [B, Tk, Hkv, D] = [1, 5, 2, 8], received [1, 5, 3, 8]");
    expect(() => ops.attention(q, k, v, { qpos: badpos })).toThrow("attention: 'qpos' expected shape [B, Tq] = [1, 4], received [1, 5]");
    expect(() => ops.attention(q, k, v, { kpos: qpos })).toThrow("attention: 'kpos' expected shape [B, Tk] = [1, 5], received [1, 4]");
    expect(() => ops.attention(q, k, v, { qpos: fpos })).toThrow("attention: 'qpos' expected dtype int32, received float32");
    expect(() => ops.attention(q, k, v, { window: -1 })).toThrow(
      "attention: 'window' expected an integer in [0, 9007199254740991], received -1",
    );
    expect(() => ops.attention(q, k, v, { window: 2.5 })).toThrow("attention: 'window' expected an integer");
    expect(() => ops.attention(q, k, v, { scale: Infinity })).toThrow("attention: 'scale' expected a finite number, received Infinity");
    const { out, lse } = ops.attention(q, k, v);
    const lseBad = Tensor.zeros([1, 4, 5]);
    expect(() => ops.attentionBackward(q, q, k, v, out, lseBad)).toThrow(
      "attentionBackward: 'lse' expected shape [B, Hq, Tq] = [1, 4, 4], received [1, 4, 5]",
    );
    expect(() => ops.attentionBackward(k, q, k, v, out, lse)).toThrow(
      "attentionBackward: 'dout' expected shape [B, Tq, Hq, D] = [1, 4, 4, 8], received [1, 5, 2, 8]",
    );
    expect(() => ops.attentionBackward(q, q, k, v, qi, lse)).toThrow("attentionBackward: 'out' expected dtype float32, received int32");
    dispose([q, k, v, k3, kD, q3, qi, qpos, badpos, fpos, out, lse, lseBad]);
  });

  test('binding rejects short buffers, wrong dtypes and bad sizes; kernel guards reach JS', () => {
    const n = native() as any;
    // B=1, Tq=4, Tk=5, Hq=4, Hkv=2, D=8
    const q = n.tensor_alloc(128, 0), kv = n.tensor_alloc(80, 0), small = n.tensor_alloc(10, 0);
    const lse = n.tensor_alloc(16, 0), ints = n.tensor_alloc(128, 2), pos = n.tensor_alloc(4, 2);
    const dims = (o: Partial<Record<string, number>> = {}) => {
      const d = { B: 1, Tq: 4, Tk: 5, Hq: 4, Hkv: 2, D: 8, scale: 0.5, window: 0, ...o };
      return [d.B, d.Tq, d.Tk, d.Hq, d.Hkv, d.D, d.scale, d.window];
    };
    const fwd = (args: unknown[], o?: Partial<Record<string, number>>) => () => n.attention_fwd(...args, ...dims(o));
    expect(fwd([q, lse, q, kv, kv, null, null])).not.toThrow();
    expect(fwd([q, lse, q, small, kv, null, null])).toThrow("attention_fwd: 'k' expected at least 80 elements, received 10");
    expect(fwd([q, small, q, kv, kv, null, null])).toThrow("attention_fwd: 'lse' expected at least 16 elements, received 10");
    expect(fwd([q, lse, ints, kv, kv, null, null])).toThrow("attention_fwd: 'q' expected dtype float32, received int32");
    expect(fwd([q, lse, q, kv, kv, kv, null])).toThrow("attention_fwd: 'qpos' expected dtype int32, received float32");
    expect(fwd([q, lse, q, kv, kv, null, pos])).toThrow("attention_fwd: 'kpos' expected at least 5 elements, received 4");
    expect(fwd([q, lse, q, kv, kv, null, null], { Tq: -1 })).toThrow(/attention_fwd: 'Tq' expected an integer in \[0, \d+\], received -1/);
    expect(fwd([q, lse, q, kv, kv, null, null], { Hkv: 3, Tk: 1 })).toThrow(
      'attention_fwd: expected Hq divisible by Hkv, received Hq=4, Hkv=3',
    );
    expect(fwd([q, lse, q, kv, kv, null, null], { Hkv: 0 })).toThrow('attention_fwd: expected Hkv >= 1, received 0');
    expect(fwd([q, lse, q, kv, kv, null, null], { D: 0 })).toThrow('attention_fwd: expected D >= 1, received 0');
    expect(fwd([q, lse, q, kv, kv, null, null], { window: -3 })).toThrow(
      'attention_fwd: expected window >= 0 (0 = unlimited), received -3',
    );
    expect(fwd([q, lse, q, kv, kv, null, null], { scale: Infinity })).toThrow('attention_fwd: expected a finite scale, received inf');
    expect(fwd([q, lse, q, kv, kv, null, null], { scale: NaN })).toThrow("attention_fwd: 'scale' expected a number, received NaN");
    expect(fwd([q, lse, q, kv, kv, null, null], { B: 2 ** 30, Tq: 2 ** 30 })).toThrow(/overflows 2\^53/);
    expect(() => n.attention_fwd(q, lse, q, kv, kv)).toThrow('attention_fwd: expected 15 arguments, received 5');

    const bwd = (grads: unknown[], o?: Partial<Record<string, number>>) => () =>
      n.attention_bwd(...grads, q, q, kv, kv, q, lse, null, null, ...dims(o));
    expect(bwd([q, kv, kv])).not.toThrow();
    expect(bwd([q, kv, null])).toThrow('attention_bwd: expected dk and dv both given or both NULL, received dk=buffer, dv=NULL');
    expect(bwd([small, null, null])).toThrow("attention_bwd: 'dq' expected at least 128 elements, received 10");
    expect(bwd([null, ints, kv])).toThrow("attention_bwd: 'dk' expected dtype float32, received int32");
    expect(bwd([q, kv, kv], { D: 0 })).toThrow('attention_bwd: expected D >= 1, received 0');
    expect(bwd([q, kv, kv], { Hq: 3 })).toThrow('attention_bwd: expected Hq divisible by Hkv, received Hq=3, Hkv=2');
    expect(() => n.attention_bwd(q, kv, kv, q, q, kv, kv, q, small, null, null, ...dims())).toThrow(
      "attention_bwd: 'lse' expected at least 16 elements, received 10",
    );
    for (const h of [q, kv, small, lse, ints, pos]) n.tensor_free(h);
  });
});
