/** Bench cases for the adamw family (to be implemented). */
import { BenchCase } from '../harness';

export function adamwCases(): BenchCase[] {
  return [];
}
