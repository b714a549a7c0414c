// Fused router scoring (MindSkip): score = sigmoid(w · h) on the layer's normed
// input, gate = score >= threshold, and the compacted ascending list of executed
// rows with its count — one pass. T tokens, B sequences, C channels.
// Backward treats the hard gate with a straight-through estimator: the caller
// passes dL/dgate as dscore; this computes dz = dscore * s * (1 - s).
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

rt_status rt_router_token_fwd(float* score /*(T)*/, float* gate /*(T)*/, int32_t* exec_idx /*(T)*/,
                              int64_t* exec_count /*(1)*/, const float* h /*(T,C)*/, const float* w /*(C)*/,
                              int64_t T, int64_t C, float threshold);
// dw += sum_t dz[t] h[t] (nullable); dh[t] += dz[t] w (nullable, accumulates).
rt_status rt_router_token_bwd(float* dw /*(C) nullable*/, float* dh /*(T,C) nullable*/, const float* dscore /*(T)*/,
                              const float* score /*(T)*/, const float* h /*(T,C)*/, const float* w /*(C)*/, int64_t T,
                              int64_t C);
// Sequence-pooled: pooled[b] = mean of h[b,t] over t with mask[b,t] != 0 (NULL mask:
// all valid); score[b] = sigmoid(w · pooled[b]). A sequence with no valid token is RT_ERR_ARG.
rt_status rt_router_seq_fwd(float* pooled /*(B,C)*/, float* score /*(B)*/, float* gate /*(B)*/,
                            int32_t* exec_idx /*(B)*/, int64_t* exec_count /*(1)*/, const float* h /*(B,T,C)*/,
                            const int32_t* mask /*(B,T) nullable*/, const float* w /*(C)*/, int64_t B, int64_t T,
                            int64_t C, float threshold);
// dw += sum_b dz[b] pooled[b]; dh[b,t] += dz[b] w / n_b on valid t (accumulates).
rt_status rt_router_seq_bwd(float* dw /*(C) nullable*/, float* dh /*(B,T,C) nullable*/, const float* dscore /*(B)*/,
                            const float* score /*(B)*/, const float* pooled /*(B,C)*/, const int32_t* mask /*nullable*/,
                            const float* w /*(C)*/, int64_t B, int64_t T, int64_t C);

#ifdef __cplusplus
}
#endif
