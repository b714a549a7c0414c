// Row gather and scatter on the device: the compaction behind token-level skipping.
//
// Indices are validated first by a small kernel (IndexFlag; the host checks before any
// row moves, so a bad index leaves the output untouched, as on the CPU). The same pass
// tells whether the indices are strictly ascending (the router's exec_idx).
// Row copies: one row per threadIdx.y, columns over threadIdx.x, float4 when C % 4 == 0
// and the buffers are 16-byte aligned.
// Scatter with any order / repeats: a stable radix sort of (idx, n) groups the sources by
// destination in index order; the last source of a row wins (overwrite) or the sources
// are added in index order (accumulate) — deterministic, same result as the CPU.
//
// Napkin math (R = 16384, C = 4096, N = R/2): gather reads and writes N·C floats
// (2 × 128 MiB, ~60 us at ~4.5 TB/s); the index pass reads N ints.
#include <cub/device/device_radix_sort.cuh>

#include "cuda_common.cuh"

namespace rt {
namespace cuda {
namespace {

constexpr int kThreads = 256;



rt_status scratch_ok(const DeviceScratch& s, const char* op) {
  return s.ok() ? RT_OK
                : rt_fail(RT_ERR_NOMEM, "%s: could not allocate %lld bytes of device scratch", op, (long long)s.bytes);
}


// Reports the first out-of-range idx; *not_ascending = 1 when some idx[n] <= idx[n-1].
__global__ void check_indices_kernel(long long* __restrict__ flag, int* __restrict__ not_ascending,
                                     const int32_t* __restrict__ idx, int64_t N, int64_t R) {
  for (int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; n < N;
       n += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t v = idx[n];
    if (v < 0 || v >= R) report_bad_index(flag, n, v);
    if (not_ascending && n > 0 && v <= idx[n - 1]) *not_ascending = 1;
  }
}

// Validates idx (N) against [0, R) with the CPU's wording; when ascending != nullptr,
// also says whether idx is strictly ascending. Waits for the device.
rt_status check_indices(bool* ascending, const int32_t* idx, int64_t N, int64_t R, const char* op) {
  IndexFlag flag;
  RT_TRY(scratch_ok(flag.buf, op));
  RT_TRY(flag.reset(op));
  DeviceScratch order(ascending ? sizeof(int) : 0);
  RT_TRY(scratch_ok(order, op));
  int* not_ascending = ascending ? order.as<int>() : nullptr;
  if (not_ascending) RT_CUDA_TRY(op, cudaMemsetAsync(not_ascending, 0, sizeof(int), stream()));
  check_indices_kernel<<<grid_for(N, kThreads), kThreads, 0, stream()>>>(flag.ptr(), not_ascending, idx, N, R);
  RT_TRY(check_launch(op));
  int unordered = 0;
  if (not_ascending)
    RT_CUDA_TRY(op, cudaMemcpyAsync(&unordered, not_ascending, sizeof(int), cudaMemcpyDeviceToHost, stream()));
  RT_CUDA_TRY(op, cudaStreamSynchronize(stream()));
  RT_TRY(flag.check(op, "idx", R));
  if (ascending) *ascending = unordered == 0;
  return RT_OK;
}

// out[n] = x[idx[n]]
template <int W>
__global__ void gather_rows_kernel(float* __restrict__ out, const float* __restrict__ x,
                                   const int32_t* __restrict__ idx, int64_t N, int64_t C) {
  const int64_t nv = C / W;
  for (int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; n < N;
       n += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const float* src = x + static_cast<int64_t>(idx[n]) * C;
    float* dst = out + n * C;
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
      float r[W];
      load_vec<W>(r, src + v * W);
      store_vec<W>(dst + v * W, r);
    }
  }
}

// Distinct destinations: out[idx[n]] = y[n] or += y[n].
template <int W>
__global__ void scatter_rows_kernel(float* __restrict__ out, const float* __restrict__ y,
                                    const int32_t* __restrict__ idx, int64_t N, int64_t C, int accumulate) {
  const int64_t nv = C / W;
  for (int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; n < N;
       n += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    float* dst = out + static_cast<int64_t>(idx[n]) * C;
    const float* src = y + n * C;
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
      float r[W];
      load_vec<W>(r, src + v * W);
      if (accumulate) {
        float o[W];
        load_vec<W>(o, dst + v * W);
#pragma unroll
        for (int k = 0; k < W; ++k) r[k] = o[k] + r[k];
      }
      store_vec<W>(dst + v * W, r);
    }
  }
}

__global__ void iota_kernel(int64_t* __restrict__ out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = i;
}

// Sources grouped by destination (dest ascending, sources in index order within a row):
// overwrite: the group's last source is copied; accumulate: the group's first position
// adds all its sources in order.
template <int W>
__global__ void scatter_grouped_kernel(float* __restrict__ out, const float* __restrict__ y,
                                       const uint32_t* __restrict__ dest /*(N) sorted*/,
                                       const int64_t* __restrict__ src /*(N)*/, int64_t N, int64_t C,
                                       int accumulate) {
  const int64_t nv = C / W;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; q < N;
       q += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const uint32_t r = dest[q];
    float* dst = out + static_cast<int64_t>(r) * C;
    if (!accumulate) {
      if (q + 1 < N && dest[q + 1] == r) continue;  // a later source overwrites this row
      const float* s = y + src[q] * C;
      for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
        float t[W];
        load_vec<W>(t, s + v * W);
        store_vec<W>(dst + v * W, t);
      }
      continue;
    }
    if (q > 0 && dest[q - 1] == r) continue;  // the group's first position owns the row
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
      float acc[W];
      load_vec<W>(acc, dst + v * W);
      for (int64_t k = q; k < N && dest[k] == r; ++k) {
        float t[W];
        load_vec<W>(t, y + src[k] * C + v * W);
#pragma unroll
        for (int i = 0; i < W; ++i) acc[i] += t[i];
      }
      store_vec<W>(dst + v * W, acc);
    }
  }
}

// Any order / repeated indices: stable radix sort of (idx, n), then grouped rows.
rt_status scatter_grouped(float* out, const float* y, const int32_t* idx, int64_t N, int64_t R, int64_t C,
                          int accumulate, bool vec, const char* op) {
  int end_bit = 1;
  while (end_bit < 31 && (int64_t(1) << end_bit) < R) ++end_bit;
  DeviceScratch keys_out(sizeof(uint32_t) * static_cast<size_t>(N)), vals_in(sizeof(int64_t) * static_cast<size_t>(N)),
      vals_out(sizeof(int64_t) * static_cast<size_t>(N));
  RT_TRY(scratch_ok(keys_out, op));
  RT_TRY(scratch_ok(vals_in, op));
  RT_TRY(scratch_ok(vals_out, op));
  iota_kernel<<<grid_for(N, kThreads), kThreads, 0, stream()>>>(vals_in.as<int64_t>(), N);
  RT_TRY(check_launch(op));
  const auto* keys_in = reinterpret_cast<const uint32_t*>(idx);  // validated: non-negative
  size_t temp_bytes = 0;
  RT_CUDA_TRY(op, cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out.as<uint32_t>(),
                                                  vals_in.as<int64_t>(), vals_out.as<int64_t>(), N, 0, end_bit,
                                                  stream()));
  DeviceScratch temp(temp_bytes);
  RT_TRY(scratch_ok(temp, op));
  RT_CUDA_TRY(op, cub::DeviceRadixSort::SortPairs(temp.ptr, temp_bytes, keys_in, keys_out.as<uint32_t>(),
                                                  vals_in.as<int64_t>(), vals_out.as<int64_t>(), N, 0, end_bit,
                                                  stream()));
  const RowLaunch l = row_launch(N, vec ? C / 4 : C);
  if (vec)
    scatter_grouped_kernel<4><<<l.grid, l.block, 0, stream()>>>(out, y, keys_out.as<uint32_t>(),
                                                                vals_out.as<int64_t>(), N, C, accumulate);
  else
    scatter_grouped_kernel<1><<<l.grid, l.block, 0, stream()>>>(out, y, keys_out.as<uint32_t>(),
                                                                vals_out.as<int64_t>(), N, C, accumulate);
  return check_launch(op);
}

}  // namespace
}  // namespace cuda
}  // namespace rt

using namespace rt::cuda;

extern "C" {

rt_status rt_cuda_gather_rows(float* out, const float* x, const int32_t* idx, int64_t N, int64_t R, int64_t C) {
  const char* op = "gather_rows";
  RT_CUDA_OP(op);
  if (N < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected N >= 0, received %lld", op, (long long)N);
  if (R < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected R >= 0, received %lld", op, (long long)R);
  if (C < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected C >= 0, received %lld", op, (long long)C);
  if (N == 0) return RT_OK;
  RT_TRY(check_indices(nullptr, idx, N, R, op));
  if (C == 0) return RT_OK;
  const bool vec = C % 4 == 0 && aligned16(out) && aligned16(x);
  const RowLaunch l = row_launch(N, vec ? C / 4 : C);
  if (vec)
    gather_rows_kernel<4><<<l.grid, l.block, 0, stream()>>>(out, x, idx, N, C);
  else
    gather_rows_kernel<1><<<l.grid, l.block, 0, stream()>>>(out, x, idx, N, C);
  return check_launch(op);
}

rt_status rt_cuda_scatter_rows(float* out, const float* y, const int32_t* idx, int64_t N, int64_t R, int64_t C,
                               int accumulate) {
  const char* op = "scatter_rows";
  RT_CUDA_OP(op);
  if (N < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected N >= 0, received %lld", op, (long long)N);
  if (R < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected R >= 0, received %lld", op, (long long)R);
  if (C < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected C >= 0, received %lld", op, (long long)C);
  if (N == 0) return RT_OK;
  bool ascending = true;
  RT_TRY(check_indices(&ascending, idx, N, R, op));
  if (C == 0) return RT_OK;
  const bool vec = C % 4 == 0 && aligned16(out) && aligned16(y);
  if (!ascending) return scatter_grouped(out, y, idx, N, R, C, accumulate, vec, op);
  const RowLaunch l = row_launch(N, vec ? C / 4 : C);
  if (vec)
    scatter_rows_kernel<4><<<l.grid, l.block, 0, stream()>>>(out, y, idx, N, C, accumulate);
  else
    scatter_rows_kernel<1><<<l.grid, l.block, 0, stream()>>>(out, y, idx, N, C, accumulate);
  return check_launch(op);
}

}  // extern "C"
