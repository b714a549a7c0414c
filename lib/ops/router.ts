/**
 * MindSkip router scoring (DESIGN.md §1): s = σ(w · h) on the layer's normed input,
 * hard gate g = (s ≥ τ), and the ascending list of executed rows — fused in one native
 * pass over h. Token level scores every row; sequence level scores the mean of each
 * sequence's valid tokens. Backward uses the straight-through estimator: pass dL/dg as
 * `dscore`; the kernels compute dz = dscore·s·(1 − s), dw = Σ dz·h, dh = dz·w.
 */
import { callNative } from './dispatch';
import { expectDtype, expectFinite, expectInt, expectRank, expectShape, rowsCols } from './validate';
import { ShapeError } from '../errors';
import { Device, Tensor } from '../tensor';

/** A float32 tensor of zeros, filled natively (no JS-side buffer). */
function nativeZeros(shape: readonly number[], device: Device): Tensor {
  const t = Tensor.empty(shape, 'float32', device);
  if (t.numel > 0) callNative('fill', [t.handle, 0, t.numel]);
  return t;
}

export interface RouterTokenScores {
  /** σ(w · h[t]), shape = h.shape without the last dim. */
  score: Tensor;
  /** 1 where score ≥ threshold, else 0 (same shape as score). */
  gate: Tensor;
  /** int32 [count]: executed rows of h seen as [rows, C], ascending. */
  execIdx: Tensor;
  count: number;
}

export interface RouterSeqScores {
  /** [B, C]: mean of each sequence's valid tokens. */
  pooled: Tensor;
  /** [B] */
  score: Tensor;
  /** [B] */
  gate: Tensor;
  /** int32 [count]: executed sequences, ascending. */
  execIdx: Tensor;
  count: number;
}

export interface RouterBackwardOptions {
  /** Compute dh (default true). */
  needInput?: boolean;
  /** Compute dw (default true). */
  needWeight?: boolean;
  /** Accumulate dw into this [C] tensor instead of a new zeroed one. */
  weightGradInto?: Tensor;
  /** Accumulate dh into this tensor (h's shape) instead of a new zeroed one. */
  inputGradInto?: Tensor;
}

export interface RouterGrads {
  dw?: Tensor;
  dh?: Tensor;
}

/** The first `count` entries of a full-length int32 index tensor, in a right-sized tensor. */
function prefix(full: Tensor, count: number): Tensor {
  const out = Tensor.empty([count], 'int32', full.device);
  if (count > 0) out.copyFrom(full, 0, 0, count);
  return out;
}

function expectRows(op: string, h: Tensor): void {
  if (h.rank < 2) throw new ShapeError(`${op}: 'h' expected shape [..., C] of rank >= 2, received [${h.shape.join(', ')}]`);
}

function gradTensor(op: string, name: string, into: Tensor | undefined, shape: readonly number[], device: Device): Tensor {
  if (!into) return nativeZeros(shape, device);
  expectDtype(op, name, into, 'float32');
  expectShape(op, name, into, shape);
  return into;
}

/**
 * Token-level scoring. h: [..., C] float32 (rows = product of leading dims), w: [C].
 * Returns score/gate over the leading dims and the executed row indices.
 */
export function routerScoreTokens(h: Tensor, w: Tensor, threshold: number): RouterTokenScores {
  const op = 'routerScoreTokens';
  expectDtype(op, 'h', h, 'float32');
  expectDtype(op, 'w', w, 'float32');
  expectRows(op, h);
  const [T, C] = rowsCols(h);
  expectShape(op, 'w', w, [C], '[C]');
  expectFinite(op, 'threshold', threshold);
  const lead = h.shape.slice(0, -1);
  const score = Tensor.empty(lead, 'float32', h.device), gate = Tensor.empty(lead, 'float32', h.device);
  const full = Tensor.empty([T], 'int32', h.device);
  try {
    const count = callNative<number>('router_token_fwd', [score.handle, gate.handle, full.handle, h.handle, w.handle, T, C, threshold]);
    return { score, gate, execIdx: prefix(full, count), count };
  } catch (e) {
    score.dispose();
    gate.dispose();
    throw e;
  } finally {
    full.dispose();
  }
}

/** Backward of routerScoreTokens (dscore = dL/dgate through the STE, shape of score). */
export function routerScoreTokensBackward(dscore: Tensor, score: Tensor, h: Tensor, w: Tensor, opts: RouterBackwardOptions = {}): RouterGrads {
  const op = 'routerScoreTokensBackward';
  expectDtype(op, 'h', h, 'float32');
  expectDtype(op, 'w', w, 'float32');
  expectRows(op, h);
  const [T, C] = rowsCols(h);
  const lead = h.shape.slice(0, -1);
  expectShape(op, 'w', w, [C], '[C]');
  expectDtype(op, 'dscore', dscore, 'float32');
  expectShape(op, 'dscore', dscore, lead);
  expectDtype(op, 'score', score, 'float32');
  expectShape(op, 'score', score, lead);
  const needW = opts.needWeight ?? true, needH = opts.needInput ?? true;
  const dw = needW ? gradTensor(op, 'weightGradInto', opts.weightGradInto, [C], h.device) : undefined;
  const dh = needH ? gradTensor(op, 'inputGradInto', opts.inputGradInto, h.shape, h.device) : undefined;
  callNative('router_token_bwd', [dw?.handle ?? null, dh?.handle ?? null, dscore.handle, score.handle, h.handle, w.handle, T, C]);
  return { dw, dh };
}

/**
 * Sequence-level scoring. h: [B, T, C] float32, w: [C], mask: int32 [B, T] (non-zero =
 * valid token; omitted = all valid). A sequence with no valid token is an error.
 */
export function routerScoreSequences(h: Tensor, w: Tensor, threshold: number, mask?: Tensor): RouterSeqScores {
  const op = 'routerScoreSequences';
  expectDtype(op, 'h', h, 'float32');
  expectDtype(op, 'w', w, 'float32');
  expectRank(op, 'h', h, 3);
  const [B, T, C] = h.shape;
  expectShape(op, 'w', w, [C], '[C]');
  expectFinite(op, 'threshold', threshold);
  if (mask) {
    expectDtype(op, 'mask', mask, 'int32');
    expectShape(op, 'mask', mask, [B, T], '[B, T]');
  }
  const pooled = Tensor.empty([B, C], 'float32', h.device), score = Tensor.empty([B], 'float32', h.device), gate = Tensor.empty([B], 'float32', h.device);
  const full = Tensor.empty([B], 'int32', h.device);
  try {
    const count = callNative<number>('router_seq_fwd', [
      pooled.handle, score.handle, gate.handle, full.handle, h.handle, mask?.handle ?? null, w.handle, B, T, C, threshold,
    ]);
    return { pooled, score, gate, execIdx: prefix(full, count), count };
  } catch (e) {
    for (const t of [pooled, score, gate]) t.dispose();
    throw e;
  } finally {
    full.dispose();
  }
}

/**
 * Backward of routerScoreSequences. dscore, score: [B]; pooled: [B, C] (from the
 * forward); seqLen: T of h (dh is [B, T, C]); dh is dz·w / n_valid on valid tokens.
 */
export function routerScoreSequencesBackward(
  dscore: Tensor,
  score: Tensor,
  pooled: Tensor,
  w: Tensor,
  opts: RouterBackwardOptions & { seqLen: number; mask?: Tensor },
): RouterGrads {
  const op = 'routerScoreSequencesBackward';
  expectDtype(op, 'pooled', pooled, 'float32');
  expectRank(op, 'pooled', pooled, 2);
  const [B, C] = pooled.shape;
  expectDtype(op, 'w', w, 'float32');
  expectShape(op, 'w', w, [C], '[C]');
  expectDtype(op, 'dscore', dscore, 'float32');
  expectShape(op, 'dscore', dscore, [B], '[B]');
  expectDtype(op, 'score', score, 'float32');
  expectShape(op, 'score', score, [B], '[B]');
  expectInt(op, 'seqLen', opts.seqLen, 1);
  const T = opts.seqLen;
  if (opts.mask) {
    expectDtype(op, 'mask', opts.mask, 'int32');
    expectShape(op, 'mask', opts.mask, [B, T], '[B, T]');
  }
  const needW = opts.needWeight ?? true, needH = opts.needInput ?? true;
  const dw = needW ? gradTensor(op, 'weightGradInto', opts.weightGradInto, [C], pooled.device) : undefined;
  const dh = needH ? gradTensor(op, 'inputGradInto', opts.inputGradInto, [B, T, C], pooled.device) : undefined;
  callNative('router_seq_bwd', [dw?.handle ?? null, dh?.handle ?? null, dscore.handle, score.handle, pooled.handle, opts.mask?.handle ?? null, w.handle, B, T, C]);
  return { dw, dh };
}
