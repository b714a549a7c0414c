// Rotary position embedding (Hugging Face "rotate half"), forward and backward.
//   angle[t,i] = pos[t] * inv_freq[i]                     i < D/2
//   y1 = x1*cos - x2*sin ;  y2 = x2*cos + x1*sin           (x1 = x[:D/2], x2 = x[D/2:])
//   cos/sin are multiplied by attn_scale (HF's attention_scaling) before use.
// Backward is the transpose of the rotation: the same kernel with sin negated.
//
// Fuses: the cos/sin table (HF builds a (T, D) cos and sin tensor in memory) into the
// rotation — cos/sin are computed once per token in registers/L1 and shared by the
// token's H heads.
//
// Napkin math (memory-bound): reads x (T*H*D) and pos (T), writes out (T*H*D):
// ~8*T*H*D bytes. The trig costs D/2 vectorised polynomial evaluations per token,
// i.e. 1/(2H) of an element's worth of work per element — negligible for H >= 2.
//
// Precision choice. HF computes freqs = inv_freq * pos in float32 and cos/sin in
// float32; at position p the float32 angle carries an error up to ulp(p*f)/2 (2e-6
// rad below p = 64, 1.2e-4 near p = 2k, 2e-3 near p = 32k), so HF's own cos/sin
// drift from the exact rotation at long context. We compute the angle exactly
// instead: pos (an int32) times inv_freq (a float32) is formed in double, reduced
// modulo pi/2 with a two-part Cody-Waite constant, and sin/cos come from double
// minimax polynomials (fdlibm's kernels, 8 branch-free lanes at a time), rounded to
// float once. cos/sin are then good to ~1 float ulp at any int32 position (angles
// below 2^51), so the output matches a float64 reference to ~2e-7·|x| (the
// rotation's two float products), and agrees with HF within HF's own angle error.
#include <cmath>
#include <cstring>
#include <vector>

#include "check.h"
#include "parallel.h"
#include "rt/rope.h"
#include "simd.h"

namespace {
constexpr int64_t kGrain = 1 << 15;  // elements per parallel chunk

// pi/2 split for Cody-Waite reduction (fdlibm's pio2_1, pio2_1t): k*kPio2Hi is exact
// for |k| < 2^20; beyond that the error stays ~ulp(angle), far below float precision.
constexpr double kInvPio2 = 6.36619772367581382433e-01;
constexpr double kPio2Hi = 1.57079632673412561417e+00;
constexpr double kPio2Lo = 6.07710050650619224932e-11;
// fdlibm __kernel_sin / __kernel_cos coefficients, |r| <= pi/4.
constexpr double S1 = -1.66666666666666324348e-01, S2 = 8.33333333332248946124e-03,
                 S3 = -1.98412698298579493134e-04, S4 = 2.75573137070700676789e-06,
                 S5 = -2.50507602534068634195e-08, S6 = 1.58969099521155010221e-10;
constexpr double C1 = 4.16666666666666019037e-02, C2 = -1.38888888888741095749e-03,
                 C3 = 2.48015872894767294178e-05, C4 = -2.75573143513906633035e-07,
                 C5 = 2.08757232129817482790e-09, C6 = -1.13596475577881948265e-11;

// 8 double lanes through GCC vector extensions (the scalar form does not auto-vectorise:
// floor and the quadrant selects stay scalar under -ftrapping-math). Helpers pass
// vectors by reference (by value, GCC warns the ABI differs per ISA).
typedef double v8d __attribute__((vector_size(64)));
typedef int64_t v8l __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
constexpr int kLanes = 8;

// cos and sin of a (8 lanes), ~1 double ulp for |a| < 2^51·pi/2.
inline __attribute__((always_inline)) void cos_sin8(v8d& cv, v8d& sv, const v8d& a) {
  const double magic = 6755399441055744.0;  // 1.5*2^52: adding it rounds to the nearest integer
  v8d t = a * kInvPio2 + magic;
  v8d k = t - magic;
  v8l q = reinterpret_cast<v8l>(t) & 3;   // k mod 4 sits in the low mantissa bits of t
  v8d r = (a - k * kPio2Hi) - k * kPio2Lo;  // a = k*pi/2 + r, |r| <= pi/4
  v8d z = r * r;
  v8d s = r + r * z * (S1 + z * (S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)))));
  v8d c = 1.0 - 0.5 * z + z * z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
  v8l odd = (q & 1) != 0;           // quadrants 1, 3: sin <-> cos
  v8l neg_s = (q & 2) != 0;         // quadrants 2, 3: sin negated
  v8l neg_c = ((q + 1) & 2) != 0;   // quadrants 1, 2: cos negated
  sv = odd ? c : s;
  cv = odd ? s : c;
  sv = neg_s ? -sv : sv;
  cv = neg_c ? -cv : cv;
}

// cos and sin of p*inv_freq[i] (times cos_scale / sin_scale), for one token. cs and sn
// hold round_up(half, 8) floats; the angle p*inv_freq is exact in double (31 x 24 bits).
RT_SIMD_CLONES void token_cos_sin(float* cs /*(D/2)*/, float* sn /*(D/2)*/, double p, const float* inv_freq /*(D/2)*/,
                                  int64_t half, double cos_scale, double sin_scale) {
  for (int64_t i = 0; i < half; i += kLanes) {
    v8f f = {};
    int64_t n = half - i < kLanes ? half - i : kLanes;
    std::memcpy(&f, inv_freq + i, static_cast<size_t>(n) * sizeof(float));
    v8d a = __builtin_convertvector(f, v8d) * p;
    v8d cv, sv;
    cos_sin8(cv, sv, a);
    v8f c32 = __builtin_convertvector(cv * cos_scale, v8f);
    v8f s32 = __builtin_convertvector(sv * sin_scale, v8f);
    std::memcpy(cs + i, &c32, sizeof(c32));
    std::memcpy(sn + i, &s32, sizeof(s32));
  }
}

// One head: y1 = x1*c - x2*s, y2 = x2*c + x1*s.
RT_SIMD_CLONES void rotate_head(float* __restrict out /*(D)*/, const float* __restrict x /*(D)*/, const float* cs,
                                const float* sn, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    float a = x[i], b = x[i + half];
    out[i] = a * cs[i] - b * sn[i];
    out[i + half] = b * cs[i] + a * sn[i];
  }
}
// In place: one pointer, so the compiler sees the (non-overlapping) halves itself.
RT_SIMD_CLONES void rotate_head_inplace(float* x /*(D)*/, const float* cs, const float* sn, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    float a = x[i], b = x[i + half];
    x[i] = a * cs[i] - b * sn[i];
    x[i + half] = b * cs[i] + a * sn[i];
  }
}

rt_status rope_apply(const char* op, float* out, const float* x, const int32_t* pos, const float* inv_freq,
                     float attn_scale, int64_t T, int64_t H, int64_t D, double sin_sign) {
  RT_REQUIRE_NONNEG(T, op, "T");
  RT_REQUIRE_NONNEG(H, op, "H");
  RT_REQUIRE_NONNEG(D, op, "D");
  RT_REQUIRE(D % 2 == 0, RT_ERR_SHAPE, "%s: expected an even head dim D, received D=%lld", op, (long long)D);
  RT_REQUIRE(std::isfinite(attn_scale), RT_ERR_ARG, "%s: expected a finite attn_scale, received %g", op,
             (double)attn_scale);
  if (T == 0 || H == 0 || D == 0) return RT_OK;
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(x, op, "x");
  RT_REQUIRE_PTR(pos, op, "pos");
  RT_REQUIRE_PTR(inv_freq, op, "inv_freq");
  for (int64_t t = 0; t < T; ++t)
    RT_REQUIRE(pos[t] >= 0, RT_ERR_INDEX, "%s: expected positions >= 0, received pos[%lld] = %d", op, (long long)t,
               pos[t]);
  const int64_t half = D / 2, row = H * D;
  const bool inplace = out == x;
  const double cos_scale = attn_scale, sin_scale = sin_sign * attn_scale;
  rt::parallel_for(T, (kGrain + row - 1) / row, [&](int64_t t0, int64_t t1) {
    const int64_t padded = (half + kLanes - 1) / kLanes * kLanes;  // token_cos_sin writes whole vectors
    std::vector<float> table(static_cast<size_t>(2 * padded));
    float* cs = table.data();
    float* sn = cs + padded;
    for (int64_t t = t0; t < t1; ++t) {
      token_cos_sin(cs, sn, static_cast<double>(pos[t]), inv_freq, half, cos_scale, sin_scale);
      for (int64_t h = 0; h < H; ++h) {
        int64_t off = t * row + h * D;
        if (inplace) rotate_head_inplace(out + off, cs, sn, half);
        else rotate_head(out + off, x + off, cs, sn, half);
      }
    }
  });
  return RT_OK;
}
}  // namespace

extern "C" {

rt_status rt_rope_fwd(float* out, const float* x, const int32_t* pos, const float* inv_freq, float attn_scale,
                      int64_t T, int64_t H, int64_t D) {
  return rope_apply("rope_fwd", out, x, pos, inv_freq, attn_scale, T, H, D, 1.0);
}

// R(angle)^T = R(-angle): the forward with sin negated.
rt_status rt_rope_bwd(float* dx, const float* dout, const int32_t* pos, const float* inv_freq, float attn_scale,
                      int64_t T, int64_t H, int64_t D) {
  return rope_apply("rope_bwd", dx, dout, pos, inv_freq, attn_scale, T, H, D, -1.0);
}

}  // extern "C"
