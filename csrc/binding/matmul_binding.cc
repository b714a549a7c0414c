// Bindings for the matmul family (csrc/cpu/matmul.cc).
#include <string>

#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
namespace {

// Elements a strided batch of `matrix`-sized items needs: (batch-1)·stride + matrix
// (just the matrix when the stride is 0, i.e. broadcast), 0 for an empty batch.
int64_t batch_extent(Napi::Env env, const char* op, int64_t batch, int64_t stride, int64_t matrix) {
  if (batch == 0 || matrix == 0) return 0;
  if (stride == 0) return matrix;
  int64_t span = checked_numel(env, op, {batch - 1, stride});
  if (span > (int64_t(1) << 53) - matrix) throw_error(env, "RangeError", "RT_ERR_SHAPE", std::string(op) + ": tensor size overflows 2^53 elements");
  return span + matrix;
}

// matmul(c, a, b, transA, transB, batch, M, N, K, strideA, strideB, strideC, alpha, beta)
// c (f32), a (f32), b (f32 or bf16); C[i] = alpha·op(A[i])·op(B[i]) + beta·C[i].
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Args a(info, "matmul", 14);
  Napi::Env env = a.env();
  bool ta = a.flag(3, "transA"), tb = a.flag(4, "transB");
  int64_t batch = a.int64(5, "batch", 0, kMaxElems);
  int64_t M = a.int64(6, "M", 0, kMaxElems), N = a.int64(7, "N", 0, kMaxElems), K = a.int64(8, "K", 0, kMaxElems);
  int64_t sa = a.int64(9, "strideA", 0, kMaxElems), sb = a.int64(10, "strideB", 0, kMaxElems),
          sc = a.int64(11, "strideC", 0, kMaxElems);
  float alpha = static_cast<float>(a.number(12, "alpha")), beta = static_cast<float>(a.number(13, "beta"));
  int64_t mk = checked_numel(env, a.op(), {M, K}), kn = checked_numel(env, a.op(), {K, N}),
          mn = checked_numel(env, a.op(), {M, N});
  float* c = a.f32(0, "c", batch_extent(env, a.op(), batch, sc, mn));
  const float* x = a.f32(1, "a", batch_extent(env, a.op(), batch, sa, mk));
  rt_dtype bdt;
  const void* y = a.floating(2, "b", batch_extent(env, a.op(), batch, sb, kn), &bdt);
  // The kernel writes C while reading A and B: an aliased output would read its own writes.
  if (batch > 0 && mn > 0 && (static_cast<const void*>(c) == x || static_cast<const void*>(c) == y))
    throw_error(env, "RangeError", "RT_ERR_ARG",
                std::string("matmul: 'c' expected a buffer distinct from '") + (c == x ? "a" : "b") +
                    "', received the same tensor");
  check_status(env, RT_OP(a, matmul)(c, x, y, bdt, ta ? 1 : 0, tb ? 1 : 0, batch, M, N, K, sa, sb, sc, alpha, beta));
  return env.Undefined();
}

}  // namespace

void register_matmul(Napi::Env env, Napi::Object exports) { exports.Set("matmul", Napi::Function::New(env, Matmul)); }

}  // namespace rtb
