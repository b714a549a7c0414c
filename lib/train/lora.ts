/**
 * LoRA adapters (the paper's "LoRA + Router-Tuning" row): a rank-r update on chosen
 * linear projections, y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ with s = alpha / r; A [r, in] small random,
 * B [out, r] zero (so a fresh adapter changes nothing). Only A and B are trained; the
 * base weight W stays frozen and never gets a weight-gradient GEMM.
 */
import { ArgumentError } from '../errors';
import * as ops from '../ops';
import { Device, Tensor, dispose } from '../tensor';
import { Rng } from '../util/rng';
import type { CausalLM } from '../model/causal_lm';
import type { LinearWeights } from '../model/weights';
import { SafetensorsFile, readEntry } from '../io/safetensors';
import { RouterTuningError } from '../errors';

export const LORA_TARGETS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

export interface LoraAdapter {
  A: Tensor;
  B: Tensor;
  gA: Tensor;
  gB: Tensor;
}

export interface LoraOptions {
  rank: number;
  /** Scale numerator: s = alpha / rank (default alpha = 2·rank). */
  alpha?: number;
  targets?: LoraTarget[];
  /** Layers that get adapters (default: all). */
  layers?: number[];
  seed?: number;
}

const HF_NAME: Record<LoraTarget, string> = { q: 'self_attn.q_proj', k: 'self_attn.k_proj', v: 'self_attn.v_proj', o: 'self_attn.o_proj', gate: 'mlp.gate_proj', up: 'mlp.up_proj', down: 'mlp.down_proj' };

export class LoraSet {
  readonly adapters = new Map<string, LoraAdapter>();
  readonly scale: number;
  readonly layers: number[];
  readonly targets: LoraTarget[];
  private _device: Device;

  constructor(
    model: CausalLM,
    readonly options: LoraOptions,
  ) {
    const { rank } = options;
    if (!Number.isInteger(rank) || rank < 1) throw new ArgumentError(`lora: 'rank' expected an integer >= 1, received ${rank}`);
    const alpha = options.alpha ?? 2 * rank;
    this.scale = alpha / rank;
    this.targets = options.targets ?? [...LORA_TARGETS];
    for (const t of this.targets) if (!(LORA_TARGETS as readonly string[]).includes(t)) throw new ArgumentError(`lora: unknown target '${t}' (expected ${LORA_TARGETS.join(', ')})`);
    const L = model.config.numLayers;
    this.layers = options.layers ?? [...Array(L).keys()];
    const rng = new Rng(options.seed ?? 0);
    const dev = (this._device = model.device);
    for (const l of this.layers) {
      if (!Number.isInteger(l) || l < 0 || l >= L) throw new ArgumentError(`lora: layer ${l} is out of range [0, ${L})`);
      const lw = model.weights.layers[l];
      for (const t of this.targets) {
        const w = t === 'q' || t === 'k' || t === 'v' || t === 'o' ? lw[t] : lw.mlp?.[t];
        if (!w) continue; // MoE layers have no dense MLP projections
        const [out, inp] = w.weight.shape;
        const a = new Float32Array(rank * inp);
        const std = 1 / Math.sqrt(inp);
        for (let i = 0; i < a.length; i++) a[i] = rng.normal() * std;
        this.adapters.set(`model.layers.${l}.${HF_NAME[t]}`, {
          A: Tensor.from(a, [rank, inp], 'float32', dev).keep(),
          B: Tensor.zeros([out, rank], 'float32', dev).keep(),
          gA: Tensor.zeros([rank, inp], 'float32', dev).keep(),
          gB: Tensor.zeros([out, rank], 'float32', dev).keep(),
        });
      }
    }
    if (this.adapters.size === 0) throw new ArgumentError('lora: no projection matched the requested targets and layers');
  }

  /** Where the adapters live (the model's device when they were made or last moved). */
  get device(): Device {
    return this._device;
  }

  /**
   * Moves every adapter (A, B and their gradients) to `device`, disposing the old copies;
   * all copies are made first, so a failed move changes nothing. Returns this.
   */
  to(device: Device): this {
    if (device === this._device) return this;
    const moved: [LoraAdapter, LoraAdapter][] = [];
    const made: Tensor[] = [];
    const mv = (t: Tensor) => {
      const n = t.to(device).keep();
      made.push(n);
      return n;
    };
    try {
      for (const a of this.adapters.values()) moved.push([a, { A: mv(a.A), B: mv(a.B), gA: mv(a.gA), gB: mv(a.gB) }]);
    } catch (e) {
      dispose(made);
      throw e;
    }
    for (const [a, n] of moved) {
      dispose([a.A, a.B, a.gA, a.gB]);
      Object.assign(a, n);
    }
    this._device = device;
    return this;
  }

  get rank(): number {
    return this.options.rank;
  }

  /** True when layer l holds an adapter. */
  inLayer(l: number): boolean {
    return this.layers.includes(l);
  }

  get firstLayer(): number {
    return Math.min(...this.layers);
  }

  params(): { name: string; value: Tensor; grad: Tensor }[] {
    const out = [];
    for (const [name, a] of this.adapters) out.push({ name: `lora.${name}.A`, value: a.A, grad: a.gA }, { name: `lora.${name}.B`, value: a.B, grad: a.gB });
    return out;
  }

  /** y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ; returns the output and u = x·Aᵀ (kept for backward). */
  forward(name: string, x: Tensor, w: LinearWeights): { y: Tensor; u?: Tensor } {
    const y = ops.linear(x, w.weight, w.bias);
    const a = this.adapters.get(name);
    if (!a) return { y };
    const u = ops.linear(x, a.A);
    const d = ops.linear(u, a.B);
    ops.axpy(y, d, this.scale);
    d.dispose();
    return { y, u };
  }

  /** Accumulates dA, dB; returns the adapter's contribution to dx (always computed). */
  backward(name: string, dy: Tensor, x: Tensor, u: Tensor): Tensor {
    const a = this.adapters.get(name)!;
    const dys = ops.scale(dy, this.scale);
    const { dx: du } = ops.linearBackward(dys, u, a.B, { needInput: true, needWeight: true, needBias: false, weightGradInto: a.gB });
    dys.dispose();
    const { dx } = ops.linearBackward(du!, x, a.A, { needInput: true, needWeight: true, needBias: false, weightGradInto: a.gA });
    du!.dispose();
    return dx!;
  }

  /** Tensors to save: lora.<name>.A / .B. */
  tensors(): Map<string, Tensor> {
    const m = new Map<string, Tensor>();
    for (const [name, a] of this.adapters) {
      m.set(`lora.${name}.A`, a.A);
      m.set(`lora.${name}.B`, a.B);
    }
    return m;
  }

  metadata(): string {
    return JSON.stringify({ rank: this.rank, alpha: this.scale * this.rank, targets: this.targets, layers: this.layers });
  }

  dispose(): void {
    for (const a of this.adapters.values()) dispose([a.A, a.B, a.gA, a.gB]);
    this.adapters.clear();
  }
}

/** The LoRA adapters stored in a router checkpoint (metadata 'lora'), or undefined. */
export function loadLora(file: string, model: CausalLM): LoraSet | undefined {
  const st = SafetensorsFile.open(file);
  if (!st.metadata.lora) return undefined;
  let o: LoraOptions;
  try {
    o = JSON.parse(st.metadata.lora);
  } catch {
    throw new RouterTuningError('RT_ERR_FORMAT', `${file}: metadata 'lora' is not valid JSON`);
  }
  const set = new LoraSet(model, o);
  try {
    for (const [name, a] of set.adapters) {
      for (const [key, t] of [['A', a.A], ['B', a.B]] as const) {
        const e = st.entries.get(`lora.${name}.${key}`);
        if (!e) throw new RouterTuningError('RT_ERR_FORMAT', `${file}: tensor 'lora.${name}.${key}' is missing`);
        if (e.shape.join(',') !== t.shape.join(','))
          throw new RouterTuningError('RT_ERR_FORMAT', `${file}: 'lora.${name}.${key}' has shape [${e.shape.join(', ')}], expected [${t.shape.join(', ')}]`);
        const r = readEntry(e, 'float32');
        t.copyFrom(r); // host → the model's device
        r.dispose();
      }
    }
  } catch (err) {
    set.dispose();
    throw err;
  }
  return set;
}
