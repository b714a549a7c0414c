// The addon's entry point: registers the tensor runtime and every op family.
#include "registry.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  rtb::register_tensor(env, exports);
  rtb::register_elementwise(env, exports);
  rtb::register_matmul(env, exports);
  rtb::register_embedding(env, exports);
  rtb::register_rmsnorm(env, exports);
  rtb::register_rope(env, exports);
  rtb::register_attention(env, exports);
  rtb::register_swiglu(env, exports);
  rtb::register_cross_entropy(env, exports);
  rtb::register_router(env, exports);
  rtb::register_gather_scatter(env, exports);
  rtb::register_moe(env, exports);
  rtb::register_adamw(env, exports);
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  return exports;
}
}  // namespace

NODE_API_MODULE(router_tuning, Init)
