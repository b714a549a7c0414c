// Bindings for the router family (csrc/cpu/router.cc): fused MindSkip scoring with
// compaction of executed rows, token-level and sequence-pooled, and their backward.
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

// router_token_fwd(score, gate, exec_idx, h, w, T, C, threshold) -> count
Napi::Value TokenFwd(const Napi::CallbackInfo& info) {
  Args a(info, "router_token_fwd", 8);
  int64_t T = a.int64(5, "T", 0, kMaxElems), C = a.int64(6, "C", 0, kMaxElems);
  int64_t n = checked_numel(a.env(), a.op(), {T, C});
  float* score = a.f32(0, "score", T);
  float* gate = a.f32(1, "gate", T);
  int32_t* exec_idx = a.i32(2, "exec_idx", T);
  const float* h = a.f32(3, "h", n);
  const float* w = a.f32(4, "w", C);
  float threshold = static_cast<float>(a.number(7, "threshold"));
  int64_t count = 0;
  check_status(a.env(), RT_OP(a, router_token_fwd)(score, gate, exec_idx, &count, h, w, T, C, threshold));
  return Napi::Number::New(info.Env(), static_cast<double>(count));
}

// router_token_bwd(dw|null, dh|null, dscore, score, h, w, T, C)
Napi::Value TokenBwd(const Napi::CallbackInfo& info) {
  Args a(info, "router_token_bwd", 8);
  int64_t T = a.int64(6, "T", 0, kMaxElems), C = a.int64(7, "C", 0, kMaxElems);
  int64_t n = checked_numel(a.env(), a.op(), {T, C});
  float* dw = a.f32_opt(0, "dw", C);
  float* dh = a.f32_opt(1, "dh", n);
  const float* dscore = a.f32(2, "dscore", T);
  const float* score = a.f32(3, "score", T);
  const float* h = a.f32(4, "h", n);
  const float* w = a.f32(5, "w", C);
  check_status(a.env(), RT_OP(a, router_token_bwd)(dw, dh, dscore, score, h, w, T, C));
  return info.Env().Undefined();
}

// router_seq_fwd(pooled, score, gate, exec_idx, h, mask|null, w, B, T, C, threshold) -> count
Napi::Value SeqFwd(const Napi::CallbackInfo& info) {
  Args a(info, "router_seq_fwd", 11);
  int64_t B = a.int64(7, "B", 0, kMaxElems), T = a.int64(8, "T", 0, kMaxElems), C = a.int64(9, "C", 0, kMaxElems);
  int64_t n = checked_numel(a.env(), a.op(), {B, T, C});
  int64_t bc = checked_numel(a.env(), a.op(), {B, C}), bt = checked_numel(a.env(), a.op(), {B, T});
  float* pooled = a.f32(0, "pooled", bc);
  float* score = a.f32(1, "score", B);
  float* gate = a.f32(2, "gate", B);
  int32_t* exec_idx = a.i32(3, "exec_idx", B);
  const float* h = a.f32(4, "h", n);
  const int32_t* mask = a.i32_opt(5, "mask", bt);
  const float* w = a.f32(6, "w", C);
  float threshold = static_cast<float>(a.number(10, "threshold"));
  int64_t count = 0;
  check_status(a.env(), RT_OP(a, router_seq_fwd)(pooled, score, gate, exec_idx, &count, h, mask, w, B, T, C, threshold));
  return Napi::Number::New(info.Env(), static_cast<double>(count));
}

// router_seq_bwd(dw|null, dh|null, dscore, score, pooled, mask|null, w, B, T, C)
Napi::Value SeqBwd(const Napi::CallbackInfo& info) {
  Args a(info, "router_seq_bwd", 10);
  int64_t B = a.int64(7, "B", 0, kMaxElems), T = a.int64(8, "T", 0, kMaxElems), C = a.int64(9, "C", 0, kMaxElems);
  int64_t n = checked_numel(a.env(), a.op(), {B, T, C});
  int64_t bc = checked_numel(a.env(), a.op(), {B, C}), bt = checked_numel(a.env(), a.op(), {B, T});
  float* dw = a.f32_opt(0, "dw", C);
  float* dh = a.f32_opt(1, "dh", n);
  const float* dscore = a.f32(2, "dscore", B);
  const float* score = a.f32(3, "score", B);
  const float* pooled = a.f32(4, "pooled", bc);
  const int32_t* mask = a.i32_opt(5, "mask", bt);
  const float* w = a.f32(6, "w", C);
  check_status(a.env(), RT_OP(a, router_seq_bwd)(dw, dh, dscore, score, pooled, mask, w, B, T, C));
  return info.Env().Undefined();
}

}  // namespace

void register_router(Napi::Env env, Napi::Object exports) {
  exports.Set("router_token_fwd", Napi::Function::New(env, TokenFwd));
  exports.Set("router_token_bwd", Napi::Function::New(env, TokenBwd));
  exports.Set("router_seq_fwd", Napi::Function::New(env, SeqFwd));
  exports.Set("router_seq_bwd", Napi::Function::New(env, SeqBwd));
}

}  // namespace rtb
