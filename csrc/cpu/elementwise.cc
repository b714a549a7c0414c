// Elementwise ops and small reductions: add/mul/scale/axpy, the gated residual
// x + g·F(x) that every routed layer ends with (and its backward), bias add, sum of
// squares, dtype casts, and a parallel copy (the bench's bandwidth ceiling).
// All memory-bound: each reads/writes a few floats per element; parallel over rows
// or flat ranges, vectorised through RT_SIMD_CLONES.
#include <algorithm>
#include <cstring>

#include "check.h"
#include "parallel.h"
#include "rt/elementwise.h"
#include "simd.h"

namespace {
constexpr int64_t kGrain = 1 << 15;  // elements per chunk: ~128 KB of floats

RT_SIMD_CLONES void add_range(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}
RT_SIMD_CLONES void mul_range(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
}
RT_SIMD_CLONES void scale_range(float* out, const float* a, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * s;
}
RT_SIMD_CLONES void axpy_range(float* y, const float* x, float alpha, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}
RT_SIMD_CLONES void fill_range(float* out, float v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = v;
}
RT_SIMD_CLONES void clamp_range(float* out, const float* x, float lo, float hi, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] < lo ? lo : (x[i] > hi ? hi : x[i]);
}
RT_SIMD_CLONES void clamp_bwd_range(float* dx, const float* dout, const float* x, float lo, float hi, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = (x[i] > lo && x[i] < hi) ? dout[i] : 0.0f;
}
RT_SIMD_CLONES float dot_row(const float* a, const float* b, int64_t n) {
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
RT_SIMD_CLONES double sum_squares_range(const float* x, int64_t n) {
  // float partial sums in blocks keep it vectorised; double across blocks keeps it exact enough.
  double total = 0.0;
  for (int64_t i0 = 0; i0 < n; i0 += 4096) {
    int64_t i1 = i0 + 4096 < n ? i0 + 4096 : n;
    float s = 0.f;
    for (int64_t i = i0; i < i1; ++i) s += x[i] * x[i];
    total += s;
  }
  return total;
}
RT_SIMD_CLONES void bf16_to_f32_range(float* out, const rt_bf16* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = rt::bf16_to_f32(in[i]);
}
RT_SIMD_CLONES void f32_to_bf16_range(rt_bf16* out, const float* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = rt::f32_to_bf16(in[i]);
}

template <typename Fn>
void flat_parallel(int64_t n, Fn fn) {
  rt::parallel_for(n, kGrain, [&](int64_t b, int64_t e) { fn(b, e - b); });
}
}  // namespace

extern "C" {

rt_status rt_copy_bytes(void* out, const void* in, int64_t bytes) {
  RT_REQUIRE_NONNEG(bytes, "copy", "bytes");
  if (bytes == 0) return RT_OK;
  RT_REQUIRE_PTR(out, "copy", "out");
  RT_REQUIRE_PTR(in, "copy", "in");
  // One large chunk per thread: glibc's memcpy switches to non-temporal stores for large
  // copies, so a big copy moves each byte once each way (the bandwidth ceiling).
  int64_t grain = std::max<int64_t>(1 << 20, (bytes + rt_num_threads() - 1) / rt_num_threads());
  rt::parallel_for(bytes, grain, [&](int64_t b, int64_t e) {
    std::memcpy(static_cast<char*>(out) + b, static_cast<const char*>(in) + b, static_cast<size_t>(e - b));
  });
  return RT_OK;
}

rt_status rt_fill_f32(float* out, float value, int64_t n) {
  RT_REQUIRE_NONNEG(n, "fill", "n");
  flat_parallel(n, [&](int64_t b, int64_t len) { fill_range(out + b, value, len); });
  return RT_OK;
}

rt_status rt_add_f32(float* out, const float* a, const float* b, int64_t n) {
  RT_REQUIRE_NONNEG(n, "add", "n");
  flat_parallel(n, [&](int64_t s, int64_t len) { add_range(out + s, a + s, b + s, len); });
  return RT_OK;
}

rt_status rt_mul_f32(float* out, const float* a, const float* b, int64_t n) {
  RT_REQUIRE_NONNEG(n, "mul", "n");
  flat_parallel(n, [&](int64_t s, int64_t len) { mul_range(out + s, a + s, b + s, len); });
  return RT_OK;
}

rt_status rt_scale_f32(float* out, const float* a, float s, int64_t n) {
  RT_REQUIRE_NONNEG(n, "scale", "n");
  flat_parallel(n, [&](int64_t b, int64_t len) { scale_range(out + b, a + b, s, len); });
  return RT_OK;
}

rt_status rt_axpy_f32(float* y, const float* x, float alpha, int64_t n) {
  RT_REQUIRE_NONNEG(n, "axpy", "n");
  flat_parallel(n, [&](int64_t b, int64_t len) { axpy_range(y + b, x + b, alpha, len); });
  return RT_OK;
}

rt_status rt_gated_residual_fwd(float* out, const float* x, const float* f, const float* g, int64_t R, int64_t C) {
  RT_REQUIRE_NONNEG(R, "gated_residual_fwd", "R");
  RT_REQUIRE_NONNEG(C, "gated_residual_fwd", "C");
  int64_t grain = C > 0 ? (kGrain + C - 1) / C : 1;
  rt::parallel_for(R, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float gate = g ? g[r] : 1.0f;
      if (out != x) std::memcpy(out + r * C, x + r * C, static_cast<size_t>(C) * sizeof(float));
      if (gate != 0.0f) axpy_range(out + r * C, f + r * C, gate, C);
    }
  });
  return RT_OK;
}

rt_status rt_gated_residual_bwd(float* df, float* dg, const float* dout, const float* f, const float* g, int64_t R,
                                int64_t C) {
  RT_REQUIRE_NONNEG(R, "gated_residual_bwd", "R");
  RT_REQUIRE_NONNEG(C, "gated_residual_bwd", "C");
  int64_t grain = C > 0 ? (kGrain + C - 1) / C : 1;
  rt::parallel_for(R, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (df) scale_range(df + r * C, dout + r * C, g ? g[r] : 1.0f, C);
      if (dg) dg[r] = dot_row(dout + r * C, f + r * C, C);
    }
  });
  return RT_OK;
}

rt_status rt_add_bias_fwd(float* x, const void* bias, rt_dtype bias_dtype, int64_t R, int64_t C) {
  RT_REQUIRE_NONNEG(R, "add_bias_fwd", "R");
  RT_REQUIRE_NONNEG(C, "add_bias_fwd", "C");
  RT_REQUIRE_DTYPE_FLOAT(bias_dtype, "add_bias_fwd", "bias");
  const float* b32 = static_cast<const float*>(bias);
  float* widened = nullptr;
  if (bias_dtype == RT_BF16) {
    widened = static_cast<float*>(rt_alloc(static_cast<size_t>(C) * 4));
    RT_REQUIRE(widened, RT_ERR_NOMEM, "add_bias_fwd: could not allocate %lld floats", (long long)C);
    bf16_to_f32_range(widened, static_cast<const rt_bf16*>(bias), C);
    b32 = widened;
  }
  int64_t grain = C > 0 ? (kGrain + C - 1) / C : 1;
  rt::parallel_for(R, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) add_range(x + r * C, x + r * C, b32, C);
  });
  if (widened) rt_free(widened, static_cast<size_t>(C) * 4);
  return RT_OK;
}

rt_status rt_add_bias_bwd(float* dbias, const float* dout, int64_t R, int64_t C, int accumulate) {
  RT_REQUIRE_NONNEG(R, "add_bias_bwd", "R");
  RT_REQUIRE_NONNEG(C, "add_bias_bwd", "C");
  // Parallel over column blocks so no two threads write the same dbias entry.
  rt::parallel_for(C, 256, [&](int64_t c0, int64_t c1) {
    if (!accumulate) fill_range(dbias + c0, 0.f, c1 - c0);
    for (int64_t r = 0; r < R; ++r) add_range(dbias + c0, dbias + c0, dout + r * C + c0, c1 - c0);
  });
  return RT_OK;
}

rt_status rt_clamp_fwd(float* out, const float* x, float lo, float hi, int64_t n) {
  RT_REQUIRE_NONNEG(n, "clamp_fwd", "n");
  RT_REQUIRE(lo <= hi, RT_ERR_ARG, "clamp_fwd: expected lo <= hi, received lo %g, hi %g", lo, hi);
  flat_parallel(n, [&](int64_t b, int64_t len) { clamp_range(out + b, x + b, lo, hi, len); });
  return RT_OK;
}

rt_status rt_clamp_bwd(float* dx, const float* dout, const float* x, float lo, float hi, int64_t n) {
  RT_REQUIRE_NONNEG(n, "clamp_bwd", "n");
  RT_REQUIRE(lo <= hi, RT_ERR_ARG, "clamp_bwd: expected lo <= hi, received lo %g, hi %g", lo, hi);
  flat_parallel(n, [&](int64_t b, int64_t len) { clamp_bwd_range(dx + b, dout + b, x + b, lo, hi, len); });
  return RT_OK;
}

rt_status rt_sum_squares_f32(double* out, const float* x, int64_t n) {
  RT_REQUIRE_NONNEG(n, "sum_squares", "n");
  // Fixed chunking (independent of thread count) keeps the result deterministic.
  const int64_t chunk = 1 << 16;
  int64_t n_chunks = (n + chunk - 1) / chunk;
  double* partial = static_cast<double*>(rt_alloc(static_cast<size_t>(n_chunks) * sizeof(double)));
  RT_REQUIRE(partial || n_chunks == 0, RT_ERR_NOMEM, "sum_squares: could not allocate scratch");
  rt::parallel_for(n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t b = c * chunk, e = b + chunk < n ? b + chunk : n;
      partial[c] = sum_squares_range(x + b, e - b);
    }
  });
  double total = 0.0;
  for (int64_t c = 0; c < n_chunks; ++c) total += partial[c];
  rt_free(partial, static_cast<size_t>(n_chunks) * sizeof(double));
  *out = total;
  return RT_OK;
}

rt_status rt_cast_f32_to_bf16(rt_bf16* out, const float* in, int64_t n) {
  RT_REQUIRE_NONNEG(n, "cast_f32_to_bf16", "n");
  flat_parallel(n, [&](int64_t b, int64_t len) { f32_to_bf16_range(out + b, in + b, len); });
  return RT_OK;
}

rt_status rt_cast_bf16_to_f32(float* out, const rt_bf16* in, int64_t n) {
  RT_REQUIRE_NONNEG(n, "cast_bf16_to_f32", "n");
  flat_parallel(n, [&](int64_t b, int64_t len) { bf16_to_f32_range(out + b, in + b, len); });
  return RT_OK;
}

}  // extern "C"
