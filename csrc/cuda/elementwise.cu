// Elementwise ops and small reductions on the GPU (the CUDA side of elementwise.cc):
// add/mul/scale/axpy/fill/clamp, the gated residual x + g·F(x) and its backward, bias
// add and its column reduction, sum of squares, dtype casts, and a device copy.
//
// All memory-bound. The flat ops are one grid-stride kernel over float4 items when every
// pointer is 16-byte aligned (tensor buffers are 256-byte aligned; views at odd offsets
// are not), with the last n % 4 elements (or all of them, unaligned) done one by one.
// Grids are ~8 blocks of 256 threads per SM: a full machine, each thread looping.
//
// Napkin math: add reads 8 and writes 4 bytes per element; 1 GB of floats moves 3 GB,
// ~0.7 ms at the H200's ~4.5 TB/s copy bandwidth.
//
// Reductions are deterministic (fixed grids, no atomics): sum_squares accumulates in
// fp32 per thread (a few thousand elements each, like the CPU's 4096-element blocks)
// and in double across threads; add_bias_bwd sums row chunks into a scratch of partial
// column sums, then adds the chunks in order.
#include <algorithm>
#include <cstdint>

#include "../cpu/check.h"
#include "cuda_common.cuh"
#include "rt/elementwise.h"

namespace {

using rt::cuda::aligned16;
using rt::cuda::check_launch;
using rt::cuda::grid_for;
using rt::cuda::stream;

constexpr int kThreads = 256;

inline bool aligned8(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 7u) == 0; }
inline unsigned flat_grid(int64_t items) { return grid_for(items, kThreads, int64_t(rt::cuda::sm_count()) * 8); }

// ---- flat maps: out[i] = op(in0[i], in1[i]) --------------------------------------------

// Up to two input arrays (unused ones are null and never read).
template <typename Op>
__global__ void map_kernel(float* out, const float* in0, const float* in1, int64_t n, bool vec, Op op) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n4 = vec ? n / 4 : 0;
  for (int64_t i = tid; i < n4; i += stride) {
    float4 a = in0 ? reinterpret_cast<const float4*>(in0)[i] : float4{};
    float4 b = in1 ? reinterpret_cast<const float4*>(in1)[i] : float4{};
    reinterpret_cast<float4*>(out)[i] = float4{op(a.x, b.x), op(a.y, b.y), op(a.z, b.z), op(a.w, b.w)};
  }
  for (int64_t i = 4 * n4 + tid; i < n; i += stride) out[i] = op(in0 ? in0[i] : 0.f, in1 ? in1[i] : 0.f);
}

template <typename Op>
rt_status launch_map(const char* op_name, float* out, const float* in0, const float* in1, int64_t n, Op op) {
  bool vec = aligned16(out) && (!in0 || aligned16(in0)) && (!in1 || aligned16(in1));
  int64_t items = vec ? n / 4 + n % 4 : n;
  map_kernel<<<flat_grid(items), kThreads, 0, stream()>>>(out, in0, in1, n, vec, op);
  return check_launch(op_name);
}

struct FillOp {
  float value;
  __device__ float operator()(float, float) const { return value; }
};
struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct MulOp {
  __device__ float operator()(float a, float b) const { return a * b; }
};
struct ScaleOp {
  float s;
  __device__ float operator()(float a, float) const { return a * s; }
};
struct AxpyOp {  // (y, x) → y + alpha·x
  float alpha;
  __device__ float operator()(float y, float x) const { return y + alpha * x; }
};
struct ClampOp {  // NaN passes through, as on the CPU
  float lo, hi;
  __device__ float operator()(float x, float) const { return x < lo ? lo : (x > hi ? hi : x); }
};
struct ClampBwdOp {  // (dout, x) → dout where lo < x < hi
  float lo, hi;
  __device__ float operator()(float dout, float x) const { return (x > lo && x < hi) ? dout : 0.0f; }
};

// ---- row-wise ops over (R, C) -----------------------------------------------------------

// out = x + g[r]·f, or out = x where g[r] == 0 (f not read: as the CPU skips the axpy);
// with f null: out = g[r]·x (the df of the backward). g null means 1 everywhere.
// vec: C % 4 == 0 and every pointer 16-byte aligned, so a float4 never straddles rows.
__global__ void gated_rows_kernel(float* out, const float* x, const float* f, const float* g, int64_t R, int64_t C,
                                  bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (vec) {
    const int64_t c4 = C / 4, n4 = R * c4;
    for (int64_t i = tid; i < n4; i += stride) {
      float gate = g ? g[i / c4] : 1.0f;
      float4 xv = reinterpret_cast<const float4*>(x)[i];
      float4 o;
      if (!f) {
        o = float4{gate * xv.x, gate * xv.y, gate * xv.z, gate * xv.w};
      } else if (gate == 0.0f) {
        o = xv;
      } else {
        float4 fv = reinterpret_cast<const float4*>(f)[i];
        o = float4{xv.x + gate * fv.x, xv.y + gate * fv.y, xv.z + gate * fv.z, xv.w + gate * fv.w};
      }
      reinterpret_cast<float4*>(out)[i] = o;
    }
    return;
  }
  const int64_t n = R * C;
  for (int64_t i = tid; i < n; i += stride) {
    float gate = g ? g[i / C] : 1.0f;
    if (!f) out[i] = gate * x[i];
    else out[i] = gate == 0.0f ? x[i] : x[i] + gate * f[i];
  }
}

rt_status launch_gated_rows(const char* op, float* out, const float* x, const float* f, const float* g, int64_t R,
                            int64_t C) {
  bool vec = C % 4 == 0 && aligned16(out) && aligned16(x) && (!f || aligned16(f));
  int64_t items = vec ? R * (C / 4) : R * C;
  gated_rows_kernel<<<flat_grid(items), kThreads, 0, stream()>>>(out, x, f, g, R, C, vec);
  return check_launch(op);
}

// One warp per row: dg[r] = <dout[r], f[r]>, and df[r] = g[r]·dout[r] when df is set
// (dout and f read once for both).
constexpr int kRowsPerBlock = kThreads / 32;
__global__ void gated_bwd_dot_kernel(float* df, float* dg, const float* dout, const float* f, const float* g,
                                     int64_t R, int64_t C, bool vec) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * kRowsPerBlock;
  for (int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5); r < R; r += warps) {
    const float gate = g ? g[r] : 1.0f;
    const float* dr = dout + r * C;
    const float* fr = f + r * C;
    float* dfr = df ? df + r * C : nullptr;
    float s = 0.f;
    int64_t c0 = 0;
    if (vec) {
      const int64_t c4 = C / 4;
      for (int64_t j = lane; j < c4; j += 32) {
        float4 d = reinterpret_cast<const float4*>(dr)[j];
        float4 fv = reinterpret_cast<const float4*>(fr)[j];
        s += d.x * fv.x + d.y * fv.y + d.z * fv.z + d.w * fv.w;
        if (dfr) reinterpret_cast<float4*>(dfr)[j] = float4{gate * d.x, gate * d.y, gate * d.z, gate * d.w};
      }
      c0 = 4 * c4;
    }
    for (int64_t c = c0 + lane; c < C; c += 32) {
      float d = dr[c];
      s += d * fr[c];
      if (dfr) dfr[c] = gate * d;
    }
    s = rt::cuda::warp_sum(s);
    if (lane == 0) dg[r] = s;
  }
}

// x[r, c] += bias[c]; vec: C % 4 == 0 and x, bias aligned (16 bytes f32, 8 bytes bf16).
template <typename B>
__device__ __forceinline__ float4 load4(const B* p, int64_t i4);
template <>
__device__ __forceinline__ float4 load4<float>(const float* p, int64_t i4) {
  return reinterpret_cast<const float4*>(p)[i4];
}
template <>
__device__ __forceinline__ float4 load4<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i4) {
  uint2 bits = reinterpret_cast<const uint2*>(p)[i4];
  return float4{__uint_as_float(bits.x << 16), __uint_as_float(bits.x & 0xffff0000u), __uint_as_float(bits.y << 16),
                __uint_as_float(bits.y & 0xffff0000u)};
}
__device__ __forceinline__ float load1(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load1(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }

template <typename B>
__global__ void add_bias_kernel(float* x, const B* bias, int64_t R, int64_t C, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (vec) {
    const int64_t c4 = C / 4, n4 = R * c4;
    for (int64_t i = tid; i < n4; i += stride) {
      float4 b = load4(bias, i % c4);
      float4 v = reinterpret_cast<float4*>(x)[i];
      reinterpret_cast<float4*>(x)[i] = float4{v.x + b.x, v.y + b.y, v.z + b.z, v.w + b.w};
    }
    return;
  }
  const int64_t n = R * C;
  for (int64_t i = tid; i < n; i += stride) x[i] += load1(bias, i % C);
}

// Column sums of dout over row chunks: partial[chunk, c] = Σ_{r in chunk} dout[r, c].
// Block (32, 8): 32 adjacent columns (coalesced row segments) × 8 row lanes.
constexpr int kBiasCols = 32, kBiasRowLanes = 8;
__global__ void column_partial_kernel(float* partial /*(chunks, C)*/, const float* dout, int64_t R, int64_t C,
                                      int64_t rows_per_chunk) {
  __shared__ float lanes[kBiasRowLanes][kBiasCols + 1];
  const int64_t c = int64_t(blockIdx.x) * kBiasCols + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < R ? r0 + rows_per_chunk : R;
  float s = 0.f;
  if (c < C)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kBiasRowLanes) s += dout[r * C + c];
  lanes[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float t = 0.f;
    for (int j = 0; j < kBiasRowLanes; ++j) t += lanes[j][threadIdx.x];
    partial[chunk * C + c] = t;
  }
}

__global__ void column_finish_kernel(float* dbias, const float* partial, int64_t chunks, int64_t C, int accumulate) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += stride) {
    float s = accumulate ? dbias[c] : 0.f;
    for (int64_t k = 0; k < chunks; ++k) s += partial[k * C + c];
    dbias[c] = s;
  }
}

// ---- sum of squares -----------------------------------------------------------------

__device__ __forceinline__ double block_sum_double(double v) {
  __shared__ double partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  double s = 0.0;
  if (warp == 0) {
    s = lane < int(blockDim.x >> 5) ? partial[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  }
  return s;  // valid in thread 0
}

// partial[block] = Σ x² over the block's grid-stride elements: fp32 per thread, double across.
__global__ void sum_squares_partial_kernel(double* partial, const float* x, int64_t n, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n4 = vec ? n / 4 : 0;
  float s = 0.f;
  for (int64_t i = tid; i < n4; i += stride) {
    float4 v = reinterpret_cast<const float4*>(x)[i];
    s += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  for (int64_t i = 4 * n4 + tid; i < n; i += stride) s += x[i] * x[i];
  double total = block_sum_double(static_cast<double>(s));
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void sum_partials_kernel(double* out, const double* partial, int64_t count) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  double total = block_sum_double(s);
  if (threadIdx.x == 0) *out = total;
}

// ---- casts ----------------------------------------------------------------------------

// Round to nearest even; NaN stays NaN (quiet bit forced): bit-identical to rt::f32_to_bf16.
__device__ __forceinline__ uint32_t f32_to_bf16_bits(float f) {
  uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu)) return ((bits >> 16) | 0x40u) & 0xffffu;
  return (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
}

__global__ void cast_f32_to_bf16_kernel(rt_bf16* out, const float* in, int64_t n, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n4 = vec ? n / 4 : 0;
  for (int64_t i = tid; i < n4; i += stride) {
    float4 v = reinterpret_cast<const float4*>(in)[i];
    uint2 packed{f32_to_bf16_bits(v.x) | (f32_to_bf16_bits(v.y) << 16), f32_to_bf16_bits(v.z) | (f32_to_bf16_bits(v.w) << 16)};
    reinterpret_cast<uint2*>(out)[i] = packed;
  }
  for (int64_t i = 4 * n4 + tid; i < n; i += stride) out[i] = static_cast<rt_bf16>(f32_to_bf16_bits(in[i]));
}

__global__ void cast_bf16_to_f32_kernel(float* out, const rt_bf16* in, int64_t n, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n4 = vec ? n / 4 : 0;
  for (int64_t i = tid; i < n4; i += stride)
    reinterpret_cast<float4*>(out)[i] = load4(reinterpret_cast<const __nv_bfloat16*>(in), i);
  for (int64_t i = 4 * n4 + tid; i < n; i += stride) out[i] = __uint_as_float(uint32_t(in[i]) << 16);
}

}  // namespace

extern "C" {

rt_status rt_cuda_copy_bytes(void* out, const void* in, int64_t bytes) {
  RT_CUDA_OP("copy");
  RT_REQUIRE_NONNEG(bytes, "copy", "bytes");
  if (bytes == 0) return RT_OK;
  RT_REQUIRE_PTR(out, "copy", "out");
  RT_REQUIRE_PTR(in, "copy", "in");
  RT_CUDA_TRY("copy", cudaMemcpyAsync(out, in, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, stream()));
  return RT_OK;
}

rt_status rt_cuda_fill_f32(float* out, float value, int64_t n) {
  RT_CUDA_OP("fill");
  RT_REQUIRE_NONNEG(n, "fill", "n");
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(out, "fill", "out");
  return launch_map("fill", out, nullptr, nullptr, n, FillOp{value});
}

rt_status rt_cuda_add_f32(float* out, const float* a, const float* b, int64_t n) {
  RT_CUDA_OP("add");
  RT_REQUIRE_NONNEG(n, "add", "n");
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(out, "add", "out");
  RT_REQUIRE_PTR(a, "add", "a");
  RT_REQUIRE_PTR(b, "add", "b");
  return launch_map("add", out, a, b, n, AddOp{});
}

rt_status rt_cuda_mul_f32(float* out, const float* a, const float* b, int64_t n) {
  RT_CUDA_OP("mul");
  RT_REQUIRE_NONNEG(n, "mul", "n");
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(out, "mul", "out");
  RT_REQUIRE_PTR(a, "mul", "a");
  RT_REQUIRE_PTR(b, "mul", "b");
  return launch_map("mul", out, a, b, n, MulOp{});
}

rt_status rt_cuda_scale_f32(float* out, const float* a, float s, int64_t n) {
  RT_CUDA_OP("scale");
  RT_REQUIRE_NONNEG(n, "scale", "n");
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(out, "scale", "out");
  RT_REQUIRE_PTR(a, "scale", "a");
  return launch_map("scale", out, a, nullptr, n, ScaleOp{s});
}

rt_status rt_cuda_axpy_f32(float* y, const float* x, float alpha, int64_t n) {
  RT_CUDA_OP("axpy");
  RT_REQUIRE_NONNEG(n, "axpy", "n");
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(y, "axpy", "y");
  RT_REQUIRE_PTR(x, "axpy", "x");
  return launch_map("axpy", y, y, x, n, AxpyOp{alpha});
}

rt_status rt_cuda_gated_residual_fwd(float* out, const float* x, const float* f, const float* g, int64_t R,
                                     int64_t C) {
  const char* op = "gated_residual_fwd";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(R, op, "R");
  RT_REQUIRE_NONNEG(C, op, "C");
  if (R == 0 || C == 0) return RT_OK;
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(x, op, "x");
  RT_REQUIRE_PTR(f, op, "f");
  return launch_gated_rows(op, out, x, f, g, R, C);
}

rt_status rt_cuda_gated_residual_bwd(float* df, float* dg, const float* dout, const float* f, const float* g,
                                     int64_t R, int64_t C) {
  const char* op = "gated_residual_bwd";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(R, op, "R");
  RT_REQUIRE_NONNEG(C, op, "C");
  if (R == 0 || (!df && !dg)) return RT_OK;
  if (dg && C == 0) {  // empty rows: every dot product is 0
    RT_CUDA_TRY(op, cudaMemsetAsync(dg, 0, static_cast<size_t>(R) * sizeof(float), stream()));
    return RT_OK;
  }
  if (C == 0) return RT_OK;
  RT_REQUIRE_PTR(dout, op, "dout");
  if (!dg) return launch_gated_rows(op, df, dout, nullptr, g, R, C);
  RT_REQUIRE_PTR(f, op, "f");
  bool vec = C % 4 == 0 && aligned16(dout) && aligned16(f) && (!df || aligned16(df));
  unsigned grid = grid_for(R, kRowsPerBlock, int64_t(rt::cuda::sm_count()) * 8);
  gated_bwd_dot_kernel<<<grid, kThreads, 0, stream()>>>(df, dg, dout, f, g, R, C, vec);
  return check_launch(op);
}

rt_status rt_cuda_add_bias_fwd(float* x, const void* bias, rt_dtype bias_dtype, int64_t R, int64_t C) {
  const char* op = "add_bias_fwd";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(R, op, "R");
  RT_REQUIRE_NONNEG(C, op, "C");
  RT_REQUIRE_DTYPE_FLOAT(bias_dtype, op, "bias");
  if (R == 0 || C == 0) return RT_OK;
  RT_REQUIRE_PTR(x, op, "x");
  RT_REQUIRE_PTR(bias, op, "bias");
  const bool bf16 = bias_dtype == RT_BF16;
  bool vec = C % 4 == 0 && aligned16(x) && (bf16 ? aligned8(bias) : aligned16(bias));
  unsigned grid = flat_grid(vec ? R * (C / 4) : R * C);
  if (bf16)
    add_bias_kernel<<<grid, kThreads, 0, stream()>>>(x, static_cast<const __nv_bfloat16*>(bias), R, C, vec);
  else
    add_bias_kernel<<<grid, kThreads, 0, stream()>>>(x, static_cast<const float*>(bias), R, C, vec);
  return check_launch(op);
}

rt_status rt_cuda_add_bias_bwd(float* dbias, const float* dout, int64_t R, int64_t C, int accumulate) {
  const char* op = "add_bias_bwd";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(R, op, "R");
  RT_REQUIRE_NONNEG(C, op, "C");
  if (C == 0) return RT_OK;
  RT_REQUIRE_PTR(dbias, op, "dbias");
  if (R == 0) {
    if (!accumulate) RT_CUDA_TRY(op, cudaMemsetAsync(dbias, 0, static_cast<size_t>(C) * sizeof(float), stream()));
    return RT_OK;
  }
  RT_REQUIRE_PTR(dout, op, "dout");
  // Enough (column block × row chunk) blocks to fill the machine, chunks of >= 64 rows.
  const int64_t col_blocks = (C + kBiasCols - 1) / kBiasCols;
  const int64_t want_blocks = int64_t(rt::cuda::sm_count()) * 8;
  int64_t chunks = (want_blocks + col_blocks - 1) / col_blocks;
  chunks = std::min<int64_t>(chunks, (R + 63) / 64);
  chunks = std::max<int64_t>(1, std::min<int64_t>(chunks, 65535));
  const int64_t rows_per_chunk = (R + chunks - 1) / chunks;
  chunks = (R + rows_per_chunk - 1) / rows_per_chunk;
  rt::cuda::DeviceScratch partial(static_cast<size_t>(chunks * C) * sizeof(float));
  if (!partial.ok()) return RT_ERR_NOMEM;
  dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks));
  column_partial_kernel<<<grid, dim3(kBiasCols, kBiasRowLanes), 0, stream()>>>(partial.as<float>(), dout, R, C,
                                                                                 rows_per_chunk);
  RT_TRY(check_launch(op));
  column_finish_kernel<<<grid_for(C, kThreads), kThreads, 0, stream()>>>(dbias, partial.as<float>(), chunks, C,
                                                                         accumulate);
  return check_launch(op);
}

rt_status rt_cuda_clamp_fwd(float* out, const float* x, float lo, float hi, int64_t n) {
  RT_CUDA_OP("clamp_fwd");
  RT_REQUIRE_NONNEG(n, "clamp_fwd", "n");
  RT_REQUIRE(lo <= hi, RT_ERR_ARG, "clamp_fwd: expected lo <= hi, received lo %g, hi %g", lo, hi);
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(out, "clamp_fwd", "out");
  RT_REQUIRE_PTR(x, "clamp_fwd", "x");
  return launch_map("clamp_fwd", out, x, nullptr, n, ClampOp{lo, hi});
}

rt_status rt_cuda_clamp_bwd(float* dx, const float* dout, const float* x, float lo, float hi, int64_t n) {
  RT_CUDA_OP("clamp_bwd");
  RT_REQUIRE_NONNEG(n, "clamp_bwd", "n");
  RT_REQUIRE(lo <= hi, RT_ERR_ARG, "clamp_bwd: expected lo <= hi, received lo %g, hi %g", lo, hi);
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(dx, "clamp_bwd", "dx");
  RT_REQUIRE_PTR(dout, "clamp_bwd", "dout");
  RT_REQUIRE_PTR(x, "clamp_bwd", "x");
  return launch_map("clamp_bwd", dx, dout, x, n, ClampBwdOp{lo, hi});
}

rt_status rt_cuda_sum_squares_f32(double* out, const float* x, int64_t n) {
  const char* op = "sum_squares";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(n, op, "n");
  RT_REQUIRE_PTR(out, op, "out");
  if (n == 0) {
    *out = 0.0;
    return RT_OK;
  }
  RT_REQUIRE_PTR(x, op, "x");
  const bool vec = aligned16(x);
  const unsigned blocks = flat_grid(vec ? n / 4 + n % 4 : n);
  // [0]: the total, [1 ..]: one partial per block.
  rt::cuda::DeviceScratch scratch((size_t(blocks) + 1) * sizeof(double));
  if (!scratch.ok()) return RT_ERR_NOMEM;
  double* total = scratch.as<double>();
  sum_squares_partial_kernel<<<blocks, kThreads, 0, stream()>>>(total + 1, x, n, vec);
  RT_TRY(check_launch(op));
  sum_partials_kernel<<<1, 1024, 0, stream()>>>(total, total + 1, blocks);
  RT_TRY(check_launch(op));
  RT_CUDA_TRY(op, cudaMemcpyAsync(out, total, sizeof(double), cudaMemcpyDeviceToHost, stream()));
  RT_CUDA_TRY(op, cudaStreamSynchronize(stream()));
  return RT_OK;
}

rt_status rt_cuda_cast_f32_to_bf16(rt_bf16* out, const float* in, int64_t n) {
  const char* op = "cast_f32_to_bf16";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(n, op, "n");
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(in, op, "in");
  const bool vec = aligned16(in) && aligned8(out);
  cast_f32_to_bf16_kernel<<<flat_grid(vec ? n / 4 + n % 4 : n), kThreads, 0, stream()>>>(out, in, n, vec);
  return check_launch(op);
}

rt_status rt_cuda_cast_bf16_to_f32(float* out, const rt_bf16* in, int64_t n) {
  const char* op = "cast_bf16_to_f32";
  RT_CUDA_OP(op);
  RT_REQUIRE_NONNEG(n, op, "n");
  if (n == 0) return RT_OK;
  RT_REQUIRE_PTR(out, op, "out");
  RT_REQUIRE_PTR(in, op, "in");
  const bool vec = aligned8(in) && aligned16(out);
  cast_bf16_to_f32_kernel<<<flat_grid(vec ? n / 4 + n % 4 : n), kThreads, 0, stream()>>>(out, in, n, vec);
  return check_launch(op);
}

}  // extern "C"
