// Fused softmax cross-entropy on the GPU (the CUDA side of cross_entropy.cc):
//   lse[t]      = log Σ_v exp(logits[t,v])
//   row_loss[t] = lse[t] - logits[t, target[t]]            (0 on ignored rows)
//   loss        = Σ row_loss / counted                     (0 when every row is ignored)
//   dlogits     = (softmax(logits) - onehot(target)) * dloss_scale, 0 on ignored rows
//
// Forward: one block per row (grid-stride over rows). Each thread walks its share of the
// row (float4 when V % 4 == 0 and the buffer is 16-byte aligned) keeping an online
// (max, Σ exp(x - max)) pair — per float4 the max is updated first, the sum rescaled only
// when it grows — so the row is read once; the pairs are merged by a shuffle tree, then
// across warps. lse and the row loss are formed in double like the CPU; the per-row
// losses (double) go to a scratch that a single block sums in a fixed order, with the
// count of counted rows; the two host scalars come back with one copy and a sync.
// Backward: one block per row, one exp per element, dlogits may alias logits.
//
// Targets are validated before anything is written (like the CPU): a small kernel flags
// a target outside [0, V) that is not ignore_index; the host reads the flag back.
//
// Napkin math (memory-bound for large V): forward reads 4*T*V bytes, backward reads and
// writes 8*T*V; one exp2f per logit (~4 instructions) in both.
//
// Determinism: every sum has a fixed order (per-thread strides, fixed shuffle trees, the
// final block reduction), independent of scheduling; no atomics.
#include <cmath>
#include <cstdint>

#include "../cpu/check.h"
#include "cuda_common.cuh"
#include "rt/cross_entropy.h"

namespace {

using rt::cuda::aligned16;
using rt::cuda::check_launch;
using rt::cuda::DeviceScratch;
using rt::cuda::grid_for;
using rt::cuda::IndexFlag;
using rt::cuda::stream;

constexpr int kRowThreads = 512;     // one block per row
constexpr int kTotalThreads = 1024;  // the final (single-block) loss sum
constexpr int kBatch = 4;            // float4 loads a thread issues together
constexpr float kLog2e = 1.44269504088896341f;

inline unsigned row_grid(int64_t T) { return grid_for(T, 1, int64_t(rt::cuda::sm_count()) * 8); }

// exp(x - shift) as 2^((x - shift)·log2 e), the CPU's form.
__device__ __forceinline__ float exp_shifted(float x, float shift) { return exp2f((x - shift) * kLog2e); }

// Running log-sum-exp of a stream of values: m = max so far, s = Σ exp(x - m).
struct OnlineLse {
  float m = -INFINITY, s = 0.f;

  __device__ __forceinline__ void add(float x) {
    if (x > m) {
      s *= exp_shifted(m, x);  // exp(-inf) = 0 on the first finite value
      m = x;
    }
    if (m != -INFINITY) s += exp_shifted(x, m);  // all -inf so far: nothing to add
  }
  __device__ __forceinline__ void add(float4 v) {
    const float mx = fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w));
    if (mx > m) {
      s *= exp_shifted(m, mx);
      m = mx;
    }
    if (m != -INFINITY) s += exp_shifted(v.x, m) + exp_shifted(v.y, m) + exp_shifted(v.z, m) + exp_shifted(v.w, m);
  }
  __device__ __forceinline__ void merge(float m2, float s2) {
    const float mm = fmaxf(m, m2);
    if (mm == -INFINITY) return;  // both empty (or all -inf)
    s = s * exp_shifted(m, mm) + s2 * exp_shifted(m2, mm);
    m = mm;
  }
};

// Merges the block's pairs; thread 0 gets the result. Called by the whole block.
__device__ __forceinline__ OnlineLse block_merge(OnlineLse acc) {
  __shared__ float ms[32], ss[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, acc.m, o), s2 = __shfl_xor_sync(0xffffffffu, acc.s, o);
    acc.merge(m2, s2);
  }
  __syncthreads();  // ms/ss may still be read for the previous row
  if (lane == 0) {
    ms[warp] = acc.m;
    ss[warp] = acc.s;
  }
  __syncthreads();
  if (warp == 0) {
    OnlineLse w;
    if (lane < int(blockDim.x >> 5)) {
      w.m = ms[lane];
      w.s = ss[lane];
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, w.m, o), s2 = __shfl_xor_sync(0xffffffffu, w.s, o);
      w.merge(m2, s2);
    }
    acc = w;
  }
  return acc;
}

// Flags the first bad target a thread sees (outside [0, V) and not ignore_index).
__global__ void check_targets_kernel(long long* flag, const int32_t* targets, int64_t T, int64_t V,
                                     int32_t ignore_index) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < T; t += stride) {
    const int32_t y = targets[t];
    if (y != ignore_index && (y < 0 || y >= V)) rt::cuda::report_bad_index(flag, t, y);
  }
}

template <bool kVec>
__global__ void __launch_bounds__(kRowThreads)
    ce_fwd_rows(float* row_loss, float* lse, double* losses /*(T)*/, const float* logits, const int32_t* targets,
                int64_t T, int64_t V, int32_t ignore_index) {
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const float* xr = logits + t * V;  // (V)
    OnlineLse acc;
    if (kVec) {
      // kBatch float4 loads in flight per thread, then their updates.
      const float4* x4 = reinterpret_cast<const float4*>(xr);
      const int64_t n4 = V / 4, step = blockDim.x;
      int64_t i = threadIdx.x;
      for (; i + (kBatch - 1) * step < n4; i += kBatch * step) {
        float4 v[kBatch];
#pragma unroll
        for (int j = 0; j < kBatch; ++j) v[j] = x4[i + j * step];
#pragma unroll
        for (int j = 0; j < kBatch; ++j) acc.add(v[j]);
      }
      for (; i < n4; i += step) acc.add(x4[i]);
    } else {
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x) acc.add(xr[i]);
    }
    acc = block_merge(acc);
    if (threadIdx.x == 0) {
      const double l = static_cast<double>(acc.m) + log(static_cast<double>(acc.s));
      const int32_t y = targets[t];
      const double loss = y == ignore_index ? 0.0 : l - static_cast<double>(xr[y]);
      lse[t] = static_cast<float>(l);
      losses[t] = loss;
      if (row_loss) row_loss[t] = static_cast<float>(loss);
    }
  }
}

// total = Σ losses (double), count = rows not ignored; one block, fixed order.
struct LossTotal {
  double total;
  long long count;
};

__global__ void __launch_bounds__(kTotalThreads)
    ce_total(LossTotal* out, const double* losses, const int32_t* targets, int64_t T, int32_t ignore_index) {
  __shared__ double total_part[32];
  __shared__ long long count_part[32];
  double total = 0.0;
  long long count = 0;
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    total += losses[t];
    count += targets[t] != ignore_index;
  }
  for (int o = 16; o > 0; o >>= 1) {
    total += __shfl_xor_sync(0xffffffffu, total, o);
    count += __shfl_xor_sync(0xffffffffu, count, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    total_part[warp] = total;
    count_part[warp] = count;
  }
  __syncthreads();
  if (warp == 0) {
    total = lane < int(blockDim.x >> 5) ? total_part[lane] : 0.0;
    count = lane < int(blockDim.x >> 5) ? count_part[lane] : 0;
    for (int o = 16; o > 0; o >>= 1) {
      total += __shfl_xor_sync(0xffffffffu, total, o);
      count += __shfl_xor_sync(0xffffffffu, count, o);
    }
    if (lane == 0) *out = LossTotal{total, count};
  }
}

template <bool kVec>
__global__ void __launch_bounds__(kRowThreads)
    ce_bwd_rows(float* dlogits, const float* logits, const float* lse, const int32_t* targets, int64_t T, int64_t V,
                int32_t ignore_index, float dloss_scale) {
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    float* dr = dlogits + t * V;       // (V)
    const float* xr = logits + t * V;  // (V)
    const int32_t y = targets[t];
    if (y == ignore_index) {
      if (kVec) {
        for (int64_t i = threadIdx.x; i < V / 4; i += blockDim.x) reinterpret_cast<float4*>(dr)[i] = float4{};
      } else {
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x) dr[i] = 0.f;
      }
      continue;
    }
    const float l = lse[t];
    // (softmax - onehot) * scale: the CPU's e*scale, then - scale at the target.
    auto grad = [&](float x, int64_t v) {
      const float d = exp_shifted(x, l) * dloss_scale;
      return v == y ? d - dloss_scale : d;
    };
    if (kVec) {
      const float4* x4 = reinterpret_cast<const float4*>(xr);
      float4* d4 = reinterpret_cast<float4*>(dr);
      auto grad4 = [&](float4 x, int64_t i) {
        return float4{grad(x.x, 4 * i), grad(x.y, 4 * i + 1), grad(x.z, 4 * i + 2), grad(x.w, 4 * i + 3)};
      };
      const int64_t n4 = V / 4, step = blockDim.x;
      int64_t i = threadIdx.x;
      for (; i + (kBatch - 1) * step < n4; i += kBatch * step) {
        float4 x[kBatch];  // all loads before the stores (dlogits may alias logits)
#pragma unroll
        for (int j = 0; j < kBatch; ++j) x[j] = x4[i + j * step];
#pragma unroll
        for (int j = 0; j < kBatch; ++j) d4[i + j * step] = grad4(x[j], i + j * step);
      }
      for (; i < n4; i += step) d4[i] = grad4(x4[i], i);
    } else {
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x) dr[i] = grad(xr[i], i);
    }
  }
}

// RT_OK when every target is in [0, V) or ignore_index, else RT_ERR_INDEX in the CPU's words.
rt_status check_targets(const char* op, const int32_t* targets, int64_t T, int64_t V, int32_t ignore_index) {
  IndexFlag flag;
  RT_TRY(flag.reset(op));
  check_targets_kernel<<<grid_for(T, 256, int64_t(rt::cuda::sm_count()) * 8), 256, 0, stream()>>>(
      flag.ptr(), targets, T, V, ignore_index);
  RT_TRY(check_launch(op));
  long long host[2] = {0, 0};  // (bad t + 1, its target)
  RT_CUDA_TRY(op, cudaMemcpyAsync(host, flag.ptr(), sizeof host, cudaMemcpyDeviceToHost, stream()));
  RT_CUDA_TRY(op, cudaStreamSynchronize(stream()));
  RT_REQUIRE(host[0] == 0, RT_ERR_INDEX,
             "%s: expected targets in [0, %lld) or ignore_index %d, received targets[%lld] = %lld", op, (long long)V,
             ignore_index, host[0] - 1, host[1]);
  return RT_OK;
}

rt_status check_sizes(const char* op, int64_t T, int64_t V) {
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE_NONNEG(V, op, "V");
  RT_REQUIRE(T == 0 || V >= 1, RT_ERR_SHAPE, "%s: expected V >= 1 when T > 0, received T=%lld V=%lld", op,
             (long long)T, (long long)V);
  return RT_OK;
}

}  // namespace

extern "C" {

rt_status rt_cuda_cross_entropy_fwd(double* mean_loss, int64_t* counted, float* row_loss, float* lse,
                                    const float* logits, const int32_t* targets, int64_t T, int64_t V,
                                    int32_t ignore_index) {
  const char* op = "cross_entropy_fwd";
  RT_CUDA_OP(op);
  RT_TRY(check_sizes(op, T, V));
  RT_REQUIRE_PTR(mean_loss, op, "mean_loss");
  RT_REQUIRE_PTR(counted, op, "counted");
  *mean_loss = 0.0;  // host scalars
  *counted = 0;
  if (T == 0) return RT_OK;
  RT_REQUIRE_PTR(lse, op, "lse");
  RT_REQUIRE_PTR(logits, op, "logits");
  RT_REQUIRE_PTR(targets, op, "targets");
  RT_TRY(check_targets(op, targets, T, V, ignore_index));

  const size_t scratch_bytes = static_cast<size_t>(T) * sizeof(double) + sizeof(LossTotal);
  DeviceScratch scratch(scratch_bytes);  // losses (T) then the LossTotal (8-byte aligned)
  RT_REQUIRE(scratch.ok(), RT_ERR_NOMEM, "%s: could not allocate %lld bytes of device scratch", op,
             (long long)scratch_bytes);
  double* losses = scratch.as<double>();
  LossTotal* result = reinterpret_cast<LossTotal*>(losses + T);
  const unsigned grid = row_grid(T);
  if (V % 4 == 0 && aligned16(logits))
    ce_fwd_rows<true><<<grid, kRowThreads, 0, stream()>>>(row_loss, lse, losses, logits, targets, T, V, ignore_index);
  else
    ce_fwd_rows<false><<<grid, kRowThreads, 0, stream()>>>(row_loss, lse, losses, logits, targets, T, V, ignore_index);
  RT_TRY(check_launch(op));
  ce_total<<<1, kTotalThreads, 0, stream()>>>(result, losses, targets, T, ignore_index);
  RT_TRY(check_launch(op));
  LossTotal host;
  RT_CUDA_TRY(op, cudaMemcpyAsync(&host, result, sizeof host, cudaMemcpyDeviceToHost, stream()));
  RT_CUDA_TRY(op, cudaStreamSynchronize(stream()));
  *counted = host.count;
  *mean_loss = host.count > 0 ? host.total / static_cast<double>(host.count) : 0.0;
  return RT_OK;
}

rt_status rt_cuda_cross_entropy_bwd(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                                    int64_t T, int64_t V, int32_t ignore_index, float dloss_scale) {
  const char* op = "cross_entropy_bwd";
  RT_CUDA_OP(op);
  RT_TRY(check_sizes(op, T, V));
  RT_REQUIRE(std::isfinite(dloss_scale), RT_ERR_ARG, "%s: expected a finite dloss_scale, received %g", op,
             (double)dloss_scale);
  if (T == 0) return RT_OK;
  RT_REQUIRE_PTR(dlogits, op, "dlogits");
  RT_REQUIRE_PTR(logits, op, "logits");
  RT_REQUIRE_PTR(lse, op, "lse");
  RT_REQUIRE_PTR(targets, op, "targets");
  RT_TRY(check_targets(op, targets, T, V, ignore_index));
  const unsigned grid = row_grid(T);
  if (V % 4 == 0 && aligned16(logits) && aligned16(dlogits))
    ce_bwd_rows<true><<<grid, kRowThreads, 0, stream()>>>(dlogits, logits, lse, targets, T, V, ignore_index,
                                                          dloss_scale);
  else
    ce_bwd_rows<false><<<grid, kRowThreads, 0, stream()>>>(dlogits, logits, lse, targets, T, V, ignore_index,
                                                           dloss_scale);
  return check_launch(op);
}

}  // extern "C"
