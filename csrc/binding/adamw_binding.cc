// Bindings for the adamw family (csrc/cpu/adamw.cc).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

// adamw_step(p, m, v, g, n, lr, beta1, beta2, eps, weight_decay, step, grad_scale): p, m, v updated in place.
Napi::Value AdamwStep(const Napi::CallbackInfo& info) {
  Args a(info, "adamw_step", 12);
  int64_t n = a.int64(4, "n", 0, kMaxElems);
  float* p = a.f32(0, "p", n);
  float* m = a.f32(1, "m", n);
  float* v = a.f32(2, "v", n);
  const float* g = a.f32(3, "g", n);
  double lr = a.number(5, "lr");
  double beta1 = a.number(6, "beta1");
  double beta2 = a.number(7, "beta2");
  double eps = a.number(8, "eps");
  double wd = a.number(9, "weight_decay");
  int64_t step = a.int64(10, "step", 1, int64_t(1) << 53);
  double grad_scale = a.number(11, "grad_scale");
  check_status(a.env(), RT_OP(a, adamw_step)(p, m, v, g, n, lr, beta1, beta2, eps, wd, step, grad_scale));
  return info.Env().Undefined();
}

}  // namespace

void register_adamw(Napi::Env env, Napi::Object exports) {
  exports.Set("adamw_step", Napi::Function::New(env, AdamwStep));
}

}  // namespace rtb
