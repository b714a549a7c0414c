#!/usr/bin/env bash
# npm run build:prebuild [-- --cuda | --cuda-only]   (bash scripts/prebuild.sh …)
# (not `npm run prebuild`: npm would run a script of that name before every `npm run build`)
# Builds the self-contained prebuilt addons that `npm pack` ships (linux-x64, glibc):
#   prebuilds/linux-x64/router_tuning.napi.glibc.node        CPU addon (always, unless --cuda-only)
#   prebuilds-cuda/linux-x64/router_tuning.napi.glibc.node   CUDA variant (--cuda, or RT_PREBUILD_CUDA=1)
# Both link OpenBLAS statically (RT_OPENBLAS_LIB, default the Debian/Ubuntu
# libopenblas-pthread-dev archive) and hide its symbols (-Wl,--exclude-libs,ALL), so the
# .node needs only libc, libm, libstdc++ and libgcc_s; the CUDA variant also links cudart
# statically (cuBLAS is dlopen()ed at run time) and is compiled for sm_80/86/89/90 + PTX
# (RT_CUDA_ARCHS overrides). The file names follow node-gyp-build 4.8 (napi + libc tags),
# so `node-gyp-build` (the install script) and lib/native.ts find the CPU one. The CUDA one
# lives in its own folder (with its own package.json, so it can also be packed as the
# optional package router-tuning-cuda-linux-x64); lib/native.ts probes it in a child process
# before loading it. Build folders: build-prebuild/ and build-prebuild-cuda/.
set -euo pipefail
cd "$(dirname "$0")/.."

cpu=1
cuda=${RT_PREBUILD_CUDA:-0}
for a in "$@"; do
  case "$a" in
    --cuda) cuda=1 ;;
    --cuda-only) cuda=1; cpu=0 ;;
    --help|-h) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "prebuild: unknown argument '$a' (use --cuda or --cuda-only)" >&2; exit 2 ;;
  esac
done

die() { echo "prebuild: $*" >&2; exit 1; }
[ "$(uname -s)" = Linux ] || die "prebuilt binaries are built on Linux only (this is $(uname -s))"
case "$(uname -m)" in x86_64) tuple=linux-x64 ;; aarch64) tuple=linux-arm64 ;; *) die "unsupported machine $(uname -m)" ;; esac
if [ -e /etc/alpine-release ] || ls /lib/ld-musl-* >/dev/null 2>&1; then libc=musl; else libc=glibc; fi
name="router_tuning.napi.$libc.node"
command -v cmake >/dev/null || die "cmake not found (apt-get install -y cmake)"

blas=${RT_OPENBLAS_LIB:-}
if [ -z "$blas" ]; then
  for c in /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a /usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.a \
           /usr/lib/x86_64-linux-gnu/libopenblas.a /usr/lib64/libopenblas.a /usr/lib/libopenblas.a; do
    [ -f "$c" ] && blas=$c && break
  done
fi
[ -n "$blas" ] && [ -f "$blas" ] || die "no static OpenBLAS (libopenblas.a) found: apt-get install -y libopenblas-pthread-dev, or set RT_OPENBLAS_LIB=/path/libopenblas.a"

jobs=$(nproc 2>/dev/null || echo 2)
# Hide the archive's symbols (no clash with another OpenBLAS in the process), drop unused
# sections, strip the result.
ldflags="-Wl,--exclude-libs,ALL -Wl,--gc-sections -Wl,--as-needed -s"

# check FILE: loads in a child process, reports, and needs no OpenBLAS/cudart/cuBLAS.
check() {
  local f=$1 deps
  deps=$(ldd "$f" 2>&1) || die "ldd $f failed: $deps"
  if grep -Eq 'openblas|libblas|liblapack|libgfortran|libcudart|libcublas|not found' <<<"$deps"; then
    echo "$deps" >&2
    die "$f depends on a library that users may not have (see ldd above)"
  fi
  node -e "
    const b = require(process.argv[1]); const i = b.runtime_info();
    console.log('prebuild: ' + process.argv[1] + ' loads: blas=' + JSON.stringify(i.blas) + ' simd=' + i.simd + ' cuda=' + i.cuda + (i.cuda ? '' : ' (' + i.cudaReason + ')'));
  " "$PWD/$f" || die "$f does not load"
  echo "prebuild: $f needs only: $(awk '/=>/{print $1}' <<<"$deps" | tr '\n' ' ')"
  echo "prebuild: $f $(du -h "$f" | cut -f1)"
}

if [ "$cpu" = 1 ]; then
  b=build-prebuild
  echo "prebuild: CPU addon ($tuple $libc, OpenBLAS static: $blas) in $b/"
  cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=Release -DRT_CUDA=OFF -DOPENBLAS_LIB="$blas" \
        -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" >"$b.configure.log" 2>&1 \
    || { cat "$b.configure.log" >&2; die "cmake configure failed"; }
  cmake --build "$b" -j "$jobs"
  mkdir -p "prebuilds/$tuple"
  rm -f "prebuilds/$tuple"/*.node
  cp "$b/router_tuning.node" "prebuilds/$tuple/$name"
  check "prebuilds/$tuple/$name"
fi

if [ "$cuda" = 1 ]; then
  nvcc=$(command -v nvcc || true)
  [ -n "$nvcc" ] || for c in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do [ -x "$c" ] && nvcc=$c && break; done
  [ -n "$nvcc" ] || die "--cuda: nvcc was not found (install the CUDA toolkit, or put nvcc on PATH)"
  b=build-prebuild-cuda
  archs=${RT_CUDA_ARCHS:-80-real;86-real;89-real;90-real;90-virtual}
  echo "prebuild: CUDA addon ($tuple $libc, archs $archs, $("$nvcc" --version | tail -1)) in $b/ (several minutes)"
  cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=Release -DRT_REQUIRE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" \
        -DRT_CUDA_ARCHS="$archs" -DOPENBLAS_LIB="$blas" -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" >"$b.configure.log" 2>&1 \
    || { cat "$b.configure.log" >&2; die "cmake configure failed"; }
  cmake --build "$b" -j "$jobs"
  mkdir -p "prebuilds-cuda/$tuple"
  rm -f "prebuilds-cuda/$tuple"/*.node
  cp "$b/router_tuning.node" "prebuilds-cuda/$tuple/$name"
  version=$(node -p "require('./package.json').version")
  cat >prebuilds-cuda/package.json <<EOF
{
  "name": "router-tuning-cuda-$tuple",
  "version": "$version",
  "description": "CUDA variant of the router-tuning native addon ($tuple, $libc; sm_80/86/89/90 + PTX). lib/native.ts of router-tuning finds it and probes it before loading.",
  "license": "MIT",
  "os": ["linux"],
  "cpu": ["${tuple#linux-}"],
  "files": ["$tuple"]
}
EOF
  check "prebuilds-cuda/$tuple/$name"
fi
