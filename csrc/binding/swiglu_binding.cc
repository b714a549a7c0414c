// Bindings for the swiglu op family (to be implemented).
#include "args.h"
#include "registry.h"
#include "rt_ops.h"

namespace rtb {
void register_swiglu(Napi::Env, Napi::Object) {}
}  // namespace rtb
