/** Bench cases for the matmul family (to be implemented). */
import { BenchCase } from '../harness';

export function matmulCases(): BenchCase[] {
  return [];
}
