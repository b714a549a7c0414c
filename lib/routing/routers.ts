/**
 * MindSkip routers (DESIGN.md §1): one bias-free linear map per routed layer on the
 * layer's normed input, s = σ(w·h), executed iff s ≥ τ. Zero-initialised, so every
 * layer starts executed (σ(0) = 0.5 ≥ τ = 0.5).
 *
 * Granularities:
 *   attn-seq / mlp-seq / block-seq   one decision per sequence from w·mean_t(h_t)
 *   attn-token / mlp-token / block-token / moe-token   one decision per token
 *   expert   a Linear(C, E) per MoE layer: σ(w_e·h) gates each top-k assignment to expert e
 * Router inputs: attn and block routers read input_layernorm(x); mlp, moe and expert
 * routers read post_attention_layernorm(x1).
 */
import { ArgumentError } from '../errors';
import { Device, Tensor, dispose } from '../tensor';
import { ModelConfig, isMoeLayer } from '../model/config';

export const GRANULARITIES = ['attn-seq', 'attn-token', 'mlp-seq', 'mlp-token', 'block-seq', 'block-token', 'moe-token', 'expert'] as const;
export type Granularity = (typeof GRANULARITIES)[number];
export type AttentionMode = 'mod' | 'keep-kv';

export interface RouterOptions {
  granularity: Granularity;
  /** Routed layers; default: the deepest ⌊L/2⌋ layers except the last (MoE layers only for moe-token/expert). */
  layers?: number[];
  /** Decision threshold τ (default 0.5); per-layer thresholds come from calibration. */
  threshold?: number;
  /** Token-level attention semantics (default 'mod'). */
  mode?: AttentionMode;
}

export function routerTarget(g: Granularity): 'attn' | 'mlp' | 'block' | 'moe' | 'expert' {
  return g === 'expert' ? 'expert' : (g.split('-')[0] as 'attn' | 'mlp' | 'block' | 'moe');
}

export function routerLevel(g: Granularity): 'seq' | 'token' {
  return g.endsWith('-seq') ? 'seq' : 'token';
}

/** Default placement: layers L−n−1 … L−2 with n = ⌊L/2⌋ (restricted to MoE layers for moe-token/expert). */
export function defaultLayers(cfg: ModelConfig, g: Granularity): number[] {
  const L = cfg.numLayers;
  const n = Math.floor(L / 2);
  const out: number[] = [];
  for (let l = Math.max(0, L - n - 1); l <= L - 2; l++) out.push(l);
  if (g === 'moe-token' || g === 'expert') return out.filter((l) => isMoeLayer(cfg, l));
  return out;
}

export class Routers {
  readonly granularity: Granularity;
  readonly layers: number[];
  readonly mode: AttentionMode;
  /** Per routed layer: w [C] (or [E, C] for expert routers), float32, trainable. */
  readonly weights = new Map<number, Tensor>();
  /** Per-layer threshold (τ unless calibrated). */
  readonly thresholds = new Map<number, number>();
  /** Extra metadata carried into checkpoints (step, options, fingerprint). */
  metadata: Record<string, string> = {};

  /** Where the router weights live (the model's device: attachRouters/loadRouters/tune place them there). */
  private _device: Device;

  constructor(
    readonly config: ModelConfig,
    opts: RouterOptions,
    device: Device = 'cpu',
  ) {
    if (device !== 'cpu' && device !== 'cuda') throw new ArgumentError(`attachRouters: unknown device ${JSON.stringify(device)}, expected 'cpu' or 'cuda'`);
    this._device = device;
    if (!(GRANULARITIES as readonly string[]).includes(opts.granularity))
      throw new ArgumentError(`attachRouters: 'granularity' expected one of ${GRANULARITIES.join(', ')}, received '${opts.granularity}'`);
    this.granularity = opts.granularity;
    const threshold = opts.threshold ?? 0.5;
    if (!(threshold > 0 && threshold < 1)) throw new ArgumentError(`attachRouters: 'threshold' expected a number in (0, 1), received ${threshold}`);
    const mode = opts.mode ?? 'mod';
    if (mode !== 'mod' && mode !== 'keep-kv') throw new ArgumentError(`attachRouters: 'mode' expected 'mod' or 'keep-kv', received '${mode}'`);
    this.mode = mode;
    const target = routerTarget(this.granularity);
    if ((target === 'moe' || target === 'expert') && !config.moe)
      throw new ArgumentError(`attachRouters: granularity '${this.granularity}' needs a mixture-of-experts model; ${config.family} is dense`);
    const layers = opts.layers ? [...new Set(opts.layers)].sort((a, b) => a - b) : defaultLayers(config, this.granularity);
    for (const l of layers) {
      if (!Number.isInteger(l) || l < 0 || l >= config.numLayers)
        throw new ArgumentError(`attachRouters: layer ${l} is out of range [0, ${config.numLayers})`);
      if ((target === 'moe' || target === 'expert') && !isMoeLayer(config, l))
        throw new ArgumentError(`attachRouters: layer ${l} is not a mixture-of-experts layer (granularity '${this.granularity}')`);
    }
    if (layers.length === 0) throw new ArgumentError(`attachRouters: no layer to route (granularity '${this.granularity}')`);
    this.layers = layers;
    const C = config.hiddenSize;
    for (const l of layers) {
      const shape = target === 'expert' ? [config.moe!.numExperts, C] : [C];
      this.weights.set(l, Tensor.zeros(shape, 'float32', device).keep());
      this.thresholds.set(l, threshold);
    }
  }

  get device(): Device {
    return this._device;
  }

  /**
   * Moves every router weight to `device` (the old copies are disposed) and returns this.
   * All copies are made before any old one is freed, so a failed move changes nothing.
   */
  to(device: Device): this {
    if (device === this._device) return this;
    const moved = new Map<number, Tensor>();
    try {
      for (const [l, w] of this.weights) moved.set(l, w.to(device).keep());
    } catch (e) {
      dispose([...moved.values()]);
      throw e;
    }
    for (const [l, w] of moved) {
      this.weights.get(l)!.dispose();
      this.weights.set(l, w);
    }
    this._device = device;
    return this;
  }

  get target() {
    return routerTarget(this.granularity);
  }

  get level() {
    return routerLevel(this.granularity);
  }

  has(layer: number): boolean {
    return this.weights.has(layer);
  }

  weight(layer: number): Tensor {
    const w = this.weights.get(layer);
    if (!w) throw new ArgumentError(`routers: layer ${layer} has no router`);
    return w;
  }

  dispose(): void {
    dispose([...this.weights.values()]);
    this.weights.clear();
  }
}
