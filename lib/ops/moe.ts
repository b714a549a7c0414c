/**
 * Mixture of experts as explicit index tensors (DESIGN.md §1, `moe` / `expert` routing).
 *
 *   moeRoute    logits [T, E] → probs = softmax, top-K experts per token (ties → lower
 *               id) and their weights (renormalised over the K when `renorm`)
 *   moeSort     top-K ids [T, K] (−1 = dropped assignment) → stable counting sort by
 *               expert: perm [T·K] (sorted row → assignment a = t·K + j), invPerm
 *               [T, K] (assignment → sorted row, −1 dropped), bounds [E + 1], live = A
 *   moeExperts  grouped SwiGLU over the A sorted rows: y[p] = Wd[e](silu(Wg[e]x)⊙(Wu[e]x))
 *   moeCombine  out[t] = Σ_j topkW[t, j] · y[invPerm[t, j]]
 *
 * moeForward / moeBackward compose them; every primitive has its backward. Expert
 * weights: gate [E, I, C], up [E, I, C], down [E, C, I], float32 or bfloat16 (all three
 * the same); gradients are float32.
 */
import { callNative } from './dispatch';
import { expectDtype, expectInt, expectRank, expectShape } from './validate';
import { DTypeError } from '../errors';
import { Device, Tensor, dispose } from '../tensor';

/** A float32 tensor of zeros, filled natively (no JS-side buffer). */
function nativeZeros(shape: readonly number[], device: Device): Tensor {
  const t = Tensor.empty(shape, 'float32', device);
  if (t.numel > 0) callNative('fill', [t.handle, 0, t.numel]);
  return t;
}

export interface MoeExpertWeights {
  /** [E, I, C] */
  gate: Tensor;
  /** [E, I, C] */
  up: Tensor;
  /** [E, C, I] */
  down: Tensor;
}

export interface MoeRouting {
  /** [T, E] softmax of the gate logits. */
  probs: Tensor;
  /** int32 [T, K] selected experts, by decreasing probability. */
  topkIdx: Tensor;
  /** [T, K] their combine weights. */
  topkW: Tensor;
}

export interface MoeSorted {
  /** int32 [T·K]: sorted row p → assignment a = t·K + j (entries ≥ live are −1). */
  perm: Tensor;
  /** int32 [T, K]: assignment → sorted row (−1 for a dropped assignment). */
  invPerm: Tensor;
  /** int32 [E + 1]: expert e owns sorted rows bounds[e] .. bounds[e+1]. */
  bounds: Tensor;
  /** A: number of live assignments. */
  live: number;
  numExperts: number;
  topK: number;
}

export interface MoeExpertsResult {
  /** [A, C] expert outputs, in sorted order. */
  y: Tensor;
  /** [A, I] gate pre-activations (saved for backward). */
  actGate?: Tensor;
  /** [A, I] up pre-activations (saved for backward). */
  actUp?: Tensor;
}

export interface MoeExpertGrads {
  dx?: Tensor;
  dwGate?: Tensor;
  dwUp?: Tensor;
  dwDown?: Tensor;
}

function expertDims(op: string, experts: MoeExpertWeights): { E: number; I: number; C: number; dtype: string } {
  const { gate, up, down } = experts;
  expectDtype(op, 'experts.gate', gate, ['float32', 'bfloat16']);
  expectRank(op, 'experts.gate', gate, 3);
  const [E, I, C] = gate.shape;
  expectShape(op, 'experts.up', up, [E, I, C], '[E, I, C]');
  expectShape(op, 'experts.down', down, [E, C, I], '[E, C, I]');
  for (const [name, t] of [['experts.up', up], ['experts.down', down]] as const)
    if (t.dtype !== gate.dtype) throw new DTypeError(`${op}: '${name}' expected dtype ${gate.dtype} (the dtype of 'experts.gate'), received ${t.dtype}`);
  return { E, I, C, dtype: gate.dtype };
}

function expectSorted(op: string, sorted: MoeSorted, T: number, E: number): void {
  const K = sorted.topK;
  expectInt(op, 'sorted.topK', K, 1, E);
  expectDtype(op, 'sorted.perm', sorted.perm, 'int32');
  expectShape(op, 'sorted.perm', sorted.perm, [T * K], '[T*K]');
  expectDtype(op, 'sorted.invPerm', sorted.invPerm, 'int32');
  expectShape(op, 'sorted.invPerm', sorted.invPerm, [T, K], '[T, K]');
  expectDtype(op, 'sorted.bounds', sorted.bounds, 'int32');
  expectShape(op, 'sorted.bounds', sorted.bounds, [E + 1], '[E + 1]');
  expectInt(op, 'sorted.live', sorted.live, 0, T * K);
}

function zerosOr(want: boolean, shape: readonly number[], device: Device): Tensor | undefined {
  return want ? nativeZeros(shape, device) : undefined;
}

/** Softmax + top-K over gate logits [T, E]. */
export function moeRoute(logits: Tensor, opts: { topK: number; renorm: boolean }): MoeRouting {
  const op = 'moeRoute';
  expectDtype(op, 'logits', logits, 'float32');
  expectRank(op, 'logits', logits, 2);
  const [T, E] = logits.shape;
  expectInt(op, 'topK', opts.topK, 1, Math.max(1, E));
  const K = opts.topK;
  const probs = Tensor.empty([T, E], 'float32', logits.device), topkIdx = Tensor.empty([T, K], 'int32', logits.device), topkW = Tensor.empty([T, K], 'float32', logits.device);
  try {
    callNative('moe_route_fwd', [probs.handle, topkIdx.handle, topkW.handle, logits.handle, T, E, K, opts.renorm]);
  } catch (e) {
    dispose([probs, topkIdx, topkW]);
    throw e;
  }
  return { probs, topkIdx, topkW };
}

/** Backward of moeRoute: dlogits [T, E] from dtopkW [T, K] (topkIdx: the route's ids, before any drop). */
export function moeRouteBackward(dtopkW: Tensor, probs: Tensor, topkIdx: Tensor, opts: { renorm: boolean }): Tensor {
  const op = 'moeRouteBackward';
  expectDtype(op, 'probs', probs, 'float32');
  expectRank(op, 'probs', probs, 2);
  const [T, E] = probs.shape;
  expectDtype(op, 'topkIdx', topkIdx, 'int32');
  expectShape(op, 'topkIdx', topkIdx, [T, -1], '[T, K]');
  const K = topkIdx.shape[1];
  expectInt(op, 'topK', K, 1, Math.max(1, E));
  expectDtype(op, 'dtopkW', dtopkW, 'float32');
  expectShape(op, 'dtopkW', dtopkW, [T, K], '[T, K]');
  const dlogits = Tensor.empty([T, E], 'float32', dtopkW.device);
  try {
    callNative('moe_route_bwd', [dlogits.handle, dtopkW.handle, probs.handle, topkIdx.handle, T, E, K, opts.renorm]);
  } catch (e) {
    dlogits.dispose();
    throw e;
  }
  return dlogits;
}

/** Stable counting sort of the assignments in topkIdx [T, K] (−1 = dropped) by expert. */
export function moeSort(topkIdx: Tensor, numExperts: number): MoeSorted {
  const op = 'moeSort';
  expectDtype(op, 'topkIdx', topkIdx, 'int32');
  expectRank(op, 'topkIdx', topkIdx, 2);
  const [T, K] = topkIdx.shape;
  expectInt(op, 'numExperts', numExperts, Math.max(1, K));
  const E = numExperts;
  const perm = Tensor.empty([T * K], 'int32', topkIdx.device), invPerm = Tensor.empty([T, K], 'int32', topkIdx.device), bounds = Tensor.empty([E + 1], 'int32', topkIdx.device);
  try {
    const live = callNative<number>('moe_sort', [perm.handle, invPerm.handle, bounds.handle, topkIdx.handle, T, E, K]);
    return { perm, invPerm, bounds, live, numExperts: E, topK: K };
  } catch (e) {
    dispose([perm, invPerm, bounds]);
    throw e;
  }
}

/**
 * Grouped expert SwiGLU over the sorted rows. x: [T, C]; returns y [A, C] (sorted
 * order) and, unless saveActivations is false, the gate/up pre-activations [A, I].
 */
export function moeExperts(x: Tensor, sorted: MoeSorted, experts: MoeExpertWeights, opts: { saveActivations?: boolean } = {}): MoeExpertsResult {
  const op = 'moeExperts';
  const { E, I, C } = expertDims(op, experts);
  expectDtype(op, 'x', x, 'float32');
  expectShape(op, 'x', x, [-1, C], '[T, C]');
  const T = x.shape[0];
  expectSorted(op, sorted, T, E);
  const A = sorted.live, K = sorted.topK;
  const save = opts.saveActivations ?? true;
  const y = Tensor.empty([A, C], 'float32', x.device);
  const actGate = save ? Tensor.empty([A, I], 'float32', x.device) : undefined, actUp = save ? Tensor.empty([A, I], 'float32', x.device) : undefined;
  try {
    callNative('moe_experts_fwd', [
      y.handle, actGate?.handle ?? null, actUp?.handle ?? null, x.handle, sorted.perm.handle, sorted.bounds.handle,
      experts.gate.handle, experts.up.handle, experts.down.handle, T, E, K, C, I,
    ]);
  } catch (e) {
    dispose([y, actGate, actUp]);
    throw e;
  }
  return { y, actGate, actUp };
}

/**
 * Backward of moeExperts. dy: [A, C]; actGate/actUp from the forward. dx [T, C] when
 * needInput (default true); dwGate/dwUp/dwDown (float32, expert weight shapes) only when
 * needWeights (default false) — router-only training never runs a weight-gradient GEMM.
 */
export function moeExpertsBackward(
  dy: Tensor,
  x: Tensor,
  sorted: MoeSorted,
  experts: MoeExpertWeights,
  acts: { actGate: Tensor; actUp: Tensor },
  opts: { needInput?: boolean; needWeights?: boolean } = {},
): MoeExpertGrads {
  const op = 'moeExpertsBackward';
  const { E, I, C } = expertDims(op, experts);
  expectDtype(op, 'x', x, 'float32');
  expectShape(op, 'x', x, [-1, C], '[T, C]');
  const T = x.shape[0];
  expectSorted(op, sorted, T, E);
  const A = sorted.live, K = sorted.topK;
  expectDtype(op, 'dy', dy, 'float32');
  expectShape(op, 'dy', dy, [A, C], '[A, C]');
  expectDtype(op, 'actGate', acts.actGate, 'float32');
  expectShape(op, 'actGate', acts.actGate, [A, I], '[A, I]');
  expectDtype(op, 'actUp', acts.actUp, 'float32');
  expectShape(op, 'actUp', acts.actUp, [A, I], '[A, I]');
  const needW = opts.needWeights ?? false;
  const dx = zerosOr(opts.needInput ?? true, [T, C], dy.device);
  const dwGate = zerosOr(needW, [E, I, C], dy.device), dwUp = zerosOr(needW, [E, I, C], dy.device), dwDown = zerosOr(needW, [E, C, I], dy.device);
  try {
    callNative(
      'moe_experts_bwd',
      [
        dx?.handle ?? null, dwGate?.handle ?? null, dwUp?.handle ?? null, dwDown?.handle ?? null, dy.handle, x.handle,
        sorted.perm.handle, sorted.bounds.handle, experts.gate.handle, experts.up.handle, experts.down.handle,
        acts.actGate.handle, acts.actUp.handle, T, E, K, C, I,
      ],
      needW ? 'weight-grad' : undefined,
    );
  } catch (e) {
    dispose([dx, dwGate, dwUp, dwDown]);
    throw e;
  }
  return { dx, dwGate, dwUp, dwDown };
}

/** out [T, C] = Σ_j topkW[t, j] · y[invPerm[t, j]] over live assignments. y: [A, C]. */
export function moeCombine(y: Tensor, invPerm: Tensor, topkW: Tensor): Tensor {
  const op = 'moeCombine';
  expectDtype(op, 'y', y, 'float32');
  expectRank(op, 'y', y, 2);
  const [A, C] = y.shape;
  expectDtype(op, 'invPerm', invPerm, 'int32');
  expectRank(op, 'invPerm', invPerm, 2);
  const [T, K] = invPerm.shape;
  expectInt(op, 'topK', K, 1);
  expectDtype(op, 'topkW', topkW, 'float32');
  expectShape(op, 'topkW', topkW, [T, K], '[T, K]');
  const out = Tensor.empty([T, C], 'float32', topkW.device);
  try {
    callNative('moe_combine_fwd', [out.handle, y.handle, invPerm.handle, topkW.handle, T, K, C, A]);
  } catch (e) {
    out.dispose();
    throw e;
  }
  return out;
}

/** Backward of moeCombine: dy [A, C] (needY) and dtopkW [T, K] (needWeights; 0 for dropped). */
export function moeCombineBackward(
  dout: Tensor,
  y: Tensor,
  invPerm: Tensor,
  topkW: Tensor,
  opts: { needY?: boolean; needWeights?: boolean } = {},
): { dy?: Tensor; dtopkW?: Tensor } {
  const op = 'moeCombineBackward';
  expectDtype(op, 'y', y, 'float32');
  expectRank(op, 'y', y, 2);
  const [A, C] = y.shape;
  expectDtype(op, 'invPerm', invPerm, 'int32');
  expectRank(op, 'invPerm', invPerm, 2);
  const [T, K] = invPerm.shape;
  expectInt(op, 'topK', K, 1);
  expectDtype(op, 'topkW', topkW, 'float32');
  expectShape(op, 'topkW', topkW, [T, K], '[T, K]');
  expectDtype(op, 'dout', dout, 'float32');
  expectShape(op, 'dout', dout, [T, C], '[T, C]');
  const dy = (opts.needY ?? true) ? Tensor.empty([A, C], 'float32', topkW.device) : undefined;
  const dtopkW = (opts.needWeights ?? true) ? Tensor.empty([T, K], 'float32', topkW.device) : undefined;
  try {
    callNative('moe_combine_bwd', [dy?.handle ?? null, dtopkW?.handle ?? null, dout.handle, y.handle, invPerm.handle, topkW.handle, T, K, C, A]);
  } catch (e) {
    dispose([dy, dtopkW]);
    throw e;
  }
  return { dy, dtopkW };
}

/**
 * What moeBackward needs from moeForward. `dispose(cache)` frees the saved
 * intermediates; the input and expert weights it refers to (in `inputs`, a class
 * instance that dispose/tidy do not descend into) are the caller's and stay alive.
 */
export interface MoeCache {
  routing: MoeRouting;
  sorted: MoeSorted;
  y: Tensor;
  actGate: Tensor;
  actUp: Tensor;
  renorm: boolean;
  inputs: MoeCacheInputs;
}

export class MoeCacheInputs {
  constructor(
    readonly x: Tensor,
    readonly experts: MoeExpertWeights,
  ) {}
}

/** Assignment ids with the masked ones (dropMask int32 [T, K], non-zero = drop) set to −1. */
function applyDropMask(op: string, topkIdx: Tensor, dropMask: Tensor): Tensor {
  expectDtype(op, 'dropMask', dropMask, 'int32');
  expectShape(op, 'dropMask', dropMask, topkIdx.shape, '[T, K]');
  const ids = topkIdx.toInt32Array(), drop = dropMask.toInt32Array();
  for (let i = 0; i < ids.length; i++) if (drop[i] !== 0) ids[i] = -1;
  return Tensor.from(ids, topkIdx.shape, 'int32', topkIdx.device);
}

/**
 * MoE block forward. x: [T, C]; gateLogits: [T, E] (the gate Linear's output);
 * experts: weights as in MoeExpertWeights. dropMask (int32 [T, K], non-zero = drop)
 * removes single top-K assignments (the `expert` router's skips): they cost no compute
 * and contribute nothing (no renormalisation over the survivors).
 * Returns out [T, C] and the cache for moeBackward.
 */
export function moeForward(
  x: Tensor,
  gateLogits: Tensor,
  experts: MoeExpertWeights,
  opts: { topK: number; renorm: boolean; dropMask?: Tensor },
): { out: Tensor; cache: MoeCache } {
  const op = 'moeForward';
  const { E, C } = expertDims(op, experts);
  expectDtype(op, 'x', x, 'float32');
  expectShape(op, 'x', x, [-1, C], '[T, C]');
  const T = x.shape[0];
  expectDtype(op, 'gateLogits', gateLogits, 'float32');
  expectShape(op, 'gateLogits', gateLogits, [T, E], '[T, E]');
  expectInt(op, 'topK', opts.topK, 1, E);
  const made: Tensor[] = [];
  try {
    const routing = moeRoute(gateLogits, { topK: opts.topK, renorm: opts.renorm });
    made.push(routing.probs, routing.topkIdx, routing.topkW);
    const assign = opts.dropMask ? applyDropMask(op, routing.topkIdx, opts.dropMask) : routing.topkIdx;
    let sorted: MoeSorted;
    try {
      sorted = moeSort(assign, E);
    } finally {
      if (assign !== routing.topkIdx) assign.dispose();
    }
    made.push(sorted.perm, sorted.invPerm, sorted.bounds);
    const { y, actGate, actUp } = moeExperts(x, sorted, experts, { saveActivations: true });
    made.push(y, actGate!, actUp!);
    const out = moeCombine(y, sorted.invPerm, routing.topkW);
    return { out, cache: { routing, sorted, y, actGate: actGate!, actUp: actUp!, renorm: opts.renorm, inputs: new MoeCacheInputs(x, experts) } };
  } catch (e) {
    dispose(made);
    throw e;
  }
}

/**
 * MoE block backward from dout [T, C]: dgateLogits [T, E] always; dx [T, C] (the expert
 * path's part; the gate Linear's input gradient is the caller's) when needInput
 * (default true); expert weight gradients when needWeights (default false).
 */
export function moeBackward(
  dout: Tensor,
  cache: MoeCache,
  opts: { needInput?: boolean; needWeights?: boolean } = {},
): { dx?: Tensor; dgateLogits: Tensor; dwGate?: Tensor; dwUp?: Tensor; dwDown?: Tensor } {
  const op = 'moeBackward';
  const { x, experts } = cache.inputs;
  const needInput = opts.needInput ?? true, needWeights = opts.needWeights ?? false;
  expectDtype(op, 'dout', dout, 'float32');
  expectShape(op, 'dout', dout, x.shape, '[T, C]');
  const needExperts = needInput || needWeights;
  const { dy, dtopkW } = moeCombineBackward(dout, cache.y, cache.sorted.invPerm, cache.routing.topkW, { needY: needExperts, needWeights: true });
  try {
    const grads: MoeExpertGrads = needExperts
      ? moeExpertsBackward(dy!, x, cache.sorted, experts, { actGate: cache.actGate, actUp: cache.actUp }, { needInput, needWeights })
      : {};
    try {
      const dgateLogits = moeRouteBackward(dtopkW!, cache.routing.probs, cache.routing.topkIdx, { renorm: cache.renorm });
      return { dx: grads.dx, dgateLogits, dwGate: grads.dwGate, dwUp: grads.dwUp, dwDown: grads.dwDown };
    } catch (e) {
      dispose(grads);
      throw e;
    }
  } finally {
    dispose([dy, dtopkW]);
  }
}
