import { Tensor, dispose, ops } from '../../lib';
import { native } from '../../lib/native';
import { expectClose, f64, TOL } from '../helpers/compare';
import { checkGradient, dot } from '../helpers/gradcheck';
import { Rng } from '../helpers/random';
import { llama3InvFreqRef, ropeBackwardRef, ropeRef } from '../reference/rope';

const rng = new Rng(777);

/** invFreq as float32 (the kernel's input) and the same values widened for the reference. */
function invFreqOf(D: number, theta: number) {
  const f = ops.ropeInvFreq(D, theta);
  return { t: Tensor.from(f), ref: f64(f) };
}

describe('rope vs float64 reference', () => {
  test.each([
    [1, 1, 2, 10000, 1],
    [7, 3, 10, 10000, 1],
    [33, 5, 64, 500000, 1],
    [129, 2, 128, 1e6, 0.75], // attention scaling applied to cos and sin
    [5, 4, 34, 10000, 1], // D/2 = 17: not a multiple of the 8-lane trig
  ])('T=%i H=%i D=%i theta=%f attnScale=%f: forward and backward', (T, H, D, theta, scale) => {
    const x = rng.floats(T * H * D), dout = rng.floats(T * H * D);
    const pos = Int32Array.from({ length: T }, () => Math.floor(rng.uniform() * 4096));
    const { t: tf, ref: fref } = invFreqOf(D, theta);
    const tx = Tensor.from(x, [T, H, D]), tp = Tensor.from(pos), td = Tensor.from(dout, [T, H, D]);
    const out = ops.rope(tx, tp, tf, { attnScale: scale });
    expectClose(out.toFloat32Array(), ropeRef(f64(x), pos, fref, T, H, D, scale), TOL.float32, 'rope');
    const dx = ops.ropeBackward(td, tp, tf, { attnScale: scale });
    expectClose(dx.toFloat32Array(), ropeBackwardRef(f64(dout), pos, fref, T, H, D, scale), TOL.float32, 'ropeBackward');
    dispose([tf, tx, tp, td, out, dx]);
  });

  test('batched [B, T, H, D] with pos [B, T], gaps and repeated positions', () => {
    const B = 2, T = 6, H = 3, D = 8;
    const x = rng.floats(B * T * H * D);
    const pos = Int32Array.from([0, 1, 2, 2, 7, 1000, 5, 4, 3, 2, 1, 0]);
    const { t: tf, ref: fref } = invFreqOf(D, 10000);
    const tx = Tensor.from(x, [B, T, H, D]), tp = Tensor.from(pos, [B, T]);
    const out = ops.rope(tx, tp, tf);
    expect(out.shape).toEqual([B, T, H, D]);
    expectClose(out.toFloat32Array(), ropeRef(f64(x), pos, fref, B * T, H, D), TOL.float32, 'batched');
    dispose([tf, tx, tp, out]);
  });

  test('in place (forward and backward) gives the same values as out of place', () => {
    const T = 11, H = 4, D = 32;
    const x = rng.floats(T * H * D);
    const pos = Int32Array.from({ length: T }, (_, i) => 3 * i + 1);
    const { t: tf } = invFreqOf(D, 10000);
    const tx = Tensor.from(x, [T, H, D]), tp = Tensor.from(pos);
    const ref = ops.rope(tx, tp, tf).toFloat32Array();
    const same = ops.rope(tx, tp, tf, { inPlace: true });
    expect(same).toBe(tx);
    expect(Array.from(tx.toFloat32Array())).toEqual(Array.from(ref));
    ops.ropeBackward(tx, tp, tf, { inPlace: true }); // the inverse rotation undoes it
    expectClose(tx.toFloat32Array(), x, { atol: 1e-6, rtol: 1e-6 }, 'round trip');
    dispose([tf, tx, tp]);
  });

  test('large positions: within 1e-5·|x| of float64 up to 32k and beyond (exact angles)', () => {
    const T = 9, H = 2, D = 128;
    const pos = Int32Array.from([0, 4095, 8191, 16383, 32767, 32768, 131071, 1000003, 2 ** 31 - 1]);
    const x = rng.floats(T * H * D);
    const { t: tf, ref: fref } = invFreqOf(D, 500000);
    const tx = Tensor.from(x, [T, H, D]), tp = Tensor.from(pos);
    const got = ops.rope(tx, tp, tf).toFloat32Array();
    const ref = ropeRef(f64(x), pos, fref, T, H, D);
    let worst = 0;
    for (let t = 0; t < T; t++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < D / 2; i++) {
          const o = (t * H + h) * D;
          const mag = Math.hypot(x[o + i], x[o + i + D / 2]);
          for (const j of [o + i, o + i + D / 2]) worst = Math.max(worst, Math.abs(got[j] - ref[j]) / mag);
        }
    expect(worst).toBeLessThan(1e-5);
    dispose([tf, tx, tp]);
  });

  test('reference backward matches finite differences', () => {
    const T = 3, H = 2, D = 6, pos = [0, 5, 17], invFreq = [1, 0.1, 0.01];
    const x = f64(rng.floats(T * H * D)), r = f64(rng.floats(T * H * D));
    checkGradient((xx) => dot(ropeRef(xx, pos, invFreq, T, H, D, 0.9), r), x, ropeBackwardRef(r, pos, invFreq, T, H, D, 0.9), { label: 'dx' });
  });
});

describe('rope inverse frequencies (HF default, linear, llama3)', () => {
  test('default: theta^(-2i/D) in float32', () => {
    const f = ops.ropeInvFreq(128, 500000);
    expect(f.length).toBe(64);
    expect(f[0]).toBe(1);
    for (let i = 0; i < 64; i++) expect(Math.abs(f[i] - 500000 ** (-(2 * i) / 128))).toBeLessThanOrEqual(2e-7 * f[i]);
    expect(ops.ropeParameters(64, 10000).attentionScaling).toBe(1);
  });

  test('linear divides by factor', () => {
    const base = ops.ropeInvFreq(16, 10000), lin = ops.ropeInvFreq(16, 10000, { rope_type: 'linear', factor: 4 });
    for (let i = 0; i < 8; i++) expect(lin[i]).toBe(Math.fround(base[i] / 4));
  });

  // Llama 3.1 / 3.2 configs; the reference is the float64 formula (test/reference/rope.ts).
  test.each([
    [128, 500000, 8, 1, 4, 8192], // Llama-3.1-8B
    [64, 500000, 32, 1, 4, 8192], // Llama-3.2-1B
    [96, 10000, 4, 2, 8, 2048], // odd settings: more medium-band frequencies
  ])('llama3 D=%i theta=%f factor=%f low=%f high=%f old=%i', (D, theta, factor, low, high, old) => {
    const p = ops.ropeParameters(D, theta, { rope_type: 'llama3', factor, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: old });
    expect(p.attentionScaling).toBe(1);
    const ref = llama3InvFreqRef(D, theta, factor, low, high, old);
    expectClose(p.invFreq, ref, { atol: 0, rtol: 2e-6 }, 'llama3 invFreq');
    // all three bands are exercised: unchanged, divided by factor, and smoothed
    const plain = ops.ropeInvFreq(D, theta);
    const kinds = new Set(Array.from(p.invFreq, (v, i) => (v === plain[i] ? 'same' : Math.abs(v - plain[i] / factor) <= 1e-7 * v ? 'scaled' : 'smoothed')));
    expect(kinds).toEqual(new Set(['same', 'scaled', 'smoothed']));
  });

  test('llama3 spot values computed by hand from the formula (D=128, theta=500000, Llama-3.1)', () => {
    const f = ops.ropeInvFreq(128, 500000, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    // i = 0: wavelen 2π < 2048, unchanged
    expect(f[0]).toBe(1);
    // i = 63: f = 500000^(-126/128) = 2.4551e-6, wavelen 2.56e6 > 8192 → f/8
    expect(Math.abs(f[63] - 500000 ** (-126 / 128) / 8)).toBeLessThan(1e-7 * f[63]);
    // i = 40: f = 500000^(-80/128) = 2.7425e-4, wavelen 22910.6 > 8192 → f/8
    expect(Math.abs(f[40] - 500000 ** (-80 / 128) / 8)).toBeLessThan(1e-7 * f[40]);
    // i = 30: f = 500000^(-60/128) = 2.13112e-3, wavelen 2948.30 in (2048, 8192): smoothed,
    //   s = (8192/2948.30 − 1)/3 = 0.592849, f·((1 − s)/8 + s) = 1.371894e-3
    expect(Math.abs(f[30] - 1.3718935677611381e-3)).toBeLessThan(1e-6 * f[30]);
  });

  test('bad scaling arguments are rejected with the op name', () => {
    expect(() => ops.ropeInvFreq(7, 10000)).toThrow("ropeInvFreq: 'headDim' expected an even integer, received 7");
    expect(() => ops.ropeInvFreq(8, 0)).toThrow("ropeInvFreq: 'theta' expected a number > 0, received 0");
    expect(() => ops.ropeInvFreq(8, 10000, { rope_type: 'yarn', factor: 2 })).toThrow(
      "ropeInvFreq: rope scaling type expected 'default', 'linear' or 'llama3', received 'yarn'",
    );
    expect(() => ops.ropeInvFreq(8, 10000, { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4 })).toThrow(
      "ropeInvFreq: rope scaling 'llama3' expected a finite number for 'original_max_position_embeddings', received undefined",
    );
    expect(() => ops.ropeInvFreq(8, 10000, { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 8192 })).toThrow(
      "ropeInvFreq: rope scaling 'llama3' expected high_freq_factor > low_freq_factor, received 1 and 4",
    );
  });
});

describe('rope guards (TS and binding)', () => {
  test('TS validation names op, argument, expected and received', () => {
    const x = Tensor.zeros([3, 2, 8]), pos = Tensor.zeros([3], 'int32'), f = Tensor.zeros([4]);
    expect(() => ops.rope(x, Tensor.zeros([4], 'int32'), f)).toThrow("rope: 'pos' expected shape [T] = [3], received [4]");
    expect(() => ops.rope(x, Tensor.zeros([3]), f)).toThrow("rope: 'pos' expected dtype int32, received float32");
    expect(() => ops.rope(x, pos, Tensor.zeros([8]))).toThrow("rope: 'invFreq' expected shape [D/2] = [4], received [8]");
    expect(() => ops.rope(Tensor.zeros([3, 8]), pos, f)).toThrow("rope: 'x' expected shape [T, H, D] or [B, T, H, D], received [3, 8]");
    expect(() => ops.rope(Tensor.zeros([3, 2, 7]), pos, f)).toThrow("rope: 'x' expected an even head dim D, received [3, 2, 7]");
    expect(() => ops.rope(Tensor.zeros([2, 3, 2, 8]), pos, f)).toThrow("rope: 'pos' expected shape [B, T] = [2, 3], received [3]");
    expect(() => ops.rope(x, pos, f, { attnScale: Infinity })).toThrow("rope: 'attnScale' expected a finite number, received Infinity");
    expect(() => ops.ropeBackward(x, pos, Tensor.zeros([4], 'int32'))).toThrow("ropeBackward: 'invFreq' expected dtype float32, received int32");
    dispose([x, pos, f]);
  });

  test('a negative position is RT_ERR_INDEX naming the position (TS and binding)', () => {
    const x = Tensor.zeros([3, 1, 4]), pos = Tensor.from(new Int32Array([0, 5, -2])), f = Tensor.from([1, 0.5]);
    expect(() => ops.rope(x, pos, f)).toThrow('rope_fwd: expected positions >= 0, received pos[2] = -2');
    let code = '';
    try {
      ops.ropeBackward(x, pos, f);
    } catch (e) {
      code = (e as { code: string }).code;
    }
    expect(code).toBe('RT_ERR_INDEX');
    const n = native() as any;
    expect(() => n.rope_fwd(x.handle, x.handle, pos.handle, f.handle, 1, 3, 1, 4)).toThrow('rope_fwd: expected positions >= 0, received pos[2] = -2');
    dispose([x, pos, f]);
  });

  test('binding rejects short buffers, wrong dtypes, bad sizes and a bad scale', () => {
    const n = native() as any;
    const big = n.tensor_alloc(48, 0), small = n.tensor_alloc(3, 0), pos = n.tensor_alloc(3, 2), fpos = n.tensor_alloc(3, 0);
    const freq = n.tensor_alloc(4, 0);
    n.tensor_write(pos, new Int32Array([0, 1, 2]), 0);
    expect(() => n.rope_fwd(big, small, pos, freq, 1, 3, 2, 8)).toThrow("rope_fwd: 'x' expected at least 48 elements, received 3");
    expect(() => n.rope_fwd(big, big, pos, small, 1, 3, 2, 8)).toThrow("rope_fwd: 'inv_freq' expected at least 4 elements, received 3");
    expect(() => n.rope_fwd(big, big, fpos, freq, 1, 3, 2, 8)).toThrow("rope_fwd: 'pos' expected dtype int32, received float32");
    expect(() => n.rope_fwd(big, big, pos, freq, 1, 4, 2, 6)).toThrow("rope_fwd: 'pos' expected at least 4 elements, received 3");
    expect(() => n.rope_fwd(big, big, pos, freq, 1, 3, 2, 7)).toThrow('rope_fwd: expected an even head dim D, received D=7');
    expect(() => n.rope_fwd(big, big, pos, freq, NaN, 3, 2, 8)).toThrow("rope_fwd: 'attn_scale' expected a number, received NaN");
    expect(() => n.rope_fwd(big, big, pos, freq, Infinity, 3, 2, 8)).toThrow('rope_fwd: expected a finite attn_scale, received inf');
    expect(() => n.rope_bwd(small, big, pos, freq, 1, 3, 2, 8)).toThrow("rope_bwd: 'dx' expected at least 48 elements, received 3");
    expect(() => n.rope_bwd(big, big, pos, freq, 1, -3, 2, 8)).toThrow(/rope_bwd: 'T' expected an integer in \[0, \d+\], received -3/);
    expect(() => n.rope_bwd(big, big, pos, freq, 1, 3, 2)).toThrow('rope_bwd: expected 8 arguments, received 7');
    for (const h of [big, small, pos, fpos, freq]) n.tensor_free(h);
  });
});
