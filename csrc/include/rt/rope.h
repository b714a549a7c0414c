// Rotary position embedding, Hugging Face "rotate half" convention:
//   angle[t,i] = pos[t] * inv_freq[i], i < D/2
//   y[:, :D/2] = x1*cos - x2*sin ; y[:, D/2:] = x2*cos + x1*sin   (then * attn_scale)
// T rows (tokens, any batch flattened), H heads, D head dim (even). inv_freq carries
// the scaling variant (default, llama3, …), computed by the caller. out may equal x.
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

rt_status rt_rope_fwd(float* out /*(T,H,D)*/, const float* x /*(T,H,D)*/, const int32_t* pos /*(T)*/,
                      const float* inv_freq /*(D/2)*/, float attn_scale, int64_t T, int64_t H, int64_t D);
// The transpose of the rotation: dx = R(-angle) · dout * attn_scale. dx may equal dout.
rt_status rt_rope_bwd(float* dx /*(T,H,D)*/, const float* dout /*(T,H,D)*/, const int32_t* pos /*(T)*/,
                      const float* inv_freq /*(D/2)*/, float attn_scale, int64_t T, int64_t H, int64_t D);

#ifdef __cplusplus
}
#endif
