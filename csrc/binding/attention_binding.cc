// Bindings for the attention op family (to be implemented).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
void register_attention(Napi::Env, Napi::Object) {}
}  // namespace rtb
