// Native tensor storage exposed to JS: allocate, free, copy in/out of typed arrays,
// copy between tensors, and the runtime facts of backendInfo().
#include <cstring>
#include <string>

#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

constexpr int64_t kMaxBytes = int64_t(1) << 46;

void free_data(Storage* s) {
  if (!s->data) return;
  if (s->device == kCuda)
    rt_cuda_free(s->data, s->bytes);
  else
    rt_free(s->data, s->bytes);
  s->data = nullptr;
}

void finalize_storage(Napi::Env, Storage* s) {
  free_data(s);
  s->data = nullptr;
  s->magic = 0;
  delete s;
}

// tensor_alloc(numel, dtype, device = 0 (cpu) | 1 (cuda))
Napi::Value TensorAlloc(const Napi::CallbackInfo& info) {
  Args a(info, "tensor_alloc", info.Length() >= 3 ? 3 : 2);
  int64_t numel = a.int64(0, "numel", 0, kMaxBytes / 4);
  auto dtype = static_cast<rt_dtype>(a.int64(1, "dtype", 0, 2));
  int device = info.Length() >= 3 ? static_cast<int>(a.int64(2, "device", kCpu, kCuda)) : kCpu;
  size_t bytes = static_cast<size_t>(numel) * rt_dtype_size(dtype);
  void* data = nullptr;
  if (device == kCuda) {
    check_status(info.Env(), rt_cuda_require("tensor_alloc"));
    data = rt_cuda_alloc(bytes);
    if (!data) check_status(info.Env(), RT_ERR_NOMEM);
  } else {
    data = rt_alloc(bytes);
  }
  if (!data)
    throw_error(info.Env(), "Error", "RT_ERR_NOMEM",
                "tensor_alloc: could not allocate " + std::to_string(bytes) + " bytes");
  auto* s = new Storage{kStorageMagic, data, bytes, numel, dtype, device};
  return Napi::External<Storage>::New(info.Env(), s, finalize_storage);
}

Napi::Value TensorFree(const Napi::CallbackInfo& info) {
  Args a(info, "tensor_free", 1);
  Storage* s = a.storage(0, "tensor");
  free_data(s);
  return info.Env().Undefined();
}

Napi::Value CopyTyped(const Napi::CallbackInfo& info, bool write) {
  const char* op = write ? "tensor_write" : "tensor_read";
  Args a(info, op, 3);
  Storage* s = a.storage(0, "tensor");
  if (!info[1].IsTypedArray())
    throw_error(info.Env(), "TypeError", "RT_ERR_ARG", std::string(op) + ": 'array' expected a typed array");
  Napi::TypedArray arr = info[1].As<Napi::TypedArray>();
  napi_typedarray_type want = s->dtype == RT_F32 ? napi_float32_array : s->dtype == RT_I32 ? napi_int32_array : napi_uint16_array;
  const char* want_name = s->dtype == RT_F32 ? "Float32Array" : s->dtype == RT_I32 ? "Int32Array" : "Uint16Array";
  if (arr.TypedArrayType() != want)
    throw_error(info.Env(), "TypeError", "RT_ERR_DTYPE",
                std::string(op) + ": a " + rt_dtype_name(s->dtype) + " tensor expects a " + want_name);
  int64_t offset = a.int64(2, "offset", 0, s->numel);
  int64_t count = static_cast<int64_t>(arr.ElementLength());
  if (offset + count > s->numel)
    throw_error(info.Env(), "RangeError", "RT_ERR_SHAPE",
                std::string(op) + ": " + std::to_string(count) + " elements at offset " + std::to_string(offset) +
                    " exceed the tensor's " + std::to_string(s->numel) + " elements");
  size_t esz = rt_dtype_size(s->dtype);
  auto* base = static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
  auto* dst = static_cast<uint8_t*>(s->data) + offset * esz;
  if (count == 0) return info.Env().Undefined();  // an empty array may have no backing store
  if (s->device == kCuda)
    check_status(info.Env(), write ? rt_cuda_memcpy(dst, base, count * esz, RT_COPY_H2D)
                                   : rt_cuda_memcpy(base, dst, count * esz, RT_COPY_D2H));
  else if (write)
    std::memcpy(dst, base, count * esz);
  else
    std::memcpy(base, dst, count * esz);
  return info.Env().Undefined();
}

Napi::Value TensorWrite(const Napi::CallbackInfo& info) { return CopyTyped(info, true); }
Napi::Value TensorRead(const Napi::CallbackInfo& info) { return CopyTyped(info, false); }

// tensor_copy(dst, src, dstOffset, srcOffset, count): element copy between tensors of one dtype.
Napi::Value TensorCopy(const Napi::CallbackInfo& info) {
  Args a(info, "tensor_copy", 5);
  a.allow_mixed_devices();  // tensor.to(device) copies across
  Storage* dst = a.storage(0, "dst");
  Storage* src = a.storage(1, "src");
  if (dst->dtype != src->dtype)
    throw_error(info.Env(), "TypeError", "RT_ERR_DTYPE",
                std::string("tensor_copy: dst is ") + rt_dtype_name(dst->dtype) + " but src is " + rt_dtype_name(src->dtype));
  int64_t doff = a.int64(2, "dstOffset", 0, dst->numel);
  int64_t soff = a.int64(3, "srcOffset", 0, src->numel);
  int64_t count = a.int64(4, "count", 0, kMaxBytes);
  if (doff + count > dst->numel || soff + count > src->numel)
    throw_error(info.Env(), "RangeError", "RT_ERR_SHAPE",
                "tensor_copy: " + std::to_string(count) + " elements do not fit (dst " + std::to_string(dst->numel) +
                    " at " + std::to_string(doff) + ", src " + std::to_string(src->numel) + " at " + std::to_string(soff) + ")");
  size_t esz = rt_dtype_size(dst->dtype);
  void* to = static_cast<uint8_t*>(dst->data) + doff * esz;
  const void* from = static_cast<const uint8_t*>(src->data) + soff * esz;
  int64_t bytes = count * static_cast<int64_t>(esz);
  rt_status st = dst->device == kCpu && src->device == kCpu ? rt_copy_bytes(to, from, bytes)
                 : dst->device == kCuda && src->device == kCuda ? rt_cuda_memcpy(to, from, bytes, RT_COPY_D2D)
                 : dst->device == kCuda                         ? rt_cuda_memcpy(to, from, bytes, RT_COPY_H2D)
                                                                : rt_cuda_memcpy(to, from, bytes, RT_COPY_D2H);
  check_status(info.Env(), st);
  return info.Env().Undefined();
}

Napi::Value TensorInfo(const Napi::CallbackInfo& info) {
  Args a(info, "tensor_info", 1);
  if (!info[0].IsExternal()) throw_error(info.Env(), "TypeError", "RT_ERR_ARG", "tensor_info: expected a tensor handle");
  auto* s = info[0].As<Napi::External<Storage>>().Data();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("numel", Napi::Number::New(info.Env(), static_cast<double>(s->numel)));
  o.Set("bytes", Napi::Number::New(info.Env(), static_cast<double>(s->bytes)));
  o.Set("dtype", Napi::Number::New(info.Env(), s->dtype));
  o.Set("disposed", Napi::Boolean::New(info.Env(), s->data == nullptr));
  o.Set("device", Napi::String::New(info.Env(), device_name(s->device)));
  return o;
}

Napi::Value RuntimeInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("threads", Napi::Number::New(env, rt_num_threads()));
  o.Set("simd", Napi::String::New(env, rt_simd_level()));
  o.Set("blas", Napi::String::New(env, rt_blas_info()));
  o.Set("allocatedBytes", Napi::Number::New(env, static_cast<double>(rt_allocated_bytes())));
  o.Set("peakBytes", Napi::Number::New(env, static_cast<double>(rt_peak_bytes())));
  o.Set("cuda", Napi::Boolean::New(env, rt_cuda_available() != 0));
  o.Set("cudaDevices", Napi::Number::New(env, rt_cuda_device_count()));
  if (rt_cuda_available()) {
    char name[512];
    if (rt_cuda_device_name(name, sizeof name) == RT_OK) o.Set("cudaDevice", Napi::String::New(env, name));
    o.Set("cudaBlas", Napi::String::New(env, rt_cuda_blas_info()));
    rt_cuda_memory m;
    rt_cuda_memory_stats(&m);
    o.Set("cudaAllocatedBytes", Napi::Number::New(env, static_cast<double>(m.allocated_bytes)));
    o.Set("cudaPeakBytes", Napi::Number::New(env, static_cast<double>(m.peak_bytes)));
    o.Set("cudaCachedBytes", Napi::Number::New(env, static_cast<double>(m.cached_bytes)));
    o.Set("cudaLiveBuffers", Napi::Number::New(env, static_cast<double>(m.live_buffers)));
  } else {
    rt_cuda_require("cuda");  // leaves the reason in rt_last_error
    o.Set("cudaReason", Napi::String::New(env, rt_last_error()));
  }
  o.Set("liveBuffers", Napi::Number::New(env, static_cast<double>(rt_live_buffers())));
  return o;
}

// cuda_synchronize(): waits for every queued GPU op (for timing).
Napi::Value CudaSynchronize(const Napi::CallbackInfo& info) {
  check_status(info.Env(), rt_cuda_synchronize());
  return info.Env().Undefined();
}

// cuda_empty_cache(): returns the allocator's cached blocks to the driver.
Napi::Value CudaEmptyCache(const Napi::CallbackInfo& info) {
  check_status(info.Env(), rt_cuda_empty_cache());
  return info.Env().Undefined();
}

// cuda_set_gemm_backend(0 auto | 1 built-in tensor-core kernel)
Napi::Value CudaSetGemmBackend(const Napi::CallbackInfo& info) {
  Args a(info, "cuda_set_gemm_backend", 1);
  check_status(info.Env(), rt_cuda_set_gemm_backend(static_cast<int>(a.int64(0, "backend", 0, 1))));
  return info.Env().Undefined();
}

// set_compute_dtype(0 float32 | 1 bfloat16, emulate 0 | 1): the CPU compute dtype of GEMMs
// with bf16 weights; emulate = 1 runs the fallback of CPUs without AVX512_BF16 (tests).
Napi::Value SetComputeDtype(const Napi::CallbackInfo& info) {
  Args a(info, "set_compute_dtype", 2);
  const int64_t dtype = a.int64(0, "dtype", 0, 1), emulate = a.int64(1, "emulate", 0, 1);
  rt_set_bf16_emulate(static_cast<int>(emulate));
  check_status(info.Env(), rt_set_compute_dtype(static_cast<rt_dtype>(dtype)));
  return info.Env().Undefined();
}

// compute_dtype() → { dtype: 0 | 1, bf16Native: whether AVX512_BF16 runs it }
Napi::Value ComputeDtype(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("dtype", Napi::Number::New(env, static_cast<double>(rt_compute_dtype())));
  o.Set("bf16Native", Napi::Boolean::New(env, rt_bf16_native() != 0));
  return o;
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Args a(info, "set_num_threads", 1);
  rt_set_num_threads(static_cast<int>(a.int64(0, "threads", 1, 1024)));
  return info.Env().Undefined();
}

}  // namespace

void register_tensor(Napi::Env env, Napi::Object exports) {
  exports.Set("tensor_alloc", Napi::Function::New(env, TensorAlloc));
  exports.Set("tensor_free", Napi::Function::New(env, TensorFree));
  exports.Set("tensor_write", Napi::Function::New(env, TensorWrite));
  exports.Set("tensor_read", Napi::Function::New(env, TensorRead));
  exports.Set("tensor_copy", Napi::Function::New(env, TensorCopy));
  exports.Set("tensor_info", Napi::Function::New(env, TensorInfo));
  exports.Set("runtime_info", Napi::Function::New(env, RuntimeInfo));
  exports.Set("set_num_threads", Napi::Function::New(env, SetNumThreads));
  exports.Set("set_compute_dtype", Napi::Function::New(env, SetComputeDtype));
  exports.Set("compute_dtype", Napi::Function::New(env, ComputeDtype));
  exports.Set("cuda_synchronize", Napi::Function::New(env, CudaSynchronize));
  exports.Set("cuda_empty_cache", Napi::Function::New(env, CudaEmptyCache));
  exports.Set("cuda_set_gemm_backend", Napi::Function::New(env, CudaSetGemmBackend));
}

}  // namespace rtb
