// Rotary position embedding on the GPU (the CUDA side of rope.cc), Hugging Face
// "rotate half" convention, forward and backward:
//   angle[t,i] = pos[t] * inv_freq[i]                     i < D/2
//   y1 = x1*cos - x2*sin ;  y2 = x2*cos + x1*sin           (x1 = x[:D/2], x2 = x[D/2:])
//   cos/sin are multiplied by attn_scale; the backward negates sin (R(angle)^T).
//
// Work item = (token t, group of kHeads heads, chunk of kW rotary indices i): a thread
// computes cos/sin for its kW indices once, loads x1/x2 of its heads (float4 when D/2 %
// 4 == 0 and the buffers are 16-byte aligned), then writes them — every element is read
// and written by one thread, all loads before the stores, so out may equal x.
// Consecutive threads take consecutive chunks of a head: each warp access is a run of
// whole 32-byte sectors.
//
// Precision, as on the CPU: the angle pos*inv_freq is formed in double (the CPU's exact
// same product), reduced modulo pi/2 in double (Cody-Waite with fma, exact for any int32
// position), and only the reduced |r| <= pi/4 goes to sincosf — so cos/sin are within
// ~1e-7 of the CPU's at every position, where a float32 angle would be off by ~1e-3 rad
// at 32k tokens.
//
// Napkin math (memory-bound): reads x (T*H*D floats) and pos, writes out: ~8*T*H*D bytes.
// The trig costs one sincosf and a few double ops per kW*kHeads rotated pairs.
//
// Positions are validated like the CPU (pos >= 0, else RT_ERR_INDEX) before anything is
// written: a small kernel flags a negative position, the host reads the flag back.
#include <cmath>
#include <cstdint>

#include "../cpu/check.h"
#include "cuda_common.cuh"
#include "rt/rope.h"

namespace {

using rt::cuda::aligned16;
using rt::cuda::check_launch;
using rt::cuda::grid_for;
using rt::cuda::IndexFlag;
using rt::cuda::stream;

constexpr int kThreads = 256;
constexpr int kHeads = 4;  // heads per work item sharing one cos/sin evaluation

// pi/2 as hi + lo (hi = double(pi/2)); with fma, k*hi is exact inside the subtraction.
constexpr double kInvPio2 = 6.36619772367581382433e-01;
constexpr double kPio2Hi = 1.57079632679489655800e+00;
constexpr double kPio2Lo = 6.12323399573676603587e-17;


// cos and sin of p * f: the double product reduced to r in [-pi/4, pi/4], the quadrant
// k mod 4 applied after sincosf(r).
__device__ __forceinline__ void rotary_cos_sin(float& c, float& s, int32_t p, float f) {
  const double a = static_cast<double>(p) * static_cast<double>(f);
  const double k = rint(a * kInvPio2);
  const double r = fma(-k, kPio2Lo, fma(-k, kPio2Hi, a));
  float sr, cr;
  sincosf(static_cast<float>(r), &sr, &cr);
  const int q = static_cast<int>(static_cast<long long>(k) & 3);
  const float sq = (q & 1) ? cr : sr, cq = (q & 1) ? sr : cr;
  s = (q & 2) ? -sq : sq;          // quadrants 2, 3
  c = ((q + 1) & 2) ? -cq : cq;    // quadrants 1, 2
}

template <int kW>
struct Vec;
template <>
struct Vec<1> {
  using T = float;
};
template <>
struct Vec<4> {
  using T = float4;
};

__device__ __forceinline__ float lane(const float& v, int) { return v; }
__device__ __forceinline__ float lane(const float4& v, int j) { return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w; }
__device__ __forceinline__ void set_lane(float& v, int, float x) { v = x; }
__device__ __forceinline__ void set_lane(float4& v, int j, float x) {
  if (j == 0) v.x = x;
  else if (j == 1) v.y = x;
  else if (j == 2) v.z = x;
  else v.w = x;
}

// out = R(angle) x over (T, H, D); sin_scale carries the backward's sign.
template <int kW>
__global__ void __launch_bounds__(kThreads) rope_kernel(float* out, const float* x, const int32_t* pos,
                                                        const float* inv_freq, float cos_scale, float sin_scale,
                                                        int64_t T, int64_t H, int64_t D) {
  using V = typename Vec<kW>::T;
  const int64_t half = D / 2, chunks = half / kW, head_groups = (H + kHeads - 1) / kHeads;
  const int64_t items = T * head_groups * chunks;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t it = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; it < items; it += stride) {
    const int64_t chunk = it % chunks, rest = it / chunks;
    const int64_t h0 = (rest % head_groups) * kHeads, t = rest / head_groups;
    const int64_t i = chunk * kW;  // first rotary index of the chunk
    const int32_t p = pos[t];
    const V f = *reinterpret_cast<const V*>(inv_freq + i);
    V cs, sn;
#pragma unroll
    for (int j = 0; j < kW; ++j) {
      float c, s;
      rotary_cos_sin(c, s, p, lane(f, j));
      set_lane(cs, j, c * cos_scale);
      set_lane(sn, j, s * sin_scale);
    }
    const int64_t base = (t * H + h0) * D + i;  // x[t, h0, i]
    V a[kHeads], b[kHeads];
#pragma unroll
    for (int j = 0; j < kHeads; ++j) {
      if (h0 + j < H) {
        a[j] = *reinterpret_cast<const V*>(x + base + j * D);
        b[j] = *reinterpret_cast<const V*>(x + base + j * D + half);
      }
    }
#pragma unroll
    for (int j = 0; j < kHeads; ++j) {
      if (h0 + j < H) {
        V y1, y2;
#pragma unroll
        for (int l = 0; l < kW; ++l) {
          const float xa = lane(a[j], l), xb = lane(b[j], l), c = lane(cs, l), s = lane(sn, l);
          set_lane(y1, l, xa * c - xb * s);
          set_lane(y2, l, xb * c + xa * s);
        }
        *reinterpret_cast<V*>(out + base + j * D) = y1;
        *reinterpret_cast<V*>(out + base + j * D + half) = y2;
      }
    }
  }
}

// Flags the first negative position a thread sees.
__global__ void check_positions_kernel(long long* flag, const int32_t* pos, int64_t T) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < T; t += stride)
    if (pos[t] < 0) rt::cuda::report_bad_index(flag, t, pos[t]);
}

// RT_OK when every position is >= 0, else RT_ERR_INDEX in the CPU's words.
rt_status check_positions(const char* op, const int32_t* pos, int64_t T) {
  IndexFlag flag;
  RT_TRY(flag.reset(op));
  check_positions_kernel<<<grid_for(T, kThreads, int64_t(rt::cuda::sm_count()) * 8), kThreads, 0, stream()>>>(
      flag.ptr(), pos, T);
  RT_TRY(check_launch(op));
  long long host[2] = {0, 0};  // (bad t + 1, its position)
  RT_CUDA_TRY(op, cudaMemcpyAsync(host, flag.ptr(), sizeof host, cudaMemcpyDeviceToHost, stream()));
  RT_CUDA_TRY(op, cudaStreamSynchronize(stream()));
  RT_REQUIRE(host[0] == 0, RT_ERR_INDEX, "%s: expected positions >= 0, received pos[%lld] = %lld", op, host[0] - 1,
             host[1]);
  return RT_OK;
}

rt_status rope_apply(const char* op, float* out, const float* x, const int32_t* pos, const float* inv_freq,
                     float attn_scale, int64_t T, int64_t H, int64_t D, float sin_sign) {
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE_NONNEG(H, op, "H");
  RT_REQUIRE_NONNEG(D, op, "D");
  RT_REQUIRE(D % 2 == 0, RT_ERR_SHAPE, "%s: expected an even head dim D, received D=%lld", op, (long long)D);
  RT_REQUIRE(std::isfinite(attn_scale), RT_ERR_ARG, "%s: expected a finite attn_scale, received %g", op,
             (double)attn_scale);
  if (T == 0 || H == 0 || D == 0) return RT_OK;
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(x, op, "x");
  RT_REQUIRE_PTR(pos, op, "pos");
  RT_REQUIRE_PTR(inv_freq, op, "inv_freq");
  RT_TRY(check_positions(op, pos, T));

  const int64_t half = D / 2;
  const bool vec = half % 4 == 0 && aligned16(out) && aligned16(x) && aligned16(inv_freq);
  const int64_t items = T * ((H + kHeads - 1) / kHeads) * (vec ? half / 4 : half);
  const unsigned grid = grid_for(items, kThreads, int64_t(rt::cuda::sm_count()) * 32);
  const float cos_scale = attn_scale, sin_scale = sin_sign * attn_scale;
  if (vec)
    rope_kernel<4><<<grid, kThreads, 0, stream()>>>(out, x, pos, inv_freq, cos_scale, sin_scale, T, H, D);
  else
    rope_kernel<1><<<grid, kThreads, 0, stream()>>>(out, x, pos, inv_freq, cos_scale, sin_scale, T, H, D);
  return check_launch(op);
}

}  // namespace

extern "C" {

rt_status rt_cuda_rope_fwd(float* out, const float* x, const int32_t* pos, const float* inv_freq, float attn_scale,
                           int64_t T, int64_t H, int64_t D) {
  return rope_apply("rope_fwd", out, x, pos, inv_freq, attn_scale, T, H, D, 1.0f);
}

// R(angle)^T = R(-angle): the forward with sin negated.
rt_status rt_cuda_rope_bwd(float* dx, const float* dout, const int32_t* pos, const float* inv_freq, float attn_scale,
                           int64_t T, int64_t H, int64_t D) {
  return rope_apply("rope_bwd", dx, dout, pos, inv_freq, attn_scale, T, H, D, -1.0f);
}

}  // extern "C"
