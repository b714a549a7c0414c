// Batched GEMM: C[b] = alpha * op(A[b]) · op(B[b]) + beta * C[b].
// M, N, K as in BLAS; op(A) is (M,K), op(B) is (K,N), C is (M,N), all row-major.
// A is (M,K) or (K,M) when trans_a; B is (K,N) or (N,K) when trans_b (a Linear
// weight (out,in) is B with trans_b = 1). stride_* are elements between batch
// items (0 broadcasts one matrix to every batch item).
// B may be bfloat16: it is widened to fp32 on the fly, panel by panel.
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

rt_status rt_matmul(float* c, const float* a, const void* b, rt_dtype b_dtype, int trans_a, int trans_b,
                    int64_t batch, int64_t M, int64_t N, int64_t K, int64_t stride_a, int64_t stride_b,
                    int64_t stride_c, float alpha, float beta);

#ifdef __cplusplus
}
#endif
