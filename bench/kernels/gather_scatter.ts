/** Bench cases for the gather_scatter family (to be implemented). */
import { BenchCase } from '../harness';

export function gatherScatterCases(): BenchCase[] {
  return [];
}
