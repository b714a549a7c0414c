// Each op family registers its bindings here; module.cc calls them all.
#pragma once
#include <napi.h>

namespace rtb {
// Largest element count accepted for any size argument (2^46: far above any real tensor).
constexpr int64_t kMaxElems = int64_t(1) << 46;

void register_tensor(Napi::Env env, Napi::Object exports);
void register_elementwise(Napi::Env env, Napi::Object exports);
void register_matmul(Napi::Env env, Napi::Object exports);
void register_embedding(Napi::Env env, Napi::Object exports);
void register_rmsnorm(Napi::Env env, Napi::Object exports);
void register_rope(Napi::Env env, Napi::Object exports);
void register_attention(Napi::Env env, Napi::Object exports);
void register_swiglu(Napi::Env env, Napi::Object exports);
void register_cross_entropy(Napi::Env env, Napi::Object exports);
void register_router(Napi::Env env, Napi::Object exports);
void register_gather_scatter(Napi::Env env, Napi::Object exports);
void register_moe(Napi::Env env, Napi::Object exports);
void register_adamw(Napi::Env env, Napi::Object exports);
}  // namespace rtb
