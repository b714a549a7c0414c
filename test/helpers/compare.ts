/**
 * Closeness checks in the llm.c style: |a - e| <= atol + rtol·|e| elementwise, and on
 * failure a message listing the first mismatches with their indices.
 */
export interface Tolerance {
  atol: number;
  rtol: number;
}

/** Per-dtype tolerances for kernels computing in fp32 against float64 references. */
export const TOL = {
  float32: { atol: 2e-5, rtol: 2e-4 },
  bfloat16: { atol: 2e-2, rtol: 2e-2 },
  reduction: { atol: 1e-4, rtol: 1e-3 },
} satisfies Record<string, Tolerance>;

export function closeMismatches(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance, max = 5): string[] {
  const out: string[] = [];
  if (actual.length !== expected.length) return [`length ${actual.length} != expected ${expected.length}`];
  let bad = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const ok = Number.isNaN(e) ? Number.isNaN(a) : e === a || Math.abs(a - e) <= tol.atol + tol.rtol * Math.abs(e);
    if (!ok) {
      if (out.length < max) out.push(`[${i}] got ${a}, expected ${e} (diff ${Math.abs(a - e).toExponential(2)})`);
      bad++;
    }
  }
  if (bad > max) out.push(`… ${bad} mismatches of ${expected.length}`);
  return out;
}

export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance, label = 'values'): void {
  const bad = closeMismatches(actual, expected, tol);
  if (bad.length) throw new Error(`${label}: not within atol ${tol.atol} + rtol ${tol.rtol}:\n  ${bad.join('\n  ')}`);
}

/** Float64 copy (reference ops run in float64). */
export const f64 = (a: ArrayLike<number>): Float64Array => Float64Array.from(a);

/** Largest |a[i]|. */
export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** Largest |a[i] - b[i]|. */
export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Little-endian float32 values from base64 (the golden fixtures' logits). */
export function decodeFloat32(b64: string): Float32Array {
  const buf = Buffer.from(b64, 'base64');
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}
