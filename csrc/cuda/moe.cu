// Mixture of experts on the device, as explicit index tensors: route (softmax + top-k),
// a stable sort of the live assignments by expert, the grouped expert SwiGLU over the
// sorted rows, and the weighted combine — each with its backward.
//
//   route:    one warp per token: softmax, then K warp-wide arg-max rounds (ties → lower
//             expert id, exactly the CPU's selection), optional renorm.
//   sort:     stable radix sort (CUB) of (expert, assignment) with dropped ones keyed E;
//             bounds from the sorted keys' steps: no atomics, order identical to the CPU.
//   experts:  grouped GEMM, blockIdx.z = expert, blockIdx.y = 64-row tile of that expert's
//             rows (bounds read on the device; tiles past the expert's rows exit), bf16
//             tensor cores (WMMA 16x16x16, fp32 accumulation) on 64x64x32 tiles staged
//             through shared memory (f32 activations and f32/bf16 weights rounded to bf16
//             on the way in, the next k-tile's loads in flight during the MMAs). Epilogues
//             fuse SwiGLU (forward) and its derivative (backward). Weight gradients are
//             the same kernel grouped along the reduction (the expert's rows): one block per
//             output tile, so every result is deterministic.
//   combine:  one row per token, slots summed in order.
//
// Every index tensor is validated on the device before anything is written (IndexFlag or a
// small record the host reads once), with the CPU's error wording.
//
// Napkin math (T = 512, K = 2, E = 8, C = 1024, I = 2816): A = 1024 rows, 17.7 GFLOP of
// expert GEMMs: ~0.1 ms on an H200 at ~200 TFLOP/s of bf16 WMMA.
#include <mma.h>

#include <climits>
#include <cub/device/device_radix_sort.cuh>
#include <type_traits>

#include "cuda_common.cuh"

namespace rt {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;



bool aligned(const void* p, unsigned bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }

rt_status scratch_ok(const DeviceScratch& s, const char* op) {
  return s.ok() ? RT_OK
                : rt_fail(RT_ERR_NOMEM, "%s: could not allocate %lld bytes of device scratch", op, (long long)s.bytes);
}

rt_status wait(const char* op) {
  RT_CUDA_TRY(op, cudaStreamSynchronize(stream()));
  return RT_OK;
}

// Reads one device element back (error messages only; a failed copy reads as 0).
template <typename T>
T read_back(const T* p) {
  T v{};
  if (cudaMemcpyAsync(&v, p, sizeof(T), cudaMemcpyDeviceToHost, stream()) != cudaSuccess ||
      cudaStreamSynchronize(stream()) != cudaSuccess)
    cudaGetLastError();
  return v;
}


rt_status check_common(int64_t T, int64_t E, int64_t K, const char* op) {
  if (T < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected T >= 0, received %lld", op, (long long)T);
  if (E < 1) return rt_fail(RT_ERR_SHAPE, "%s: expected E >= 1, received %lld", op, (long long)E);
  if (K < 1 || K > E)
    return rt_fail(RT_ERR_ARG, "%s: expected 1 <= K <= E = %lld, received K = %lld", op, (long long)E, (long long)K);
  if (T > INT32_MAX / K)
    return rt_fail(RT_ERR_SHAPE, "%s: expected T*K <= 2^31 - 1 (int32 indices), received T = %lld, K = %lld", op,
                   (long long)T, (long long)K);
  return RT_OK;
}

// Reports the first v[i] outside [lo, hi).
__global__ void check_range_kernel(long long* __restrict__ flag, const int32_t* __restrict__ v, int64_t n, int64_t lo,
                                   int64_t hi) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (v[i] < lo || v[i] >= hi) report_bad_index(flag, i, v[i]);
}

// Launches the range check into a reset IndexFlag (the caller checks it after a wait).
rt_status launch_range_check(IndexFlag& flag, const int32_t* v, int64_t n, int64_t lo, int64_t hi, const char* op) {
  RT_TRY(scratch_ok(flag.buf, op));
  RT_TRY(flag.reset(op));
  if (n == 0) return RT_OK;
  check_range_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(flag.ptr(), v, n, lo, hi);
  return check_launch(op);
}

__global__ void fill_i32_kernel(int32_t* __restrict__ out, int32_t value, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = value;
}

// ======================================================================================
// Route

// One warp per token: probs = softmax(logits); K rounds of a warp arg-max over the
// untaken experts. Per round the CPU starts from the lowest untaken expert and replaces
// it only by a strictly larger probability: that is the lowest untaken expert when its
// probability is NaN, else the largest non-NaN probability with the lowest id.
__global__ void route_fwd_kernel(float* __restrict__ probs, int32_t* __restrict__ topk_idx,
                                 float* __restrict__ topk_w, const float* __restrict__ logits, int64_t T, int64_t E,
                                 int64_t K, int renorm) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); t < T; t += warps) {
    const float* l = logits + t * E;
    float* p = probs + t * E;
    int32_t* idx = topk_idx + t * K;
    float* w = topk_w + t * K;
    float m = -INFINITY;
    for (int64_t e = lane; e < E; e += 32) m = fmaxf(m, l[e]);
    m = warp_max(m);
    float sum = 0.f;
    for (int64_t e = lane; e < E; e += 32) sum += (p[e] = expf(l[e] - m));
    const float inv = 1.f / warp_sum(sum);
    for (int64_t e = lane; e < E; e += 32) p[e] *= inv;
    __syncwarp();
    float wsum = 0.f;
    for (int64_t j = 0; j < K; ++j) {
      int64_t first = -1, best = -1;
      float best_p = 0.f;
      for (int64_t e = lane; e < E; e += 32) {
        bool taken = false;
        for (int64_t i = 0; i < j; ++i) taken |= idx[i] == e;
        if (taken) continue;
        if (first < 0) first = e;
        const float pe = p[e];
        if (pe == pe && (best < 0 || pe > best_p)) best = e, best_p = pe;
      }
      for (int o = 16; o > 0; o >>= 1) {
        const int64_t of = __shfl_xor_sync(kFullMask, first, o);
        const int64_t ob = __shfl_xor_sync(kFullMask, best, o);
        const float op = __shfl_xor_sync(kFullMask, best_p, o);
        if (of >= 0 && (first < 0 || of < first)) first = of;
        if (ob >= 0 && (best < 0 || op > best_p || (op == best_p && ob < best))) best = ob, best_p = op;
      }
      const float pf = p[first];
      const int64_t sel = pf != pf ? first : best;
      const float ps = p[sel];
      if (lane == static_cast<int>(j & 31)) {
        idx[j] = static_cast<int32_t>(sel);
        w[j] = ps;
      }
      wsum += ps;
      __syncwarp();
    }
    if (renorm) {
      const float r = 1.f / wsum;
      for (int64_t j = lane; j < K; j += 32) w[j] *= r;  // the lane that wrote w[j]
    }
  }
}

// One warp per token: dlogits through the renormalisation and the softmax.
__global__ void route_bwd_kernel(float* __restrict__ dlogits, const float* __restrict__ dtopk_w,
                                 const float* __restrict__ probs, const int32_t* __restrict__ topk_idx, int64_t T,
                                 int64_t E, int64_t K, int renorm) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); t < T; t += warps) {
    const float* p = probs + t * E;
    const int32_t* idx = topk_idx + t * K;
    const float* dw = dtopk_w + t * K;
    float* dl = dlogits + t * E;
    float s = 0.f, g = 0.f;
    if (renorm) {
      for (int64_t j = 0; j < K; ++j) s += p[idx[j]];
      for (int64_t j = 0; j < K; ++j) g += dw[j] * p[idx[j]];
      g /= s;
    }
    float pdp = 0.f;
    for (int64_t j = 0; j < K; ++j) {
      const float dp = renorm ? (dw[j] - g) / s : dw[j];
      pdp += p[idx[j]] * dp;
    }
    for (int64_t e = lane; e < E; e += 32) dl[e] = -p[e] * pdp;
    __syncwarp();
    if (lane == 0)
      for (int64_t j = 0; j < K; ++j) {
        const float dp = renorm ? (dw[j] - g) / s : dw[j];
        dl[idx[j]] += p[idx[j]] * dp;
      }
    __syncwarp();
  }
}

// ======================================================================================
// Sort

__global__ void sort_keys_kernel(uint32_t* __restrict__ keys, int32_t* __restrict__ vals,
                                 const int32_t* __restrict__ topk_idx, int64_t TK, int64_t E) {
  for (int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; a < TK;
       a += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t e = topk_idx[a];
    keys[a] = e < 0 ? static_cast<uint32_t>(E) : static_cast<uint32_t>(e);  // dropped sort last
    vals[a] = static_cast<int32_t>(a);
  }
}

// Position p in [0, TK]: bounds[e] = p for the experts e in (key[p-1], key[p]] (key[-1] =
// -1, key[TK] = E), i.e. the first position with key >= e; perm / inv_perm from the pairs.
__global__ void sort_finish_kernel(int32_t* __restrict__ perm, int32_t* __restrict__ inv_perm,
                                   int32_t* __restrict__ bounds, const uint32_t* __restrict__ keys,
                                   const int32_t* __restrict__ vals, int64_t TK, int64_t E) {
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p <= TK;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t prev = p == 0 ? -1 : static_cast<int64_t>(keys[p - 1]);
    const int64_t cur = p == TK ? E : static_cast<int64_t>(keys[p]);
    for (int64_t e = prev + 1; e <= cur; ++e) bounds[e] = static_cast<int32_t>(p);
    if (p < TK) {
      const int32_t a = vals[p];
      const bool live = cur < E;
      perm[p] = live ? a : -1;
      inv_perm[a] = live ? static_cast<int32_t>(p) : -1;
    }
  }
}

// ======================================================================================
// Validation of (perm, bounds) for the expert GEMMs, in the CPU's order of checks.

// rec: [0] first e with bounds[e+1] < bounds[e], [1] first p < A with perm[p] outside
// [0, TK), [2] first p repeating an earlier perm value, [3] ~(most rows of one expert)
// — all min-reduced from all-ones; [4] bounds[0], [5] bounds[E].
constexpr int kRecWords = 6;

__device__ __forceinline__ int64_t live_rows(const int32_t* bounds, int64_t E, int64_t TK) {
  const int64_t A = bounds[E];
  return A < 0 ? 0 : (A > TK ? TK : A);
}

__global__ void check_sorted_kernel(unsigned long long* __restrict__ rec, const int32_t* __restrict__ perm,
                                    const int32_t* __restrict__ bounds, int64_t TK, int64_t E) {
  const int64_t A = live_rows(bounds, E, TK);
  const int64_t n = A > E ? A : E;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i0 == 0) {
    rec[4] = static_cast<unsigned long long>(static_cast<int64_t>(bounds[0]));
    rec[5] = static_cast<unsigned long long>(static_cast<int64_t>(bounds[E]));
  }
  for (int64_t i = i0; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (i < E) {
      const int64_t b0 = bounds[i], b1 = bounds[i + 1];
      if (b1 < b0)
        atomicMin(&rec[0], static_cast<unsigned long long>(i));
      else
        atomicMin(&rec[3], ~static_cast<unsigned long long>(b1 - b0));
    }
    if (i < A && (perm[i] < 0 || perm[i] >= TK)) atomicMin(&rec[1], static_cast<unsigned long long>(i));
  }
}

// inv[perm[p]] = min p (inv pre-filled with INT32_MAX).
__global__ void inverse_min_kernel(int32_t* __restrict__ inv, const int32_t* __restrict__ perm,
                                   const int32_t* __restrict__ bounds, int64_t TK, int64_t E) {
  const int64_t A = live_rows(bounds, E, TK);
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < A;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t v = perm[p];
    if (v >= 0 && v < TK) atomicMin(&inv[v], static_cast<int32_t>(p));
  }
}

// rec[2] = first p whose perm value an earlier p already holds.
__global__ void find_repeat_kernel(unsigned long long* __restrict__ rec, const int32_t* __restrict__ inv,
                                   const int32_t* __restrict__ perm, const int32_t* __restrict__ bounds, int64_t TK,
                                   int64_t E) {
  const int64_t A = live_rows(bounds, E, TK);
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < A;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t v = perm[p];
    if (v >= 0 && v < TK && inv[v] != p) atomicMin(&rec[2], static_cast<unsigned long long>(p));
  }
}

__global__ void unset_to_minus_one_kernel(int32_t* __restrict__ v, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (v[i] == INT32_MAX) v[i] = -1;
}

struct SortedRows {
  int64_t A = 0;         // live rows (bounds[E])
  int64_t max_rows = 0;  // most rows of one expert
};

// The CPU's check_sorted on the device; with inv (TK), also the inverse permutation (-1
// where no row) and the repeat check. One wait for the device.
rt_status check_sorted(SortedRows* out, int32_t* inv, const int32_t* perm, const int32_t* bounds, int64_t TK,
                       int64_t E, const char* op) {
  DeviceScratch rec_s(sizeof(unsigned long long) * kRecWords);
  RT_TRY(scratch_ok(rec_s, op));
  auto* rec = rec_s.as<unsigned long long>();
  RT_CUDA_TRY(op, cudaMemsetAsync(rec, 0xff, rec_s.bytes, stream()));
  const unsigned grid = grid_for(E > TK ? E : TK, kThreads);
  check_sorted_kernel<<<grid, kThreads, 0, stream()>>>(rec, perm, bounds, TK, E);
  RT_TRY(check_launch(op));
  if (inv && TK > 0) {
    fill_i32_kernel<<<grid_for(TK, kThreads), kThreads, 0, stream()>>>(inv, INT32_MAX, TK);
    inverse_min_kernel<<<grid_for(TK, kThreads), kThreads, 0, stream()>>>(inv, perm, bounds, TK, E);
    find_repeat_kernel<<<grid_for(TK, kThreads), kThreads, 0, stream()>>>(rec, inv, perm, bounds, TK, E);
    RT_TRY(check_launch(op));
  }
  unsigned long long r[kRecWords];
  RT_CUDA_TRY(op, cudaMemcpyAsync(r, rec, sizeof r, cudaMemcpyDeviceToHost, stream()));
  RT_TRY(wait(op));
  const unsigned long long none = ~0ull;
  const int32_t b0 = static_cast<int32_t>(static_cast<int64_t>(r[4])), bE = static_cast<int32_t>(static_cast<int64_t>(r[5]));
  if (b0 != 0) return rt_fail(RT_ERR_INDEX, "%s: expected bounds[0] = 0, received %d", op, b0);
  if (r[0] != none) {
    const int64_t e = static_cast<int64_t>(r[0]);
    return rt_fail(RT_ERR_INDEX,
                   "%s: expected non-decreasing bounds, received bounds[%lld] = %d < bounds[%lld] = %d", op,
                   (long long)(e + 1), read_back(bounds + e + 1), (long long)e, read_back(bounds + e));
  }
  if (bE > TK)
    return rt_fail(RT_ERR_INDEX, "%s: expected bounds[E] <= T*K = %lld, received bounds[%lld] = %d", op,
                   (long long)TK, (long long)E, bE);
  if (r[1] != none) {
    const int64_t p = static_cast<int64_t>(r[1]);
    return rt_fail(RT_ERR_INDEX, "%s: perm[%lld] = %d is out of range [0, %lld)", op, (long long)p,
                   read_back(perm + p), (long long)TK);
  }
  if (inv && r[2] != none) {
    const int64_t p = static_cast<int64_t>(r[2]);
    const int32_t v = read_back(perm + p);
    return rt_fail(RT_ERR_INDEX, "%s: perm[%lld] = %d repeats perm[%d]", op, (long long)p, v, read_back(inv + v));
  }
  if (inv && TK > 0) {
    unset_to_minus_one_kernel<<<grid_for(TK, kThreads), kThreads, 0, stream()>>>(inv, TK);
    RT_TRY(check_launch(op));
  }
  out->A = bE;
  out->max_rows = static_cast<int64_t>(~r[3]);
  return RT_OK;
}

// ======================================================================================
// Grouped GEMM (bf16 WMMA, fp32 accumulation).
//
// C[m, n] = Σ_k A(m, k) · B(n, k) per expert e. An operand is a row-major matrix in memory
// with rows ρ and columns γ: element address = base + e·expert_stride + phys(ρ)·ld + γ,
// phys(ρ) = gather ? gather[ρ'] / gather_div : ρ', ρ' = ρ + (sorted ? bounds[e] : 0).
// K-major operands have ρ = the outer index (m or n) and γ = k; outer-major ones ρ = k,
// γ = the outer index. Row-grouped GEMMs take M = the expert's row count; k-grouped ones
// (weight gradients) take the reduction depth = the expert's row count.
namespace wmma = nvcuda::wmma;
constexpr int kTile = 64;  // BM = BN
constexpr int kBK = 32;
constexpr int kPad = 8;
constexpr int kGemmThreads = 128;                        // 4 warps, 2 x 2, each 32 x 32
constexpr int kStageElems = kTile * (kBK + kPad);        // >= kBK * (kTile + kPad)
constexpr int kCsLd = kTile + 4;                         // fp32 epilogue staging
constexpr int kCsBytes = kTile * kCsLd * 4;
static_assert(kBK * (kTile + kPad) <= kStageElems, "stage buffer too small");

struct Operand {
  const void* base = nullptr;
  int64_t ld = 0;             // elements between consecutive rows ρ
  int64_t expert_stride = 0;  // elements between experts (weights); 0 for activation rows
  const int32_t* gather = nullptr;
  int32_t gather_div = 1;
  bool sorted = false;  // ρ counts from the expert's first sorted row
  bool vec = false;     // four consecutive γ load as one vector
};

struct GemmArgs {
  const int32_t* bounds;
  int64_t E;
  int64_t M, N, Kd;  // fixed sizes (the grouped one is ignored)
  Operand a[2], b[2];  // pairs accumulated into one result (dX = dG·Wg + dU·Wu)
  int n_pairs;
  Operand b2;  // dual: a second B with the same A (gate and up)
};

template <typename T>
Operand make_operand(const T* base, int64_t ld, int64_t expert_stride, bool sorted,
                     const int32_t* gather = nullptr, int64_t gather_div = 1) {
  Operand o;
  o.base = base;
  o.ld = ld;
  o.expert_stride = expert_stride;
  o.sorted = sorted;
  o.gather = gather;
  o.gather_div = static_cast<int32_t>(gather_div);
  o.vec = ld % 4 == 0 && expert_stride % 4 == 0 && aligned(base, 4 * sizeof(T));
  return o;
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Four consecutive elements (ρ, γ..γ+3) as bf16; zeros outside [0, rho_lim) x [0, gam_lim).
template <typename T>
__device__ __forceinline__ uint2 load4(const Operand& op, int64_t e, int64_t row0, int64_t rho, int64_t rho_lim,
                                       int64_t gam, int64_t gam_lim) {
  float f[4] = {0.f, 0.f, 0.f, 0.f};
  if (rho < rho_lim && gam < gam_lim) {
    int64_t r = op.sorted ? row0 + rho : rho;
    if (op.gather) r = op.gather[r] / op.gather_div;
    const T* p = static_cast<const T*>(op.base) + e * op.expert_stride + r * op.ld + gam;
    if (op.vec && gam + 3 < gam_lim) {
      if constexpr (std::is_same<T, float>::value) {
        const float4 q = *reinterpret_cast<const float4*>(p);
        f[0] = q.x, f[1] = q.y, f[2] = q.z, f[3] = q.w;
      } else {
        return *reinterpret_cast<const uint2*>(p);  // already four bf16
      }
    } else {
#pragma unroll
      for (int q = 0; q < 4; ++q)
        if (gam + q < gam_lim) {
          if constexpr (std::is_same<T, float>::value)
            f[q] = p[q];
          else
            f[q] = __bfloat162float(p[q]);
        }
    }
  }
  return make_uint2(pack_bf16x2(f[0], f[1]), pack_bf16x2(f[2], f[3]));
}

// A 64 x 32 operand tile into registers (4 groups of 4 per thread): K-major tiles go to
// shared memory as [64][kBK + kPad], outer-major ones as [kBK][64 + kPad].
template <bool kKMajor, typename T>
__device__ __forceinline__ void load_tile(uint2 (&regs)[4], const Operand& op, int64_t e, int64_t row0,
                                          int64_t outer0, int64_t outer_lim, int64_t k0, int64_t k_lim) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (kKMajor) {
      const int r = (tid >> 3) + 16 * i, c = (tid & 7) * 4;
      regs[i] = load4<T>(op, e, row0, outer0 + r, outer_lim, k0 + c, k_lim);
    } else {
      const int kk = (tid >> 4) + 8 * i, c = (tid & 15) * 4;
      regs[i] = load4<T>(op, e, row0, k0 + kk, k_lim, outer0 + c, outer_lim);
    }
  }
}

template <bool kKMajor>
__device__ __forceinline__ void store_tile(__nv_bfloat16* s, const uint2 (&regs)[4]) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (kKMajor) {
      const int r = (tid >> 3) + 16 * i, c = (tid & 7) * 4;
      *reinterpret_cast<uint2*>(s + r * (kBK + kPad) + c) = regs[i];
    } else {
      const int kk = (tid >> 4) + 8 * i, c = (tid & 15) * 4;
      *reinterpret_cast<uint2*>(s + kk * (kTile + kPad) + c) = regs[i];
    }
  }
}

template <bool kAK, bool kBK_, typename BT, bool kDual, bool kGroupK, class Epi>
__global__ void __launch_bounds__(kGemmThreads) grouped_gemm_kernel(GemmArgs g, Epi epi) {
  using ALayout = typename std::conditional<kAK, wmma::row_major, wmma::col_major>::type;
  using BLayout = typename std::conditional<kBK_, wmma::col_major, wmma::row_major>::type;
  constexpr int kStageBytes = (kDual ? 3 : 2) * kStageElems * 2;
  constexpr int kEpiBytes = (kDual ? 2 : 1) * kCsBytes;
  __shared__ __align__(128) unsigned char smem[kStageBytes > kEpiBytes ? kStageBytes : kEpiBytes];
  __nv_bfloat16* As = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* Bs = As + kStageElems;
  __nv_bfloat16* Bs2 = Bs + kStageElems;
  float* Cs = reinterpret_cast<float*>(smem);
  float* Cs2 = Cs + kTile * kCsLd;
  const int warp = threadIdx.x >> 5, wm = warp >> 1, wn = warp & 1;
  const int a_ld = kAK ? kBK + kPad : kTile + kPad;
  const int b_ld = kBK_ ? kBK + kPad : kTile + kPad;

  for (int64_t e = blockIdx.z; e < g.E; e += gridDim.z) {
    const int64_t row0 = g.bounds[e], rows = g.bounds[e + 1] - row0;
    if (rows <= 0) continue;
    const int64_t M = kGroupK ? g.M : rows, N = g.N, Kd = kGroupK ? rows : g.Kd;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
    for (int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile; m0 < M; m0 += static_cast<int64_t>(gridDim.y) * kTile) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2], acc2[2][2];
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          wmma::fill_fragment(acc[i][j], 0.f);
          if constexpr (kDual) wmma::fill_fragment(acc2[i][j], 0.f);
        }
      const int64_t nk = (Kd + kBK - 1) / kBK, steps = nk * g.n_pairs;
      uint2 ra[4], rb[4], rb2[4];
      auto load_step = [&](int64_t s) {
        const int pair = static_cast<int>(s / nk);
        const int64_t k0 = (s % nk) * kBK;
        load_tile<kAK, float>(ra, g.a[pair], e, row0, m0, M, k0, Kd);
        load_tile<kBK_, BT>(rb, g.b[pair], e, row0, n0, N, k0, Kd);
        if constexpr (kDual) load_tile<kBK_, BT>(rb2, g.b2, e, row0, n0, N, k0, Kd);
      };
      if (steps > 0) load_step(0);
      for (int64_t s = 0; s < steps; ++s) {
        store_tile<kAK>(As, ra);
        store_tile<kBK_>(Bs, rb);
        if constexpr (kDual) store_tile<kBK_>(Bs2, rb2);
        __syncthreads();
        if (s + 1 < steps) load_step(s + 1);  // in flight during the MMAs
#pragma unroll
        for (int kk = 0; kk < kBK; kk += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, ALayout> fa[2];
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            const int m = wm * 32 + i * 16;
            wmma::load_matrix_sync(fa[i], kAK ? As + m * a_ld + kk : As + kk * a_ld + m, a_ld);
          }
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const int n = wn * 32 + j * 16;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, BLayout> fb;
            wmma::load_matrix_sync(fb, kBK_ ? Bs + n * b_ld + kk : Bs + kk * b_ld + n, b_ld);
#pragma unroll
            for (int i = 0; i < 2; ++i) wmma::mma_sync(acc[i][j], fa[i], fb, acc[i][j]);
            if constexpr (kDual) {
              wmma::load_matrix_sync(fb, kBK_ ? Bs2 + n * b_ld + kk : Bs2 + kk * b_ld + n, b_ld);
#pragma unroll
              for (int i = 0; i < 2; ++i) wmma::mma_sync(acc2[i][j], fa[i], fb, acc2[i][j]);
            }
          }
        }
        __syncthreads();
      }
      // Epilogue through shared memory (the stage buffers are free after the last barrier).
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          float* c = Cs + (wm * 32 + i * 16) * kCsLd + wn * 32 + j * 16;
          wmma::store_matrix_sync(c, acc[i][j], kCsLd, wmma::mem_row_major);
          if constexpr (kDual)
            wmma::store_matrix_sync(Cs2 + (c - Cs), acc2[i][j], kCsLd, wmma::mem_row_major);
        }
      __syncthreads();
      for (int q = threadIdx.x; q < kTile * kTile; q += kGemmThreads) {
        const int r = q / kTile, c = q % kTile;
        const int64_t m = m0 + r, n = n0 + c;
        if (m < M && n < N) epi(e, row0, m, n, Cs[r * kCsLd + c], kDual ? Cs2[r * kCsLd + c] : 0.f);
      }
      __syncthreads();
    }
  }
}

template <bool kAK, bool kBK_, typename BT, bool kDual, bool kGroupK, class Epi>
rt_status launch_gemm(const GemmArgs& g, Epi epi, int64_t max_m, const char* op) {
  const int64_t gx = (g.N + kTile - 1) / kTile, gy = (max_m + kTile - 1) / kTile;
  if (gx == 0 || gy == 0) return RT_OK;
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy < 65535 ? gy : 65535),
                  static_cast<unsigned>(g.E < 65535 ? g.E : 65535));
  grouped_gemm_kernel<kAK, kBK_, BT, kDual, kGroupK, Epi><<<grid, kGemmThreads, 0, stream()>>>(g, epi);
  return check_launch(op);
}

// Epilogues: (expert, its first sorted row, m, n, value, dual value).
struct SwigluFwdEpi {  // G, U (nullable, kept for backward) and H = silu(G) ⊙ U
  float* G;
  float* U;
  float* H;
  int64_t I;
  __device__ void operator()(int64_t, int64_t row0, int64_t m, int64_t n, float g, float u) const {
    const int64_t i = (row0 + m) * I + n;
    if (G) {
      G[i] = g;
      U[i] = u;
    }
    H[i] = g * sigmoid(g) * u;
  }
};
struct StoreRowsEpi {  // out[row0 + m, n] = v
  float* out;
  int64_t ld;
  __device__ void operator()(int64_t, int64_t row0, int64_t m, int64_t n, float v, float) const {
    out[(row0 + m) * ld + n] = v;
  }
};
struct SwigluBwdEpi {  // from dH: dU = dH·silu(g), dG = dH·u·σ(g)(1 + g(1 − σ(g)))
  float* dG;
  float* dU;
  const float* G;
  const float* U;
  int64_t I;
  __device__ void operator()(int64_t, int64_t row0, int64_t m, int64_t n, float dh, float) const {
    const int64_t i = (row0 + m) * I + n;
    const float g = G[i], u = U[i], s = sigmoid(g);
    dU[i] = dh * g * s;
    dG[i] = dh * u * s * (1.f + g * (1.f - s));
  }
};
struct AccumulateWeightEpi {  // dW[e][m, n] += v
  float* out;
  int64_t expert_stride, ld;
  __device__ void operator()(int64_t e, int64_t, int64_t m, int64_t n, float v, float) const {
    out[e * expert_stride + m * ld + n] += v;
  }
};

// H = silu(G) ⊙ U (A·I elements).
__global__ void swiglu_kernel(float* __restrict__ H, const float* __restrict__ G, const float* __restrict__ U,
                              int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    H[i] = G[i] * sigmoid(G[i]) * U[i];
}

// dx[t] += dXs[inv[t·K + j]] for the live slots j, in slot order.
template <int W>
__global__ void add_slot_rows_kernel(float* __restrict__ dx, const float* __restrict__ dxs,
                                     const int32_t* __restrict__ inv, int64_t T, int64_t K, int64_t C) {
  const int64_t nv = C / W;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; t < T;
       t += static_cast<int64_t>(gridDim.x) * blockDim.y)
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
      float acc[W];
      load_vec<W>(acc, dx + t * C + v * W);
      for (int64_t j = 0; j < K; ++j) {
        const int32_t p = inv[t * K + j];
        if (p < 0) continue;
        float d[W];
        load_vec<W>(d, dxs + static_cast<int64_t>(p) * C + v * W);
#pragma unroll
        for (int q = 0; q < W; ++q) acc[q] += d[q];
      }
      store_vec<W>(dx + t * C + v * W, acc);
    }
}

rt_status check_expert_sizes(int64_t T, int64_t E, int64_t K, int64_t C, int64_t I, rt_dtype w_dtype, const char* op) {
  RT_TRY(check_common(T, E, K, op));
  if (C < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected C >= 0, received %lld", op, (long long)C);
  if (I < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected I >= 0, received %lld", op, (long long)I);
  if (C > INT_MAX || I > INT_MAX)
    return rt_fail(RT_ERR_SHAPE, "%s: expected C, I <= 2^31 - 1 (BLAS ints), received C = %lld, I = %lld", op,
                   (long long)C, (long long)I);
  if (w_dtype != RT_F32 && w_dtype != RT_BF16)
    return rt_fail(RT_ERR_DTYPE, "%s: expected '%s' float32 or bfloat16, received %s", op, "weights",
                   rt_dtype_name(w_dtype));
  return RT_OK;
}

// ======================================================================================
// Combine

// Validates inv_perm (T·K) against [-1, A); with seen (A), also that no row repeats
// (seen[p] = first assignment naming row p, INT32_MAX for none). One wait.
__global__ void first_assignment_kernel(int32_t* __restrict__ seen, const int32_t* __restrict__ inv_perm, int64_t TK,
                                        int64_t A) {
  for (int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; a < TK;
       a += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t p = inv_perm[a];
    if (p >= 0 && p < A) atomicMin(&seen[p], static_cast<int32_t>(a));
  }
}
__global__ void find_repeat_row_kernel(unsigned long long* __restrict__ first_repeat, const int32_t* __restrict__ seen,
                                       const int32_t* __restrict__ inv_perm, int64_t TK, int64_t A) {
  for (int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; a < TK;
       a += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t p = inv_perm[a];
    if (p >= 0 && p < A && seen[p] != a) atomicMin(first_repeat, static_cast<unsigned long long>(a));
  }
}

rt_status check_inv_perm(int32_t* seen, const int32_t* inv_perm, int64_t TK, int64_t A, const char* op) {
  IndexFlag flag;
  RT_TRY(launch_range_check(flag, inv_perm, TK, -1, A, op));
  DeviceScratch repeat_s(seen ? sizeof(unsigned long long) : 0);
  RT_TRY(scratch_ok(repeat_s, op));
  if (seen) {
    RT_CUDA_TRY(op, cudaMemsetAsync(repeat_s.ptr, 0xff, repeat_s.bytes, stream()));
    if (A > 0) fill_i32_kernel<<<grid_for(A, kThreads), kThreads, 0, stream()>>>(seen, INT32_MAX, A);
    if (TK > 0) {
      first_assignment_kernel<<<grid_for(TK, kThreads), kThreads, 0, stream()>>>(seen, inv_perm, TK, A);
      find_repeat_row_kernel<<<grid_for(TK, kThreads), kThreads, 0, stream()>>>(
          repeat_s.as<unsigned long long>(), seen, inv_perm, TK, A);
    }
    RT_TRY(check_launch(op));
  }
  unsigned long long repeat = ~0ull;
  if (seen)
    RT_CUDA_TRY(op, cudaMemcpyAsync(&repeat, repeat_s.ptr, sizeof repeat, cudaMemcpyDeviceToHost, stream()));
  RT_TRY(wait(op));
  RT_TRY(flag.check(op, "inv_perm", A));
  if (repeat != ~0ull)
    return rt_fail(RT_ERR_INDEX, "%s: inv_perm[%lld] = %d repeats an earlier assignment's row", op,
                   (long long)repeat, read_back(inv_perm + repeat));
  return RT_OK;
}

// out[t] = Σ_j topk_w[t, j] · y[inv_perm[t·K + j]] over live slots, in slot order.
template <int W>
__global__ void combine_fwd_kernel(float* __restrict__ out, const float* __restrict__ y,
                                   const int32_t* __restrict__ inv_perm, const float* __restrict__ topk_w, int64_t T,
                                   int64_t K, int64_t C) {
  const int64_t nv = C / W;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; t < T;
       t += static_cast<int64_t>(gridDim.x) * blockDim.y)
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
      float acc[W];
#pragma unroll
      for (int q = 0; q < W; ++q) acc[q] = 0.f;
      for (int64_t j = 0; j < K; ++j) {
        const int32_t p = inv_perm[t * K + j];
        if (p < 0) continue;
        const float wt = topk_w[t * K + j];
        float r[W];
        load_vec<W>(r, y + static_cast<int64_t>(p) * C + v * W);
#pragma unroll
        for (int q = 0; q < W; ++q) acc[q] = fmaf(wt, r[q], acc[q]);
      }
      store_vec<W>(out + t * C + v * W, acc);
    }
}

// Row a of T·K: dy[inv_perm[a]] = topk_w[a] · dout[a / K] (live slots).
template <int W>
__global__ void combine_dy_kernel(float* __restrict__ dy, const float* __restrict__ dout,
                                  const int32_t* __restrict__ inv_perm, const float* __restrict__ topk_w, int64_t TK,
                                  int64_t K, int64_t C) {
  const int64_t nv = C / W;
  for (int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; a < TK;
       a += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const int32_t p = inv_perm[a];
    if (p < 0) continue;
    const float wt = topk_w[a];
    const float* src = dout + (a / K) * C;
    float* dst = dy + static_cast<int64_t>(p) * C;
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
      float r[W];
      load_vec<W>(r, src + v * W);
#pragma unroll
      for (int q = 0; q < W; ++q) r[q] = wt * r[q];
      store_vec<W>(dst + v * W, r);
    }
  }
}

// Rows of dy no assignment names are zero.
template <int W>
__global__ void zero_unseen_rows_kernel(float* __restrict__ dy, const int32_t* __restrict__ seen, int64_t A,
                                        int64_t C) {
  const int64_t nv = C / W;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; p < A;
       p += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    if (seen[p] != INT32_MAX) continue;
    float z[W];
#pragma unroll
    for (int q = 0; q < W; ++q) z[q] = 0.f;
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) store_vec<W>(dy + p * C + v * W, z);
  }
}

// One warp per assignment: dtopk_w[a] = <dout[a / K], y[inv_perm[a]]> (0 for dropped).
template <int W>
__global__ void combine_dw_kernel(float* __restrict__ dtopk_w, const float* __restrict__ dout,
                                  const float* __restrict__ y, const int32_t* __restrict__ inv_perm, int64_t TK,
                                  int64_t K, int64_t C) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  const int64_t nv = C / W;
  for (int64_t a = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); a < TK; a += warps) {
    const int32_t p = inv_perm[a];
    float s = 0.f;
    if (p >= 0) {
      const float* d = dout + (a / K) * C;
      const float* r = y + static_cast<int64_t>(p) * C;
      for (int64_t v = lane; v < nv; v += 32) {
        float dv[W], rv[W];
        load_vec<W>(dv, d + v * W);
        load_vec<W>(rv, r + v * W);
#pragma unroll
        for (int q = 0; q < W; ++q) s = fmaf(dv[q], rv[q], s);
      }
    }
    s = warp_sum(s);
    if (lane == 0) dtopk_w[a] = p >= 0 ? s : 0.f;
  }
}

rt_status check_combine_sizes(int64_t T, int64_t K, int64_t C, int64_t A, const char* op) {
  if (T < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected T >= 0, received %lld", op, (long long)T);
  if (K < 1) return rt_fail(RT_ERR_ARG, "%s: expected K >= 1, received %lld", op, (long long)K);
  if (C < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected C >= 0, received %lld", op, (long long)C);
  if (A < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected A >= 0, received %lld", op, (long long)A);
  return RT_OK;
}

}  // namespace
}  // namespace cuda
}  // namespace rt

using namespace rt::cuda;

extern "C" {

rt_status rt_cuda_moe_route_fwd(float* probs, int32_t* topk_idx, float* topk_w, const float* logits, int64_t T,
                                int64_t E, int64_t K, int renorm) {
  const char* op = "moe_route_fwd";
  RT_CUDA_OP(op);
  RT_TRY(check_common(T, E, K, op));
  if (T == 0) return RT_OK;
  route_fwd_kernel<<<grid_for(T, kThreads / 32), kThreads, 0, stream()>>>(probs, topk_idx, topk_w, logits, T, E, K,
                                                                          renorm);
  return check_launch(op);
}

rt_status rt_cuda_moe_route_bwd(float* dlogits, const float* dtopk_w, const float* probs, const int32_t* topk_idx,
                                int64_t T, int64_t E, int64_t K, int renorm) {
  const char* op = "moe_route_bwd";
  RT_CUDA_OP(op);
  RT_TRY(check_common(T, E, K, op));
  if (T == 0) return RT_OK;
  IndexFlag flag;
  RT_TRY(launch_range_check(flag, topk_idx, T * K, 0, E, op));
  RT_TRY(wait(op));
  RT_TRY(flag.check(op, "topk_idx", E));
  route_bwd_kernel<<<grid_for(T, kThreads / 32), kThreads, 0, stream()>>>(dlogits, dtopk_w, probs, topk_idx, T, E, K,
                                                                          renorm);
  return check_launch(op);
}

rt_status rt_cuda_moe_sort(int32_t* perm, int32_t* inv_perm, int32_t* bounds, int64_t* live, const int32_t* topk_idx,
                           int64_t T, int64_t E, int64_t K) {
  const char* op = "moe_sort";
  RT_CUDA_OP(op);
  RT_TRY(check_common(T, E, K, op));
  if (E > INT32_MAX) return rt_fail(RT_ERR_SHAPE, "%s: expected E <= 2^31 - 1, received %lld", op, (long long)E);
  if (!live) return rt_fail(RT_ERR_ARG, "%s: expected a buffer for '%s', received NULL", op, "live");
  const int64_t TK = T * K;
  if (TK == 0) {
    RT_CUDA_TRY(op, cudaMemsetAsync(bounds, 0, sizeof(int32_t) * static_cast<size_t>(E + 1), stream()));
    RT_TRY(wait(op));
    *live = 0;
    return RT_OK;
  }
  IndexFlag flag;
  RT_TRY(launch_range_check(flag, topk_idx, TK, -1, E, op));
  RT_TRY(wait(op));
  RT_TRY(flag.check(op, "topk_idx", E));

  DeviceScratch keys_in(sizeof(uint32_t) * static_cast<size_t>(TK)), keys_out(sizeof(uint32_t) * static_cast<size_t>(TK)),
      vals_in(sizeof(int32_t) * static_cast<size_t>(TK)), vals_out(sizeof(int32_t) * static_cast<size_t>(TK));
  RT_TRY(scratch_ok(keys_in, op));
  RT_TRY(scratch_ok(keys_out, op));
  RT_TRY(scratch_ok(vals_in, op));
  RT_TRY(scratch_ok(vals_out, op));
  sort_keys_kernel<<<grid_for(TK, kThreads), kThreads, 0, stream()>>>(keys_in.as<uint32_t>(), vals_in.as<int32_t>(),
                                                                      topk_idx, TK, E);
  RT_TRY(check_launch(op));
  int end_bit = 1;
  while (end_bit < 32 && (int64_t(1) << end_bit) <= E) ++end_bit;  // keys go up to E (dropped)
  const int n = static_cast<int>(TK);
  size_t temp_bytes = 0;
  RT_CUDA_TRY(op, cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in.as<uint32_t>(), keys_out.as<uint32_t>(),
                                                  vals_in.as<int32_t>(), vals_out.as<int32_t>(), n, 0, end_bit,
                                                  stream()));
  DeviceScratch temp(temp_bytes);
  RT_TRY(scratch_ok(temp, op));
  RT_CUDA_TRY(op, cub::DeviceRadixSort::SortPairs(temp.ptr, temp_bytes, keys_in.as<uint32_t>(), keys_out.as<uint32_t>(),
                                                  vals_in.as<int32_t>(), vals_out.as<int32_t>(), n, 0, end_bit,
                                                  stream()));
  sort_finish_kernel<<<grid_for(TK + 1, kThreads), kThreads, 0, stream()>>>(perm, inv_perm, bounds,
                                                                             keys_out.as<uint32_t>(),
                                                                             vals_out.as<int32_t>(), TK, E);
  RT_TRY(check_launch(op));
  int32_t A = 0;
  RT_CUDA_TRY(op, cudaMemcpyAsync(&A, bounds + E, sizeof A, cudaMemcpyDeviceToHost, stream()));
  RT_TRY(wait(op));
  *live = A;
  return RT_OK;
}

rt_status rt_cuda_moe_experts_fwd(float* y, float* act_gate, float* act_up, const float* x, const int32_t* perm,
                                  const int32_t* bounds, const void* w_gate, const void* w_up, const void* w_down,
                                  rt_dtype w_dtype, int64_t T, int64_t E, int64_t K, int64_t C, int64_t I) {
  const char* op = "moe_experts_fwd";
  RT_CUDA_OP(op);
  RT_TRY(check_expert_sizes(T, E, K, C, I, w_dtype, op));
  if ((act_gate == nullptr) != (act_up == nullptr))
    return rt_fail(RT_ERR_ARG, "%s: expected act_gate and act_up both given or both NULL, received only %s", op,
                   act_gate ? "act_gate" : "act_up");
  SortedRows sr;
  RT_TRY(check_sorted(&sr, nullptr, perm, bounds, T * K, E, op));
  const int64_t A = sr.A;
  if (A == 0 || C == 0) return RT_OK;
  if (I == 0) {
    RT_CUDA_TRY(op, cudaMemsetAsync(y, 0, sizeof(float) * static_cast<size_t>(A * C), stream()));
    return RT_OK;
  }
  DeviceScratch h_s(sizeof(float) * static_cast<size_t>(A * I));  // (A, I) silu(G) ⊙ U
  RT_TRY(scratch_ok(h_s, op));
  float* H = h_s.as<float>();
  const bool bf16 = w_dtype == RT_BF16;
  auto weights = [&](const void* w, int64_t ld, int64_t expert_stride) {
    return bf16 ? make_operand(static_cast<const __nv_bfloat16*>(w), ld, expert_stride, false)
                : make_operand(static_cast<const float*>(w), ld, expert_stride, false);
  };
  // Phase 1: G = Xs Wg[e]ᵀ, U = Xs Wu[e]ᵀ (Xs rows gathered through perm / K), H in the epilogue.
  GemmArgs g1{};
  g1.bounds = bounds, g1.E = E, g1.N = I, g1.Kd = C, g1.n_pairs = 1;
  g1.a[0] = make_operand(x, C, 0, true, perm, K);
  g1.b[0] = weights(w_gate, C, I * C);
  g1.b2 = weights(w_up, C, I * C);
  const SwigluFwdEpi e1{act_gate, act_up, H, I};
  RT_TRY((bf16 ? launch_gemm<true, true, __nv_bfloat16, true, false>(g1, e1, sr.max_rows, op)
              : launch_gemm<true, true, float, true, false>(g1, e1, sr.max_rows, op)));
  // Phase 2: y = H Wd[e]ᵀ.
  GemmArgs g2{};
  g2.bounds = bounds, g2.E = E, g2.N = C, g2.Kd = I, g2.n_pairs = 1;
  g2.a[0] = make_operand(static_cast<const float*>(H), I, 0, true);
  g2.b[0] = weights(w_down, I, C * I);
  const StoreRowsEpi e2{y, C};
  return bf16 ? launch_gemm<true, true, __nv_bfloat16, false, false>(g2, e2, sr.max_rows, op)
              : launch_gemm<true, true, float, false, false>(g2, e2, sr.max_rows, op);
}

rt_status rt_cuda_moe_experts_bwd(float* dx, float* dw_gate, float* dw_up, float* dw_down, const float* dy,
                                  const float* x, const int32_t* perm, const int32_t* bounds, const void* w_gate,
                                  const void* w_up, const void* w_down, rt_dtype w_dtype, const float* act_gate,
                                  const float* act_up, int64_t T, int64_t E, int64_t K, int64_t C, int64_t I) {
  const char* op = "moe_experts_bwd";
  RT_CUDA_OP(op);
  RT_TRY(check_expert_sizes(T, E, K, C, I, w_dtype, op));
  if (!act_gate) return rt_fail(RT_ERR_ARG, "%s: expected a buffer for '%s', received NULL", op, "act_gate");
  if (!act_up) return rt_fail(RT_ERR_ARG, "%s: expected a buffer for '%s', received NULL", op, "act_up");
  const int64_t TK = T * K;
  DeviceScratch inv_s(dx ? sizeof(int32_t) * static_cast<size_t>(TK) : 0);  // (T*K) assignment → sorted row
  RT_TRY(scratch_ok(inv_s, op));
  int32_t* inv = dx ? inv_s.as<int32_t>() : nullptr;
  SortedRows sr;
  RT_TRY(check_sorted(&sr, inv, perm, bounds, TK, E, op));
  const int64_t A = sr.A;
  if (A == 0 || C == 0 || I == 0 || (!dx && !dw_gate && !dw_up && !dw_down)) return RT_OK;

  const bool need_dgu = dx || dw_gate || dw_up;
  DeviceScratch dg_s(need_dgu ? sizeof(float) * static_cast<size_t>(A * I) : 0),
      du_s(need_dgu ? sizeof(float) * static_cast<size_t>(A * I) : 0),
      h_s(dw_down ? sizeof(float) * static_cast<size_t>(A * I) : 0),
      dxs_s(dx ? sizeof(float) * static_cast<size_t>(A * C) : 0);
  RT_TRY(scratch_ok(dg_s, op));
  RT_TRY(scratch_ok(du_s, op));
  RT_TRY(scratch_ok(h_s, op));
  RT_TRY(scratch_ok(dxs_s, op));
  float* dG = need_dgu ? dg_s.as<float>() : nullptr;  // (A, I)
  float* dU = need_dgu ? du_s.as<float>() : nullptr;  // (A, I)
  float* H = dw_down ? h_s.as<float>() : nullptr;     // (A, I)
  float* dxs = dx ? dxs_s.as<float>() : nullptr;      // (A, C)
  const bool bf16 = w_dtype == RT_BF16;
  auto weights = [&](const void* w, int64_t ld, int64_t expert_stride) {
    return bf16 ? make_operand(static_cast<const __nv_bfloat16*>(w), ld, expert_stride, false)
                : make_operand(static_cast<const float*>(w), ld, expert_stride, false);
  };

  if (H) {
    swiglu_kernel<<<grid_for(A * I, kThreads), kThreads, 0, stream()>>>(H, act_gate, act_up, A * I);
    RT_TRY(check_launch(op));
  }
  // Phase A: dH = dy Wd[e] (Wd[e] is (C, I): outer-major B), then dG, dU in the epilogue.
  if (need_dgu) {
    GemmArgs ga{};
    ga.bounds = bounds, ga.E = E, ga.N = I, ga.Kd = C, ga.n_pairs = 1;
    ga.a[0] = make_operand(dy, C, 0, true);
    ga.b[0] = weights(w_down, I, C * I);
    const SwigluBwdEpi epi{dG, dU, act_gate, act_up, I};
    RT_TRY((bf16 ? launch_gemm<true, false, __nv_bfloat16, false, false>(ga, epi, sr.max_rows, op)
                : launch_gemm<true, false, float, false, false>(ga, epi, sr.max_rows, op)));
  }
  // Phase B: dXs = dG Wg[e] + dU Wu[e] (one accumulator, two k-passes), then dx += by slot.
  if (dx) {
    GemmArgs gb{};
    gb.bounds = bounds, gb.E = E, gb.N = C, gb.Kd = I, gb.n_pairs = 2;
    gb.a[0] = make_operand(static_cast<const float*>(dG), I, 0, true);
    gb.b[0] = weights(w_gate, C, I * C);
    gb.a[1] = make_operand(static_cast<const float*>(dU), I, 0, true);
    gb.b[1] = weights(w_up, C, I * C);
    const StoreRowsEpi epi{dxs, C};
    RT_TRY((bf16 ? launch_gemm<true, false, __nv_bfloat16, false, false>(gb, epi, sr.max_rows, op)
                : launch_gemm<true, false, float, false, false>(gb, epi, sr.max_rows, op)));
    const bool vec = C % 4 == 0 && aligned(dx, 16);
    const RowLaunch l = row_launch(T, vec ? C / 4 : C);
    if (vec)
      add_slot_rows_kernel<4><<<l.grid, l.block, 0, stream()>>>(dx, dxs, inv, T, K, C);
    else
      add_slot_rows_kernel<1><<<l.grid, l.block, 0, stream()>>>(dx, dxs, inv, T, K, C);
    RT_TRY(check_launch(op));
  }
  // Phase C: weight gradients, grouped along the reduction (the expert's rows).
  auto weight_grad = [&](float* out, const float* d, int64_t M, int64_t N, const Operand& b) {
    GemmArgs gc{};
    gc.bounds = bounds, gc.E = E, gc.M = M, gc.N = N, gc.n_pairs = 1;
    gc.a[0] = make_operand(d, M, 0, true);  // d[row0 + k, m]
    gc.b[0] = b;                            // B(n, k) at row row0 + k
    return launch_gemm<false, false, float, false, true>(gc, AccumulateWeightEpi{out, M * N, N}, M, op);
  };
  const Operand xs = make_operand(x, C, 0, true, perm, K);  // x[perm[row0 + k] / K, c]
  if (dw_gate) RT_TRY(weight_grad(dw_gate, dG, I, C, xs));
  if (dw_up) RT_TRY(weight_grad(dw_up, dU, I, C, xs));
  if (dw_down) RT_TRY(weight_grad(dw_down, dy, C, I, make_operand(static_cast<const float*>(H), I, 0, true)));
  return RT_OK;
}

rt_status rt_cuda_moe_combine_fwd(float* out, const float* y, const int32_t* inv_perm, const float* topk_w, int64_t T,
                                  int64_t K, int64_t C, int64_t A) {
  const char* op = "moe_combine_fwd";
  RT_CUDA_OP(op);
  RT_TRY(check_combine_sizes(T, K, C, A, op));
  if (T == 0) return RT_OK;
  RT_TRY(check_inv_perm(nullptr, inv_perm, T * K, A, op));
  if (C == 0) return RT_OK;
  const bool vec = C % 4 == 0 && aligned(out, 16) && aligned(y, 16);
  const RowLaunch l = row_launch(T, vec ? C / 4 : C);
  if (vec)
    combine_fwd_kernel<4><<<l.grid, l.block, 0, stream()>>>(out, y, inv_perm, topk_w, T, K, C);
  else
    combine_fwd_kernel<1><<<l.grid, l.block, 0, stream()>>>(out, y, inv_perm, topk_w, T, K, C);
  return check_launch(op);
}

rt_status rt_cuda_moe_combine_bwd(float* dy, float* dtopk_w, const float* dout, const float* y,
                                  const int32_t* inv_perm, const float* topk_w, int64_t T, int64_t K, int64_t C,
                                  int64_t A) {
  const char* op = "moe_combine_bwd";
  RT_CUDA_OP(op);
  RT_TRY(check_combine_sizes(T, K, C, A, op));
  const int64_t TK = T * K;
  DeviceScratch seen_s(dy && A > 0 ? sizeof(int32_t) * static_cast<size_t>(A) : 0);  // (A) first assignment of a row
  RT_TRY(scratch_ok(seen_s, op));
  int32_t* seen = dy && A > 0 ? seen_s.as<int32_t>() : nullptr;
  if (TK > 0 || seen) RT_TRY(check_inv_perm(seen, inv_perm, TK, A, op));
  const bool vec = C % 4 == 0 && aligned(dout, 16) && aligned(y, 16) && (!dy || aligned(dy, 16));
  if (dy && C > 0) {
    if (seen) {
      const RowLaunch z = row_launch(A, vec ? C / 4 : C);
      if (vec)
        zero_unseen_rows_kernel<4><<<z.grid, z.block, 0, stream()>>>(dy, seen, A, C);
      else
        zero_unseen_rows_kernel<1><<<z.grid, z.block, 0, stream()>>>(dy, seen, A, C);
      RT_TRY(check_launch(op));
    }
    if (TK > 0) {
      const RowLaunch l = row_launch(TK, vec ? C / 4 : C);
      if (vec)
        combine_dy_kernel<4><<<l.grid, l.block, 0, stream()>>>(dy, dout, inv_perm, topk_w, TK, K, C);
      else
        combine_dy_kernel<1><<<l.grid, l.block, 0, stream()>>>(dy, dout, inv_perm, topk_w, TK, K, C);
      RT_TRY(check_launch(op));
    }
  }
  if (dtopk_w && TK > 0) {  // C = 0: empty dot products, zeros
    if (vec)
      combine_dw_kernel<4><<<grid_for(TK, kThreads / 32), kThreads, 0, stream()>>>(dtopk_w, dout, y, inv_perm, TK, K, C);
    else
      combine_dw_kernel<1><<<grid_for(TK, kThreads / 32), kThreads, 0, stream()>>>(dtopk_w, dout, y, inv_perm, TK, K, C);
    RT_TRY(check_launch(op));
  }
  return RT_OK;
}

}  // extern "C"
