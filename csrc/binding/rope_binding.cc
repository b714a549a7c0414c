// Bindings for the rope op family (to be implemented).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
void register_rope(Napi::Env, Napi::Object) {}
}  // namespace rtb
