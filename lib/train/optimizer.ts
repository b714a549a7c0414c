/**
 * AdamW over a list of named float32 parameters (the routers, optionally LoRA adapters),
 * and global gradient-norm clipping.
 *
 * The optimiser owns its moments m, v (zero-initialised float32, one pair per parameter,
 * on the parameter's device, kept out of every tidy scope) and applies ops.adamwStep — PyTorch torch.optim.AdamW
 * semantics: decoupled weight decay, bias correction with a 1-based step count.
 *
 * Clipping never rescales gradients in place: clipGradNorm returns the factor and the
 * caller passes it to AdamW.step as gradScale, which the fused kernel multiplies in
 * (saving one read+write pass over every gradient).
 */
import { ArgumentError, DisposedError, RouterTuningError, ShapeError } from '../errors';
import { adamwStep, fill, sumSquares } from '../ops';
import { Tensor } from '../tensor';

export interface Param {
  name: string;
  /** float32 */
  value: Tensor;
  /** float32, the shape of value */
  grad: Tensor;
}

export interface AdamWOptions {
  /** default 0.9 */
  beta1?: number;
  /** default 0.999 */
  beta2?: number;
  /** default 1e-8 */
  eps?: number;
  /** default 0.01 (torch.optim.AdamW's) */
  weightDecay?: number;
}

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
const shapeStr = (s: readonly number[]) => `[${s.join(', ')}]`;

function checkParams(op: string, params: Param[]): void {
  const names = new Set<string>();
  for (const p of params) {
    if (!p || typeof p.name !== 'string' || !p.name) throw new ArgumentError(`${op}: every parameter needs a non-empty name`);
    if (names.has(p.name)) throw new ArgumentError(`${op}: parameter '${p.name}' is listed twice`);
    names.add(p.name);
    if (p.value.dtype !== 'float32' || p.grad.dtype !== 'float32')
      throw new ArgumentError(`${op}: parameter '${p.name}' expected float32 value and grad, received ${p.value.dtype} and ${p.grad.dtype}`);
    if (p.value.device !== p.grad.device)
      throw new ArgumentError(`${op}: parameter '${p.name}' lives on ${p.value.device} but its grad on ${p.grad.device}`);
    if (!sameShape(p.value.shape, p.grad.shape))
      throw new ShapeError(`${op}: parameter '${p.name}' grad ${shapeStr(p.grad.shape)} does not match its value ${shapeStr(p.value.shape)}`);
  }
}

/** A saved optimizer state that does not fit the parameters (missing, wrong dtype or shape). */
export class OptimizerStateError extends RouterTuningError {
  constructor(message: string) {
    super('RT_ERR_FORMAT', message);
    this.name = 'OptimizerStateError';
  }
}

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private readonly params: Param[];
  private readonly moments: { m: Tensor; v: Tensor }[];
  private steps = 0;
  private disposed = false;

  constructor(params: Param[], o: AdamWOptions = {}) {
    checkParams('AdamW', params);
    this.beta1 = o.beta1 ?? 0.9;
    this.beta2 = o.beta2 ?? 0.999;
    this.eps = o.eps ?? 1e-8;
    this.weightDecay = o.weightDecay ?? 0.01;
    for (const [name, b] of [['beta1', this.beta1], ['beta2', this.beta2]] as const)
      if (!(b >= 0 && b < 1)) throw new ArgumentError(`AdamW: '${name}' expected a number in [0, 1), received ${b}`);
    if (!(this.eps >= 0 && Number.isFinite(this.eps))) throw new ArgumentError(`AdamW: 'eps' expected a finite number >= 0, received ${this.eps}`);
    if (!(this.weightDecay >= 0 && Number.isFinite(this.weightDecay)))
      throw new ArgumentError(`AdamW: 'weightDecay' expected a finite number >= 0, received ${this.weightDecay}`);
    this.params = [...params];
    this.moments = this.params.map((p) => ({ m: Tensor.zeros(p.value.shape, 'float32', p.value.device).keep(), v: Tensor.zeros(p.value.shape, 'float32', p.value.device).keep() }));
  }

  /** Steps taken (the next step is stepCount + 1: bias correction counts from 1). */
  get stepCount(): number {
    return this.steps;
  }

  /** One AdamW step on every parameter with learning rate lr; gradients are multiplied by gradScale first. */
  step(lr: number, gradScale = 1): void {
    this.live('step');
    if (typeof lr !== 'number' || !Number.isFinite(lr) || lr < 0) throw new ArgumentError(`AdamW.step: 'lr' expected a finite number >= 0, received ${lr}`);
    if (typeof gradScale !== 'number' || !Number.isFinite(gradScale))
      throw new ArgumentError(`AdamW.step: 'gradScale' expected a finite number, received ${gradScale}`);
    const step = this.steps + 1;
    const o = { lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay, step, gradScale };
    this.params.forEach((p, i) => adamwStep(p.value, p.grad, this.moments[i], o));
    this.steps = step;
  }

  /** Sets every gradient to 0 (before accumulating the next step's). */
  zeroGrad(): void {
    for (const p of this.params) fill(p.grad, 0);
  }

  /** 'opt.<name>.m' and 'opt.<name>.v' for every parameter: live references, for saving (do not dispose). */
  stateTensors(): Record<string, Tensor> {
    this.live('stateTensors');
    const out: Record<string, Tensor> = {};
    this.params.forEach((p, i) => {
      out[`opt.${p.name}.m`] = this.moments[i].m;
      out[`opt.${p.name}.v`] = this.moments[i].v;
    });
    return out;
  }

  /** Copies saved moments in (e.g. read back from a checkpoint, on the host: copied to the parameters' device) and sets the step count; the tensors stay the caller's. */
  loadState(tensors: Record<string, Tensor>, stepCount: number): void {
    this.live('loadState');
    if (!Number.isInteger(stepCount) || stepCount < 0)
      throw new ArgumentError(`AdamW.loadState: 'stepCount' expected an integer >= 0, received ${stepCount}`);
    // check everything before copying anything, so a bad checkpoint leaves the state untouched
    const sources = this.params.map((p) =>
      (['m', 'v'] as const).map((k) => {
        const key = `opt.${p.name}.${k}`;
        const t = tensors[key];
        if (!t) throw new OptimizerStateError(`AdamW.loadState: optimizer state '${key}' is missing (parameter '${p.name}')`);
        if (t.dtype !== 'float32') throw new OptimizerStateError(`AdamW.loadState: '${key}' expected float32, received ${t.dtype}`);
        if (!sameShape(t.shape, p.value.shape))
          throw new OptimizerStateError(`AdamW.loadState: '${key}' expected shape ${shapeStr(p.value.shape)}, received ${shapeStr(t.shape)}`);
        return t;
      }),
    );
    sources.forEach(([m, v], i) => {
      this.moments[i].m.copyFrom(m);
      this.moments[i].v.copyFrom(v);
    });
    this.steps = stepCount;
  }

  /** Frees the moments; the optimiser is unusable afterwards (parameters are the caller's). */
  dispose(): void {
    for (const { m, v } of this.moments) {
      m.dispose();
      v.dispose();
    }
    this.disposed = true;
  }

  private live(op: string): void {
    if (this.disposed) throw new DisposedError(`AdamW.${op}: the optimizer was disposed`);
  }
}

/**
 * Global L2 norm of all gradients, norm = sqrt(Σ_params sumSquares(grad)) (each sum is
 * accumulated in double by the kernel, the total in JS doubles), and the clipping factor
 * scale = min(1, maxNorm / (norm + 1e-6)) as in torch.nn.utils.clip_grad_norm_.
 * maxNorm ≤ 0 or Infinity means no clipping (scale 1); a non-finite norm also gives
 * scale 1 — the caller should check `norm` and skip such a step.
 * Gradients are not modified: pass `scale` to AdamW.step as gradScale.
 */
export function clipGradNorm(params: Param[], maxNorm: number): { norm: number; scale: number } {
  if (typeof maxNorm !== 'number' || Number.isNaN(maxNorm)) throw new ArgumentError(`clipGradNorm: 'maxNorm' expected a number, received ${maxNorm}`);
  let total = 0;
  for (const p of params) total += sumSquares(p.grad);
  const norm = Math.sqrt(total);
  const clip = maxNorm > 0 && Number.isFinite(maxNorm) && Number.isFinite(norm);
  return { norm, scale: clip ? Math.min(1, maxNorm / (norm + 1e-6)) : 1 };
}
