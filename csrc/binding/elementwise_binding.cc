// Bindings for the elementwise family (csrc/cpu/elementwise.cc).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

using Binary = rt_status (*)(float*, const float*, const float*, int64_t);

template <Binary fn, Binary cuda_fn>
Napi::Value BinaryOp(const Napi::CallbackInfo& info, const char* op) {
  Args a(info, op, 4);
  int64_t n = a.int64(3, "n", 0, kMaxElems);
  float* out = a.f32(0, "out", n);
  const float* x = a.f32(1, "a", n);
  const float* y = a.f32(2, "b", n);
  check_status(a.env(), (a.cuda() ? cuda_fn : fn)(out, x, y, n));
  return info.Env().Undefined();
}

Napi::Value Add(const Napi::CallbackInfo& info) { return BinaryOp<rt_add_f32, rt_cuda_add_f32>(info, "add"); }
Napi::Value Mul(const Napi::CallbackInfo& info) { return BinaryOp<rt_mul_f32, rt_cuda_mul_f32>(info, "mul"); }

// fill(out, value, n)
Napi::Value Fill(const Napi::CallbackInfo& info) {
  Args a(info, "fill", 3);
  int64_t n = a.int64(2, "n", 0, kMaxElems);
  float* out = a.f32(0, "out", n);
  check_status(a.env(), RT_OP(a, fill_f32)(out, static_cast<float>(a.number(1, "value")), n));
  return info.Env().Undefined();
}

// scale(out, a, s, n)
Napi::Value Scale(const Napi::CallbackInfo& info) {
  Args a(info, "scale", 4);
  int64_t n = a.int64(3, "n", 0, kMaxElems);
  float* out = a.f32(0, "out", n);
  const float* x = a.f32(1, "a", n);
  check_status(a.env(), RT_OP(a, scale_f32)(out, x, static_cast<float>(a.number(2, "s")), n));
  return info.Env().Undefined();
}

// axpy(y, x, alpha, n)
Napi::Value Axpy(const Napi::CallbackInfo& info) {
  Args a(info, "axpy", 4);
  int64_t n = a.int64(3, "n", 0, kMaxElems);
  float* y = a.f32(0, "y", n);
  const float* x = a.f32(1, "x", n);
  check_status(a.env(), RT_OP(a, axpy_f32)(y, x, static_cast<float>(a.number(2, "alpha")), n));
  return info.Env().Undefined();
}

// gated_residual_fwd(out, x, f, g|null, R, C)
Napi::Value GatedResidualFwd(const Napi::CallbackInfo& info) {
  Args a(info, "gated_residual_fwd", 6);
  int64_t R = a.int64(4, "R", 0, kMaxElems), C = a.int64(5, "C", 0, kMaxElems);
  int64_t n = checked_numel(a.env(), a.op(), {R, C});
  float* out = a.f32(0, "out", n);
  const float* x = a.f32(1, "x", n);
  const float* f = a.f32(2, "f", n);
  const float* g = a.f32_opt(3, "g", R);
  check_status(a.env(), RT_OP(a, gated_residual_fwd)(out, x, f, g, R, C));
  return info.Env().Undefined();
}

// gated_residual_bwd(df|null, dg|null, dout, f, g|null, R, C)
Napi::Value GatedResidualBwd(const Napi::CallbackInfo& info) {
  Args a(info, "gated_residual_bwd", 7);
  int64_t R = a.int64(5, "R", 0, kMaxElems), C = a.int64(6, "C", 0, kMaxElems);
  int64_t n = checked_numel(a.env(), a.op(), {R, C});
  float* df = a.f32_opt(0, "df", n);
  float* dg = a.f32_opt(1, "dg", R);
  const float* dout = a.f32(2, "dout", n);
  const float* f = a.f32(3, "f", n);
  const float* g = a.f32_opt(4, "g", R);
  check_status(a.env(), RT_OP(a, gated_residual_bwd)(df, dg, dout, f, g, R, C));
  return info.Env().Undefined();
}

// add_bias_fwd(x, bias, R, C)
Napi::Value AddBiasFwd(const Napi::CallbackInfo& info) {
  Args a(info, "add_bias_fwd", 4);
  int64_t R = a.int64(2, "R", 0, kMaxElems), C = a.int64(3, "C", 0, kMaxElems);
  float* x = a.f32(0, "x", checked_numel(a.env(), a.op(), {R, C}));
  rt_dtype dt;
  const void* bias = a.floating(1, "bias", C, &dt);
  check_status(a.env(), RT_OP(a, add_bias_fwd)(x, bias, dt, R, C));
  return info.Env().Undefined();
}

// add_bias_bwd(dbias, dout, R, C, accumulate)
Napi::Value AddBiasBwd(const Napi::CallbackInfo& info) {
  Args a(info, "add_bias_bwd", 5);
  int64_t R = a.int64(2, "R", 0, kMaxElems), C = a.int64(3, "C", 0, kMaxElems);
  float* dbias = a.f32(0, "dbias", C);
  const float* dout = a.f32(1, "dout", checked_numel(a.env(), a.op(), {R, C}));
  check_status(a.env(), RT_OP(a, add_bias_bwd)(dbias, dout, R, C, a.flag(4, "accumulate") ? 1 : 0));
  return info.Env().Undefined();
}

// clamp_fwd(out, x, lo, hi, n)
Napi::Value ClampFwd(const Napi::CallbackInfo& info) {
  Args a(info, "clamp_fwd", 5);
  int64_t n = a.int64(4, "n", 0, kMaxElems);
  float* out = a.f32(0, "out", n);
  const float* x = a.f32(1, "x", n);
  check_status(a.env(), RT_OP(a, clamp_fwd)(out, x, static_cast<float>(a.number(2, "lo")), static_cast<float>(a.number(3, "hi")), n));
  return info.Env().Undefined();
}

// clamp_bwd(dx, dout, x, lo, hi, n)
Napi::Value ClampBwd(const Napi::CallbackInfo& info) {
  Args a(info, "clamp_bwd", 6);
  int64_t n = a.int64(5, "n", 0, kMaxElems);
  float* dx = a.f32(0, "dx", n);
  const float* dout = a.f32(1, "dout", n);
  const float* x = a.f32(2, "x", n);
  check_status(a.env(), RT_OP(a, clamp_bwd)(dx, dout, x, static_cast<float>(a.number(3, "lo")), static_cast<float>(a.number(4, "hi")), n));
  return info.Env().Undefined();
}

// sum_squares(x, n) -> number
Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  Args a(info, "sum_squares", 2);
  int64_t n = a.int64(1, "n", 0, kMaxElems);
  const float* x = a.f32(0, "x", n);
  double out = 0;
  check_status(a.env(), RT_OP(a, sum_squares_f32)(&out, x, n));
  return Napi::Number::New(info.Env(), out);
}

// cast(out, in, n): float32 <-> bfloat16, direction from the dtypes.
Napi::Value Cast(const Napi::CallbackInfo& info) {
  Args a(info, "cast", 3);
  int64_t n = a.int64(2, "n", 0, kMaxElems);
  rt_dtype dout, din;
  void* out = a.floating(0, "out", n, &dout);
  const void* in = a.floating(1, "in", n, &din);
  if (dout == din) {
    check_status(a.env(), RT_OP(a, copy_bytes)(out, in, n * static_cast<int64_t>(rt_dtype_size(din))));
  } else if (dout == RT_BF16) {
    check_status(a.env(), RT_OP(a, cast_f32_to_bf16)(static_cast<rt_bf16*>(out), static_cast<const float*>(in), n));
  } else {
    check_status(a.env(), RT_OP(a, cast_bf16_to_f32)(static_cast<float*>(out), static_cast<const rt_bf16*>(in), n));
  }
  return info.Env().Undefined();
}

}  // namespace

void register_elementwise(Napi::Env env, Napi::Object exports) {
  exports.Set("add", Napi::Function::New(env, Add));
  exports.Set("mul", Napi::Function::New(env, Mul));
  exports.Set("fill", Napi::Function::New(env, Fill));
  exports.Set("scale", Napi::Function::New(env, Scale));
  exports.Set("axpy", Napi::Function::New(env, Axpy));
  exports.Set("gated_residual_fwd", Napi::Function::New(env, GatedResidualFwd));
  exports.Set("gated_residual_bwd", Napi::Function::New(env, GatedResidualBwd));
  exports.Set("add_bias_fwd", Napi::Function::New(env, AddBiasFwd));
  exports.Set("add_bias_bwd", Napi::Function::New(env, AddBiasBwd));
  exports.Set("clamp_fwd", Napi::Function::New(env, ClampFwd));
  exports.Set("clamp_bwd", Napi::Function::New(env, ClampBwd));
  exports.Set("sum_squares", Napi::Function::New(env, SumSquares));
  exports.Set("cast", Napi::Function::New(env, Cast));
}

}  // namespace rtb
