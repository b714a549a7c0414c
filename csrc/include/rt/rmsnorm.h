// RMSNorm over the last dimension: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
// R rows, C channels. (Per-head q/k norm is R = T*H rows of C = D.)
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

rt_status rt_rmsnorm_fwd(float* out /*(R,C)*/, float* rstd /*(R) nullable*/, const float* x /*(R,C)*/,
                         const float* w /*(C)*/, int64_t R, int64_t C, float eps);
// dx overwritten; dw (+)= sum over rows (accumulates) when not NULL.
rt_status rt_rmsnorm_bwd(float* dx /*(R,C) nullable*/, float* dw /*(C) nullable*/, const float* dout /*(R,C)*/,
                         const float* x /*(R,C)*/, const float* w /*(C)*/, const float* rstd /*(R)*/, int64_t R,
                         int64_t C);

#ifdef __cplusplus
}
#endif
