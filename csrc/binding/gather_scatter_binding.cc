// Bindings for the gather_scatter op family (to be implemented).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
void register_gather_scatter(Napi::Env, Napi::Object) {}
}  // namespace rtb
