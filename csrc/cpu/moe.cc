// Mixture of experts as explicit index tensors: route (softmax + top-k), a stable
// counting sort of the live assignments by expert, the grouped expert SwiGLU over the
// sorted rows, and the weighted combine — each with its backward.
//
//   route:    probs = softmax(logits), top-K (ties → lower expert id), optional renorm
//   sort:     perm[p] = a (assignment a = t*K + j), bounds[e]..bounds[e+1] = expert e
//   experts:  Xs[p] = x[perm[p] / K];  G = Xs Wg[e]ᵀ, U = Xs Wu[e]ᵀ (saved for backward),
//             y[p] = (silu(G) ⊙ U) Wd[e]ᵀ
//   combine:  out[t] = Σ_j topk_w[t,j] · y[inv_perm[t*K+j]]
//
// Napkin math (T = 512, K = 2, E = 8, C = 1024, I = 2816): A = 1024 rows,
// 3·2·A·C·I = 17.7 GFLOP against 3·E·C·I = 69 M weights (277 MB f32) read once: at
// ~200 GFLOP/s and ~20 GB/s it is GEMM-bound (~90 ms vs ~14 ms of weight traffic).
// OpenBLAS runs one thread per call, so the GEMMs are tiled into (expert, row block,
// column block) tasks spread over the engine's pool; every output element belongs to
// one task, and weight gradients are never split along their reduction (row)
// dimension, so every result is deterministic. bf16 weights are widened tile by tile
// into bounded per-thread scratch (≤ kColBlock · max(C, I) floats per thread).
// Measured on 2 EPYC cores: with ~A/E = 128 rows per expert, single-thread OpenBLAS
// reaches ~75–80% of its 2048³ rate on these GEMM shapes (packing each weight panel
// is a DRAM read not overlapped with compute), and the block lands at ~70–75%.
#include <cblas.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <functional>

#include "check.h"
#include "parallel.h"
#include "rt/moe.h"
#include "simd.h"
#include "vec.h"

namespace {

using rt::dot_f32;
using rt::add_f32;
using rt::axpy_f32;
using rt::scale_f32;
using rt::Scratch;

constexpr int64_t kRowBlock = 512;  // sorted rows per GEMM task
constexpr int64_t kColBlock = 256;  // output columns per GEMM task


RT_SIMD_CLONES void widen_bf16(float* out, const rt_bf16* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = rt::bf16_to_f32(in[i]);
}
// h = silu(g) * u
RT_SIMD_CLONES void swiglu_f32(float* h, const float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] = g[i] * rt::sigmoid(g[i]) * u[i];
}
// From dH (in dg_io): dU = dH·silu(g), dG = dH·u·σ(g)(1 + g(1 − σ(g))) (written over dH).
RT_SIMD_CLONES void swiglu_bwd_f32(float* dg_io, float* du, const float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float s = rt::sigmoid(g[i]), dh = dg_io[i];
    du[i] = dh * g[i] * s;
    dg_io[i] = dh * u[i] * s * (1.f + g[i] * (1.f - s));
  }
}

// A weight matrix of one expert: f32 in place or bf16 widened into per-thread scratch.
struct Weights {
  const void* data;
  rt_dtype dtype;
  // Pointer to the (rows × cols) sub-block starting at element `offset` of a matrix with
  // leading dimension `ld`, as f32 with leading dimension *ld_out.
  const float* block(int64_t offset, int64_t rows, int64_t cols, int64_t ld, float* scratch, int64_t* ld_out) const {
    if (dtype == RT_F32) {
      *ld_out = ld;
      return static_cast<const float*>(data) + offset;
    }
    const rt_bf16* src = static_cast<const rt_bf16*>(data) + offset;
    for (int64_t r = 0; r < rows; ++r) widen_bf16(scratch + r * cols, src + r * ld, cols);
    *ld_out = cols;
    return scratch;
  }
};

// One GEMM tile: expert e, sorted rows [r0, r1), output columns [c0, c1).
struct Tile {
  int32_t e;
  int32_t kind;
  int64_t r0, r1, c0, c1;
};

// Tiles over (expert, row block, column block) for a GEMM with `cols` output columns;
// row_block = 0 keeps each expert's rows in one tile (weight gradients: no split of the
// reduction). Returns the count written (tiles == nullptr: only counts).
int64_t make_tiles(Tile* tiles, const int32_t* bounds, int64_t E, int64_t cols, int64_t row_block, int32_t kind,
                   int64_t start) {
  int64_t n = start;
  for (int64_t e = 0; e < E; ++e) {
    int64_t b0 = bounds[e], b1 = bounds[e + 1];
    if (b1 <= b0) continue;
    int64_t rb = row_block > 0 ? row_block : (b1 - b0);
    for (int64_t r = b0; r < b1; r += rb)
      for (int64_t c = 0; c < cols; c += kColBlock) {
        if (tiles) tiles[n] = Tile{static_cast<int32_t>(e), kind, r, r + rb < b1 ? r + rb : b1, c,
                                   c + kColBlock < cols ? c + kColBlock : cols};
        ++n;
      }
  }
  return n;
}

// Per-thread widening scratch, only for bf16 weights.
struct ThreadScratch {
  Scratch mem;
  int64_t per_thread = 0;
  bool init(rt_dtype dtype, int64_t floats_per_thread) {
    if (dtype == RT_F32) return true;
    per_thread = floats_per_thread;
    return mem.get<float>(per_thread * rt_num_threads()) != nullptr;
  }
  float* mine() const {
    return per_thread ? static_cast<float*>(mem.ptr) + static_cast<int64_t>(rt::thread_index()) * per_thread
                      : nullptr;
  }
};

// bounds: bounds[0] = 0, non-decreasing, bounds[E] <= T*K; perm[0..A) in [0, T*K), distinct.
// Fills inv (T*K) with the inverse (-1 where no row) when inv != nullptr.
rt_status check_sorted(int64_t* A_out, int32_t* inv, const int32_t* perm, const int32_t* bounds, int64_t TK,
                       int64_t E, const char* op) {
  RT_REQUIRE(bounds[0] == 0, RT_ERR_INDEX, "%s: expected bounds[0] = 0, received %d", op, bounds[0]);
  for (int64_t e = 0; e < E; ++e)
    RT_REQUIRE(bounds[e + 1] >= bounds[e], RT_ERR_INDEX,
               "%s: expected non-decreasing bounds, received bounds[%lld] = %d < bounds[%lld] = %d", op,
               (long long)(e + 1), bounds[e + 1], (long long)e, bounds[e]);
  RT_REQUIRE(bounds[E] <= TK, RT_ERR_INDEX, "%s: expected bounds[E] <= T*K = %lld, received bounds[%lld] = %d", op,
             (long long)TK, (long long)E, bounds[E]);
  const int64_t A = bounds[E];
  for (int64_t p = 0; p < A; ++p)
    RT_REQUIRE(perm[p] >= 0 && perm[p] < TK, RT_ERR_INDEX, "%s: perm[%lld] = %d is out of range [0, %lld)", op,
               (long long)p, perm[p], (long long)TK);
  if (inv) {
    for (int64_t a = 0; a < TK; ++a) inv[a] = -1;
    for (int64_t p = 0; p < A; ++p) {
      RT_REQUIRE(inv[perm[p]] < 0, RT_ERR_INDEX, "%s: perm[%lld] = %d repeats perm[%d]", op, (long long)p, perm[p],
                 inv[perm[p]]);
      inv[perm[p]] = static_cast<int32_t>(p);
    }
  }
  *A_out = A;
  return RT_OK;
}

rt_status check_common(int64_t T, int64_t E, int64_t K, const char* op) {
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE(E >= 1, RT_ERR_SHAPE, "%s: expected E >= 1, received %lld", op, (long long)E);
  RT_REQUIRE(K >= 1 && K <= E, RT_ERR_ARG, "%s: expected 1 <= K <= E = %lld, received K = %lld", op, (long long)E,
             (long long)K);
  RT_REQUIRE(T <= INT32_MAX / K, RT_ERR_SHAPE, "%s: expected T*K <= 2^31 - 1 (int32 indices), received T = %lld, K = %lld",
             op, (long long)T, (long long)K);
  return RT_OK;
}

// Xs[p] = x[perm[p] / K] for p in [0, A).
void gather_tokens(float* xs, const float* x, const int32_t* perm, int64_t A, int64_t K, int64_t C) {
  int64_t grain = C > 0 ? ((int64_t(1) << 14) + C - 1) / C : A;
  rt::parallel_for(A, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      std::memcpy(xs + p * C, x + static_cast<int64_t>(perm[p] / K) * C, static_cast<size_t>(C) * sizeof(float));
  });
}

void run_tiles(const Tile* tiles, int64_t n, const std::function<void(const Tile&)>& fn) {
  rt::parallel_for(n, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) fn(tiles[i]);
  });
}

}  // namespace

extern "C" {

rt_status rt_moe_route_fwd(float* probs, int32_t* topk_idx, float* topk_w, const float* logits, int64_t T, int64_t E,
                           int64_t K, int renorm) {
  const char* op = "moe_route_fwd";
  rt_status st = check_common(T, E, K, op);
  if (st != RT_OK) return st;
  int64_t grain = (4096 + E - 1) / E;
  rt::parallel_for(T, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* l = logits + t * E;
      float* p = probs + t * E;
      float m = l[0];
      for (int64_t e = 1; e < E; ++e) m = l[e] > m ? l[e] : m;
      float sum = 0.f;
      for (int64_t e = 0; e < E; ++e) sum += (p[e] = std::exp(l[e] - m));
      float inv = 1.f / sum;
      for (int64_t e = 0; e < E; ++e) p[e] *= inv;
      int32_t* idx = topk_idx + t * K;
      float* w = topk_w + t * K;
      float wsum = 0.f;
      for (int64_t j = 0; j < K; ++j) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; ++e) {
          bool taken = false;
          for (int64_t i = 0; i < j; ++i) taken |= idx[i] == e;
          if (taken) continue;
          if (best < 0 || p[e] > p[best]) best = e;  // strict: ties keep the lower id
        }
        idx[j] = static_cast<int32_t>(best);
        w[j] = p[best];
        wsum += p[best];
      }
      if (renorm) {
        float r = 1.f / wsum;
        for (int64_t j = 0; j < K; ++j) w[j] *= r;
      }
    }
  });
  return RT_OK;
}

rt_status rt_moe_route_bwd(float* dlogits, const float* dtopk_w, const float* probs, const int32_t* topk_idx,
                           int64_t T, int64_t E, int64_t K, int renorm) {
  const char* op = "moe_route_bwd";
  rt_status st = check_common(T, E, K, op);
  if (st != RT_OK) return st;
  for (int64_t a = 0; a < T * K; ++a)
    RT_REQUIRE(topk_idx[a] >= 0 && topk_idx[a] < E, RT_ERR_INDEX,
               "%s: topk_idx[%lld] = %d is out of range [0, %lld) (pass the route's indices, before any drop)", op,
               (long long)a, topk_idx[a], (long long)E);
  int64_t grain = (4096 + E - 1) / E;
  rt::parallel_for(T, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* p = probs + t * E;
      const int32_t* idx = topk_idx + t * K;
      const float* dw = dtopk_w + t * K;
      float* dl = dlogits + t * E;
      // dp on the selected experts (through the renormalisation w_j = p_j / s).
      float s = 0.f, g = 0.f;
      if (renorm) {
        for (int64_t j = 0; j < K; ++j) s += p[idx[j]];
        for (int64_t j = 0; j < K; ++j) g += dw[j] * p[idx[j]];
        g /= s;  // Σ_j dw_j w_j
      }
      // softmax: dl_e = p_e (dp_e − Σ_i p_i dp_i)
      float pdp = 0.f;
      for (int64_t j = 0; j < K; ++j) {
        float dp = renorm ? (dw[j] - g) / s : dw[j];
        pdp += p[idx[j]] * dp;
      }
      for (int64_t e = 0; e < E; ++e) dl[e] = -p[e] * pdp;
      for (int64_t j = 0; j < K; ++j) {
        float dp = renorm ? (dw[j] - g) / s : dw[j];
        dl[idx[j]] += p[idx[j]] * dp;
      }
    }
  });
  return RT_OK;
}

rt_status rt_moe_sort(int32_t* perm, int32_t* inv_perm, int32_t* bounds, int64_t* live, const int32_t* topk_idx,
                      int64_t T, int64_t E, int64_t K) {
  const char* op = "moe_sort";
  rt_status st = check_common(T, E, K, op);
  if (st != RT_OK) return st;
  RT_REQUIRE(E <= INT32_MAX, RT_ERR_SHAPE, "%s: expected E <= 2^31 - 1, received %lld", op, (long long)E);
  const int64_t TK = T * K;
  for (int64_t a = 0; a < TK; ++a)
    RT_REQUIRE(topk_idx[a] >= -1 && topk_idx[a] < E, RT_ERR_INDEX,
               "%s: topk_idx[%lld] = %d is out of range [0, %lld) (-1 marks a dropped assignment)", op,
               (long long)a, topk_idx[a], (long long)E);
  // Counting sort, stable: assignments of one expert keep their (token, slot) order.
  for (int64_t e = 0; e <= E; ++e) bounds[e] = 0;
  for (int64_t a = 0; a < TK; ++a)
    if (topk_idx[a] >= 0) ++bounds[topk_idx[a] + 1];
  for (int64_t e = 0; e < E; ++e) bounds[e + 1] += bounds[e];
  Scratch s;
  int32_t* next = s.get<int32_t>(E);
  RT_REQUIRE(next, RT_ERR_NOMEM, "%s: could not allocate %lld counters", op, (long long)E);
  std::memcpy(next, bounds, static_cast<size_t>(E) * sizeof(int32_t));
  for (int64_t a = 0; a < TK; ++a) {
    int32_t e = topk_idx[a];
    if (e < 0) {
      inv_perm[a] = -1;
      continue;
    }
    int32_t p = next[e]++;
    perm[p] = static_cast<int32_t>(a);
    inv_perm[a] = p;
  }
  for (int64_t p = bounds[E]; p < TK; ++p) perm[p] = -1;
  *live = bounds[E];
  return RT_OK;
}

rt_status rt_moe_experts_fwd(float* y, float* act_gate, float* act_up, const float* x, const int32_t* perm,
                             const int32_t* bounds, const void* w_gate, const void* w_up, const void* w_down,
                             rt_dtype w_dtype, int64_t T, int64_t E, int64_t K, int64_t C, int64_t I) {
  const char* op = "moe_experts_fwd";
  rt_status st = check_common(T, E, K, op);
  if (st != RT_OK) return st;
  RT_REQUIRE_NONNEG(C, op, "C");
  RT_REQUIRE_NONNEG(I, op, "I");
  RT_REQUIRE(C <= INT_MAX && I <= INT_MAX, RT_ERR_SHAPE, "%s: expected C, I <= 2^31 - 1 (BLAS ints), received C = %lld, I = %lld",
             op, (long long)C, (long long)I);
  RT_REQUIRE_DTYPE_FLOAT(w_dtype, op, "weights");
  RT_REQUIRE((act_gate == nullptr) == (act_up == nullptr), RT_ERR_ARG,
             "%s: expected act_gate and act_up both given or both NULL, received only %s", op,
             act_gate ? "act_gate" : "act_up");
  int64_t A = 0;
  st = check_sorted(&A, nullptr, perm, bounds, T * K, E, op);
  if (st != RT_OK) return st;
  if (A == 0 || C == 0) return RT_OK;
  if (I == 0) {
    std::memset(y, 0, static_cast<size_t>(A * C) * sizeof(float));
    return RT_OK;
  }

  Scratch s_xs, s_g, s_u, s_h, s_t1, s_t2;
  float* xs = s_xs.get<float>(A * C);  // (A, C) gathered token rows
  float* G = act_gate ? act_gate : s_g.get<float>(A * I);  // (A, I)
  float* U = act_up ? act_up : s_u.get<float>(A * I);      // (A, I)
  float* H = s_h.get<float>(A * I);                        // (A, I) silu(G) ⊙ U
  int64_t n1 = make_tiles(nullptr, bounds, E, I, kRowBlock, 0, 0);
  int64_t n2 = make_tiles(nullptr, bounds, E, C, kRowBlock, 0, 0);
  Tile* t1 = s_t1.get<Tile>(n1);
  Tile* t2 = s_t2.get<Tile>(n2);
  ThreadScratch wide;
  bool ok = xs && G && U && H && t1 && t2 && wide.init(w_dtype, kColBlock * (C > I ? C : I));
  RT_REQUIRE(ok, RT_ERR_NOMEM, "%s: could not allocate scratch for A = %lld rows (C = %lld, I = %lld)", op,
             (long long)A, (long long)C, (long long)I);
  make_tiles(t1, bounds, E, I, kRowBlock, 0, 0);
  make_tiles(t2, bounds, E, C, kRowBlock, 0, 0);
  gather_tokens(xs, x, perm, A, K, C);

  const Weights wg{w_gate, w_dtype}, wu{w_up, w_dtype}, wd{w_down, w_dtype};
  // Phase 1: G, U (row block × I block) and H = silu(G) ⊙ U.
  run_tiles(t1, n1, [&](const Tile& tl) {
    const int64_t n = tl.r1 - tl.r0, bi = tl.c1 - tl.c0;
    float* scratch = wide.mine();
    int64_t ldb;
    const float* b = wg.block((tl.e * I + tl.c0) * C, bi, C, C, scratch, &ldb);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)bi, (int)C, 1.f, xs + tl.r0 * C, (int)C, b,
                (int)ldb, 0.f, G + tl.r0 * I + tl.c0, (int)I);
    b = wu.block((tl.e * I + tl.c0) * C, bi, C, C, scratch, &ldb);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)bi, (int)C, 1.f, xs + tl.r0 * C, (int)C, b,
                (int)ldb, 0.f, U + tl.r0 * I + tl.c0, (int)I);
    for (int64_t r = tl.r0; r < tl.r1; ++r) swiglu_f32(H + r * I + tl.c0, G + r * I + tl.c0, U + r * I + tl.c0, bi);
  });
  // Phase 2: y = H Wd[e]ᵀ (row block × C block).
  run_tiles(t2, n2, [&](const Tile& tl) {
    const int64_t n = tl.r1 - tl.r0, bc = tl.c1 - tl.c0;
    int64_t ldb;
    const float* b = wd.block((tl.e * C + tl.c0) * I, bc, I, I, wide.mine(), &ldb);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)bc, (int)I, 1.f, H + tl.r0 * I, (int)I, b,
                (int)ldb, 0.f, y + tl.r0 * C + tl.c0, (int)C);
  });
  return RT_OK;
}

rt_status rt_moe_experts_bwd(float* dx, float* dw_gate, float* dw_up, float* dw_down, const float* dy,
                             const float* x, const int32_t* perm, const int32_t* bounds, const void* w_gate,
                             const void* w_up, const void* w_down, rt_dtype w_dtype, const float* act_gate,
                             const float* act_up, int64_t T, int64_t E, int64_t K, int64_t C, int64_t I) {
  const char* op = "moe_experts_bwd";
  rt_status st = check_common(T, E, K, op);
  if (st != RT_OK) return st;
  RT_REQUIRE_NONNEG(C, op, "C");
  RT_REQUIRE_NONNEG(I, op, "I");
  RT_REQUIRE(C <= INT_MAX && I <= INT_MAX, RT_ERR_SHAPE, "%s: expected C, I <= 2^31 - 1 (BLAS ints), received C = %lld, I = %lld",
             op, (long long)C, (long long)I);
  RT_REQUIRE_DTYPE_FLOAT(w_dtype, op, "weights");
  RT_REQUIRE_PTR(act_gate, op, "act_gate");
  RT_REQUIRE_PTR(act_up, op, "act_up");
  const int64_t TK = T * K;
  Scratch s_inv;
  int32_t* inv = dx ? s_inv.get<int32_t>(TK) : nullptr;  // (T*K) assignment → sorted row
  RT_REQUIRE(!dx || inv, RT_ERR_NOMEM, "%s: could not allocate %lld indices", op, (long long)TK);
  int64_t A = 0;
  st = check_sorted(&A, inv, perm, bounds, TK, E, op);
  if (st != RT_OK) return st;
  if (A == 0 || C == 0 || I == 0 || (!dx && !dw_gate && !dw_up && !dw_down)) return RT_OK;

  const bool need_dgu = dx || dw_gate || dw_up;  // dG, dU
  const bool need_xs = dw_gate || dw_up;
  Scratch s_xs, s_dg, s_du, s_h, s_dxs, s_ta, s_tb, s_tc;
  float* xs = need_xs ? s_xs.get<float>(A * C) : nullptr;    // (A, C)
  float* dG = need_dgu ? s_dg.get<float>(A * I) : nullptr;   // (A, I) dH, then dG in place
  float* dU = need_dgu ? s_du.get<float>(A * I) : nullptr;   // (A, I)
  float* H = dw_down ? s_h.get<float>(A * I) : nullptr;      // (A, I)
  float* dxs = dx ? s_dxs.get<float>(A * C) : nullptr;       // (A, C)
  const int64_t nA = need_dgu ? make_tiles(nullptr, bounds, E, I, kRowBlock, 0, 0) : 0;
  const int64_t nB = dx ? make_tiles(nullptr, bounds, E, C, kRowBlock, 0, 0) : 0;
  int64_t nC = 0;
  if (dw_gate) nC = make_tiles(nullptr, bounds, E, I, 0, 0, nC);
  if (dw_up) nC = make_tiles(nullptr, bounds, E, I, 0, 1, nC);
  if (dw_down) nC = make_tiles(nullptr, bounds, E, C, 0, 2, nC);
  Tile* ta = s_ta.get<Tile>(nA);
  Tile* tb = s_tb.get<Tile>(nB);
  Tile* tc = s_tc.get<Tile>(nC);
  ThreadScratch wide;
  bool ok = (!need_xs || xs) && (!need_dgu || (dG && dU)) && (!dw_down || H) && (!dx || dxs) && ta && tb && tc &&
            wide.init(w_dtype, kColBlock * (C > I ? C : I));
  RT_REQUIRE(ok, RT_ERR_NOMEM, "%s: could not allocate scratch for A = %lld rows (C = %lld, I = %lld)", op,
             (long long)A, (long long)C, (long long)I);
  if (need_dgu) make_tiles(ta, bounds, E, I, kRowBlock, 0, 0);
  if (dx) make_tiles(tb, bounds, E, C, kRowBlock, 0, 0);
  nC = 0;
  if (dw_gate) nC = make_tiles(tc, bounds, E, I, 0, 0, nC);
  if (dw_up) nC = make_tiles(tc, bounds, E, I, 0, 1, nC);
  if (dw_down) nC = make_tiles(tc, bounds, E, C, 0, 2, nC);
  if (need_xs) gather_tokens(xs, x, perm, A, K, C);
  const Weights wg{w_gate, w_dtype}, wu{w_up, w_dtype}, wd{w_down, w_dtype};

  // H = silu(G) ⊙ U, needed for dWd.
  if (H) {
    int64_t grain = ((int64_t(1) << 14) + I - 1) / I;
    rt::parallel_for(A, grain, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) swiglu_f32(H + p * I, act_gate + p * I, act_up + p * I, I);
    });
  }
  // Phase A: dH = dy Wd[e] (row block × I block; Wd[e] is (C, I)), then dG, dU.
  if (need_dgu)
    run_tiles(ta, nA, [&](const Tile& tl) {
      const int64_t n = tl.r1 - tl.r0, bi = tl.c1 - tl.c0;
      int64_t ldb;
      const float* b = wd.block(tl.e * C * I + tl.c0, C, bi, I, wide.mine(), &ldb);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)bi, (int)C, 1.f, dy + tl.r0 * C, (int)C, b,
                  (int)ldb, 0.f, dG + tl.r0 * I + tl.c0, (int)I);
      for (int64_t r = tl.r0; r < tl.r1; ++r)
        swiglu_bwd_f32(dG + r * I + tl.c0, dU + r * I + tl.c0, act_gate + r * I + tl.c0, act_up + r * I + tl.c0, bi);
    });
  // Phase B: dXs = dG Wg[e] + dU Wu[e] (Wg[e], Wu[e] are (I, C)), then dx[t] += dXs rows in slot order.
  if (dx) {
    run_tiles(tb, nB, [&](const Tile& tl) {
      const int64_t n = tl.r1 - tl.r0, bc = tl.c1 - tl.c0;
      float* scratch = wide.mine();
      int64_t ldb;
      const float* b = wg.block(tl.e * I * C + tl.c0, I, bc, C, scratch, &ldb);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)bc, (int)I, 1.f, dG + tl.r0 * I, (int)I, b,
                  (int)ldb, 0.f, dxs + tl.r0 * C + tl.c0, (int)C);
      b = wu.block(tl.e * I * C + tl.c0, I, bc, C, scratch, &ldb);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)bc, (int)I, 1.f, dU + tl.r0 * I, (int)I, b,
                  (int)ldb, 1.f, dxs + tl.r0 * C + tl.c0, (int)C);
    });
    int64_t grain = ((int64_t(1) << 14) + C * K - 1) / (C * K);
    rt::parallel_for(T, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t j = 0; j < K; ++j) {
          int32_t p = inv[t * K + j];
          if (p >= 0) add_f32(dx + t * C, dxs + static_cast<int64_t>(p) * C, C);
        }
    });
  }
  // Phase C: weight gradients, one tile per (expert, output block) over all the expert's rows.
  run_tiles(tc, nC, [&](const Tile& tl) {
    const int64_t b0 = tl.r0, n = tl.r1 - tl.r0, bw = tl.c1 - tl.c0;
    if (tl.kind == 0 || tl.kind == 1) {  // dW{g,u}[e][i-block, :] += dG{,U}[rows, i-block]ᵀ Xs[rows]
      const float* d = tl.kind == 0 ? dG : dU;
      float* out = (tl.kind == 0 ? dw_gate : dw_up) + (tl.e * I + tl.c0) * C;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)bw, (int)C, (int)n, 1.f, d + b0 * I + tl.c0, (int)I,
                  xs + b0 * C, (int)C, 1.f, out, (int)C);
    } else {  // dWd[e][c-block, :] += dy[rows, c-block]ᵀ H[rows]
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)bw, (int)I, (int)n, 1.f, dy + b0 * C + tl.c0, (int)C,
                  H + b0 * I, (int)I, 1.f, dw_down + (tl.e * C + tl.c0) * I, (int)I);
    }
  });
  return RT_OK;
}

rt_status rt_moe_combine_fwd(float* out, const float* y, const int32_t* inv_perm, const float* topk_w, int64_t T,
                             int64_t K, int64_t C, int64_t A) {
  const char* op = "moe_combine_fwd";
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE(K >= 1, RT_ERR_ARG, "%s: expected K >= 1, received %lld", op, (long long)K);
  RT_REQUIRE_NONNEG(C, op, "C");
  RT_REQUIRE_NONNEG(A, op, "A");
  for (int64_t a = 0; a < T * K; ++a)
    RT_REQUIRE(inv_perm[a] >= -1 && inv_perm[a] < A, RT_ERR_INDEX,
               "%s: inv_perm[%lld] = %d is out of range [0, %lld) (-1 marks a dropped assignment)", op, (long long)a,
               inv_perm[a], (long long)A);
  int64_t grain = C > 0 ? ((int64_t(1) << 14) + C * K - 1) / (C * K) : T;
  rt::parallel_for(T, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* o = out + t * C;
      std::memset(o, 0, static_cast<size_t>(C) * sizeof(float));
      for (int64_t j = 0; j < K; ++j) {
        int32_t p = inv_perm[t * K + j];
        if (p >= 0) axpy_f32(o, y + static_cast<int64_t>(p) * C, topk_w[t * K + j], C);
      }
    }
  });
  return RT_OK;
}

rt_status rt_moe_combine_bwd(float* dy, float* dtopk_w, const float* dout, const float* y, const int32_t* inv_perm,
                             const float* topk_w, int64_t T, int64_t K, int64_t C, int64_t A) {
  const char* op = "moe_combine_bwd";
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE(K >= 1, RT_ERR_ARG, "%s: expected K >= 1, received %lld", op, (long long)K);
  RT_REQUIRE_NONNEG(C, op, "C");
  RT_REQUIRE_NONNEG(A, op, "A");
  for (int64_t a = 0; a < T * K; ++a)
    RT_REQUIRE(inv_perm[a] >= -1 && inv_perm[a] < A, RT_ERR_INDEX,
               "%s: inv_perm[%lld] = %d is out of range [0, %lld) (-1 marks a dropped assignment)", op, (long long)a,
               inv_perm[a], (long long)A);
  if (dy) {
    // Every dy row must come from exactly one assignment; rows no assignment names are zero.
    Scratch s;
    auto* seen = s.get<unsigned char>(A);
    RT_REQUIRE(seen, RT_ERR_NOMEM, "%s: could not allocate %lld bytes", op, (long long)A);
    std::memset(seen, 0, static_cast<size_t>(A > 0 ? A : 1));
    for (int64_t a = 0; a < T * K; ++a) {
      int32_t p = inv_perm[a];
      if (p < 0) continue;
      RT_REQUIRE(!seen[p], RT_ERR_INDEX, "%s: inv_perm[%lld] = %d repeats an earlier assignment's row", op,
                 (long long)a, p);
      seen[p] = 1;
    }
    for (int64_t p = 0; p < A; ++p)
      if (!seen[p]) std::memset(dy + p * C, 0, static_cast<size_t>(C) * sizeof(float));
  }
  int64_t grain = C > 0 ? ((int64_t(1) << 14) + C * K - 1) / (C * K) : T;
  rt::parallel_for(T, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t j = 0; j < K; ++j) {
        const int64_t a = t * K + j;
        const int32_t p = inv_perm[a];
        if (dtopk_w) dtopk_w[a] = p >= 0 ? dot_f32(dout + t * C, y + static_cast<int64_t>(p) * C, C) : 0.f;
        if (dy && p >= 0) scale_f32(dy + static_cast<int64_t>(p) * C, dout + t * C, topk_w[a], C);
      }
  });
  return RT_OK;
}

}  // extern "C"
