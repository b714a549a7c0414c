/** router-tuning: dynamic-depth LLMs for Node.js. */
export { backendInfo, setNumThreads } from './backend';
export type { BackendInfo } from './backend';
export { Tensor, tidy, dispose } from './tensor';
export type { DType, Device } from './tensor';
export * from './errors';
export * as ops from './ops';
