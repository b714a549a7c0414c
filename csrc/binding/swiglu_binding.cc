// Bindings for the swiglu family (csrc/cpu/swiglu.cc).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

// swiglu_fwd(out, gate, up, n)
Napi::Value SwigluFwd(const Napi::CallbackInfo& info) {
  Args a(info, "swiglu_fwd", 4);
  int64_t n = a.int64(3, "n", 0, kMaxElems);
  float* out = a.f32(0, "out", n);
  const float* gate = a.f32(1, "gate", n);
  const float* up = a.f32(2, "up", n);
  check_status(a.env(), RT_OP(a, swiglu_fwd)(out, gate, up, n));
  return info.Env().Undefined();
}

// swiglu_bwd(dgate, dup, dout, gate, up, n)
Napi::Value SwigluBwd(const Napi::CallbackInfo& info) {
  Args a(info, "swiglu_bwd", 6);
  int64_t n = a.int64(5, "n", 0, kMaxElems);
  float* dgate = a.f32(0, "dgate", n);
  float* dup = a.f32(1, "dup", n);
  const float* dout = a.f32(2, "dout", n);
  const float* gate = a.f32(3, "gate", n);
  const float* up = a.f32(4, "up", n);
  check_status(a.env(), RT_OP(a, swiglu_bwd)(dgate, dup, dout, gate, up, n));
  return info.Env().Undefined();
}

}  // namespace

void register_swiglu(Napi::Env env, Napi::Object exports) {
  exports.Set("swiglu_fwd", Napi::Function::New(env, SwigluFwd));
  exports.Set("swiglu_bwd", Napi::Function::New(env, SwigluBwd));
}

}  // namespace rtb
