// Row gather and scatter: the compaction behind token-level skipping (gather the
// executed tokens, run the layer on them, scatter the result back into the residual
// stream) and the backward of each other (gather ↔ scatter-add).
//
// Napkin math (R = 16384, C = 4096, N = R/2): gather reads and writes N·C floats
// (2 × 128 MiB); scatter reads N·C and writes N·C (+ reads N·C when accumulating).
// Memory-bound: one row is one contiguous memcpy / add of C floats.
//
// Parallelism: when the indices are strictly ascending (the router's exec_idx,
// checked in O(N)), rows go to threads directly. Otherwise (any order, repeats) a
// scatter first groups its sources by destination row (stable counting sort, O(N+R));
// each destination row then belongs to one thread and takes its sources in index
// order: race-free, and the result (last write wins / sum in index order) is
// deterministic for any thread count.
#include <cstring>

#include "check.h"
#include "parallel.h"
#include "rt/gather_scatter.h"
#include "simd.h"
#include "vec.h"

namespace {

using rt::add_f32;
using rt::Scratch;


constexpr int64_t kGrainElems = int64_t(1) << 15;  // floats per chunk (128 KB)


int64_t row_grain(int64_t C) { return C > 0 ? (kGrainElems + C - 1) / C : kGrainElems; }

rt_status check_indices(const int32_t* idx, int64_t N, int64_t R, const char* op) {
  for (int64_t n = 0; n < N; ++n)
    RT_REQUIRE(idx[n] >= 0 && idx[n] < R, RT_ERR_INDEX, "%s: idx[%lld] = %d is out of range [0, %lld)", op,
               (long long)n, idx[n], (long long)R);
  return RT_OK;
}

bool strictly_ascending(const int32_t* idx, int64_t N) {
  for (int64_t n = 1; n < N; ++n)
    if (idx[n] <= idx[n - 1]) return false;
  return true;
}

}  // namespace

extern "C" {

rt_status rt_gather_rows(float* out, const float* x, const int32_t* idx, int64_t N, int64_t R, int64_t C) {
  const char* op = "gather_rows";
  RT_REQUIRE_NONNEG(N, op, "N");
  RT_REQUIRE_NONNEG(R, op, "R");
  RT_REQUIRE_NONNEG(C, op, "C");
  rt_status st = check_indices(idx, N, R, op);
  if (st != RT_OK) return st;
  if (C == 0) return RT_OK;
  const size_t row_bytes = static_cast<size_t>(C) * sizeof(float);
  rt::parallel_for(N, row_grain(C), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) std::memcpy(out + n * C, x + static_cast<int64_t>(idx[n]) * C, row_bytes);
  });
  return RT_OK;
}

rt_status rt_scatter_rows(float* out, const float* y, const int32_t* idx, int64_t N, int64_t R, int64_t C,
                          int accumulate) {
  const char* op = "scatter_rows";
  RT_REQUIRE_NONNEG(N, op, "N");
  RT_REQUIRE_NONNEG(R, op, "R");
  RT_REQUIRE_NONNEG(C, op, "C");
  rt_status st = check_indices(idx, N, R, op);
  if (st != RT_OK) return st;
  if (C == 0 || N == 0) return RT_OK;
  const size_t row_bytes = static_cast<size_t>(C) * sizeof(float);
  if (strictly_ascending(idx, N)) {  // distinct destinations (the router's exec_idx): rows straight to threads
    rt::parallel_for(N, row_grain(C), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        float* dst = out + static_cast<int64_t>(idx[n]) * C;
        if (accumulate)
          add_f32(dst, y + n * C, C);
        else
          std::memcpy(dst, y + n * C, row_bytes);
      }
    });
    return RT_OK;
  }
  // Any order, possibly repeated: group the sources by destination row with a stable
  // counting sort (O(N + R)), then each destination row is owned by one thread and
  // takes its sources in index order — race-free, deterministic, rows stay contiguous.
  Scratch s_off, s_src;
  int64_t* offsets = s_off.get<int64_t>(R + 1);  // (R+1) per-row source counts → start offsets → end offsets
  int64_t* src = s_src.get<int64_t>(N);          // (N)
  RT_REQUIRE(offsets && src, RT_ERR_NOMEM, "%s: could not allocate scratch for R = %lld, N = %lld", op, (long long)R,
             (long long)N);
  std::memset(offsets, 0, static_cast<size_t>(R + 1) * sizeof(int64_t));
  for (int64_t n = 0; n < N; ++n) ++offsets[idx[n] + 1];
  for (int64_t r = 0; r < R; ++r) offsets[r + 1] += offsets[r];
  for (int64_t n = 0; n < N; ++n) src[offsets[idx[n]]++] = n;  // offsets[r] now ends row r
  rt::parallel_for(R, row_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t b = r == 0 ? 0 : offsets[r - 1], e = offsets[r];
      if (b == e) continue;
      float* dst = out + r * C;
      if (!accumulate) {
        std::memcpy(dst, y + src[e - 1] * C, row_bytes);  // the last write wins
        continue;
      }
      for (int64_t k = b; k < e; ++k) add_f32(dst, y + src[k] * C, C);
    }
  });
  return RT_OK;
}

}  // extern "C"
