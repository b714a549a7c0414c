// Bindings for the rmsnorm family (csrc/cpu/rmsnorm.cc).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

// rmsnorm_fwd(out, rstd|null, x, w, R, C, eps)
Napi::Value RmsnormFwd(const Napi::CallbackInfo& info) {
  Args a(info, "rmsnorm_fwd", 7);
  int64_t R = a.int64(4, "R", 0, kMaxElems), C = a.int64(5, "C", 0, kMaxElems);
  int64_t n = checked_numel(a.env(), a.op(), {R, C});
  float* out = a.f32(0, "out", n);
  float* rstd = a.f32_opt(1, "rstd", R);
  const float* x = a.f32(2, "x", n);
  const float* w = a.f32(3, "w", C);
  float eps = static_cast<float>(a.number(6, "eps"));
  check_status(a.env(), RT_OP(a, rmsnorm_fwd)(out, rstd, x, w, R, C, eps));
  return info.Env().Undefined();
}

// rmsnorm_bwd(dx|null, dw|null, dout, x, w, rstd, R, C): dw accumulates.
Napi::Value RmsnormBwd(const Napi::CallbackInfo& info) {
  Args a(info, "rmsnorm_bwd", 8);
  int64_t R = a.int64(6, "R", 0, kMaxElems), C = a.int64(7, "C", 0, kMaxElems);
  int64_t n = checked_numel(a.env(), a.op(), {R, C});
  float* dx = a.f32_opt(0, "dx", n);
  float* dw = a.f32_opt(1, "dw", C);
  const float* dout = a.f32(2, "dout", n);
  const float* x = a.f32(3, "x", n);
  const float* w = a.f32(4, "w", C);
  const float* rstd = a.f32(5, "rstd", R);
  check_status(a.env(), RT_OP(a, rmsnorm_bwd)(dx, dw, dout, x, w, rstd, R, C));
  return info.Env().Undefined();
}

}  // namespace

void register_rmsnorm(Napi::Env env, Napi::Object exports) {
  exports.Set("rmsnorm_fwd", Napi::Function::New(env, RmsnormFwd));
  exports.Set("rmsnorm_bwd", Napi::Function::New(env, RmsnormBwd));
}

}  // namespace rtb
