/**
 * Float64 references for the matmul family. Row-major; op(X) = Xᵀ when trans is set:
 * op(A) is [M, K] (a stored [M, K], or [K, M] when transA), op(B) is [K, N] (b stored
 * [K, N], or [N, K] when transB), C is [M, N].
 */
const at = (a: ArrayLike<number>, trans: boolean, rows: number, cols: number, r: number, c: number) =>
  trans ? a[c * rows + r] : a[r * cols + c];

/** alpha·op(A)·op(B) + beta·c0 (c0 ignored when beta = 0). */
export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  transA = false,
  transB = false,
  alpha = 1,
  beta = 0,
  c0?: ArrayLike<number>,
): Float64Array {
  const c = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += at(a, transA, M, K, m, k) * at(b, transB, K, N, k, n);
      c[m * N + n] = alpha * s + (beta !== 0 ? beta * c0![m * N + n] : 0);
    }
  return c;
}

/**
 * Gradients of alpha·op(A)·op(B) given dC [M, N]: dA in a's layout, dB in b's layout.
 * dop(A)[m, k] = alpha·Σ_n dC[m, n]·op(B)[k, n];  dop(B)[k, n] = alpha·Σ_m op(A)[m, k]·dC[m, n].
 */
export function matmulBackwardRef(
  dc: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  transA = false,
  transB = false,
  alpha = 1,
): { da: Float64Array; db: Float64Array } {
  const da = new Float64Array(M * K);
  const db = new Float64Array(K * N);
  for (let m = 0; m < M; m++)
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += dc[m * N + n] * at(b, transB, K, N, k, n);
      da[transA ? k * M + m : m * K + k] = alpha * s;
    }
  for (let k = 0; k < K; k++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let m = 0; m < M; m++) s += at(a, transA, M, K, m, k) * dc[m * N + n];
      db[transB ? n * K + k : k * N + n] = alpha * s;
    }
  return { da, db };
}

/** y [R, out] = x [R, in] · wᵀ (w [out, in]) + bias [out]. */
export function linearRef(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, R: number, inF: number, outF: number): Float64Array {
  const y = matmulRef(x, w, R, outF, inF, false, true);
  if (bias) for (let r = 0; r < R; r++) for (let o = 0; o < outF; o++) y[r * outF + o] += bias[o];
  return y;
}

/** dx [R, in] = dy·w, dw [out, in] = dyᵀ·x, db [out] = Σ_r dy. */
export function linearBackwardRef(dy: ArrayLike<number>, x: ArrayLike<number>, w: ArrayLike<number>, R: number, inF: number, outF: number) {
  const { da: dx, db: dw } = matmulBackwardRef(dy, x, w, R, outF, inF, false, true);
  const db = new Float64Array(outF);
  for (let r = 0; r < R; r++) for (let o = 0; o < outF; o++) db[o] += dy[r * outF + o];
  return { dx, dw, db };
}
