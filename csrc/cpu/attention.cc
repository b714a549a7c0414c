// Causal GQA attention, flash-attention style: forward with an online softmax over key
// tiles (running row max m and sum l, the output accumulator rescaled per tile) saving
// the row logsumexp, and the flash-attention-2 backward that recomputes P from lse.
//
// Fuses: S = scale·Q·Kᵀ, the visibility mask (causal by position, padding, sliding
// window), softmax and P·V, without ever materialising the (Tq, Tk) score matrix.
// Layout: q/out (B,Tq,Hq,D), k/v (B,Tk,Hkv,D); a head is a strided matrix (row stride
// Hq·D or Hkv·D), which cblas_sgemm reads through lda/ldb, so nothing is transposed or
// copied. Query head h reads kv head h / G, G = Hq / Hkv.
//
// Napkin math (T = Tq = Tk, causal): forward 4·T²·D/2 FLOPs per head (two GEMMs over
// the visible half), plus T²/2 exps; backward 5 GEMMs over the same half (2.5×).
// Tiles are BQ×BK = 128×128; the forward merges up to 4 consecutive visible key tiles
// into one pair of sgemm calls (128×512×D and 128×D×512), the backward up to 4 query
// blocks per key tile, so OpenBLAS repacks less and dK/dV accumulate over 512 rows. An sgemm of that size runs at ~95% of OpenBLAS's single-core peak from L2, and
// the softmax costs ~1 exp per 2·D GEMM FLOPs. The diagonal tiles compute their masked
// upper half anyway: BQ/T of the causal FLOPs (6% at T = 2048) is waste.
// Tiles a query block cannot see at all (keys after every query, or older than the
// window for every query) are skipped from per-tile min/max positions; tiles it sees
// entirely skip the elementwise mask; the rest are masked elementwise, so arbitrary
// (unsorted, padded, routed-subset) positions stay correct.
//
// Parallelism: forward over (batch, kv head, query block), the kv head's G query heads
// looped inside so a K/V tile is reused from cache by the whole group. Decode (Tq < 4)
// has its own path: tasks over (batch, 128-key split) covering every head, reading K/V
// in memory order, merged per split (see decode_task). Backward over (batch, kv head)
// with dK/dV of a key block and dQ accumulated by the same task (no races, fixed
// summation order: deterministic); when there are fewer (batch, kv head) pairs than
// threads it runs two passes instead: dK/dV over (batch, kv head, key block) and dQ over
// (batch, kv head, query block), recomputing P in each (7 GEMMs instead of 5).
#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "check.h"
#include "parallel.h"
#include "rt/attention.h"
#include "simd.h"

namespace {

constexpr int64_t kBQ = 128;  // queries per block
constexpr int64_t kBK = 128;  // keys per tile: the unit of skip / full / masked classification
constexpr int64_t kRun = 4;   // up to kRun consecutive visible tiles (blocks) form one GEMM
constexpr float kNegInf = -INFINITY;

// ---- vectorised row helpers ---------------------------------------------------------

// exp(x): the shared vectorisable rt::fast_exp (simd.h).
__attribute__((always_inline)) inline float exp_approx(float x) { return rt::fast_exp(x); }

// Reductions keep kLanes independent partial results: GCC does not vectorise a plain
// float sum or max (it would reorder the operations), but it vectorises the lane loop.
constexpr int kLanes = 16;

RT_SIMD_CLONES float row_max(const float* s, int64_t n) {
  float acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = kNegInf;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
#pragma GCC unroll 1
    for (int l = 0; l < kLanes; ++l) acc[l] = s[j + l] > acc[l] ? s[j + l] : acc[l];
  }
  float m = kNegInf;
  for (; j < n; ++j) m = s[j] > m ? s[j] : m;
  for (int l = 0; l < kLanes; ++l) m = acc[l] > m ? acc[l] : m;
  return m;
}

RT_SIMD_CLONES float row_sum(const float* s, int64_t n) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
#pragma GCC unroll 1
    for (int l = 0; l < kLanes; ++l) acc[l] += s[j + l];
  }
  float sum = 0.f;
  for (; j < n; ++j) sum += s[j];
  for (int l = 0; l < kLanes; ++l) sum += acc[l];
  return sum;
}

// p = exp(s - m) in place; returns the sum. Masked entries (-inf) give 0.
RT_SIMD_CLONES float exp_sub_sum(float* s, float m, int64_t n) {
  for (int64_t j = 0; j < n; ++j) s[j] = exp_approx(s[j] - m);
  return row_sum(s, n);
}

// p = exp(s - lse) in place (backward recomputation; lse finite).
RT_SIMD_CLONES void exp_sub(float* s, float lse, int64_t n) {
  for (int64_t j = 0; j < n; ++j) s[j] = exp_approx(s[j] - lse);
}

RT_SIMD_CLONES void scale_row(float* x, float a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] *= a;
}

RT_SIMD_CLONES void scale_copy_row(float* dst, const float* src, float a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = src[j] * a;
}

// dP ← P ⊙ (dP − di)   (dS without the softmax scale, which goes into the GEMM alpha)
RT_SIMD_CLONES void ds_row(float* dp, const float* p, float di, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - di);
}

// Inlined into the clones below (compiled once per ISA with them).
__attribute__((always_inline)) inline float dot_lanes(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
#pragma GCC unroll 1
    for (int l = 0; l < kLanes; ++l) acc[l] += a[j + l] * b[j + l];
  }
  for (int half = kLanes / 2; half >= 1; half /= 2)
    for (int l = 0; l < half; ++l) acc[l] += acc[l + half];
  float sum = acc[0];
  for (; j < n; ++j) sum += a[j] * b[j];
  return sum;
}

RT_SIMD_CLONES float dot_row(const float* a, const float* b, int64_t n) { return dot_lanes(a, b, n); }

RT_SIMD_CLONES void axpy_row(float* y, float a, const float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

// Four dot products against one shared row b, as four independent FMA chains.
__attribute__((always_inline)) inline void dot4_lanes(float* out, const float* a0, const float* a1, const float* a2,
                                                      const float* a3, const float* b, int64_t n) {
  float c0[kLanes] = {}, c1[kLanes] = {}, c2[kLanes] = {}, c3[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
#pragma GCC unroll 1
    for (int l = 0; l < kLanes; ++l) {
      const float x = b[j + l];
      c0[l] += a0[j + l] * x;
      c1[l] += a1[j + l] * x;
      c2[l] += a2[j + l] * x;
      c3[l] += a3[j + l] * x;
    }
  }
  for (int half = kLanes / 2; half >= 1; half /= 2)
    for (int l = 0; l < half; ++l) {
      c0[l] += c0[l + half];
      c1[l] += c1[l + half];
      c2[l] += c2[l + half];
      c3[l] += c3[l + half];
    }
  float s0 = c0[0], s1 = c1[0], s2 = c2[0], s3 = c3[0];
  for (; j < n; ++j) {
    s0 += a0[j] * b[j];
    s1 += a1[j] * b[j];
    s2 += a2[j] * b[j];
    s3 += a3[j] * b[j];
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

// Decode scores for one key tile, every head: S[row·nk + j] = scale·<Qc[row], k(j, hk)>
// for the rows (h, r), h-major, of kv head hk = h / G. Qc (Hq·Tq, D) is the batch's
// queries copied in row order; k (nk, Hkv, D). Keys outermost: K is read in memory
// order; the G·Tq rows of a kv head share each key row, four dot products at a time.
RT_SIMD_CLONES void decode_scores(float* S, const float* Qc, const float* k, int64_t rows_per_kv, int64_t Hkv,
                                  int64_t D, int64_t nk, float scale) {
  for (int64_t j = 0; j < nk; ++j) {
    for (int64_t hk = 0; hk < Hkv; ++hk) {
      const float* krow = k + (j * Hkv + hk) * D;
      const float* qg = Qc + hk * rows_per_kv * D;
      float* s = S + hk * rows_per_kv * nk + j;  // row i of this kv head at s[i·nk]
      int64_t i = 0;
      for (; i + 4 <= rows_per_kv; i += 4) {
        float d4[4];
        dot4_lanes(d4, qg + i * D, qg + (i + 1) * D, qg + (i + 2) * D, qg + (i + 3) * D, krow, D);
        for (int t = 0; t < 4; ++t) s[(i + t) * nk] = scale * d4[t];
      }
      for (; i < rows_per_kv; ++i) s[i * nk] = scale * dot_lanes(qg + i * D, krow, D);
    }
  }
}

// Decode values for one key tile: O[row·stride + :D] += Σ_j P[row·nk + j]·v(j, hk), rows as
// in decode_scores; v (nk, Hkv, D) read in memory order.
RT_SIMD_CLONES void decode_values(float* O, int64_t stride, const float* P, const float* v, int64_t rows_per_kv,
                                  int64_t Hkv, int64_t D, int64_t nk) {
  for (int64_t j = 0; j < nk; ++j)
    for (int64_t hk = 0; hk < Hkv; ++hk) {
      const float* x = v + (j * Hkv + hk) * D;
      for (int64_t i = hk * rows_per_kv; i < (hk + 1) * rows_per_kv; ++i) {
        const float p = P[i * nk + j];
        if (p == 0.f) continue;
        float* o = O + i * stride;
        for (int64_t d = 0; d < D; ++d) o[d] += p * x[d];
      }
    }
}

// Elementwise visibility for one score row: query at position qp, keys at kp[0..n).
// window w == 0 means unlimited (w > 0 fits int32: see window32).
RT_SIMD_CLONES void mask_row(float* s, int32_t qp, const int32_t* kp, int32_t w, int64_t n) {
  if (qp < 0) {
    for (int64_t j = 0; j < n; ++j) s[j] = kNegInf;
    return;
  }
  if (w > 0) {
    for (int64_t j = 0; j < n; ++j) {
      int32_t k = kp[j];
      // in 64 bits: a negative (padding) k would overflow qp - k in int32
      bool vis = (k >= 0) & (k <= qp) & (int64_t{qp} - k < w);
      s[j] = vis ? s[j] : kNegInf;
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      int32_t k = kp[j];
      bool vis = (k >= 0) & (k <= qp);
      s[j] = vis ? s[j] : kNegInf;
    }
  }
}

// ---- positions and tile classification ----------------------------------------------

// Summary of a block of positions: min/max over the valid (>= 0) ones, and whether the
// block holds padding. n_valid == 0 means the block is all padding.
struct Range {
  int32_t lo, hi;
  int32_t n_valid;
  bool padded;
};

enum Tile { kSkip, kFull, kPartial };

// Positions of one side (queries or keys): explicit (B, T) or the default i + offset.
struct Pos {
  const int32_t* explicit_pos;  // (B, T) or null
  int32_t* owned;               // (T) default positions, or null
  int64_t T;
  Range* ranges;                // (B, n_blocks)
  int64_t block, n_blocks;

  const int32_t* row(int64_t b) const { return explicit_pos ? explicit_pos + b * T : owned; }
};

Range summarise(const int32_t* p, int64_t n) {
  Range r{INT32_MAX, INT32_MIN, 0, false};
  for (int64_t i = 0; i < n; ++i) {
    if (p[i] < 0) {
      r.padded = true;
      continue;
    }
    r.lo = std::min(r.lo, p[i]);
    r.hi = std::max(r.hi, p[i]);
    ++r.n_valid;
  }
  return r;
}

// w == 0: no window. Every visible pair has 0 <= q - k <= INT32_MAX - 0.
Tile classify(const Range& q, const Range& k, int32_t w) {
  if (q.n_valid == 0 || k.n_valid == 0) return kSkip;
  if (k.lo > q.hi) return kSkip;                                             // all keys in the future
  if (w > 0 && static_cast<int64_t>(q.lo) - k.hi >= w) return kSkip;        // all keys too old
  bool all_causal = k.hi <= q.lo;
  bool all_in_window = w <= 0 || static_cast<int64_t>(q.hi) - k.lo < w;
  if (!q.padded && !k.padded && all_causal && all_in_window) return kFull;
  return kPartial;
}

// Owns the small tables (positions, ranges) and the per-thread scratch of one call.
class Workspace {
 public:
  ~Workspace() {
    for (int i = 0; i < n_allocs_; ++i) rt_free(allocs_[i].ptr, allocs_[i].bytes);
  }
  template <typename T>
  T* alloc(int64_t count) {
    size_t bytes = static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(T);
    void* p = n_allocs_ < kMaxAllocs ? rt_alloc(bytes) : nullptr;
    if (!p) {
      failed_ = true;
      return nullptr;
    }
    allocs_[n_allocs_++] = {p, bytes};
    return static_cast<T*>(p);
  }
  bool failed() const { return failed_; }

 private:
  struct Alloc {
    void* ptr;
    size_t bytes;
  };
  static constexpr int kMaxAllocs = 8;
  Alloc allocs_[kMaxAllocs] = {};
  int n_allocs_ = 0;
  bool failed_ = false;
};

// Fills a Pos: the default positions when `given` is null, and per-(batch, block) ranges.
bool init_pos(Workspace& ws, Pos& pos, const int32_t* given, int64_t B, int64_t T, int64_t offset, int64_t block) {
  pos.explicit_pos = given;
  pos.owned = nullptr;
  pos.T = T;
  pos.block = block;
  pos.n_blocks = (T + block - 1) / block;
  if (!given) {
    pos.owned = ws.alloc<int32_t>(T);
    if (!pos.owned) return false;
    for (int64_t i = 0; i < T; ++i) {
      int64_t v = i + offset;
      pos.owned[i] = v < 0 ? -1 : static_cast<int32_t>(v);
    }
  }
  pos.ranges = ws.alloc<Range>(B * pos.n_blocks);
  if (!pos.ranges) return false;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* p = pos.row(b);
    for (int64_t blk = 0; blk < pos.n_blocks; ++blk) {
      int64_t i0 = blk * block, n = std::min(block, T - i0);
      pos.ranges[b * pos.n_blocks + blk] = summarise(p + i0, n);
    }
  }
  return true;
}

// Shared argument checks of forward and backward.
rt_status check_sizes(const char* op, int64_t B, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv, int64_t D,
                      float scale, int64_t window, bool default_pos) {
  RT_REQUIRE_NONNEG(B, op, "B");
  RT_REQUIRE_NONNEG(Tq, op, "Tq");
  RT_REQUIRE_NONNEG(Tk, op, "Tk");
  RT_REQUIRE(Hq >= 1, RT_ERR_SHAPE, "%s: expected Hq >= 1, received %lld", op, (long long)Hq);
  RT_REQUIRE(Hkv >= 1, RT_ERR_SHAPE, "%s: expected Hkv >= 1, received %lld", op, (long long)Hkv);
  RT_REQUIRE(Hq % Hkv == 0, RT_ERR_SHAPE, "%s: expected Hq divisible by Hkv, received Hq=%lld, Hkv=%lld", op,
             (long long)Hq, (long long)Hkv);
  RT_REQUIRE(D >= 1, RT_ERR_SHAPE, "%s: expected D >= 1, received %lld", op, (long long)D);
  RT_REQUIRE(std::isfinite(scale), RT_ERR_ARG, "%s: expected a finite scale, received %g", op, (double)scale);
  RT_REQUIRE(window >= 0, RT_ERR_ARG, "%s: expected window >= 0 (0 = unlimited), received %lld", op,
             (long long)window);
  RT_REQUIRE(!default_pos || (Tq <= INT32_MAX && Tk <= INT32_MAX), RT_ERR_SHAPE,
             "%s: default positions need Tq, Tk <= 2^31-1, received Tq=%lld, Tk=%lld", op, (long long)Tq,
             (long long)Tk);
  return RT_OK;
}

// A window wider than any int32 position difference is no window.
int32_t window32(int64_t window) { return window > INT32_MAX ? 0 : static_cast<int32_t>(window); }

// Query blocks of one head in an order where any contiguous pair has equal causal work
// (0, n-1, 1, n-2, …), so parallel_for's contiguous chunks stay balanced.
int64_t zigzag(int64_t x, int64_t n) { return (x & 1) ? n - 1 - (x >> 1) : (x >> 1); }

// ---- decode (a few queries against a long cache) --------------------------------------

constexpr int64_t kDecodeRows = 4;   // Tq below this takes the decode path
// Key tiles (128 keys each) per decode task: as many as keeps at least kDecodeTasks tasks,
// at most 8. A batch of one at a 512-token context gets one tile per task (4-5 tasks:
// both threads stream K/V; 8 tiles per task left one idle); a batch of 4 at 2048 gets 8
// (fewer partials to merge, longer streams: 8 → 1 tile cost that case 60% → 46% of the
// copy rate). Chosen from the shapes alone, so the result does not depend on the thread
// count.
constexpr int64_t kDecodeTasks = 8;
inline int64_t decode_split_tiles(int64_t B, int64_t n_kb) {
  return std::max<int64_t>(1, std::min<int64_t>(8, B * n_kb / kDecodeTasks));
}
#ifndef RT_DECODE_GEMM_ROWS
#define RT_DECODE_GEMM_ROWS 4
#endif
constexpr int64_t kDecodeGemmRows = RT_DECODE_GEMM_ROWS;

// With Tq = 1 a (batch, kv head) task would read K row by row with a stride of Hkv·D
// floats (4 KiB at Hkv·D = 1024: a new page per key, which the prefetchers do not
// follow), and sgemm would pack the tile for a matrix-vector product. Instead a task
// takes one batch and a range of keys for ALL heads, so K and V are streamed in memory
// order, and keeps a partial (m, l, O) per (head, query) that decode_merge combines.
// The split depends on the shapes only, so the result does not depend on the thread count.
struct DecodeArgs {
  float *out, *lse;
  const float *q, *k, *v;
  int64_t Tq, Tk, Hq, Hkv, D, G;
  float scale;
  int32_t w;
  const Pos *qp, *kp;
  int64_t n_split, split_tiles;
  float* partial;  // (B, n_split, Hq·Tq, D + 2): O row, then m, then l
};

// The per-kv-head GEMMs below read a tile with a 4 KiB row stride, which the hardware
// prefetchers do not follow; one sequential sweep first brings the tile into L2.
void prefetch_range(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(p + i, 0, 2);
}

// Keys [split·128·split_tiles, …) of batch b, every head: rows are (h, r), h-major.
void decode_task(const DecodeArgs& a, float* S, float* Qc, int64_t b, int64_t split) {
  const int64_t R = a.Hq * a.Tq, D = a.D, stride = D + 2;
  for (int64_t row = 0; row < R; ++row)  // queries (h, r) h-major, contiguous for sgemm
    std::memcpy(Qc + row * D, a.q + ((b * a.Tq + row % a.Tq) * a.Hq + row / a.Tq) * D, static_cast<size_t>(D) * 4);
  float* part = a.partial + (b * a.n_split + split) * R * stride;
  for (int64_t row = 0; row < R; ++row) {
    std::memset(part + row * stride, 0, static_cast<size_t>(D) * sizeof(float));
    part[row * stride + D] = kNegInf;
    part[row * stride + D + 1] = 0.f;
  }
  const Range& qr = a.qp->ranges[b * a.qp->n_blocks];  // Tq < kBQ: one query block
  const int32_t* qrow = a.qp->row(b);
  const int64_t kb_end = std::min(a.kp->n_blocks, (split + 1) * a.split_tiles);
  for (int64_t kb = split * a.split_tiles; kb < kb_end; ++kb) {
    const Tile tile = classify(qr, a.kp->ranges[b * a.kp->n_blocks + kb], a.w);
    if (tile == kSkip) continue;
    const int64_t j0 = kb * kBK, nk = std::min(kBK, a.Tk - j0);
    const float* kt = a.k + (b * a.Tk + j0) * a.Hkv * D;
    const float* vt = a.v + (b * a.Tk + j0) * a.Hkv * D;
    const int64_t rows = R / a.Hkv;  // query rows per kv head
    if (rows >= kDecodeGemmRows) {
      prefetch_range(kt, nk * a.Hkv * D);
      for (int64_t hk = 0; hk < a.Hkv; ++hk)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nk, (int)D, a.scale, Qc + hk * rows * D,
                    (int)D, kt + hk * D, (int)(a.Hkv * D), 0.f, S + hk * rows * nk, (int)nk);
    } else {
      // S (R, nk) = scale·q·kᵀ, key rows read once in memory order (all kv heads of a key)
      decode_scores(S, Qc, kt, rows, a.Hkv, D, nk, a.scale);
    }
    for (int64_t row = 0; row < R; ++row) {
      float* s = S + row * nk;
      float* o = part + row * stride;
      if (tile == kPartial) mask_row(s, qrow[row % a.Tq], a.kp->row(b) + j0, a.w, nk);
      const float m_old = o[D], m_new = std::max(m_old, row_max(s, nk));
      if (m_new == kNegInf) {
        std::memset(s, 0, static_cast<size_t>(nk) * sizeof(float));
        continue;
      }
      const float alpha = exp_approx(m_old - m_new);
      o[D + 1] = o[D + 1] * alpha + exp_sub_sum(s, m_new, nk);
      if (alpha != 1.f) scale_row(o, alpha, D);
      o[D] = m_new;
    }
    if (rows >= kDecodeGemmRows) {
      prefetch_range(vt, nk * a.Hkv * D);
      for (int64_t hk = 0; hk < a.Hkv; ++hk)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)D, (int)nk, 1.f, S + hk * rows * nk,
                    (int)nk, vt + hk * D, (int)(a.Hkv * D), 1.f, part + hk * rows * stride, (int)stride);
    } else {
      // O += P·V, value rows read once in memory order
      decode_values(part, stride, S, vt, rows, a.Hkv, D, nk);
    }
  }
}

// out and lse of batch b from its n_split partials (fixed order: deterministic).
void decode_merge(const DecodeArgs& a, int64_t b) {
  const int64_t R = a.Hq * a.Tq, D = a.D, stride = D + 2;
  const float* base = a.partial + b * a.n_split * R * stride;
  for (int64_t row = 0; row < R; ++row) {
    const int64_t h = row / a.Tq, r = row % a.Tq;
    float* o = a.out + ((b * a.Tq + r) * a.Hq + h) * D;
    float m = kNegInf;
    for (int64_t sp = 0; sp < a.n_split; ++sp) m = std::max(m, base[(sp * R + row) * stride + D]);
    float l = 0.f;
    std::memset(o, 0, static_cast<size_t>(D) * sizeof(float));
    if (m != kNegInf) {
      for (int64_t sp = 0; sp < a.n_split; ++sp) {
        const float* part = base + (sp * R + row) * stride;
        if (part[D] == kNegInf) continue;
        const float c = std::exp(part[D] - m);
        l += c * part[D + 1];
        axpy_row(o, c, part, D);
      }
      scale_row(o, 1.f / l, D);
    }
    if (a.lse) a.lse[(b * a.Hq + h) * a.Tq + r] = m != kNegInf ? m + std::log(l) : kNegInf;
  }
}

// ---- backward pieces ----------------------------------------------------------------

struct BwdArgs {
  float *dq, *dk, *dv;
  const float *dout, *q, *k, *v, *lse, *di;
  int64_t Tq, Tk, Hq, Hkv, D, G;
  float scale;
  int32_t w;
  const Pos *qp, *kp;
};

// S = scale·Q_blk·K_tileᵀ masked, then P = exp(S − lse) for query rows [i0, i0+nq) of
// head h and keys [j0, j0+nk); tiles[r / BQ] classifies rows r of each query block.
// Rows with lse = -inf (no visible key) get P = 0.
void recompute_p(const BwdArgs& a, float* P, int64_t b, int64_t h, int64_t hk, int64_t i0, int64_t nq, int64_t j0,
                 int64_t nk, const Tile* tiles) {
  const int64_t ldq = a.Hq * a.D, ldk = a.Hkv * a.D;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nk, (int)a.D, a.scale,
              a.q + ((b * a.Tq + i0) * a.Hq + h) * a.D, (int)ldq, a.k + ((b * a.Tk + j0) * a.Hkv + hk) * a.D, (int)ldk,
              0.f, P, (int)nk);
  const int32_t* qpos = a.qp->row(b) + i0;
  const int32_t* kpos = a.kp->row(b) + j0;
  const float* lse = a.lse + (b * a.Hq + h) * a.Tq + i0;
  for (int64_t r = 0; r < nq; ++r) {
    float* s = P + r * nk;
    if (tiles[r / kBQ] == kPartial) mask_row(s, qpos[r], kpos, a.w, nk);
    if (std::isinf(lse[r])) {
      std::memset(s, 0, static_cast<size_t>(nk) * sizeof(float));
      continue;
    }
    exp_sub(s, lse[r], nk);
  }
}

// dS = P ⊙ (dO·Vᵀ − Di) into dP, for the same tile as recompute_p.
void compute_ds(const BwdArgs& a, float* dP, const float* P, int64_t b, int64_t h, int64_t hk, int64_t i0, int64_t nq,
                int64_t j0, int64_t nk) {
  const int64_t ldq = a.Hq * a.D, ldk = a.Hkv * a.D;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nk, (int)a.D, 1.f,
              a.dout + ((b * a.Tq + i0) * a.Hq + h) * a.D, (int)ldq, a.v + ((b * a.Tk + j0) * a.Hkv + hk) * a.D,
              (int)ldk, 0.f, dP, (int)nk);
  const float* di = a.di + (b * a.Hq + h) * a.Tq + i0;
  for (int64_t r = 0; r < nq; ++r) ds_row(dP + r * nk, P + r * nk, di[r], nk);
}

// Key tile [j0, j0+nk) of kv head hk: dK, dV of the tile into dKt, dVt (nk, D)
// (overwritten), and, when dq_direct, dQ accumulated into a.dq (zeroed by the caller).
void bwd_key_tile(const BwdArgs& a, float* P, float* dP, float* dKt, float* dVt, int64_t b, int64_t hk, int64_t kb,
                  bool dq_direct) {
  const int64_t D = a.D, ldq = a.Hq * a.D, ldk = a.Hkv * a.D;
  const int64_t j0 = kb * kBK, nk = std::min(kBK, a.Tk - j0);
  std::memset(dKt, 0, static_cast<size_t>(nk * D) * sizeof(float));
  std::memset(dVt, 0, static_cast<size_t>(nk * D) * sizeof(float));
  const Range& kr = a.kp->ranges[b * a.kp->n_blocks + kb];
  const int64_t n_qb = a.qp->n_blocks;
  for (int64_t qb = 0; qb < n_qb;) {
    // A run of up to kRun consecutive visible query blocks is one set of GEMMs
    // (dK, dV accumulate over up to kRun·BQ rows at once).
    Tile tiles[kRun];
    int64_t n_run = 0;
    for (; qb + n_run < n_qb && n_run < kRun; ++n_run) {
      tiles[n_run] = classify(a.qp->ranges[b * n_qb + qb + n_run], kr, a.w);
      if (tiles[n_run] == kSkip) break;
    }
    if (n_run == 0) {
      ++qb;
      continue;
    }
    const int64_t i0 = qb * kBQ, nq = std::min(n_run * kBQ, a.Tq - i0);
    qb += n_run;
    for (int64_t g = 0; g < a.G; ++g) {
      const int64_t h = hk * a.G + g;
      recompute_p(a, P, b, h, hk, i0, nq, j0, nk, tiles);
      const float* dO = a.dout + ((b * a.Tq + i0) * a.Hq + h) * D;
      const float* Q = a.q + ((b * a.Tq + i0) * a.Hq + h) * D;
      // dV += Pᵀ·dO   (nk, D)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)D, (int)nq, 1.f, P, (int)nk, dO, (int)ldq,
                  1.f, dVt, (int)D);
      compute_ds(a, dP, P, b, h, hk, i0, nq, j0, nk);
      // dK += scale·dSᵀ·Q   (nk, D)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)D, (int)nq, a.scale, dP, (int)nk, Q,
                  (int)ldq, 1.f, dKt, (int)D);
      if (dq_direct) {
        // dQ += scale·dS·K   (nq, D), straight into the strided dq rows of head h
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, (int)D, (int)nk, a.scale, dP, (int)nk,
                    a.k + ((b * a.Tk + j0) * a.Hkv + hk) * D, (int)ldk, 1.f, a.dq + ((b * a.Tq + i0) * a.Hq + h) * D,
                    (int)ldq);
      }
    }
  }
  for (int64_t j = 0; j < nk; ++j) {
    std::memcpy(a.dk + ((b * a.Tk + j0 + j) * a.Hkv + hk) * D, dKt + j * D, static_cast<size_t>(D) * sizeof(float));
    std::memcpy(a.dv + ((b * a.Tk + j0 + j) * a.Hkv + hk) * D, dVt + j * D, static_cast<size_t>(D) * sizeof(float));
  }
}

// Query block qb of the G heads of kv head hk: dQ over every visible key tile.
void bwd_query_block(const BwdArgs& a, float* P, float* dP, float* dQt, int64_t b, int64_t hk, int64_t qb) {
  const int64_t D = a.D, ldk = a.Hkv * a.D;
  const int64_t i0 = qb * kBQ, nq = std::min(kBQ, a.Tq - i0);
  const Range& qr = a.qp->ranges[b * a.qp->n_blocks + qb];
  for (int64_t g = 0; g < a.G; ++g) {
    const int64_t h = hk * a.G + g;
    std::memset(dQt, 0, static_cast<size_t>(nq * D) * sizeof(float));
    for (int64_t kb = 0; kb < a.kp->n_blocks; ++kb) {
      Tile tile = classify(qr, a.kp->ranges[b * a.kp->n_blocks + kb], a.w);
      if (tile == kSkip) continue;
      const int64_t j0 = kb * kBK, nk = std::min(kBK, a.Tk - j0);
      recompute_p(a, P, b, h, hk, i0, nq, j0, nk, &tile);
      compute_ds(a, dP, P, b, h, hk, i0, nq, j0, nk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, (int)D, (int)nk, a.scale, dP, (int)nk,
                  a.k + ((b * a.Tk + j0) * a.Hkv + hk) * D, (int)ldk, 1.f, dQt, (int)D);
    }
    for (int64_t r = 0; r < nq; ++r)
      std::memcpy(a.dq + ((b * a.Tq + i0 + r) * a.Hq + h) * D, dQt + r * D, static_cast<size_t>(D) * sizeof(float));
  }
}

}  // namespace

extern "C" {

rt_status rt_attention_fwd(float* out, float* lse, const float* q, const float* k, const float* v,
                           const int32_t* qpos, const int32_t* kpos, int64_t B, int64_t Tq, int64_t Tk, int64_t Hq,
                           int64_t Hkv, int64_t D, float scale, int64_t window) {
  const char* op = "attention_fwd";
  rt_status st = check_sizes(op, B, Tq, Tk, Hq, Hkv, D, scale, window, !qpos || !kpos);
  if (st != RT_OK) return st;
  if (B == 0 || Tq == 0) return RT_OK;
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(q, op, "q");
  if (Tk > 0) {
    RT_REQUIRE_PTR(k, op, "k");
    RT_REQUIRE_PTR(v, op, "v");
  }
  RT_REQUIRE(D <= INT32_MAX / 4 && Hq * D <= INT32_MAX && Hkv * D <= INT32_MAX, RT_ERR_SHAPE,
             "%s: expected Hq·D below 2^31 (BLAS leading dimension), received Hq=%lld, D=%lld", op, (long long)Hq,
             (long long)D);

  const int64_t G = Hq / Hkv;
  const int32_t w = window32(window);
  Workspace ws;
  Pos qp{}, kp{};
  bool ok = init_pos(ws, qp, qpos, B, Tq, Tk - Tq, kBQ) && init_pos(ws, kp, kpos, B, Tk, 0, kBK);
  RT_REQUIRE(ok, RT_ERR_NOMEM, "%s: could not allocate position tables", op);
  const int threads = rt_num_threads();
  const int64_t n_qb = qp.n_blocks, n_kb = kp.n_blocks;
  if (Tq < kDecodeRows) {
    const int64_t split_tiles = decode_split_tiles(B, n_kb);
    const int64_t n_split = std::max<int64_t>(1, (n_kb + split_tiles - 1) / split_tiles);
    const int64_t rows = Hq * Tq;
    float* S = ws.alloc<float>(rows * (kBK + D) * threads);  // scores and a copy of the queries
    float* partial = ws.alloc<float>(B * n_split * rows * (D + 2));
    RT_REQUIRE(!ws.failed(), RT_ERR_NOMEM, "%s: could not allocate decode scratch (%lld floats)", op,
               (long long)(B * n_split * rows * (D + 2)));
    DecodeArgs da{out, lse, q, k, v, Tq, Tk, Hq, Hkv, D, G, scale, w, &qp, &kp, n_split, split_tiles, partial};
    rt::parallel_for(B * n_split, 1, [&](int64_t t0, int64_t t1) {
            float* St = S + rows * (kBK + D) * rt::thread_index();
      for (int64_t t = t0; t < t1; ++t) decode_task(da, St, St + rows * kBK, t / n_split, t % n_split);
    });
    rt::parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) decode_merge(da, b);
    });
    return RT_OK;
  }
  // Per thread: S (BQ, kRun·BK), O (G·BQ, D), m and l (G·BQ).
  const int64_t per_thread = kBQ * kRun * kBK + G * kBQ * D + 2 * G * kBQ;
  float* scratch = ws.alloc<float>(per_thread * threads);
  RT_REQUIRE(scratch, RT_ERR_NOMEM, "%s: could not allocate %lld floats of scratch", op,
             (long long)(per_thread * threads));
  const int64_t ldq = Hq * D, ldk = Hkv * D;
  rt::parallel_for(B * Hkv * n_qb, 1, [&](int64_t t0, int64_t t1) {
    float* S = scratch + per_thread * rt::thread_index();
    float* O = S + kBQ * kRun * kBK;
    float* M = O + G * kBQ * D;
    float* L = M + G * kBQ;
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t qb = zigzag(task % n_qb, n_qb), bh = task / n_qb, hk = bh % Hkv, b = bh / Hkv;
      const int64_t i0 = qb * kBQ, nq = std::min(kBQ, Tq - i0);
      const Range& qr = qp.ranges[b * n_qb + qb];
      const int32_t* qrow = qp.row(b) + i0;
      const int32_t* krow = kp.row(b);
      std::fill(M, M + G * kBQ, kNegInf);
      std::fill(L, L + G * kBQ, 0.f);
      std::memset(O, 0, static_cast<size_t>(G * kBQ * D) * sizeof(float));
      for (int64_t kb = 0; kb < n_kb;) {
        // A run of up to kRun consecutive visible tiles [kb, kb_end) is one pair of
        // GEMMs (nq × up to kRun·BK): fewer, larger sgemm calls repack Q and P less.
        Tile tiles[kRun];
        int64_t n_run = 0;
        for (; kb + n_run < n_kb && n_run < kRun; ++n_run) {
          tiles[n_run] = classify(qr, kp.ranges[b * n_kb + kb + n_run], w);
          if (tiles[n_run] == kSkip) break;
        }
        if (n_run == 0) {
          ++kb;
          continue;
        }
        const int64_t j0 = kb * kBK, nk = std::min(n_run * kBK, Tk - j0);
        kb += n_run;
        const float* Kt = k + ((b * Tk + j0) * Hkv + hk) * D;
        const float* Vt = v + ((b * Tk + j0) * Hkv + hk) * D;
        for (int64_t g = 0; g < G; ++g) {
          const int64_t h = hk * G + g;
          float* Og = O + g * kBQ * D;
          float* Mg = M + g * kBQ;
          float* Lg = L + g * kBQ;
          // S = scale·Q·Kᵀ   (nq, nk)
          const float* Qg = q + ((b * Tq + i0) * Hq + h) * D;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nk, (int)D, scale, Qg, (int)ldq, Kt,
                      (int)ldk, 0.f, S, (int)nk);
          for (int64_t r = 0; r < nq; ++r) {
            float* s = S + r * nk;
            for (int64_t t = 0; t < n_run; ++t)
              if (tiles[t] == kPartial)
                mask_row(s + t * kBK, qrow[r], krow + j0 + t * kBK, w, std::min(kBK, nk - t * kBK));
            const float m_new = std::max(Mg[r], row_max(s, nk));
            if (m_new == kNegInf) {  // nothing visible yet in this row: P row = 0
              std::memset(s, 0, static_cast<size_t>(nk) * sizeof(float));
              continue;
            }
            const float alpha = exp_approx(Mg[r] - m_new);  // 0 on the first visible tile
            Lg[r] = Lg[r] * alpha + exp_sub_sum(s, m_new, nk);
            if (alpha != 1.f) scale_row(Og + r * D, alpha, D);
            Mg[r] = m_new;
          }
          // O += P·V   (nq, D)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, (int)D, (int)nk, 1.f, S, (int)nk, Vt,
                      (int)ldk, 1.f, Og, (int)D);
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = hk * G + g;
        for (int64_t r = 0; r < nq; ++r) {
          const float l = L[g * kBQ + r];
          float* o = out + ((b * Tq + i0 + r) * Hq + h) * D;
          if (l > 0.f) {
            scale_copy_row(o, O + (g * kBQ + r) * D, 1.f / l, D);
          } else {
            std::memset(o, 0, static_cast<size_t>(D) * sizeof(float));
          }
          if (lse) lse[(b * Hq + h) * Tq + i0 + r] = l > 0.f ? M[g * kBQ + r] + std::log(l) : kNegInf;
        }
      }
    }
  });
  return RT_OK;
}

rt_status rt_attention_bwd(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                           const float* v, const float* out, const float* lse, const int32_t* qpos,
                           const int32_t* kpos, int64_t B, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv, int64_t D,
                           float scale, int64_t window) {
  const char* op = "attention_bwd";
  rt_status st = check_sizes(op, B, Tq, Tk, Hq, Hkv, D, scale, window, !qpos || !kpos);
  if (st != RT_OK) return st;
  RT_REQUIRE((dk == nullptr) == (dv == nullptr), RT_ERR_ARG,
             "%s: expected dk and dv both given or both NULL, received dk=%s, dv=%s", op, dk ? "buffer" : "NULL",
             dv ? "buffer" : "NULL");
  RT_REQUIRE(D <= INT32_MAX / 4 && Hq * D <= INT32_MAX && Hkv * D <= INT32_MAX, RT_ERR_SHAPE,
             "%s: expected Hq·D below 2^31 (BLAS leading dimension), received Hq=%lld, D=%lld", op, (long long)Hq,
             (long long)D);
  if (B == 0 || (!dq && !dk)) return RT_OK;
  if (Tq == 0 || Tk == 0) {  // no queries: dK = dV = 0; no keys: dQ = 0
    if (dk) std::memset(dk, 0, static_cast<size_t>(B * Tk * Hkv * D) * sizeof(float));
    if (dv) std::memset(dv, 0, static_cast<size_t>(B * Tk * Hkv * D) * sizeof(float));
    if (dq) std::memset(dq, 0, static_cast<size_t>(B * Tq * Hq * D) * sizeof(float));
    return RT_OK;
  }
  RT_REQUIRE_PTR(dout, op, "dout");
  RT_REQUIRE_PTR(q, op, "q");
  RT_REQUIRE_PTR(k, op, "k");
  RT_REQUIRE_PTR(v, op, "v");
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(lse, op, "lse");

  const int64_t G = Hq / Hkv;
  Workspace ws;
  Pos qp{}, kp{};
  bool ok = init_pos(ws, qp, qpos, B, Tq, Tk - Tq, kBQ) && init_pos(ws, kp, kpos, B, Tk, 0, kBK);
  float* di = ok ? ws.alloc<float>(B * Hq * Tq) : nullptr;  // Di = rowsum(dO ⊙ O), (B, Hq, Tq) like lse
  const int threads = rt_num_threads();
  // Per thread: P, dP (kRun·BQ, BK), and dK, dV tiles (BK, D) or a dQ block (BQ, D).
  const int64_t pbuf = kRun * kBQ * kBK;
  const int64_t per_thread = 2 * pbuf + 2 * std::max(kBK, kBQ) * D;
  float* scratch = di ? ws.alloc<float>(per_thread * threads) : nullptr;
  RT_REQUIRE(!ws.failed() && scratch, RT_ERR_NOMEM, "%s: could not allocate %lld floats of scratch", op,
             (long long)(per_thread * threads));

  rt::parallel_for(B * Tq, std::max<int64_t>(1, 16384 / (Hq * D)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / Tq, t = r % Tq;
      for (int64_t h = 0; h < Hq; ++h)
        di[(b * Hq + h) * Tq + t] = dot_row(dout + (r * Hq + h) * D, out + (r * Hq + h) * D, D);
    }
  });

  BwdArgs a{dq, dk, dv, dout, q, k, v, lse, di, Tq, Tk, Hq, Hkv, D, G, scale, window32(window), &qp, &kp};
  auto thread_scratch = [&]() { return scratch + per_thread * rt::thread_index(); };
  const int64_t n_qb = qp.n_blocks, n_kb = kp.n_blocks;
  if (dq && dk && B * Hkv >= threads) {
    // One pass: a task owns kv head (b, hk): its dK, dV and its G heads' dQ rows
    // (accumulated in place over the key tiles, so zeroed first).
    std::memset(dq, 0, static_cast<size_t>(B * Tq * Hq * D) * sizeof(float));
    rt::parallel_for(B * Hkv, 1, [&](int64_t t0, int64_t t1) {
      float* P = thread_scratch();
      float *dP = P + pbuf, *dKt = dP + pbuf, *dVt = dKt + kBK * D;
      for (int64_t task = t0; task < t1; ++task)
        for (int64_t kb = 0; kb < n_kb; ++kb) bwd_key_tile(a, P, dP, dKt, dVt, task / Hkv, task % Hkv, kb, true);
    });
    return RT_OK;
  }
  if (dk) {
    rt::parallel_for(B * Hkv * n_kb, 1, [&](int64_t t0, int64_t t1) {
      float* P = thread_scratch();
      float *dP = P + pbuf, *dKt = dP + pbuf, *dVt = dKt + kBK * D;
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t kb = zigzag(task % n_kb, n_kb), bh = task / n_kb;
        bwd_key_tile(a, P, dP, dKt, dVt, bh / Hkv, bh % Hkv, kb, false);
      }
    });
  }
  if (dq) {
    rt::parallel_for(B * Hkv * n_qb, 1, [&](int64_t t0, int64_t t1) {
      float* P = thread_scratch();
      float *dP = P + pbuf, *dQt = dP + pbuf;
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t qb = zigzag(task % n_qb, n_qb), bh = task / n_qb;
        bwd_query_block(a, P, dP, dQt, bh / Hkv, bh % Hkv, qb);
      }
    });
  }
  return RT_OK;
}

}  // extern "C"
