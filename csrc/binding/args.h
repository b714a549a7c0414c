// Argument checking for every binding: tensors are native storage handles (externals)
// checked for liveness, dtype and minimum length; scalars for type and range. Every
// failure throws a JS error whose message names the op, the argument, what was
// expected and what was received, and whose `code` is an RT_ERR_* name.
#pragma once
#include <napi.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "rt/common.h"

namespace rtb {

// One native buffer. JS holds it through an External; the finalizer frees it if the
// JS side never called tensor_free (a safety net: the TS layer frees deterministically).
struct Storage {
  uint32_t magic;
  void* data;
  size_t bytes;
  int64_t numel;
  rt_dtype dtype;
  int device;  // kCpu or kCuda: where `data` lives
};
constexpr int kCpu = 0;
constexpr int kCuda = 1;
const char* device_name(int device);
constexpr uint32_t kStorageMagic = 0x52544e53;  // "RTNS"

[[noreturn]] void throw_error(Napi::Env env, const char* kind, const char* code, const std::string& message);
// Throws the pending kernel error (rt_last_error) for a failed status.
void check_status(Napi::Env env, rt_status status);

// Product of sizes, rejecting negatives and overflow past 2^53.
int64_t checked_numel(Napi::Env env, const char* op, std::initializer_list<int64_t> sizes);

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op, size_t count);

  Storage* storage(size_t i, const char* name);            // live tensor handle, any dtype
  float* f32(size_t i, const char* name, int64_t numel);   // float32, >= numel elements
  float* f32_opt(size_t i, const char* name, int64_t numel);  // null/undefined → nullptr
  int32_t* i32(size_t i, const char* name, int64_t numel);
  int32_t* i32_opt(size_t i, const char* name, int64_t numel);
  // float32 or bfloat16 (weights); dtype reported through *dtype.
  void* floating(size_t i, const char* name, int64_t numel, rt_dtype* dtype);
  int64_t int64(size_t i, const char* name, int64_t min, int64_t max);
  double number(size_t i, const char* name);
  bool flag(size_t i, const char* name);
  bool is_null(size_t i) const;

  Napi::Env env() const { return info_.Env(); }
  const char* op() const { return op_; }
  // True when the op's tensors live on the GPU. Every tensor of one call must be on
  // one device (checked as each is read); tensor_copy alone may mix them.
  bool cuda() const { return device_ == kCuda; }
  void allow_mixed_devices() { mixed_ok_ = true; }

 private:
  void* typed(size_t i, const char* name, int64_t numel, rt_dtype want, bool optional);
  const Napi::CallbackInfo& info_;
  const char* op_;
  int device_ = -1;
  const char* device_arg_ = nullptr;
  bool mixed_ok_ = false;
};

// The kernel for the call's device: rt_<op> on the CPU, rt_cuda_<op> on the GPU
// (same signature), e.g. check_status(env, RT_OP(a, matmul)(c, x, w, …)).
#define RT_OP(args, name) ((args).cuda() ? rt_cuda_##name : rt_##name)

}  // namespace rtb
