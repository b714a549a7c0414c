// The engine's single thread pool. Every CPU op parallelises through parallel_for;
// OpenBLAS runs one thread per call, and large GEMMs are split across this pool, so
// the two never oversubscribe the cores.
#pragma once
#include <cstdint>
#include <functional>

namespace rt {

// Calls fn(begin, end) over [0, n) in chunks of at least `grain` items, on up to
// num_threads() threads (the caller is one of them). Nested calls run serially.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Index of the calling pool thread in [0, num_threads()), for per-thread scratch.
int thread_index();

}  // namespace rt
