/** Bench cases for the swiglu family (to be implemented). */
import { BenchCase } from '../harness';

export function swigluCases(): BenchCase[] {
  return [];
}
