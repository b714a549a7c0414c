// router-tuning kernel ABI: shared types, status codes, memory and runtime.
//
// Conventions for every op in csrc/include/rt/*.h:
//   rt_status rt_<op>_<fwd|bwd>(outputs…, inputs…, sizes…, options…)
//   - pointers are row-major and contiguous; each is commented with its shape,
//     using the letters defined in the op's header (T tokens, C channels, …);
//   - sizes are int64_t; a nullable pointer says so in its comment;
//   - a failing op returns a status and leaves a message in rt_last_error();
//     no op ever calls exit/abort.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum rt_status {
  RT_OK = 0,
  RT_ERR_ARG = 1,          // a scalar argument out of its valid range
  RT_ERR_SHAPE = 2,        // sizes inconsistent with each other
  RT_ERR_DTYPE = 3,        // unsupported element type
  RT_ERR_INDEX = 4,        // an index tensor holds an out-of-range value
  RT_ERR_NOMEM = 5,        // allocation failed
  RT_ERR_UNAVAILABLE = 6,  // backend not built or not present
  RT_ERR_INTERNAL = 7
} rt_status;

typedef enum rt_dtype { RT_F32 = 0, RT_BF16 = 1, RT_I32 = 2 } rt_dtype;

typedef uint16_t rt_bf16;  // bfloat16 bits: the top half of an IEEE float32

// Message describing the last failure on the calling thread ("" if none).
const char* rt_last_error(void);
// Records a printf-style message for the calling thread and returns `status`.
rt_status rt_fail(rt_status status, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char* rt_status_name(rt_status status);
size_t rt_dtype_size(rt_dtype dtype);
const char* rt_dtype_name(rt_dtype dtype);

// 64-byte aligned host memory, counted in the runtime's memory statistics.
void* rt_alloc(size_t bytes);  // NULL on failure (0 bytes gives a valid pointer)
void rt_free(void* ptr, size_t bytes);
int64_t rt_allocated_bytes(void);
int64_t rt_peak_bytes(void);
int64_t rt_live_buffers(void);

// The engine's one thread pool (RT_NUM_THREADS, default: all cores).
// OpenBLAS is pinned to one thread per call: large GEMMs are split across this pool.
int rt_num_threads(void);
void rt_set_num_threads(int n);
// Compute dtype of the CPU GEMMs whose B operand is stored in bfloat16 (process-wide,
// default RT_F32): RT_F32 widens B to fp32 (exact products); RT_BF16 rounds A to bf16 per
// GEMM and multiplies in bf16 with fp32 accumulation (AVX-512 BF16 where the CPU has it,
// widened fp32 arithmetic on the same rounded values elsewhere). RT_ERR_DTYPE for RT_I32.
rt_status rt_set_compute_dtype(rt_dtype dtype);
rt_dtype rt_compute_dtype(void);
int rt_bf16_native(void);  // 1 when bf16 compute runs natively (AVX512_BF16, not emulated)
void rt_set_bf16_emulate(int on);  // tests: run the no-AVX512_BF16 fallback on any CPU
const char* rt_simd_level(void);  // "avx512" | "avx2" | "scalar": what the dispatcher picks
const char* rt_blas_info(void);

#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif
// CUDA backend presence (the no-CUDA build links a stub returning 0 / RT_ERR_UNAVAILABLE).
int rt_cuda_available(void);
int rt_cuda_device_count(void);
rt_status rt_cuda_require(const char* op);
#ifdef __cplusplus
}
#endif
