// SwiGLU activation: out = silu(gate) * up, silu(x) = x * sigmoid(x). n elements.
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

rt_status rt_swiglu_fwd(float* out /*(n)*/, const float* gate /*(n)*/, const float* up /*(n)*/, int64_t n);
rt_status rt_swiglu_bwd(float* dgate /*(n)*/, float* dup /*(n)*/, const float* dout /*(n)*/, const float* gate /*(n)*/,
                        const float* up /*(n)*/, int64_t n);

#ifdef __cplusplus
}
#endif
