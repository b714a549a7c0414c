// The CUDA backend when the addon is built without nvcc: it reports itself
// unavailable and every CUDA op fails with RT_ERR_UNAVAILABLE ("built without CUDA").
// The real backend (csrc/cuda/*.cu) replaces this file when CMake finds nvcc.
#include "rt/common.h"

extern "C" {
int rt_cuda_available(void) { return 0; }
int rt_cuda_device_count(void) { return 0; }
rt_status rt_cuda_require(const char* op) {
  return rt_fail(RT_ERR_UNAVAILABLE, "%s: router-tuning was built without CUDA (no nvcc at build time)", op);
}
}
