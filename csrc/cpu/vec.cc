// Definitions of the shared row helpers declared in vec.h.
#include "vec.h"

#include "simd.h"

namespace rt {

RT_SIMD_CLONES float dot_f32(const float* a, const float* b, int64_t n) {
  constexpr int L = 32;
  float acc[L] = {0};
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int k = 0; k < L; ++k) acc[k] += a[i + k] * b[i + k];
  float tail = 0.f;
  for (; i < n; ++i) tail += a[i] * b[i];
  for (int w = L / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) acc[k] += acc[k + w];
  return acc[0] + tail;
}

RT_SIMD_CLONES void add_f32(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

RT_SIMD_CLONES void axpy_f32(float* y, const float* x, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

RT_SIMD_CLONES void scale_f32(float* y, const float* x, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a * x[i];
}

}  // namespace rt
