// AdamW with decoupled weight decay and bias correction. n parameters.
//   g' = g * grad_scale ; m = b1 m + (1-b1) g' ; v = b2 v + (1-b2) g'^2
//   p -= lr * (wd * p + (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps))
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

// The hyper-parameters are double, as PyTorch holds them (Python floats): 1 - beta2 and
// the bias corrections are formed in double and rounded to float once, so float32
// results track torch.optim.AdamW to rounding (float(0.999) would put 1e-5 relative
// error into 1 - beta2).
rt_status rt_adamw_step(float* p /*(n)*/, float* m /*(n)*/, float* v /*(n)*/, const float* g /*(n)*/, int64_t n,
                        double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step,
                        double grad_scale);

#ifdef __cplusplus
}
#endif
