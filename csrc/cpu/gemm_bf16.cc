// bf16 compute GEMM on AVX-512 BF16 (vdpbf16ps): C = alpha·bf16(op(A))·op(B) + beta·C
// with B stored in bfloat16 (a Linear weight loaded as bf16), fp32 accumulation. Used by
// rt_matmul in the opt-in bf16 compute mode (rt_set_compute_dtype(RT_BF16)) for the
// compute-bound shapes; CPUs without AVX512_BF16 take matmul.cc's fallback instead
// (A rounded to bf16, B widened to fp32, sgemm): the same rounding, so the same results
// up to the fp32 summation order.
//
// Layout (shape letters: op(A) (M, K), op(B) (K, N), C (M, N); Kp = K rounded up to even):
//   Ab (M, Kp)        bf16, A rounded to nearest even once per task; the pair
//                     (A[m, 2p], A[m, 2p+1]) is one 32-bit word, broadcast to all lanes.
//   Bp (Kp/2, 64, 2)  bf16, a 64-column panel of op(B), k-pairs interleaved: one 64-byte
//                     load is 16 columns × one k-pair, exactly vdpbf16ps's operand.
// Microkernel: 6 rows × 64 columns = 24 zmm accumulators; per k-pair 4 panel loads, 6
// broadcasts and 24 vdpbf16ps (each 32 FLOPs: twice an fp32 FMA's work per instruction).
//
// Napkin math: M=512, N=2048, K=768: 1.6 GFLOP; the panel (64 × 768 × 2 B = 96 KiB)
// stays in L2 while all of Ab (768 KiB) streams past it: 64 FLOPs per byte of A read.
// Packing costs ~K·64 word moves per panel against 2·M·64·K FLOPs: < 1%.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "gemm_bf16.h"
#include "simd.h"

namespace rt {

namespace {

constexpr int64_t kNB = 64;  // panel columns (4 zmm of fp32 accumulators per row)
constexpr int kMR = 6;       // rows per microkernel call

#define RT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

// C[MR rows, nc ≤ 64 cols] = alpha·Σ_p a(m, p)·b(p, c) + beta·C, a/b as bf16 k-pairs.
template <int MR>
RT_BF16_TARGET inline void micro(const uint16_t* A /*(MR, lda)*/, int64_t lda, const uint16_t* Bp /*(kp_n, 64, 2)*/,
                                 int64_t kp_n, float* C, int64_t ldc, int64_t nc, float alpha, float beta) {
  __m512 acc[MR][4];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[m][j] = _mm512_setzero_ps();
  const int32_t* a32[MR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) a32[m] = reinterpret_cast<const int32_t*>(A + m * lda);
  for (int64_t p = 0; p < kp_n; ++p) {
    const uint16_t* bp = Bp + p * 2 * kNB;
    __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp);
    __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + 32);
    __m512bh b2 = (__m512bh)_mm512_loadu_si512(bp + 64);
    __m512bh b3 = (__m512bh)_mm512_loadu_si512(bp + 96);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      __m512bh av = (__m512bh)_mm512_set1_epi32(a32[m][p]);
      acc[m][0] = _mm512_dpbf16_ps(acc[m][0], av, b0);
      acc[m][1] = _mm512_dpbf16_ps(acc[m][1], av, b1);
      acc[m][2] = _mm512_dpbf16_ps(acc[m][2], av, b2);
      acc[m][3] = _mm512_dpbf16_ps(acc[m][3], av, b3);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
    float* c = C + m * ldc;
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      int64_t left = nc - 16 * j;
      if (left <= 0) break;
      __mmask16 k = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
      __m512 r = _mm512_mul_ps(va, acc[m][j]);
      if (beta != 0.f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k, c + 16 * j), r);
      _mm512_mask_storeu_ps(c + 16 * j, k, r);
    }
  }
}

// Rows [m0, m1) of Ab (M, Kp) = bf16(op(A)), zero column at K when K is odd. A (M, K) or, ta, (K, M).
RT_BF16_TARGET void round_a(uint16_t* Ab, const float* a, bool ta, int64_t M, int64_t K, int64_t Kp, int64_t m0,
                            int64_t m1) {
  for (int64_t m = m0; m < m1; ++m) {
    uint16_t* row = Ab + m * Kp;
    if (!ta) {
      const float* ar = a + m * K;
      int64_t k = 0;
      for (; k + 32 <= K; k += 32) {  // round to nearest even, 32 values per instruction
        __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(ar + k + 16), _mm512_loadu_ps(ar + k));
        _mm512_storeu_si512(row + k, (__m512i)h);
      }
      for (; k < K; ++k) row[k] = f32_to_bf16(ar[k]);
    } else {
      for (int64_t k = 0; k < K; ++k) row[k] = f32_to_bf16(a[k * M + m]);
    }
    if (Kp > K) row[K] = 0;
  }
}

// Bp (Kp/2, 64, 2) from columns [j0, j0+nb) of op(B); columns past nb and the k pad are 0.
void pack_b(uint16_t* Bp, const rt_bf16* b, bool tb, int64_t N, int64_t K, int64_t Kp, int64_t j0, int64_t nb) {
  const int64_t kp_n = Kp / 2;
  if (nb < kNB || Kp > K) std::memset(Bp, 0, static_cast<size_t>(kp_n * kNB * 2) * sizeof(uint16_t));
  if (tb) {  // B (N, K): column c of op(B) is row j0+c of B, its k-pairs contiguous
    for (int64_t c = 0; c < nb; ++c) {
      const rt_bf16* src = b + (j0 + c) * K;
      int64_t p = 0;
      if ((K & 1) == 0) {
        const uint32_t* s32 = reinterpret_cast<const uint32_t*>(src);
        uint32_t* d32 = reinterpret_cast<uint32_t*>(Bp);
        for (; p < kp_n; ++p) d32[p * kNB + c] = s32[p];
      } else {
        for (; 2 * p + 1 < K; ++p) {
          Bp[(p * kNB + c) * 2] = src[2 * p];
          Bp[(p * kNB + c) * 2 + 1] = src[2 * p + 1];
        }
        if (2 * p < K) Bp[(p * kNB + c) * 2] = src[2 * p];
      }
    }
  } else {  // B (K, N): rows k and k+1 interleaved
    for (int64_t k = 0; k < K; ++k) {
      const rt_bf16* src = b + k * N + j0;
      uint16_t* dst = Bp + (k / 2) * kNB * 2 + (k & 1);
      for (int64_t c = 0; c < nb; ++c) dst[2 * c] = src[c];
    }
  }
}

}  // namespace

bool gemm_bf16_native() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  return ok;
}

size_t gemm_bf16_a_bytes(int64_t M, int64_t K) { return static_cast<size_t>(M * (K + (K & 1))) * sizeof(uint16_t); }

size_t gemm_bf16_panel_bytes(int64_t K) { return static_cast<size_t>((K + (K & 1)) * kNB) * sizeof(uint16_t); }

void gemm_bf16_round_a(uint16_t* Ab, const float* a, const GemmBf16& g, int64_t m0, int64_t m1) {
  round_a(Ab, a, g.ta, g.M, g.K, g.K + (g.K & 1), m0, m1);
}

RT_BF16_TARGET void gemm_bf16_slice(const GemmBf16& g, const uint16_t* Ab, const rt_bf16* b, float* c, int64_t n0,
                                    int64_t n1, uint16_t* Bp) {
  const int64_t M = g.M, N = g.N, K = g.K, Kp = K + (K & 1);
  for (int64_t j0 = n0; j0 < n1; j0 += kNB) {
    const int64_t nb = std::min(kNB, n1 - j0);
    pack_b(Bp, b, g.tb, N, K, Kp, j0, nb);
    int64_t m = 0;
    for (; m + kMR <= M; m += kMR) micro<kMR>(Ab + m * Kp, Kp, Bp, Kp / 2, c + m * N + j0, N, nb, g.alpha, g.beta);
    switch (M - m) {
      case 1: micro<1>(Ab + m * Kp, Kp, Bp, Kp / 2, c + m * N + j0, N, nb, g.alpha, g.beta); break;
      case 2: micro<2>(Ab + m * Kp, Kp, Bp, Kp / 2, c + m * N + j0, N, nb, g.alpha, g.beta); break;
      case 3: micro<3>(Ab + m * Kp, Kp, Bp, Kp / 2, c + m * N + j0, N, nb, g.alpha, g.beta); break;
      case 4: micro<4>(Ab + m * Kp, Kp, Bp, Kp / 2, c + m * N + j0, N, nb, g.alpha, g.beta); break;
      case 5: micro<5>(Ab + m * Kp, Kp, Bp, Kp / 2, c + m * N + j0, N, nb, g.alpha, g.beta); break;
      default: break;
    }
  }
}

}  // namespace rt
