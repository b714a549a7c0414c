// Batched GEMM, C[b] = alpha·op(A[b])·op(B[b]) + beta·C[b], the engine's only
// compute-bound op: every Linear (forward, input gradient, weight gradient), the
// attention score/value products and the MoE experts go through it.
//
// Owns: splitting work across the one thread pool (OpenBLAS is pinned to one thread
// per call), widening bfloat16 weights to fp32 panel by panel, and a memory-bound
// path for decode-like shapes (M <= 16) that reads each weight element exactly once.
//
// Napkin math:
//   compute-bound: 2·M·N·K FLOPs; 512×2048×2048 = 4.3 GFLOP ≈ 20 ms at ~216 GFLOP/s
//   (2 cores). Split: batch items first; a single big matrix is cut into one panel
//   of C per thread along its larger side (N when B is bf16, so each thread widens
//   only its own columns), and each panel is one single-threaded cblas_sgemm.
//   bf16 B: widened into a per-task scratch of at most kPanelN×kPanelK floats (2 MiB),
//   re-used across the task's panels; never a full-size fp32 copy of the weight.
//   Widening costs ~10 bytes of traffic per weight element against 2·M FLOPs of
//   GEMM, negligible for M in the hundreds.
//   bf16 compute mode (rt_set_compute_dtype(RT_BF16)), bf16 B, M > 16: A is rounded to
//   bf16 per task and multiplied by gemm_bf16.cc's vdpbf16ps kernel (2× the FLOPs per
//   instruction of an fp32 FMA); without AVX512_BF16, A rounded to bf16 values in fp32
//   goes through the widening path below (same rounding, fp32 arithmetic).
//   memory-bound (M <= 16, e.g. decode M=1 × 4096×4096 bf16): 32 MiB of weights read
//   once, 2·M FLOPs per element; a direct dot/axpy kernel (bf16 widened in registers)
//   streams the weight at memory bandwidth, where sgemm would pack (copy) all of B and
//   run its microkernel mostly on padding. Split over N, a few slices per thread.
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>

#include "check.h"
#include "gemm_bf16.h"
#include "parallel.h"
#include "rt/matmul.h"
#include "simd.h"
#include "vec.h"

namespace {

constexpr int64_t kPanelN = 256;          // bf16 widening panel: columns of op(B) (= rows of a Linear weight)
constexpr int64_t kPanelK = 2048;         // … and rows of op(B): scratch ≤ 256·2048·4 B = 2 MiB per task
constexpr int64_t kSmallM = 16;           // M up to this takes the memory-bound path
constexpr double kSerialFlops = 4.0e6;    // below this one thread is faster than waking the pool …
constexpr double kSerialBytes = 256.0e3;  // … and, for the memory-bound path, below this many bytes of B
constexpr int kLanes = 16;                // independent accumulators per row in the small-M kernels
constexpr int64_t kRowBlock = 4;          // rows of A per pass over a weight row (partial sums in registers)
constexpr int64_t kDotChunk = 64;         // weight rows per dot_rows call when M = 1 (accumulator floats)

// Accumulator columns per pass of the small-M axpy path: M·width floats ≈ 32 KiB (L1),
// wide enough that each B row segment is a long contiguous read.
inline int64_t small_m_width(int64_t M) { return std::max<int64_t>(256, 8192 / M); }

// ---- memory-bound kernels (M <= kSmallM) -------------------------------------------

// GCC vector extensions keep the partial sums in registers (plain float arrays of
// accumulators get spilled to the stack); each target_clones variant lowers a 16-float
// vector to one zmm, two ymm or four xmm registers.
// 64-byte vectors in the baseline clone only ever live inside inlined helpers: no ABI crossing.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float vf __attribute__((vector_size(64)));
typedef float vf_u __attribute__((vector_size(64), aligned(4)));
typedef uint16_t vh_u __attribute__((vector_size(32), aligned(2)));
typedef uint32_t vu __attribute__((vector_size(64)));

inline __attribute__((always_inline)) vf loadv(const float* p) { return *reinterpret_cast<const vf_u*>(p); }
inline __attribute__((always_inline)) vf loadv(const rt_bf16* p) {
  vu bits = __builtin_convertvector(*reinterpret_cast<const vh_u*>(p), vu) << 16;  // bf16 → fp32: the top half
  return (vf)bits;  // same-size vector cast: a bit-for-bit reinterpretation
}
inline __attribute__((always_inline)) void storev(float* p, vf v) { *reinterpret_cast<vf_u*>(p) = v; }
inline __attribute__((always_inline)) float load_one(const float* w) { return *w; }
inline __attribute__((always_inline)) float load_one(const rt_bf16* w) { return rt::bf16_to_f32(*w); }
inline __attribute__((always_inline)) float hsum(vf v) {
  float s = 0.f;
  for (int j = 0; j < kLanes; ++j) s += v[j];
  return s;
}

// out[m·ldo + r] = Σ_k a[m·K + k]·w[r·ldw + k] for an MR × NR tile (MR rows of A, NR
// rows of the weight): each weight vector is loaded (and widened) once for all MR rows,
// each A vector once for all NR weight rows, and the MR·NR·U partial sums (U vectors
// per pair: independent FMA chains) stay in registers.
template <int MR, int NR, int U, typename W>
inline __attribute__((always_inline)) void dot_tile(float* out, int64_t ldo, const float* a, const W* w, int64_t ldw,
                                                    int64_t K) {
  vf acc[MR][NR][U] = {};
  int64_t k = 0;
  for (; k + U * kLanes <= K; k += U * kLanes) {
    for (int u = 0; u < U; ++u) {
      vf wv[NR];
      for (int r = 0; r < NR; ++r) wv[r] = loadv(w + r * ldw + k + u * kLanes);
      for (int m = 0; m < MR; ++m) {
        vf av = loadv(a + m * K + k + u * kLanes);
        for (int r = 0; r < NR; ++r) acc[m][r][u] += av * wv[r];
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) {
      float s = 0.f;
      for (int64_t kk = k; kk < K; ++kk) s += a[m * K + kk] * load_one(w + r * ldw + kk);
      for (int u = 0; u < U; ++u) s += hsum(acc[m][r][u]);
      out[m * ldo + r] = s;
    }
}

// out (M, nr) = a (M, K) · w (nr, K)ᵀ for nr = 1 or 2 weight rows (ldw apart), in
// blocks of kRowBlock rows of A. M = 1 streams one weight row with four chains.
template <typename W>
inline __attribute__((always_inline)) void dot_rows_any(float* out, const float* a, const W* w, int64_t ldw, int64_t nr,
                                                        int64_t M, int64_t K) {
  if (M == 1) {
    // One weight row at a time, four FMA chains: one sequential stream per thread
    // (interleaving several rows measured 30-40% slower on a busy Zen 4).
    for (int64_t r = 0; r < nr; ++r) dot_tile<1, 1, 4>(out + r, nr, a, w + r * ldw, ldw, K);
    return;
  }
  for (int64_t m0 = 0; m0 < M; m0 += kRowBlock) {
    const float* am = a + m0 * K;
    float* om = out + m0 * nr;
    int64_t mr = std::min<int64_t>(kRowBlock, M - m0);
    if (nr == 2) {
      switch (mr) {
        case 1: dot_tile<1, 2, 2>(om, nr, am, w, ldw, K); break;
        case 2: dot_tile<2, 2, 1>(om, nr, am, w, ldw, K); break;
        case 3: dot_tile<3, 2, 1>(om, nr, am, w, ldw, K); break;
        default: dot_tile<4, 2, 1>(om, nr, am, w, ldw, K); break;
      }
    } else {
      switch (mr) {
        case 1: dot_tile<1, 1, 4>(om, nr, am, w, ldw, K); break;
        case 2: dot_tile<2, 1, 2>(om, nr, am, w, ldw, K); break;
        case 3: dot_tile<3, 1, 1>(om, nr, am, w, ldw, K); break;
        default: dot_tile<4, 1, 1>(om, nr, am, w, ldw, K); break;
      }
    }
  }
}
RT_SIMD_CLONES void dot_rows_f32(float* out /*(M, nr)*/, const float* a /*(M,K)*/, const float* w /*(nr, ldw)*/,
                                 int64_t ldw, int64_t nr, int64_t M, int64_t K) {
  dot_rows_any(out, a, w, ldw, nr, M, K);
}
RT_SIMD_CLONES void dot_rows_bf16(float* out /*(M, nr)*/, const float* a /*(M,K)*/, const rt_bf16* w /*(nr, ldw)*/,
                                  int64_t ldw, int64_t nr, int64_t M, int64_t K) {
  dot_rows_any(out, a, w, ldw, nr, M, K);
}

// acc[m, :nw] += Σ_k a(m, k)·B[k, :nw]; a(m, k) = at[k·M + m] (A as (K, M) so the M
// coefficients of one k are adjacent). Four rows of B per pass over the accumulators,
// each B vector loaded (and widened) once for all M rows.
template <typename W>
inline __attribute__((always_inline)) void axpy_rows_any(float* acc /*(M,nw)*/, const float* at /*(K,M)*/,
                                                         const W* b /*(K, ldb)*/, int64_t ldb, int64_t M, int64_t K,
                                                         int64_t nw) {
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const W* b0 = b + k * ldb;
    const float* ak = at + k * M;
    int64_t j = 0;
    for (; j + kLanes <= nw; j += kLanes) {
      vf v0 = loadv(b0 + j), v1 = loadv(b0 + ldb + j), v2 = loadv(b0 + 2 * ldb + j), v3 = loadv(b0 + 3 * ldb + j);
      for (int64_t m = 0; m < M; ++m) {
        float* row = acc + m * nw + j;
        storev(row, loadv(row) + ak[m] * v0 + ak[M + m] * v1 + ak[2 * M + m] * v2 + ak[3 * M + m] * v3);
      }
    }
    for (; j < nw; ++j)
      for (int64_t m = 0; m < M; ++m)
        acc[m * nw + j] += ak[m] * load_one(b0 + j) + ak[M + m] * load_one(b0 + ldb + j) +
                           ak[2 * M + m] * load_one(b0 + 2 * ldb + j) + ak[3 * M + m] * load_one(b0 + 3 * ldb + j);
  }
  for (; k < K; ++k) {
    const W* bk = b + k * ldb;
    const float* ak = at + k * M;
    for (int64_t j = 0; j < nw; ++j)
      for (int64_t m = 0; m < M; ++m) acc[m * nw + j] += ak[m] * load_one(bk + j);
  }
}
RT_SIMD_CLONES void axpy_rows_f32(float* acc, const float* at, const float* b, int64_t ldb, int64_t M, int64_t K,
                                  int64_t nw) {
  axpy_rows_any(acc, at, b, ldb, M, K, nw);
}
RT_SIMD_CLONES void axpy_rows_bf16(float* acc, const float* at, const rt_bf16* b, int64_t ldb, int64_t M, int64_t K,
                                   int64_t nw) {
  axpy_rows_any(acc, at, b, ldb, M, K, nw);
}

RT_SIMD_CLONES void widen_bf16(float* out, const rt_bf16* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = rt::bf16_to_f32(in[i]);
}

// c = alpha·acc + beta·c, with beta == 0 never reading c (BLAS semantics: NaN-safe).
RT_SIMD_CLONES void store_row(float* c, const float* acc, int64_t n, float alpha, float beta) {
  if (beta == 0.f) {
    for (int64_t i = 0; i < n; ++i) c[i] = alpha * acc[i];
  } else {
    for (int64_t i = 0; i < n; ++i) c[i] = alpha * acc[i] + beta * c[i];
  }
}

void scale_c(float* c /*(rows, ldc)*/, int64_t rows, int64_t cols, int64_t ldc, float beta) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = c + r * ldc;
    if (beta == 0.f)
      std::memset(row, 0, static_cast<size_t>(cols) * sizeof(float));
    else
      for (int64_t j = 0; j < cols; ++j) row[j] *= beta;
  }
}

// One GEMM's shape and scalars; the operand pointers are passed per batch item.
struct Problem {
  bool b16;
  bool c16;  // bf16 compute: A rounded to bf16 (b16 and not the memory-bound path)
  bool ta, tb;
  int64_t M, N, K;
  float alpha, beta;
};

// Scratch floats small_m_slice needs.
int64_t small_m_scratch(const Problem& p) {
  return p.M * p.K + p.M * (p.tb ? kDotChunk : small_m_width(p.M));
}

// Columns [n0, n1) of C for one batch item, M <= kSmallM: reads each element of those
// B columns once. scratch: A in the layout the kernel wants (M·K) + accumulators.
void small_m_slice(const Problem& p, const float* a, const void* b, float* c, int64_t n0, int64_t n1, float* scratch) {
  const int64_t M = p.M, N = p.N, K = p.K;
  float* acc = scratch + M * K;
  if (p.tb) {
    // B is (N, K): C[m, n] = <A[m, :], B[n, :]>, A as (M, K) rows.
    const float* ar = a;
    if (p.ta && M > 1) {  // A is (K, M): transpose the few rows once
      for (int64_t k = 0; k < K; ++k)
        for (int64_t m = 0; m < M; ++m) scratch[m * K + k] = a[k * M + m];
      ar = scratch;
    }
    if (M == 1) {  // one call over the whole slice: rows stream with prefetch
      for (int64_t n = n0; n < n1; n += kDotChunk) {
        int64_t nr = std::min<int64_t>(kDotChunk, n1 - n);
        if (p.b16) dot_rows_bf16(acc, ar, static_cast<const rt_bf16*>(b) + n * K, K, nr, 1, K);
        else dot_rows_f32(acc, ar, static_cast<const float*>(b) + n * K, K, nr, 1, K);
        for (int64_t r = 0; r < nr; ++r) c[n + r] = p.beta == 0.f ? p.alpha * acc[r] : p.alpha * acc[r] + p.beta * c[n + r];
      }
      return;
    }
    for (int64_t n = n0; n < n1; n += 2) {  // two weight rows per pass: half the A traffic
      int64_t nr = std::min<int64_t>(2, n1 - n);
      if (p.b16) dot_rows_bf16(acc, ar, static_cast<const rt_bf16*>(b) + n * K, K, nr, M, K);
      else dot_rows_f32(acc, ar, static_cast<const float*>(b) + n * K, K, nr, M, K);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t r = 0; r < nr; ++r) {
          float* cm = c + m * N + n + r;
          *cm = p.beta == 0.f ? p.alpha * acc[m * nr + r] : p.alpha * acc[m * nr + r] + p.beta * *cm;
        }
    }
    return;
  }
  // B is (K, N): C[m, j0:j1] = Σ_k A(m, k)·B[k, j0:j1], A as (K, M) columns.
  const float* at = a;
  if (!p.ta && M > 1) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) scratch[k * M + m] = a[m * K + k];
    at = scratch;
  }
  const int64_t width = small_m_width(M);
  for (int64_t j0 = n0; j0 < n1; j0 += width) {
    int64_t nw = std::min(width, n1 - j0);
    std::memset(acc, 0, static_cast<size_t>(M * nw) * sizeof(float));
    if (p.b16) axpy_rows_bf16(acc, at, static_cast<const rt_bf16*>(b) + j0, N, M, K, nw);
    else axpy_rows_f32(acc, at, static_cast<const float*>(b) + j0, N, M, K, nw);
    for (int64_t m = 0; m < M; ++m) store_row(c + m * N + j0, acc + m * nw, nw, p.alpha, p.beta);
  }
}

// ---- compute-bound path: cblas_sgemm on panels ----------------------------------------

// op(A) rounded to bf16 values, kept in fp32 and in A's own layout (the fallback of the
// bf16 compute mode on CPUs without AVX512_BF16): out has M·K floats.
RT_SIMD_CLONES void round_to_bf16(float* out, const float* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, a + i, 4);
    // round to nearest even on the top 16 bits (NaN: keep a quiet NaN)
    uint32_t r = ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu))
                     ? (bits | 0x00400000u) & 0xffff0000u
                     : (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
    std::memcpy(out + i, &r, 4);
  }
}

inline CBLAS_TRANSPOSE tr(bool t) { return t ? CblasTrans : CblasNoTrans; }

// Rows [m0, m1) × columns [n0, n1) of C for one batch item, fp32 B: one sgemm.
void sgemm_block(const Problem& p, const float* a, const float* b, float* c, int64_t m0, int64_t m1, int64_t n0,
                 int64_t n1) {
  const float* ap = p.ta ? a + m0 : a + m0 * p.K;
  const float* bp = p.tb ? b + n0 * p.K : b + n0;
  int lda = static_cast<int>(p.ta ? p.M : p.K), ldb = static_cast<int>(p.tb ? p.K : p.N);
  cblas_sgemm(CblasRowMajor, tr(p.ta), tr(p.tb), static_cast<int>(m1 - m0), static_cast<int>(n1 - n0),
              static_cast<int>(p.K), p.alpha, ap, lda, bp, ldb, p.beta, c + m0 * p.N + n0, static_cast<int>(p.N));
}

// Columns [n0, n1) of C for one batch item, bf16 B: widen a kPanelN × kPanelK panel of
// op(B) into scratch, multiply, accumulate over K panels (beta only on the first).
void bf16_slice(const Problem& p, const float* a, const rt_bf16* b, float* c, int64_t n0, int64_t n1, float* scratch) {
  const int64_t M = p.M, N = p.N, K = p.K;
  for (int64_t j0 = n0; j0 < n1; j0 += kPanelN) {
    int64_t nb = std::min(kPanelN, n1 - j0);
    for (int64_t k0 = 0; k0 < K; k0 += kPanelK) {
      int64_t kb = std::min(kPanelK, K - k0);
      int ldw;
      if (p.tb) {  // B (N, K): rows j0.., columns k0.. → scratch (nb, kb)
        for (int64_t i = 0; i < nb; ++i) widen_bf16(scratch + i * kb, b + (j0 + i) * K + k0, kb);
        ldw = static_cast<int>(kb);
      } else {  // B (K, N): rows k0.., columns j0.. → scratch (kb, nb)
        for (int64_t i = 0; i < kb; ++i) widen_bf16(scratch + i * nb, b + (k0 + i) * N + j0, nb);
        ldw = static_cast<int>(nb);
      }
      const float* ap = p.ta ? a + k0 * M : a + k0;
      cblas_sgemm(CblasRowMajor, tr(p.ta), tr(p.tb), static_cast<int>(M), static_cast<int>(nb), static_cast<int>(kb),
                  p.alpha, ap, static_cast<int>(p.ta ? M : K), scratch, ldw, k0 == 0 ? p.beta : 1.0f, c + j0,
                  static_cast<int>(N));
    }
  }
}

}  // namespace

extern "C" {

rt_status rt_matmul(float* c /*(batch, M, N) with stride_c*/, const float* a /*(batch, M, K) or (batch, K, M)*/,
                    const void* b /*(batch, K, N) or (batch, N, K), f32|bf16*/, rt_dtype b_dtype, int trans_a,
                    int trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, int64_t stride_a, int64_t stride_b,
                    int64_t stride_c, float alpha, float beta) {
  const char* op = "matmul";
  RT_REQUIRE_NONNEG(batch, op, "batch");
  RT_REQUIRE_NONNEG(M, op, "M");
  RT_REQUIRE_NONNEG(N, op, "N");
  RT_REQUIRE_NONNEG(K, op, "K");
  RT_REQUIRE_DTYPE_FLOAT(b_dtype, op, "b");
  // OpenBLAS takes 32-bit sizes and leading dimensions.
  RT_REQUIRE(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX, RT_ERR_SHAPE,
             "%s: expected M, N, K <= %d, received M=%lld N=%lld K=%lld", op, INT_MAX, (long long)M, (long long)N,
             (long long)K);
  RT_REQUIRE(stride_a == 0 || stride_a >= M * K, RT_ERR_SHAPE,
             "%s: expected stride_a = 0 (broadcast) or >= M*K = %lld, received %lld", op, (long long)(M * K),
             (long long)stride_a);
  RT_REQUIRE(stride_b == 0 || stride_b >= K * N, RT_ERR_SHAPE,
             "%s: expected stride_b = 0 (broadcast) or >= K*N = %lld, received %lld", op, (long long)(K * N),
             (long long)stride_b);
  RT_REQUIRE(stride_c >= M * N || (stride_c == 0 && batch <= 1), RT_ERR_SHAPE,
             "%s: expected stride_c >= M*N = %lld (the output cannot be broadcast), received %lld", op,
             (long long)(M * N), (long long)stride_c);
  if (batch == 0 || M == 0 || N == 0) return RT_OK;
  RT_REQUIRE_PTR(c, op, "c");
  if (K > 0) {
    RT_REQUIRE_PTR(a, op, "a");
    RT_REQUIRE_PTR(b, op, "b");
  }

  // A shared B over a contiguous batch of A and C is one taller GEMM: fold batch into M.
  if (batch > 1 && stride_b == 0 && !trans_a && stride_a == M * K && stride_c == M * N && batch * M <= INT_MAX) {
    M *= batch;
    batch = 1;
  }

  const bool small = K > 0 && M <= kSmallM;
  const bool c16 = b_dtype == RT_BF16 && !small && K > 0 && rt_compute_dtype() == RT_BF16;
  const bool c16_native = c16 && rt_bf16_native();
  Problem p{b_dtype == RT_BF16, c16, trans_a != 0, trans_b != 0, M, N, K, alpha, beta};
  const int threads = rt_num_threads();
  const double flops = 2.0 * static_cast<double>(batch) * M * N * K;
  // Memory-bound shapes are worth the pool from a few hundred KiB of weights; compute-bound from a few MFLOP.
  const double b_bytes = static_cast<double>(batch) * N * K * (p.b16 ? 2 : 4);
  const bool serial = threads == 1 || (small ? b_bytes < kSerialBytes : flops < kSerialFlops);

  // Work items: batch × slices of C; a slice is a range of columns (or rows, for an
  // fp32 GEMM taller than wide). Slice edges are multiples of 16 (64-byte lines).
  bool split_n = small || p.b16 || N >= M;
  int64_t extent = split_n ? N : M;
  int64_t parts = 1;
  if (!serial) {
    // Dot path: a few chunks per thread balance better; the others: one wide slice per thread
    // (long contiguous B reads, A packed/transposed once per slice).
    // bf16 compute: A is rounded once up front, so many slices cost nothing and balance a busy machine
    int64_t want = (small && p.tb) || c16_native ? 4 * threads : threads;
    if (batch < want) parts = (want + batch - 1) / batch;
    int64_t min_slice = small || c16_native ? 64 : 32;
    parts = std::max<int64_t>(1, std::min(parts, extent / min_slice));
  }
  int64_t slice = (extent + parts - 1) / parts;
  if (parts > 1) slice = c16_native ? (slice + 63) / 64 * 64 : (slice + 15) / 16 * 16;  // whole bf16 panels
  parts = (extent + slice - 1) / slice;

  size_t scratch_floats = 0;
  if (K > 0 && small) scratch_floats = static_cast<size_t>(small_m_scratch(p));
  else if (c16_native) scratch_floats = (rt::gemm_bf16_panel_bytes(K) + 3) / 4;
  else if (K > 0 && p.b16) scratch_floats = static_cast<size_t>(kPanelN * std::min(kPanelK, K) + (c16 ? M * K : 0));

  // bf16 compute: op(A) of every batch item rounded to bf16 once, shared by its slices
  rt::GemmBf16 g16{p.ta, p.tb, M, N, K, alpha, beta};
  rt::Scratch a16_buf;
  uint16_t* a16 = nullptr;
  const int64_t a16_items = stride_a == 0 ? 1 : batch;
  const size_t a16_bytes = c16_native ? rt::gemm_bf16_a_bytes(M, K) : 0;
  if (c16_native) {
    a16 = a16_buf.get<uint16_t>(static_cast<int64_t>(a16_items * a16_bytes / 2));
    if (!a16) return rt_fail(RT_ERR_NOMEM, "%s: could not allocate %zu bytes for bf16 A", op, a16_items * a16_bytes);
    const int64_t rows = a16_items * M;
    auto round = [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1;) {
        int64_t bi = r / M, m0 = r % M, m1 = std::min(M, m0 + (r1 - r));
        rt::gemm_bf16_round_a(a16 + bi * (a16_bytes / 2), a + bi * stride_a, g16, m0, m1);
        r += m1 - m0;
      }
    };
    if (serial) round(0, rows);
    else rt::parallel_for(rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, K)), round);
  }

  std::atomic<bool> no_memory{false};
  auto run = [&](int64_t i0, int64_t i1) {
    float* scratch = nullptr;
    if (scratch_floats) {
      scratch = static_cast<float*>(rt_alloc(scratch_floats * sizeof(float)));
      if (!scratch) {
        no_memory = true;
        return;
      }
    }
    for (int64_t i = i0; i < i1; ++i) {
      int64_t bi = i / parts, s = i % parts;
      int64_t lo = s * slice, hi = std::min(extent, lo + slice);
      const float* ab = a + bi * stride_a;
      float* cb = c + bi * stride_c;
      const void* bb = p.b16 ? static_cast<const void*>(static_cast<const rt_bf16*>(b) + bi * stride_b)
                             : static_cast<const void*>(static_cast<const float*>(b) + bi * stride_b);
      if (K == 0) {
        if (split_n) scale_c(cb + lo, M, hi - lo, N, beta);
        else scale_c(cb + lo * N, hi - lo, N, N, beta);
      } else if (small) {
        small_m_slice(p, ab, bb, cb, lo, hi, scratch);
      } else if (c16_native) {
        const uint16_t* ab16 = a16 + (stride_a == 0 ? 0 : bi) * (a16_bytes / 2);
        rt::gemm_bf16_slice(g16, ab16, static_cast<const rt_bf16*>(bb), cb, lo, hi, reinterpret_cast<uint16_t*>(scratch));
      } else if (p.b16 && c16) {  // bf16 compute without AVX512_BF16: round A, then widen B
        float* ar = scratch + kPanelN * std::min(kPanelK, K);
        round_to_bf16(ar, ab, M * K);
        bf16_slice(p, ar, static_cast<const rt_bf16*>(bb), cb, lo, hi, scratch);
      } else if (p.b16) {
        bf16_slice(p, ab, static_cast<const rt_bf16*>(bb), cb, lo, hi, scratch);
      } else if (split_n) {
        sgemm_block(p, ab, static_cast<const float*>(bb), cb, 0, M, lo, hi);
      } else {
        sgemm_block(p, ab, static_cast<const float*>(bb), cb, lo, hi, 0, N);
      }
    }
    if (scratch) rt_free(scratch, scratch_floats * sizeof(float));
  };
  int64_t items = batch * parts;
  if (serial) run(0, items);
  else rt::parallel_for(items, 1, run);
  if (no_memory)
    return rt_fail(RT_ERR_NOMEM, "%s: could not allocate %zu bytes of scratch", op, scratch_floats * sizeof(float));
  return RT_OK;
}

}  // extern "C"
