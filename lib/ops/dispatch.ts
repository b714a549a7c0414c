/**
 * Every op reaches the addon through `callNative`, which counts calls per kernel
 * name (and per tag, e.g. 'matmul:weight-grad'), so tests can prove what ran —
 * for instance that router-only backprop never runs a weight-gradient GEMM.
 */
import { native } from '../native';

const counts = new Map<string, number>();

export function countOp(name: string): void {
  counts.set(name, (counts.get(name) ?? 0) + 1);
}

/** Calls native kernel `name` with `args`, counting it (and `tag`, when given, as `name:tag`). */
export function callNative<R = void>(name: string, args: unknown[], tag?: string): R {
  const fn = (native() as unknown as Record<string, unknown>)[name];
  if (typeof fn !== 'function') throw new Error(`router-tuning: native kernel '${name}' is missing from the addon (stale build? run npm run build)`);
  countOp(name);
  if (tag) countOp(`${name}:${tag}`);
  return (fn as (...a: unknown[]) => R)(...args);
}

/** Snapshot of kernel call counts since the last reset. */
export function opCounts(): Record<string, number> {
  return Object.fromEntries(counts);
}

export function resetOpCounts(): void {
  counts.clear();
}
