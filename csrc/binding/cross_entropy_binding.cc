// Bindings for the cross_entropy family (csrc/cpu/cross_entropy.cc).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

constexpr int64_t kI32Min = -2147483648LL, kI32Max = 2147483647LL;

// cross_entropy_fwd(row_loss|null, lse, logits, targets, T, V, ignore_index) -> { loss, counted }
Napi::Value CrossEntropyFwd(const Napi::CallbackInfo& info) {
  Args a(info, "cross_entropy_fwd", 7);
  int64_t T = a.int64(4, "T", 0, kMaxElems), V = a.int64(5, "V", 0, kMaxElems);
  int64_t n = checked_numel(a.env(), a.op(), {T, V});
  float* row_loss = a.f32_opt(0, "row_loss", T);
  float* lse = a.f32(1, "lse", T);
  const float* logits = a.f32(2, "logits", n);
  const int32_t* targets = a.i32(3, "targets", T);
  int32_t ignore_index = static_cast<int32_t>(a.int64(6, "ignore_index", kI32Min, kI32Max));
  double loss = 0.0;
  int64_t counted = 0;
  check_status(a.env(), RT_OP(a, cross_entropy_fwd)(&loss, &counted, row_loss, lse, logits, targets, T, V, ignore_index));
  Napi::Object result = Napi::Object::New(info.Env());
  result.Set("loss", Napi::Number::New(info.Env(), loss));
  result.Set("counted", Napi::Number::New(info.Env(), static_cast<double>(counted)));
  return result;
}

// cross_entropy_bwd(dlogits, logits, lse, targets, T, V, ignore_index, dloss_scale); dlogits may be logits.
Napi::Value CrossEntropyBwd(const Napi::CallbackInfo& info) {
  Args a(info, "cross_entropy_bwd", 8);
  int64_t T = a.int64(4, "T", 0, kMaxElems), V = a.int64(5, "V", 0, kMaxElems);
  int64_t n = checked_numel(a.env(), a.op(), {T, V});
  float* dlogits = a.f32(0, "dlogits", n);
  const float* logits = a.f32(1, "logits", n);
  const float* lse = a.f32(2, "lse", T);
  const int32_t* targets = a.i32(3, "targets", T);
  int32_t ignore_index = static_cast<int32_t>(a.int64(6, "ignore_index", kI32Min, kI32Max));
  float scale = static_cast<float>(a.number(7, "dloss_scale"));
  check_status(a.env(), RT_OP(a, cross_entropy_bwd)(dlogits, logits, lse, targets, T, V, ignore_index, scale));
  return info.Env().Undefined();
}

}  // namespace

void register_cross_entropy(Napi::Env env, Napi::Object exports) {
  exports.Set("cross_entropy_fwd", Napi::Function::New(env, CrossEntropyFwd));
  exports.Set("cross_entropy_bwd", Napi::Function::New(env, CrossEntropyBwd));
}

}  // namespace rtb
