/**
 * Training forward and backward through a CausalLM with routers attached.
 *
 * Forward (training semantics, DESIGN.md §1): every routed layer computes F(x) for all
 * sequences/tokens and its output is x + g·F(x) with the hard gate g ∈ {0, 1}; in `mod`
 * mode a token-skipped attention layer also hides that token's key/value from the others.
 * Backward: the straight-through estimator (∂g/∂s = 1). Activation gradients are computed
 * only down to the earliest layer holding a trainable parameter, and parameter gradients
 * only for trainable parameters (router weights; with `fullParams`, every base weight for
 * the full-parameter comparison). A frozen weight never gets a weight-gradient GEMM: every
 * weight gradient goes through ops.linearBackward's counted 'weight-grad' path.
 */
import { ArgumentError } from '../errors';
import * as ops from '../ops';
import { Device, Tensor, dispose, tidy } from '../tensor';
import { CausalLM } from '../model/causal_lm';
import { LayerWeights, LinearWeights, MlpWeights, MoeWeights } from '../model/weights';
import { Routers } from '../routing/routers';
import type { LoraSet } from './lora';

import type { Batch } from './data';
export type { Batch } from './data';

export type RegularizerKind = 'global' | 'per-layer' | 'l1';

export interface RegularizerOptions {
  /** λ (0 disables the capacity term). */
  lambda: number;
  /** Requested skip ratio; the capacity is c = 1 − targetSkip. */
  targetSkip: number;
  kind: RegularizerKind;
}

export interface LayerStats {
  layer: number;
  executed: number;
  total: number;
}

export interface StepResult {
  loss: number;
  ce: number;
  reg: number;
  counted: number;
  layers: LayerStats[];
  gateGrads?: Map<number, Float32Array>;
  scores?: Map<number, Float32Array>;
}

/** Gradient store for the full-parameter comparison: name → float32 grad (created on demand, on `device`: the model's). */
export class FullGrads {
  readonly grads = new Map<string, Tensor>();
  get(name: string, shape: readonly number[], device: Device = 'cpu'): Tensor {
    let g = this.grads.get(name);
    if (!g) {
      g = Tensor.zeros(shape, 'float32', device).keep();
      this.grads.set(name, g);
    }
    return g;
  }
  dispose(): void {
    dispose([...this.grads.values()]);
    this.grads.clear();
  }
}

interface RouteSave {
  /** Per-token gate [N] used in the residual (seq gates expanded). */
  gTok: Tensor;
  gateJs: Float32Array;
  score: Tensor;
  h: Tensor;
  pooled?: Tensor;
  /** expert routers: sigmoid scores [N, E] and gates per assignment [N, K] (JS) */
  expert?: { s: Float32Array; g: Float32Array; topkW: Float32Array; topkIdx: Int32Array; E: number; K: number };
}

interface AttnSave {
  h: Tensor;
  rstd1: Tensor;
  q0?: Tensor;
  k0?: Tensor;
  rstdQ?: Tensor;
  rstdK?: Tensor;
  qPre?: Tensor;
  kPre?: Tensor;
  vPre?: Tensor;
  qr: Tensor;
  kr: Tensor;
  v: Tensor;
  att: Tensor;
  lse: Tensor;
  kpos: Tensor;
  fa: Tensor;
  /**
   * mod-mode token routing: attention with every key visible (keep-kv semantics), used for
   * the skipped tokens' rows so their straight-through signal is defined (a skipped token
   * sees itself); executed rows come from the masked (mod) attention. gRows [N] selects.
   */
  keep?: { att: Tensor; lse: Tensor; kpos: Tensor; attMod: Tensor; gRows: Tensor };
}

interface MlpSave {
  g: Tensor;
  u: Tensor;
  a: Tensor;
}

interface MoeSave {
  logits: Tensor;
  routing: ops.MoeRouting;
  sorted: ops.MoeSorted;
  y: Tensor;
  actGate: Tensor;
  actUp: Tensor;
  wEff: Tensor;
  comb: Tensor;
  shared?: { mlp: MlpSave; s: Tensor; gate: Tensor };
}

interface LayerSave {
  x: Tensor;
  attn: AttnSave;
  x1: Tensor;
  h2: Tensor;
  rstd2: Tensor;
  mlp?: MlpSave;
  moe?: MoeSave;
  fm: Tensor;
  routeA?: RouteSave;
  routeM?: RouteSave;
}

export interface BackpropOptions {
  routers?: Routers;
  /** Router gradients (float32, per routed layer, same shape as the router weight): accumulated. */
  routerGrads?: Map<number, Tensor>;
  regularizer?: RegularizerOptions;
  /** Multiplies every gradient (1/accumulation steps). */
  lossScale?: number;
  /** Also compute every base weight's gradient (the full-parameter baseline). */
  fullParams?: FullGrads;
  /** LoRA adapters to apply and train (gradients accumulate into their gA/gB). */
  lora?: LoraSet;
  /** Apply `lora` without training it (set when the model's own adapters are used). */
  loraFrozen?: boolean;
  /** Forward only (validation): no saves, no gradients. */
  noGrad?: boolean;
  /** Testing: added to each routed execution's gate value (seq [B], token [N], expert [N·K]); the hard decision is unchanged. */
  gateOffsets?: Map<number, Float32Array>;
  /** Testing: report dL/dg and the scores s per routed execution. */
  collectGateGrads?: boolean;
  /**
   * Testing: the straight-through surrogate ĝ = g + s − s0 (s0 per execution, from a base
   * run): its value equals g at s = s0 and its derivative is the STE's, so finite
   * differences of the loss check the STE backward end to end.
   */
  surrogate?: Map<number, Float32Array>;
}

/** FullGrads as the layers see it: gradients created on the model's device. */
interface DeviceGrads {
  get(name: string, shape: readonly number[]): Tensor;
}

class Ctx {
  readonly N: number;
  readonly device: Device;
  private readonly fullOnDevice?: DeviceGrads;
  readonly qpos: Tensor;
  readonly ropePos: Tensor;
  readonly posJs: Int32Array;
  readonly maskT: Tensor;
  readonly validRows: Int32Array;
  readonly nValid: number;
  gateGrads?: Map<number, Float32Array>;
  scores?: Map<number, Float32Array>;
  /** Capacity-term gradient per expert assignment, by layer (expert routers). */
  expertReg?: Map<number, Float32Array>;
  /** LoRA intermediates u = x·Aᵀ by projection name (freed with the context). */
  readonly loraU = new Map<string, Tensor>();
  constructor(
    readonly model: CausalLM,
    readonly batch: Batch,
    readonly opts: BackpropOptions,
  ) {
    const { B, T, mask } = batch;
    this.N = B * T;
    const device = (this.device = model.device);
    const fp = opts.fullParams;
    if (fp) this.fullOnDevice = { get: (name, shape) => fp.get(name, shape, device) };
    this.posJs = new Int32Array(B * T);
    let n = 0;
    for (let b = 0; b < B; b++) {
      let p = 0;
      for (let t = 0; t < T; t++) this.posJs[b * T + t] = mask[b * T + t] ? p++ : -1;
      if (p === 0) throw new Error(`backprop: sequence ${b} of the batch has no tokens`);
      n += p;
    }
    this.nValid = n;
    this.validRows = Int32Array.from(mask);
    this.qpos = this.i32(this.posJs, [B, T]).keep();
    this.ropePos = this.i32(this.posJs.map((p) => Math.max(p, 0)), [B * T]).keep();
    this.maskT = this.i32(mask, [B, T]).keep();
    if (opts.collectGateGrads) {
      this.gateGrads = new Map();
      this.scores = new Map();
    }
  }
  get cfg() {
    return this.model.config;
  }
  get full(): DeviceGrads | undefined {
    return this.fullOnDevice;
  }
  /** int32 / float32 tensors from host values and zeros, on the model's device. */
  i32(data: ArrayLike<number>, shape: readonly number[]): Tensor {
    return Tensor.from(data, shape, 'int32', this.device);
  }
  f32(data: Float32Array, shape?: readonly number[]): Tensor {
    return Tensor.from(data, shape, 'float32', this.device);
  }
  zeros(shape: readonly number[]): Tensor {
    return Tensor.zeros(shape, 'float32', this.device);
  }
  dispose(): void {
    dispose([this.qpos, this.ropePos, this.maskT, ...this.loraU.values()]);
    this.loraU.clear();
  }
}

// ---------------------------------------------------------------------------- routers

function routeForward(ctx: Ctx, l: number, h: Tensor): RouteSave {
  const r = ctx.opts.routers!;
  const w = r.weight(l);
  const tau = r.thresholds.get(l)!;
  const { B, T } = ctx.batch;
  const C = ctx.cfg.hiddenSize;
  if (r.level === 'seq') {
    const s = ops.routerScoreSequences(h.reshape([B, T, C]), w, tau, ctx.maskT);
    const gSeq = s.gate.toFloat32Array();
    s.execIdx.dispose();
    s.gate.dispose();
    const gateJs = new Float32Array(B * T);
    const off = ctx.opts.gateOffsets?.get(l);
    const sur = ctx.opts.surrogate?.get(l);
    const sc = sur || ctx.scores ? s.score.toFloat32Array() : undefined;
    if (ctx.scores) ctx.scores.set(l, sc!);
    for (let b = 0; b < B; b++) gateJs.fill(gSeq[b] + (off ? off[b] : 0) + (sur ? sc![b] - sur[b] : 0), b * T, (b + 1) * T);
    return { gTok: ctx.f32(gateJs), gateJs: gSeq, score: s.score, h, pooled: s.pooled };
  }
  const s = ops.routerScoreTokens(h, w, tau);
  s.execIdx.dispose();
  const gateJs = s.gate.toFloat32Array();
  const off = ctx.opts.gateOffsets?.get(l);
  const sur = ctx.opts.surrogate?.get(l);
  const sc = sur || ctx.scores ? s.score.toFloat32Array() : undefined;
  if (ctx.scores) ctx.scores.set(l, sc!);
  if (off || sur) {
    s.gate.dispose();
    return { gTok: ctx.f32(gateJs.map((g, i) => g + (off ? off[i] : 0) + (sur ? sc![i] - sur[i] : 0))), gateJs, score: s.score, h };
  }
  return { gTok: s.gate, gateJs, score: s.score, h };
}

/** Router backward from dL/dgTok [N] (+ the capacity term's dL/dg), into grads and dh. */
function routeBackward(ctx: Ctx, l: number, rs: RouteSave, dgTok: Float32Array, dh: Tensor | undefined, regGrad: Float32Array | undefined): void {
  const r = ctx.opts.routers!;
  const w = r.weight(l);
  const grad = ctx.opts.routerGrads!.get(l)!;
  const { B, T } = ctx.batch;
  const scale = ctx.opts.lossScale ?? 1;
  if (r.level === 'seq') {
    if (ctx.gateGrads) {
      const raw = new Float32Array(B);
      for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) raw[b] += dgTok[b * T + t];
      ctx.gateGrads.set(l, raw);
    }
    const d = new Float32Array(B);
    for (let b = 0; b < B; b++) {
      let s = 0;
      for (let t = 0; t < T; t++) s += dgTok[b * T + t];
      // dgTok already carries lossScale (it came through the scaled loss); the capacity term gets it here.
      d[b] = s + (regGrad ? regGrad[b] : 0) * scale;
    }
    const dscore = ctx.f32(d);
    const dh3 = dh?.reshape([B, T, rs.pooled!.shape[1]]);
    ops.routerScoreSequencesBackward(dscore, rs.score, rs.pooled!, w, {
      seqLen: T,
      mask: ctx.maskT,
      needWeight: true,
      weightGradInto: grad,
      needInput: dh !== undefined,
      inputGradInto: dh3,
    });
    dh3?.dispose();
    dscore.dispose();
    return;
  }
  if (ctx.gateGrads) ctx.gateGrads.set(l, Float32Array.from(dgTok));
  const d = new Float32Array(dgTok.length);
  for (let i = 0; i < d.length; i++) d[i] = ctx.validRows[i] ? dgTok[i] + (regGrad ? regGrad[i] : 0) * scale : 0;
  const dscore = ctx.f32(d);
  ops.routerScoreTokensBackward(dscore, rs.score, rs.h, w, {
    needWeight: true,
    weightGradInto: grad,
    needInput: dh !== undefined,
    inputGradInto: dh,
  });
  dscore.dispose();
}

// ---------------------------------------------------------------------------- linear helpers

function lin(x: Tensor, w: LinearWeights, ctx?: Ctx, name?: string): Tensor {
  const lora = ctx?.opts.lora;
  if (lora && name && lora.adapters.has(name)) {
    const { y, u } = lora.forward(name, x, w);
    ctx!.loraU.get(name)?.dispose();
    if (u) ctx!.loraU.set(name, u);
    return y;
  }
  return ops.linear(x, w.weight, w.bias);
}

/** dx of a linear (and its weight/bias grads in full-parameter mode, by name). */
function linBack(ctx: Ctx, dy: Tensor, x: Tensor, w: LinearWeights, name: string, needInput: boolean): Tensor | undefined {
  const full = ctx.full;
  const u = ctx.loraU.get(name);
  if (u && ctx.opts.lora && !ctx.opts.loraFrozen) {
    // the adapter's gradients are always needed; its dx joins the base dx when asked for
    const dxl = ctx.opts.lora.backward(name, dy, x, u);
    const base = needInput || full ? linBackBase(ctx, dy, x, w, name, needInput) : undefined;
    if (!needInput) {
      dxl.dispose();
      base?.dispose();
      return undefined;
    }
    ops.axpy(base!, dxl, 1);
    dxl.dispose();
    return base;
  }
  return linBackBase(ctx, dy, x, w, name, needInput);
}

function linBackBase(ctx: Ctx, dy: Tensor, x: Tensor, w: LinearWeights, name: string, needInput: boolean): Tensor | undefined {
  const full = ctx.full;
  if (!needInput && !full) return undefined;
  const r = ops.linearBackward(dy, x, w.weight, {
    needInput,
    needWeight: !!full && w.weight.dtype === 'float32',
    needBias: !!full && !!w.bias,
    weightGradInto: full && w.weight.dtype === 'float32' ? full.get(`${name}.weight`, w.weight.shape) : undefined,
    biasGradInto: full && w.bias ? full.get(`${name}.bias`, w.bias.shape) : undefined,
  });
  return r.dx;
}

function addInto(acc: Tensor | undefined, t: Tensor | undefined): Tensor | undefined {
  if (!t) return acc;
  if (!acc) return t;
  ops.axpy(acc, t, 1);
  t.dispose();
  return acc;
}

// ---------------------------------------------------------------------------- layer forward

function mlpForward(h: Tensor, w: MlpWeights, ctx?: Ctx, name?: string): { out: Tensor; save: MlpSave } {
  const g = lin(h, w.gate, ctx, name && `${name}.gate_proj`);
  const u = lin(h, w.up, ctx, name && `${name}.up_proj`);
  const a = ops.swiglu(g, u);
  return { out: lin(a, w.down, ctx, name && `${name}.down_proj`), save: { g, u, a } };
}

function mlpBackward(ctx: Ctx, dout: Tensor, h: Tensor, w: MlpWeights, s: MlpSave, name: string): Tensor | undefined {
  const da = linBack(ctx, dout, s.a, w.down, `${name}.down_proj`, true)!;
  const { dgate, dup } = ops.swigluBackward(da, s.g, s.u);
  da.dispose();
  let dh = linBack(ctx, dgate, h, w.gate, `${name}.gate_proj`, true);
  dh = addInto(dh, linBack(ctx, dup, h, w.up, `${name}.up_proj`, true));
  dispose([dgate, dup]);
  return dh;
}

function attnForward(ctx: Ctx, l: number, x: Tensor, w: LayerWeights, route: RouteSave | undefined): { h: Tensor; rstd1: Tensor; save: Omit<AttnSave, 'h' | 'rstd1'> } & { hRoute?: RouteSave } {
  const cfg = ctx.cfg;
  const { B, T } = ctx.batch;
  const N = ctx.N, D = cfg.headDim, Hq = cfg.numHeads, Hkv = cfg.numKvHeads;
  const { out: h, rstd: rstd1 } = ops.rmsnorm(x, w.inputNorm, cfg.rmsNormEps);
  void route;
  return { h, rstd1, save: attnCore(ctx, l, h, w, undefined, { B, T, N, D, Hq, Hkv }) };
}

function attnCore(
  ctx: Ctx,
  l: number,
  h: Tensor,
  w: LayerWeights,
  gate: Float32Array | undefined,
  d: { B: number; T: number; N: number; D: number; Hq: number; Hkv: number },
): Omit<AttnSave, 'h' | 'rstd1'> {
  const cfg = ctx.cfg;
  const { B, T, N, D, Hq, Hkv } = d;
  const pre = `model.layers.${l}.self_attn`;
  const q = lin(h, w.q, ctx, `${pre}.q_proj`);
  const k = lin(h, w.k, ctx, `${pre}.k_proj`);
  const v = lin(h, w.v, ctx, `${pre}.v_proj`);
  let qn = q, kn = k, rstdQ: Tensor | undefined, rstdK: Tensor | undefined;
  if (cfg.qkNorm === 'head') {
    const a = ops.rmsnorm(q.reshape([N * Hq, D]), w.qNorm!, cfg.rmsNormEps);
    const b = ops.rmsnorm(k.reshape([N * Hkv, D]), w.kNorm!, cfg.rmsNormEps);
    qn = a.out;
    kn = b.out;
    rstdQ = a.rstd;
    rstdK = b.rstd;
  } else if (cfg.qkNorm === 'full') {
    const a = ops.rmsnorm(q, w.qNorm!, cfg.rmsNormEps);
    const b = ops.rmsnorm(k, w.kNorm!, cfg.rmsNormEps);
    qn = a.out;
    kn = b.out;
    rstdQ = a.rstd;
    rstdK = b.rstd;
  }
  let qc = qn, kc = kn, vc = v;
  if (cfg.clipQkv !== undefined) {
    const c = cfg.clipQkv;
    qc = ops.clamp(qn, -c, c);
    kc = ops.clamp(kn, -c, c);
    vc = ops.clamp(v, -c, c);
  }
  const invFreq = ctx.model.invFreq;
  const attnScale = ctx.model.attnScale;
  const qr = ops.rope(qc.reshape([N, Hq, D]), ctx.ropePos, invFreq, { attnScale });
  const kr = ops.rope(kc.reshape([N, Hkv, D]), ctx.ropePos, invFreq, { attnScale });
  // mod: a skipped token's key/value is invisible to the other tokens of this layer.
  let kposJs = ctx.posJs;
  const mod = gate !== undefined && ctx.opts.routers?.mode === 'mod' && gate.some((g, i) => g === 0 && ctx.validRows[i] !== 0);
  if (mod) kposJs = ctx.posJs.map((p, i) => (gate![i] ? p : -1));
  const kpos = ctx.i32(kposJs, [B, T]);
  const window = cfg.slidingWindow[l] ?? 0;
  const q4 = qr.reshape([B, T, Hq, D]), k4 = kr.reshape([B, T, Hkv, D]), v4 = vc.reshape([B, T, Hkv, D]);
  let { out: att, lse } = ops.attention(q4, k4, v4, { qpos: ctx.qpos, kpos, window });
  let keep: AttnSave['keep'];
  if (mod) {
    const kposFull = ctx.i32(ctx.posJs, [B, T]);
    const full = ops.attention(q4, k4, v4, { qpos: ctx.qpos, kpos: kposFull, window });
    // merged = full + g·(mod − full), per token row
    const gRows = ctx.f32(gate!.map((g) => (g ? 1 : 0)));
    const diff = att.clone();
    ops.axpy(diff, full.out, -1);
    const merged = ops.gatedResidual(full.out.reshape([N, Hq * D]), diff.reshape([N, Hq * D]), gRows).reshape([B, T, Hq, D]);
    diff.dispose();
    keep = { att: full.out, lse: full.lse, kpos: kposFull, attMod: att, gRows };
    att = merged;
  }
  const fa = lin(att.reshape([N, Hq * D]), w.o, ctx, `${pre}.o_proj`);
  return {
    q0: cfg.qkNorm !== 'none' ? q : undefined,
    k0: cfg.qkNorm !== 'none' ? k : undefined,
    rstdQ,
    rstdK,
    qPre: cfg.clipQkv !== undefined ? qn : undefined,
    kPre: cfg.clipQkv !== undefined ? kn : undefined,
    vPre: cfg.clipQkv !== undefined ? v : undefined,
    qr: q4,
    kr: k4,
    v: v4,
    att,
    lse,
    kpos,
    fa,
    keep,
  };
}

function moeForward(ctx: Ctx, l: number, h2: Tensor, w: MoeWeights, expertRoute: boolean): { out: Tensor; save: MoeSave; route?: RouteSave } {
  const m = ctx.cfg.moe!;
  const logits = lin(h2, w.router);
  const routing = ops.moeRoute(logits, { topK: m.topK, renorm: m.normTopkProb });
  const sorted = ops.moeSort(routing.topkIdx, m.numExperts);
  const ex = ops.moeExperts(h2, sorted, w.experts, { saveActivations: true });
  let wEff = routing.topkW;
  let route: RouteSave | undefined;
  if (expertRoute) {
    // expert routers: s[t, e] = σ(W_e · h2_t); assignment (t, j) kept iff s[t, e(t,j)] ≥ τ.
    const r = ctx.opts.routers!;
    const W = r.weight(l);
    const tau = r.thresholds.get(l)!;
    const z = ops.linear(h2, W).toFloat32Array();
    const E = m.numExperts, K = m.topK, N = ctx.N;
    const s = z.map((v) => 1 / (1 + Math.exp(-v)));
    const idx = routing.topkIdx.toInt32Array();
    const tw = routing.topkW.toFloat32Array();
    const g = new Float32Array(N * K);
    const eff = new Float32Array(N * K);
    const off = ctx.opts.gateOffsets?.get(l);
    const sur = ctx.opts.surrogate?.get(l);
    const sAssign = new Float32Array(N * K);
    for (let i = 0; i < N * K; i++) {
      const t = Math.floor(i / K);
      sAssign[i] = s[t * E + idx[i]];
      g[i] = sAssign[i] >= tau ? 1 : 0;
      eff[i] = tw[i] * (g[i] + (off ? off[i] : 0) + (sur ? sAssign[i] - sur[i] : 0));
    }
    if (ctx.scores) ctx.scores.set(l, sAssign);
    wEff = ctx.f32(eff, [N, K]);
    const score = ctx.f32(s, [N, E]);
    route = { gTok: ctx.zeros([1]), gateJs: g, score, h: h2, expert: { s, g, topkW: tw, topkIdx: idx, E, K } };
  }
  const comb = ops.moeCombine(ex.y, sorted.invPerm, wEff);
  let out = comb;
  let shared: MoeSave['shared'];
  if (w.shared) {
    const sm = mlpForward(h2, w.shared);
    const gate = ops.routerScoreTokens(h2, w.sharedGate!.weight.reshape([h2.shape[1]]), 0.5);
    gate.execIdx.dispose();
    gate.gate.dispose();
    out = ops.gatedResidual(comb, sm.out, gate.score);
    shared = { mlp: sm.save, s: sm.out, gate: gate.score };
  }
  return { out, save: { logits, routing, sorted, y: ex.y, actGate: ex.actGate!, actUp: ex.actUp!, wEff, comb, shared }, route };
}

function layerForward(ctx: Ctx, l: number, x: Tensor): { y: Tensor; save: LayerSave } {
  const cfg = ctx.cfg;
  const w = ctx.model.weights.layers[l];
  const routers = ctx.opts.routers;
  const routed = routers?.has(l) ? routers.target : undefined;
  const { B, T } = ctx.batch;
  const N = ctx.N, D = cfg.headDim, Hq = cfg.numHeads, Hkv = cfg.numKvHeads;
  const { out: h, rstd: rstd1 } = ops.rmsnorm(x, w.inputNorm, cfg.rmsNormEps);
  let routeA: RouteSave | undefined;
  if (routed === 'attn' || routed === 'block') routeA = routeForward(ctx, l, h);
  const token = routers?.level === 'token';
  const core = attnCore(ctx, l, h, w, routeA && token ? routeA.gateJs : undefined, { B, T, N, D, Hq, Hkv });
  const x1 = ops.gatedResidual(x, core.fa, routeA?.gTok);
  const { out: h2, rstd: rstd2 } = ops.rmsnorm(x1, w.postAttnNorm, cfg.rmsNormEps);
  let routeM: RouteSave | undefined;
  if (routed === 'mlp' || routed === 'moe') routeM = routeForward(ctx, l, h2);
  if (routed === 'block') routeM = routeA;
  let fm: Tensor;
  let mlp: MlpSave | undefined;
  let moe: MoeSave | undefined;
  if (w.mlp) {
    const r = mlpForward(h2, w.mlp, ctx, `model.layers.${l}.mlp`);
    fm = r.out;
    mlp = r.save;
  } else {
    const r = moeForward(ctx, l, h2, w.moe!, routed === 'expert');
    fm = r.out;
    moe = r.save;
    if (r.route) routeM = r.route;
  }
  const y = ops.gatedResidual(x1, fm, routed === 'expert' ? undefined : routeM?.gTok);
  return { y, save: { x, attn: { h, rstd1, ...core }, x1, h2, rstd2, mlp, moe, fm, routeA, routeM } };
}

// ---------------------------------------------------------------------------- layer backward

interface RegGrads {
  /** per layer: dL_reg/dg for each routed execution (seq: [B], token: [N], expert: [N*K]) */
  perLayer: Map<number, Float32Array>;
}

function layerBackward(ctx: Ctx, l: number, s: LayerSave, dy: Tensor, needInput: boolean, reg: RegGrads): Tensor | undefined {
  const cfg = ctx.cfg;
  const w = ctx.model.weights.layers[l];
  const routers = ctx.opts.routers;
  const routed = routers?.has(l) ? routers.target : undefined;
  const name = `model.layers.${l}`;
  const N = ctx.N, D = cfg.headDim, Hq = cfg.numHeads, Hkv = cfg.numKvHeads;
  const full = ctx.full;
  // Activation gradients inside this layer are needed when the layer input's gradient is
  // (an earlier trainable layer), or in full-parameter mode; the router alone needs only dg.
  const deep = needInput || !!full || (!ctx.opts.loraFrozen && !!ctx.opts.lora?.inLayer(l));
  const toDispose: Tensor[] = [];

  // ---- MLP / MoE half: y = x1 + gM·F(h2)
  const gM = routed === 'expert' ? undefined : s.routeM?.gTok;
  let dgM: Float32Array | undefined;
  if (s.routeM && routed !== 'expert') {
    const { dg } = ops.gatedResidualBackward(dy, s.fm, gM, { df: false, dg: true });
    dgM = dg!.toFloat32Array();
    dg!.dispose();
  }
  // The attention gate of this layer needs dL/dx1, which includes the MLP path: go deep
  // through the MLP half whenever this layer's attention is routed.
  const deepMlp = deep || !!s.routeA;
  let dh2: Tensor | undefined;
  if (deepMlp || routed === 'expert') {
    const dfm = gM ? ops.gatedResidualBackward(dy, s.fm, gM, { df: true, dg: false }).df! : dy;
    if (gM) toDispose.push(dfm);
    if (s.mlp) {
      dh2 = mlpBackward(ctx, dfm, s.h2, w.mlp!, s.mlp, `${name}.mlp`);
    } else {
      dh2 = moeBackward(ctx, l, dfm, s, w.moe!, deepMlp);
    }
  }
  if (s.routeM && routed !== 'block' && routed !== 'expert') {
    if (deep && !dh2) dh2 = ctx.zeros([N, cfg.hiddenSize]);
    routeBackward(ctx, l, s.routeM, dgM!, deep ? dh2 : undefined, reg.perLayer.get(l));
  }
  // dx1 = dy + rmsnorm_bwd(dh2)
  let dx1: Tensor | undefined;
  if (deepMlp && dh2) {
    const r = ops.rmsnormBackward(dh2!, s.x1, w.postAttnNorm, s.rstd2, {
      needInput: true,
      needWeight: !!full,
      weightGradInto: full ? full.get(`${name}.post_attention_layernorm.weight`, w.postAttnNorm.shape) : undefined,
    });
    dh2!.dispose();
    dx1 = r.dx!;
    ops.axpy(dx1, dy, 1);
  } else {
    dh2?.dispose();
  }

  // ---- attention half: x1 = x + gA·Fa(h)
  const dOut = dx1 ?? dy; // without deep grads the residual passes dy straight through
  const gA = s.routeA?.gTok;
  let dgA: Float32Array | undefined;
  if (s.routeA) {
    const { dg } = ops.gatedResidualBackward(dOut, s.attn.fa, gA, { df: false, dg: true });
    dgA = dg!.toFloat32Array();
    dg!.dispose();
    if (routed === 'block' && dgM) for (let i = 0; i < dgA.length; i++) dgA[i] += dgM[i];
  }
  let dh: Tensor | undefined;
  if (deep) {
    const dfa = gA ? ops.gatedResidualBackward(dOut, s.attn.fa, gA, { df: true, dg: false }).df! : dOut;
    if (gA) toDispose.push(dfa);
    dh = attnBackward(ctx, l, dfa, s, w);
  }
  if (s.routeA) {
    if (deep && !dh) dh = ctx.zeros([N, cfg.hiddenSize]);
    routeBackward(ctx, l, s.routeA, dgA!, deep ? dh : undefined, reg.perLayer.get(l));
  }
  let dx: Tensor | undefined;
  if (deep && dh) {
    const r = ops.rmsnormBackward(dh, s.x, w.inputNorm, s.attn.rstd1, {
      needInput: needInput || !!full,
      needWeight: !!full,
      weightGradInto: full ? full.get(`${name}.input_layernorm.weight`, w.inputNorm.shape) : undefined,
    });
    dh.dispose();
    dx = r.dx;
    if (dx) ops.axpy(dx, dOut, 1);
  }
  if (dx1 && dx1 !== dx) dx1.dispose();
  dispose(toDispose);
  return needInput || full ? dx : undefined;
}

function attnBackward(ctx: Ctx, l: number, dfa: Tensor, s: LayerSave, w: LayerWeights): Tensor {
  const cfg = ctx.cfg;
  const a = s.attn;
  const name = `model.layers.${l}.self_attn`;
  const N = ctx.N, D = cfg.headDim, Hq = cfg.numHeads, Hkv = cfg.numKvHeads;
  const datt = linBack(ctx, dfa, a.att.reshape([N, Hq * D]), w.o, `${name}.o_proj`, true)!;
  const window = cfg.slidingWindow[l] ?? 0;
  const shape4 = [ctx.batch.B, ctx.batch.T, Hq, D];
  let dq: Tensor | undefined, dk: Tensor | undefined, dv: Tensor | undefined;
  if (a.keep) {
    // rows of executed tokens came from the mod attention, the others from the full one
    const { df: dMod } = ops.gatedResidualBackward(datt, datt, a.keep.gRows, { df: true, dg: false });
    const dFull = datt.clone();
    ops.axpy(dFull, dMod!, -1);
    const r1 = ops.attentionBackward(dMod!.reshape(shape4), a.qr, a.kr, a.v, a.keep.attMod, a.lse, { qpos: ctx.qpos, kpos: a.kpos, window });
    const r2 = ops.attentionBackward(dFull.reshape(shape4), a.qr, a.kr, a.v, a.keep.att, a.keep.lse, { qpos: ctx.qpos, kpos: a.keep.kpos, window });
    ops.axpy(r1.dq!, r2.dq!, 1);
    ops.axpy(r1.dk!, r2.dk!, 1);
    ops.axpy(r1.dv!, r2.dv!, 1);
    dispose([dMod, dFull, r2.dq, r2.dk, r2.dv]);
    ({ dq, dk, dv } = r1);
  } else {
    ({ dq, dk, dv } = ops.attentionBackward(datt.reshape(shape4), a.qr, a.kr, a.v, a.att, a.lse, { qpos: ctx.qpos, kpos: a.kpos, window }));
  }
  datt.dispose();
  const invFreq = ctx.model.invFreq;
  const attnScale = ctx.model.attnScale;
  let dqn = ops.ropeBackward(dq!.reshape([N, Hq, D]), ctx.ropePos, invFreq, { attnScale }).reshape([N, Hq * D]);
  let dkn = ops.ropeBackward(dk!.reshape([N, Hkv, D]), ctx.ropePos, invFreq, { attnScale }).reshape([N, Hkv * D]);
  let dvv = dv!.reshape([N, Hkv * D]);
  dispose([dq, dk, dv]);
  if (cfg.clipQkv !== undefined) {
    const c = cfg.clipQkv;
    const cq = ops.clampBackward(dqn, a.qPre!, -c, c), ck = ops.clampBackward(dkn, a.kPre!, -c, c), cv = ops.clampBackward(dvv, a.vPre!, -c, c);
    dispose([dqn, dkn, dvv]);
    dqn = cq;
    dkn = ck;
    dvv = cv;
  }
  const full = ctx.full;
  if (cfg.qkNorm !== 'none') {
    const head = cfg.qkNorm === 'head';
    const rq = ops.rmsnormBackward(head ? dqn.reshape([N * Hq, D]) : dqn, head ? a.q0!.reshape([N * Hq, D]) : a.q0!, w.qNorm!, a.rstdQ!, {
      needWeight: !!full,
      weightGradInto: full ? full.get(`${name}.q_norm.weight`, w.qNorm!.shape) : undefined,
    });
    const rk = ops.rmsnormBackward(head ? dkn.reshape([N * Hkv, D]) : dkn, head ? a.k0!.reshape([N * Hkv, D]) : a.k0!, w.kNorm!, a.rstdK!, {
      needWeight: !!full,
      weightGradInto: full ? full.get(`${name}.k_norm.weight`, w.kNorm!.shape) : undefined,
    });
    dispose([dqn, dkn]);
    dqn = rq.dx!.reshape([N, Hq * D]);
    dkn = rk.dx!.reshape([N, Hkv * D]);
    dispose([rq.dx, rk.dx]);
  }
  let dh = linBack(ctx, dqn, a.h, w.q, `${name}.q_proj`, true);
  dh = addInto(dh, linBack(ctx, dkn, a.h, w.k, `${name}.k_proj`, true));
  dh = addInto(dh, linBack(ctx, dvv, a.h, w.v, `${name}.v_proj`, true));
  dispose([dqn, dkn, dvv]);
  return dh!;
}

function moeBackward(ctx: Ctx, l: number, dfm: Tensor, s: LayerSave, w: MoeWeights, deep: boolean): Tensor | undefined {
  const m = s.moe!;
  const cfg = ctx.cfg;
  const name = `model.layers.${l}.mlp`;
  const full = ctx.full;
  let dh2: Tensor | undefined;
  let dcomb = dfm;
  const extra: Tensor[] = [];
  if (m.shared && deep) {
    const r = ops.gatedResidualBackward(dfm, m.shared.s, m.shared.gate, { df: true, dg: true });
    extra.push(r.df!, r.dg!);
    dh2 = mlpBackward(ctx, r.df!, s.h2, w.shared!, m.shared.mlp, `${name}.shared_expert`);
    // sigmoid gate: d z = dg · σ'(z), through the same fused router kernel
    const gw = w.sharedGate!.weight.reshape([cfg.hiddenSize]);
    const gr = ops.routerScoreTokensBackward(r.dg!, m.shared.gate, s.h2, gw, {
      needInput: true,
      inputGradInto: dh2,
      needWeight: !!full && w.sharedGate!.weight.dtype === 'float32',
    });
    if (gr.dw && full) ops.axpy(full.get(`${name}.shared_expert_gate.weight`, [1, cfg.hiddenSize]).reshape([cfg.hiddenSize]), gr.dw, 1);
    if (gr.dw) gr.dw.dispose();
  }
  const expertRoute = s.routeM?.expert;
  const cb = ops.moeCombineBackward(dcomb, m.y, m.sorted.invPerm, m.wEff, { needY: deep, needWeights: deep || !!expertRoute });
  if (expertRoute) {
    // STE through the assignment gates: dL/dg = dL/dŵ · w ; dz[t, e] = dg · s(1 − s)
    const dEff = cb.dtopkW!.toFloat32Array();
    const { s: sc, g, topkW, topkIdx, E, K } = expertRoute;
    const N = ctx.N;
    const regGrad = ctx.expertReg?.get(l);
    const dz = new Float32Array(N * E);
    const scale = ctx.opts.lossScale ?? 1;
    if (ctx.gateGrads) ctx.gateGrads.set(l, Float32Array.from(dEff, (v, i) => v * topkW[i]));
    for (let i = 0; i < N * K; i++) {
      const t = Math.floor(i / K);
      if (!ctx.validRows[t]) continue;
      const e = topkIdx[i];
      const sv = sc[t * E + e];
      const dg = dEff[i] * topkW[i] + (regGrad ? regGrad[i] : 0) * scale;
      dz[t * E + e] += dg * sv * (1 - sv);
    }
    const dzT = ctx.f32(dz, [N, E]);
    const Wr = ctx.opts.routers!.weight(l);
    const grad = ctx.opts.routerGrads!.get(l)!;
    const dW = ops.matmul(dzT, s.h2, { transA: true }); // [E, C]
    ops.axpy(grad, dW, 1);
    dW.dispose();
    if (deep) {
      const dhr = ops.matmul(dzT, Wr); // [N, C]
      dh2 = addInto(dh2, dhr);
    }
    dzT.dispose();
    // the base router's combine weights get dŵ · g
    if (deep) {
      const dtw = new Float32Array(N * K);
      for (let i = 0; i < N * K; i++) dtw[i] = dEff[i] * g[i];
      cb.dtopkW!.write(dtw);
    }
  }
  if (deep) {
    const eb = ops.moeExpertsBackward(cb.dy!, s.h2, m.sorted, w.experts, { actGate: m.actGate, actUp: m.actUp }, { needInput: true, needWeights: !!full && w.experts.gate.dtype === 'float32' });
    dh2 = addInto(dh2, eb.dx);
    if (full && eb.dwGate) {
      for (const [k, t] of [['gate', eb.dwGate], ['up', eb.dwUp], ['down', eb.dwDown]] as const) {
        ops.axpy(full.get(`${name}.experts.${k}`, t!.shape), t!, 1);
        t!.dispose();
      }
    }
    const dlogits = ops.moeRouteBackward(cb.dtopkW!, m.routing.probs, m.routing.topkIdx, { renorm: cfg.moe!.normTopkProb });
    dh2 = addInto(dh2, linBack(ctx, dlogits, s.h2, w.router, `${name}.gate`, true));
    dlogits.dispose();
  }
  dispose([cb.dy, cb.dtopkW, ...extra]);
  return dh2;
}

// ---------------------------------------------------------------------------- regulariser

function gateStats(ctx: Ctx, saves: Map<number, LayerSave>): LayerStats[] {
  const r = ctx.opts.routers;
  if (!r) return [];
  const out: LayerStats[] = [];
  for (const l of r.layers) {
    const s = saves.get(l)!;
    const rs = r.target === 'attn' || r.target === 'block' ? s.routeA! : s.routeM!;
    let executed = 0, total = 0;
    if (rs.expert) {
      const K = rs.expert.K;
      for (let i = 0; i < rs.gateJs.length; i++) if (ctx.validRows[Math.floor(i / K)]) {
        executed += rs.gateJs[i];
        total++;
      }
    } else if (r.level === 'seq') {
      for (const g of rs.gateJs) executed += g;
      total = rs.gateJs.length;
    } else {
      for (let i = 0; i < rs.gateJs.length; i++) if (ctx.validRows[i]) {
        executed += rs.gateJs[i];
        total++;
      }
    }
    out.push({ layer: l, executed, total });
  }
  return out;
}

/** The capacity term and its gradient dL/dg per routed execution (padding excluded). */
export function capacityLoss(stats: LayerStats[], o: RegularizerOptions): { loss: number; perLayerGrad: Map<number, number> } {
  const c = 1 - o.targetSkip;
  const grad = new Map<number, number>();
  if (o.lambda === 0 || stats.length === 0) return { loss: 0, perLayerGrad: grad };
  if (o.kind === 'global') {
    const exec = stats.reduce((a, s) => a + s.executed, 0);
    const total = stats.reduce((a, s) => a + s.total, 0);
    const gbar = exec / total;
    const active = gbar > c;
    for (const s of stats) grad.set(s.layer, active ? o.lambda / total : 0);
    return { loss: o.lambda * Math.max(0, gbar - c), perLayerGrad: grad };
  }
  let loss = 0;
  for (const s of stats) {
    const m = s.executed / s.total;
    if (o.kind === 'l1') {
      loss += o.lambda * m;
      grad.set(s.layer, o.lambda / s.total);
    } else {
      loss += o.lambda * Math.max(0, m - c);
      grad.set(s.layer, m > c ? o.lambda / s.total : 0);
    }
  }
  return { loss, perLayerGrad: grad };
}

// ---------------------------------------------------------------------------- step

/**
 * One forward (+ backward unless noGrad) over a batch: returns the loss parts and the
 * executed counts per routed layer; gradients accumulate into opts.routerGrads /
 * opts.fullParams, scaled by opts.lossScale.
 */
export function forwardBackward(model: CausalLM, batch: Batch, opts: BackpropOptions = {}): StepResult {
  // One scope for the whole step: every intermediate (and every reshape view of one) is
  // freed when the step ends; gradients live in tensors created (and kept) by the caller.
  return tidy(() => forwardBackwardScoped(model, batch, opts));
}

function forwardBackwardScoped(model: CausalLM, batch: Batch, opts: BackpropOptions): StepResult {
  // LoRA attached to the model applies to every forward; it trains only when passed explicitly.
  if (!opts.lora && model.lora) opts = { ...opts, lora: model.lora, loraFrozen: true };
  checkDevices(model, opts);
  const ctx = new Ctx(model, batch, opts);
  const cfg = model.config;
  const routers = opts.routers;
  if (routers && !opts.noGrad && !opts.routerGrads) throw new Error('forwardBackward: routerGrads are required to train routers');
  const firstTrainable = opts.fullParams
    ? 0
    : Math.min(routers ? Math.min(...routers.layers) : cfg.numLayers, opts.lora && !opts.loraFrozen ? opts.lora.firstLayer : cfg.numLayers);
  const saves = new Map<number, LayerSave>();
  const transient: Tensor[] = [];
  try {
    const idT = ctx.i32(batch.ids, [ctx.N]);
    transient.push(idT);
    let x = ops.embedding(idT, model.weights.embed);
    const save = !opts.noGrad;
    for (let l = 0; l < cfg.numLayers; l++) {
      const r = layerForward(ctx, l, x);
      if (save && l >= firstTrainable) saves.set(l, r.save);
      else {
        if (routers?.has(l)) saves.set(l, r.save); // stats only
        else disposeSave(r.save, l === 0 ? undefined : x);
        if (l > 0 && !(routers?.has(l))) x.dispose();
      }
      if (l === 0 && !saves.has(0)) transient.push(x);
      x = r.y;
    }
    const { out: hf, rstd: rstdF } = ops.rmsnorm(x, model.weights.finalNorm, cfg.rmsNormEps);
    const logits = ops.linear(hf, model.weights.lmHead);
    const targets = ctx.i32(batch.targets, [ctx.N]);
    const ce = ops.crossEntropy(logits, targets, { ignoreIndex: -100 });
    const stats = gateStats(ctx, saves);
    const regOpts = opts.regularizer ?? { lambda: 0, targetSkip: 0, kind: 'global' as const };
    const { loss: reg, perLayerGrad } = capacityLoss(stats, regOpts);
    const result: StepResult = { loss: ce.loss + reg, ce: ce.loss, reg, counted: ce.counted, layers: stats, gateGrads: ctx.gateGrads, scores: ctx.scores };
    if (opts.noGrad) {
      dispose([hf, rstdF, logits, targets, ce.lse, x]);
      return result;
    }
    // ---- backward
    const scale = opts.lossScale ?? 1;
    const dlogits = ops.crossEntropyBackward(logits, ce.lse, targets, { ignoreIndex: -100, scale: ce.counted > 0 ? scale / ce.counted : 0, inPlace: true });
    // tied embeddings: the lm_head gradient accumulates into the embedding's
    const tied = model.weights.lmHead === model.weights.embed;
    let dx: Tensor | undefined = linBack(ctx, dlogits, hf, { weight: model.weights.lmHead }, tied ? 'model.embed_tokens' : 'lm_head', true);
    dispose([dlogits, targets, ce.lse]);
    const rf = ops.rmsnormBackward(dx!, x, model.weights.finalNorm, rstdF, {
      needWeight: !!opts.fullParams,
      weightGradInto: opts.fullParams ? ctx.full!.get('model.norm.weight', model.weights.finalNorm.shape) : undefined,
    });
    dispose([dx, hf, rstdF, x]);
    dx = rf.dx;
    // Regulariser gradients per routed execution, already divided by the execution count.
    const reg2: RegGrads = { perLayer: new Map() };
    const expertReg = new Map<number, Float32Array>();
    for (const st of stats) {
      const gval = perLayerGrad.get(st.layer) ?? 0;
      const s = saves.get(st.layer)!;
      const rs = routers!.target === 'attn' || routers!.target === 'block' ? s.routeA! : s.routeM!;
      // The router backward multiplies by lossScale; the reg term is per step, so pre-divide
      // nothing here: lossScale applies to both terms alike.
      if (rs.expert) expertReg.set(st.layer, new Float32Array(rs.gateJs.length).fill(gval));
      else reg2.perLayer.set(st.layer, new Float32Array(rs.gateJs.length).fill(gval));
    }
    ctx.expertReg = expertReg;
    for (let l = cfg.numLayers - 1; l >= firstTrainable; l--) {
      const s = saves.get(l)!;
      const needInput = l > firstTrainable || !!opts.fullParams;
      const dprev = layerBackward(ctx, l, s, dx!, needInput, reg2);
      dx!.dispose();
      disposeSave(s);
      saves.delete(l);
      dx = dprev;
      if (!dx) break;
    }
    if (dx && opts.fullParams && model.weights.embed.dtype === 'float32') {
      ops.embeddingBackward(dx, idT, cfg.vocabSize, ctx.full!.get('model.embed_tokens.weight', model.weights.embed.shape));
    }
    dx?.dispose();
    return result;
  } finally {
    for (const s of saves.values()) disposeSave(s);
    dispose(transient);
    ctx.dispose();
  }
}

/** Routers, their gradients and LoRA adapters must live on the model's device (a clear error instead of RT_ERR_DEVICE deep in an op). */
function checkDevices(model: CausalLM, opts: BackpropOptions): void {
  const dev = model.device;
  const bad = (what: string, d: Device) => {
    throw new ArgumentError(`forwardBackward: ${what} live on ${d}, the model on ${dev} (create them for the model, or move them with .to('${dev}'))`);
  };
  if (opts.routers && opts.routers.device !== dev) bad('the routers', opts.routers.device);
  if (opts.routerGrads) for (const g of opts.routerGrads.values()) if (g.device !== dev) bad('the router gradients', g.device);
  if (opts.lora && opts.lora.device !== dev) bad('the LoRA adapters', opts.lora.device);
}

function disposeSave(s: LayerSave, except?: Tensor): void {
  const seen = new Set<Tensor>();
  const walk = (v: unknown, depth: number) => {
    if (depth > 5 || !v || typeof v !== 'object') return;
    if (v instanceof Tensor) {
      if (v !== except) seen.add(v);
      return;
    }
    if (ArrayBuffer.isView(v)) return;
    for (const x of Object.values(v)) walk(x, depth + 1);
  };
  walk({ ...s, x: undefined }, 0);
  for (const t of seen) t.dispose();
}
