// Token embedding: forward is a row gather (out[t] = table[ids[t]], bf16 rows widened
// to fp32 on the way), backward a scatter-add of the output gradient into the table
// gradient. Both are pure data movement.
//
// Napkin math (T tokens, C channels): forward reads T·C table elements (4 or 2 bytes)
// and writes T·C floats: 32768 × 2048 → 256 MiB written, ~10 ms at copy bandwidth.
// Backward reads T·C floats of dout and reads+writes the touched dtable rows.
//
// Backward determinism: every dtable element receives its contributions in ascending
// token order, whatever the thread count. Tokens are bucketed by id with a stable
// counting sort; a work item is one distinct id × one block of columns (whole rows
// unless a few hot ids hold most tokens), so no two threads ever write the same
// element and repeated ids need no atomics.
#include <algorithm>
#include <cstring>

#include "check.h"
#include "parallel.h"
#include "rt/embedding.h"
#include "simd.h"

namespace {

RT_SIMD_CLONES void widen_row(float* out, const rt_bf16* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = rt::bf16_to_f32(in[i]);
}

RT_SIMD_CLONES void add_row(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

// First id outside [0, V), as its position, or -1.
int64_t first_bad_id(const int32_t* ids, int64_t T, int64_t V) {
  for (int64_t t = 0; t < T; ++t)
    if (ids[t] < 0 || ids[t] >= V) return t;
  return -1;
}

constexpr int64_t kColBlock = 512;  // floats per column block when few distinct ids (2 KiB row segments)

}  // namespace

extern "C" {

rt_status rt_embedding_fwd(float* out /*(T,C)*/, const void* table /*(V,C)*/, rt_dtype table_dtype,
                           const int32_t* ids /*(T)*/, int64_t T, int64_t V, int64_t C) {
  const char* op = "embedding_fwd";
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE_NONNEG(V, op, "V");
  RT_REQUIRE_NONNEG(C, op, "C");
  RT_REQUIRE_DTYPE_FLOAT(table_dtype, op, "table");
  if (T == 0) return RT_OK;
  RT_REQUIRE_PTR(ids, op, "ids");
  int64_t bad = first_bad_id(ids, T, V);
  RT_REQUIRE(bad < 0, RT_ERR_INDEX, "%s: 'ids' expected values in [0, V) = [0, %lld), received ids[%lld] = %d", op,
             (long long)V, (long long)bad, bad < 0 ? 0 : ids[bad]);
  if (C == 0) return RT_OK;
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(table, op, "table");
  // ~64 KiB of output per chunk: row copies are memcpy-speed, the pool overhead amortised.
  int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / C);
  if (table_dtype == RT_F32) {
    const float* tab = static_cast<const float*>(table);
    rt::parallel_for(T, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        std::memcpy(out + t * C, tab + static_cast<int64_t>(ids[t]) * C, static_cast<size_t>(C) * sizeof(float));
    });
  } else {
    const rt_bf16* tab = static_cast<const rt_bf16*>(table);
    rt::parallel_for(T, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) widen_row(out + t * C, tab + static_cast<int64_t>(ids[t]) * C, C);
    });
  }
  return RT_OK;
}

rt_status rt_embedding_bwd(float* dtable /*(V,C)*/, const float* dout /*(T,C)*/, const int32_t* ids /*(T)*/,
                           int64_t T, int64_t V, int64_t C) {
  const char* op = "embedding_bwd";
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE_NONNEG(V, op, "V");
  RT_REQUIRE_NONNEG(C, op, "C");
  if (T == 0) return RT_OK;
  RT_REQUIRE_PTR(ids, op, "ids");
  int64_t bad = first_bad_id(ids, T, V);
  RT_REQUIRE(bad < 0, RT_ERR_INDEX, "%s: 'ids' expected values in [0, V) = [0, %lld), received ids[%lld] = %d", op,
             (long long)V, (long long)bad, bad < 0 ? 0 : ids[bad]);
  if (C == 0) return RT_OK;
  RT_REQUIRE_PTR(dtable, op, "dtable");
  RT_REQUIRE_PTR(dout, op, "dout");

  // Stable counting sort of token positions by id, compacted to the distinct ids:
  //   uniq[u] the u-th distinct id (ascending), tokens of it: order[start[u] .. start[u+1]).
  // Scratch: V+1 counters (int64) + T positions + distinct ids/starts (≤ T+1 each).
  size_t count_bytes = static_cast<size_t>(V + 1) * sizeof(int64_t);
  size_t order_bytes = static_cast<size_t>(T) * sizeof(int32_t);
  size_t uniq_bytes = static_cast<size_t>(T) * sizeof(int32_t);
  size_t start_bytes = static_cast<size_t>(T + 1) * sizeof(int64_t);
  auto* count = static_cast<int64_t*>(rt_alloc(count_bytes));
  auto* order = static_cast<int32_t*>(rt_alloc(order_bytes));
  auto* uniq = static_cast<int32_t*>(rt_alloc(uniq_bytes));
  auto* start = static_cast<int64_t*>(rt_alloc(start_bytes));
  auto release = [&] {
    rt_free(count, count_bytes);
    rt_free(order, order_bytes);
    rt_free(uniq, uniq_bytes);
    rt_free(start, start_bytes);
  };
  if (!count || !order || !uniq || !start) {
    release();
    return rt_fail(RT_ERR_NOMEM, "%s: could not allocate %zu bytes of scratch", op,
                   count_bytes + order_bytes + uniq_bytes + start_bytes);
  }
  std::memset(count, 0, count_bytes);
  for (int64_t t = 0; t < T; ++t) ++count[ids[t] + 1];
  int64_t U = 0;
  for (int64_t v = 0; v < V; ++v) {
    if (count[v + 1] > 0) {
      uniq[U] = static_cast<int32_t>(v);
      start[U] = count[v];
      ++U;
    }
    count[v + 1] += count[v];  // count[v] = first slot of id v
  }
  start[U] = T;
  for (int64_t t = 0; t < T; ++t) order[count[ids[t]]++] = static_cast<int32_t>(t);

  // Work items: column blocks × distinct ids, column block outermost so a chunk of
  // items covers consecutive ids within one block. Each (id, block) is owned by one
  // item. Whole rows (one block) when there are enough distinct ids to share out: long
  // contiguous reads; column blocks only when a few hot ids hold most tokens.
  const int threads = rt_num_threads();
  const int64_t col_block = U >= 16 * threads ? C : std::min(C, kColBlock);
  const int64_t n_blocks = (C + col_block - 1) / col_block;
  const int64_t items = n_blocks * U;
  const int64_t avg_tokens = std::max<int64_t>(1, T / U);
  int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / (col_block * avg_tokens));
  rt::parallel_for(items, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      int64_t blk = i / U, u = i % U;
      int64_t c0 = blk * col_block, cw = std::min(col_block, C - c0);
      float* row = dtable + static_cast<int64_t>(uniq[u]) * C + c0;
      for (int64_t s = start[u]; s < start[u + 1]; ++s) add_row(row, dout + static_cast<int64_t>(order[s]) * C + c0, cw);
    }
  });
  release();
  return RT_OK;
}

}  // extern "C"
