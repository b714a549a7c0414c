// SwiGLU activation of the gated MLP, forward and backward:
//   out = silu(gate) * up,  silu(g) = g * sigmoid(g)
//   dgate = dout * up * s * (1 + g * (1 - s)),  dup = dout * g * s,  s = sigmoid(g)
// Fuses the activation and the gate product (one pass instead of silu + mul).
//
// Napkin math (memory-bound): forward reads gate and up, writes out: 12*n bytes;
// backward reads dout, gate, up and writes dgate, dup: 20*n bytes. The sigmoid uses
// a vectorised exp (~2e-7 relative), a dozen flops per element.
//
// Large |gate| is safe: sigmoid(g) = 1/(1 + exp(-g)) with exp clamped to [0, +inf],
// so sigmoid(1e30) = 1 and sigmoid(-1e30) = 1/inf = 0 exactly, and the products
// g*s, g*s*(1-s) of any finite g are finite (never inf*0): no NaN, no spurious overflow.
#include <cstring>

#include "check.h"
#include "parallel.h"
#include "rt/swiglu.h"
#include "simd.h"


namespace {
constexpr int64_t kGrain = 1 << 15;

// rt::fast_exp does not auto-vectorise under GCC's default -ftrapping-math (std::floor
// and the two clamps stay scalar), so the hot loops here use GCC vector extensions:
// the same Cody-Waite + degree-6 polynomial on 16 lanes, with round-to-nearest done by
// the 1.5*2^23 trick instead of floor. Each target_clones variant lowers the 16-lane
// vectors to its own ISA (one zmm, two ymm or four xmm).
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4), may_alias));
constexpr int kLanes = 16;
#define RT_INLINE inline __attribute__((always_inline))  // so each SIMD clone gets its own copy
// Helpers take and give vectors by reference: passing 64-byte vectors by value to a
// non-inlined function would change with the ISA (GCC warns); by reference it cannot.

RT_INLINE void load16(v16f& v, const float* p, int64_t n = kLanes) {
  if (n == kLanes) {
    v = *reinterpret_cast<const v16f_u*>(p);
  } else {
    v = v16f{};
    std::memcpy(&v, p, static_cast<size_t>(n) * sizeof(float));
  }
}
RT_INLINE void store16(float* p, const v16f& v, int64_t n = kLanes) {
  if (n == kLanes) *reinterpret_cast<v16f_u*>(p) = v;
  else std::memcpy(p, &v, static_cast<size_t>(n) * sizeof(float));
}

// y = exp(x) on 16 lanes, ~2e-7 relative (rt::fast_exp's polynomial): 0 below -87.3
// (incl. -inf); the argument is clamped at 88.7, and from ~88.38 on the result is
// +inf (2^128), the float32 overflow exp(x) reaches at 88.72 anyway.
RT_INLINE void exp16(v16f& y, const v16f& x_in) {
  v16f x = x_in < -87.3f ? v16f{} - 87.3f : x_in;
  x = x > 88.7f ? v16f{} + 88.7f : x;
  const float magic = 12582912.0f;  // 1.5*2^23: adding it rounds to the nearest integer
  v16f n = (x * 1.44269504088896341f + magic) - magic;
  v16f r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v16f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  v16i e = (__builtin_convertvector(n, v16i) + 127) << 23;
  y = p * reinterpret_cast<v16f>(e);
  y = x_in < -87.3f ? v16f{} : y;
}

// out = silu(g) * u for lanes [0, n) of a block.
RT_INLINE void swiglu_block(float* out, const float* gate, const float* up, int64_t n = kLanes) {
  v16f g, u, e;
  load16(g, gate, n);
  load16(u, up, n);
  exp16(e, -g);
  store16(out, g / (1.0f + e) * u, n);
}

RT_SIMD_CLONES void swiglu_range(float* out, const float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) swiglu_block(out + i, gate + i, up + i);
  if (i < n) swiglu_block(out + i, gate + i, up + i, n - i);
}

// dgate = dout*up*(s + g*s*(1-s)), dup = dout*g*s, s = sigmoid(g).
RT_INLINE void swiglu_bwd_block(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                             int64_t n = kLanes) {
  v16f d, g, u, e;
  load16(d, dout, n);
  load16(g, gate, n);
  load16(u, up, n);
  exp16(e, -g);
  v16f s = 1.0f / (1.0f + e);
  v16f gs = g * s;
  store16(dgate, d * u * (s + gs * (1.0f - s)), n);
  store16(dup, d * gs, n);
}

RT_SIMD_CLONES void swiglu_bwd_range(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                                     int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) swiglu_bwd_block(dgate + i, dup + i, dout + i, gate + i, up + i);
  if (i < n) swiglu_bwd_block(dgate + i, dup + i, dout + i, gate + i, up + i, n - i);
}
}  // namespace

extern "C" {

rt_status rt_swiglu_fwd(float* out, const float* gate, const float* up, int64_t n) {
  const char* op = "swiglu_fwd";
  RT_REQUIRE_NONNEG(n, op, "n");
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(gate, op, "gate");
  RT_REQUIRE_PTR(up, op, "up");
  rt::parallel_for(n, kGrain, [&](int64_t b, int64_t e) { swiglu_range(out + b, gate + b, up + b, e - b); });
  return RT_OK;
}

rt_status rt_swiglu_bwd(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n) {
  const char* op = "swiglu_bwd";
  RT_REQUIRE_NONNEG(n, op, "n");
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(dgate, op, "dgate");
  RT_REQUIRE_PTR(dup, op, "dup");
  RT_REQUIRE_PTR(dout, op, "dout");
  RT_REQUIRE_PTR(gate, op, "gate");
  RT_REQUIRE_PTR(up, op, "up");
  rt::parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    swiglu_bwd_range(dgate + b, dup + b, dout + b, gate + b, up + b, e - b);
  });
  return RT_OK;
}

}  // extern "C"
