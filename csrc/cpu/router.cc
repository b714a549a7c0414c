// MindSkip router scoring, fused: for every row of h (the layer's normed input),
// z = w · h, score = sigmoid(z), gate = score >= threshold, and the ascending list of
// executed rows with its count — one pass over h (the only large operand).
// The sequence-pooled variant first averages each sequence's valid tokens.
//
// Napkin math (token level, T = 16384, C = 4096): reads T·C floats (256 MiB) once,
// writes 3·T numbers — purely memory-bound, one FMA per float read.
// Compaction is deterministic and parallel: fixed row chunks (independent of the
// thread count) count their executed rows, a prefix sum gives each chunk its output
// offset, and each chunk writes its rows in ascending order.
//
// Backward (straight-through estimator: the caller's dL/dgate arrives as dscore):
//   dz = dscore · s · (1 − s);  dw += Σ_t dz[t] h[t];  dh[t] += dz[t] w.
// dw is reduced in a fixed order (fixed row chunks → per-chunk partials → summed by
// chunk index), so it is bit-identical for any thread count.
#include <climits>
#include <cstring>

#include "check.h"
#include "parallel.h"
#include "rt/router.h"
#include "simd.h"
#include "vec.h"

namespace {

using rt::dot_f32;
using rt::add_f32;
using rt::axpy_f32;
using rt::Scratch;

constexpr int64_t kChunkElems = int64_t(1) << 16;  // elements of h per scoring chunk (256 KB)
constexpr int64_t kPartialElems = int64_t(1) << 18;  // elements of h per dw / pooling partial (1 MB)

// Scratch from rt_alloc, freed on scope exit (the kernels never throw).



// y += a + b + c + d: four rows per pass halves the partial's load/store traffic.
RT_SIMD_CLONES void add4_f32(float* y, const float* a, const float* b, const float* c, const float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += (a[i] + b[i]) + (c[i] + d[i]);
}

int64_t rows_per_chunk(int64_t elems, int64_t C) { return C > 0 ? (elems + C - 1) / C : elems; }

// Writes the ascending list of rows r with gate[r] != 0: per-chunk counts, prefix sum,
// per-chunk writes. Returns RT_OK or RT_ERR_NOMEM.
rt_status compact(int32_t* exec_idx, int64_t* exec_count, const float* gate, int64_t n, int64_t chunk,
                  const char* op) {
  int64_t n_chunks = (n + chunk - 1) / chunk;
  Scratch s;
  int64_t* offsets = s.get<int64_t>(n_chunks + 1);
  RT_REQUIRE(offsets, RT_ERR_NOMEM, "%s: could not allocate %lld chunk counts", op, (long long)n_chunks);
  rt::parallel_for(n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t r1 = (c + 1) * chunk < n ? (c + 1) * chunk : n, cnt = 0;
      for (int64_t r = c * chunk; r < r1; ++r) cnt += gate[r] != 0.f;
      offsets[c + 1] = cnt;
    }
  });
  offsets[0] = 0;
  for (int64_t c = 0; c < n_chunks; ++c) offsets[c + 1] += offsets[c];
  rt::parallel_for(n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t r1 = (c + 1) * chunk < n ? (c + 1) * chunk : n, o = offsets[c];
      for (int64_t r = c * chunk; r < r1; ++r)
        if (gate[r] != 0.f) exec_idx[o++] = static_cast<int32_t>(r);
    }
  });
  *exec_count = offsets[n_chunks];
  return RT_OK;
}

// Valid-token count per sequence; a sequence with none is an argument error.
rt_status count_valid(int64_t* n_valid /*(B)*/, const int32_t* mask /*(B,T) nullable*/, int64_t B, int64_t T,
                      const char* op) {
  for (int64_t b = 0; b < B; ++b) {
    int64_t n = T;
    if (mask) {
      n = 0;
      for (int64_t t = 0; t < T; ++t) n += mask[b * T + t] != 0;
    }
    RT_REQUIRE(n > 0, RT_ERR_ARG, "%s: sequence %lld has no valid token (mask is all zero or T = 0)", op,
               (long long)b);
    n_valid[b] = n;
  }
  return RT_OK;
}

}  // namespace

extern "C" {

rt_status rt_router_token_fwd(float* score, float* gate, int32_t* exec_idx, int64_t* exec_count, const float* h,
                              const float* w, int64_t T, int64_t C, float threshold) {
  const char* op = "router_token_fwd";
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE_NONNEG(C, op, "C");
  RT_REQUIRE(T <= INT32_MAX, RT_ERR_SHAPE, "%s: expected T <= 2^31 - 1 (int32 row indices), received %lld", op,
             (long long)T);
  RT_REQUIRE_PTR(exec_count, op, "exec_count");
  *exec_count = 0;
  if (T == 0) return RT_OK;
  const int64_t chunk = rows_per_chunk(kChunkElems, C);
  const int64_t n_chunks = (T + chunk - 1) / chunk;
  Scratch s;
  int64_t* offsets = s.get<int64_t>(n_chunks + 1);
  RT_REQUIRE(offsets, RT_ERR_NOMEM, "%s: could not allocate %lld chunk counts", op, (long long)n_chunks);
  // Pass 1 (reads h once): score, gate and the executed count of each chunk.
  rt::parallel_for(n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t r1 = (c + 1) * chunk < T ? (c + 1) * chunk : T, cnt = 0;
      for (int64_t r = c * chunk; r < r1; ++r) {
        float sc = rt::sigmoid(dot_f32(h + r * C, w, C));
        bool on = sc >= threshold;
        score[r] = sc;
        gate[r] = on ? 1.f : 0.f;
        cnt += on;
      }
      offsets[c + 1] = cnt;
    }
  });
  offsets[0] = 0;
  for (int64_t c = 0; c < n_chunks; ++c) offsets[c + 1] += offsets[c];
  // Pass 2 (reads only gate): each chunk writes its executed rows at its offset.
  rt::parallel_for(n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t r1 = (c + 1) * chunk < T ? (c + 1) * chunk : T, o = offsets[c];
      for (int64_t r = c * chunk; r < r1; ++r)
        if (gate[r] != 0.f) exec_idx[o++] = static_cast<int32_t>(r);
    }
  });
  *exec_count = offsets[n_chunks];
  return RT_OK;
}

rt_status rt_router_token_bwd(float* dw, float* dh, const float* dscore, const float* score, const float* h,
                              const float* w, int64_t T, int64_t C) {
  const char* op = "router_token_bwd";
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE_NONNEG(C, op, "C");
  if (T == 0 || C == 0 || (!dw && !dh)) return RT_OK;
  Scratch sdz;
  float* dz = sdz.get<float>(T);  // (T)
  RT_REQUIRE(dz, RT_ERR_NOMEM, "%s: could not allocate %lld floats", op, (long long)T);
  for (int64_t t = 0; t < T; ++t) dz[t] = dscore[t] * score[t] * (1.f - score[t]);
  if (dh) {
    int64_t grain = rows_per_chunk(kChunkElems, C);
    rt::parallel_for(T, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        if (dz[r] != 0.f) axpy_f32(dh + r * C, w, dz[r], C);
    });
  }
  if (dw) {
    // Fixed row chunks → per-chunk partial dw (C) → summed in chunk order.
    const int64_t chunk = rows_per_chunk(kPartialElems, C);
    const int64_t n_chunks = (T + chunk - 1) / chunk;
    Scratch sp;
    float* partial = sp.get<float>(n_chunks * C);  // (n_chunks, C)
    RT_REQUIRE(partial, RT_ERR_NOMEM, "%s: could not allocate %lld floats", op, (long long)(n_chunks * C));
    rt::parallel_for(n_chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        float* p = partial + c * C;
        std::memset(p, 0, static_cast<size_t>(C) * sizeof(float));
        int64_t r1 = (c + 1) * chunk < T ? (c + 1) * chunk : T;
        for (int64_t r = c * chunk; r < r1; ++r)
          if (dz[r] != 0.f) axpy_f32(p, h + r * C, dz[r], C);
      }
    });
    rt::parallel_for(C, 1024, [&](int64_t j0, int64_t j1) {
      for (int64_t c = 0; c < n_chunks; ++c) add_f32(dw + j0, partial + c * C + j0, j1 - j0);
    });
  }
  return RT_OK;
}

rt_status rt_router_seq_fwd(float* pooled, float* score, float* gate, int32_t* exec_idx, int64_t* exec_count,
                            const float* h, const int32_t* mask, const float* w, int64_t B, int64_t T, int64_t C,
                            float threshold) {
  const char* op = "router_seq_fwd";
  RT_REQUIRE_NONNEG(B, op, "B");
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE_NONNEG(C, op, "C");
  RT_REQUIRE(B <= INT32_MAX, RT_ERR_SHAPE, "%s: expected B <= 2^31 - 1 (int32 indices), received %lld", op,
             (long long)B);
  RT_REQUIRE_PTR(exec_count, op, "exec_count");
  *exec_count = 0;
  if (B == 0) return RT_OK;
  Scratch sn;
  int64_t* n_valid = sn.get<int64_t>(B);
  RT_REQUIRE(n_valid, RT_ERR_NOMEM, "%s: could not allocate %lld counts", op, (long long)B);
  rt_status st = count_valid(n_valid, mask, B, T, op);
  if (st != RT_OK) return st;
  // Pooling: fixed (sequence, time-chunk) tasks sum their valid rows into partials,
  // then partials are summed in chunk order (deterministic for any thread count).
  const int64_t chunk = rows_per_chunk(kPartialElems, C);
  const int64_t n_tc = (T + chunk - 1) / chunk;
  Scratch sp;
  float* partial = sp.get<float>(B * n_tc * C);  // (B, n_tc, C)
  RT_REQUIRE(partial, RT_ERR_NOMEM, "%s: could not allocate %lld floats", op, (long long)(B * n_tc * C));
  rt::parallel_for(B * n_tc, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      int64_t b = k / n_tc, tc = k % n_tc;
      float* p = partial + k * C;
      std::memset(p, 0, static_cast<size_t>(C) * sizeof(float));
      int64_t t1 = (tc + 1) * chunk < T ? (tc + 1) * chunk : T;
      const float* rows[4];
      int nr = 0;
      for (int64_t t = tc * chunk; t < t1; ++t) {
        if (mask && !mask[b * T + t]) continue;
        rows[nr++] = h + (b * T + t) * C;
        if (nr == 4) {
          add4_f32(p, rows[0], rows[1], rows[2], rows[3], C);
          nr = 0;
        }
      }
      for (int i = 0; i < nr; ++i) add_f32(p, rows[i], C);
    }
  });
  rt::parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float* out = pooled + b * C;
      std::memcpy(out, partial + b * n_tc * C, static_cast<size_t>(C) * sizeof(float));
      for (int64_t tc = 1; tc < n_tc; ++tc) add_f32(out, partial + (b * n_tc + tc) * C, C);
      float inv = 1.f / static_cast<float>(n_valid[b]);
      for (int64_t c = 0; c < C; ++c) out[c] *= inv;
      float sc = rt::sigmoid(dot_f32(out, w, C));
      score[b] = sc;
      gate[b] = sc >= threshold ? 1.f : 0.f;
    }
  });
  return compact(exec_idx, exec_count, gate, B, 4096, op);
}

rt_status rt_router_seq_bwd(float* dw, float* dh, const float* dscore, const float* score, const float* pooled,
                            const int32_t* mask, const float* w, int64_t B, int64_t T, int64_t C) {
  const char* op = "router_seq_bwd";
  RT_REQUIRE_NONNEG(B, op, "B");
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE_NONNEG(C, op, "C");
  if (B == 0 || C == 0 || (!dw && !dh)) return RT_OK;
  Scratch sn, sdz;
  int64_t* n_valid = sn.get<int64_t>(B);
  float* dz = sdz.get<float>(B);
  RT_REQUIRE(n_valid && dz, RT_ERR_NOMEM, "%s: could not allocate %lld counts", op, (long long)B);
  rt_status st = count_valid(n_valid, mask, B, T, op);
  if (st != RT_OK) return st;
  for (int64_t b = 0; b < B; ++b) dz[b] = dscore[b] * score[b] * (1.f - score[b]);
  if (dw) {
    // Column blocks, sequences summed in order: race-free and deterministic.
    rt::parallel_for(C, 1024, [&](int64_t j0, int64_t j1) {
      for (int64_t b = 0; b < B; ++b) axpy_f32(dw + j0, pooled + b * C + j0, dz[b], j1 - j0);
    });
  }
  if (dh) {
    int64_t grain = rows_per_chunk(kChunkElems, C);
    rt::parallel_for(B * T, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        int64_t b = r / T;
        float g = dz[b] / static_cast<float>(n_valid[b]);
        if ((!mask || mask[r]) && g != 0.f) axpy_f32(dh + r * C, w, g, C);
      }
    });
  }
  return RT_OK;
}

}  // extern "C"
