// Gather and scatter of token rows: the compaction behind token-level skipping.
// N selected rows, R rows in the full tensor, C channels. Indices must be in [0, R).
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

// out[n] = x[idx[n]]
rt_status rt_gather_rows(float* out /*(N,C)*/, const float* x /*(R,C)*/, const int32_t* idx /*(N)*/, int64_t N,
                         int64_t R, int64_t C);
// out[idx[n]] = y[n] (accumulate = 0) or += y[n] (accumulate = 1; repeated indices add up).
rt_status rt_scatter_rows(float* out /*(R,C)*/, const float* y /*(N,C)*/, const int32_t* idx /*(N)*/, int64_t N,
                          int64_t R, int64_t C, int accumulate);

#ifdef __cplusplus
}
#endif
