#!/usr/bin/env bash
# scripts/device-check.sh OUTDIR [--prebuilt]
# One prepared run on a machine with an NVIDIA GPU: builds the CUDA variant (or, with
# --prebuilt, uses build-cuda/router_tuning.node as it is), runs the CUDA parity and
# model tests (npm run test:cuda) and the CUDA bench (npm run bench:cuda), and writes
# to OUTDIR: env.txt, build.log, test-cuda.log, bench-cuda.log, bench-cuda.json,
# bench-cuda.md and summary.md. Needs node >= 20 on PATH; compiled TypeScript in dist/
# (npm run build:ts) when node_modules/.bin/tsc is absent. Exits non-zero when a step fails,
# after writing everything it could.
set -uo pipefail
out=${1:?usage: scripts/device-check.sh OUTDIR [--prebuilt]}
prebuilt=${2:-}
cd "$(dirname "$0")/.."
mkdir -p "$out"
status=0
step() { echo "== $(date +%T) $*" | tee -a "$out/steps.txt"; }

step "environment"
{
  date -u
  uname -a
  node --version
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
  command -v nvcc >/dev/null && nvcc --version | tail -2
} >"$out/env.txt" 2>&1

step "build the CUDA variant"
if [ "$prebuilt" = --prebuilt ]; then
  echo "using the prebuilt build-cuda/router_tuning.node" >"$out/build.log"
  [ -f build-cuda/router_tuning.node ] || { echo "missing build-cuda/router_tuning.node" >>"$out/build.log"; exit 1; }
else
  RT_CUDA_ARCHS=${RT_CUDA_ARCHS:-90-real} bash scripts/cuda/build.sh >"$out/build.log" 2>&1 || { status=1; tail -30 "$out/build.log"; exit 1; }
fi
export RT_ADDON=$PWD/build-cuda/router_tuning.node
node -e "const b=require('./dist/lib/backend').backendInfo(); console.log(JSON.stringify(b, null, 1))" >>"$out/env.txt" 2>&1 || status=1

tsc=node_modules/.bin/tsc
step "test:cuda"
if [ -x "$tsc" ]; then "$tsc" -p tsconfig.cuda.json >>"$out/build.log" 2>&1 || status=1; fi
# Each file in its own process, reporting as it goes (TAP), so a crash keeps what ran.
: >"$out/test-cuda.log"
for f in dist/test/cuda/parity.js dist/test/cuda/model.js; do
  echo "# file $f" >>"$out/test-cuda.log"
  timeout 150 node "$f" >>"$out/test-cuda.log" 2>&1
  rc=$?
  echo "# exit $f: $rc$( [ $rc -gt 128 ] && echo " (signal $((rc - 128)))")" >>"$out/test-cuda.log"
  [ $rc = 0 ] || status=1
  # A crash (signal): one native backtrace from cuda-gdb when the machine has it.
  if [ $rc -gt 128 ] && [ $rc != 137 ] && command -v cuda-gdb >/dev/null 2>&1; then
    echo "# backtrace of $f" >>"$out/test-cuda.log"
    timeout 90 cuda-gdb -q -batch -ex run -ex bt --args "$(command -v node)" "$f" 2>&1 | grep -E '^#[0-9]|signal|SIG' | head -40 >>"$out/test-cuda.log"
  fi
done
grep -E '^(not ok|# (exit|pass|fail))' "$out/test-cuda.log"

step "bench:cuda"
benchdir=$(mktemp -d)
timeout 220 node dist/bench/main.js --suite cuda --json --out "$benchdir" >"$out/bench-cuda.json" 2>"$out/bench-cuda.log" || status=1
cp "$benchdir/results.md" "$out/bench-cuda.md" 2>/dev/null || true

step "summary"
node scripts/cuda/summarize.js "$out" >"$out/summary.md" 2>&1 || status=1
cat "$out/summary.md"
exit $status
