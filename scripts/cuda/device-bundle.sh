#!/usr/bin/env bash
# scripts/cuda/device-bundle.sh: prepares a device check for a GPU machine that has the
# CUDA driver and python3 but no node, npm, OpenBLAS or node headers (the lent H200s).
# Builds here: the CUDA addon for sm_90 with OpenBLAS linked statically (self-contained),
# the TypeScript (dist/), and packs node + the addon as .xz into .devcarry/ (git-ignored
# through .git/info/exclude). The working tree that travels must stay under 64 MiB: move
# models/ and data/corpus/ out of the checkout for the run (the device check needs only
# test/fixtures), and move them back after. The run's command and carry list:
#   carry: .devcarry dist node_modules/@huggingface node_modules/node-gyp-build
#   command: see DEVICE_COMMAND printed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
RT_OPENBLAS_LIB=${RT_OPENBLAS_LIB:-/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a} \
  RT_CUDA_ARCHS=${RT_CUDA_ARCHS:-90-real} bash scripts/cuda/build.sh
npx tsc -p tsconfig.cuda.json
mkdir -p .devcarry
grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info && echo /.devcarry/ >>.git/info/exclude; }
[ -f .devcarry/node.xz ] || xz -T0 -6 -c "$(command -v node)" >.devcarry/node.xz
xz -T0 -6 -c build-cuda/router_tuning.node >.devcarry/addon.xz
ls -la .devcarry
cat <<'CMD'
DEVICE_COMMAND:
mkdir -p /tmp/nb build-cuda; un() { python3 -c "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" "$1" "$2"; }; un .devcarry/node.xz /tmp/nb/node && chmod +x /tmp/nb/node && un .devcarry/addon.xz build-cuda/router_tuning.node && export PATH=/tmp/nb:$PATH && bash scripts/device-check.sh $OUT --prebuilt 2>&1 | tail -60
CMD
