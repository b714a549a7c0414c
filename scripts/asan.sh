#!/usr/bin/env bash
# npm run test:asan: the addon built with AddressSanitizer + UndefinedBehaviorSanitizer
# (CMake -DRT_SANITIZE=ON, CPU only, no SIMD clones) into build-asan/, then
#   1. the native op tests (test/ops, test/tensor, test/threads) against it;
#   2. a leak check: load / generate / dispose loops of the embedded model, after which
#      every native buffer must be returned (scripts/leak-check.js), under ASan.
# libasan is preloaded into node (the sanitizer runtime must come first); leak detection
# of node's own allocations at exit is off (LSan cannot tell V8's deliberate leaks from
# ours), the counted allocator checks ours instead. Any sanitizer report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-asan
if [ ! -f "$build/router_tuning.node" ] || [ -n "$(find csrc -newer "$build/router_tuning.node" -name '*.[ch]*' | head -1)" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRT_SANITIZE=ON -DRT_CUDA=OFF >"$build.configure.log" 2>&1 \
    || { cat "$build.configure.log" >&2; exit 1; }
  cmake --build "$build" -j "$(nproc)"
fi
asan=$(g++ -print-file-name=libasan.so)
ubsan=$(g++ -print-file-name=libubsan.so)
export RT_ADDON=$PWD/$build/router_tuning.node
export LD_PRELOAD="$asan $ubsan"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
echo "test:asan: op tests under ASan + UBSan ($RT_ADDON)"
npx jest --runInBand test/ops test/tensor.test.ts test/threads.test.ts test/reliability/bad_input.test.ts
echo "test:asan: leak check"
npx tsc -p tsconfig.json
node scripts/leak-check.js
