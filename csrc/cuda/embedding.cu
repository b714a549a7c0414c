// Token embedding on the GPU (the CUDA side of embedding.cc): forward gathers table rows
// (bf16 rows widened to fp32 on the way), backward scatter-adds dout rows into dtable.
//
// Ids are checked first by a small kernel (IndexFlag), so an out-of-range id fails the op
// before anything is written, as on the CPU; that check is the op's one host round-trip.
// Rows: a block is (columns × rows) threads, the column width a power of two fitted to C
// (float4 items when C % 4 == 0 and the buffers are aligned), so small and large C both
// keep all 256 threads busy.
//
// Backward: repeated ids meet in float atomicAdd (red.global.add.f32): contributions to a
// row then arrive in no fixed order, so dtable is deterministic only up to fp32 rounding
// (the CPU sums in token order).
//
// Napkin math: forward moves T·C·(4|2) bytes in and T·C·4 out (32768 × 2048 fp32: 512 MiB,
// ~0.12 ms at ~4.5 TB/s); backward reads T·C floats and read-modify-writes as many in L2.
#include <cstdint>

#include "../cpu/check.h"
#include "cuda_common.cuh"
#include "rt/embedding.h"

namespace {

using rt::cuda::check_launch;
using rt::cuda::stream;

constexpr int kThreads = 256;

inline bool aligned(const void* p, unsigned bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }

__global__ void check_ids_kernel(long long* flag, const int32_t* ids, int64_t T, int64_t V) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < T; t += stride)
    if (ids[t] < 0 || ids[t] >= V) rt::cuda::report_bad_index(flag, t, ids[t]);
}

// RT_ERR_INDEX (naming the first bad id) when an id is outside [0, V).
rt_status check_ids(const char* op, const int32_t* ids, int64_t T, int64_t V) {
  rt::cuda::IndexFlag flag;
  RT_TRY(flag.reset(op));
  check_ids_kernel<<<rt::cuda::grid_for(T, kThreads), kThreads, 0, stream()>>>(flag.ptr(), ids, T, V);
  RT_TRY(check_launch(op));
  return flag.check(op, "ids", V);
}

// Block shape for rows of `items` (float4 or scalar) items: x covers a row, y the rows.
dim3 row_block(int64_t items) {
  unsigned x = 32;
  while (x < kThreads && x < items) x *= 2;
  return dim3(x, kThreads / x);
}
unsigned row_grid(int64_t rows, dim3 block) {
  return rt::cuda::grid_for(rows, static_cast<int>(block.y), int64_t(rt::cuda::sm_count()) * 16);
}

__device__ __forceinline__ float4 load4(const float* row, int64_t j) { return reinterpret_cast<const float4*>(row)[j]; }
__device__ __forceinline__ float4 load4(const __nv_bfloat16* row, int64_t j) {
  uint2 bits = reinterpret_cast<const uint2*>(row)[j];
  return float4{__uint_as_float(bits.x << 16), __uint_as_float(bits.x & 0xffff0000u), __uint_as_float(bits.y << 16),
                __uint_as_float(bits.y & 0xffff0000u)};
}
__device__ __forceinline__ float load1(const float* row, int64_t c) { return row[c]; }
__device__ __forceinline__ float load1(const __nv_bfloat16* row, int64_t c) { return __bfloat162float(row[c]); }

// out[t] = table[ids[t]]; vec: C % 4 == 0 with out 16- and table 16|8-byte aligned.
template <typename W>
__global__ void gather_rows_kernel(float* out, const W* table, const int32_t* ids, int64_t T, int64_t C, bool vec) {
  const int64_t row_stride = int64_t(gridDim.x) * blockDim.y;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; t < T; t += row_stride) {
    const W* src = table + int64_t(ids[t]) * C;
    float* dst = out + t * C;
    if (vec) {
      for (int64_t j = threadIdx.x; j < C / 4; j += blockDim.x) reinterpret_cast<float4*>(dst)[j] = load4(src, j);
    } else {
      for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dst[c] = load1(src, c);
    }
  }
}

// dtable[ids[t]] += dout[t].
__global__ void scatter_add_rows_kernel(float* dtable, const float* dout, const int32_t* ids, int64_t T, int64_t C) {
  const int64_t row_stride = int64_t(gridDim.x) * blockDim.y;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; t < T; t += row_stride) {
    float* dst = dtable + int64_t(ids[t]) * C;
    const float* src = dout + t * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dst + c, src[c]);
  }
}

}  // namespace

extern "C" {

rt_status rt_cuda_embedding_fwd(float* out /*(T,C)*/, const void* table /*(V,C)*/, rt_dtype table_dtype,
                                const int32_t* ids /*(T)*/, int64_t T, int64_t V, int64_t C) {
  const char* op = "embedding_fwd";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE_NONNEG(V, op, "V");
  RT_REQUIRE_NONNEG(C, op, "C");
  RT_REQUIRE_DTYPE_FLOAT(table_dtype, op, "table");
  if (T == 0) return RT_OK;
  RT_REQUIRE_PTR(ids, op, "ids");
  RT_TRY(check_ids(op, ids, T, V));
  if (C == 0) return RT_OK;
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(table, op, "table");
  const bool bf16 = table_dtype == RT_BF16;
  const bool vec = C % 4 == 0 && aligned(out, 16) && aligned(table, bf16 ? 8 : 16);
  const dim3 block = row_block(vec ? C / 4 : C);
  const unsigned grid = row_grid(T, block);
  if (bf16)
    gather_rows_kernel<<<grid, block, 0, stream()>>>(out, static_cast<const __nv_bfloat16*>(table), ids, T, C, vec);
  else
    gather_rows_kernel<<<grid, block, 0, stream()>>>(out, static_cast<const float*>(table), ids, T, C, vec);
  return check_launch(op);
}

rt_status rt_cuda_embedding_bwd(float* dtable /*(V,C)*/, const float* dout /*(T,C)*/, const int32_t* ids /*(T)*/,
                                int64_t T, int64_t V, int64_t C) {
  const char* op = "embedding_bwd";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE_NONNEG(V, op, "V");
  RT_REQUIRE_NONNEG(C, op, "C");
  if (T == 0) return RT_OK;
  RT_REQUIRE_PTR(ids, op, "ids");
  RT_TRY(check_ids(op, ids, T, V));
  if (C == 0) return RT_OK;
  RT_REQUIRE_PTR(dtable, op, "dtable");
  RT_REQUIRE_PTR(dout, op, "dout");
  const dim3 block = row_block(C);
  scatter_add_rows_kernel<<<row_grid(T, block), block, 0, stream()>>>(dtable, dout, ids, T, C);
  return check_launch(op);
}

}  // extern "C"
