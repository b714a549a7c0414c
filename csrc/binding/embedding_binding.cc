// Bindings for the embedding family (csrc/cpu/embedding.cc).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

// embedding_fwd(out, table, ids, T, V, C): out (T,C) f32, table (V,C) f32|bf16, ids (T) int32.
Napi::Value EmbeddingFwd(const Napi::CallbackInfo& info) {
  Args a(info, "embedding_fwd", 6);
  int64_t T = a.int64(3, "T", 0, kMaxElems), V = a.int64(4, "V", 0, INT32_MAX), C = a.int64(5, "C", 0, kMaxElems);
  float* out = a.f32(0, "out", checked_numel(a.env(), a.op(), {T, C}));
  rt_dtype dt;
  const void* table = a.floating(1, "table", checked_numel(a.env(), a.op(), {V, C}), &dt);
  const int32_t* ids = a.i32(2, "ids", T);
  check_status(a.env(), RT_OP(a, embedding_fwd)(out, table, dt, ids, T, V, C));
  return info.Env().Undefined();
}

// embedding_bwd(dtable, dout, ids, T, V, C): dtable (V,C) f32 accumulated into, dout (T,C) f32.
Napi::Value EmbeddingBwd(const Napi::CallbackInfo& info) {
  Args a(info, "embedding_bwd", 6);
  int64_t T = a.int64(3, "T", 0, kMaxElems), V = a.int64(4, "V", 0, INT32_MAX), C = a.int64(5, "C", 0, kMaxElems);
  float* dtable = a.f32(0, "dtable", checked_numel(a.env(), a.op(), {V, C}));
  const float* dout = a.f32(1, "dout", checked_numel(a.env(), a.op(), {T, C}));
  const int32_t* ids = a.i32(2, "ids", T);
  check_status(a.env(), RT_OP(a, embedding_bwd)(dtable, dout, ids, T, V, C));
  return info.Env().Undefined();
}

}  // namespace

void register_embedding(Napi::Env env, Napi::Object exports) {
  exports.Set("embedding_fwd", Napi::Function::New(env, EmbeddingFwd));
  exports.Set("embedding_bwd", Napi::Function::New(env, EmbeddingBwd));
}

}  // namespace rtb
