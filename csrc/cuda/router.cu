// MindSkip router on the device: score = sigmoid(w · h[t]), gate = score >= threshold,
// and the ascending list of executed rows with its count — in ONE pass over h.
//
// Forward (score_compact_kernel): each block takes the next tile of rows from an atomic
// tile counter (so every earlier tile is already running), scores its rows (~128 KiB of
// h per tile) with `width` lanes per row (a warp for rows of >= 512 floats, fewer for
// shorter rows; float4 loads when aligned), counts its executed rows, and finds its output offset by a decoupled look-back over the earlier
// tiles' published counts (aggregate / inclusive prefix status words). It then writes its
// executed rows at that offset in ascending order; the last tile writes the total, which
// the host copies back (the only host round-trip). Same order as the CPU's compaction.
//
// Sequence-pooled forward: valid-token counts per sequence (a sequence with none is an
// argument error, detected on the device and checked before anything is written), then
// pooled = mean over valid rows by fixed (sequence, time-chunk) column partials summed in
// chunk order, then the same scoring / compaction kernel on the pooled rows.
//
// Backward (straight-through): dz = dscore · s · (1 − s); dh[t] += dz[t] w (row kernel);
// dw += Σ_t dz[t] h[t] by fixed row-chunk partials summed in chunk order: deterministic.
//
// Napkin math (T = 16384, C = 4096): the forward reads 256 MiB of h once (~60 us at
// 4.5 TB/s); the look-back touches 2048 status words; the backward reads h once (dw) and
// reads + writes dh once.
#include <climits>

#include "cuda_common.cuh"

namespace rt {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;
// Look-back status word: flag in the top two bits, executed-row count below.
constexpr unsigned long long kFlagAggregate = 1ull << 62;
constexpr unsigned long long kFlagPrefix = 2ull << 62;
constexpr unsigned long long kValueMask = (1ull << 62) - 1;



__device__ __forceinline__ long long warp_sum_ll(long long v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}


rt_status scratch_ok(const DeviceScratch& s, const char* op) {
  return s.ok() ? RT_OK
                : rt_fail(RT_ERR_NOMEM, "%s: could not allocate %lld bytes of device scratch", op, (long long)s.bytes);
}

// Lanes scoring one row: a warp for rows of >= 128 float4, fewer (down to 4) for shorter
// rows so each lane still has >= 4 loads in flight.
int lanes_per_row(int64_t C) {
  const int64_t n4 = (C + 3) / 4;
  int width = 32;
  while (width > 4 && width * 4 > n4) width /= 2;
  return width;
}


// ---------------------------------------------------------------------------------------
// Decoupled look-back: warp 0 of the tile's block publishes its count, then sums the
// counts of the earlier tiles back to the nearest inclusive prefix. Returns the tile's
// exclusive prefix (on every lane). Tile ids come from an atomic counter, so every earlier
// tile is already resident and publishes its aggregate without waiting: no deadlock.
__device__ long long tile_exclusive_prefix(unsigned long long* status, long long tile, unsigned long long count,
                                           int lane) {
  volatile unsigned long long* vs = status;
  if (tile == 0) {
    if (lane == 0) vs[0] = kFlagPrefix | count;
    return 0;
  }
  if (lane == 0) vs[tile] = kFlagAggregate | count;
  long long exclusive = 0;
  long long end = tile;  // this round inspects tiles [end - 32, end)
  while (true) {
    const long long j = end - 1 - lane;
    unsigned long long s = kFlagPrefix;  // before tile 0: a prefix of 0
    if (j >= 0) s = vs[j];
    if (__any_sync(kFullMask, (s >> 62) == 0)) continue;       // a predecessor not published yet
    const unsigned prefix_lanes = __ballot_sync(kFullMask, (s >> 62) == 2);
    const long long v = static_cast<long long>(s & kValueMask);
    if (prefix_lanes) {
      const int first = __ffs(prefix_lanes) - 1;  // nearest predecessor holding an inclusive prefix
      exclusive += warp_sum_ll(lane <= first ? v : 0);
      break;
    }
    exclusive += warp_sum_ll(v);
    end -= 32;
  }
  if (lane == 0) vs[tile] = kFlagPrefix | static_cast<unsigned long long>(exclusive + static_cast<long long>(count));
  return exclusive;
}

// state: [0] total executed, [1] tile counter, [2..] look-back status per tile (zeroed).
// A tile is rows_per_group rows for each of the kThreads / width row groups (<= 256
// rows); grid = number of tiles exactly.
constexpr int kMaxTileRows = 256;
constexpr int64_t kTileBytes = int64_t(128) << 10;  // of h per tile: amortises the look-back

template <int W>
__global__ void __launch_bounds__(kThreads)
    score_compact_kernel(float* __restrict__ score /*(rows)*/, float* __restrict__ gate /*(rows)*/,
                         int32_t* __restrict__ exec_idx /*(rows)*/, unsigned long long* __restrict__ state,
                         const float* __restrict__ h /*(rows,C)*/, const float* __restrict__ w /*(C)*/,
                         int64_t rows, int64_t C, float threshold, int width, int rows_per_group) {
  __shared__ unsigned long long tile_sh;
  __shared__ int on_sh[kMaxTileRows];
  if (threadIdx.x == 0) tile_sh = atomicAdd(&state[1], 1ull);
  __syncthreads();
  const long long tile = static_cast<long long>(tile_sh);
  const int groups = kThreads / width, rows_per_tile = groups * rows_per_group;
  const int group = threadIdx.x / width, sub = threadIdx.x % width;
  const int64_t row0 = tile * rows_per_tile;
  const int64_t nv = C / W;

  for (int j = 0; j < rows_per_group; ++j) {
    const int local = j * groups + group;
    const int64_t row = row0 + local;
    float acc = 0.f;
    if (row < rows) {
      const float* hr = h + row * C;
      float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
      int64_t i = sub;
      // Four independent loads in flight per lane.
      for (; i + 3 * width < nv; i += 4 * width) {
        float x0[W], x1[W], x2[W], x3[W], w0[W], w1[W], w2[W], w3[W];
        load_vec<W>(x0, hr + i * W);
        load_vec<W>(x1, hr + (i + width) * W);
        load_vec<W>(x2, hr + (i + 2 * width) * W);
        load_vec<W>(x3, hr + (i + 3 * width) * W);
        load_vec<W>(w0, w + i * W);
        load_vec<W>(w1, w + (i + width) * W);
        load_vec<W>(w2, w + (i + 2 * width) * W);
        load_vec<W>(w3, w + (i + 3 * width) * W);
#pragma unroll
        for (int k = 0; k < W; ++k) {
          a0 = fmaf(x0[k], w0[k], a0);
          a1 = fmaf(x1[k], w1[k], a1);
          a2 = fmaf(x2[k], w2[k], a2);
          a3 = fmaf(x3[k], w3[k], a3);
        }
      }
      for (; i < nv; i += width) {
        float x0[W], w0[W];
        load_vec<W>(x0, hr + i * W);
        load_vec<W>(w0, w + i * W);
#pragma unroll
        for (int k = 0; k < W; ++k) a0 = fmaf(x0[k], w0[k], a0);
      }
      acc = (a0 + a1) + (a2 + a3);
    }
    for (int o = width / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(kFullMask, acc, o);
    if (sub == 0) {
      int on = 0;
      if (row < rows) {
        const float s = sigmoid(acc);
        on = s >= threshold;
        score[row] = s;
        gate[row] = on ? 1.f : 0.f;
      }
      on_sh[local] = on;
    }
  }
  __syncthreads();
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    const unsigned below = (1u << lane) - 1u;
    unsigned count = 0;
    for (int c = 0; c < rows_per_tile; c += 32)
      count += __popc(__ballot_sync(kFullMask, c + lane < rows_per_tile && on_sh[c + lane]));
    const long long excl = tile_exclusive_prefix(state + 2, tile, count, lane);
    long long offset = excl;
    for (int c = 0; c < rows_per_tile; c += 32) {
      const bool on = c + lane < rows_per_tile && on_sh[c + lane];
      const unsigned m = __ballot_sync(kFullMask, on);
      if (on) exec_idx[offset + __popc(m & below)] = static_cast<int32_t>(row0 + c + lane);
      offset += __popc(m);
    }
    if (lane == 0 && tile == static_cast<long long>(gridDim.x) - 1) state[0] = static_cast<unsigned long long>(offset);
  }
}

// Scores `rows` rows of h and compacts the executed ones; copies the count to the host.
rt_status score_and_compact(float* score, float* gate, int32_t* exec_idx, int64_t* exec_count, const float* h,
                            const float* w, int64_t rows, int64_t C, float threshold, const char* op) {
  const int width = lanes_per_row(C), groups = kThreads / width;
  // ~kTileBytes of h per tile, but keep >= 16 tiles per SM to fill the device.
  int64_t rpg = kTileBytes / (groups * (C > 0 ? C : 1) * static_cast<int64_t>(sizeof(float)));
  if (rpg > kMaxTileRows / groups) rpg = kMaxTileRows / groups;
  if (rpg < 1) rpg = 1;
  const int64_t min_tiles = static_cast<int64_t>(sm_count()) * 16;
  while (rpg > 1 && (rows + groups * rpg - 1) / (groups * rpg) < min_tiles) rpg /= 2;
  const int64_t rows_per_tile = groups * rpg;
  const int64_t n_tiles = (rows + rows_per_tile - 1) / rows_per_tile;
  DeviceScratch state(sizeof(unsigned long long) * static_cast<size_t>(2 + n_tiles));
  RT_TRY(scratch_ok(state, op));
  RT_CUDA_TRY(op, cudaMemsetAsync(state.ptr, 0, state.bytes, stream()));
  auto* st = state.as<unsigned long long>();
  const unsigned grid = static_cast<unsigned>(n_tiles);
  const int rows_per_group = static_cast<int>(rpg);
  if (C % 4 == 0 && aligned16(h) && aligned16(w))
    score_compact_kernel<4><<<grid, kThreads, 0, stream()>>>(score, gate, exec_idx, st, h, w, rows, C, threshold,
                                                            width, rows_per_group);
  else
    score_compact_kernel<1><<<grid, kThreads, 0, stream()>>>(score, gate, exec_idx, st, h, w, rows, C, threshold,
                                                            width, rows_per_group);
  RT_TRY(check_launch(op));
  unsigned long long total = 0;
  RT_CUDA_TRY(op, cudaMemcpyAsync(&total, st, sizeof total, cudaMemcpyDeviceToHost, stream()));
  RT_CUDA_TRY(op, cudaStreamSynchronize(stream()));
  *exec_count = static_cast<int64_t>(total);
  return RT_OK;
}

// ---------------------------------------------------------------------------------------
// Row coefficients: operator()(global row, &a) says whether the row takes part and with
// which factor. They mirror the CPU's skips exactly (dz == 0 rows, masked tokens).
struct TokenDz {  // a = dz[t]; rows with dz == 0 are skipped (as the CPU does)
  const float* dscore;
  const float* score;
  __device__ bool operator()(int64_t r, float* a) const {
    *a = dscore[r] * score[r] * (1.f - score[r]);
    return *a != 0.f;
  }
};
struct SeqDz {  // a = dz[b] for pooled row b; every row (the CPU's dw axpy never skips)
  const float* dscore;
  const float* score;
  __device__ bool operator()(int64_t b, float* a) const {
    *a = dscore[b] * score[b] * (1.f - score[b]);
    return true;
  }
};
struct SeqDh {  // a = dz[b] / n_b on valid tokens with a != 0
  const float* dscore;
  const float* score;
  const int32_t* mask;      // (B,T) nullable
  const int64_t* n_valid;   // (B); nullptr: T
  int64_t T;
  __device__ bool operator()(int64_t r, float* a) const {
    const int64_t b = r / T;
    const float n = static_cast<float>(n_valid ? n_valid[b] : T);
    *a = dscore[b] * score[b] * (1.f - score[b]) / n;
    return (!mask || mask[r] != 0) && *a != 0.f;
  }
};
struct ValidToken {  // pooling: a = 1 on valid tokens
  const int32_t* mask;  // nullable
  __device__ bool operator()(int64_t r, float* a) const {
    *a = 1.f;
    return !mask || mask[r] != 0;
  }
};

// y[r] += a_r · x for every row r the coefficient accepts.
template <int W, class Coef>
__global__ void row_axpy_kernel(float* __restrict__ y /*(rows,C)*/, const float* __restrict__ x /*(C)*/, Coef coef,
                                int64_t rows, int64_t C) {
  const int64_t nv = C / W;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    float a;
    if (!coef(r, &a)) continue;
    float* yr = y + r * C;
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
      float yv[W], xv[W];
      load_vec<W>(yv, yr + v * W);
      load_vec<W>(xv, x + v * W);
#pragma unroll
      for (int k = 0; k < W; ++k) yv[k] = fmaf(a, xv[k], yv[k]);
      store_vec<W>(yr + v * W, yv);
    }
  }
}

template <class Coef>
rt_status launch_row_axpy(float* y, const float* x, Coef coef, int64_t rows, int64_t C, const char* op) {
  const bool vec = C % 4 == 0 && aligned16(y) && aligned16(x);
  const RowLaunch l = row_launch(rows, vec ? C / 4 : C);
  if (vec)
    row_axpy_kernel<4><<<l.grid, l.block, 0, stream()>>>(y, x, coef, rows, C);
  else
    row_axpy_kernel<1><<<l.grid, l.block, 0, stream()>>>(y, x, coef, rows, C);
  return check_launch(op);
}

// Column partials: h is n_seg segments of seg_rows rows; block (column block, chunk k)
// sums a_r · h[r] over the accepted rows of its chunk (seg = k / n_tc, rows
// [tc·chunk_rows, …) of the segment) into partial[k]. Rows are spread over threadIdx.y
// and the y-partials summed in order: deterministic.
template <int W, class Coef>
__global__ void __launch_bounds__(kThreads)
    column_partial_kernel(float* __restrict__ partial /*(n_seg·n_tc, C)*/, const float* __restrict__ h, Coef coef,
                          int64_t seg_rows, int64_t n_seg, int64_t n_tc, int64_t chunk_rows, int64_t C) {
  __shared__ float red[kThreads * W];
  const int tx = threadIdx.x, ty = threadIdx.y, bx = blockDim.x, by = blockDim.y;
  const int64_t nv = C / W;
  const int64_t v = static_cast<int64_t>(blockIdx.x) * bx + tx;
  for (int64_t k = blockIdx.y; k < n_seg * n_tc; k += gridDim.y) {
    const int64_t seg = k / n_tc, tc = k % n_tc;
    const int64_t t0 = tc * chunk_rows, t1 = t0 + chunk_rows < seg_rows ? t0 + chunk_rows : seg_rows;
    float acc[W];
#pragma unroll
    for (int q = 0; q < W; ++q) acc[q] = 0.f;
    if (v < nv) {
#pragma unroll 4
      for (int64_t t = t0 + ty; t < t1; t += by) {
        const int64_t r = seg * seg_rows + t;
        float a;
        if (!coef(r, &a)) continue;
        float x[W];
        load_vec<W>(x, h + r * C + v * W);
#pragma unroll
        for (int q = 0; q < W; ++q) acc[q] = fmaf(a, x[q], acc[q]);
      }
    }
#pragma unroll
    for (int q = 0; q < W; ++q) red[(ty * bx + tx) * W + q] = acc[q];
    __syncthreads();
    if (ty == 0 && v < nv) {
      for (int yy = 1; yy < by; ++yy)
#pragma unroll
        for (int q = 0; q < W; ++q) acc[q] += red[(yy * bx + tx) * W + q];
      store_vec<W>(partial + k * C + v * W, acc);
    }
    __syncthreads();
  }
}

// out[seg, c] = mean: (Σ_tc partial[seg, tc, c]) · (1 / n_seg_rows), or accumulate:
// out[seg, c] += Σ_tc partial[seg, tc, c] — in chunk order either way.
__global__ void finish_columns_kernel(float* __restrict__ out /*(n_seg,C)*/, const float* __restrict__ partial,
                                      const int64_t* __restrict__ n_valid /*(n_seg) nullable*/, int64_t n_seg,
                                      int64_t n_tc, int64_t C, int64_t seg_rows, bool mean) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_seg * C;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t seg = i / C, c = i % C;
    const float* p = partial + seg * n_tc * C + c;
    if (mean) {
      float s = p[0];
      for (int64_t tc = 1; tc < n_tc; ++tc) s += p[tc * C];
      const float n = static_cast<float>(n_valid ? n_valid[seg] : seg_rows);
      out[i] = s * (1.f / n);
    } else {
      float s = out[i];
      for (int64_t tc = 0; tc < n_tc; ++tc) s += p[tc * C];
      out[i] = s;
    }
  }
}

// Column sums of n_seg segments of seg_rows rows of h, weighted by coef: pooled means
// (mean = true, into out) or dw += (mean = false).
template <class Coef>
rt_status column_sums(float* out, const float* h, Coef coef, const int64_t* n_valid, int64_t seg_rows, int64_t n_seg,
                      int64_t C, bool mean, const char* op) {
  const bool vec = C % 4 == 0 && aligned16(h);
  const int64_t nv = vec ? C / 4 : C;
  int bx = 1;
  while (bx < nv && bx < kThreads) bx <<= 1;
  const int by = kThreads / bx;
  const int64_t n_cb = (nv + bx - 1) / bx;
  // Enough (column block, chunk) blocks to fill the device; chunks of >= by rows.
  const int64_t target = static_cast<int64_t>(sm_count()) * 8;
  int64_t n_tc = (target + n_cb * n_seg - 1) / (n_cb * n_seg);
  const int64_t max_tc = (seg_rows + by - 1) / by;
  if (n_tc > max_tc) n_tc = max_tc;
  if (n_tc < 1) n_tc = 1;
  const int64_t chunk_rows = (seg_rows + n_tc - 1) / n_tc;
  n_tc = chunk_rows > 0 ? (seg_rows + chunk_rows - 1) / chunk_rows : 1;
  if (n_tc < 1) n_tc = 1;
  DeviceScratch partial(sizeof(float) * static_cast<size_t>(n_seg * n_tc * C));
  RT_TRY(scratch_ok(partial, op));
  const int64_t gy = n_seg * n_tc < 65535 ? n_seg * n_tc : 65535;
  const dim3 grid(static_cast<unsigned>(n_cb), static_cast<unsigned>(gy));
  float* p = partial.as<float>();
  if (vec)
    column_partial_kernel<4><<<grid, dim3(bx, by), 0, stream()>>>(p, h, coef, seg_rows, n_seg, n_tc, chunk_rows, C);
  else
    column_partial_kernel<1><<<grid, dim3(bx, by), 0, stream()>>>(p, h, coef, seg_rows, n_seg, n_tc, chunk_rows, C);
  RT_TRY(check_launch(op));
  finish_columns_kernel<<<grid_for(n_seg * C, kThreads), kThreads, 0, stream()>>>(out, p, n_valid, n_seg, n_tc, C,
                                                                                 seg_rows, mean);
  return check_launch(op);
}

// ---------------------------------------------------------------------------------------
__device__ __forceinline__ long long block_sum_ll(long long v) {
  __shared__ long long partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum_ll(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  long long s = 0;
  for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) s += partial[i];
  return s;
}

// n_valid[b] = number of t with mask[b,t] != 0; *first_empty = min b with none.
__global__ void count_valid_kernel(int64_t* __restrict__ n_valid, unsigned long long* __restrict__ first_empty,
                                   const int32_t* __restrict__ mask, int64_t B, int64_t T) {
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    long long n = 0;
    for (int64_t t = threadIdx.x; t < T; t += blockDim.x) n += mask[b * T + t] != 0;
    n = block_sum_ll(n);
    if (threadIdx.x == 0) {
      n_valid[b] = n;
      if (n == 0) atomicMin(first_empty, static_cast<unsigned long long>(b));
    }
  }
}

// Valid-token counts into n_valid (B) when there is a mask (a NULL mask: every sequence
// has T); a sequence with none is RT_ERR_ARG with the CPU's message. Waits for the device.
rt_status count_valid(int64_t* n_valid, const int32_t* mask, int64_t B, int64_t T, const char* op) {
  if (!mask) {
    if (T == 0)
      return rt_fail(RT_ERR_ARG, "%s: sequence %lld has no valid token (mask is all zero or T = 0)", op, 0LL);
    return RT_OK;
  }
  DeviceScratch flag(sizeof(unsigned long long));
  RT_TRY(scratch_ok(flag, op));
  RT_CUDA_TRY(op, cudaMemsetAsync(flag.ptr, 0xff, flag.bytes, stream()));
  count_valid_kernel<<<grid_for(B, 1, 65535), kThreads, 0, stream()>>>(n_valid, flag.as<unsigned long long>(), mask,
                                                                       B, T);
  RT_TRY(check_launch(op));
  unsigned long long first_empty = 0;
  RT_CUDA_TRY(op, cudaMemcpyAsync(&first_empty, flag.ptr, sizeof first_empty, cudaMemcpyDeviceToHost, stream()));
  RT_CUDA_TRY(op, cudaStreamSynchronize(stream()));
  if (first_empty != ~0ull)
    return rt_fail(RT_ERR_ARG, "%s: sequence %lld has no valid token (mask is all zero or T = 0)", op,
                   static_cast<long long>(first_empty));
  return RT_OK;
}

}  // namespace
}  // namespace cuda
}  // namespace rt

using namespace rt::cuda;

extern "C" {

rt_status rt_cuda_router_token_fwd(float* score, float* gate, int32_t* exec_idx, int64_t* exec_count, const float* h,
                                   const float* w, int64_t T, int64_t C, float threshold) {
  const char* op = "router_token_fwd";
  RT_CUDA_OP(op);
  if (T < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected T >= 0, received %lld", op, (long long)T);
  if (C < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected C >= 0, received %lld", op, (long long)C);
  if (T > INT32_MAX)
    return rt_fail(RT_ERR_SHAPE, "%s: expected T <= 2^31 - 1 (int32 row indices), received %lld", op, (long long)T);
  if (!exec_count) return rt_fail(RT_ERR_ARG, "%s: expected a buffer for '%s', received NULL", op, "exec_count");
  *exec_count = 0;
  if (T == 0) return RT_OK;
  return score_and_compact(score, gate, exec_idx, exec_count, h, w, T, C, threshold, op);
}

rt_status rt_cuda_router_token_bwd(float* dw, float* dh, const float* dscore, const float* score, const float* h,
                                   const float* w, int64_t T, int64_t C) {
  const char* op = "router_token_bwd";
  RT_CUDA_OP(op);
  if (T < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected T >= 0, received %lld", op, (long long)T);
  if (C < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected C >= 0, received %lld", op, (long long)C);
  if (T == 0 || C == 0 || (!dw && !dh)) return RT_OK;
  const TokenDz dz{dscore, score};
  if (dh) RT_TRY(launch_row_axpy(dh, w, dz, T, C, op));
  if (dw) RT_TRY(column_sums(dw, h, dz, nullptr, T, 1, C, false, op));
  return RT_OK;
}

rt_status rt_cuda_router_seq_fwd(float* pooled, float* score, float* gate, int32_t* exec_idx, int64_t* exec_count,
                                 const float* h, const int32_t* mask, const float* w, int64_t B, int64_t T, int64_t C,
                                 float threshold) {
  const char* op = "router_seq_fwd";
  RT_CUDA_OP(op);
  if (B < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected B >= 0, received %lld", op, (long long)B);
  if (T < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected T >= 0, received %lld", op, (long long)T);
  if (C < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected C >= 0, received %lld", op, (long long)C);
  if (B > INT32_MAX)
    return rt_fail(RT_ERR_SHAPE, "%s: expected B <= 2^31 - 1 (int32 indices), received %lld", op, (long long)B);
  if (!exec_count) return rt_fail(RT_ERR_ARG, "%s: expected a buffer for '%s', received NULL", op, "exec_count");
  *exec_count = 0;
  if (B == 0) return RT_OK;
  DeviceScratch valid_s(mask ? sizeof(int64_t) * static_cast<size_t>(B) : 0);
  RT_TRY(scratch_ok(valid_s, op));
  int64_t* n_valid = mask ? valid_s.as<int64_t>() : nullptr;  // (B); NULL: every sequence has T
  RT_TRY(count_valid(n_valid, mask, B, T, op));
  if (C > 0) RT_TRY(column_sums(pooled, h, ValidToken{mask}, n_valid, T, B, C, true, op));
  return score_and_compact(score, gate, exec_idx, exec_count, pooled, w, B, C, threshold, op);
}

rt_status rt_cuda_router_seq_bwd(float* dw, float* dh, const float* dscore, const float* score, const float* pooled,
                                 const int32_t* mask, const float* w, int64_t B, int64_t T, int64_t C) {
  const char* op = "router_seq_bwd";
  RT_CUDA_OP(op);
  if (B < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected B >= 0, received %lld", op, (long long)B);
  if (T < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected T >= 0, received %lld", op, (long long)T);
  if (C < 0) return rt_fail(RT_ERR_SHAPE, "%s: expected C >= 0, received %lld", op, (long long)C);
  if (B == 0 || C == 0 || (!dw && !dh)) return RT_OK;
  DeviceScratch valid_s(mask ? sizeof(int64_t) * static_cast<size_t>(B) : 0);
  RT_TRY(scratch_ok(valid_s, op));
  int64_t* n_valid = mask ? valid_s.as<int64_t>() : nullptr;  // (B); NULL: every sequence has T
  RT_TRY(count_valid(n_valid, mask, B, T, op));
  if (dw) RT_TRY(column_sums(dw, pooled, SeqDz{dscore, score}, nullptr, B, 1, C, false, op));
  if (dh) RT_TRY(launch_row_axpy(dh, w, SeqDh{dscore, score, mask, n_valid, T}, B * T, C, op));
  return RT_OK;
}

}  // extern "C"
