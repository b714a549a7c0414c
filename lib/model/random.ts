/**
 * Models with random weights of any supported shape, built in memory: for benches
 * (the e2e and tune suites) and for tests that need a model without a checkpoint.
 */
import { Device, Tensor } from '../tensor';
import { requireDevice } from '../infer/device';
import { Rng } from '../util/rng';
import { CausalLM } from './causal_lm';
import { ModelConfig, normalizeConfig, isMoeLayer } from './config';
import { LayerWeights, LinearWeights, MlpWeights, ModelWeights } from './weights';

/** A config from Hugging Face-style keys (model_type llama unless given). */
export function syntheticConfig(raw: Record<string, unknown>): ModelConfig {
  return normalizeConfig({ model_type: 'llama', rms_norm_eps: 1e-5, ...raw }, '<synthetic config>');
}

/**
 * Random weights. init 'scaled' (default): std 1/√fan_in (benches, tests); 'pretrain':
 * GPT-style std 0.02, output projections 0.02/√(2L), for training from scratch.
 * `device` (default 'cpu') is where the weights are created (the same values on any device).
 */
export function randomModel(cfg: ModelConfig, opts: { seed?: number; dtype?: 'float32' | 'bfloat16'; init?: 'scaled' | 'pretrain'; device?: Device } = {}): CausalLM {
  const device = opts.device === undefined ? 'cpu' : requireDevice('randomModel', opts.device);
  const rng = new Rng(opts.seed ?? 0);
  const dtype = opts.dtype ?? 'float32';
  const fill = (shape: number[], std: number, dt: 'float32' | 'bfloat16' = dtype): Tensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    // uniform with the requested std: fast to generate at 100M+ parameters
    const a = std * Math.sqrt(3);
    for (let i = 0; i < n; i++) data[i] = (rng.uniform() * 2 - 1) * a;
    return Tensor.from(data, shape, dt, device).keep();
  };
  const ones = (n: number): Tensor => Tensor.from(new Float32Array(n).fill(1), [n], 'float32', device).keep();
  const C = cfg.hiddenSize, D = cfg.headDim, Hq = cfg.numHeads, Hkv = cfg.numKvHeads;
  const pre = opts.init === 'pretrain';
  const outStd = 0.02 / Math.sqrt(2 * cfg.numLayers);
  const std = (inp: number, output = false) => (pre ? (output ? outStd : 0.02) : 1 / Math.sqrt(inp));
  const lin = (out: number, inp: number, bias: boolean, output = false): LinearWeights => ({
    weight: fill([out, inp], std(inp, output)),
    bias: bias ? fill([out], pre ? 0 : 0.02, 'float32') : undefined,
  });
  const mlp = (I: number): MlpWeights => ({ gate: lin(I, C, cfg.mlpBias), up: lin(I, C, cfg.mlpBias), down: lin(C, I, cfg.mlpBias, true) });
  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const layer: LayerWeights = {
      inputNorm: ones(C),
      postAttnNorm: ones(C),
      q: lin(Hq * D, C, cfg.qkvBias),
      k: lin(Hkv * D, C, cfg.qkvBias),
      v: lin(Hkv * D, C, cfg.qkvBias),
      o: lin(C, Hq * D, cfg.oBias, true),
    };
    if (cfg.qkNorm === 'head') {
      layer.qNorm = ones(D);
      layer.kNorm = ones(D);
    } else if (cfg.qkNorm === 'full') {
      layer.qNorm = ones(Hq * D);
      layer.kNorm = ones(Hkv * D);
    }
    if (isMoeLayer(cfg, l)) {
      const m = cfg.moe!;
      const I = m.expertIntermediateSize, E = m.numExperts;
      layer.moe = {
        router: { weight: fill([E, C], std(C), 'float32') },
        experts: { gate: fill([E, I, C], std(C)), up: fill([E, I, C], std(C)), down: fill([E, C, I], std(I, true)) },
      };
      if (m.sharedExpertIntermediateSize) {
        layer.moe.shared = mlp(m.sharedExpertIntermediateSize);
        layer.moe.sharedGate = { weight: fill([1, C], std(C), 'float32') };
      }
    } else layer.mlp = mlp(cfg.intermediateSize);
    layers.push(layer);
  }
  const embed = fill([cfg.vocabSize, C], pre ? 0.02 : 1);
  const weights: ModelWeights = {
    embed,
    layers,
    finalNorm: ones(C),
    lmHead: cfg.tieWordEmbeddings ? embed : fill([cfg.vocabSize, C], std(C)),
    dtype,
  };
  return new CausalLM(cfg, weights, undefined, '<random>');
}
