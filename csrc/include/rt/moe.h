// Mixture of experts, as explicit index tensors (which assignment goes where).
// T tokens, E experts, K experts per token, C channels, I expert intermediate size,
// A = number of live assignments (T*K minus dropped ones). Assignment a = t*K + j.
// A dropped assignment (an expert router said no) has topk_idx = -1.
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

// probs = softmax(logits); top-K by probability (ties: lower expert id first);
// renorm: topk_w /= sum of the K selected probabilities.
rt_status rt_moe_route_fwd(float* probs /*(T,E)*/, int32_t* topk_idx /*(T,K)*/, float* topk_w /*(T,K)*/,
                           const float* logits /*(T,E)*/, int64_t T, int64_t E, int64_t K, int renorm);
// dlogits from dtopk_w, through the renormalisation and the softmax.
rt_status rt_moe_route_bwd(float* dlogits /*(T,E)*/, const float* dtopk_w /*(T,K)*/, const float* probs /*(T,E)*/,
                           const int32_t* topk_idx /*(T,K)*/, int64_t T, int64_t E, int64_t K, int renorm);
// Stable counting sort of live assignments by expert: perm[p] = a, bounds[e]..bounds[e+1]
// are expert e's rows, inv_perm[a] = p (-1 for dropped); *live = A.
rt_status rt_moe_sort(int32_t* perm /*(T*K)*/, int32_t* inv_perm /*(T*K)*/, int32_t* bounds /*(E+1)*/,
                      int64_t* live /*(1)*/, const int32_t* topk_idx /*(T,K)*/, int64_t T, int64_t E, int64_t K);
// Grouped expert SwiGLU over sorted rows: for p in expert e's bounds, token t = perm[p] / K,
//   y[p] = Wd[e] · (silu(Wg[e] x[t]) * (Wu[e] x[t])).
// Weights f32 or bf16. act_gate/act_up (nullable together) keep the pre-activations for backward.
rt_status rt_moe_experts_fwd(float* y /*(A,C)*/, float* act_gate /*(A,I) nullable*/, float* act_up /*(A,I) nullable*/,
                             const float* x /*(T,C)*/, const int32_t* perm /*(A)*/, const int32_t* bounds /*(E+1)*/,
                             const void* w_gate /*(E,I,C)*/, const void* w_up /*(E,I,C)*/,
                             const void* w_down /*(E,C,I)*/, rt_dtype w_dtype, int64_t T, int64_t E, int64_t K,
                             int64_t C, int64_t I);
// dx (T,C) accumulates; dw_* (f32, accumulate) nullable: only computed when asked.
rt_status rt_moe_experts_bwd(float* dx /*(T,C) nullable*/, float* dw_gate /*(E,I,C) nullable*/,
                             float* dw_up /*(E,I,C) nullable*/, float* dw_down /*(E,C,I) nullable*/,
                             const float* dy /*(A,C)*/, const float* x /*(T,C)*/, const int32_t* perm /*(A)*/,
                             const int32_t* bounds /*(E+1)*/, const void* w_gate, const void* w_up,
                             const void* w_down, rt_dtype w_dtype, const float* act_gate /*(A,I)*/,
                             const float* act_up /*(A,I)*/, int64_t T, int64_t E, int64_t K, int64_t C, int64_t I);
// out[t] = sum_j topk_w[t,j] * y[inv_perm[t*K+j]] over live assignments (overwrites out).
rt_status rt_moe_combine_fwd(float* out /*(T,C)*/, const float* y /*(A,C)*/, const int32_t* inv_perm /*(T*K)*/,
                             const float* topk_w /*(T,K)*/, int64_t T, int64_t K, int64_t C, int64_t A);
// dy[p] = topk_w[a] * dout[t]; dtopk_w[t,j] = <dout[t], y[p]> (0 for dropped).
rt_status rt_moe_combine_bwd(float* dy /*(A,C) nullable*/, float* dtopk_w /*(T,K) nullable*/,
                             const float* dout /*(T,C)*/, const float* y /*(A,C)*/, const int32_t* inv_perm /*(T*K)*/,
                             const float* topk_w /*(T,K)*/, int64_t T, int64_t K, int64_t C, int64_t A);

#ifdef __cplusplus
}
#endif
