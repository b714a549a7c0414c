/** Bench cases for the rope family (to be implemented). */
import { BenchCase } from '../harness';

export function ropeCases(): BenchCase[] {
  return [];
}
