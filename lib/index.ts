/** router-tuning: dynamic-depth LLMs for Node.js. */
export { backendInfo, setNumThreads } from './backend';
export type { BackendInfo } from './backend';
export { Tensor, tidy, dispose } from './tensor';
export type { DType, Device } from './tensor';
export * from './errors';
export * as ops from './ops';
export { loadModel, CausalLM, KVCache } from './model/causal_lm';
export type { LoadModelOptions } from './model/causal_lm';
export { readConfig, normalizeConfig, SUPPORTED_FAMILIES, ConfigError } from './model/config';
export type { ModelConfig, Family } from './model/config';
export { loadTokenizer, TextTokenizer, TokenizerError } from './model/tokenizer';
export { Checkpoint, SafetensorsFile, writeSafetensors, SafetensorsError } from './io/safetensors';
