// SwiGLU activation on the GPU (the CUDA side of swiglu.cc), forward and backward:
//   out = silu(gate) * up,  silu(g) = g * sigmoid(g)
//   dgate = dout * up * (s + g*s*(1 - s)),  dup = dout * g * s,  s = sigmoid(g)
//
// One grid-stride kernel per direction over float4 items when every pointer is 16-byte
// aligned (tensor buffers are 256-byte aligned; views at odd offsets are not), the last
// n % 4 elements (or all of them, unaligned) one by one. ~32 blocks of 256 threads per
// SM at most, each thread looping. Each element is read and written by one thread, so
// out may alias gate or up (and dgate/dup may alias the inputs).
//
// Napkin math (memory-bound): forward moves 12 bytes per element, backward 20; the
// sigmoid is one expf and a division, ~15 instructions — far below the H200's
// ~100 flops per byte of bandwidth. Large |gate| is safe as on the CPU: exp(-g) = inf
// gives s = 0 and g*s = -0, never inf*0.
#include <cstdint>

#include "../cpu/check.h"
#include "cuda_common.cuh"
#include "rt/swiglu.h"

namespace {

using rt::cuda::aligned16;
using rt::cuda::sigmoid;
using rt::cuda::check_launch;
using rt::cuda::grid_for;
using rt::cuda::stream;

constexpr int kThreads = 256;

inline unsigned flat_grid(int64_t items) { return grid_for(items, kThreads, int64_t(rt::cuda::sm_count()) * 32); }


// out = g / (1 + exp(-g)) * u, the CPU's operation order.
__device__ __forceinline__ float swiglu(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__device__ __forceinline__ void swiglu_grad(float& dg, float& du, float d, float g, float u) {
  const float s = sigmoid(g), gs = g * s;
  dg = d * u * (s + gs * (1.0f - s));
  du = d * gs;
}

__global__ void swiglu_fwd_kernel(float* out, const float* gate, const float* up, int64_t n, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n4 = vec ? n / 4 : 0;
  for (int64_t i = tid; i < n4; i += stride) {
    const float4 g = reinterpret_cast<const float4*>(gate)[i];
    const float4 u = reinterpret_cast<const float4*>(up)[i];
    reinterpret_cast<float4*>(out)[i] = float4{swiglu(g.x, u.x), swiglu(g.y, u.y), swiglu(g.z, u.z), swiglu(g.w, u.w)};
  }
  for (int64_t i = 4 * n4 + tid; i < n; i += stride) out[i] = swiglu(gate[i], up[i]);
}

__global__ void swiglu_bwd_kernel(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                                  int64_t n, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n4 = vec ? n / 4 : 0;
  for (int64_t i = tid; i < n4; i += stride) {
    const float4 d = reinterpret_cast<const float4*>(dout)[i];
    const float4 g = reinterpret_cast<const float4*>(gate)[i];
    const float4 u = reinterpret_cast<const float4*>(up)[i];
    float4 dg, du;
    swiglu_grad(dg.x, du.x, d.x, g.x, u.x);
    swiglu_grad(dg.y, du.y, d.y, g.y, u.y);
    swiglu_grad(dg.z, du.z, d.z, g.z, u.z);
    swiglu_grad(dg.w, du.w, d.w, g.w, u.w);
    reinterpret_cast<float4*>(dgate)[i] = dg;
    reinterpret_cast<float4*>(dup)[i] = du;
  }
  for (int64_t i = 4 * n4 + tid; i < n; i += stride) {
    float dg, du;
    swiglu_grad(dg, du, dout[i], gate[i], up[i]);
    dgate[i] = dg;
    dup[i] = du;
  }
}

}  // namespace

extern "C" {

rt_status rt_cuda_swiglu_fwd(float* out, const float* gate, const float* up, int64_t n) {
  const char* op = "swiglu_fwd";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(n, op, "n");
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(gate, op, "gate");
  RT_REQUIRE_PTR(up, op, "up");
  const bool vec = aligned16(out) && aligned16(gate) && aligned16(up);
  const int64_t items = vec ? n / 4 + n % 4 : n;
  swiglu_fwd_kernel<<<flat_grid(items), kThreads, 0, stream()>>>(out, gate, up, n, vec);
  return check_launch(op);
}

rt_status rt_cuda_swiglu_bwd(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                             int64_t n) {
  const char* op = "swiglu_bwd";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(n, op, "n");
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(dgate, op, "dgate");
  RT_REQUIRE_PTR(dup, op, "dup");
  RT_REQUIRE_PTR(dout, op, "dout");
  RT_REQUIRE_PTR(gate, op, "gate");
  RT_REQUIRE_PTR(up, op, "up");
  const bool vec = aligned16(dgate) && aligned16(dup) && aligned16(dout) && aligned16(gate) && aligned16(up);
  const int64_t items = vec ? n / 4 + n % 4 : n;
  swiglu_bwd_kernel<<<flat_grid(items), kThreads, 0, stream()>>>(dgate, dup, dout, gate, up, n, vec);
  return check_launch(op);
}

}  // extern "C"
