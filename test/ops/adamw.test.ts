import { Tensor, dispose, ops } from '../../lib';
import { native } from '../../lib/native';
import { expectClose, f64 } from '../helpers/compare';
import { Rng } from '../helpers/random';
import { adamwStepRef } from '../reference/adamw';

const rng = new Rng(8080);

/**
 * torch.optim.AdamW (torch 2.13.0+cpu, foreach=False) on p0[i] = (i − 3.5)/4 with
 * gradients g_s[i] = (((7i + 3s) mod 11) − 5)/8 · gradScale at steps s = 1, 2, …:
 * the float32 parameters after every step and the final moments, printed by PyTorch.
 *   default: n 8, 4 steps, lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight_decay 0.1
 *   lowbeta: n 8, 3 steps, lr 5e-2, betas (0.4, 0.9), eps 1e-3, weight_decay 0, grads × 0.5
 *            (β1 = 0.4 takes torch.lerp's weight >= 0.5 branch)
 */
const TORCH_ADAMW = {
  default: {
    params: [
      [-0.8641250133514404, -0.6343749761581421, -0.38462498784065247, -0.11487500369548798, 0.11487500369548798, 0.37462499737739563, 0.6343749761581421, 0.8641250133514404],
      [-0.860597550868988, -0.6356555819511414, -0.3930841386318207, -0.10805954784154892, 0.1152864471077919, 0.36680901050567627, 0.6420465707778931, 0.8661965131759644],
      [-0.8643103241920471, -0.6365002393722534, -0.3931471109390259, -0.1088101714849472, 0.11668463051319122, 0.3689623177051544, 0.6443900465965271, 0.8695504069328308],
      [-0.8624443411827087, -0.6396031379699707, -0.39212462306022644, -0.104723259806633, 0.11582576483488083, 0.3724323809146881, 0.6411102414131165, 0.8711615204811096],
    ],
    m: [-0.013100000098347664, 0.052687499672174454, -0.00788749661296606, -0.05608750507235527, 0.009699998423457146, -0.05087500065565109, 0.03842500224709511, -0.033287499099969864],
    v: [0.0005776564939878881, 0.0006704232073388994, 0.000530453457031399, 0.0006713129114359617, 0.0005768603878095746, 0.0005930783227086067, 0.0007179070962592959, 0.000608110218308866],
  },
  lowbeta: {
    params: [
      [-0.8253968358039856, -0.67484050989151, -0.42421260476112366, -0.07526525110006332, 0.0751992017030716, 0.375, 0.6748008131980896, 0.8252652287483215],
      [-0.8299407362937927, -0.6661035418510437, -0.4766214191913605, -0.05466820299625397, 0.09654240310192108, 0.3261305093765259, 0.7072346210479736, 0.8576564192771912],
      [-0.877629816532135, -0.662159264087677, -0.45556479692459106, -0.08739813417196274, 0.11586610972881317, 0.3608214259147644, 0.6953232288360596, 0.8894628882408142],
    ],
    m: [0.15300001204013824, -0.015000002458691597, -0.08399999886751175, 0.09450000524520874, -0.07349999994039536, -0.14249999821186066, 0.03600000590085983, -0.13199999928474426],
    v: [0.007867187261581421, 0.011074218899011612, 0.012191406451165676, 0.006363281048834324, 0.011078123934566975, 0.012929687276482582, 0.006976562086492777, 0.013199218548834324],
  },
};

const p0 = (n: number) => Float32Array.from({ length: n }, (_, i) => (i - 3.5) / 4);
const gradAt = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => (((i * 7 + s * 3) % 11) - 5) / 8);

describe('adamw vs a float64 reference of PyTorch AdamW', () => {
  test.each([
    [1, 0.01],
    [17, 0],
    [1000, 0.1],
    [20011, 0.01],
  ])('n=%i weightDecay=%f: 6 steps of p, m, v', (n, wd) => {
    const p = rng.floats(n), opts = { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-6, weightDecay: wd, gradScale: 0.5 };
    const tp = Tensor.from(p), state = { m: Tensor.zeros([n]), v: Tensor.zeros([n]) };
    const rp = f64(p), rm = new Float64Array(n), rv = new Float64Array(n);
    for (let step = 1; step <= 6; step++) {
      const g = rng.floats(n, 0.1 * step);
      const tg = Tensor.from(g);
      expect(ops.adamwStep(tp, tg, state, { ...opts, step })).toBe(tp);
      adamwStepRef(rp, rm, rv, g, { ...opts, step });
      tg.dispose();
    }
    expectClose(tp.toFloat32Array(), rp, { atol: 1e-6, rtol: 1e-5 }, 'param');
    expectClose(state.m.toFloat32Array(), rm, { atol: 1e-7, rtol: 1e-5 }, 'm');
    expectClose(state.v.toFloat32Array(), rv, { atol: 1e-9, rtol: 1e-5 }, 'v');
    dispose([tp, state]);
  });

  test.each(['default', 'lowbeta'] as const)('matches numbers printed by torch.optim.AdamW (%s)', (name) => {
    const fx = TORCH_ADAMW[name];
    const o = name === 'default'
      ? { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, gradScale: 1 }
      : { lr: 5e-2, beta1: 0.4, beta2: 0.9, eps: 1e-3, weightDecay: 0, gradScale: 0.5 };
    const n = 8;
    const tp = Tensor.from(p0(n)), state = { m: Tensor.zeros([n]), v: Tensor.zeros([n]) };
    const rp = f64(p0(n)), rm = new Float64Array(n), rv = new Float64Array(n);
    fx.params.forEach((expected, i) => {
      const g = gradAt(n, i + 1), tg = Tensor.from(g);
      ops.adamwStep(tp, tg, state, { ...o, step: i + 1 });
      adamwStepRef(rp, rm, rv, g, { ...o, step: i + 1 });
      // native float32 is within ~2 float ulp of PyTorch's float32; the float64 reference within its rounding
      expectClose(tp.toFloat32Array(), expected, { atol: 1e-9, rtol: 5e-7 }, `native param after step ${i + 1}`);
      expectClose(rp, expected, { atol: 1e-7, rtol: 1e-6 }, `reference param after step ${i + 1}`);
      tg.dispose();
    });
    expectClose(state.m.toFloat32Array(), fx.m, { atol: 1e-12, rtol: 5e-7 }, 'm');
    expectClose(state.v.toFloat32Array(), fx.v, { atol: 1e-12, rtol: 5e-7 }, 'v');
    dispose([tp, state]);
  });

  test('defaults are PyTorch AdamW defaults (beta1 0.9, beta2 0.999, eps 1e-8, weightDecay 0.01)', () => {
    const n = 5, p = rng.floats(n), g = rng.floats(n);
    const tp = Tensor.from(p), tg = Tensor.from(g), state = { m: Tensor.zeros([n]), v: Tensor.zeros([n]) };
    ops.adamwStep(tp, tg, state, { lr: 0.1, step: 1 });
    const rp = f64(p);
    adamwStepRef(rp, new Float64Array(n), new Float64Array(n), g, { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1 });
    expectClose(tp.toFloat32Array(), rp, { atol: 1e-6, rtol: 1e-5 }, 'param');
    dispose([tp, tg, state]);
  });
});

describe('adamw guards (TS and binding)', () => {
  test('TS validation names op, argument, expected and received', () => {
    const p = Tensor.zeros([2, 3]), g = Tensor.zeros([2, 3]), bad = Tensor.zeros([3, 2]);
    const st = { m: Tensor.zeros([2, 3]), v: Tensor.zeros([2, 3]) };
    expect(() => ops.adamwStep(p, bad, st, { lr: 1, step: 1 })).toThrow("adamwStep: 'grad' expected shape [2, 3], received [3, 2]");
    expect(() => ops.adamwStep(p, g, { m: st.m, v: bad }, { lr: 1, step: 1 })).toThrow("adamwStep: 'v' expected shape [2, 3], received [3, 2]");
    expect(() => ops.adamwStep(p, Tensor.zeros([2, 3], 'int32'), st, { lr: 1, step: 1 })).toThrow("adamwStep: 'grad' expected dtype float32, received int32");
    expect(() => ops.adamwStep(p, g, st, { lr: 1, step: 0 })).toThrow("adamwStep: 'step' expected an integer in [1, 9007199254740991], received 0");
    expect(() => ops.adamwStep(p, g, st, { lr: 1, step: 1.5 })).toThrow("adamwStep: 'step' expected an integer in [1, 9007199254740991], received 1.5");
    expect(() => ops.adamwStep(p, g, st, { lr: -1, step: 1 })).toThrow("adamwStep: 'lr' expected a number >= 0, received -1");
    expect(() => ops.adamwStep(p, g, st, { lr: NaN, step: 1 })).toThrow("adamwStep: 'lr' expected a finite number, received NaN");
    expect(() => ops.adamwStep(p, g, st, { lr: 1, step: 1, beta1: 1 })).toThrow("adamwStep: 'beta1' expected a number in [0, 1), received 1");
    expect(() => ops.adamwStep(p, g, st, { lr: 1, step: 1, beta2: -0.1 })).toThrow("adamwStep: 'beta2' expected a number in [0, 1), received -0.1");
    expect(() => ops.adamwStep(p, g, st, { lr: 1, step: 1, eps: -1 })).toThrow("adamwStep: 'eps' expected a number >= 0, received -1");
    expect(() => ops.adamwStep(p, g, st, { lr: 1, step: 1, weightDecay: -1 })).toThrow("adamwStep: 'weightDecay' expected a number >= 0, received -1");
    expect(() => ops.adamwStep(p, g, st, { lr: 1, step: 1, gradScale: Infinity })).toThrow("adamwStep: 'gradScale' expected a finite number, received Infinity");
    dispose([p, g, bad, st]);
  });

  test('binding rejects short buffers, wrong dtypes, bad sizes and bad hyper-parameters', () => {
    const n = native() as any;
    const big = n.tensor_alloc(8, 0), small = n.tensor_alloc(3, 0), ints = n.tensor_alloc(8, 2);
    const ok = (over: Record<number, unknown>) => {
      const a: unknown[] = [big, big, big, big, 8, 0.1, 0.9, 0.999, 1e-8, 0.01, 1, 1];
      for (const [i, v] of Object.entries(over)) a[Number(i)] = v;
      return () => n.adamw_step(...a);
    };
    expect(ok({ 3: small })).toThrow("adamw_step: 'g' expected at least 8 elements, received 3");
    expect(ok({ 2: small })).toThrow("adamw_step: 'v' expected at least 8 elements, received 3");
    expect(ok({ 0: ints })).toThrow("adamw_step: 'p' expected dtype float32, received int32");
    expect(ok({ 4: -1 })).toThrow(/adamw_step: 'n' expected an integer in \[0, \d+\], received -1/);
    expect(ok({ 10: 0 })).toThrow(/adamw_step: 'step' expected an integer in \[1, \d+\], received 0/);
    expect(ok({ 5: -0.5 })).toThrow('adamw_step: expected lr >= 0 and finite, received -0.5');
    expect(ok({ 6: 1 })).toThrow('adamw_step: expected beta1 in [0, 1), received 1');
    expect(ok({ 7: 1.5 })).toThrow('adamw_step: expected beta2 in [0, 1), received 1.5');
    expect(ok({ 8: -1 })).toThrow('adamw_step: expected eps >= 0 and finite, received -1');
    expect(ok({ 9: Infinity })).toThrow('adamw_step: expected weight_decay >= 0 and finite, received inf');
    expect(ok({ 11: -Infinity })).toThrow('adamw_step: expected a finite grad_scale, received -inf');
    expect(ok({ 6: NaN })).toThrow("adamw_step: 'beta1' expected a number, received NaN");
    for (const h of [big, small, ints]) n.tensor_free(h);
  });
});
