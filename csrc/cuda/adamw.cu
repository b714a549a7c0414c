// AdamW optimiser step on the GPU (the CUDA side of adamw.cc, PyTorch torch.optim.AdamW
// semantics, amsgrad off), one fused pass over the parameters:
//   g' = g * grad_scale
//   p  = p * (1 - lr * wd)                              (decoupled weight decay)
//   m  = lerp(m, g', 1 - b1)  ;  v = v * b2 + (1 - b2) * g'^2
//   p  = p - (lr / (1 - b1^step)) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)
// The scalar coefficients are formed in double on the host and rounded to float once,
// exactly as the CPU does; the per-element arithmetic is the CPU's, in the same order
// (sqrtf and the divisions are IEEE-rounded without -use_fast_math).
//
// Napkin math (memory-bound): reads p, m, v, g and writes p, m, v: 28 bytes per
// parameter; 1e9 parameters ≈ 28 GB ≈ 6 ms at ~4.5 TB/s. float4 items when all four
// buffers are 16-byte aligned.
#include <cmath>
#include <cstdint>

#include "../cpu/check.h"
#include "cuda_common.cuh"
#include "rt/adamw.h"

namespace {

using rt::cuda::aligned16;

constexpr int kThreads = 256;

struct Coeffs {
  float decay;      // 1 - lr*wd
  float lerp_w;     // 1 - b1
  bool lerp_low;    // lerp_w < 0.5: PyTorch's lerp formula branch
  float b2, one_m_b2;
  float step_size;  // lr / (1 - b1^step)
  float bc2_sqrt;   // sqrt(1 - b2^step)
  float eps, grad_scale;
};

__device__ __forceinline__ void adamw_one(float& p, float& m, float& v, float g, const Coeffs& k) {
  float gi = g * k.grad_scale;
  // torch.lerp: w < 0.5 ? m + w*(g-m) : g - (g-m)*(1-w)
  float mi = k.lerp_low ? m + k.lerp_w * (gi - m) : gi - (gi - m) * (1.0f - k.lerp_w);
  float vi = v * k.b2 + k.one_m_b2 * gi * gi;
  float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;
  float pi = p * k.decay;
  p = pi - k.step_size * (mi / denom);
  m = mi;
  v = vi;
}

__global__ void adamw_kernel(float* p, float* m, float* v, const float* g, int64_t n, bool vec, Coeffs k) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n4 = vec ? n / 4 : 0;
  for (int64_t i = tid; i < n4; i += stride) {
    float4 pv = reinterpret_cast<float4*>(p)[i];
    float4 mv = reinterpret_cast<float4*>(m)[i];
    float4 vv = reinterpret_cast<float4*>(v)[i];
    float4 gv = reinterpret_cast<const float4*>(g)[i];
    adamw_one(pv.x, mv.x, vv.x, gv.x, k);
    adamw_one(pv.y, mv.y, vv.y, gv.y, k);
    adamw_one(pv.z, mv.z, vv.z, gv.z, k);
    adamw_one(pv.w, mv.w, vv.w, gv.w, k);
    reinterpret_cast<float4*>(p)[i] = pv;
    reinterpret_cast<float4*>(m)[i] = mv;
    reinterpret_cast<float4*>(v)[i] = vv;
  }
  for (int64_t i = 4 * n4 + tid; i < n; i += stride) adamw_one(p[i], m[i], v[i], g[i], k);
}


}  // namespace

extern "C" {

rt_status rt_cuda_adamw_step(float* p, float* m, float* v, const float* g, int64_t n, double lr, double beta1,
                             double beta2, double eps, double weight_decay, int64_t step, double grad_scale) {
  const char* op = "adamw_step";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(n, op, "n");
  RT_REQUIRE(step >= 1, RT_ERR_ARG, "%s: expected step >= 1 (steps count from 1), received %lld", op,
             (long long)step);
  RT_REQUIRE(std::isfinite(lr) && lr >= 0.0, RT_ERR_ARG, "%s: expected lr >= 0 and finite, received %g", op, lr);
  RT_REQUIRE(beta1 >= 0.0 && beta1 < 1.0, RT_ERR_ARG, "%s: expected beta1 in [0, 1), received %g", op, beta1);
  RT_REQUIRE(beta2 >= 0.0 && beta2 < 1.0, RT_ERR_ARG, "%s: expected beta2 in [0, 1), received %g", op, beta2);
  RT_REQUIRE(std::isfinite(eps) && eps >= 0.0, RT_ERR_ARG, "%s: expected eps >= 0 and finite, received %g", op, eps);
  RT_REQUIRE(std::isfinite(weight_decay) && weight_decay >= 0.0, RT_ERR_ARG,
             "%s: expected weight_decay >= 0 and finite, received %g", op, weight_decay);
  RT_REQUIRE(std::isfinite(grad_scale), RT_ERR_ARG, "%s: expected a finite grad_scale, received %g", op, grad_scale);
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(p, op, "p");
  RT_REQUIRE_PTR(m, op, "m");
  RT_REQUIRE_PTR(v, op, "v");
  RT_REQUIRE_PTR(g, op, "g");
  // Scalars in double, as PyTorch computes them in Python floats, then rounded to float once.
  double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  Coeffs k;
  k.decay = static_cast<float>(1.0 - lr * weight_decay);
  k.lerp_w = static_cast<float>(1.0 - beta1);
  k.lerp_low = k.lerp_w < 0.5f;
  k.b2 = static_cast<float>(beta2);
  k.one_m_b2 = static_cast<float>(1.0 - beta2);
  k.step_size = static_cast<float>(lr / bc1);
  k.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  k.eps = static_cast<float>(eps);
  k.grad_scale = static_cast<float>(grad_scale);
  const bool vec = aligned16(p) && aligned16(m) && aligned16(v) && aligned16(g);
  const int64_t items = vec ? n / 4 + n % 4 : n;
  const unsigned grid = rt::cuda::grid_for(items, kThreads, int64_t(rt::cuda::sm_count()) * 8);
  adamw_kernel<<<grid, kThreads, 0, rt::cuda::stream()>>>(p, m, v, g, n, vec, k);
  return rt::cuda::check_launch(op);
}

}  // extern "C"
