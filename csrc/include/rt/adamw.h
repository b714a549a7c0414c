// AdamW with decoupled weight decay and bias correction. n parameters.
//   g' = g * grad_scale ; m = b1 m + (1-b1) g' ; v = b2 v + (1-b2) g'^2
//   p -= lr * (wd * p + (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps))
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

rt_status rt_adamw_step(float* p /*(n)*/, float* m /*(n)*/, float* v /*(n)*/, const float* g /*(n)*/, int64_t n,
                        float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step,
                        float grad_scale);

#ifdef __cplusplus
}
#endif
