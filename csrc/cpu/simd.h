// Run-time SIMD dispatch and small vectorisable helpers shared by the CPU kernels.
//
// Hot loops are written as plain C++ that GCC auto-vectorises, and compiled three
// times through target_clones: x86-64-v4 (AVX-512), x86-64-v3 (AVX2+FMA) and the
// baseline. The loader (ifunc) picks one per CPU at run time, so the shipped binary
// runs on any x86-64 and never needs -march=native.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "rt/common.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(RT_NO_CLONES)
#define RT_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RT_SIMD_CLONES
#endif

namespace rt {

inline float bf16_to_f32(rt_bf16 h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN (quiet bit forced).
inline rt_bf16 f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu)) return static_cast<rt_bf16>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<rt_bf16>((bits + rounding) >> 16);
}

// exp(x) for float, vectorisable (no libm call): Cody-Waite range reduction and a
// degree-6 polynomial; relative error ~2e-7; below -87.3 (incl. -inf) it returns 0,
// above 88.3 it saturates at e^88.3 (finite).
inline float fast_exp(float x_in) {
  float x = x_in < -87.3f ? -87.3f : (x_in > 88.3f ? 88.3f : x_in);  // e^88.3 < FLT_MAX
  // Round to nearest with the 1.5·2^23 trick: unlike std::floor (which GCC vectorises
  // only under -fno-trapping-math) this keeps loops calling fast_exp vectorised.
  float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t e = static_cast<int32_t>(n) + 127;
  uint32_t bits = static_cast<uint32_t>(e) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return x_in < -87.3f ? 0.0f : p * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

}  // namespace rt
