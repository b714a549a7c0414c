// Bindings for the gather_scatter family (csrc/cpu/gather_scatter.cc): token-row
// compaction and its inverse. Index ranges are checked by the kernel (RT_ERR_INDEX).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

// gather_rows(out, x, idx, N, R, C)
Napi::Value GatherRows(const Napi::CallbackInfo& info) {
  Args a(info, "gather_rows", 6);
  int64_t N = a.int64(3, "N", 0, kMaxElems), R = a.int64(4, "R", 0, kMaxElems), C = a.int64(5, "C", 0, kMaxElems);
  float* out = a.f32(0, "out", checked_numel(a.env(), a.op(), {N, C}));
  const float* x = a.f32(1, "x", checked_numel(a.env(), a.op(), {R, C}));
  const int32_t* idx = a.i32(2, "idx", N);
  check_status(a.env(), RT_OP(a, gather_rows)(out, x, idx, N, R, C));
  return info.Env().Undefined();
}

// scatter_rows(out, y, idx, N, R, C, accumulate)
Napi::Value ScatterRows(const Napi::CallbackInfo& info) {
  Args a(info, "scatter_rows", 7);
  int64_t N = a.int64(3, "N", 0, kMaxElems), R = a.int64(4, "R", 0, kMaxElems), C = a.int64(5, "C", 0, kMaxElems);
  float* out = a.f32(0, "out", checked_numel(a.env(), a.op(), {R, C}));
  const float* y = a.f32(1, "y", checked_numel(a.env(), a.op(), {N, C}));
  const int32_t* idx = a.i32(2, "idx", N);
  bool accumulate = a.flag(6, "accumulate");
  check_status(a.env(), RT_OP(a, scatter_rows)(out, y, idx, N, R, C, accumulate ? 1 : 0));
  return info.Env().Undefined();
}

}  // namespace

void register_gather_scatter(Napi::Env env, Napi::Object exports) {
  exports.Set("gather_rows", Napi::Function::New(env, GatherRows));
  exports.Set("scatter_rows", Napi::Function::New(env, ScatterRows));
}

}  // namespace rtb
