import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tensor, dispose, tidy } from '../../lib';
import { SafetensorsFile, readEntry, writeSafetensors } from '../../lib/io/safetensors';
import { AdamW, OptimizerStateError, Param, clipGradNorm } from '../../lib/train/optimizer';
import { learningRate } from '../../lib/train/schedule';
import { expectClose, f64 } from '../helpers/compare';
import { Rng } from '../helpers/random';
import { adamwStepRef } from '../reference/adamw';

const SHAPES = [[3, 5], [7], [2, 3, 4]];

function makeParams(rng: Rng): Param[] {
  return SHAPES.map((shape, i) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return { name: `layers.${i}.router.weight`, value: Tensor.from(rng.floats(n), shape), grad: Tensor.zeros(shape) };
  });
}
/** Gradients of step s for parameter i: fresh, deterministic. */
const gradFor = (i: number, s: number, n: number) => new Rng(1000 * i + s).floats(n, 0.3);

describe('AdamW', () => {
  test('matches a float64 reference of torch AdamW over 6 steps with weight decay, gradScale and a schedule', () => {
    const rng = new Rng(42);
    const params = makeParams(rng);
    const o = { beta1: 0.9, beta2: 0.95, eps: 1e-6, weightDecay: 0.1 };
    const opt = new AdamW(params, o);
    const ref = params.map((p) => ({ p: f64(p.value.toFloat32Array()), m: new Float64Array(p.value.numel), v: new Float64Array(p.value.numel) }));
    for (let s = 1; s <= 6; s++) {
      const lr = learningRate(s - 1, { lr: 1e-2, warmupSteps: 2, totalSteps: 6 });
      const gradScale = s % 2 ? 0.5 : 1;
      params.forEach((p, i) => p.grad.write(gradFor(i, s, p.grad.numel)));
      opt.step(lr, gradScale);
      params.forEach((p, i) => adamwStepRef(ref[i].p, ref[i].m, ref[i].v, gradFor(i, s, p.grad.numel), { ...o, lr, step: s, gradScale }));
      expect(opt.stepCount).toBe(s);
    }
    params.forEach((p, i) => expectClose(p.value.toFloat32Array(), ref[i].p, { atol: 1e-6, rtol: 1e-5 }, p.name));
    const st = opt.stateTensors();
    expect(Object.keys(st).sort()).toEqual(params.flatMap((p) => [`opt.${p.name}.m`, `opt.${p.name}.v`]).sort());
    params.forEach((p, i) => {
      expectClose(st[`opt.${p.name}.m`].toFloat32Array(), ref[i].m, { atol: 1e-7, rtol: 1e-5 }, `${p.name} m`);
      expectClose(st[`opt.${p.name}.v`].toFloat32Array(), ref[i].v, { atol: 1e-9, rtol: 1e-5 }, `${p.name} v`);
    });
    opt.zeroGrad();
    for (const p of params) expect(p.grad.toFloat32Array().every((x) => x === 0)).toBe(true);
    opt.dispose();
    expect(() => opt.step(1e-3)).toThrow(/disposed/);
    dispose(params);
  });

  test('moments survive tidy scopes', () => {
    const params = makeParams(new Rng(1));
    const opt = tidy(() => new AdamW(params));
    params.forEach((p, i) => p.grad.write(gradFor(i, 1, p.grad.numel)));
    tidy(() => opt.step(1e-3));
    for (const t of Object.values(opt.stateTensors())) expect(t.disposed).toBe(false);
    opt.dispose();
    dispose(params);
  });

  test('state saved with writeSafetensors and loaded back continues bit-identically', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-opt-'));
    const run = (params: Param[], opt: AdamW, from: number, to: number) => {
      for (let s = from; s <= to; s++) {
        params.forEach((p, i) => p.grad.write(gradFor(i, s, p.grad.numel)));
        opt.step(learningRate(s - 1, { lr: 3e-3, warmupSteps: 2, totalSteps: 8, minLrRatio: 0.1 }), 0.7);
      }
    };
    // uninterrupted: 6 steps
    const a = makeParams(new Rng(5));
    const optA = new AdamW(a, { weightDecay: 0.05 });
    run(a, optA, 1, 6);
    // interrupted after 3 steps, saved, reloaded into fresh objects, 3 more steps
    const b = makeParams(new Rng(5));
    const optB = new AdamW(b, { weightDecay: 0.05 });
    run(b, optB, 1, 3);
    const file = path.join(dir, 'state.safetensors');
    const values = Object.fromEntries(b.map((p) => [p.name, p.value]));
    writeSafetensors(file, { ...values, ...optB.stateTensors() }, { step: String(optB.stepCount) });
    optB.dispose();
    dispose(b);

    const st = SafetensorsFile.open(file);
    const loaded = Object.fromEntries([...st.entries.values()].map((e) => [e.name, readEntry(e)]));
    const c: Param[] = SHAPES.map((shape, i) => ({ name: `layers.${i}.router.weight`, value: loaded[`layers.${i}.router.weight`], grad: Tensor.zeros(shape) }));
    const optC = new AdamW(c, { weightDecay: 0.05 });
    optC.loadState(loaded, Number(st.metadata.step));
    expect(optC.stepCount).toBe(3);
    run(c, optC, 4, 6);
    a.forEach((p, i) => {
      expect(c[i].value.toFloat32Array()).toEqual(p.value.toFloat32Array());
      const sa = optA.stateTensors(), sc = optC.stateTensors();
      expect(sc[`opt.${p.name}.m`].toFloat32Array()).toEqual(sa[`opt.${p.name}.m`].toFloat32Array());
      expect(sc[`opt.${p.name}.v`].toFloat32Array()).toEqual(sa[`opt.${p.name}.v`].toFloat32Array());
    });

    // missing and mis-shaped entries are clear errors that leave the state untouched
    const before = optC.stateTensors()[`opt.${c[0].name}.m`].toFloat32Array();
    const partial = { ...loaded };
    delete partial[`opt.${c[2].name}.v`];
    expect(() => optC.loadState(partial, 3)).toThrow(new OptimizerStateError(`AdamW.loadState: optimizer state 'opt.${c[2].name}.v' is missing (parameter '${c[2].name}')`));
    const wrong = Tensor.zeros([5, 3]);
    expect(() => optC.loadState({ ...loaded, [`opt.${c[0].name}.m`]: wrong }, 3)).toThrow(`'opt.${c[0].name}.m' expected shape [3, 5], received [5, 3]`);
    expect(() => optC.loadState(loaded, -1)).toThrow(/'stepCount' expected an integer >= 0/);
    expect(optC.stateTensors()[`opt.${c[0].name}.m`].toFloat32Array()).toEqual(before);
    expect(optC.stepCount).toBe(6);

    optA.dispose();
    optC.dispose();
    dispose([a, c, loaded, wrong]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('bad parameters and arguments', () => {
    const v = Tensor.zeros([2, 2]), g = Tensor.zeros([4]);
    expect(() => new AdamW([{ name: 'w', value: v, grad: g }])).toThrow("AdamW: parameter 'w' grad [4] does not match its value [2, 2]");
    const g2 = Tensor.zeros([2, 2]);
    expect(() => new AdamW([{ name: 'w', value: v, grad: g2 }, { name: 'w', value: v, grad: g2 }])).toThrow(/listed twice/);
    expect(() => new AdamW([{ name: 'w', value: v, grad: g2 }], { beta1: 1 })).toThrow(/'beta1' expected a number in \[0, 1\)/);
    const opt = new AdamW([{ name: 'w', value: v, grad: g2 }]);
    expect(() => opt.step(NaN)).toThrow(/'lr' expected a finite number >= 0/);
    expect(opt.stepCount).toBe(0);
    opt.dispose();
    dispose([v, g, g2]);
  });
});

describe('clipGradNorm', () => {
  test('global L2 norm over all gradients; the scale is returned, gradients untouched', () => {
    const rng = new Rng(9);
    const params = makeParams(rng);
    let ss = 0;
    params.forEach((p, i) => {
      const g = gradFor(i, 1, p.grad.numel);
      p.grad.write(g);
      for (const x of g) ss += x * x;
    });
    const norm = Math.sqrt(ss);
    const before = params.map((p) => p.grad.toFloat32Array());
    const r = clipGradNorm(params, norm / 4);
    expect(r.norm).toBeCloseTo(norm, 5);
    expect(r.scale).toBeCloseTo(norm / 4 / (norm + 1e-6), 7);
    params.forEach((p, i) => expect(p.grad.toFloat32Array()).toEqual(before[i]));
    expect(clipGradNorm(params, norm * 2).scale).toBe(1);
    expect(clipGradNorm(params, 0)).toEqual({ norm: r.norm, scale: 1 });
    expect(clipGradNorm(params, Infinity).scale).toBe(1);
    expect(clipGradNorm([], 1)).toEqual({ norm: 0, scale: 1 });
    // a gradient of known norm: 3-4-5
    const p: Param = { name: 'x', value: Tensor.zeros([2]), grad: Tensor.from([3, 4]) };
    expect(clipGradNorm([p], 1)).toEqual({ norm: 5, scale: 1 / (5 + 1e-6) });
    dispose([params, p]);
  });
});

describe('learningRate', () => {
  const o = { lr: 1e-3, warmupSteps: 4, totalSteps: 14 };
  test('linear warmup from lr/W, cosine to minLr at totalSteps, clamped beyond', () => {
    expect(learningRate(0, o)).toBeCloseTo(0.25e-3, 15);
    expect(learningRate(1, o)).toBeCloseTo(0.5e-3, 15);
    expect(learningRate(3, o)).toBeCloseTo(1e-3, 15);
    expect(learningRate(4, o)).toBeCloseTo(1e-3, 15);
    expect(learningRate(9, o)).toBeCloseTo(0.5e-3, 15); // halfway through the decay
    expect(learningRate(13, o)).toBeCloseTo(1e-3 * 0.5 * (1 + Math.cos(Math.PI * 0.9)), 15);
    expect(learningRate(14, o)).toBe(0);
    expect(learningRate(100, o)).toBe(0);
    const m = { ...o, minLrRatio: 0.1 };
    expect(learningRate(9, m)).toBeCloseTo(1e-4 + 0.9e-3 * 0.5, 15);
    expect(learningRate(14, m)).toBeCloseTo(1e-4, 15);
    expect(learningRate(50, m)).toBeCloseTo(1e-4, 15);
    // monotone: up during warmup, down after
    for (let s = 1; s < 20; s++) {
      const d = learningRate(s, m) - learningRate(s - 1, m);
      if (s < 4) expect(d).toBeGreaterThan(0);
      else expect(d).toBeLessThanOrEqual(1e-18);
    }
  });

  test('no warmup, and warmup as long as the run', () => {
    expect(learningRate(0, { lr: 2, warmupSteps: 0, totalSteps: 4 })).toBe(2);
    expect(learningRate(2, { lr: 2, warmupSteps: 0, totalSteps: 4 })).toBeCloseTo(1, 12);
    expect(learningRate(2, { lr: 2, warmupSteps: 4, totalSteps: 4 })).toBe(1.5);
    expect(learningRate(4, { lr: 2, warmupSteps: 4, totalSteps: 4, minLrRatio: 0.5 })).toBe(1);
    expect(learningRate(0, { lr: 2, warmupSteps: 0, totalSteps: 0 })).toBe(0);
  });

  test('bad arguments', () => {
    expect(() => learningRate(-1, o)).toThrow(/'step' expected an integer >= 0/);
    expect(() => learningRate(0.5, o)).toThrow(/'step'/);
    expect(() => learningRate(0, { ...o, lr: NaN })).toThrow(/'lr'/);
    expect(() => learningRate(0, { ...o, minLrRatio: 2 })).toThrow(/'minLrRatio' expected a number in \[0, 1\]/);
  });
});
