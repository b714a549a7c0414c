// AdamW optimiser step (PyTorch torch.optim.AdamW semantics, amsgrad off), one fused
// pass over the parameters:
//   g' = g * grad_scale
//   p  = p * (1 - lr * wd)                              (decoupled weight decay)
//   m  = lerp(m, g', 1 - b1)  ;  v = v * b2 + (1 - b2) * g'^2
//   p  = p - (lr / (1 - b1^step)) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)
// which is the header's p -= lr*(wd*p + m_hat/(sqrt(v_hat)+eps)) written in PyTorch's
// operation order (so float32 results track PyTorch's to rounding).
//
// Napkin math (memory-bound): reads p, m, v, g and writes p, m, v: 28 bytes per
// parameter; a sqrt and a divide per element.
#include <cmath>

#include "check.h"
#include "parallel.h"
#include "rt/adamw.h"
#include "simd.h"

namespace {
constexpr int64_t kGrain = 1 << 15;

struct Coeffs {
  float decay;          // 1 - lr*wd
  float lerp_w;         // 1 - b1
  bool lerp_low;        // lerp_w < 0.5: PyTorch's lerp formula branch
  float b2, one_m_b2;
  float step_size;      // lr / (1 - b1^step)
  float bc2_sqrt;       // sqrt(1 - b2^step)
  float eps, grad_scale;
};

RT_SIMD_CLONES void adamw_range(float* p, float* m, float* v, const float* g, int64_t n, Coeffs k) {
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i] * k.grad_scale;
    float mi = m[i];
    // torch.lerp: w < 0.5 ? m + w*(g-m) : g - (g-m)*(1-w)
    mi = k.lerp_low ? mi + k.lerp_w * (gi - mi) : gi - (gi - mi) * (1.0f - k.lerp_w);
    float vi = v[i] * k.b2 + k.one_m_b2 * gi * gi;
    float denom = std::sqrt(vi) / k.bc2_sqrt + k.eps;
    float pi = p[i] * k.decay;
    p[i] = pi - k.step_size * (mi / denom);
    m[i] = mi;
    v[i] = vi;
  }
}
}  // namespace

extern "C" {

rt_status rt_adamw_step(float* p, float* m, float* v, const float* g, int64_t n, double lr, double beta1, double beta2,
                        double eps, double weight_decay, int64_t step, double grad_scale) {
  const char* op = "adamw_step";
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
  // Scalars in double, as PyTorch computes them in Python floats, then rounded to float
  // once (PyTorch casts a Python scalar to the tensor's float32 the same way).
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
  rt::parallel_for(n, kGrain, [&](int64_t b, int64_t e) { adamw_range(p + b, m + b, v + b, g + b, e - b, k); });
  return RT_OK;
}

}  // extern "C"
