/** Bench cases for the attention family (to be implemented). */
import { BenchCase } from '../harness';

export function attentionCases(): BenchCase[] {
  return [];
}
