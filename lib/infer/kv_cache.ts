/**
 * The KV cache of dynamic-depth inference. Each layer keeps its own cache with a row per
 * sequence that runs the layer and a slot per token that wrote K/V there:
 *   - a layer a sequence skips (seq-level routing, decided at prefill) has no row for it;
 *   - a token a layer skips in `mod` mode has no slot there;
 *   - padding has no slot anywhere.
 * Slots are allocated exactly at prefill and grown in blocks of GROW_SLOTS while
 * decoding, so `bytes` is what is really allocated; `unroutedBytes` is what the same
 * tokens would take in a cache without routing.
 */
import { ArgumentError } from '../errors';
import { Device, Tensor, dispose } from '../tensor';
import { zerosOn } from './device';
import type { ModelConfig } from '../model/config';

const GROW_SLOTS = 32;

export class LayerKV {
  /** Cache row of each sequence, −1 when the sequence skips this layer. */
  rowOf: Int32Array;
  rows = 0;
  cap = 0;
  k?: Tensor;
  v?: Tensor;
  /** Slots used per row. */
  used = new Int32Array(0);
  /** Position held by each slot, [rows, cap]; −1 = empty. */
  slotPos = new Int32Array(0);

  constructor(
    readonly batch: number,
    readonly rowElems: number,
    /** Where K/V live (the model's device). */
    readonly device: Device = 'cpu',
  ) {
    this.rowOf = new Int32Array(batch).fill(-1);
  }

  /** Gives every sequence with flag 1 a row (first use only). */
  assignRows(runs: ArrayLike<number>): void {
    if (this.rows > 0 || this.k) return;
    let r = 0;
    for (let b = 0; b < this.batch; b++) this.rowOf[b] = runs[b] ? r++ : -1;
    this.rows = r;
    this.used = new Int32Array(r);
  }

  get assigned(): boolean {
    return this.rows > 0 || this.rowOf.some((x) => x >= 0);
  }

  /** Makes room for `extra[row]` more slots in each row. */
  reserve(extra: Int32Array, exact: boolean): void {
    let need = 0;
    for (let r = 0; r < this.rows; r++) need = Math.max(need, this.used[r] + extra[r]);
    if (need <= this.cap) return;
    const cap = exact ? need : Math.max(need, this.cap + GROW_SLOTS);
    const shape = [this.rows, cap, this.rowElems];
    const k = zerosOn(shape, 'float32', this.device).keep(), v = zerosOn(shape, 'float32', this.device).keep();
    const pos = new Int32Array(this.rows * cap).fill(-1);
    for (let r = 0; r < this.rows; r++) {
      const n = this.used[r];
      if (n > 0 && this.k) {
        k.copyFrom(this.k, r * cap * this.rowElems, r * this.cap * this.rowElems, n * this.rowElems);
        v.copyFrom(this.v!, r * cap * this.rowElems, r * this.cap * this.rowElems, n * this.rowElems);
      }
      pos.set(this.slotPos.subarray(r * this.cap, r * this.cap + n), r * cap);
    }
    dispose([this.k, this.v]);
    this.k = k;
    this.v = v;
    this.cap = cap;
    this.slotPos = pos;
  }

  get bytes(): number {
    return this.k ? 2 * this.k.numel * 4 : 0;
  }

  dispose(): void {
    dispose([this.k, this.v]);
    this.k = this.v = undefined;
  }
}

export class KVCache {
  readonly layers: LayerKV[];
  /** Next position of each sequence (= its real tokens so far). */
  readonly nextPos: Int32Array;
  /** Seq-level routing decisions, made at prefill and reused while decoding. */
  readonly seqDecisions = new Map<number, Uint8Array>();
  /** Forwards run so far (0 = the next one is the prefill). */
  steps = 0;
  private readonly rowElems: number;

  constructor(
    readonly batch: number,
    /** Advisory: the most tokens per sequence this cache is expected to hold. */
    readonly capacityHint: number,
    cfg: ModelConfig,
    /** Where K/V live (the model's device). */
    readonly device: Device = 'cpu',
  ) {
    if (!Number.isInteger(batch) || batch < 1) throw new ArgumentError(`KVCache: 'batch' expected an integer >= 1, received ${batch}`);
    this.rowElems = cfg.numKvHeads * cfg.headDim;
    this.layers = Array.from({ length: cfg.numLayers }, () => new LayerKV(batch, this.rowElems, device));
    this.nextPos = new Int32Array(batch);
  }

  /** Bytes of K/V really allocated. */
  get bytes(): number {
    return this.layers.reduce((s, l) => s + l.bytes, 0);
  }

  /** Bytes the same tokens would take with every layer executed for every token. */
  get unroutedBytes(): number {
    let tokens = 0;
    for (const p of this.nextPos) tokens += p;
    return tokens * this.layers.length * 2 * this.rowElems * 4;
  }

  /** Slots in use (all layers). */
  get usedSlots(): number {
    return this.layers.reduce((s, l) => s + l.used.reduce((a, b) => a + b, 0), 0);
  }

  /** Bytes of the K/V slots that skipping left unwritten (unrouted slots − used slots). */
  get savedBytes(): number {
    return Math.max(0, this.unroutedBytes - this.usedSlots * 2 * this.rowElems * 4);
  }

  dispose(): void {
    for (const l of this.layers) l.dispose();
  }
}
