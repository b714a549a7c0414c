// Fused softmax cross-entropy over the vocabulary. T rows, V vocabulary.
// Rows whose target equals ignore_index are not counted; the loss is the mean over
// counted rows. A target outside [0, V) (other than ignore_index) is RT_ERR_INDEX.
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

rt_status rt_cross_entropy_fwd(double* mean_loss /*(1)*/, int64_t* counted /*(1)*/, float* row_loss /*(T) nullable*/,
                               float* lse /*(T)*/, const float* logits /*(T,V)*/, const int32_t* targets /*(T)*/,
                               int64_t T, int64_t V, int32_t ignore_index);
// dlogits = (softmax(logits) - onehot(target)) * dloss_scale on counted rows, 0 on
// ignored rows. dloss_scale is usually dloss / counted. dlogits may equal logits.
rt_status rt_cross_entropy_bwd(float* dlogits /*(T,V)*/, const float* logits /*(T,V)*/, const float* lse /*(T)*/,
                               const int32_t* targets /*(T)*/, int64_t T, int64_t V, int32_t ignore_index,
                               float dloss_scale);

#ifdef __cplusplus
}
#endif
