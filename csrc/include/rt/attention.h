// Causal multi-head attention with grouped KV heads (GQA), tiled with an online
// softmax (flash-attention style); the forward saves the row logsumexp.
// B batch, Tq queries, Tk keys, Hq query heads, Hkv kv heads (Hq % Hkv == 0), D head dim.
// Visibility: key j is visible to query i iff kpos[j] >= 0, qpos[i] >= 0,
//   kpos[j] <= qpos[i] and (window <= 0 or qpos[i] - kpos[j] < window).
// NULL qpos means qpos[i] = i + (Tk - Tq) (queries are the last Tq keys); NULL kpos
// means kpos[j] = j. Negative positions mark padding. A query with no visible key
// gets out = 0 and lse = -inf. Routed subsets pass their original positions.
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

rt_status rt_attention_fwd(float* out /*(B,Tq,Hq,D)*/, float* lse /*(B,Hq,Tq) nullable*/, const float* q /*(B,Tq,Hq,D)*/,
                           const float* k /*(B,Tk,Hkv,D)*/, const float* v /*(B,Tk,Hkv,D)*/,
                           const int32_t* qpos /*(B,Tq) nullable*/, const int32_t* kpos /*(B,Tk) nullable*/,
                           int64_t B, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                           int64_t window);
// dq, dk, dv overwritten (each nullable when not needed, but dk and dv go together).
rt_status rt_attention_bwd(float* dq /*(B,Tq,Hq,D)*/, float* dk /*(B,Tk,Hkv,D)*/, float* dv /*(B,Tk,Hkv,D)*/,
                           const float* dout /*(B,Tq,Hq,D)*/, const float* q, const float* k, const float* v,
                           const float* out /*(B,Tq,Hq,D)*/, const float* lse /*(B,Hq,Tq)*/,
                           const int32_t* qpos /*nullable*/, const int32_t* kpos /*nullable*/, int64_t B, int64_t Tq,
                           int64_t Tk, int64_t Hq, int64_t Hkv, int64_t D, float scale, int64_t window);

#ifdef __cplusplus
}
#endif
