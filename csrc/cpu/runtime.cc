// Runtime services shared by every CPU op: error messages, counted aligned memory,
// dtype names, and the BLAS/SIMD descriptions reported by backendInfo().
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "gemm_bf16.h"
#include "rt/common.h"

extern "C" char* openblas_get_config(void);

namespace {
thread_local char g_last_error[1024] = "";
std::atomic<int64_t> g_allocated{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_live{0};
}  // namespace

extern "C" {

const char* rt_last_error(void) { return g_last_error; }

rt_status rt_fail(rt_status status, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  vsnprintf(g_last_error, sizeof(g_last_error), fmt, args);
  va_end(args);
  return status;
}

const char* rt_status_name(rt_status status) {
  switch (status) {
    case RT_OK: return "RT_OK";
    case RT_ERR_ARG: return "RT_ERR_ARG";
    case RT_ERR_SHAPE: return "RT_ERR_SHAPE";
    case RT_ERR_DTYPE: return "RT_ERR_DTYPE";
    case RT_ERR_INDEX: return "RT_ERR_INDEX";
    case RT_ERR_NOMEM: return "RT_ERR_NOMEM";
    case RT_ERR_UNAVAILABLE: return "RT_ERR_UNAVAILABLE";
    default: return "RT_ERR_INTERNAL";
  }
}

size_t rt_dtype_size(rt_dtype dtype) {
  switch (dtype) {
    case RT_F32: return 4;
    case RT_BF16: return 2;
    case RT_I32: return 4;
  }
  return 0;
}

const char* rt_dtype_name(rt_dtype dtype) {
  switch (dtype) {
    case RT_F32: return "float32";
    case RT_BF16: return "bfloat16";
    case RT_I32: return "int32";
  }
  return "unknown";
}

// Large buffers start at a rotating cache-line offset inside their first page: two big
// buffers that an op reads and writes in step (x and out) would otherwise sit at the same
// offset modulo 4 KiB, and the CPU's store-to-load alias check (4K aliasing) stalls every
// such pair. The offset header keeps the base pointer for rt_free.
namespace {
constexpr size_t kStagger = 1 << 20;  // buffers from 1 MiB up get an offset
std::atomic<uint64_t> g_stagger{0};
}  // namespace

void* rt_alloc(size_t bytes) {
  // Round up to the alignment so aligned_alloc's size contract holds; 0 bytes still
  // returns a unique pointer so an empty tensor is a valid tensor.
  size_t rounded = ((bytes + 63) / 64) * 64;
  if (rounded == 0) rounded = 64;
  size_t offset = 0;
  if (rounded >= kStagger) offset = 64 * (1 + (g_stagger.fetch_add(1) * 23) % 63);  // 64 … 4032 bytes
  void* base = std::aligned_alloc(64, rounded + offset);
  if (!base) return nullptr;
  void* ptr = static_cast<char*>(base) + offset;
  if (offset) std::memcpy(static_cast<char*>(ptr) - sizeof(void*), &base, sizeof(void*));
  int64_t now = g_allocated.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes);
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
  g_live.fetch_add(1);
  return ptr;
}

void rt_free(void* ptr, size_t bytes) {
  if (!ptr) return;
  size_t rounded = ((bytes + 63) / 64) * 64;
  void* base = ptr;
  if (rounded >= kStagger) std::memcpy(&base, static_cast<char*>(ptr) - sizeof(void*), sizeof(void*));
  std::free(base);
  g_allocated.fetch_sub(static_cast<int64_t>(bytes));
  g_live.fetch_sub(1);
}

int64_t rt_allocated_bytes(void) { return g_allocated.load(); }
int64_t rt_peak_bytes(void) { return g_peak.load(); }
int64_t rt_live_buffers(void) { return g_live.load(); }

static std::atomic<int> g_compute_dtype{RT_F32};
// rt_set_bf16_emulate(1) runs the fallback of CPUs without AVX512_BF16 on any CPU: how
// the tests cover it.
static std::atomic<bool> g_bf16_emulate{false};

void rt_set_bf16_emulate(int on) { g_bf16_emulate.store(on != 0); }

rt_status rt_set_compute_dtype(rt_dtype dtype) {
  if (dtype != RT_F32 && dtype != RT_BF16)
    return rt_fail(RT_ERR_DTYPE, "set_compute_dtype: expected float32 or bfloat16, received %s", rt_dtype_name(dtype));
  g_compute_dtype.store(dtype);
  return RT_OK;
}

rt_dtype rt_compute_dtype(void) { return static_cast<rt_dtype>(g_compute_dtype.load()); }

int rt_bf16_native(void) { return rt::gemm_bf16_native() && !g_bf16_emulate.load() ? 1 : 0; }

const char* rt_simd_level(void) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "avx512";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
  return "scalar";
}

const char* rt_blas_info(void) {
  static char info[256] = "";
  if (!info[0]) snprintf(info, sizeof(info), "%s", openblas_get_config());
  return info;
}

}  // extern "C"
