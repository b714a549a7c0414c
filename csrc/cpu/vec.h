// Small vectorised row helpers shared by the CPU kernels (one definition each, compiled
// for AVX-512 / AVX2 / baseline through RT_SIMD_CLONES in vec.cc).
#pragma once
#include <cstdint>

#include "rt/common.h"

namespace rt {

// <a, b> with 32 independent accumulators: vectorises without -ffast-math, and the
// summation order is fixed (deterministic for any thread count).
float dot_f32(const float* a, const float* b, int64_t n);
void add_f32(float* y, const float* x, int64_t n);               // y += x
void axpy_f32(float* y, const float* x, float a, int64_t n);     // y += a·x
void scale_f32(float* y, const float* x, float a, int64_t n);    // y = a·x

// Per-call scratch from the counted allocator, freed when it goes out of scope.
struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (ptr) rt_free(ptr, bytes);
  }
  template <typename T>
  T* get(int64_t n) {
    if (ptr) rt_free(ptr, bytes);
    bytes = static_cast<size_t>(n > 0 ? n : 1) * sizeof(T);
    ptr = rt_alloc(bytes);
    return static_cast<T*>(ptr);
  }
};

}  // namespace rt
