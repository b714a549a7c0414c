// Shared helpers of the CUDA kernels (device code and host glue). Every kernel runs
// on the engine's one stream (rt::cuda::stream()); every CUDA error becomes a status
// with a message (rt_fail), never an exit.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "rt/common.h"
#include "rt/cuda_ops.h"

namespace rt {
namespace cuda {

// The stream every op runs on (created with the context; non-blocking).
cudaStream_t stream();
// Initializes the device once; RT_ERR_UNAVAILABLE when there is no usable GPU.
rt_status ensure_device(const char* op);
// Multiprocessor count of the current device (for grid sizing).
int sm_count();

// Turns a CUDA error into a status with the op's name and CUDA's message.
rt_status fail_cuda(const char* op, cudaError_t err, const char* what);

// Checks the launch that just happened (configuration errors surface here).
inline rt_status check_launch(const char* op) {
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? RT_OK : fail_cuda(op, err, "kernel launch");
}

// Scratch device memory that returns itself to the caching allocator.
struct DeviceScratch {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceScratch() = default;
  explicit DeviceScratch(size_t n) : ptr(rt_cuda_alloc(n)), bytes(n) {}
  ~DeviceScratch() {
    if (ptr) rt_cuda_free(ptr, bytes);
  }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
  bool ok() const { return ptr != nullptr || bytes == 0; }
};

// A grid of `threads`-wide blocks covering n items, capped for grid-stride loops.
inline unsigned grid_for(int64_t n, int threads, int64_t cap = 65535LL * 8) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks);
}

// Reads one element of a float32 or bfloat16 array as float.
__device__ __forceinline__ float load_as_float(const void* p, rt_dtype dtype, int64_t i) {
  return dtype == RT_BF16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over a block of up to 1024 threads (blockDim.x a multiple of 32); every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.f;
    s = warp_sum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}
__device__ __forceinline__ float block_max(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < (int)(blockDim.x >> 5) ? partial[lane] : -INFINITY;
    s = warp_max(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

// True when a device pointer allows float4 / 16-byte vector access.
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---- row kernels (gather/scatter, router, moe) -------------------------------------------

// W = 4: one float4 (16-byte aligned p); W = 1: one float.
template <int W>
__device__ __forceinline__ void load_vec(float (&out)[W], const float* p) {
  if constexpr (W == 4) {
    float4 q = *reinterpret_cast<const float4*>(p);
    out[0] = q.x, out[1] = q.y, out[2] = q.z, out[3] = q.w;
  } else {
    out[0] = *p;
  }
}
template <int W>
__device__ __forceinline__ void store_vec(float* p, const float (&in)[W]) {
  if constexpr (W == 4)
    *reinterpret_cast<float4*>(p) = make_float4(in[0], in[1], in[2], in[3]);
  else
    *p = in[0];
}

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// Block shape for rows of `nv` vectors: threadIdx.x over a row (a power of two up to the
// block), threadIdx.y over rows, so short rows still fill a `threads`-wide block; the grid
// is capped at 32 blocks per SM (grid-stride over rows).
struct RowLaunch {
  dim3 block;
  unsigned grid;
};
inline RowLaunch row_launch(int64_t rows, int64_t nv, int threads = 256) {
  int bx = 1;
  while (bx < nv && bx < threads) bx <<= 1;
  const int by = threads / bx;
  int64_t blocks = (rows + by - 1) / by;
  const int64_t cap = static_cast<int64_t>(sm_count()) * 32;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return RowLaunch{dim3(bx, by), static_cast<unsigned>(blocks)};
}

// Records the first out-of-range index seen by a kernel (see IndexFlag).
__device__ __forceinline__ void report_bad_index(long long* flag, int64_t pos, int64_t value) {
  if (atomicCAS(reinterpret_cast<unsigned long long*>(flag), 0ULL, static_cast<unsigned long long>(pos + 1)) == 0ULL)
    flag[1] = value;
}

// Device-side index check: kernels set *flag to (bad index + 1) for the first
// out-of-range id; the host reads it back with read_index_flag after the launch.
struct IndexFlag {
  DeviceScratch buf{sizeof(long long) * 2};
  rt_status reset(const char* op);                      // zero it on the stream
  long long* ptr() const { return buf.as<long long>(); }
  // RT_OK, or RT_ERR_INDEX naming the first bad value and its position.
  rt_status check(const char* op, const char* what, int64_t limit);
};

}  // namespace cuda
}  // namespace rt

// Returns the status of a CUDA runtime call, failing with the op's name.
#define RT_CUDA_TRY(op, call)                                                      \
  do {                                                                             \
    cudaError_t rt_err_ = (call);                                                  \
    if (rt_err_ != cudaSuccess) return ::rt::cuda::fail_cuda((op), rt_err_, #call); \
  } while (0)
// Returns early from a host function when a status is not RT_OK.
#define RT_TRY(expr)                  \
  do {                                \
    rt_status rt_st_ = (expr);        \
    if (rt_st_ != RT_OK) return rt_st_; \
  } while (0)
// Device presence check at the top of every op.
#define RT_CUDA_OP(op) RT_TRY(::rt::cuda::ensure_device(op))
