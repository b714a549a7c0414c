// Causal GQA attention on the GPU, flash-attention-2 style: the forward streams key tiles
// through an online softmax (running row max m and sum l, the output rescaled per tile)
// and saves the row logsumexp; the backward recomputes P = exp(S − lse) per tile.
// Same semantics as csrc/cpu/attention.cc (visibility by positions, padding, window,
// out = 0 and lse = -inf for a query that sees no key).
//
// Fast path (D = 64, 128): bf16 tensor cores (mma.sync m16n8k16, fp32 accumulators).
// fp32 tiles are read from global memory into registers, rounded to bf16 and stored to
// shared memory (rows padded by 8 elements so ldmatrix is conflict-free).
//   Forward: a CTA of 8 warps owns 128 queries of one (batch, head); warp w owns rows
//   16w..16w+15 with Q in registers. Key tiles of 64, double-buffered: the global reads of
//   tile n+1 (K before S = Q·Kᵀ, V before O += P·V) are in flight while tile n computes,
//   one barrier per tile. S stays in registers: the mma accumulator layout of two
//   8-key column tiles is the A-operand layout of P, so P never touches shared memory.
//   Napkin math (T = 4096, D = 128, causal): 4·T²·D/2 FLOPs per head; per key tile a warp
//   runs 128 mma and ~300 other instructions (mask, exp, rescale).
//   Backward: delta = rowsum(dO ⊙ O) first; then a CTA of 8 warps owns 64 keys of one
//   (batch, kv head) with dK, dV in registers (warp = 16 keys × D/2), looping over the
//   G query heads of the group and their visible 64-query tiles: Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ
//   (warp = 16 keys × 32 queries), Pᵀ and dSᵀ through shared memory, then dV += Pᵀ·dO,
//   dK += dSᵀ·Q, and dQ = dS·K (warp = 16 queries × D/2) added to dq with fp32 atomics
//   (dq zeroed first). 5 GEMMs per tile, no recomputation.
// Tiles are classified from per-tile position ranges (min/max of the valid positions, as
// on the CPU): tiles no query of the block can see are skipped, tiles every query sees
// in full skip the elementwise mask, the rest are masked elementwise from the positions,
// so unsorted, padded and routed-subset positions stay correct.
// Other head dims: fp32 fallback kernels, one warp per row (query row for the forward and
// dQ, key row for dK/dV), accumulators over slices of 256 dims.
#include <cuda_bf16.h>

#include <climits>
#include <cmath>

#include "cuda_common.cuh"
#include "rt/attention.h"

namespace {

using bf16 = __nv_bfloat16;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kThreads = 256;  // every fast-path CTA: 8 warps
constexpr int kPad = 8;        // bf16 elements of padding per shared-memory row

// ---- positions, visibility, tile classification ------------------------------------

// Position of row i of a (B, T) position table, or the default i + offset (negative:
// padding, -1) when the table is NULL.
__device__ __forceinline__ int32_t position(const int32_t* pos, int64_t b, int64_t T, int64_t i, int64_t offset) {
  if (pos) return pos[b * T + i];
  const int64_t p = i + offset;
  return p < 0 ? -1 : static_cast<int32_t>(p);
}

// Key at kp is visible to the query at qp. wlim = window, or UINT32_MAX without one;
// qp < 0 fails kp <= qp for every valid key, and qp - kp cannot overflow once kp <= qp.
__device__ __forceinline__ bool visible(int32_t qp, int32_t kp, uint32_t wlim) {
  return kp >= 0 && kp <= qp && static_cast<uint32_t>(qp) - static_cast<uint32_t>(kp) < wlim;
}

enum TileKind { kSkip = 0, kFull = 1, kPartial = 2 };

// Ranges are int4 {lo, hi, n_valid, padded} over the valid (>= 0) positions of a block;
// a block shorter than the tile counts as padded (its missing rows must be masked).
__device__ __forceinline__ int classify(int4 q, int4 k, int32_t w) {
  if (q.z == 0 || k.z == 0) return kSkip;
  if (k.x > q.y) return kSkip;                                            // all keys in the future
  if (w > 0 && static_cast<int64_t>(q.x) - k.y >= w) return kSkip;       // all keys too old
  const bool all_causal = k.y <= q.x;
  const bool all_in_window = w <= 0 || static_cast<int64_t>(q.y) - k.x < w;
  return !q.w && !k.w && all_causal && all_in_window ? kFull : kPartial;
}

// First key tile at or after `from` that the query block can see (n_kt if none).
__device__ __forceinline__ int64_t next_tile(const int4* kranges, int4 qr, int32_t w, int64_t from, int64_t n_kt,
                                             int* kind) {
  for (int64_t kt = from; kt < n_kt; ++kt) {
    const int c = classify(qr, kranges[kt], w);
    if (c != kSkip) {
      *kind = c;
      return kt;
    }
  }
  return n_kt;
}

// ranges[b·n_blocks + blk] for the positions of a (B, T) table; one warp per block.
__global__ void summarise_positions(int4* ranges, const int32_t* pos, int64_t B, int64_t T, int64_t offset,
                                    int block, int64_t n_blocks) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t task = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); task < B * n_blocks;
       task += warps) {
    const int64_t b = task / n_blocks, i0 = (task % n_blocks) * block;
    const int64_t n = T - i0 < block ? T - i0 : block;
    int lo = INT_MAX, hi = INT_MIN, n_valid = 0;
    unsigned padded = n < block;
    for (int64_t i = lane; i < n; i += 32) {
      const int32_t p = position(pos, b, T, i0 + i, offset);
      if (p < 0) {
        padded = 1;
      } else {
        lo = min(lo, p);
        hi = max(hi, p);
        ++n_valid;
      }
    }
    lo = __reduce_min_sync(0xffffffffu, lo);
    hi = __reduce_max_sync(0xffffffffu, hi);
    n_valid = __reduce_add_sync(0xffffffffu, n_valid);
    padded = __reduce_or_sync(0xffffffffu, padded);
    if (lane == 0) ranges[task] = make_int4(lo, hi, n_valid, static_cast<int>(padded));
  }
}

// ---- tensor-core helpers (mma.sync m16n8k16 bf16, ldmatrix) ------------------------
// Fragment layouts (g = lane / 4, t = lane % 4): A 16×16 regs {(g, 2t..), (g+8, 2t..),
// (g, 2t+8..), (g+8, 2t+8..)}; B 16×8 regs {(k 2t.., n g), (k 2t+8.., n g)}; C 16×8
// {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}.

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Addresses each lane passes to ldmatrix for a 16×16 block at (row0, col0) of a
// row-major bf16 matrix with row stride `stride`, by how the block is stored:
// A operand stored [m][k] (non-trans): regs = the A fragment.
__device__ __forceinline__ const bf16* a_rowmajor(const bf16* s, int stride, int m0, int k0, int lane) {
  return s + (m0 + (lane & 15)) * stride + k0 + (lane >> 4) * 8;
}
// A operand stored [k][m] (trans): regs = the A fragment.
__device__ __forceinline__ const bf16* a_colmajor(const bf16* s, int stride, int m0, int k0, int lane) {
  return s + (k0 + (lane & 7) + (lane >> 4) * 8) * stride + m0 + ((lane >> 3) & 1) * 8;
}
// B operand stored [n][k] (non-trans): regs {0,1} = n-tile n0, {2,3} = n-tile n0 + 8.
__device__ __forceinline__ const bf16* b_nmajor(const bf16* s, int stride, int n0, int k0, int lane) {
  return s + (n0 + (lane & 7) + (lane >> 4) * 8) * stride + k0 + ((lane >> 3) & 1) * 8;
}
// B operand stored [k][n] (trans): regs {0,1} = n-tile n0, {2,3} = n-tile n0 + 8.
__device__ __forceinline__ const bf16* b_kmajor(const bf16* s, int stride, int n0, int k0, int lane) {
  return s + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * stride + n0 + (lane >> 4) * 8;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<const uint32_t*>(&v);
}

// 2^x; 2^-inf = 0.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// ROWS rows of a strided fp32 matrix (row r at base + r·stride, D floats; rows >= n read
// as zeros) staged in registers, then stored to shared memory as bf16 rows of D + kPad.
// Load and store are split so the global reads overlap the math on the previous tile.
template <int D, int ROWS>
struct TileStage {
  static constexpr int kVecPerRow = D / 4;
  static constexpr int kRowsPerPass = kThreads / kVecPerRow;
  static constexpr int kPasses = ROWS / kRowsPerPass;
  static_assert(ROWS % kRowsPerPass == 0, "tile rows must be a multiple of the rows per pass");
  float4 reg[kPasses];

  __device__ __forceinline__ void load(const float* base, int64_t stride, int n) {
    const int col = threadIdx.x % kVecPerRow, row0 = threadIdx.x / kVecPerRow;
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int r = p * kRowsPerPass + row0;
      reg[p] = r < n ? __ldg(reinterpret_cast<const float4*>(base + r * stride) + col) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
  __device__ __forceinline__ void store(bf16* dst) const {
    const int col = threadIdx.x % kVecPerRow, row0 = threadIdx.x / kVecPerRow;
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int r = p * kRowsPerPass + row0;
      *reinterpret_cast<uint2*>(dst + r * (D + kPad) + col * 4) =
          make_uint2(pack_bf16(reg[p].x, reg[p].y), pack_bf16(reg[p].z, reg[p].w));
    }
  }
};

// ---- forward ------------------------------------------------------------------------

struct FwdArgs {
  float* out;        // (B, Tq, Hq, D)
  float* lse;        // (B, Hq, Tq) or null
  const float *q, *k, *v;
  const int32_t *qpos, *kpos;
  const int4 *qranges, *kranges;  // (B, n_qt), (B, n_kt): fast path only
  int64_t B, Tq, Tk, Hq, Hkv, G, D;
  int64_t n_qt, n_kt;
  float scale;
  int32_t w;
};

template <int D>
struct FwdTiles {
  static constexpr int kBQ = 128, kBK = 64;  // queries per CTA (16 per warp), keys per tile
  static constexpr int kStride = D + kPad;
  static constexpr int kTile = kBK * kStride;  // bf16 elements of one K or V buffer
  // K[2], V[2] (Q is staged in the two V buffers before the loop), kpos[2]
  static constexpr size_t kSmem = 4 * kTile * sizeof(bf16) + 2 * kBK * sizeof(int32_t);
  static_assert(kBQ * kStride <= 2 * kTile, "Q staging must fit in the V buffers");
};

template <int D>
__global__ void __launch_bounds__(kThreads, D <= 64 ? 2 : 1) attention_fwd_mma(FwdArgs a) {
  using C = FwdTiles<D>;
  constexpr int kBQ = C::kBQ, kBK = C::kBK, kStride = C::kStride, kTile = C::kTile;
  constexpr int kDT = D / 8;   // 8-wide output column tiles per warp
  constexpr int kST = kBK / 8; // 8-wide score column tiles per warp
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* k_s = reinterpret_cast<bf16*>(smem_raw);               // [2][kBK][kStride]
  bf16* v_s = k_s + 2 * kTile;                                 // [2][kBK][kStride]
  int32_t* kpos_s = reinterpret_cast<int32_t*>(v_s + 2 * kTile);  // [2][kBK]
  bf16* q_s = v_s;                                             // [kBQ][kStride] before the loop

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const uint32_t wlim = a.w > 0 ? static_cast<uint32_t>(a.w) : UINT32_MAX;
  const float scale_log2 = a.scale * kLog2e;
  const int64_t ldq = a.Hq * D, ldk = a.Hkv * D;
  const int64_t n_bh = a.B * a.Hq, n_tiles = a.n_qt * n_bh;
  // Query blocks from the last (most keys) to the first, so the long ones start first.
  for (int64_t tile = blockIdx.x; tile < n_tiles; tile += gridDim.x) {
    const int64_t qt = a.n_qt - 1 - tile / n_bh, bh = tile % n_bh;
    const int64_t b = bh / a.Hq, h = bh % a.Hq, hk = h / a.G;
    const int64_t i0 = qt * kBQ;
    const int nq = static_cast<int>(a.Tq - i0 < kBQ ? a.Tq - i0 : kBQ);
    const int4* kranges = a.kranges + b * a.n_kt;
    const int4 qr = a.qranges[b * a.n_qt + qt];

    // Q (bf16) → shared (staged in the V buffers) → registers.
    __syncthreads();  // the previous block's readers of v_s are done
    {
      const float* qbase = a.q + ((b * a.Tq + i0) * a.Hq + h) * D;
      TileStage<D, kBK> stage;
      stage.load(qbase, ldq, nq);
      stage.store(q_s);
      stage.load(qbase + kBK * ldq, ldq, nq - kBK);
      stage.store(q_s + kBK * kStride);
    }
    __syncthreads();
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) ldsm_x4(qf[ks], a_rowmajor(q_s, kStride, warp * 16, ks * 16, lane));
    const int row0 = warp * 16 + g, row1 = row0 + 8;  // this thread's two query rows
    const int32_t qp0 = row0 < nq ? position(a.qpos, b, a.Tq, i0 + row0, a.Tk - a.Tq) : -1;
    const int32_t qp1 = row1 < nq ? position(a.qpos, b, a.Tq, i0 + row1, a.Tk - a.Tq) : -1;

    float o[kDT][4];
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY;  // running max of the scaled (log2) scores
    float l0 = 0.f, l1 = 0.f;              // this thread's part of the running sum

    const float* kbase = a.k + hk * D;  // key j of batch b at kbase + (b·Tk + j)·ldk
    const float* vbase = a.v + hk * D;
    int kind = kSkip;
    int64_t kt = next_tile(kranges, qr, a.w, 0, a.n_kt, &kind);
    __syncthreads();  // Q is in registers: the V buffers are free
    if (kt < a.n_kt) {
      const int64_t j0 = kt * kBK;
      const int nk = static_cast<int>(a.Tk - j0 < kBK ? a.Tk - j0 : kBK);
      TileStage<D, kBK> stage;
      stage.load(kbase + (b * a.Tk + j0) * ldk, ldk, nk);
      stage.store(k_s);
      stage.load(vbase + (b * a.Tk + j0) * ldk, ldk, nk);
      stage.store(v_s);
      if (threadIdx.x < kBK)
        kpos_s[threadIdx.x] = static_cast<int>(threadIdx.x) < nk ? position(a.kpos, b, a.Tk, j0 + threadIdx.x, 0) : -1;
    }
    __syncthreads();
    int buf = 0;
    while (kt < a.n_kt) {
      int next_kind = kSkip;
      const int64_t nt = next_tile(kranges, qr, a.w, kt + 1, a.n_kt, &next_kind);
      const bool has_next = nt < a.n_kt;
      const int64_t nj0 = nt * kBK;
      const int nnk = has_next ? static_cast<int>(a.Tk - nj0 < kBK ? a.Tk - nj0 : kBK) : 0;
      TileStage<D, kBK> stage;
      if (has_next) stage.load(kbase + (b * a.Tk + nj0) * ldk, ldk, nnk);

      // S = Q·Kᵀ (16 × kBK per warp)
      const bf16* kb = k_s + buf * kTile;
      float s[kST][4];
#pragma unroll
      for (int st = 0; st < kST; ++st) s[st][0] = s[st][1] = s[st][2] = s[st][3] = 0.f;
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
        for (int np = 0; np < kBK / 16; ++np) {
          uint32_t kf[4];
          ldsm_x4(kf, b_nmajor(kb, kStride, np * 16, ks * 16, lane));
          mma_bf16(s[2 * np], qf[ks], kf[0], kf[1]);
          mma_bf16(s[2 * np + 1], qf[ks], kf[2], kf[3]);
        }
      }
      if (has_next) {
        stage.store(k_s + (buf ^ 1) * kTile);
        if (threadIdx.x < kBK)
          kpos_s[(buf ^ 1) * kBK + threadIdx.x] =
              static_cast<int>(threadIdx.x) < nnk ? position(a.kpos, b, a.Tk, nj0 + threadIdx.x, 0) : -1;
        stage.load(vbase + (b * a.Tk + nj0) * ldk, ldk, nnk);
      }

      // scale (into the log2 domain) and mask
      const int32_t* kp = kpos_s + buf * kBK;
#pragma unroll
      for (int st = 0; st < kST; ++st) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[st][e] *= scale_log2;
        if (kind == kPartial) {
          const int32_t kpa = kp[st * 8 + 2 * t], kpb = kp[st * 8 + 2 * t + 1];
          if (!visible(qp0, kpa, wlim)) s[st][0] = -INFINITY;
          if (!visible(qp0, kpb, wlim)) s[st][1] = -INFINITY;
          if (!visible(qp1, kpa, wlim)) s[st][2] = -INFINITY;
          if (!visible(qp1, kpb, wlim)) s[st][3] = -INFINITY;
        }
      }

      // online softmax: a row lives in the 4 threads of a quad
      float mx0 = m0, mx1 = m1;
#pragma unroll
      for (int st = 0; st < kST; ++st) {
        mx0 = fmaxf(mx0, fmaxf(s[st][0], s[st][1]));
        mx1 = fmaxf(mx1, fmaxf(s[st][2], s[st][3]));
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      // A row with nothing visible so far keeps max -inf: subtract 0 instead (every
      // p and alpha is then exp2(-inf) = 0, never NaN from -inf - -inf).
      const float base0 = mx0 == -INFINITY ? 0.f : mx0, base1 = mx1 == -INFINITY ? 0.f : mx1;
      const float alpha0 = exp2_approx(m0 - base0), alpha1 = exp2_approx(m1 - base1);
      m0 = mx0;
      m1 = mx1;
      float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
      for (int st = 0; st < kST; ++st) {
        s[st][0] = exp2_approx(s[st][0] - base0);
        s[st][1] = exp2_approx(s[st][1] - base0);
        s[st][2] = exp2_approx(s[st][2] - base1);
        s[st][3] = exp2_approx(s[st][3] - base1);
        sum0 += s[st][0] + s[st][1];
        sum1 += s[st][2] + s[st][3];
      }
      l0 = l0 * alpha0 + sum0;
      l1 = l1 * alpha1 + sum1;
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt) {
        o[dt][0] *= alpha0;
        o[dt][1] *= alpha0;
        o[dt][2] *= alpha1;
        o[dt][3] *= alpha1;
      }

      // O += P·V: the score tiles 2kk, 2kk+1 are the A fragment of keys 16kk..16kk+15
      const bf16* vb = v_s + buf * kTile;
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) {
        const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t vf[4];
          ldsm_x4_trans(vf, b_kmajor(vb, kStride, dp * 16, kk * 16, lane));
          mma_bf16(o[2 * dp], pa, vf[0], vf[1]);
          mma_bf16(o[2 * dp + 1], pa, vf[2], vf[3]);
        }
      }
      if (has_next) stage.store(v_s + (buf ^ 1) * kTile);
      __syncthreads();  // tile kt is consumed; tile nt is in the other buffers
      kt = nt;
      kind = next_kind;
      buf ^= 1;
    }

    // out = O / l (0 without a visible key), lse = ln(2)·m + ln(l) (-inf without one)
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
    if (row0 < nq) {
      float* orow = a.out + ((b * a.Tq + i0 + row0) * a.Hq + h) * D + 2 * t;
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt)
        *reinterpret_cast<float2*>(orow + dt * 8) = make_float2(o[dt][0] * inv0, o[dt][1] * inv0);
      if (a.lse && t == 0) a.lse[bh * a.Tq + i0 + row0] = l0 > 0.f ? m0 * kLn2 + logf(l0) : -INFINITY;
    }
    if (row1 < nq) {
      float* orow = a.out + ((b * a.Tq + i0 + row1) * a.Hq + h) * D + 2 * t;
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt)
        *reinterpret_cast<float2*>(orow + dt * 8) = make_float2(o[dt][2] * inv1, o[dt][3] * inv1);
      if (a.lse && t == 0) a.lse[bh * a.Tq + i0 + row1] = l1 > 0.f ? m1 * kLn2 + logf(l1) : -INFINITY;
    }
  }
}

// ---- fp32 fallback (any D) ---------------------------------------------------------

constexpr int kSliceChunks = 8;              // accumulator floats per lane
constexpr int64_t kSlice = 32 * kSliceChunks;  // dims per pass
constexpr int kRowThreads = 128;             // 4 rows (warps) per block

// Visible key range of a query at qp when the keys have default positions (j = kpos[j]);
// with explicit key positions every key is scanned.
__device__ __forceinline__ void key_range(int64_t* lo, int64_t* hi, int32_t qp, bool default_kpos, int32_t w,
                                          int64_t Tk) {
  *lo = 0;
  *hi = Tk;
  if (!default_kpos) return;
  if (qp < 0) {
    *hi = 0;
    return;
  }
  *hi = min(Tk, static_cast<int64_t>(qp) + 1);
  if (w > 0) *lo = max(static_cast<int64_t>(0), static_cast<int64_t>(qp) - w + 1);
}

// <x, y> over D floats, every lane gets it.
__device__ __forceinline__ float warp_dot(const float* x, const float* y, int64_t D, int lane) {
  float s = 0.f;
  for (int64_t d = lane; d < D; d += 32) s += x[d] * y[d];
  return rt::cuda::warp_sum(s);
}

// One warp per query row (b, i, h): keys streamed one at a time through the online softmax.
__global__ void attention_fwd_rows(FwdArgs a) {
  const int lane = threadIdx.x & 31;
  const uint32_t wlim = a.w > 0 ? static_cast<uint32_t>(a.w) : UINT32_MAX;
  const int64_t D = a.D, n_rows = a.B * a.Tq * a.Hq;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); row < n_rows;
       row += warps) {
    const int64_t h = row % a.Hq, i = (row / a.Hq) % a.Tq, b = row / (a.Hq * a.Tq), hk = h / a.G;
    const int32_t qp = position(a.qpos, b, a.Tq, i, a.Tk - a.Tq);
    int64_t j_lo, j_hi;
    key_range(&j_lo, &j_hi, qp, a.kpos == nullptr, a.w, a.Tk);
    const float* qrow = a.q + row * D;
    float* orow = a.out + row * D;
    float m = -INFINITY, l = 0.f;
    for (int64_t d0 = 0; d0 < D; d0 += kSlice) {  // every pass recomputes the same m, l
      float acc[kSliceChunks] = {};
      m = -INFINITY;
      l = 0.f;
      for (int64_t j = j_lo; j < j_hi; ++j) {
        if (!visible(qp, position(a.kpos, b, a.Tk, j, 0), wlim)) continue;
        const int64_t kv = ((b * a.Tk + j) * a.Hkv + hk) * D;
        const float s = a.scale * warp_dot(qrow, a.k + kv, D, lane);
        const float m_new = fmaxf(m, s);
        const float alpha = expf(m - m_new), p = expf(s - m_new);  // alpha = 0 on the first key
        l = l * alpha + p;
        m = m_new;
#pragma unroll
        for (int c = 0; c < kSliceChunks; ++c) {
          const int64_t d = d0 + lane + 32 * c;
          if (d < D) acc[c] = acc[c] * alpha + p * a.v[kv + d];
        }
      }
      const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
      for (int c = 0; c < kSliceChunks; ++c) {
        const int64_t d = d0 + lane + 32 * c;
        if (d < D) orow[d] = acc[c] * inv;
      }
    }
    if (a.lse && lane == 0) a.lse[(b * a.Hq + h) * a.Tq + i] = l > 0.f ? m + logf(l) : -INFINITY;
  }
}

// ---- backward -----------------------------------------------------------------------

struct BwdArgs {
  float *dq, *dk, *dv;  // dq (B, Tq, Hq, D) zeroed first on the fast path; dk, dv (B, Tk, Hkv, D)
  const float *dout, *q, *k, *v, *lse;
  const float* delta;  // (B, Hq, Tq) rowsum(dO ⊙ O)
  const int32_t *qpos, *kpos;
  const int4 *qranges, *kranges;
  int64_t B, Tq, Tk, Hq, Hkv, G, D;
  int64_t n_qt, n_kt;
  float scale;
  int32_t w;
};

// delta[b, h, i] = <dout, out> of row (b, i, h); one warp per row.
__global__ void attention_delta(float* delta, const float* dout, const float* out, int64_t B, int64_t Tq, int64_t Hq,
                                int64_t D) {
  const int lane = threadIdx.x & 31;
  const int64_t n_rows = B * Tq * Hq, warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); row < n_rows;
       row += warps) {
    const float s = warp_dot(dout + row * D, out + row * D, D, lane);
    const int64_t h = row % Hq, i = (row / Hq) % Tq, b = row / (Hq * Tq);
    if (lane == 0) delta[(b * Hq + h) * Tq + i] = s;
  }
}

template <int D>
struct BwdTiles {
  static constexpr int kBQ = 64, kBK = 64;
  static constexpr int kStride = D + kPad;     // K, V, Q, dO rows
  static constexpr int kPStride = kBQ + kPad;  // Pᵀ, dSᵀ rows
  static constexpr int kTile = kBK * kStride;
  static_assert(kBQ == kBK, "Q/dO and K/V buffers share one size");
  static constexpr int kPTile = kBK * kPStride;
  // K, V, Q, dO; Pᵀ, dSᵀ; lse (log2), delta, qpos; kpos
  static constexpr size_t kSmem = 4 * kTile * sizeof(bf16) + 2 * kPTile * sizeof(bf16) +
                                  3 * kBQ * sizeof(float) + kBK * sizeof(int32_t);
};

template <int D>
__global__ void __launch_bounds__(kThreads) attention_bwd_mma(BwdArgs a) {
  using C = BwdTiles<D>;
  constexpr int kBQ = C::kBQ, kBK = C::kBK, kStride = C::kStride, kPStride = C::kPStride;
  constexpr int kHalf = D / 2;     // dims per warp in dK, dV, dQ
  constexpr int kHT = kHalf / 8;   // 8-wide column tiles in a half
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* k_s = reinterpret_cast<bf16*>(smem_raw);  // [kBK][kStride]
  bf16* v_s = k_s + C::kTile;
  bf16* q_s = v_s + C::kTile;                     // [kBQ][kStride]
  bf16* do_s = q_s + C::kTile;
  bf16* pt_s = do_s + C::kTile;                   // Pᵀ [kBK][kPStride]
  bf16* dst_s = pt_s + C::kPTile;                 // dSᵀ [kBK][kPStride]
  float* lse_s = reinterpret_cast<float*>(dst_s + C::kPTile);  // [kBQ] lse·log2(e), +inf: no visible key
  float* delta_s = lse_s + kBQ;
  int32_t* qpos_s = reinterpret_cast<int32_t*>(delta_s + kBQ);
  int32_t* kpos_s = qpos_s + kBQ;                 // [kBK]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int wr = warp & 3;   // 16-row group: keys (S, dK, dV) or queries (dQ)
  const int wc = warp >> 2;  // half: of the query tile (S, dP) or of D (dK, dV, dQ)
  const uint32_t wlim = a.w > 0 ? static_cast<uint32_t>(a.w) : UINT32_MAX;
  const float scale_log2 = a.scale * kLog2e;
  const int64_t ldq = a.Hq * D, ldk = a.Hkv * D;
  const int64_t n_bk = a.B * a.Hkv, n_tiles = a.n_kt * n_bk;
  for (int64_t tile = blockIdx.x; tile < n_tiles; tile += gridDim.x) {
    // Key tiles from the first (most queries see it) to the last.
    const int64_t kt = tile / n_bk, bk = tile % n_bk;
    const int64_t b = bk / a.Hkv, hk = bk % a.Hkv;
    const int64_t j0 = kt * kBK;
    const int nk = static_cast<int>(a.Tk - j0 < kBK ? a.Tk - j0 : kBK);
    const int4 kr = a.kranges[b * a.n_kt + kt];

    __syncthreads();  // the previous tile's readers of shared memory are done
    {
      TileStage<D, kBK> stage;
      stage.load(a.k + ((b * a.Tk + j0) * a.Hkv + hk) * D, ldk, nk);
      stage.store(k_s);
      stage.load(a.v + ((b * a.Tk + j0) * a.Hkv + hk) * D, ldk, nk);
      stage.store(v_s);
      if (threadIdx.x < kBK)
        kpos_s[threadIdx.x] = static_cast<int>(threadIdx.x) < nk ? position(a.kpos, b, a.Tk, j0 + threadIdx.x, 0) : -1;
    }
    float dk[kHT][4], dv[kHT][4];  // keys wr·16.., dims wc·D/2..
#pragma unroll
    for (int dt = 0; dt < kHT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) dk[dt][e] = dv[dt][e] = 0.f;
    const int key0 = wr * 16 + g, key1 = key0 + 8;

    for (int64_t hg = 0; hg < a.G; ++hg) {
      const int64_t h = hk * a.G + hg;
      for (int64_t qt = 0; qt < a.n_qt; ++qt) {
        const int kind = classify(a.qranges[b * a.n_qt + qt], kr, a.w);
        if (kind == kSkip) continue;
        const int64_t i0 = qt * kBQ;
        const int nq = static_cast<int>(a.Tq - i0 < kBQ ? a.Tq - i0 : kBQ);
        __syncthreads();  // the previous step's readers of Q, dO, Pᵀ, dSᵀ are done
        {
          TileStage<D, kBQ> stage;
          stage.load(a.q + ((b * a.Tq + i0) * a.Hq + h) * D, ldq, nq);
          stage.store(q_s);
          stage.load(a.dout + ((b * a.Tq + i0) * a.Hq + h) * D, ldq, nq);
          stage.store(do_s);
          if (threadIdx.x < kBQ) {
            const int r = threadIdx.x;
            const int64_t row = (b * a.Hq + h) * a.Tq + i0 + r;
            const float l = r < nq ? a.lse[row] : INFINITY;
            lse_s[r] = isinf(l) ? INFINITY : l * kLog2e;  // P = 2^(s − +inf) = 0, as the CPU zeroes the row
            delta_s[r] = r < nq ? a.delta[row] : 0.f;
            qpos_s[r] = r < nq ? position(a.qpos, b, a.Tq, i0 + r, a.Tk - a.Tq) : -1;
          }
        }
        __syncthreads();

        // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: keys wr·16.., queries wc·32..
        float st[4][4], dpt[4][4];
#pragma unroll
        for (int n = 0; n < 4; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks) {
          uint32_t ka[4], va[4];
          ldsm_x4(ka, a_rowmajor(k_s, kStride, wr * 16, ks * 16, lane));
          ldsm_x4(va, a_rowmajor(v_s, kStride, wr * 16, ks * 16, lane));
#pragma unroll
          for (int np = 0; np < 2; ++np) {
            uint32_t qb[4], ob[4];
            ldsm_x4(qb, b_nmajor(q_s, kStride, wc * 32 + np * 16, ks * 16, lane));
            ldsm_x4(ob, b_nmajor(do_s, kStride, wc * 32 + np * 16, ks * 16, lane));
            mma_bf16(st[2 * np], ka, qb[0], qb[1]);
            mma_bf16(st[2 * np + 1], ka, qb[2], qb[3]);
            mma_bf16(dpt[2 * np], va, ob[0], ob[1]);
            mma_bf16(dpt[2 * np + 1], va, ob[2], ob[3]);
          }
        }
        // Pᵀ = 2^(Sᵀ·scale·log2e − lse·log2e) masked, dSᵀ = Pᵀ ⊙ (dPᵀ − delta) (the
        // softmax scale goes into dK and dQ at the end)
        const int32_t kp0 = kpos_s[key0], kp1 = kpos_s[key1];
#pragma unroll
        for (int n = 0; n < 4; ++n) {
          const int qa = wc * 32 + n * 8 + 2 * t, qb = qa + 1;  // this thread's two query columns
          float x[4] = {st[n][0] * scale_log2, st[n][1] * scale_log2, st[n][2] * scale_log2, st[n][3] * scale_log2};
          if (kind == kPartial) {
            const int32_t qpa = qpos_s[qa], qpb = qpos_s[qb];
            if (!visible(qpa, kp0, wlim)) x[0] = -INFINITY;
            if (!visible(qpb, kp0, wlim)) x[1] = -INFINITY;
            if (!visible(qpa, kp1, wlim)) x[2] = -INFINITY;
            if (!visible(qpb, kp1, wlim)) x[3] = -INFINITY;
          }
          const float la = lse_s[qa], lb = lse_s[qb], da = delta_s[qa], db = delta_s[qb];
          const float p0 = exp2_approx(x[0] - la), p1 = exp2_approx(x[1] - lb);
          const float p2 = exp2_approx(x[2] - la), p3 = exp2_approx(x[3] - lb);
          *reinterpret_cast<uint32_t*>(pt_s + key0 * kPStride + qa) = pack_bf16(p0, p1);
          *reinterpret_cast<uint32_t*>(pt_s + key1 * kPStride + qa) = pack_bf16(p2, p3);
          *reinterpret_cast<uint32_t*>(dst_s + key0 * kPStride + qa) =
              pack_bf16(p0 * (dpt[n][0] - da), p1 * (dpt[n][1] - db));
          *reinterpret_cast<uint32_t*>(dst_s + key1 * kPStride + qa) =
              pack_bf16(p2 * (dpt[n][2] - da), p3 * (dpt[n][3] - db));
        }
        __syncthreads();

        if (a.dk) {
          // dV += Pᵀ·dO, dK += dSᵀ·Q: keys wr·16.., dims wc·D/2..
#pragma unroll
          for (int kk = 0; kk < kBQ / 16; ++kk) {
            uint32_t pa[4], sa[4];
            ldsm_x4(pa, a_rowmajor(pt_s, kPStride, wr * 16, kk * 16, lane));
            ldsm_x4(sa, a_rowmajor(dst_s, kPStride, wr * 16, kk * 16, lane));
#pragma unroll
            for (int dp = 0; dp < kHalf / 16; ++dp) {
              uint32_t ob[4], qb[4];
              ldsm_x4_trans(ob, b_kmajor(do_s, kStride, wc * kHalf + dp * 16, kk * 16, lane));
              ldsm_x4_trans(qb, b_kmajor(q_s, kStride, wc * kHalf + dp * 16, kk * 16, lane));
              mma_bf16(dv[2 * dp], pa, ob[0], ob[1]);
              mma_bf16(dv[2 * dp + 1], pa, ob[2], ob[3]);
              mma_bf16(dk[2 * dp], sa, qb[0], qb[1]);
              mma_bf16(dk[2 * dp + 1], sa, qb[2], qb[3]);
            }
          }
        }
        if (a.dq) {
          // dQ += scale·dS·K: queries wr·16.., dims wc·D/2.., added to dq
          float dqa[kHT][4];
#pragma unroll
          for (int dt = 0; dt < kHT; ++dt) dqa[dt][0] = dqa[dt][1] = dqa[dt][2] = dqa[dt][3] = 0.f;
#pragma unroll
          for (int kk = 0; kk < kBK / 16; ++kk) {
            uint32_t sa[4];
            ldsm_x4_trans(sa, a_colmajor(dst_s, kPStride, wr * 16, kk * 16, lane));
#pragma unroll
            for (int dp = 0; dp < kHalf / 16; ++dp) {
              uint32_t kb[4];
              ldsm_x4_trans(kb, b_kmajor(k_s, kStride, wc * kHalf + dp * 16, kk * 16, lane));
              mma_bf16(dqa[2 * dp], sa, kb[0], kb[1]);
              mma_bf16(dqa[2 * dp + 1], sa, kb[2], kb[3]);
            }
          }
          const int r0 = wr * 16 + g, r1 = r0 + 8;
          float* dq0 = a.dq + ((b * a.Tq + i0 + r0) * a.Hq + h) * D + wc * kHalf + 2 * t;
          float* dq1 = a.dq + ((b * a.Tq + i0 + r1) * a.Hq + h) * D + wc * kHalf + 2 * t;
#pragma unroll
          for (int dt = 0; dt < kHT; ++dt) {
            if (r0 < nq) {
              atomicAdd(dq0 + dt * 8, a.scale * dqa[dt][0]);
              atomicAdd(dq0 + dt * 8 + 1, a.scale * dqa[dt][1]);
            }
            if (r1 < nq) {
              atomicAdd(dq1 + dt * 8, a.scale * dqa[dt][2]);
              atomicAdd(dq1 + dt * 8 + 1, a.scale * dqa[dt][3]);
            }
          }
        }
      }
    }

    if (a.dk) {
      const int64_t col = wc * kHalf + 2 * t;
      if (key0 < nk) {
        const int64_t row = ((b * a.Tk + j0 + key0) * a.Hkv + hk) * D + col;
#pragma unroll
        for (int dt = 0; dt < kHT; ++dt) {
          *reinterpret_cast<float2*>(a.dk + row + dt * 8) = make_float2(a.scale * dk[dt][0], a.scale * dk[dt][1]);
          *reinterpret_cast<float2*>(a.dv + row + dt * 8) = make_float2(dv[dt][0], dv[dt][1]);
        }
      }
      if (key1 < nk) {
        const int64_t row = ((b * a.Tk + j0 + key1) * a.Hkv + hk) * D + col;
#pragma unroll
        for (int dt = 0; dt < kHT; ++dt) {
          *reinterpret_cast<float2*>(a.dk + row + dt * 8) = make_float2(a.scale * dk[dt][2], a.scale * dk[dt][3]);
          *reinterpret_cast<float2*>(a.dv + row + dt * 8) = make_float2(dv[dt][2], dv[dt][3]);
        }
      }
    }
  }
}

// fp32 fallback dQ: one warp per query row (b, i, h), over its visible keys.
__global__ void attention_bwd_dq_rows(BwdArgs a) {
  const int lane = threadIdx.x & 31;
  const uint32_t wlim = a.w > 0 ? static_cast<uint32_t>(a.w) : UINT32_MAX;
  const int64_t D = a.D, n_rows = a.B * a.Tq * a.Hq;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); row < n_rows;
       row += warps) {
    const int64_t h = row % a.Hq, i = (row / a.Hq) % a.Tq, b = row / (a.Hq * a.Tq), hk = h / a.G;
    const int32_t qp = position(a.qpos, b, a.Tq, i, a.Tk - a.Tq);
    const float lse = a.lse[(b * a.Hq + h) * a.Tq + i], di = a.delta[(b * a.Hq + h) * a.Tq + i];
    int64_t j_lo, j_hi;
    key_range(&j_lo, &j_hi, qp, a.kpos == nullptr, a.w, a.Tk);
    if (isinf(lse)) j_hi = j_lo;  // no visible key: P = 0, dQ = 0
    const float* qrow = a.q + row * D;
    const float* dorow = a.dout + row * D;
    for (int64_t d0 = 0; d0 < D; d0 += kSlice) {
      float acc[kSliceChunks] = {};
      for (int64_t j = j_lo; j < j_hi; ++j) {
        if (!visible(qp, position(a.kpos, b, a.Tk, j, 0), wlim)) continue;
        const int64_t kv = ((b * a.Tk + j) * a.Hkv + hk) * D;
        const float p = expf(a.scale * warp_dot(qrow, a.k + kv, D, lane) - lse);
        const float ds = p * (warp_dot(dorow, a.v + kv, D, lane) - di);
#pragma unroll
        for (int c = 0; c < kSliceChunks; ++c) {
          const int64_t d = d0 + lane + 32 * c;
          if (d < D) acc[c] += ds * a.k[kv + d];
        }
      }
#pragma unroll
      for (int c = 0; c < kSliceChunks; ++c) {
        const int64_t d = d0 + lane + 32 * c;
        if (d < D) a.dq[row * D + d] = a.scale * acc[c];
      }
    }
  }
}

// fp32 fallback dK, dV: one warp per key row (b, j, hk), over the visible queries of
// the G heads of its group.
__global__ void attention_bwd_dkv_rows(BwdArgs a) {
  const int lane = threadIdx.x & 31;
  const uint32_t wlim = a.w > 0 ? static_cast<uint32_t>(a.w) : UINT32_MAX;
  const int64_t D = a.D, n_rows = a.B * a.Tk * a.Hkv, offset = a.Tk - a.Tq;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); row < n_rows;
       row += warps) {
    const int64_t hk = row % a.Hkv, j = (row / a.Hkv) % a.Tk, b = row / (a.Hkv * a.Tk);
    const int32_t kp = position(a.kpos, b, a.Tk, j, 0);
    // Visible query range when the queries have default positions i + offset.
    int64_t i_lo = 0, i_hi = a.Tq;
    if (kp < 0) {
      i_hi = 0;
    } else if (!a.qpos) {
      i_lo = max(static_cast<int64_t>(0), kp - offset);
      if (a.w > 0) i_hi = min(a.Tq, kp + a.w - offset);
    }
    const float* krow = a.k + row * D;
    const float* vrow = a.v + row * D;
    for (int64_t d0 = 0; d0 < D; d0 += kSlice) {
      float dk_acc[kSliceChunks] = {}, dv_acc[kSliceChunks] = {};
      for (int64_t hg = 0; hg < a.G; ++hg) {
        const int64_t h = hk * a.G + hg;
        for (int64_t i = i_lo; i < i_hi; ++i) {
          if (!visible(position(a.qpos, b, a.Tq, i, offset), kp, wlim)) continue;
          const float lse = a.lse[(b * a.Hq + h) * a.Tq + i];
          if (isinf(lse)) continue;
          const int64_t qrow = ((b * a.Tq + i) * a.Hq + h) * D;
          const float p = expf(a.scale * warp_dot(a.q + qrow, krow, D, lane) - lse);
          const float ds = p * (warp_dot(a.dout + qrow, vrow, D, lane) - a.delta[(b * a.Hq + h) * a.Tq + i]);
#pragma unroll
          for (int c = 0; c < kSliceChunks; ++c) {
            const int64_t d = d0 + lane + 32 * c;
            if (d < D) {
              dv_acc[c] += p * a.dout[qrow + d];
              dk_acc[c] += ds * a.q[qrow + d];
            }
          }
        }
      }
#pragma unroll
      for (int c = 0; c < kSliceChunks; ++c) {
        const int64_t d = d0 + lane + 32 * c;
        if (d < D) {
          a.dk[row * D + d] = a.scale * dk_acc[c];
          a.dv[row * D + d] = dv_acc[c];
        }
      }
    }
  }
}

// ---- host glue ----------------------------------------------------------------------

bool fast_head_dim(int64_t D) { return D == 64 || D == 128; }

// Same checks, codes and messages as csrc/cpu/attention.cc.
rt_status check_sizes(const char* op, int64_t B, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv, int64_t D,
                      float scale, int64_t window, bool default_pos) {
  if (B < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected %s >= 0, received %lld", op, "B", (long long)B);
  if (Tq < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected %s >= 0, received %lld", op, "Tq", (long long)Tq);
  if (Tk < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected %s >= 0, received %lld", op, "Tk", (long long)Tk);
  if (Hq < 1) return rt_fail(RT_ERR_SHAPE, "%s: expected Hq >= 1, received %lld", op, (long long)Hq);
  if (Hkv < 1) return rt_fail(RT_ERR_SHAPE, "%s: expected Hkv >= 1, received %lld", op, (long long)Hkv);
  if (Hq % Hkv != 0)
    return rt_fail(RT_ERR_SHAPE, "%s: expected Hq divisible by Hkv, received Hq=%lld, Hkv=%lld", op, (long long)Hq,
                   (long long)Hkv);
  if (D < 1) return rt_fail(RT_ERR_SHAPE, "%s: expected D >= 1, received %lld", op, (long long)D);
  if (!std::isfinite(scale)) return rt_fail(RT_ERR_ARG, "%s: expected a finite scale, received %g", op, (double)scale);
  if (window < 0)
    return rt_fail(RT_ERR_ARG, "%s: expected window >= 0 (0 = unlimited), received %lld", op, (long long)window);
  if (default_pos && (Tq > INT32_MAX || Tk > INT32_MAX))
    return rt_fail(RT_ERR_SHAPE, "%s: default positions need Tq, Tk <= 2^31-1, received Tq=%lld, Tk=%lld", op,
                   (long long)Tq, (long long)Tk);
  return RT_OK;
}

// The CPU's BLAS leading-dimension limit, kept so both backends accept the same shapes.
rt_status check_head_width(const char* op, int64_t Hq, int64_t Hkv, int64_t D) {
  if (D <= INT32_MAX / 4 && Hq * D <= INT32_MAX && Hkv * D <= INT32_MAX) return RT_OK;
  return rt_fail(RT_ERR_SHAPE, "%s: expected Hq·D below 2^31 (BLAS leading dimension), received Hq=%lld, D=%lld", op,
                 (long long)Hq, (long long)D);
}

rt_status require_ptr(const void* ptr, const char* op, const char* name) {
  return ptr ? RT_OK : rt_fail(RT_ERR_ARG, "%s: expected a buffer for '%s', received NULL", op, name);
}

// A window wider than any int32 position difference is no window.
int32_t window32(int64_t window) { return window > INT32_MAX ? 0 : static_cast<int32_t>(window); }

unsigned grid_cap(int64_t n) { return static_cast<unsigned>(n < INT32_MAX ? n : INT32_MAX); }

// ranges (B, ceil(T / block)) of a (B, T) position table (explicit, or i + offset).
void launch_summarise(int4* ranges, const int32_t* pos, int64_t B, int64_t T, int64_t offset, int block) {
  const int64_t n_blocks = (T + block - 1) / block;
  if (B * n_blocks == 0) return;
  summarise_positions<<<rt::cuda::grid_for(B * n_blocks * 32, 256), 256, 0, rt::cuda::stream()>>>(ranges, pos, B, T,
                                                                                                  offset, block, n_blocks);
}

// Device scratch for the query and key block ranges of the fast path.
struct RangeTables {
  rt::cuda::DeviceScratch buf;
  int4 *q = nullptr, *k = nullptr;
  RangeTables(int64_t B, int64_t n_qt, int64_t n_kt) : buf(sizeof(int4) * static_cast<size_t>(B * (n_qt + n_kt))) {
    q = buf.as<int4>();
    k = q ? q + B * n_qt : nullptr;
  }
};

// Opts a kernel into `bytes` of dynamic shared memory (above the 48 KiB default), once.
template <typename Kernel>
cudaError_t allow_smem(Kernel* kernel, size_t bytes) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

template <int D>
rt_status launch_fwd_mma(const char* op, const FwdArgs& a) {
  using C = FwdTiles<D>;
  static const cudaError_t attr = allow_smem(attention_fwd_mma<D>, C::kSmem);
  if (attr != cudaSuccess) return rt::cuda::fail_cuda(op, attr, "cudaFuncSetAttribute(attention_fwd_mma)");
  attention_fwd_mma<D><<<grid_cap(a.n_qt * a.B * a.Hq), kThreads, C::kSmem, rt::cuda::stream()>>>(a);
  return rt::cuda::check_launch(op);
}

template <int D>
rt_status launch_bwd_mma(const char* op, const BwdArgs& a) {
  using C = BwdTiles<D>;
  static const cudaError_t attr = allow_smem(attention_bwd_mma<D>, C::kSmem);
  if (attr != cudaSuccess) return rt::cuda::fail_cuda(op, attr, "cudaFuncSetAttribute(attention_bwd_mma)");
  attention_bwd_mma<D><<<grid_cap(a.n_kt * a.B * a.Hkv), kThreads, C::kSmem, rt::cuda::stream()>>>(a);
  return rt::cuda::check_launch(op);
}

}  // namespace

extern "C" {

rt_status rt_cuda_attention_fwd(float* out, float* lse, const float* q, const float* k, const float* v,
                                const int32_t* qpos, const int32_t* kpos, int64_t B, int64_t Tq, int64_t Tk,
                                int64_t Hq, int64_t Hkv, int64_t D, float scale, int64_t window) {
  const char* op = "attention_fwd";
  RT_CUDA_OP(op);
  RT_TRY(check_sizes(op, B, Tq, Tk, Hq, Hkv, D, scale, window, !qpos || !kpos));
  if (B == 0 || Tq == 0) return RT_OK;
  RT_TRY(require_ptr(out, op, "out"));
  RT_TRY(require_ptr(q, op, "q"));
  if (Tk > 0) {
    RT_TRY(require_ptr(k, op, "k"));
    RT_TRY(require_ptr(v, op, "v"));
  }
  RT_TRY(check_head_width(op, Hq, Hkv, D));

  FwdArgs a{out, lse, q, k, v, qpos, kpos, nullptr, nullptr, B, Tq, Tk, Hq, Hkv, Hq / Hkv, D, 0, 0, scale,
            window32(window)};
  if (!fast_head_dim(D)) {
    attention_fwd_rows<<<rt::cuda::grid_for(B * Tq * Hq * 32, kRowThreads), kRowThreads, 0, rt::cuda::stream()>>>(a);
    return rt::cuda::check_launch(op);
  }
  constexpr int kBQ = FwdTiles<64>::kBQ, kBK = FwdTiles<64>::kBK;
  a.n_qt = (Tq + kBQ - 1) / kBQ;
  a.n_kt = (Tk + kBK - 1) / kBK;
  RangeTables ranges(B, a.n_qt, a.n_kt);
  if (!ranges.buf.ok()) return rt_fail(RT_ERR_NOMEM, "%s: could not allocate the position range tables", op);
  a.qranges = ranges.q;
  a.kranges = ranges.k;
  launch_summarise(ranges.q, qpos, B, Tq, Tk - Tq, kBQ);
  launch_summarise(ranges.k, kpos, B, Tk, 0, kBK);
  RT_TRY(rt::cuda::check_launch(op));
  return D == 64 ? launch_fwd_mma<64>(op, a) : launch_fwd_mma<128>(op, a);
}

rt_status rt_cuda_attention_bwd(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                                const float* v, const float* out, const float* lse, const int32_t* qpos,
                                const int32_t* kpos, int64_t B, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv,
                                int64_t D, float scale, int64_t window) {
  const char* op = "attention_bwd";
  RT_CUDA_OP(op);
  RT_TRY(check_sizes(op, B, Tq, Tk, Hq, Hkv, D, scale, window, !qpos || !kpos));
  if ((dk == nullptr) != (dv == nullptr))
    return rt_fail(RT_ERR_ARG, "%s: expected dk and dv both given or both NULL, received dk=%s, dv=%s", op,
                   dk ? "buffer" : "NULL", dv ? "buffer" : "NULL");
  RT_TRY(check_head_width(op, Hq, Hkv, D));
  if (B == 0 || (!dq && !dk)) return RT_OK;
  cudaStream_t stream = rt::cuda::stream();
  const size_t q_bytes = static_cast<size_t>(B * Tq * Hq * D) * sizeof(float);
  const size_t kv_bytes = static_cast<size_t>(B * Tk * Hkv * D) * sizeof(float);
  if (Tq == 0 || Tk == 0) {  // no queries: dK = dV = 0; no keys: dQ = 0
    if (dk) RT_CUDA_TRY(op, cudaMemsetAsync(dk, 0, kv_bytes, stream));
    if (dv) RT_CUDA_TRY(op, cudaMemsetAsync(dv, 0, kv_bytes, stream));
    if (dq) RT_CUDA_TRY(op, cudaMemsetAsync(dq, 0, q_bytes, stream));
    return RT_OK;
  }
  RT_TRY(require_ptr(dout, op, "dout"));
  RT_TRY(require_ptr(q, op, "q"));
  RT_TRY(require_ptr(k, op, "k"));
  RT_TRY(require_ptr(v, op, "v"));
  RT_TRY(require_ptr(out, op, "out"));
  RT_TRY(require_ptr(lse, op, "lse"));

  rt::cuda::DeviceScratch delta(sizeof(float) * static_cast<size_t>(B * Hq * Tq));
  if (!delta.ok()) return rt_fail(RT_ERR_NOMEM, "%s: could not allocate delta (%lld floats)", op,
                                  (long long)(B * Hq * Tq));
  attention_delta<<<rt::cuda::grid_for(B * Tq * Hq * 32, 256), 256, 0, stream>>>(delta.as<float>(), dout, out, B, Tq,
                                                                                 Hq, D);
  RT_TRY(rt::cuda::check_launch(op));

  BwdArgs a{dq, dk, dv, dout, q, k, v, lse, delta.as<float>(), qpos, kpos, nullptr, nullptr, B, Tq, Tk, Hq, Hkv,
            Hq / Hkv, D, 0, 0, scale, window32(window)};
  if (!fast_head_dim(D)) {
    if (dq) {
      attention_bwd_dq_rows<<<rt::cuda::grid_for(B * Tq * Hq * 32, kRowThreads), kRowThreads, 0, stream>>>(a);
      RT_TRY(rt::cuda::check_launch(op));
    }
    if (dk) {
      attention_bwd_dkv_rows<<<rt::cuda::grid_for(B * Tk * Hkv * 32, kRowThreads), kRowThreads, 0, stream>>>(a);
      RT_TRY(rt::cuda::check_launch(op));
    }
    return RT_OK;
  }
  if (dq) RT_CUDA_TRY(op, cudaMemsetAsync(dq, 0, q_bytes, stream));  // dQ is accumulated with atomics
  constexpr int kBQ = BwdTiles<64>::kBQ, kBK = BwdTiles<64>::kBK;
  a.n_qt = (Tq + kBQ - 1) / kBQ;
  a.n_kt = (Tk + kBK - 1) / kBK;
  RangeTables ranges(B, a.n_qt, a.n_kt);
  if (!ranges.buf.ok()) return rt_fail(RT_ERR_NOMEM, "%s: could not allocate the position range tables", op);
  a.qranges = ranges.q;
  a.kranges = ranges.k;
  launch_summarise(ranges.q, qpos, B, Tq, Tk - Tq, kBQ);
  launch_summarise(ranges.k, kpos, B, Tk, 0, kBK);
  RT_TRY(rt::cuda::check_launch(op));
  return D == 64 ? launch_bwd_mma<64>(op, a) : launch_bwd_mma<128>(op, a);
}

}  // extern "C"
