// Guards used at the top of every CPU op: they turn a bad argument into a status and
// a message naming the op, the expectation and what was received.
#pragma once
#include "rt/common.h"

#define RT_REQUIRE(cond, status, ...)      \
  do {                                     \
    if (!(cond)) return rt_fail((status), __VA_ARGS__); \
  } while (0)

#define RT_REQUIRE_PTR(ptr, op, name) \
  RT_REQUIRE((ptr) != nullptr, RT_ERR_ARG, "%s: expected a buffer for '%s', received NULL", (op), (name))

#define RT_REQUIRE_NONNEG(v, op, name) \
  RT_REQUIRE((v) >= 0, RT_ERR_SHAPE, "%s: expected %s >= 0, received %lld", (op), (name), (long long)(v))

#define RT_REQUIRE_DTYPE_FLOAT(dt, op, name)                                                                   \
  RT_REQUIRE((dt) == RT_F32 || (dt) == RT_BF16, RT_ERR_DTYPE, "%s: expected '%s' float32 or bfloat16, received %s", \
             (op), (name), rt_dtype_name(dt))
