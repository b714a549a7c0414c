/** Bench cases for the cross_entropy family (to be implemented). */
import { BenchCase } from '../harness';

export function crossEntropyCases(): BenchCase[] {
  return [];
}
