// Bindings for the rope family (csrc/cpu/rope.cc).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

using RopeFn = rt_status (*)(float*, const float*, const int32_t*, const float*, float, int64_t, int64_t, int64_t);

// rope_fwd(out, x, pos, inv_freq, attn_scale, T, H, D) and
// rope_bwd(dx, dout, pos, inv_freq, attn_scale, T, H, D); out may be x (in place).
template <RopeFn fn, RopeFn cuda_fn>
Napi::Value RopeOp(const Napi::CallbackInfo& info, const char* op, const char* out_name, const char* in_name) {
  Args a(info, op, 8);
  int64_t T = a.int64(5, "T", 0, kMaxElems), H = a.int64(6, "H", 0, kMaxElems), D = a.int64(7, "D", 0, kMaxElems);
  int64_t n = checked_numel(a.env(), a.op(), {T, H, D});
  float* out = a.f32(0, out_name, n);
  const float* x = a.f32(1, in_name, n);
  const int32_t* pos = a.i32(2, "pos", T);
  const float* inv_freq = a.f32(3, "inv_freq", D / 2);
  float attn_scale = static_cast<float>(a.number(4, "attn_scale"));
  check_status(a.env(), (a.cuda() ? cuda_fn : fn)(out, x, pos, inv_freq, attn_scale, T, H, D));
  return info.Env().Undefined();
}

Napi::Value RopeFwd(const Napi::CallbackInfo& info) { return RopeOp<rt_rope_fwd, rt_cuda_rope_fwd>(info, "rope_fwd", "out", "x"); }
Napi::Value RopeBwd(const Napi::CallbackInfo& info) { return RopeOp<rt_rope_bwd, rt_cuda_rope_bwd>(info, "rope_bwd", "dx", "dout"); }

}  // namespace

void register_rope(Napi::Env env, Napi::Object exports) {
  exports.Set("rope_fwd", Napi::Function::New(env, RopeFwd));
  exports.Set("rope_bwd", Napi::Function::New(env, RopeBwd));
}

}  // namespace rtb
