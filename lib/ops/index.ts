/** Every op family, forward and backward. */
export * from './elementwise';
export * from './matmul';
export * from './embedding';
export * from './rmsnorm';
export * from './rope';
export * from './attention';
export * from './swiglu';
export * from './cross_entropy';
export * from './router';
export * from './gather_scatter';
export * from './moe';
export * from './adamw';
export { opCounts, resetOpCounts } from './dispatch';
