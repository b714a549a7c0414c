// The router-tuning kernel ABI: every op of every backend, one include.
// csrc/cpu implements all of it; csrc/cuda implements the same names with an
// rt_cuda_ prefix (or, when built without nvcc, a stub that reports RT_ERR_UNAVAILABLE).
#pragma once
#include "rt/common.h"
#include "rt/elementwise.h"
#include "rt/matmul.h"
#include "rt/embedding.h"
#include "rt/rmsnorm.h"
#include "rt/rope.h"
#include "rt/attention.h"
#include "rt/swiglu.h"
#include "rt/cross_entropy.h"
#include "rt/router.h"
#include "rt/gather_scatter.h"
#include "rt/moe.h"
#include "rt/adamw.h"
#include "rt/cuda_ops.h"
