// Bindings for the cross_entropy op family (to be implemented).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
void register_cross_entropy(Napi::Env, Napi::Object) {}
}  // namespace rtb
