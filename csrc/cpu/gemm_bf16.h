// The bf16 compute GEMM (gemm_bf16.cc), called by rt_matmul in the bf16 compute mode.
#pragma once
#include <cstddef>
#include <cstdint>

#include "rt/common.h"

namespace rt {

struct GemmBf16 {
  bool ta, tb;  // op(A) = Aᵀ: A is (K, M); op(B) = Bᵀ: B is (N, K)
  int64_t M, N, K;
  float alpha, beta;
};

// True when the CPU has AVX-512 BF16 (vdpbf16ps); otherwise matmul.cc's widened fallback runs.
bool gemm_bf16_native();

// Bytes of A rounded to bf16, (M, K rounded up to even), and of one packed B panel.
size_t gemm_bf16_a_bytes(int64_t M, int64_t K);
size_t gemm_bf16_panel_bytes(int64_t K);

// Rows [m0, m1) of Ab = bf16(op(A)) (round to nearest even); only when gemm_bf16_native().
void gemm_bf16_round_a(uint16_t* Ab, const float* a, const GemmBf16& g, int64_t m0, int64_t m1);

// Columns [n0, n1) of C (M, N) = alpha·Ab·op(B) + beta·C; b bf16, Ab from
// gemm_bf16_round_a; Bp: gemm_bf16_panel_bytes(K) of 64-byte aligned scratch.
// Only when gemm_bf16_native().
void gemm_bf16_slice(const GemmBf16& g, const uint16_t* Ab, const rt_bf16* b, float* c, int64_t n0, int64_t n1,
                     uint16_t* Bp);

}  // namespace rt
