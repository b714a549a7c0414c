// Token embedding lookup. T tokens, V vocabulary rows, C channels.
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

// out[t] = table[ids[t]]; RT_ERR_INDEX if an id is outside [0, V).
rt_status rt_embedding_fwd(float* out /*(T,C)*/, const void* table /*(V,C)*/, rt_dtype table_dtype,
                           const int32_t* ids /*(T)*/, int64_t T, int64_t V, int64_t C);
// dtable[ids[t]] += dout[t] (scatter-add; repeated ids accumulate).
rt_status rt_embedding_bwd(float* dtable /*(V,C)*/, const float* dout /*(T,C)*/, const int32_t* ids /*(T)*/,
                           int64_t T, int64_t V, int64_t C);

#ifdef __cplusplus
}
#endif
