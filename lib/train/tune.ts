/**
 * Router-Tuning (DESIGN.md §1): attach routers to a frozen model and train only them.
 * loss = cross-entropy (response tokens for instruction data) + the capacity term;
 * AdamW with a cosine schedule and warmup, gradient accumulation and clipping;
 * deterministic for a seed; validation every N steps; an atomic checkpoint holding the
 * routers, the optimiser state and the data position, from which `resume` continues
 * bit-identically; optional calibration of the threshold to an exact skip ratio.
 */
import { ArgumentError, RouterTuningError } from '../errors';
import { Tensor, dispose } from '../tensor';
import type { CausalLM } from '../model/causal_lm';
import { Granularity, Routers, AttentionMode } from '../routing/routers';
import { loadRouters, readAll, saveRouters } from '../routing/checkpoint';
import { forwardBackward, RegularizerKind, LayerStats } from './backprop';
import { BatchStream, BatchStreamState, Example, collate, loadExamples, splitExamples } from './data';
import { AdamW, Param, clipGradNorm } from './optimizer';
import { learningRate } from './schedule';
import { LoraSet, loadLora } from './lora';

export interface TuneOptions {
  /** Training data: a text file/folder or JSONL (see loadExamples); or `examples`. */
  data?: string;
  examples?: Example[];
  /** Held-out examples; default: a `valFraction` split of the data. */
  valExamples?: Example[];
  granularity?: Granularity;
  layers?: number[];
  threshold?: number;
  mode?: AttentionMode;
  /** Requested skip ratio (capacity c = 1 − targetSkip). Default 0.25. */
  targetSkip?: number;
  /** λ of the capacity term. Default 1. */
  lambda?: number;
  regularizer?: RegularizerKind;
  steps?: number;
  lr?: number;
  warmupSteps?: number;
  minLrRatio?: number;
  batchSize?: number;
  gradAccum?: number;
  seqLen?: number;
  maxGradNorm?: number;
  weightDecay?: number;
  seed?: number;
  valEvery?: number;
  valFraction?: number;
  maxValBatches?: number;
  /** Where to save the routers (with optimiser state for resume). */
  out?: string;
  /** A checkpoint written by a previous run with `out`: continue from it. */
  resume?: string;
  /** Save a checkpoint every N steps (and at the end). */
  checkpointEvery?: number;
  /** After training, set the threshold so that the held-out skip ratio equals targetSkip. */
  calibrate?: boolean;
  /** LoRA + Router-Tuning: rank of adapters on q/k/v/o and the MLP projections (0 = none). */
  loraRank?: number;
  loraAlpha?: number;
  /** Stop (after checkpointing) once this many steps are done — an interruption, for tests. */
  stopAfter?: number;
  onProgress?: (p: TuneProgress) => void;
}

export interface TuneProgress {
  step: number;
  steps: number;
  loss: number;
  ce: number;
  executedFraction: number;
  lr: number;
  tokensPerSecond: number;
  etaSeconds: number;
  valLoss?: number;
}

export interface TuneResult {
  routers?: string;
  granularity: Granularity;
  steps: number;
  trainLoss: number;
  valLoss: number;
  skipRatio: number;
  layers: { layer: number; executedFraction: number }[];
  thresholds: Record<string, number>;
  calibrated: boolean;
  tokensPerSecond: number;
  /** The trained routers; they are also attached to the model (model.routers). */
  routerSet: Routers;
}

const DEFAULTS = {
  granularity: 'attn-seq' as Granularity,
  targetSkip: 0.25,
  lambda: 1,
  regularizer: 'global' as RegularizerKind,
  steps: 200,
  lr: 1e-3,
  batchSize: 8,
  gradAccum: 1,
  seqLen: 256,
  maxGradNorm: 1,
  weightDecay: 0,
  seed: 0,
  valEvery: 50,
  valFraction: 0.1,
  maxValBatches: 16,
};

function check(cond: boolean, msg: string): void {
  if (!cond) throw new ArgumentError(`tune: ${msg}`);
}

/** Held-out loss and executed fraction per routed layer (no gradients). */
export function evaluateRouted(model: CausalLM, routers: Routers | undefined, examples: Example[], batchSize: number, maxBatches = Infinity): { loss: number; layers: LayerStats[]; tokens: number } {
  let lossSum = 0, counted = 0, tokens = 0;
  const acc = new Map<number, LayerStats>();
  for (let i = 0, n = 0; i < examples.length && n < maxBatches; i += batchSize, n++) {
    const batch = collate(examples.slice(i, i + batchSize));
    const r = forwardBackward(model, batch, { routers, noGrad: true });
    lossSum += r.ce * r.counted;
    counted += r.counted;
    tokens += batch.mask.reduce((a, b) => a + b, 0);
    for (const s of r.layers) {
      const a = acc.get(s.layer) ?? { layer: s.layer, executed: 0, total: 0 };
      a.executed += s.executed;
      a.total += s.total;
      acc.set(s.layer, a);
    }
  }
  return { loss: counted ? lossSum / counted : NaN, layers: [...acc.values()], tokens };
}

function skipOf(layers: LayerStats[]): number {
  const e = layers.reduce((a, s) => a + s.executed, 0), t = layers.reduce((a, s) => a + s.total, 0);
  return t ? 1 - e / t : 0;
}

/**
 * Sets one threshold for every routed layer so that the held-out skip ratio is as close
 * to `target` as the data allows (bisection on τ, re-measuring with the real forward,
 * since skipping early layers changes later routers' inputs).
 */
export function calibrateThreshold(model: CausalLM, routers: Routers, val: Example[], target: number, batchSize: number, maxBatches: number): { threshold: number; skipRatio: number } {
  let lo = 0, hi = 1;
  let best = { threshold: routers.thresholds.get(routers.layers[0])!, skipRatio: NaN, err: Infinity };
  for (let it = 0; it < 14; it++) {
    const mid = (lo + hi) / 2;
    for (const l of routers.layers) routers.thresholds.set(l, mid);
    const skip = skipOf(evaluateRouted(model, routers, val, batchSize, maxBatches).layers);
    const err = Math.abs(skip - target);
    if (err < best.err) best = { threshold: mid, skipRatio: skip, err };
    if (err < 1e-9) break;
    if (skip < target) lo = mid; // raise τ to skip more
    else hi = mid;
  }
  for (const l of routers.layers) routers.thresholds.set(l, best.threshold);
  return { threshold: best.threshold, skipRatio: best.skipRatio };
}

export async function tune(model: CausalLM, options: TuneOptions): Promise<TuneResult> {
  const o = { ...DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) } as typeof DEFAULTS & TuneOptions;
  check(Number.isInteger(o.steps) && o.steps >= 0, `'steps' expected an integer >= 0, received ${o.steps}`);
  check(Number.isInteger(o.batchSize) && o.batchSize >= 1, `'batchSize' expected an integer >= 1, received ${o.batchSize}`);
  check(Number.isInteger(o.gradAccum) && o.gradAccum >= 1, `'gradAccum' expected an integer >= 1, received ${o.gradAccum}`);
  check(Number.isInteger(o.seqLen) && o.seqLen >= 2, `'seqLen' expected an integer >= 2, received ${o.seqLen}`);
  check(o.targetSkip >= 0 && o.targetSkip < 1, `'targetSkip' expected a number in [0, 1), received ${o.targetSkip}`);
  check(o.lambda >= 0 && Number.isFinite(o.lambda), `'lambda' expected a number >= 0, received ${o.lambda}`);
  check(o.lr > 0 && Number.isFinite(o.lr), `'lr' expected a number > 0, received ${o.lr}`);
  check(['global', 'per-layer', 'l1'].includes(o.regularizer), `'regularizer' expected global, per-layer or l1, received ${o.regularizer}`);

  // ---- data
  let examples = o.examples;
  if (!examples) {
    if (!o.data) throw new ArgumentError('tune: no training data: pass `data` (a text file/folder or JSONL) or `examples`');
    if (!model.tokenizer) throw new ArgumentError('tune: the model was loaded without a tokenizer; it is needed to read `data`');
    const eos = model.config.eosTokenIds[0];
    examples = loadExamples(o.data, model.tokenizer, { seqLen: o.seqLen, bosId: model.config.bosTokenId, eosId: eos }).examples;
  }
  let train = examples, val = o.valExamples;
  if (!val) ({ train, val } = splitExamples(examples, { valFraction: o.valFraction, seed: o.seed }));
  if (train.length === 0) throw new RouterTuningError('RT_ERR_DATA', 'tune: no training examples after the validation split');

  // ---- routers, optimiser, stream (fresh or resumed)
  let routers: Routers;
  let startStep = 0;
  let stream: BatchStream;
  const streamOpts = { batchSize: o.batchSize, seed: o.seed, shuffle: true };
  let savedOpt: { tensors: Record<string, Tensor>; step: number } | undefined;
  if (o.resume) {
    routers = loadRouters(o.resume, model);
    const { tensors, metadata } = readAll(o.resume);
    if (!metadata.trainState) {
      dispose(Object.values(tensors));
      routers.dispose();
      throw new RouterTuningError('RT_ERR_FORMAT', `tune: ${o.resume} has no training state to resume from (saved with --steps 0 or by another tool?)`);
    }
    const state = JSON.parse(metadata.trainState) as { step: number; stream: BatchStreamState; optimizerStep: number };
    startStep = state.step;
    stream = BatchStream.restore(train, streamOpts, state.stream);
    savedOpt = { tensors, step: state.optimizerStep };
  } else {
    routers = new Routers(model.config, { granularity: o.granularity, layers: o.layers, threshold: o.threshold, mode: o.mode }, model.device);
    stream = new BatchStream(train, streamOpts);
  }
  // LoRA adapters: fresh, or restored with the routers when resuming
  let lora: LoraSet | undefined;
  if (o.resume) lora = loadLora(o.resume, model);
  else if (o.loraRank) lora = new LoraSet(model, { rank: o.loraRank, alpha: o.loraAlpha, seed: o.seed });
  if (lora) model.lora = lora;
  const grads = new Map<number, Tensor>();
  const params: Param[] = [];
  for (const [l, w] of routers.weights) {
    const g = Tensor.zeros(w.shape, 'float32', w.device).keep(); // on the model's device, with the routers
    grads.set(l, g);
    params.push({ name: `router.${l}.weight`, value: w, grad: g });
  }
  if (lora) params.push(...lora.params());
  const opt = new AdamW(params, { weightDecay: o.weightDecay });
  if (savedOpt) {
    opt.loadState(savedOpt.tensors, savedOpt.step); // host moments → the model's device
    dispose(Object.values(savedOpt.tensors));
  }
  const warmup = o.warmupSteps ?? Math.floor(o.steps * 0.1);
  const regularizer = { lambda: o.lambda, targetSkip: o.targetSkip, kind: o.regularizer };
  const runOptions = { loraRank: o.loraRank ?? 0, granularity: routers.granularity, targetSkip: o.targetSkip, lambda: o.lambda, regularizer: o.regularizer, steps: o.steps, lr: o.lr, batchSize: o.batchSize, gradAccum: o.gradAccum, seqLen: o.seqLen, seed: o.seed };

  const save = (step: number) => {
    if (!o.out) return;
    const trainState = JSON.stringify({ step, stream: stream.state, optimizerStep: opt.stepCount });
    // optimiser moments ride in the same file: one atomic write, one consistent step
    const extra: Record<string, Tensor> = opt.stateTensors();
    if (lora) for (const [name, t] of lora.tensors()) extra[name] = t;
    saveRoutersWithState(o.out, model, routers, extra, { step: String(step), trainState, options: JSON.stringify(runOptions), ...(lora ? { lora: lora.metadata() } : {}) });
  };

  let trainLossSum = 0, trainLossN = 0, tokensSeen = 0;
  const t0 = Date.now();
  let lastVal: number | undefined;
  const endStep = Math.min(o.steps, o.stopAfter ?? Infinity);
  try {
    for (let step = startStep; step < endStep; step++) {
      opt.zeroGrad();
      let loss = 0, ce = 0, exec = 0, total = 0;
      for (let m = 0; m < o.gradAccum; m++) {
        const batch = stream.next();
        const r = forwardBackward(model, batch, { routers, routerGrads: grads, regularizer, lossScale: 1 / o.gradAccum, lora });
        loss += r.loss / o.gradAccum;
        ce += r.ce / o.gradAccum;
        for (const s of r.layers) {
          exec += s.executed;
          total += s.total;
        }
        tokensSeen += batch.mask.reduce((a, b) => a + b, 0);
      }
      const { norm, scale } = clipGradNorm(params, o.maxGradNorm);
      const lr = learningRate(step, { lr: o.lr, warmupSteps: warmup, totalSteps: o.steps, minLrRatio: o.minLrRatio });
      if (Number.isFinite(norm)) opt.step(lr, scale);
      trainLossSum += loss;
      trainLossN++;
      if (o.valEvery > 0 && (step + 1) % o.valEvery === 0 && step + 1 < o.steps) lastVal = evaluateRouted(model, routers, val, o.batchSize, o.maxValBatches).loss;
      if (o.checkpointEvery && (step + 1) % o.checkpointEvery === 0) save(step + 1);
      const elapsed = (Date.now() - t0) / 1000;
      const done = step + 1 - startStep;
      o.onProgress?.({
        step: step + 1,
        steps: o.steps,
        loss,
        ce,
        executedFraction: total ? exec / total : 1,
        lr,
        tokensPerSecond: elapsed > 0 ? tokensSeen / elapsed : 0,
        etaSeconds: done > 0 ? (elapsed / done) * (o.steps - step - 1) : 0,
        valLoss: lastVal,
      });
    }
    let calibrated = false;
    if (o.calibrate && endStep === o.steps && val.length > 0) {
      calibrateThreshold(model, routers, val, o.targetSkip, o.batchSize, o.maxValBatches);
      calibrated = true;
    }
    save(endStep);
    // Attach the trained routers (routers attached before stay owned by their holder).
    model.routers = routers;
    const ev = val.length ? evaluateRouted(model, routers, val, o.batchSize, o.maxValBatches) : { loss: NaN, layers: [] as LayerStats[], tokens: 0 };
    const elapsed = (Date.now() - t0) / 1000;
    return {
      routers: o.out,
      granularity: routers.granularity,
      steps: endStep,
      trainLoss: trainLossN ? trainLossSum / trainLossN : NaN,
      valLoss: ev.loss,
      skipRatio: skipOf(ev.layers),
      layers: routers.layers.map((l) => {
        const s = ev.layers.find((x) => x.layer === l);
        return { layer: l, executedFraction: s && s.total ? s.executed / s.total : 1 };
      }),
      thresholds: Object.fromEntries([...routers.thresholds].map(([l, t]) => [String(l), t])),
      calibrated,
      tokensPerSecond: elapsed > 0 ? tokensSeen / elapsed : 0,
      routerSet: routers,
    };
  } finally {
    opt.dispose();
    dispose([...grads.values()]);
  }
}

function saveRoutersWithState(file: string, model: CausalLM, routers: Routers, state: Record<string, Tensor>, md: Record<string, string>): void {
  saveRouters(file, model, routers, md, new Map(Object.entries(state)));
}
