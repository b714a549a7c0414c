/** Bench cases for the embedding family (to be implemented). */
import { BenchCase } from '../harness';

export function embeddingCases(): BenchCase[] {
  return [];
}
