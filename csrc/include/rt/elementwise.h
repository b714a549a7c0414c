// Elementwise and small reduction ops (memory-bound). n = element count,
// R = rows, C = columns of a row-major matrix.
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

rt_status rt_copy_bytes(void* out, const void* in, int64_t bytes);
rt_status rt_fill_f32(float* out /*(n)*/, float value, int64_t n);
rt_status rt_add_f32(float* out /*(n)*/, const float* a /*(n)*/, const float* b /*(n)*/, int64_t n);
rt_status rt_mul_f32(float* out /*(n)*/, const float* a /*(n)*/, const float* b /*(n)*/, int64_t n);
rt_status rt_scale_f32(float* out /*(n)*/, const float* a /*(n)*/, float s, int64_t n);
// y += alpha * x
rt_status rt_axpy_f32(float* y /*(n)*/, const float* x /*(n)*/, float alpha, int64_t n);
// out = x + g[r] * f ; g NULL means g = 1 everywhere (a plain residual add).
rt_status rt_gated_residual_fwd(float* out /*(R,C)*/, const float* x /*(R,C)*/, const float* f /*(R,C)*/,
                                const float* g /*(R) nullable*/, int64_t R, int64_t C);
// df = g[r] * dout ; dg[r] = <dout[r], f[r]>. (dx = dout is the caller's identity.)
rt_status rt_gated_residual_bwd(float* df /*(R,C) nullable*/, float* dg /*(R) nullable*/, const float* dout /*(R,C)*/,
                                const float* f /*(R,C)*/, const float* g /*(R) nullable*/, int64_t R, int64_t C);
// x[r, :] += bias  (bias f32 or bf16)
rt_status rt_add_bias_fwd(float* x /*(R,C)*/, const void* bias /*(C)*/, rt_dtype bias_dtype, int64_t R, int64_t C);
// dbias (+)= sum over rows of dout
rt_status rt_add_bias_bwd(float* dbias /*(C)*/, const float* dout /*(R,C)*/, int64_t R, int64_t C, int accumulate);
// out = min(max(x, lo), hi)  (OLMoE clip_qkv); backward passes dout where lo < x < hi.
rt_status rt_clamp_fwd(float* out /*(n)*/, const float* x /*(n)*/, float lo, float hi, int64_t n);
rt_status rt_clamp_bwd(float* dx /*(n)*/, const float* dout /*(n)*/, const float* x /*(n)*/, float lo, float hi, int64_t n);
// out = sum(x^2) in double (gradient clipping, norms)
rt_status rt_sum_squares_f32(double* out /*(1)*/, const float* x /*(n)*/, int64_t n);
rt_status rt_cast_f32_to_bf16(rt_bf16* out /*(n)*/, const float* in /*(n)*/, int64_t n);  // round to nearest even
rt_status rt_cast_bf16_to_f32(float* out /*(n)*/, const rt_bf16* in /*(n)*/, int64_t n);

#ifdef __cplusplus
}
#endif
