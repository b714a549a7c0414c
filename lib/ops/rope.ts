/**
 * Rotary position embedding, Hugging Face "rotate half" convention:
 *   angle[t, i] = pos[t] * invFreq[i]  (i < D/2)
 *   y[:D/2] = x1·cos − x2·sin,  y[D/2:] = x2·cos + x1·sin  (times attnScale)
 * `ropeParameters` / `ropeInvFreq` build invFreq for the RoPE variants of HF configs
 * (`default`, `linear`, `llama3`), following transformers' modeling_rope_utils
 * (`_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
 * `_compute_llama3_parameters`) step by step in float32, as PyTorch evaluates them.
 * The kernel computes each angle exactly (double) rather than in float32 as HF does;
 * see csrc/cpu/rope.cc for the precision note.
 */
import { callNative } from './dispatch';
import { expectDtype, expectFinite, expectInt, expectShape } from './validate';
import { ArgumentError, ShapeError } from '../errors';
import { Tensor } from '../tensor';

/**
 * A `rope_scaling` (transformers 4.x) / `rope_parameters` (5.x) object. Both the HF
 * snake_case keys and camelCase spellings are accepted.
 */
export interface RopeScaling {
  rope_type?: string;
  type?: string; // old HF spelling of rope_type
  ropeType?: string;
  factor?: number;
  low_freq_factor?: number;
  lowFreqFactor?: number;
  high_freq_factor?: number;
  highFreqFactor?: number;
  original_max_position_embeddings?: number;
  originalMaxPositionEmbeddings?: number;
}

const f32 = Math.fround;

function scalingNumber(scaling: RopeScaling, snake: keyof RopeScaling, camel: keyof RopeScaling, type: string): number {
  const v = (scaling[snake] ?? scaling[camel]) as number | undefined;
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new ArgumentError(`ropeInvFreq: rope scaling '${type}' expected a finite number for '${snake}', received ${v}`);
  return v;
}

/**
 * invFreq [D/2] and the cos/sin scale (HF's attention_scaling; 1 for these variants)
 * for head dim D (even), base theta and an optional HF rope scaling object
 * (rope_type 'default' | 'linear' | 'llama3').
 */
export function ropeParameters(
  headDim: number,
  theta: number,
  scaling?: RopeScaling | null,
): { invFreq: Float32Array; attentionScaling: number } {
  const op = 'ropeInvFreq';
  expectInt(op, 'headDim', headDim, 2);
  if (headDim % 2 !== 0) throw new ArgumentError(`${op}: 'headDim' expected an even integer, received ${headDim}`);
  expectFinite(op, 'theta', theta);
  if (theta <= 0) throw new ArgumentError(`${op}: 'theta' expected a number > 0, received ${theta}`);
  const half = headDim / 2;
  // _compute_default_rope_parameters:
  //   1.0 / (base ** (torch.arange(0, dim, 2, dtype=int64).float() / dim)), all float32
  //   (`1.0 / t` is t.reciprocal() * 1.0; base and dim become float32 scalars).
  const base = f32(theta);
  const invFreq = new Float32Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = f32(1 / f32(Math.pow(base, f32((2 * i) / headDim))));
  const type = scaling ? (scaling.rope_type ?? scaling.ropeType ?? scaling.type ?? 'default') : 'default';
  if (type === 'default') return { invFreq, attentionScaling: 1 };
  if (type === 'linear') {
    const factor = f32(scalingNumber(scaling!, 'factor', 'factor', type));
    for (let i = 0; i < half; i++) invFreq[i] = f32(invFreq[i] / factor);
    return { invFreq, attentionScaling: 1 };
  }
  if (type === 'llama3') {
    const s = scaling!;
    const factor = scalingNumber(s, 'factor', 'factor', type);
    const low = scalingNumber(s, 'low_freq_factor', 'lowFreqFactor', type);
    const high = scalingNumber(s, 'high_freq_factor', 'highFreqFactor', type);
    const oldCtx = scalingNumber(s, 'original_max_position_embeddings', 'originalMaxPositionEmbeddings', type);
    if (!(high > low)) throw new ArgumentError(`${op}: rope scaling 'llama3' expected high_freq_factor > low_freq_factor, received ${high} and ${low}`);
    if (!(factor > 0) || !(low > 0) || !(oldCtx > 0))
      throw new ArgumentError(`${op}: rope scaling 'llama3' expected factor, low_freq_factor and original_max_position_embeddings > 0, received ${factor}, ${low}, ${oldCtx}`);
    // _compute_llama3_parameters, in PyTorch's float32 evaluation order:
    //   low_freq_wavelen = old/low ; high_freq_wavelen = old/high       (python floats)
    //   wavelen = 2π / inv_freq                                          (reciprocal · 2π)
    //   inv_freq_llama = where(wavelen > low_wl, inv_freq / factor, inv_freq)
    //   smooth = (old / wavelen − low) / (high − low)
    //   smoothed = (1 − smooth) · inv_freq_llama / factor + smooth · inv_freq_llama
    //   medium = !(wavelen < high_wl) & !(wavelen > low_wl) → smoothed
    const lowWl = f32(oldCtx / low);
    const highWl = f32(oldCtx / high);
    const twoPi = f32(2 * Math.PI);
    const factorF = f32(factor), oldF = f32(oldCtx), lowF = f32(low), spanF = f32(high - low);
    for (let i = 0; i < half; i++) {
      const f = invFreq[i];
      const wavelen = f32(f32(1 / f) * twoPi);
      let g = wavelen > lowWl ? f32(f / factorF) : f;
      const smooth = f32(f32(f32(f32(1 / wavelen) * oldF) - lowF) / spanF);
      const smoothed = f32(f32(f32(f32(1 - smooth) * g) / factorF) + f32(smooth * g));
      if (!(wavelen < highWl) && !(wavelen > lowWl)) g = smoothed;
      invFreq[i] = g;
    }
    return { invFreq, attentionScaling: 1 };
  }
  throw new ArgumentError(`${op}: rope scaling type expected 'default', 'linear' or 'llama3', received '${type}'`);
}

/** invFreq [D/2] as HF computes it (see ropeParameters; attention scaling is 1 for these variants). */
export function ropeInvFreq(headDim: number, theta: number, scaling?: RopeScaling | null): Float32Array {
  return ropeParameters(headDim, theta, scaling).invFreq;
}

export interface RopeOptions {
  /** cos/sin multiplier (HF's attention_scaling), default 1 */
  attnScale?: number;
  /** write the result into the input tensor and return it (default false) */
  inPlace?: boolean;
}

function ropeCall(op: string, kernel: 'rope_fwd' | 'rope_bwd', x: Tensor, pos: Tensor, invFreq: Tensor, opts: RopeOptions, xName: string): Tensor {
  expectDtype(op, xName, x, 'float32');
  expectDtype(op, 'pos', pos, 'int32');
  expectDtype(op, 'invFreq', invFreq, 'float32');
  if (x.rank !== 3 && x.rank !== 4)
    throw new ShapeError(`${op}: '${xName}' expected shape [T, H, D] or [B, T, H, D], received [${x.shape.join(', ')}]`);
  const D = x.shape[x.rank - 1], H = x.shape[x.rank - 2];
  if (D % 2 !== 0) throw new ShapeError(`${op}: '${xName}' expected an even head dim D, received [${x.shape.join(', ')}]`);
  const lead = x.shape.slice(0, -2);
  expectShape(op, 'pos', pos, lead, x.rank === 3 ? '[T]' : '[B, T]');
  expectShape(op, 'invFreq', invFreq, [D / 2], '[D/2]');
  const attnScale = opts.attnScale ?? 1;
  expectFinite(op, 'attnScale', attnScale);
  const out = opts.inPlace ? x : Tensor.empty(x.shape, 'float32', x.device);
  try {
    callNative(kernel, [out.handle, x.handle, pos.handle, invFreq.handle, attnScale, pos.numel, H, D]);
  } catch (e) {
    if (!opts.inPlace) out.dispose(); // a negative position
    throw e;
  }
  return out;
}

/**
 * Applies RoPE. x [T, H, D] with pos int32 [T], or x [B, T, H, D] with pos int32 [B, T]
 * (positions >= 0, arbitrary: gaps and repeats allowed); invFreq float32 [D/2]
 * → a new tensor shaped like x, or x itself with { inPlace: true }.
 */
export function rope(x: Tensor, pos: Tensor, invFreq: Tensor, opts: RopeOptions = {}): Tensor {
  return ropeCall('rope', 'rope_fwd', x, pos, invFreq, opts, 'x');
}

/**
 * Backward of `rope` (the inverse rotation, times attnScale): dout shaped like x
 * → dx (a new tensor, or dout itself with { inPlace: true }).
 */
export function ropeBackward(dout: Tensor, pos: Tensor, invFreq: Tensor, opts: RopeOptions = {}): Tensor {
  return ropeCall('ropeBackward', 'rope_bwd', dout, pos, invFreq, opts, 'dout');
}
