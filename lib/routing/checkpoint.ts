/**
 * Router checkpoints: safetensors with the router weights ('router.<layer>.weight') and
 * metadata (format, granularity, layers, thresholds, mode, step, base-model fingerprint,
 * training options). Written atomically; loading checks the file against the model.
 */
import { createHash } from 'crypto';
import { RouterTuningError } from '../errors';
import { Checkpoint, SafetensorsFile, readEntry, writeSafetensors } from '../io/safetensors';
import { Tensor, dispose } from '../tensor';
import type { CausalLM } from '../model/causal_lm';
import { AttentionMode, Granularity, GRANULARITIES, Routers } from './routers';

export const ROUTER_FORMAT = 'router-tuning/routers@1';

export class RouterCheckpointError extends RouterTuningError {
  constructor(message: string) {
    super('RT_ERR_FORMAT', message);
    this.name = 'RouterCheckpointError';
  }
}

/** A stable fingerprint of the base model: config and sampled weight values. */
export function modelFingerprint(model: CausalLM): string {
  const h = createHash('sha256');
  const { ignoredKeys, ...cfg } = model.config;
  void ignoredKeys;
  h.update(JSON.stringify(cfg));
  const sample = (t: Tensor) => {
    const n = Math.min(t.numel, 4096);
    // the first n values, copied to the host (the weight may live on a GPU)
    const part = Tensor.empty([n], t.dtype, 'cpu');
    part.copyFrom(t, 0, 0, n);
    const data = t.dtype === 'bfloat16' ? part.toFloat32Array() : part.toFloat32Array();
    part.dispose();
    h.update(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  };
  sample(model.weights.embed);
  sample(model.weights.lmHead);
  for (const l of model.weights.layers) sample(l.q.weight);
  return h.digest('hex').slice(0, 32);
}

/** Writes the routers (and optional extra tensors, e.g. optimiser state) atomically; tensors on a GPU are read back to the host. */
export function saveRouters(
  file: string,
  model: CausalLM,
  routers: Routers,
  extra: Record<string, string> = {},
  extraTensors: Map<string, Tensor> = new Map(),
): void {
  const tensors: Record<string, Tensor> = {};
  for (const [l, w] of routers.weights) tensors[`router.${l}.weight`] = w;
  for (const [name, t] of extraTensors) tensors[name] = t;
  writeSafetensors(file, tensors, {
    ...routers.metadata,
    ...extra,
    format: ROUTER_FORMAT,
    granularity: routers.granularity,
    layers: JSON.stringify(routers.layers),
    thresholds: JSON.stringify(Object.fromEntries(routers.thresholds)),
    mode: routers.mode,
    family: model.config.family,
    hiddenSize: String(model.config.hiddenSize),
    baseModel: modelFingerprint(model),
  });
}

export function loadRouters(file: string, model: CausalLM, opts: { allowOtherModel?: boolean } = {}): Routers {
  const st = SafetensorsFile.open(file);
  const md = st.metadata;
  if (md.format !== ROUTER_FORMAT)
    throw new RouterCheckpointError(`${file}: not a router checkpoint (metadata format ${JSON.stringify(md.format)}, expected ${ROUTER_FORMAT})`);
  const granularity = md.granularity as Granularity;
  if (!(GRANULARITIES as readonly string[]).includes(granularity))
    throw new RouterCheckpointError(`${file}: unknown granularity ${JSON.stringify(md.granularity)}`);
  let layers: number[], thresholds: Record<string, number>;
  try {
    layers = JSON.parse(md.layers);
    thresholds = JSON.parse(md.thresholds);
  } catch {
    throw new RouterCheckpointError(`${file}: metadata 'layers'/'thresholds' are not valid JSON`);
  }
  if (!opts.allowOtherModel && md.baseModel && md.baseModel !== modelFingerprint(model))
    throw new RouterCheckpointError(
      `${file}: these routers were trained on another base model (fingerprint ${md.baseModel}, this model ${modelFingerprint(model)}); pass allowOtherModel to load anyway`,
    );
  const routers = new Routers(model.config, { granularity, layers, mode: md.mode as AttentionMode }, model.device);
  try {
    for (const l of layers) {
      const e = st.entries.get(`router.${l}.weight`);
      const w = routers.weight(l);
      if (!e) throw new RouterCheckpointError(`${file}: tensor 'router.${l}.weight' is missing`);
      if (e.shape.join(',') !== w.shape.join(','))
        throw new RouterCheckpointError(`${file}: 'router.${l}.weight' has shape [${e.shape.join(', ')}], this model needs [${w.shape.join(', ')}]`);
      const t = readEntry(e, 'float32');
      w.copyFrom(t); // host → the model's device
      t.dispose();
      const tau = thresholds[String(l)];
      if (typeof tau === 'number') routers.thresholds.set(l, tau);
    }
  } catch (e) {
    routers.dispose();
    throw e;
  }
  const { format, granularity: _g, layers: _l, thresholds: _t, mode: _m, ...rest } = md;
  void format;
  void _g;
  void _l;
  void _t;
  void _m;
  routers.metadata = rest;
  return routers;
}

/** Reads every tensor of a safetensors file into memory (float32/int32 as stored). */
export function readAll(file: string): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  const st = SafetensorsFile.open(file);
  const tensors: Record<string, Tensor> = {};
  try {
    for (const [name, e] of st.entries) tensors[name] = readEntry(e).keep();
  } catch (err) {
    dispose(Object.values(tensors));
    throw err;
  }
  return { tensors, metadata: st.metadata };
}

export { Checkpoint };
