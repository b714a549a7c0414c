// Bindings for the adamw op family (to be implemented).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
void register_adamw(Napi::Env, Napi::Object) {}
}  // namespace rtb
