#!/usr/bin/env bash
# npm run fuzz [-- --seconds N]: fuzzes every parser of untrusted input for N seconds each
# (default 60):
#   1. native ops (libFuzzer + AddressSanitizer + UBSan, clang from Debian: apt-get install
#      clang libclang-rt-14-dev): fuzz/native_ops_fuzz.cc drives the kernels that take
#      indices/sizes from files and requests (ids, rows, positions, targets, expert ids,
#      permutations, bounds, attention positions, padding masks);
#   2. the safetensors reader (a mutation fuzzer in JS: scripts/fuzz-safetensors.js; the
#      header path of every checkpoint, router file and LoRA adapter goes through it).
# Findings: crash files under build-fuzz/; the script exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    *) echo "fuzz: unknown option $1 (usage: npm run fuzz -- --seconds N)" >&2; exit 2 ;;
  esac
done
cxx=$(command -v clang++ || command -v clang++-14 || true)
if [ -z "$cxx" ]; then
  echo "fuzz: clang++ not found (apt-get install -y clang libclang-rt-14-dev)" >&2
  exit 1
fi
mkdir -p build-fuzz/corpus-native
openblas_inc=/usr/include/x86_64-linux-gnu/openblas-pthread
openblas_lib=/usr/lib/x86_64-linux-gnu/openblas-pthread
bin=build-fuzz/native_ops_fuzz
if [ ! -x "$bin" ] || [ -n "$(find csrc fuzz -newer "$bin" -name '*.[ch]*' | head -1)" ]; then
  echo "fuzz: building $bin (libFuzzer + ASan + UBSan) …"
  "$cxx" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -DRT_NO_CLONES \
    -Icsrc/include -Icsrc/cpu -I"$openblas_inc" fuzz/native_ops_fuzz.cc csrc/cpu/*.cc \
    -L"$openblas_lib" -lopenblas -lpthread -o "$bin"
fi
echo "fuzz: native ops — regression inputs of fixed findings (fuzz/regressions/)"
(cd build-fuzz && ./native_ops_fuzz ../fuzz/regressions/*.bin 2>&1 | grep -E 'Executed|ERROR|runtime error' )
echo "fuzz: native ops for ${seconds}s"
(cd build-fuzz && ASAN_OPTIONS=detect_leaks=1 ./native_ops_fuzz -max_total_time="$seconds" -print_final_stats=1 \
  -artifact_prefix=./ corpus-native 2>&1 | grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)|ERROR|runtime error|SUMMARY|Test unit written' )
echo "fuzz: safetensors reader for ${seconds}s"
node scripts/fuzz-safetensors.js --seconds "$seconds"
