// Bindings for the router op family (to be implemented).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
void register_router(Napi::Env, Napi::Object) {}
}  // namespace rtb
