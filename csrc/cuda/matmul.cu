// Batched GEMM on the GPU (the CUDA side of matmul.cc): C[b] = alpha·op(A[b])·op(B[b]) +
// beta·C[b], row-major, A and C float32, B float32 or bfloat16, stride 0 broadcasting.
//
// Owns: finding cuBLAS at run time (dlopen; no link-time dependency, so the addon loads
// on machines without it), the row-major → column-major mapping, and a built-in
// tensor-core GEMM used when cuBLAS is absent or forced (rt_cuda_set_gemm_backend(1)).
//
// cuBLAS: row-major C (M,N) is column-major Cᵀ (N,M), and Cᵀ = op(B)ᵀ·op(A)ᵀ, so one
// cublasGemmStridedBatchedEx with the operands swapped (m = N, n = M) and the transposes
// kept does it; no data moves. fp32 B: fp32 operands, TF32 tensor-core compute, fp32 C.
// bf16 B: A is cast to bf16 into a scratch (one pass, 6 bytes per element of A), then a
// bf16×bf16 GEMM with fp32 compute and fp32 C.
//
// Built-in: 128×128 C tiles per 256-thread block (8 warps of 64×32, WMMA bf16 16×16×16
// fragments, fp32 accumulators), K in steps of 32. Each step's A and B tiles are read from
// global memory into registers (converted to bf16 there; bf16 B as is) while the tensor
// cores work on the previous step's tiles in shared memory. A transposed operand is
// staged in its own layout and read as a col_major fragment, so global reads stay
// contiguous whatever the transposes. Edge tiles are zero-padded; the epilogue stages each
// 16×16 accumulator through shared memory and writes only elements inside C.
//
// Napkin math: 512×2048×2048 = 4.3 GFLOP, ~10 µs at cuBLAS's ~500 TFLOP/s on an H200 (bf16);
// the built-in kernel (mma.sync through WMMA, no TMA/wgmma) reaches a fraction of that.
#include <dlfcn.h>
#include <library_types.h>
#include <mma.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <mutex>
#include <type_traits>

#include "../cpu/check.h"
#include "cuda_common.cuh"
#include "rt/cuda_runtime.h"
#include "rt/matmul.h"

namespace {

using rt::cuda::check_launch;
using rt::cuda::stream;

constexpr int64_t kMaxBatchPerLaunch = 65535;  // gridDim.z limit (also used for cuBLAS calls)

// ---- cuBLAS, resolved at run time ------------------------------------------------------

// The few cuBLAS declarations used (stable public ABI of cublas_api.h; enums are ints).
typedef int cublasStatus_t;  // CUBLAS_STATUS_SUCCESS = 0
typedef struct cublasContext* cublasHandle_t;
constexpr int kCublasOpN = 0, kCublasOpT = 1;
constexpr int kCublasCompute32F = 68;          // CUBLAS_COMPUTE_32F
constexpr int kCublasCompute32FFastTF32 = 77;  // CUBLAS_COMPUTE_32F_FAST_TF32
constexpr int kCublasGemmDefault = -1;         // CUBLAS_GEMM_DEFAULT

using CublasCreateFn = cublasStatus_t (*)(cublasHandle_t*);
using CublasSetStreamFn = cublasStatus_t (*)(cublasHandle_t, cudaStream_t);
using CublasGetPropertyFn = cublasStatus_t (*)(libraryPropertyType, int*);
using CublasGemmStridedBatchedExFn = cublasStatus_t (*)(
    cublasHandle_t, int /*transa*/, int /*transb*/, int m, int n, int k, const void* alpha, const void* A,
    cudaDataType Atype, int lda, long long strideA, const void* B, cudaDataType Btype, int ldb, long long strideB,
    const void* beta, void* C, cudaDataType Ctype, int ldc, long long strideC, int batchCount, int /*computeType*/,
    int /*algo*/);

// The library, its entry points and one handle (created on first use, bound to stream()).
// Lives for the whole process (never destroyed: no teardown order issues at exit).
struct Cublas {
  bool loaded = false;
  CublasCreateFn create = nullptr;
  CublasSetStreamFn set_stream = nullptr;
  CublasGemmStridedBatchedExFn gemm = nullptr;
  char info[96] = "builtin (cuBLAS not found)";

  std::mutex mutex;  // guards the handle and serialises calls on it
  cublasHandle_t handle = nullptr;
  cudaStream_t handle_stream = nullptr;
  bool handle_failed = false;

  Cublas() {
    for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
      void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (!lib) continue;
      create = reinterpret_cast<CublasCreateFn>(dlsym(lib, "cublasCreate_v2"));
      set_stream = reinterpret_cast<CublasSetStreamFn>(dlsym(lib, "cublasSetStream_v2"));
      gemm = reinterpret_cast<CublasGemmStridedBatchedExFn>(dlsym(lib, "cublasGemmStridedBatchedEx"));
      auto get_property = reinterpret_cast<CublasGetPropertyFn>(dlsym(lib, "cublasGetProperty"));
      if (!create || !set_stream || !gemm) {
        dlclose(lib);
        continue;
      }
      int major = 0, minor = 0, patch = 0;
      if (get_property && get_property(MAJOR_VERSION, &major) == 0 && get_property(MINOR_VERSION, &minor) == 0 &&
          get_property(PATCH_LEVEL, &patch) == 0)
        std::snprintf(info, sizeof(info), "cublas %d.%d.%d", major, minor, patch);
      else
        std::snprintf(info, sizeof(info), "cublas (%s)", name);
      loaded = true;
      return;
    }
  }

  // The handle bound to the current stream, or null when cuBLAS is unusable (the caller
  // then takes the built-in GEMM). Call with `mutex` held.
  cublasHandle_t bound_handle() {
    if (!loaded || handle_failed) return nullptr;
    if (!handle) {
      cublasStatus_t st = create(&handle);
      if (st != 0) {
        handle = nullptr;
        handle_failed = true;
        std::snprintf(info, sizeof(info), "builtin (cublasCreate failed with status %d)", st);
        return nullptr;
      }
    }
    if (handle_stream != stream()) {
      if (set_stream(handle, stream()) != 0) return nullptr;
      handle_stream = stream();
    }
    return handle;
  }
};

Cublas& cublas() {
  static Cublas* instance = new Cublas();  // thread-safe one-time load; intentionally never freed
  return *instance;
}

std::atomic<int> g_gemm_backend{0};  // 0: cuBLAS when present, 1: always built-in

// ---- small kernels -----------------------------------------------------------------------

// C[b] = beta·C[b] (beta == 0 writes zeros without reading): the K == 0 product.
__global__ void scale_c_kernel(float* c, int64_t batch, int64_t mn, int64_t stride_c, float beta) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < batch * mn; i += stride) {
    float* p = c + (i / mn) * stride_c + i % mn;
    *p = beta == 0.f ? 0.f : beta * *p;
  }
}

// out (batch, mk) bf16, compact = A items (stride_a apart) rounded to nearest even.
// vec: mk and stride_a multiples of 4 and A 16-byte aligned (a float4 never straddles items).
__global__ void cast_a_bf16_kernel(__nv_bfloat16* out, const float* a, int64_t batch, int64_t mk, int64_t stride_a,
                                   bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = batch * mk;
  if (vec) {
    for (int64_t g = tid; g < n / 4; g += stride) {
      const int64_t e = 4 * g;
      float4 v = *reinterpret_cast<const float4*>(a + (e / mk) * stride_a + e % mk);
      __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
      uint2 packed{*reinterpret_cast<uint32_t*>(&lo), *reinterpret_cast<uint32_t*>(&hi)};
      *reinterpret_cast<uint2*>(out + e) = packed;
    }
    return;
  }
  for (int64_t e = tid; e < n; e += stride) out[e] = __float2bfloat16_rn(a[(e / mk) * stride_a + e % mk]);
}

// ---- built-in tensor-core GEMM --------------------------------------------------------------

namespace wmma = nvcuda::wmma;

constexpr int kBM = 128, kBN = 128, kBK = 32;  // C tile and K step per block
constexpr int kPad = 8;                         // bf16 padding per staged row: conflict-free fragment loads
constexpr int kGemmThreads = 256;               // 8 warps: 2 (M) × 4 (N), 64×32 of C each
constexpr int kWarpM = 64, kWarpN = 32;
constexpr int kFragsM = kWarpM / 16, kFragsN = kWarpN / 16;
// A staged tile: [BM][BK+pad] (A as is) or [BK][BM+pad] (A transposed); B likewise. Sized for the larger.
constexpr int kStageElems = std::max(kBM * (kBK + kPad), kBK * (kBM + kPad));
static_assert(kBM == kBN, "one staged-tile size serves A and B");
constexpr int kGroupsPerThread = kBM * kBK / 4 / kGemmThreads;  // 4-element groups each thread moves per tile
static_assert(kGroupsPerThread * 4 * kGemmThreads == kBM * kBK, "tile must split evenly into groups");

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Four consecutive elements starting at p, `valid` of them inside the matrix (the rest
// are zero padding), as four bf16. vec: p is aligned for one vector load of all four.
__device__ __forceinline__ uint2 load_group(const float* p, int valid, bool vec) {
  float4 v{0.f, 0.f, 0.f, 0.f};
  if (valid >= 4 && vec) {
    v = *reinterpret_cast<const float4*>(p);
  } else {
    if (valid > 0) v.x = p[0];
    if (valid > 1) v.y = p[1];
    if (valid > 2) v.z = p[2];
    if (valid > 3) v.w = p[3];
  }
  return uint2{pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w)};
}
__device__ __forceinline__ uint2 load_group(const __nv_bfloat16* p, int valid, bool vec) {
  if (valid >= 4 && vec) return *reinterpret_cast<const uint2*>(p);
  const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
  uint32_t e0 = valid > 0 ? h[0] : 0u, e1 = valid > 1 ? h[1] : 0u, e2 = valid > 2 ? h[2] : 0u,
           e3 = valid > 3 ? h[3] : 0u;
  return uint2{e0 | (e1 << 16), e2 | (e3 << 16)};
}

// One OUTER × INNER tile whose INNER dimension is contiguous both in global memory (row
// stride ld) and in shared memory (row stride INNER + kPad). base is the tile's origin;
// rows at or past outer_left and columns at or past inner_left are padding (zeros).
template <int OUTER, int INNER, typename T>
__device__ __forceinline__ void load_tile(uint2 (&regs)[kGroupsPerThread], const T* base, int64_t ld,
                                          int64_t outer_left, int64_t inner_left, bool vec) {
  // Thread t moves the group at column (t % groups per row)·4 of rows t / (groups per
  // row) + i·kRowStep: one column and one pointer per thread, rows kRowStep·ld apart.
  constexpr int kGroupsPerRow = INNER / 4;
  constexpr int kRowStep = kGemmThreads / kGroupsPerRow;
  static_assert(OUTER * INNER == kBM * kBK && kGemmThreads % kGroupsPerRow == 0, "staged tiles are BM × BK");
  const int o = threadIdx.x / kGroupsPerRow, in = (threadIdx.x % kGroupsPerRow) * 4;
  const int valid = in < inner_left ? (inner_left - in >= 4 ? 4 : static_cast<int>(inner_left - in)) : 0;
  const T* p = base + o * ld + in;
#pragma unroll
  for (int i = 0; i < kGroupsPerThread; ++i) {
    const bool row_inside = o + i * kRowStep < outer_left;
    regs[i] = row_inside && valid > 0 ? load_group(p + i * kRowStep * ld, valid, vec) : uint2{0u, 0u};
  }
}

template <int OUTER, int INNER>
__device__ __forceinline__ void store_tile(__nv_bfloat16* smem, const uint2 (&regs)[kGroupsPerThread]) {
  constexpr int kGroupsPerRow = INNER / 4;
  constexpr int kRowStep = kGemmThreads / kGroupsPerRow;
  const int o = threadIdx.x / kGroupsPerRow, in = (threadIdx.x % kGroupsPerRow) * 4;
#pragma unroll
  for (int i = 0; i < kGroupsPerThread; ++i)
    *reinterpret_cast<uint2*>(smem + (o + i * kRowStep) * (INNER + kPad) + in) = regs[i];
}

// One 128×128 tile of C[blockIdx.z] per block; tiles numbered M-fastest in blockIdx.x.
// vec_a / vec_b: the operand's contiguous dimension, batch stride and base allow vector loads.
template <bool TA, bool TB, typename BT>
__global__ void __launch_bounds__(kGemmThreads, 2)
    wmma_gemm_kernel(float* c, const float* a, const BT* b, int64_t M, int64_t N, int64_t K, int64_t stride_a,
                     int64_t stride_b, int64_t stride_c, int64_t tiles_m, float alpha, float beta, bool vec_a,
                     bool vec_b) {
  __shared__ __align__(128) __nv_bfloat16 a_stage[kStageElems];
  __shared__ __align__(128) __nv_bfloat16 b_stage[kStageElems];
  __shared__ __align__(128) float c_stage[kGemmThreads / 32][16 * 16];

  const int64_t m0 = (int64_t(blockIdx.x) % tiles_m) * kBM;
  const int64_t n0 = (int64_t(blockIdx.x) / tiles_m) * kBN;
  a += int64_t(blockIdx.z) * stride_a;
  b += int64_t(blockIdx.z) * stride_b;
  c += int64_t(blockIdx.z) * stride_c;

  // Staged layouts: A [m][k] (row_major fragments) or, transposed, [k][m] (col_major);
  // B [k][n] (row_major) or, transposed, [n][k] (col_major).
  constexpr int kAOuter = TA ? kBK : kBM, kAInner = TA ? kBM : kBK;
  constexpr int kBOuter = TB ? kBN : kBK, kBInner = TB ? kBK : kBN;
  const int64_t lda = TA ? M : K, ldb = TB ? K : N;
  auto load_a = [&](uint2(&regs)[kGroupsPerThread], int64_t k0) {
    if constexpr (TA) load_tile<kAOuter, kAInner>(regs, a + k0 * M + m0, lda, K - k0, M - m0, vec_a);
    else load_tile<kAOuter, kAInner>(regs, a + m0 * K + k0, lda, M - m0, K - k0, vec_a);
  };
  auto load_b = [&](uint2(&regs)[kGroupsPerThread], int64_t k0) {
    if constexpr (TB) load_tile<kBOuter, kBInner>(regs, b + n0 * K + k0, ldb, N - n0, K - k0, vec_b);
    else load_tile<kBOuter, kBInner>(regs, b + k0 * N + n0, ldb, K - k0, N - n0, vec_b);
  };

  using ALayout = std::conditional_t<TA, wmma::col_major, wmma::row_major>;
  using BLayout = std::conditional_t<TB, wmma::col_major, wmma::row_major>;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kFragsM][kFragsN];
#pragma unroll
  for (int i = 0; i < kFragsM; ++i)
#pragma unroll
    for (int j = 0; j < kFragsN; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = (warp / (kBN / kWarpN)) * kWarpM;  // warp's first row within the tile
  const int wn = (warp % (kBN / kWarpN)) * kWarpN;  // … and first column

  uint2 a_regs[kGroupsPerThread], b_regs[kGroupsPerThread];
  load_a(a_regs, 0);
  load_b(b_regs, 0);
  const int64_t k_steps = (K + kBK - 1) / kBK;
  for (int64_t ks = 0; ks < k_steps; ++ks) {
    __syncthreads();  // every warp is done reading the previous step's tiles
    store_tile<kAOuter, kAInner>(a_stage, a_regs);
    store_tile<kBOuter, kBInner>(b_stage, b_regs);
    __syncthreads();
    if (ks + 1 < k_steps) {  // next step's global reads overlap this step's MMAs
      load_a(a_regs, (ks + 1) * kBK);
      load_b(b_regs, (ks + 1) * kBK);
    }
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, ALayout> fa[kFragsM];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, BLayout> fb[kFragsN];
#pragma unroll
      for (int i = 0; i < kFragsM; ++i) {
        const int m = wm + i * 16;
        if constexpr (TA) wmma::load_matrix_sync(fa[i], a_stage + kk * (kBM + kPad) + m, kBM + kPad);
        else wmma::load_matrix_sync(fa[i], a_stage + m * (kBK + kPad) + kk, kBK + kPad);
      }
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) {
        const int n = wn + j * 16;
        if constexpr (TB) wmma::load_matrix_sync(fb[j], b_stage + n * (kBK + kPad) + kk, kBK + kPad);
        else wmma::load_matrix_sync(fb[j], b_stage + kk * (kBN + kPad) + n, kBN + kPad);
      }
#pragma unroll
      for (int i = 0; i < kFragsM; ++i)
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
  }

  // Epilogue: each 16×16 accumulator through this warp's staging square, then
  // C = alpha·acc + beta·C for the elements inside C (beta == 0: C is not read).
  float* stage = c_stage[warp];
#pragma unroll
  for (int i = 0; i < kFragsM; ++i)
#pragma unroll
    for (int j = 0; j < kFragsN; ++j) {
      wmma::store_matrix_sync(stage, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      const int64_t row0 = m0 + wm + i * 16, col0 = n0 + wn + j * 16;
      for (int e = lane; e < 16 * 16; e += 32) {
        const int64_t row = row0 + e / 16, col = col0 + e % 16;
        if (row < M && col < N) {
          float* p = c + row * N + col;
          *p = beta == 0.f ? alpha * stage[e] : alpha * stage[e] + beta * *p;
        }
      }
      __syncwarp();  // the square is rewritten by the next fragment
    }
}

inline bool aligned_to(const void* p, unsigned bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }

// Parameters of one call after validation (and the batch fold).
struct Gemm {
  float* c;
  const float* a;
  const void* b;
  bool b16, ta, tb;
  int64_t batch, M, N, K, stride_a, stride_b, stride_c;
  float alpha, beta;
};

template <bool TA, bool TB, typename BT>
rt_status launch_builtin_typed(const char* op, const Gemm& g) {
  const BT* b = static_cast<const BT*>(g.b);
  // Vector loads: the contiguous dimension (the row stride) and the batch stride in whole
  // groups of 4, and the base aligned for one group (16 bytes f32, 8 bytes bf16).
  const int64_t lda = TA ? g.M : g.K, ldb = TB ? g.K : g.N;
  const bool vec_a = lda % 4 == 0 && g.stride_a % 4 == 0 && aligned_to(g.a, 16);
  const bool vec_b = ldb % 4 == 0 && g.stride_b % 4 == 0 && aligned_to(b, 4 * sizeof(BT));
  const int64_t tiles_m = (g.M + kBM - 1) / kBM, tiles_n = (g.N + kBN - 1) / kBN;
  if (tiles_m * tiles_n > INT_MAX)
    return rt_fail(RT_ERR_SHAPE, "%s: M=%lld × N=%lld is too large for the built-in GEMM", op, (long long)g.M,
                   (long long)g.N);
  for (int64_t b0 = 0; b0 < g.batch; b0 += kMaxBatchPerLaunch) {
    const int64_t count = std::min(kMaxBatchPerLaunch, g.batch - b0);
    dim3 grid(static_cast<unsigned>(tiles_m * tiles_n), 1, static_cast<unsigned>(count));
    wmma_gemm_kernel<TA, TB, BT><<<grid, kGemmThreads, 0, stream()>>>(
        g.c + b0 * g.stride_c, g.a + b0 * g.stride_a, b + b0 * g.stride_b, g.M, g.N, g.K, g.stride_a, g.stride_b,
        g.stride_c, tiles_m, g.alpha, g.beta, vec_a, vec_b);
    RT_TRY(check_launch(op));
  }
  return RT_OK;
}

template <typename BT>
rt_status launch_builtin(const char* op, const Gemm& g) {
  if (g.ta) return g.tb ? launch_builtin_typed<true, true, BT>(op, g) : launch_builtin_typed<true, false, BT>(op, g);
  return g.tb ? launch_builtin_typed<false, true, BT>(op, g) : launch_builtin_typed<false, false, BT>(op, g);
}

// The cuBLAS call: column-major Cᵀ (N, M) = op(B)ᵀ (N, K) · op(A)ᵀ (K, M). a_data is A
// itself (fp32 B) or its bf16 copy (bf16 B), stride_a elements apart.
rt_status run_cublas(const char* op, Cublas& lib, cublasHandle_t handle, const Gemm& g, const void* a_data,
                     int64_t stride_a) {
  const cudaDataType ab_type = g.b16 ? CUDA_R_16BF : CUDA_R_32F;
  const size_t elem = g.b16 ? sizeof(__nv_bfloat16) : sizeof(float);  // A and B have the same type
  const char* a_base = static_cast<const char*>(a_data);
  const char* b_base = static_cast<const char*>(g.b);
  const int compute = g.b16 ? kCublasCompute32F : kCublasCompute32FFastTF32;
  const int ld_b = static_cast<int>(g.tb ? g.K : g.N);  // row strides of B and A
  const int ld_a = static_cast<int>(g.ta ? g.M : g.K);
  for (int64_t b0 = 0; b0 < g.batch; b0 += kMaxBatchPerLaunch) {
    const int64_t count = std::min(kMaxBatchPerLaunch, g.batch - b0);
    cublasStatus_t st = lib.gemm(handle, g.tb ? kCublasOpT : kCublasOpN, g.ta ? kCublasOpT : kCublasOpN,
                                 static_cast<int>(g.N), static_cast<int>(g.M), static_cast<int>(g.K), &g.alpha,
                                 b_base + static_cast<size_t>(b0 * g.stride_b) * elem, ab_type, ld_b, g.stride_b,
                                 a_base + static_cast<size_t>(b0 * stride_a) * elem, ab_type, ld_a, stride_a, &g.beta,
                                 g.c + b0 * g.stride_c, CUDA_R_32F, static_cast<int>(g.N), g.stride_c,
                                 static_cast<int>(count), compute, kCublasGemmDefault);
    if (st != 0)
      return rt_fail(RT_ERR_INTERNAL, "%s: cublasGemmStridedBatchedEx failed with status %d (M=%lld N=%lld K=%lld)", op,
                     st, (long long)g.M, (long long)g.N, (long long)g.K);
  }
  return RT_OK;
}

// bf16 B through cuBLAS: A rounded to bf16 once into a compact scratch (stride M·K, or 0
// when A is broadcast), then a bf16 × bf16 GEMM with fp32 compute.
rt_status run_cublas_bf16(const char* op, Cublas& lib, cublasHandle_t handle, const Gemm& g) {
  const int64_t items = g.stride_a == 0 ? 1 : g.batch, mk = g.M * g.K;
  rt::cuda::DeviceScratch a16(static_cast<size_t>(items * mk) * sizeof(__nv_bfloat16));
  if (!a16.ok()) return RT_ERR_NOMEM;
  const bool vec = mk % 4 == 0 && g.stride_a % 4 == 0 && aligned_to(g.a, 16);
  const int64_t n = vec ? items * mk / 4 : items * mk;
  cast_a_bf16_kernel<<<rt::cuda::grid_for(n, 256, int64_t(rt::cuda::sm_count()) * 8), 256, 0, stream()>>>(
      a16.as<__nv_bfloat16>(), g.a, items, mk, g.stride_a, vec);
  RT_TRY(check_launch(op));
  return run_cublas(op, lib, handle, g, a16.ptr, g.stride_a == 0 ? 0 : mk);
}

}  // namespace

extern "C" {

rt_status rt_cuda_matmul(float* c /*(batch, M, N) with stride_c*/, const float* a /*(batch, M, K) or (batch, K, M)*/,
                         const void* b /*(batch, K, N) or (batch, N, K), f32|bf16*/, rt_dtype b_dtype, int trans_a,
                         int trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, int64_t stride_a,
                         int64_t stride_b, int64_t stride_c, float alpha, float beta) {
  const char* op = "matmul";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(batch, op, "batch");
  RT_REQUIRE_NONNEG(M, op, "M");
  RT_REQUIRE_NONNEG(N, op, "N");
  RT_REQUIRE_NONNEG(K, op, "K");
  RT_REQUIRE_DTYPE_FLOAT(b_dtype, op, "b");
  // cuBLAS takes 32-bit sizes and leading dimensions (as OpenBLAS does on the CPU).
  RT_REQUIRE(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX, RT_ERR_SHAPE,
             "%s: expected M, N, K <= %d, received M=%lld N=%lld K=%lld", op, INT_MAX, (long long)M, (long long)N,
             (long long)K);
  RT_REQUIRE(stride_a == 0 || stride_a >= M * K, RT_ERR_SHAPE,
             "%s: expected stride_a = 0 (broadcast) or >= M*K = %lld, received %lld", op, (long long)(M * K),
             (long long)stride_a);
  RT_REQUIRE(stride_b == 0 || stride_b >= K * N, RT_ERR_SHAPE,
             "%s: expected stride_b = 0 (broadcast) or >= K*N = %lld, received %lld", op, (long long)(K * N),
             (long long)stride_b);
  RT_REQUIRE(stride_c >= M * N || (stride_c == 0 && batch <= 1), RT_ERR_SHAPE,
             "%s: expected stride_c >= M*N = %lld (the output cannot be broadcast), received %lld", op,
             (long long)(M * N), (long long)stride_c);
  if (batch == 0 || M == 0 || N == 0) return RT_OK;
  RT_REQUIRE_PTR(c, op, "c");
  if (K == 0) {  // an empty sum: C = beta·C
    const int64_t n = batch * M * N;
    scale_c_kernel<<<rt::cuda::grid_for(n, 256, int64_t(rt::cuda::sm_count()) * 8), 256, 0, stream()>>>(
        c, batch, M * N, stride_c, beta);
    return check_launch(op);
  }
  RT_REQUIRE_PTR(a, op, "a");
  RT_REQUIRE_PTR(b, op, "b");

  // A shared B over a contiguous batch of A and C is one taller GEMM: fold batch into M.
  if (batch > 1 && stride_b == 0 && !trans_a && stride_a == M * K && stride_c == M * N && batch * M <= INT_MAX) {
    M *= batch;
    batch = 1;
  }
  const Gemm g{c, a, b, b_dtype == RT_BF16, trans_a != 0, trans_b != 0, batch, M, N, K, stride_a, stride_b, stride_c,
               alpha, beta};

  if (g_gemm_backend.load(std::memory_order_relaxed) == 0) {
    Cublas& lib = cublas();
    if (lib.loaded) {
      std::lock_guard<std::mutex> lock(lib.mutex);
      if (cublasHandle_t handle = lib.bound_handle())
        return g.b16 ? run_cublas_bf16(op, lib, handle, g) : run_cublas(op, lib, handle, g, g.a, g.stride_a);
    }
  }
  return g.b16 ? launch_builtin<__nv_bfloat16>(op, g) : launch_builtin<float>(op, g);
}

const char* rt_cuda_blas_info(void) {
  if (g_gemm_backend.load(std::memory_order_relaxed) == 1) return "builtin (forced by set_gemm_backend)";
  return cublas().info;
}

rt_status rt_cuda_set_gemm_backend(int backend) {
  RT_REQUIRE(backend == 0 || backend == 1, RT_ERR_ARG,
             "set_gemm_backend: expected 0 (automatic) or 1 (built-in tensor-core GEMM), received %d", backend);
  g_gemm_backend.store(backend, std::memory_order_relaxed);
  return RT_OK;
}

}  // extern "C"
