/** The kernels suite: every op family's bench cases (the same ops the tests check). */
import { BenchCase } from '../harness';
import { elementwiseCases } from './elementwise';
import { matmulCases } from './matmul';
import { embeddingCases } from './embedding';
import { rmsnormCases } from './rmsnorm';
import { ropeCases } from './rope';
import { attentionCases } from './attention';
import { swigluCases } from './swiglu';
import { crossEntropyCases } from './cross_entropy';
import { routerCases } from './router';
import { gatherScatterCases } from './gather_scatter';
import { moeCases } from './moe';
import { adamwCases } from './adamw';

export function kernelCases(): BenchCase[] {
  return [
    ...elementwiseCases(),
    ...matmulCases(),
    ...embeddingCases(),
    ...rmsnormCases(),
    ...ropeCases(),
    ...attentionCases(),
    ...swigluCases(),
    ...crossEntropyCases(),
    ...routerCases(),
    ...gatherScatterCases(),
    ...moeCases(),
    ...adamwCases(),
  ];
}
