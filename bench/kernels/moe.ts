/** Bench cases for the moe family (to be implemented). */
import { BenchCase } from '../harness';

export function moeCases(): BenchCase[] {
  return [];
}
