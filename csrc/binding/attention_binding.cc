// Bindings for the attention family (csrc/cpu/attention.cc).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

struct Dims {
  int64_t B, Tq, Tk, Hq, Hkv, D, window;
  float scale;
  int64_t nq, nk, nlse;  // elements of q/out, of k/v, of lse
};

// Reads B, Tq, Tk, Hq, Hkv, D, scale, window starting at argument `first`. Ranges that
// are semantic (D >= 1, Hq % Hkv, window >= 0, finite scale) are the kernel's guards.
Dims read_dims(Args& a, size_t first) {
  Dims d{};
  d.B = a.int64(first, "B", 0, kMaxElems);
  d.Tq = a.int64(first + 1, "Tq", 0, kMaxElems);
  d.Tk = a.int64(first + 2, "Tk", 0, kMaxElems);
  d.Hq = a.int64(first + 3, "Hq", 0, kMaxElems);
  d.Hkv = a.int64(first + 4, "Hkv", 0, kMaxElems);
  d.D = a.int64(first + 5, "D", 0, kMaxElems);
  d.scale = static_cast<float>(a.number(first + 6, "scale"));
  d.window = a.int64(first + 7, "window", -kMaxElems, kMaxElems);
  d.nq = checked_numel(a.env(), a.op(), {d.B, d.Tq, d.Hq, d.D});
  d.nk = checked_numel(a.env(), a.op(), {d.B, d.Tk, d.Hkv, d.D});
  d.nlse = checked_numel(a.env(), a.op(), {d.B, d.Hq, d.Tq});
  return d;
}

// attention_fwd(out, lse|null, q, k, v, qpos|null, kpos|null, B, Tq, Tk, Hq, Hkv, D, scale, window)
Napi::Value AttentionFwd(const Napi::CallbackInfo& info) {
  Args a(info, "attention_fwd", 15);
  Dims d = read_dims(a, 7);
  float* out = a.f32(0, "out", d.nq);
  float* lse = a.f32_opt(1, "lse", d.nlse);
  const float* q = a.f32(2, "q", d.nq);
  const float* k = a.f32(3, "k", d.nk);
  const float* v = a.f32(4, "v", d.nk);
  const int32_t* qpos = a.i32_opt(5, "qpos", d.B * d.Tq);
  const int32_t* kpos = a.i32_opt(6, "kpos", d.B * d.Tk);
  check_status(a.env(), RT_OP(a, attention_fwd)(out, lse, q, k, v, qpos, kpos, d.B, d.Tq, d.Tk, d.Hq, d.Hkv, d.D, d.scale,
                                         d.window));
  return info.Env().Undefined();
}

// attention_bwd(dq|null, dk|null, dv|null, dout, q, k, v, out, lse, qpos|null, kpos|null,
//               B, Tq, Tk, Hq, Hkv, D, scale, window)
Napi::Value AttentionBwd(const Napi::CallbackInfo& info) {
  Args a(info, "attention_bwd", 19);
  Dims d = read_dims(a, 11);
  float* dq = a.f32_opt(0, "dq", d.nq);
  float* dk = a.f32_opt(1, "dk", d.nk);
  float* dv = a.f32_opt(2, "dv", d.nk);
  const float* dout = a.f32(3, "dout", d.nq);
  const float* q = a.f32(4, "q", d.nq);
  const float* k = a.f32(5, "k", d.nk);
  const float* v = a.f32(6, "v", d.nk);
  const float* out = a.f32(7, "out", d.nq);
  const float* lse = a.f32(8, "lse", d.nlse);
  const int32_t* qpos = a.i32_opt(9, "qpos", d.B * d.Tq);
  const int32_t* kpos = a.i32_opt(10, "kpos", d.B * d.Tk);
  check_status(a.env(), RT_OP(a, attention_bwd)(dq, dk, dv, dout, q, k, v, out, lse, qpos, kpos, d.B, d.Tq, d.Tk, d.Hq,
                                         d.Hkv, d.D, d.scale, d.window));
  return info.Env().Undefined();
}

}  // namespace

void register_attention(Napi::Env env, Napi::Object exports) {
  exports.Set("attention_fwd", Napi::Function::New(env, AttentionFwd));
  exports.Set("attention_bwd", Napi::Function::New(env, AttentionBwd));
}

}  // namespace rtb
