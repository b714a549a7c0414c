// RMSNorm on the GPU (the CUDA side of rmsnorm.cc), forward and backward:
//   y = (x * rstd) * w,  rstd = 1 / sqrt(mean(x^2) + eps)        (R rows, C channels)
//   dx = rstd*dout*w - k*x,  k = rstd^3 * Σ(dout*w*x) / C;  dw += Σ_rows dout*x*rstd
//
// A row belongs to a group of threads: one warp per row for C <= 512, one block per row
// above. With C % 4 == 0 and 16-byte aligned buffers (the usual case) each thread keeps
// its float4 slice of the row in registers (kVec float4 per thread), so a row is read
// from memory once: sum of squares, group reduction, scale — and w's slice is loaded once
// per group, not per row. Other shapes (odd C, views at odd offsets, C > 8192) take the
// generic path: one block per row, scalar loads, the second pass re-reading the row from
// L1/L2. Groups loop over rows r = g, g + n_groups, ... (grid-stride).
//
// rstd is computed in double from the fp32 sum of squares, as the CPU does.
//
// dw (deterministic, no atomics): the backward accumulates dout*x*rstd for its rows in
// registers (per thread, its own columns) and writes one partial row per block into a
// scratch (n_blocks, C) — warp mode first adds its 8 warps in order through shared
// memory. A second kernel adds the partials in a fixed order (strided sums, then a fixed
// shuffle tree) into dw. n_blocks depends only on R and C, never on the device, so the
// same inputs give the same bits.
//
// Napkin math (memory-bound): forward ~8*R*C bytes (x in, y out), backward ~12*R*C
// (dout and x in, dx out) plus 8*n_blocks*C for the partials (~16 MB at most).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../cpu/check.h"
#include "cuda_common.cuh"
#include "rt/rmsnorm.h"

namespace {

using rt::cuda::block_sum;
using rt::cuda::aligned16;
using rt::cuda::check_launch;
using rt::cuda::DeviceScratch;
using rt::cuda::stream;
using rt::cuda::warp_sum;

constexpr int kWarpsPerBlock = 8;                // warp mode: 256-thread blocks, a row per warp
constexpr int kWarpThreads = 32 * kWarpsPerBlock;
constexpr int64_t kWarpBlocksMax = 1024;         // warp mode grid cap: 8192 warps
constexpr int kWarpVecMax = 4;                   // warp mode holds up to 4 float4 per lane: C <= 512
constexpr int kBlockThreadsMax = 512;            // block mode (cached and generic)
constexpr int kBlockVec = 4;                     // block mode cached: C <= 4*4*512 = 8192
constexpr int64_t kBlockModeThreads = 1 << 18;   // block mode grid cap: ~this many threads in all
constexpr int64_t kMaxPartFloats = 1 << 22;      // dw scratch cap: n_blocks * C <= 4M floats
constexpr int kReduceCols = 8, kReduceRows = 128;  // dw reduction tile (1024 threads)

inline int round_up32(int64_t n) { return static_cast<int>((n + 31) / 32 * 32); }

// The threads that share a row: a warp (kWarp) or a whole block.
struct RowGroup {
  int lane;       // this thread's index in the group
  int size;       // threads in the group
  int64_t id;     // the group's index: it handles rows id, id + count, ...
  int64_t count;  // groups in the grid
};

template <bool kWarp>
__device__ __forceinline__ RowGroup row_group() {
  if constexpr (kWarp) {
    const int warps = blockDim.x / 32;
    return {int(threadIdx.x & 31), 32, int64_t(blockIdx.x) * warps + threadIdx.x / 32, int64_t(gridDim.x) * warps};
  } else {
    return {int(threadIdx.x), int(blockDim.x), int64_t(blockIdx.x), int64_t(gridDim.x)};
  }
}

// Sum over the group; every thread of it gets the total. Block mode has barriers: the
// whole block must call it (it does: a block's threads share their rows).
template <bool kWarp>
__device__ __forceinline__ float group_sum(float v) {
  if constexpr (kWarp) return warp_sum(v);
  else return block_sum(v);
}

__device__ __forceinline__ float row_rstd(float sum_squares, int64_t C, float eps) {
  return static_cast<float>(1.0 / sqrt(static_cast<double>(sum_squares) / static_cast<double>(C) +
                                       static_cast<double>(eps)));
}

__device__ __forceinline__ float4 load4(const float* p, int64_t i) { return reinterpret_cast<const float4*>(p)[i]; }
__device__ __forceinline__ void store4(float* p, int64_t i, float4 v) { reinterpret_cast<float4*>(p)[i] = v; }

// ---- forward ------------------------------------------------------------------------

// Each thread holds float4 i = lane + k*size (k < kVec) of its rows; C4*4 = C. With one
// float4 per lane (C <= 128: per-head q/k norms) a warp takes two rows at a time, so
// twice the loads are in flight.
template <bool kWarp, int kVec>
__global__ void __launch_bounds__(kWarp ? kWarpThreads : kBlockThreadsMax)
    rmsnorm_fwd_cached(float* out, float* rstd, const float* x, const float* w, int64_t R, int64_t C, float eps) {
  constexpr int kRows = kWarp && kVec == 1 ? 2 : 1;
  const RowGroup g = row_group<kWarp>();
  const int64_t C4 = C / 4;
  float4 wv[kVec];
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    const int64_t i = g.lane + int64_t(k) * g.size;
    wv[k] = i < C4 ? load4(w, i) : float4{};
  }
  for (int64_t r0 = g.id; r0 < R; r0 += kRows * g.count) {
    float4 xv[kRows][kVec];
    float ss[kRows];
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const int64_t r = r0 + j * g.count;  // r < R is the same for the whole group
      ss[j] = 0.f;
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const int64_t i = g.lane + int64_t(k) * g.size;
        xv[j][k] = r < R && i < C4 ? load4(x + r * C, i) : float4{};
        ss[j] += xv[j][k].x * xv[j][k].x + xv[j][k].y * xv[j][k].y + xv[j][k].z * xv[j][k].z +
                 xv[j][k].w * xv[j][k].w;
      }
    }
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const int64_t r = r0 + j * g.count;
      const float rs = row_rstd(group_sum<kWarp>(ss[j]), C, eps);
      if (r >= R) continue;
      if (rstd && g.lane == 0) rstd[r] = rs;
      float* outr = out + r * C;  // (C)
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const int64_t i = g.lane + int64_t(k) * g.size;
        if (i < C4)
          store4(outr, i,
                 float4{(xv[j][k].x * rs) * wv[k].x, (xv[j][k].y * rs) * wv[k].y, (xv[j][k].z * rs) * wv[k].z,
                        (xv[j][k].w * rs) * wv[k].w});
      }
    }
  }
}

// Any C, any alignment: one block per row, two passes (the second from cache).
__global__ void __launch_bounds__(kBlockThreadsMax)
    rmsnorm_fwd_generic(float* out, float* rstd, const float* x, const float* w, int64_t R, int64_t C, float eps) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* xr = x + r * C;  // (C)
    float ss = 0.f;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) ss += xr[i] * xr[i];
    const float rs = row_rstd(block_sum(ss), C, eps);
    if (rstd && threadIdx.x == 0) rstd[r] = rs;
    float* outr = out + r * C;  // (C)
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) outr[i] = (xr[i] * rs) * w[i];
  }
}

// ---- backward -----------------------------------------------------------------------

// dx (when not NULL) and this block's dw partial row parts[blockIdx.x] (when not NULL).
template <bool kWarp, int kVec>
__global__ void __launch_bounds__(kWarp ? kWarpThreads : kBlockThreadsMax)
    rmsnorm_bwd_cached(float* dx, float* parts /*(gridDim.x, C) nullable*/, const float* dout, const float* x,
                       const float* w, const float* rstd, int64_t R, int64_t C) {
  const RowGroup g = row_group<kWarp>();
  const int64_t C4 = C / 4;
  float4 wv[kVec], acc[kVec];
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    const int64_t i = g.lane + int64_t(k) * g.size;
    wv[k] = dx && i < C4 ? load4(w, i) : float4{};
    acc[k] = float4{};
  }
  for (int64_t r = g.id; r < R; r += g.count) {
    const float* xr = x + r * C;     // (C)
    const float* dr = dout + r * C;  // (C)
    float4 xv[kVec], dv[kVec];
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const int64_t i = g.lane + int64_t(k) * g.size;
      xv[k] = i < C4 ? load4(xr, i) : float4{};
      dv[k] = i < C4 ? load4(dr, i) : float4{};
    }
    const float rs = rstd[r];
    if (dx) {
      float dot = 0.f;
#pragma unroll
      for (int k = 0; k < kVec; ++k)
        dot += dv[k].x * wv[k].x * xv[k].x + dv[k].y * wv[k].y * xv[k].y + dv[k].z * wv[k].z * xv[k].z +
               dv[k].w * wv[k].w * xv[k].w;
      dot = group_sum<kWarp>(dot);
      const float kk =
          static_cast<float>(static_cast<double>(rs) * rs * rs * static_cast<double>(dot) / static_cast<double>(C));
      float* dxr = dx + r * C;  // (C)
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const int64_t i = g.lane + int64_t(k) * g.size;
        if (i < C4)
          store4(dxr, i,
                 float4{rs * dv[k].x * wv[k].x - kk * xv[k].x, rs * dv[k].y * wv[k].y - kk * xv[k].y,
                        rs * dv[k].z * wv[k].z - kk * xv[k].z, rs * dv[k].w * wv[k].w - kk * xv[k].w});
      }
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      acc[k].x += dv[k].x * xv[k].x * rs;
      acc[k].y += dv[k].y * xv[k].y * rs;
      acc[k].z += dv[k].z * xv[k].z * rs;
      acc[k].w += dv[k].w * xv[k].w * rs;
    }
  }
  if (!parts) return;
  float* part = parts + int64_t(blockIdx.x) * C;  // (C)
  if constexpr (kWarp) {
    // The block's warps, added in warp order: C4 <= 32 * kWarpVecMax float4 per warp.
    __shared__ float4 tile[kWarpsPerBlock][32 * kWarpVecMax];
    const int warp = threadIdx.x / 32;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const int64_t i = g.lane + int64_t(k) * 32;
      if (i < C4) tile[warp][i] = acc[k];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < C4; i += blockDim.x) {
      float4 s = tile[0][i];
      for (int v = 1; v < kWarpsPerBlock; ++v) {
        s.x += tile[v][i].x;
        s.y += tile[v][i].y;
        s.z += tile[v][i].z;
        s.w += tile[v][i].w;
      }
      store4(part, i, s);
    }
  } else {
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const int64_t i = g.lane + int64_t(k) * g.size;
      if (i < C4) store4(part, i, acc[k]);
    }
  }
}

// Any C, any alignment: one block per row. Every block has at least one row (gridDim.x
// <= R), so its first row sets its partial row and the others add to it.
__global__ void __launch_bounds__(kBlockThreadsMax)
    rmsnorm_bwd_generic(float* dx, float* parts /*(gridDim.x, C) nullable*/, const float* dout, const float* x,
                        const float* w, const float* rstd, int64_t R, int64_t C) {
  float* part = parts ? parts + int64_t(blockIdx.x) * C : nullptr;  // (C)
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* xr = x + r * C;     // (C)
    const float* dr = dout + r * C;  // (C)
    const float rs = rstd[r];
    const bool first = r == blockIdx.x;
    float kk = 0.f;
    if (dx) {
      float dot = 0.f;
      for (int64_t i = threadIdx.x; i < C; i += blockDim.x) dot += dr[i] * w[i] * xr[i];
      dot = block_sum(dot);
      kk = static_cast<float>(static_cast<double>(rs) * rs * rs * static_cast<double>(dot) / static_cast<double>(C));
    }
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
      const float d = dr[i], xi = xr[i];
      if (dx) dx[r * C + i] = rs * d * w[i] - kk * xi;
      if (part) part[i] = first ? d * xi * rs : part[i] + d * xi * rs;
    }
  }
}

// dw[c] += Σ_p parts[p, c], in a fixed order: thread (tx, ty) of a block of 8 columns
// sums partial rows ty, ty + 128, ...; warp c then adds the 128 sums of column c.
__global__ void __launch_bounds__(kReduceCols* kReduceRows)
    dw_reduce_kernel(float* dw, const float* parts /*(n_parts, C)*/, int64_t n_parts, int64_t C) {
  __shared__ float tile[kReduceRows][kReduceCols + 1];
  const int tx = threadIdx.x % kReduceCols, ty = threadIdx.x / kReduceCols;
  const int64_t c = int64_t(blockIdx.x) * kReduceCols + tx;
  float s = 0.f;
  if (c < C) {
#pragma unroll 4
    for (int64_t p = ty; p < n_parts; p += kReduceRows) s += parts[p * C + c];
  }
  tile[ty][tx] = s;
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (warp < kReduceCols) {
    float v = 0.f;
#pragma unroll
    for (int j = 0; j < kReduceRows / 32; ++j) v += tile[lane + 32 * j][warp];
    v = warp_sum(v);
    const int64_t col = int64_t(blockIdx.x) * kReduceCols + warp;
    if (lane == 0 && col < C) dw[col] += v;
  }
}

// ---- launch plans -------------------------------------------------------------------

enum class Path { kWarpCached, kBlockCached, kBlockGeneric };

// How a call runs. Depends only on R, C and the alignment (never on the device), so
// the dw partials — one per block — are summed in the same order everywhere.
struct Plan {
  Path path;
  int vec;         // float4 per thread (cached paths)
  int threads;     // block size
  int64_t blocks;  // grid size = dw partial rows
};

Plan plan_for(int64_t R, int64_t C, bool aligned) {
  const int64_t C4 = C / 4;
  if (aligned && C % 4 == 0 && C4 <= 32 * kWarpVecMax) {
    const int vec = C4 <= 32 ? 1 : C4 <= 64 ? 2 : 4;
    return {Path::kWarpCached, vec, kWarpThreads, std::min((R + kWarpsPerBlock - 1) / kWarpsPerBlock, kWarpBlocksMax)};
  }
  if (aligned && C % 4 == 0 && C4 <= int64_t(kBlockVec) * kBlockThreadsMax) {
    const int threads = round_up32((C4 + kBlockVec - 1) / kBlockVec);
    return {Path::kBlockCached, kBlockVec, threads, std::min(R, kBlockModeThreads / threads)};
  }
  // The cached paths stay under kMaxPartFloats by construction (blocks * threads <= 2^18,
  // threads >= C / 16); the generic one is capped explicitly for its large C.
  const int threads = static_cast<int>(std::min<int64_t>(kBlockThreadsMax, round_up32(C)));
  const int64_t blocks = std::min({R, kBlockModeThreads / threads, std::max<int64_t>(1, kMaxPartFloats / C)});
  return {Path::kBlockGeneric, 0, threads, blocks};
}

rt_status launch_fwd(const char* op, const Plan& p, float* out, float* rstd, const float* x, const float* w,
                     int64_t R, int64_t C, float eps) {
  const unsigned grid = static_cast<unsigned>(p.blocks);
  cudaStream_t s = stream();
  switch (p.path) {
    case Path::kWarpCached:
      if (p.vec == 1) rmsnorm_fwd_cached<true, 1><<<grid, p.threads, 0, s>>>(out, rstd, x, w, R, C, eps);
      else if (p.vec == 2) rmsnorm_fwd_cached<true, 2><<<grid, p.threads, 0, s>>>(out, rstd, x, w, R, C, eps);
      else rmsnorm_fwd_cached<true, 4><<<grid, p.threads, 0, s>>>(out, rstd, x, w, R, C, eps);
      break;
    case Path::kBlockCached:
      rmsnorm_fwd_cached<false, kBlockVec><<<grid, p.threads, 0, s>>>(out, rstd, x, w, R, C, eps);
      break;
    case Path::kBlockGeneric:
      rmsnorm_fwd_generic<<<grid, p.threads, 0, s>>>(out, rstd, x, w, R, C, eps);
      break;
  }
  return check_launch(op);
}

rt_status launch_bwd(const char* op, const Plan& p, float* dx, float* parts, const float* dout, const float* x,
                     const float* w, const float* rstd, int64_t R, int64_t C) {
  const unsigned grid = static_cast<unsigned>(p.blocks);
  cudaStream_t s = stream();
  switch (p.path) {
    case Path::kWarpCached:
      if (p.vec == 1) rmsnorm_bwd_cached<true, 1><<<grid, p.threads, 0, s>>>(dx, parts, dout, x, w, rstd, R, C);
      else if (p.vec == 2) rmsnorm_bwd_cached<true, 2><<<grid, p.threads, 0, s>>>(dx, parts, dout, x, w, rstd, R, C);
      else rmsnorm_bwd_cached<true, 4><<<grid, p.threads, 0, s>>>(dx, parts, dout, x, w, rstd, R, C);
      break;
    case Path::kBlockCached:
      rmsnorm_bwd_cached<false, kBlockVec><<<grid, p.threads, 0, s>>>(dx, parts, dout, x, w, rstd, R, C);
      break;
    case Path::kBlockGeneric:
      rmsnorm_bwd_generic<<<grid, p.threads, 0, s>>>(dx, parts, dout, x, w, rstd, R, C);
      break;
  }
  return check_launch(op);
}

rt_status check_sizes(const char* op, int64_t R, int64_t C) {
  RT_REQUIRE_NONNEG(R, op, "R");
  RT_REQUIRE_NONNEG(C, op, "C");
  RT_REQUIRE(R == 0 || C >= 1, RT_ERR_SHAPE, "%s: expected C >= 1 when R > 0, received R=%lld C=%lld", op,
             (long long)R, (long long)C);
  return RT_OK;
}

}  // namespace

extern "C" {

rt_status rt_cuda_rmsnorm_fwd(float* out, float* rstd, const float* x, const float* w, int64_t R, int64_t C,
                              float eps) {
  const char* op = "rmsnorm_fwd";
  RT_CUDA_OP(op);
  RT_TRY(check_sizes(op, R, C));
  RT_REQUIRE(std::isfinite(eps) && eps >= 0.f, RT_ERR_ARG, "%s: expected eps >= 0 and finite, received %g", op,
             (double)eps);
  if (R == 0) return RT_OK;
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(x, op, "x");
  RT_REQUIRE_PTR(w, op, "w");
  const Plan plan = plan_for(R, C, aligned16(out) && aligned16(x) && aligned16(w));
  return launch_fwd(op, plan, out, rstd, x, w, R, C, eps);
}

rt_status rt_cuda_rmsnorm_bwd(float* dx, float* dw, const float* dout, const float* x, const float* w,
                              const float* rstd, int64_t R, int64_t C) {
  const char* op = "rmsnorm_bwd";
  RT_CUDA_OP(op);
  RT_TRY(check_sizes(op, R, C));
  if (R == 0 || (!dx && !dw)) return RT_OK;
  RT_REQUIRE_PTR(dout, op, "dout");
  RT_REQUIRE_PTR(x, op, "x");
  RT_REQUIRE_PTR(w, op, "w");
  RT_REQUIRE_PTR(rstd, op, "rstd");
  const bool aligned = (!dx || aligned16(dx)) && aligned16(dout) && aligned16(x) && aligned16(w);
  const Plan plan = plan_for(R, C, aligned);
  if (!dw) return launch_bwd(op, plan, dx, nullptr, dout, x, w, rstd, R, C);

  const size_t part_bytes = static_cast<size_t>(plan.blocks) * static_cast<size_t>(C) * sizeof(float);
  DeviceScratch parts(part_bytes);  // (plan.blocks, C)
  RT_REQUIRE(parts.ok(), RT_ERR_NOMEM, "%s: could not allocate %lld bytes of dw scratch on the device", op,
             (long long)part_bytes);
  RT_TRY(launch_bwd(op, plan, dx, parts.as<float>(), dout, x, w, rstd, R, C));
  const unsigned grid = static_cast<unsigned>((C + kReduceCols - 1) / kReduceCols);
  dw_reduce_kernel<<<grid, kReduceCols * kReduceRows, 0, stream()>>>(dw, parts.as<float>(), plan.blocks, C);
  return check_launch(op);
}

}  // extern "C"
