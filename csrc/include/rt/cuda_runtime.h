// CUDA runtime of the kernel ABI: device memory (a caching allocator), copies, the
// engine's one stream, and facts for backendInfo(). Implemented in csrc/cuda/runtime.cu;
// the no-nvcc stub reports the backend unavailable. Every failure is a status with a
// message in rt_last_error() — a CUDA error never exits the process.
#pragma once
#include "rt/common.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef enum rt_copy_kind {
  RT_COPY_H2D = 0,  // host → device
  RT_COPY_D2H = 1,  // device → host (waits for the stream)
  RT_COPY_D2D = 2   // device → device (on the stream)
} rt_copy_kind;

typedef struct rt_cuda_memory {
  int64_t allocated_bytes;  // held by live tensors
  int64_t peak_bytes;       // high-water mark of allocated_bytes
  int64_t cached_bytes;     // freed blocks kept for reuse
  int64_t live_buffers;
} rt_cuda_memory;

// Device memory from the caching allocator (256-byte aligned); NULL on failure with
// rt_last_error set. rt_cuda_free must get the same byte count.
void* rt_cuda_alloc(size_t bytes);
void rt_cuda_free(void* ptr, size_t bytes);
rt_status rt_cuda_empty_cache(void);  // returns cached blocks to the driver
void rt_cuda_memory_stats(rt_cuda_memory* out);

rt_status rt_cuda_memcpy(void* dst, const void* src, int64_t bytes, rt_copy_kind kind);
rt_status rt_cuda_synchronize(void);
rt_status rt_cuda_device_name(char* out, int64_t capacity);
// "cublasLt x.y" / "cublas x.y" when found at run time through dlopen, else "builtin".
const char* rt_cuda_blas_info(void);
// 0: automatic (cuBLAS when present), 1: always the built-in tensor-core GEMM (tests).
rt_status rt_cuda_set_gemm_backend(int backend);

#ifdef __cplusplus
}
#endif
