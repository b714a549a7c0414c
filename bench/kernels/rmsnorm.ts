/** Bench cases for the rmsnorm family (to be implemented). */
import { BenchCase } from '../harness';

export function rmsnormCases(): BenchCase[] {
  return [];
}
