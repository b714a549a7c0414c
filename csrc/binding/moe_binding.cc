// Bindings for the moe family (csrc/cpu/moe.cc): route, sort, grouped experts,
// combine, and their backward. Index contents (bounds, perm, inv_perm, topk_idx) are
// range-checked by the kernels; here: counts, dtypes and buffer lengths.
#include <string>

#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

// Largest expert count / top-k accepted (far above any real model).
constexpr int64_t kMaxExperts = int64_t(1) << 20;

// moe_route_fwd(probs, topk_idx, topk_w, logits, T, E, K, renorm)
Napi::Value RouteFwd(const Napi::CallbackInfo& info) {
  Args a(info, "moe_route_fwd", 8);
  int64_t T = a.int64(4, "T", 0, kMaxElems), E = a.int64(5, "E", 1, kMaxExperts), K = a.int64(6, "K", 1, E);
  int64_t te = checked_numel(a.env(), a.op(), {T, E}), tk = checked_numel(a.env(), a.op(), {T, K});
  float* probs = a.f32(0, "probs", te);
  int32_t* idx = a.i32(1, "topk_idx", tk);
  float* w = a.f32(2, "topk_w", tk);
  const float* logits = a.f32(3, "logits", te);
  bool renorm = a.flag(7, "renorm");
  check_status(a.env(), RT_OP(a, moe_route_fwd)(probs, idx, w, logits, T, E, K, renorm ? 1 : 0));
  return info.Env().Undefined();
}

// moe_route_bwd(dlogits, dtopk_w, probs, topk_idx, T, E, K, renorm)
Napi::Value RouteBwd(const Napi::CallbackInfo& info) {
  Args a(info, "moe_route_bwd", 8);
  int64_t T = a.int64(4, "T", 0, kMaxElems), E = a.int64(5, "E", 1, kMaxExperts), K = a.int64(6, "K", 1, E);
  int64_t te = checked_numel(a.env(), a.op(), {T, E}), tk = checked_numel(a.env(), a.op(), {T, K});
  float* dlogits = a.f32(0, "dlogits", te);
  const float* dw = a.f32(1, "dtopk_w", tk);
  const float* probs = a.f32(2, "probs", te);
  const int32_t* idx = a.i32(3, "topk_idx", tk);
  bool renorm = a.flag(7, "renorm");
  check_status(a.env(), RT_OP(a, moe_route_bwd)(dlogits, dw, probs, idx, T, E, K, renorm ? 1 : 0));
  return info.Env().Undefined();
}

// moe_sort(perm, inv_perm, bounds, topk_idx, T, E, K) -> live
Napi::Value Sort(const Napi::CallbackInfo& info) {
  Args a(info, "moe_sort", 7);
  int64_t T = a.int64(4, "T", 0, kMaxElems), E = a.int64(5, "E", 1, kMaxExperts), K = a.int64(6, "K", 1, E);
  int64_t tk = checked_numel(a.env(), a.op(), {T, K});
  int32_t* perm = a.i32(0, "perm", tk);
  int32_t* inv = a.i32(1, "inv_perm", tk);
  int32_t* bounds = a.i32(2, "bounds", E + 1);
  const int32_t* idx = a.i32(3, "topk_idx", tk);
  int64_t live = 0;
  check_status(a.env(), RT_OP(a, moe_sort)(perm, inv, bounds, &live, idx, T, E, K));
  return Napi::Number::New(info.Env(), static_cast<double>(live));
}

// The three expert weights, which must share one dtype (float32 or bfloat16).
struct ExpertWeights {
  const void* gate;
  const void* up;
  const void* down;
  rt_dtype dtype;
};

ExpertWeights expert_weights(Args& a, size_t first, int64_t E, int64_t C, int64_t I) {
  int64_t n = checked_numel(a.env(), a.op(), {E, I, C});
  ExpertWeights w;
  rt_dtype dt_up, dt_down;
  w.gate = a.floating(first, "w_gate", n, &w.dtype);
  w.up = a.floating(first + 1, "w_up", n, &dt_up);
  w.down = a.floating(first + 2, "w_down", n, &dt_down);
  if (dt_up != w.dtype || dt_down != w.dtype)
    throw_error(a.env(), "TypeError", "RT_ERR_DTYPE",
                std::string(a.op()) + ": '" + (dt_up != w.dtype ? "w_up" : "w_down") + "' expected dtype " +
                    rt_dtype_name(w.dtype) + " (the dtype of 'w_gate'), received " +
                    rt_dtype_name(dt_up != w.dtype ? dt_up : dt_down));
  return w;
}

// Live rows A = bounds[E] when it is a plausible count; otherwise 0 and the kernel,
// which validates bounds before touching any row, reports the bad bounds. On the GPU
// the one value is copied back (bounds itself stays on the device).
int64_t live_rows(Args& a, const int32_t* bounds, int64_t E, int64_t TK) {
  int32_t last = 0;
  if (a.cuda())
    check_status(a.env(), rt_cuda_memcpy(&last, bounds + E, sizeof last, RT_COPY_D2H));
  else
    last = bounds[E];
  int64_t A = last;
  return A >= 0 && A <= TK ? A : 0;
}

// moe_experts_fwd(y, act_gate|null, act_up|null, x, perm, bounds, w_gate, w_up, w_down, T, E, K, C, I)
Napi::Value ExpertsFwd(const Napi::CallbackInfo& info) {
  Args a(info, "moe_experts_fwd", 14);
  int64_t T = a.int64(9, "T", 0, kMaxElems), E = a.int64(10, "E", 1, kMaxExperts), K = a.int64(11, "K", 1, E);
  int64_t C = a.int64(12, "C", 0, kMaxElems), I = a.int64(13, "I", 0, kMaxElems);
  int64_t tk = checked_numel(a.env(), a.op(), {T, K});
  const int32_t* bounds = a.i32(5, "bounds", E + 1);
  int64_t A = live_rows(a, bounds, E, tk);
  float* y = a.f32(0, "y", checked_numel(a.env(), a.op(), {A, C}));
  float* act_gate = a.f32_opt(1, "act_gate", checked_numel(a.env(), a.op(), {A, I}));
  float* act_up = a.f32_opt(2, "act_up", A * I);
  const float* x = a.f32(3, "x", checked_numel(a.env(), a.op(), {T, C}));
  const int32_t* perm = a.i32(4, "perm", A);
  ExpertWeights w = expert_weights(a, 6, E, C, I);
  check_status(a.env(), RT_OP(a, moe_experts_fwd)(y, act_gate, act_up, x, perm, bounds, w.gate, w.up, w.down, w.dtype, T, E,
                                           K, C, I));
  return info.Env().Undefined();
}

// moe_experts_bwd(dx|null, dw_gate|null, dw_up|null, dw_down|null, dy, x, perm, bounds,
//                 w_gate, w_up, w_down, act_gate, act_up, T, E, K, C, I)
Napi::Value ExpertsBwd(const Napi::CallbackInfo& info) {
  Args a(info, "moe_experts_bwd", 18);
  int64_t T = a.int64(13, "T", 0, kMaxElems), E = a.int64(14, "E", 1, kMaxExperts), K = a.int64(15, "K", 1, E);
  int64_t C = a.int64(16, "C", 0, kMaxElems), I = a.int64(17, "I", 0, kMaxElems);
  int64_t tk = checked_numel(a.env(), a.op(), {T, K}), tc = checked_numel(a.env(), a.op(), {T, C});
  int64_t eic = checked_numel(a.env(), a.op(), {E, I, C});
  const int32_t* bounds = a.i32(7, "bounds", E + 1);
  int64_t A = live_rows(a, bounds, E, tk);
  float* dx = a.f32_opt(0, "dx", tc);
  float* dwg = a.f32_opt(1, "dw_gate", eic);
  float* dwu = a.f32_opt(2, "dw_up", eic);
  float* dwd = a.f32_opt(3, "dw_down", eic);
  const float* dy = a.f32(4, "dy", checked_numel(a.env(), a.op(), {A, C}));
  const float* x = a.f32(5, "x", tc);
  const int32_t* perm = a.i32(6, "perm", A);
  ExpertWeights w = expert_weights(a, 8, E, C, I);
  const float* act_gate = a.f32(11, "act_gate", checked_numel(a.env(), a.op(), {A, I}));
  const float* act_up = a.f32(12, "act_up", A * I);
  check_status(a.env(), RT_OP(a, moe_experts_bwd)(dx, dwg, dwu, dwd, dy, x, perm, bounds, w.gate, w.up, w.down, w.dtype,
                                           act_gate, act_up, T, E, K, C, I));
  return info.Env().Undefined();
}

// moe_combine_fwd(out, y, inv_perm, topk_w, T, K, C, A)
Napi::Value CombineFwd(const Napi::CallbackInfo& info) {
  Args a(info, "moe_combine_fwd", 8);
  int64_t T = a.int64(4, "T", 0, kMaxElems), K = a.int64(5, "K", 1, kMaxExperts);
  int64_t C = a.int64(6, "C", 0, kMaxElems), A = a.int64(7, "A", 0, kMaxElems);
  int64_t tk = checked_numel(a.env(), a.op(), {T, K});
  float* out = a.f32(0, "out", checked_numel(a.env(), a.op(), {T, C}));
  const float* y = a.f32(1, "y", checked_numel(a.env(), a.op(), {A, C}));
  const int32_t* inv = a.i32(2, "inv_perm", tk);
  const float* w = a.f32(3, "topk_w", tk);
  check_status(a.env(), RT_OP(a, moe_combine_fwd)(out, y, inv, w, T, K, C, A));
  return info.Env().Undefined();
}

// moe_combine_bwd(dy|null, dtopk_w|null, dout, y, inv_perm, topk_w, T, K, C, A)
Napi::Value CombineBwd(const Napi::CallbackInfo& info) {
  Args a(info, "moe_combine_bwd", 10);
  int64_t T = a.int64(6, "T", 0, kMaxElems), K = a.int64(7, "K", 1, kMaxExperts);
  int64_t C = a.int64(8, "C", 0, kMaxElems), A = a.int64(9, "A", 0, kMaxElems);
  int64_t tk = checked_numel(a.env(), a.op(), {T, K}), ac = checked_numel(a.env(), a.op(), {A, C});
  float* dy = a.f32_opt(0, "dy", ac);
  float* dw = a.f32_opt(1, "dtopk_w", tk);
  const float* dout = a.f32(2, "dout", checked_numel(a.env(), a.op(), {T, C}));
  const float* y = a.f32(3, "y", ac);
  const int32_t* inv = a.i32(4, "inv_perm", tk);
  const float* w = a.f32(5, "topk_w", tk);
  check_status(a.env(), RT_OP(a, moe_combine_bwd)(dy, dw, dout, y, inv, w, T, K, C, A));
  return info.Env().Undefined();
}

}  // namespace

void register_moe(Napi::Env env, Napi::Object exports) {
  exports.Set("moe_route_fwd", Napi::Function::New(env, RouteFwd));
  exports.Set("moe_route_bwd", Napi::Function::New(env, RouteBwd));
  exports.Set("moe_sort", Napi::Function::New(env, Sort));
  exports.Set("moe_experts_fwd", Napi::Function::New(env, ExpertsFwd));
  exports.Set("moe_experts_bwd", Napi::Function::New(env, ExpertsBwd));
  exports.Set("moe_combine_fwd", Napi::Function::New(env, CombineFwd));
  exports.Set("moe_combine_bwd", Napi::Function::New(env, CombineBwd));
}

}  // namespace rtb
