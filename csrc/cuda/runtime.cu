// CUDA runtime: the device context, the engine's one stream, a caching device
// allocator, copies, and the device-side index flag. Every CUDA error becomes a status
// with a message (rt_fail) — the process never exits on a GPU fault.
//
// Allocator: blocks are rounded up (512 B below 1 MiB, 2 MiB above) and kept in
// per-size free lists when freed; a request reuses a cached block of exactly its rounded
// size. All kernels and copies run in order on one stream, so a block freed by the host
// and reused by the next op is safe without events. When cudaMalloc fails, the cache is
// returned to the driver and the allocation retried once.
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "cuda_common.cuh"

namespace rt {
namespace cuda {
namespace {

struct Context {
  std::once_flag once;
  rt_status init_status = RT_OK;
  char init_message[512] = {0};
  int device = 0;
  int sms = 1;
  cudaStream_t stream = nullptr;
  char name[384] = {0};
};

Context& context() {
  static Context* ctx = new Context();  // never destroyed: kernels may outlive static teardown
  return *ctx;
}

void init_context(Context& ctx) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    ctx.init_status = RT_ERR_UNAVAILABLE;
    std::snprintf(ctx.init_message, sizeof ctx.init_message, "no CUDA device is available (%s)",
                  err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return;
  }
  cudaDeviceProp prop;
  err = cudaSetDevice(ctx.device);
  if (err == cudaSuccess) err = cudaGetDeviceProperties(&prop, ctx.device);
  if (err == cudaSuccess) err = cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking);
  if (err != cudaSuccess) {
    ctx.init_status = RT_ERR_UNAVAILABLE;
    std::snprintf(ctx.init_message, sizeof ctx.init_message, "CUDA device %d could not be initialised: %s", ctx.device,
                  cudaGetErrorString(err));
    return;
  }
  ctx.sms = prop.multiProcessorCount;
  std::snprintf(ctx.name, sizeof ctx.name, "%.200s (sm_%d%d, %d SMs, %.1f GiB)", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount, prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
}

// ---- caching allocator -------------------------------------------------------------

constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t(2) << 20;
constexpr size_t kLargeFrom = size_t(1) << 20;

size_t rounded(size_t bytes) {
  if (bytes == 0) bytes = 1;
  size_t unit = bytes >= kLargeFrom ? kLargeRound : kSmallRound;
  return (bytes + unit - 1) / unit * unit;
}

struct Allocator {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;
  int64_t allocated = 0, peak = 0, cached = 0, live = 0;

  void* take(size_t bytes) {
    size_t size = rounded(bytes);
    std::lock_guard<std::mutex> lock(mu);
    auto it = free_blocks.find(size);
    void* ptr = nullptr;
    if (it != free_blocks.end() && !it->second.empty()) {
      ptr = it->second.back();
      it->second.pop_back();
      cached -= static_cast<int64_t>(size);
    } else {
      cudaError_t err = cudaMalloc(&ptr, size);
      if (err != cudaSuccess) {
        cudaGetLastError();
        release_cached_locked();
        err = cudaMalloc(&ptr, size);
      }
      if (err != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        rt_fail(RT_ERR_NOMEM, "cuda_alloc: could not allocate %zu bytes on the GPU (%s; %zu of %zu bytes free)", size,
                cudaGetErrorString(err), free_b, total_b);
        return nullptr;
      }
    }
    allocated += static_cast<int64_t>(size);
    if (allocated > peak) peak = allocated;
    live++;
    return ptr;
  }

  void give(void* ptr, size_t bytes) {
    size_t size = rounded(bytes);
    std::lock_guard<std::mutex> lock(mu);
    free_blocks[size].push_back(ptr);
    cached += static_cast<int64_t>(size);
    allocated -= static_cast<int64_t>(size);
    live--;
  }

  void release_cached_locked() {
    if (cached == 0) return;
    cudaStreamSynchronize(context().stream);  // blocks may still be in use by queued work
    for (auto& kv : free_blocks)
      for (void* p : kv.second) cudaFree(p);
    free_blocks.clear();
    cached = 0;
  }
};

Allocator& allocator() {
  static Allocator* a = new Allocator();
  return *a;
}

}  // namespace

rt_status ensure_device(const char* op) {
  Context& ctx = context();
  std::call_once(ctx.once, [&ctx] { init_context(ctx); });
  if (ctx.init_status != RT_OK) return rt_fail(ctx.init_status, "%s: %s", op, ctx.init_message);
  return RT_OK;
}

cudaStream_t stream() { return context().stream; }
int sm_count() { return context().sms; }

rt_status fail_cuda(const char* op, cudaError_t err, const char* what) {
  cudaGetLastError();  // clear non-sticky errors so the next op is not blamed
  return rt_fail(err == cudaErrorMemoryAllocation ? RT_ERR_NOMEM : RT_ERR_INTERNAL, "%s: CUDA error in %s: %s (%s)", op,
                 what, cudaGetErrorString(err), cudaGetErrorName(err));
}

rt_status IndexFlag::reset(const char* op) {
  if (!buf.ok()) return RT_ERR_NOMEM;
  RT_CUDA_TRY(op, cudaMemsetAsync(buf.ptr, 0, buf.bytes, stream()));
  return RT_OK;
}

rt_status IndexFlag::check(const char* op, const char* what, int64_t limit) {
  long long host[2] = {0, 0};
  RT_CUDA_TRY(op, cudaMemcpyAsync(host, buf.ptr, sizeof host, cudaMemcpyDeviceToHost, stream()));
  RT_CUDA_TRY(op, cudaStreamSynchronize(stream()));
  if (host[0] == 0) return RT_OK;
  return rt_fail(RT_ERR_INDEX, "%s: %s[%lld] = %lld is out of range [0, %lld)", op, what, host[0] - 1, host[1],
                 static_cast<long long>(limit));
}

}  // namespace cuda
}  // namespace rt

using namespace rt::cuda;

extern "C" {

int rt_cuda_available(void) { return ensure_device("cuda_available") == RT_OK ? 1 : 0; }

int rt_cuda_device_count(void) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

rt_status rt_cuda_require(const char* op) { return ensure_device(op); }

rt_status rt_cuda_device_name(char* out, int64_t capacity) {
  RT_CUDA_OP("device_name");
  if (capacity <= 0) return rt_fail(RT_ERR_ARG, "device_name: capacity must be > 0");
  std::snprintf(out, static_cast<size_t>(capacity), "%s", context().name);
  return RT_OK;
}

void* rt_cuda_alloc(size_t bytes) {
  if (ensure_device("cuda_alloc") != RT_OK) return nullptr;
  return allocator().take(bytes);
}

void rt_cuda_free(void* ptr, size_t bytes) {
  if (ptr) allocator().give(ptr, bytes);
}

rt_status rt_cuda_empty_cache(void) {
  RT_CUDA_OP("empty_cache");
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  a.release_cached_locked();
  return RT_OK;
}

void rt_cuda_memory_stats(rt_cuda_memory* out) {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  out->allocated_bytes = a.allocated;
  out->peak_bytes = a.peak;
  out->cached_bytes = a.cached;
  out->live_buffers = a.live;
}

rt_status rt_cuda_memcpy(void* dst, const void* src, int64_t bytes, rt_copy_kind kind) {
  RT_CUDA_OP("cuda_memcpy");
  if (bytes < 0) return rt_fail(RT_ERR_ARG, "cuda_memcpy: bytes must be >= 0, received %lld", (long long)bytes);
  if (bytes == 0) return RT_OK;
  cudaMemcpyKind k = kind == RT_COPY_H2D ? cudaMemcpyHostToDevice
                     : kind == RT_COPY_D2H ? cudaMemcpyDeviceToHost
                                           : cudaMemcpyDeviceToDevice;
  RT_CUDA_TRY("cuda_memcpy", cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), k, stream()));
  // Host memory is pageable and may be reused by the caller as soon as we return.
  if (kind != RT_COPY_D2D) RT_CUDA_TRY("cuda_memcpy", cudaStreamSynchronize(stream()));
  return RT_OK;
}

rt_status rt_cuda_synchronize(void) {
  RT_CUDA_OP("cuda_synchronize");
  RT_CUDA_TRY("cuda_synchronize", cudaStreamSynchronize(stream()));
  return RT_OK;
}

}  // extern "C"
