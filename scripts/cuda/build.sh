#!/usr/bin/env bash
# npm run build:cuda [-- --install]: the addon with the CUDA backend, through CMake and
# nvcc, into build-cuda/ (the CPU-only build in build/ is untouched). --install copies it
# to build/Release/ so `require('router-tuning')` loads it; otherwise point RT_ADDON at
# build-cuda/router_tuning.node. Without a GPU the CUDA build still loads and runs on the
# CPU (backendInfo().cuda is false). RT_CUDA_ARCHS="90-real" narrows the architectures.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${RT_CUDA_BUILD_DIR:-build-cuda}
nvcc=$(command -v nvcc || true)
[ -n "$nvcc" ] || for c in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do [ -x "$c" ] && nvcc=$c && break; done
if [ -z "$nvcc" ]; then
  echo "build:cuda: nvcc was not found (install the CUDA toolkit, or put nvcc on PATH)" >&2
  exit 1
fi
args=(-S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DRT_REQUIRE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc")
[ -n "${RT_CUDA_ARCHS:-}" ] && args+=("-DRT_CUDA_ARCHS=$RT_CUDA_ARCHS")
# RT_OPENBLAS_LIB=/path/libopenblas.a links OpenBLAS statically (a self-contained addon).
[ -n "${RT_OPENBLAS_LIB:-}" ] && args+=("-DOPENBLAS_LIB=$RT_OPENBLAS_LIB")
cmake "${args[@]}" >"$build.configure.log" 2>&1 || { cat "$build.configure.log" >&2; exit 1; }
cmake --build "$build" -j "$(nproc)"
echo "build:cuda: $build/router_tuning.node ($("$nvcc" --version | tail -1))"
if [ "${1:-}" = --install ]; then
  mkdir -p build/Release
  cp "$build/router_tuning.node" build/Release/router_tuning.node
  echo "build:cuda: installed as build/Release/router_tuning.node"
fi
