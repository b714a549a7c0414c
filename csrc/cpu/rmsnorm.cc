// RMSNorm over the last dimension, forward and backward (Llama/Qwen style, no bias):
//   y = (x * rstd) * w,  rstd = 1 / sqrt(mean(x^2) + eps)        (R rows, C channels)
// The same kernel serves the per-layer norms (R = tokens, C = hidden) and Qwen3's
// per-head q/k norms (R = T*H rows of C = D).
//
// Napkin math (memory-bound): forward reads x (R*C) and w (C), writes out (R*C) and
// rstd (R): ~8*R*C bytes. A row (C <= a few thousand floats) stays in L1/L2 between
// the sum-of-squares pass and the scaling pass, so DRAM sees each element once.
// Backward reads dout and x (2*R*C), writes dx (R*C): ~12*R*C bytes; dw partials live
// in cache.
//
// Determinism: dw sums over rows. Rows are split into a fixed number of blocks that
// depends only on R (never on the thread count or scheduling); each block writes its
// own partial row, and the partials are added into dw in block order. Same inputs,
// same bits, on any number of threads.
#include <cmath>

#include "check.h"
#include "parallel.h"
#include "rt/rmsnorm.h"
#include "simd.h"

namespace {
constexpr int64_t kGrain = 1 << 15;      // elements per parallel chunk (~128 KB of floats)
constexpr int kLanes = 16;               // independent accumulators: vectorisable without -ffast-math
constexpr int64_t kMaxDwBlocks = 64;     // row blocks of the dw reduction (fixed, thread-independent)

// Sum of squares of a row: 16 float lanes (one zmm / two ymm), folded into a double.
RT_SIMD_CLONES double row_sum_squares(const float* x /*(C)*/, int64_t C) {
  double total = 0.0;
  for (int64_t b = 0; b < C; b += 4096) {
    int64_t e = b + 4096 < C ? b + 4096 : C;
    float acc[kLanes] = {0.f};
    int64_t i = b;
    for (; i + kLanes <= e; i += kLanes)
      for (int j = 0; j < kLanes; ++j) acc[j] += x[i + j] * x[i + j];
    float tail = 0.f;
    for (; i < e; ++i) tail += x[i] * x[i];
    for (int j = 0; j < kLanes; ++j) tail += acc[j];
    total += tail;
  }
  return total;
}

// Σ dout·w·x over a row (lanes as above).
RT_SIMD_CLONES double row_dot3(const float* dout, const float* w, const float* x, int64_t C) {
  double total = 0.0;
  for (int64_t b = 0; b < C; b += 4096) {
    int64_t e = b + 4096 < C ? b + 4096 : C;
    float acc[kLanes] = {0.f};
    int64_t i = b;
    for (; i + kLanes <= e; i += kLanes)
      for (int j = 0; j < kLanes; ++j) acc[j] += dout[i + j] * w[i + j] * x[i + j];
    float tail = 0.f;
    for (; i < e; ++i) tail += dout[i] * w[i] * x[i];
    for (int j = 0; j < kLanes; ++j) tail += acc[j];
    total += tail;
  }
  return total;
}

// out = (x * r) * w — the same operation order as Hugging Face's RMSNorm.
RT_SIMD_CLONES void scale_row(float* out, const float* x, const float* w, float r, int64_t C) {
  for (int64_t i = 0; i < C; ++i) out[i] = (x[i] * r) * w[i];
}

// dx = r·dout·w − k·x with k = r³·Σ(dout·w·x)/C.
RT_SIMD_CLONES void dx_row(float* dx, const float* dout, const float* w, const float* x, float r, float k,
                           int64_t C) {
  for (int64_t i = 0; i < C; ++i) dx[i] = r * dout[i] * w[i] - k * x[i];
}

// part = dout·x·r (first row of a block) or part += dout·x·r.
RT_SIMD_CLONES void dw_row_set(float* part, const float* dout, const float* x, float r, int64_t C) {
  for (int64_t i = 0; i < C; ++i) part[i] = dout[i] * x[i] * r;
}
RT_SIMD_CLONES void dw_row_add(float* part, const float* dout, const float* x, float r, int64_t C) {
  for (int64_t i = 0; i < C; ++i) part[i] += dout[i] * x[i] * r;
}
// Both at once (one pass over the row instead of two): dx as above and part (+)= dout·x·r.
RT_SIMD_CLONES void dx_dw_row_set(float* dx, float* part, const float* dout, const float* w, const float* x, float r,
                                  float k, int64_t C) {
  for (int64_t i = 0; i < C; ++i) {
    dx[i] = r * dout[i] * w[i] - k * x[i];
    part[i] = dout[i] * x[i] * r;
  }
}
RT_SIMD_CLONES void dx_dw_row_add(float* dx, float* part, const float* dout, const float* w, const float* x, float r,
                                  float k, int64_t C) {
  for (int64_t i = 0; i < C; ++i) {
    dx[i] = r * dout[i] * w[i] - k * x[i];
    part[i] += dout[i] * x[i] * r;
  }
}
RT_SIMD_CLONES void add_into(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
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

rt_status rt_rmsnorm_fwd(float* out, float* rstd, const float* x, const float* w, int64_t R, int64_t C, float eps) {
  const char* op = "rmsnorm_fwd";
  if (rt_status s = check_sizes(op, R, C)) return s;
  RT_REQUIRE(std::isfinite(eps) && eps >= 0.f, RT_ERR_ARG, "%s: expected eps >= 0 and finite, received %g", op,
             (double)eps);
  if (R == 0) return RT_OK;
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(x, op, "x");
  RT_REQUIRE_PTR(w, op, "w");
  int64_t grain = (kGrain + C - 1) / C;
  rt::parallel_for(R, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * C;  // (C)
      double ms = row_sum_squares(xr, C) / static_cast<double>(C);
      float rs = static_cast<float>(1.0 / std::sqrt(ms + static_cast<double>(eps)));
      if (rstd) rstd[r] = rs;
      scale_row(out + r * C, xr, w, rs, C);
    }
  });
  return RT_OK;
}

rt_status rt_rmsnorm_bwd(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                         int64_t R, int64_t C) {
  const char* op = "rmsnorm_bwd";
  if (rt_status s = check_sizes(op, R, C)) return s;
  if (R == 0 || (!dx && !dw)) return RT_OK;
  RT_REQUIRE_PTR(dout, op, "dout");
  RT_REQUIRE_PTR(x, op, "x");
  RT_REQUIRE_PTR(w, op, "w");
  RT_REQUIRE_PTR(rstd, op, "rstd");

  // One row of the backward: dx (when wanted) and this row's dw contribution.
  auto row = [&](int64_t r, float* part, bool first) {
    const float* dr = dout + r * C;  // (C)
    const float* xr = x + r * C;     // (C)
    float rs = rstd[r];
    if (!dx) {
      if (first) dw_row_set(part, dr, xr, rs, C);
      else dw_row_add(part, dr, xr, rs, C);
      return;
    }
    double dot = row_dot3(dr, w, xr, C);
    float k = static_cast<float>(static_cast<double>(rs) * rs * rs * dot / static_cast<double>(C));
    if (!part) dx_row(dx + r * C, dr, w, xr, rs, k, C);
    else if (first) dx_dw_row_set(dx + r * C, part, dr, w, xr, rs, k, C);
    else dx_dw_row_add(dx + r * C, part, dr, w, xr, rs, k, C);
  };

  if (!dw) {
    rt::parallel_for(R, (kGrain + C - 1) / C, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) row(r, nullptr, false);
    });
    return RT_OK;
  }

  // Fixed blocks: n_blocks depends on R only, so the summation order is fixed.
  int64_t rows_per_block = (R + kMaxDwBlocks - 1) / kMaxDwBlocks;
  int64_t n_blocks = (R + rows_per_block - 1) / rows_per_block;
  size_t part_bytes = static_cast<size_t>(n_blocks) * static_cast<size_t>(C) * sizeof(float);
  float* parts = static_cast<float*>(rt_alloc(part_bytes));  // (n_blocks, C)
  RT_REQUIRE(parts, RT_ERR_NOMEM, "%s: could not allocate %lld bytes of dw scratch", op, (long long)part_bytes);
  rt::parallel_for(n_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      int64_t r0 = b * rows_per_block, r1 = r0 + rows_per_block < R ? r0 + rows_per_block : R;
      for (int64_t r = r0; r < r1; ++r) row(r, parts + b * C, r == r0);
    }
  });
  // dw += Σ_b parts[b], in block order; parallel over column slices (disjoint writes).
  rt::parallel_for(C, 1024, [&](int64_t c0, int64_t c1) {
    for (int64_t b = 0; b < n_blocks; ++b) add_into(dw + c0, parts + b * C + c0, c1 - c0);
  });
  rt_free(parts, part_bytes);
  return RT_OK;
}

}  // extern "C"
