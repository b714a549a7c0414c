/** Bench cases for the router family (to be implemented). */
import { BenchCase } from '../harness';

export function routerCases(): BenchCase[] {
  return [];
}
