// Fused softmax cross-entropy over the vocabulary, forward and backward.
//   lse[t]      = log Σ_v exp(logits[t,v])                 (max-subtracted, stable)
//   row_loss[t] = lse[t] - logits[t, target[t]]            (0 on ignored rows)
//   loss        = Σ row_loss / counted                     (0 when every row is ignored)
//   dlogits     = (softmax(logits) - onehot(target)) * dloss_scale, 0 on ignored rows
// Fuses: log_softmax + gather + mean (forward), softmax + one-hot subtract + scale
// (backward); the (T, V) probabilities are never stored.
//
// Napkin math (memory-bound for large V): forward reads logits once (4*T*V bytes) —
// the row is walked in L1-sized blocks with an online logsumexp (block max, then one
// exp per element, the running sum rescaled once per block), so DRAM sees each logit
// once. Backward reads logits and writes dlogits (8*T*V bytes), one exp per element;
// dlogits may alias logits (in place).
//
// Determinism: the mean sums per-row losses in double, in row order, after the
// parallel part, so the result does not depend on the thread count.
#include <cmath>
#include <cstring>
#include <limits>

#include "check.h"
#include "parallel.h"
#include "rt/cross_entropy.h"
#include "simd.h"

namespace {
constexpr int64_t kGrain = 1 << 15;  // elements per parallel chunk
constexpr int64_t kBlock = 512;      // logits per online-logsumexp block (2 KB: stays in L1)
constexpr int kLanes = 16;

// The exp, through GCC vector extensions on 16 lanes (the scalar rt::fast_exp does not
// auto-vectorise under GCC's default -ftrapping-math: std::floor and its clamps stay
// scalar). Each target_clones variant lowers the 16 lanes to its ISA (zmm, 2 ymm or
// 4 xmm). Helpers pass vectors by reference (by value, GCC warns the ABI differs per ISA).
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4), may_alias));
#define RT_INLINE inline __attribute__((always_inline))  // so each SIMD clone gets its own copy

RT_INLINE void load16(v16f& v, const float* p, int64_t n = kLanes, float pad = 0.f) {
  if (n == kLanes) {
    v = *reinterpret_cast<const v16f_u*>(p);
  } else {
    v = v16f{} + pad;
    std::memcpy(&v, p, static_cast<size_t>(n) * sizeof(float));
  }
}
RT_INLINE void store16(float* p, const v16f& v, int64_t n = kLanes) {
  if (n == kLanes) *reinterpret_cast<v16f_u*>(p) = v;
  else std::memcpy(p, &v, static_cast<size_t>(n) * sizeof(float));
}

// exp(x - shift) = 2^t, t = (x - shift)·log2(e), split as t = n + f with |f| <= 1/2
// (round-to-nearest by the 1.5·2^23 trick) and 2^f from Cephes' exp2f polynomial
// (1.7e-7 relative) — cheaper than a Cody-Waite exp, which matters because the
// forward is one exp per logit. Rounding t costs 0.7·|t|·6e-8 relative, i.e. only on
// terms already e^|x-shift| below the largest one, so the row sum (>= 1) keeps ~1e-7.
// t is floored at -126 (2^-126 = 1.2e-38: harmless in the forward's sum, which is
// >= 1, e.g. for a -inf logit). The strict form (backward, padded tails) returns
// exactly 0 there (a -inf logit gets a 0 gradient) and caps t at 127, so a bad
// caller-given shift (lse) gives a huge finite value, not garbage exponent bits; the
// forward's t = (x - max)·log2(e) is <= 0 anyway.
template <bool kStrict>
RT_INLINE void exp_shifted16(v16f& y, const v16f& x, float shift) {
  v16f t_in = (x - shift) * 1.44269504088896341f;
  v16f t = t_in < -126.0f ? v16f{} - 126.0f : t_in;
  if (kStrict) t = t > 127.0f ? v16f{} + 127.0f : t;
  const float magic = 12582912.0f;  // 1.5*2^23: adding it rounds to the nearest integer
  v16f n = (t + magic) - magic;
  v16f f = t - n;
  v16f p = f * 1.535336188319500e-4f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  v16i e = (__builtin_convertvector(n, v16i) + 127) << 23;
  y = p * reinterpret_cast<v16f>(e);
  if (kStrict) y = t_in < -126.0f ? v16f{} : y;
}

// max over n logits (a block); the tail is padded with -inf.
RT_SIMD_CLONES float block_max(const float* x, int64_t n) {
  const float ninf = -std::numeric_limits<float>::infinity();
  v16f mx = v16f{} + ninf, v;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    load16(v, x + i);
    mx = v > mx ? v : mx;
  }
  if (i < n) {
    load16(v, x + i, n - i, ninf);
    mx = v > mx ? v : mx;
  }
  float m = ninf;
  for (int j = 0; j < kLanes; ++j) m = mx[j] > m ? mx[j] : m;
  return m;
}

// Σ exp(x - shift) over n logits (a block); the tail is padded with -inf, which the
// strict exp turns into exactly 0.
RT_SIMD_CLONES float block_sum_exp(const float* x, int64_t n, float shift) {
  v16f acc = {}, v, e;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    load16(v, x + i);
    exp_shifted16<false>(e, v, shift);
    acc += e;
  }
  if (i < n) {
    load16(v, x + i, n - i, -std::numeric_limits<float>::infinity());
    exp_shifted16<true>(e, v, shift);
    acc += e;
  }
  float s = 0.f;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// log Σ exp(x) over one row, one pass over memory.
double row_logsumexp(const float* x /*(V)*/, int64_t V) {
  double m = -std::numeric_limits<double>::infinity(), s = 0.0;
  for (int64_t b = 0; b < V; b += kBlock) {
    int64_t n = b + kBlock < V ? kBlock : V - b;
    double bm = block_max(x + b, n);
    if (bm > m) {
      s *= std::exp(m - bm);  // exp(-inf) = 0 on the first block
      m = bm;
    }
    s += block_sum_exp(x + b, n, static_cast<float>(m));
  }
  return m + std::log(s);
}

// d = exp(x - lse) * scale: the softmax times the upstream scale. d may equal x.
RT_SIMD_CLONES void softmax_grad_row(float* d /*(V)*/, const float* x /*(V)*/, int64_t V, float lse, float scale) {
  v16f v, e;
  int64_t i = 0;
  for (; i + kLanes <= V; i += kLanes) {
    load16(v, x + i);
    exp_shifted16<true>(e, v, lse);
    store16(d + i, e * scale);
  }
  if (i < V) {
    load16(v, x + i, V - i);
    exp_shifted16<true>(e, v, lse);
    store16(d + i, e * scale, V - i);
  }
}

RT_SIMD_CLONES void zero_row(float* d, int64_t V) {
  for (int64_t i = 0; i < V; ++i) d[i] = 0.f;
}

// Range-checks targets and counts the rows that are not ignored.
rt_status check_targets(const char* op, const int32_t* targets, int64_t T, int64_t V, int32_t ignore_index,
                        int64_t* counted) {
  int64_t c = 0;
  for (int64_t t = 0; t < T; ++t) {
    int32_t y = targets[t];
    if (y == ignore_index) continue;
    RT_REQUIRE(y >= 0 && y < V, RT_ERR_INDEX,
               "%s: expected targets in [0, %lld) or ignore_index %d, received targets[%lld] = %d", op,
               (long long)V, ignore_index, (long long)t, y);
    ++c;
  }
  *counted = c;
  return RT_OK;
}

rt_status check_sizes(const char* op, int64_t T, int64_t V) {
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE_NONNEG(V, op, "V");
  RT_REQUIRE(T == 0 || V >= 1, RT_ERR_SHAPE, "%s: expected V >= 1 when T > 0, received T=%lld V=%lld", op,
             (long long)T, (long long)V);
  return RT_OK;
}
}  // namespace

extern "C" {

rt_status rt_cross_entropy_fwd(double* mean_loss, int64_t* counted, float* row_loss, float* lse, const float* logits,
                               const int32_t* targets, int64_t T, int64_t V, int32_t ignore_index) {
  const char* op = "cross_entropy_fwd";
  if (rt_status s = check_sizes(op, T, V)) return s;
  RT_REQUIRE_PTR(mean_loss, op, "mean_loss");
  RT_REQUIRE_PTR(counted, op, "counted");
  *mean_loss = 0.0;
  *counted = 0;
  if (T == 0) return RT_OK;
  RT_REQUIRE_PTR(lse, op, "lse");
  RT_REQUIRE_PTR(logits, op, "logits");
  RT_REQUIRE_PTR(targets, op, "targets");
  int64_t n_counted = 0;
  if (rt_status s = check_targets(op, targets, T, V, ignore_index, &n_counted)) return s;

  size_t scratch_bytes = static_cast<size_t>(T) * sizeof(double);
  double* losses = static_cast<double*>(rt_alloc(scratch_bytes));  // (T)
  RT_REQUIRE(losses, RT_ERR_NOMEM, "%s: could not allocate %lld bytes of scratch", op, (long long)scratch_bytes);
  rt::parallel_for(T, (kGrain + V - 1) / V, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* xr = logits + t * V;  // (V)
      double l = row_logsumexp(xr, V);
      lse[t] = static_cast<float>(l);
      int32_t y = targets[t];
      losses[t] = y == ignore_index ? 0.0 : l - static_cast<double>(xr[y]);
      if (row_loss) row_loss[t] = static_cast<float>(losses[t]);
    }
  });
  double total = 0.0;
  for (int64_t t = 0; t < T; ++t) total += losses[t];
  rt_free(losses, scratch_bytes);
  *counted = n_counted;
  *mean_loss = n_counted > 0 ? total / static_cast<double>(n_counted) : 0.0;
  return RT_OK;
}

rt_status rt_cross_entropy_bwd(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                               int64_t T, int64_t V, int32_t ignore_index, float dloss_scale) {
  const char* op = "cross_entropy_bwd";
  if (rt_status s = check_sizes(op, T, V)) return s;
  RT_REQUIRE(std::isfinite(dloss_scale), RT_ERR_ARG, "%s: expected a finite dloss_scale, received %g", op,
             (double)dloss_scale);
  if (T == 0) return RT_OK;
  RT_REQUIRE_PTR(dlogits, op, "dlogits");
  RT_REQUIRE_PTR(logits, op, "logits");
  RT_REQUIRE_PTR(lse, op, "lse");
  RT_REQUIRE_PTR(targets, op, "targets");
  int64_t n_counted = 0;
  if (rt_status s = check_targets(op, targets, T, V, ignore_index, &n_counted)) return s;
  rt::parallel_for(T, (kGrain + V - 1) / V, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* dr = dlogits + t * V;       // (V)
      const float* xr = logits + t * V;  // (V)
      int32_t y = targets[t];
      if (y == ignore_index) {
        zero_row(dr, V);
        continue;
      }
      softmax_grad_row(dr, xr, V, lse[t], dloss_scale);
      dr[y] -= dloss_scale;
    }
  });
  return RT_OK;
}

}  // extern "C"
