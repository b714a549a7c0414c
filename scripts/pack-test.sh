#!/usr/bin/env bash
# npm run test:pack  (bash scripts/pack-test.sh [--keep])
# The packaging test: builds the CPU prebuild (npm run build:prebuild) and the TypeScript
# (npm run build:ts), packs the package (npm pack), and installs the tarball into an empty
# folder with a PATH that reaches only node, npm, npx and a few shell tools — no cc, gcc,
# g++, c++, clang, make, cmake or nvcc — and LD_LIBRARY_PATH pointing at an empty folder.
# Dependencies come from the npm cache (--prefer-offline) or the registry. Then, in that
# folder and environment:
#   - the install compiled nothing (no build/ in the installed package) and the installed
#     .node needs no OpenBLAS/gfortran/CUDA library (ldd);
#   - `npx router-tuning info --json`: cuda false, an OpenBLAS blas string;
#   - `npx router-tuning generate --prompt "Call me" --max-tokens 8 --json` on the
#     embedded model (models/ ships in the tarball) produces 8 tokens;
#   - the addon that is mapped is the prebuild, and no libopenblas is mapped;
#   - ESM (`import { loadModel, backendInfo } from 'router-tuning'`), CommonJS
#     (`require('router-tuning')`) and both share one module instance;
#   - the types: a .mts and a .cts consumer type-check (tsc, module node16).
# Prints the tarball size, the unpacked size and the install time. Fails loudly (exit 1)
# on any problem. RT_PACK_NO_BUILD=1 packs what is built already; --keep keeps the temp folder.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
keep=${1:-}

fail() { echo "pack-test: FAIL: $*" >&2; exit 1; }
step() { echo "pack-test: == $*"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rt-pack-test.XXXXXX")
cleanup() { if [ "$keep" = --keep ]; then echo "pack-test: kept $tmp"; else rm -rf "$tmp"; fi; }
trap cleanup EXIT

if [ "${RT_PACK_NO_BUILD:-0}" != 1 ]; then
  step "build the CPU prebuild (npm run build:prebuild)"
  npm run --silent build:prebuild
  step "build the TypeScript and the ESM entry (npm run build:ts)"
  npm run --silent build:ts
fi
[ -f dist/lib/index.js ] && [ -f dist/esm/index.mjs ] || fail "dist/ is not built (npm run build:ts)"
ls prebuilds/linux-x64/*.node >/dev/null 2>&1 || fail "no prebuilds/linux-x64/*.node (npm run build:prebuild)"

step "npm pack"
npm pack --pack-destination "$tmp" --json >"$tmp/pack.json" 2>"$tmp/pack.log" || { cat "$tmp/pack.log" >&2; fail "npm pack failed"; }
read -r tarball size unpacked entries < <(node -e "
  const j = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'))[0];
  const need = ['package.json', 'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/esm/index.mjs', 'dist/esm/index.d.mts',
    'dist/lib/cli/main.js', 'models/dense/config.json', 'models/dense/model.safetensors', 'binding.gyp', 'scripts/install.js'];
  const have = new Set(j.files.map((f) => f.path));
  const missing = need.filter((f) => !have.has(f));
  if (!j.files.some((f) => /^prebuilds\/linux-x64\/.*\.node$/.test(f.path))) missing.push('prebuilds/linux-x64/*.node');
  if (missing.length) { console.error('pack-test: the tarball lacks ' + missing.join(', ')); process.exit(1); }
  console.log(j.filename, j.size, j.unpackedSize, j.entryCount);
" "$tmp/pack.json") || fail "the tarball misses files (package.json \"files\")"
tarball="$tmp/$tarball"
[ -f "$tarball" ] || fail "npm pack wrote no $tarball"

step "a PATH without compilers"
bin="$tmp/bin"
mkdir -p "$bin" "$tmp/no-libs" "$tmp/app"
node_exe=$(command -v node)
ln -s "$node_exe" "$bin/node"
for t in npm npx; do
  p=$(command -v "$t") || fail "$t not found"
  ln -s "$p" "$bin/$t"
done
# Basic tools npm and its lifecycle scripts may call; nothing that compiles.
for t in sh bash env cat ls mkdir rm cp mv ln chmod uname grep sed tr head tail dirname basename readlink realpath sleep; do
  p=$(type -P "$t" 2>/dev/null) && ln -s "$p" "$bin/$t"
done
renv=(env -i "PATH=$bin" "HOME=$HOME" "TMPDIR=${TMPDIR:-/tmp}" "LANG=${LANG:-C.UTF-8}" "LD_LIBRARY_PATH=$tmp/no-libs"
      "npm_config_update_notifier=false" "npm_config_fund=false" "npm_config_audit=false")
# Keep the network/cache settings npm may need (proxy, CA bundle, cache and registry).
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY NODE_EXTRA_CA_CERTS SSL_CERT_FILE SSL_CERT_DIR \
         npm_config_cache npm_config_registry npm_config_cafile; do
  [ -n "${!v:-}" ] && renv+=("$v=${!v}")
done
for c in cc gcc g++ c++ clang clang++ make gmake cmake nvcc ld; do
  if "${renv[@]}" sh -c "command -v $c" >/dev/null 2>&1; then fail "$c is reachable on the test PATH"; fi
done
echo "pack-test: PATH=$bin (no cc/gcc/g++/c++/clang/make/cmake/nvcc/ld), LD_LIBRARY_PATH=$tmp/no-libs"

step "npm install the tarball into an empty folder"
cd "$tmp/app"
echo '{ "name": "rt-pack-test-app", "version": "1.0.0", "private": true }' >package.json
t0=$(date +%s.%N)
"${renv[@]}" npm install --prefer-offline --no-audit --no-fund --loglevel=error "$tarball" >"$tmp/install.log" 2>&1 \
  || { cat "$tmp/install.log" >&2; fail "npm install of the tarball failed without a compiler"; }
t1=$(date +%s.%N)
install_s=$(node -p "($t1 - $t0).toFixed(1)")
pkg="$tmp/app/node_modules/router-tuning"
[ -d "$pkg" ] || fail "node_modules/router-tuning is missing after the install"
[ ! -e "$pkg/build" ] || fail "the install compiled the addon from source ($pkg/build exists): the prebuild did not load"
installed_kb=$(du -sk "$pkg" | cut -f1)
all_kb=$(du -sk "$tmp/app/node_modules" | cut -f1)

step "the installed addon's libraries (ldd)"
node_file=$(ls "$pkg"/prebuilds/linux-x64/*.node)
deps=$(ldd "$node_file") || fail "ldd $node_file failed"
echo "$deps" | sed 's/^/  /'
if grep -Eiq 'openblas|libblas|liblapack|gfortran|cudart|cublas|not found' <<<"$deps"; then
  fail "the installed addon needs a library users may not have (see ldd above)"
fi

step "npx router-tuning info --json"
"${renv[@]}" npx --no-install router-tuning info --json >"$tmp/info.json" 2>"$tmp/info.err" \
  || { cat "$tmp/info.err" "$tmp/info.json" >&2; fail "router-tuning info failed"; }
node -e "
  const i = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));
  if (i.cuda !== false) { console.error('pack-test: info: cuda is not false:', i.cuda); process.exit(1); }
  if (!/OpenBLAS/.test(String(i.blas))) { console.error('pack-test: info: blas is not OpenBLAS:', i.blas); process.exit(1); }
  console.log('  cuda=' + i.cuda + ' blas=\"' + i.blas + '\" simd=' + i.simd + ' threads=' + i.threads + ' version=' + i.version);
" "$tmp/info.json" || { cat "$tmp/info.json" >&2; fail "info --json is not what it should be"; }

step "npx router-tuning generate on the embedded model"
t0=$(date +%s.%N)
"${renv[@]}" npx --no-install router-tuning generate --model "$pkg/models/dense" --prompt "Call me" --max-tokens 8 --json \
  >"$tmp/gen.json" 2>"$tmp/gen.err" || { cat "$tmp/gen.err" "$tmp/gen.json" >&2; fail "router-tuning generate failed"; }
t1=$(date +%s.%N)
gen_s=$(node -p "($t1 - $t0).toFixed(1)")
node -e "
  const g = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));
  const n = (g.tokens || []).length;
  if (n !== 8 || typeof g.text !== 'string') { console.error('pack-test: generate: expected 8 tokens and a text, got', JSON.stringify(g)); process.exit(1); }
  console.log('  text=' + JSON.stringify(g.text) + ' tokens=' + n + ' decode tok/s=' + (g.stats && g.stats.decodeTokensPerSecond ? g.stats.decodeTokensPerSecond.toFixed(1) : '?'));
" "$tmp/gen.json" || { cat "$tmp/gen.json" >&2; fail "generate --json is not what it should be"; }

step "ESM and CommonJS entry points; which addon is mapped"
cat >esm-check.mjs <<'EOF'
import { loadModel, backendInfo, Tensor, tidy, ops, RouterTuningError } from 'router-tuning';
import rt from 'router-tuning';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
const cjs = createRequire(import.meta.url)('router-tuning');
const problems = [];
if (typeof loadModel !== 'function') problems.push('loadModel is not a function');
if (typeof backendInfo !== 'function') problems.push('backendInfo is not a function');
if (loadModel !== cjs.loadModel || Tensor !== cjs.Tensor || rt !== cjs) problems.push('ESM and CJS entries are different instances');
if (typeof ops.rmsnorm !== 'function' || typeof tidy !== 'function' || !(new RouterTuningError('X', 'y') instanceof Error)) problems.push('ops/tidy/errors missing');
const ns = await import('router-tuning');
const missing = Object.keys(cjs).filter((k) => k !== 'default' && !(k in ns));
if (missing.length) problems.push('not exported to ESM: ' + missing.join(', '));
const info = backendInfo();
const maps = readFileSync('/proc/self/maps', 'utf8');
const addon = [...new Set(maps.split('\n').map((l) => l.split(/\s+/)[5]).filter((p) => p && p.endsWith('.node')))];
if (!addon.some((p) => p.includes('/node_modules/router-tuning/prebuilds/linux-x64/'))) problems.push('the mapped addon is not the prebuild: ' + addon.join(', '));
const blasLibs = maps.split('\n').filter((l) => /libopenblas|libblas|liblapack|libgfortran/.test(l));
if (blasLibs.length) problems.push('a system BLAS library is mapped: ' + blasLibs[0]);
if (problems.length) { console.error('pack-test: ' + problems.join('; ')); process.exit(1); }
console.log('  ESM: import { loadModel, backendInfo } works (' + Object.keys(cjs).length + ' names, same instance as require); addon ' + addon.join(', ') + '; ' + info.blas.split(' ').slice(0, 2).join(' '));
EOF
"${renv[@]}" node esm-check.mjs || fail "the ESM entry point"
"${renv[@]}" node --input-type=module -e "import { loadModel, backendInfo } from 'router-tuning'; if (typeof loadModel !== 'function' || backendInfo().cuda !== false) process.exit(1);" \
  || fail "node --input-type=module -e \"import { loadModel } from 'router-tuning'\""
"${renv[@]}" node -e "
  const rt = require('router-tuning');
  if (typeof rt.loadModel !== 'function' || typeof rt.backendInfo !== 'function') process.exit(1);
  if (require('router-tuning/package.json').name !== 'router-tuning') process.exit(1);
  let blocked = false; try { require('router-tuning/dist/lib/native'); } catch (e) { blocked = e.code === 'ERR_PACKAGE_PATH_NOT_EXPORTED'; }
  if (!blocked) { console.error('deep import not blocked by exports'); process.exit(1); }
  console.log('  CJS: require(\'router-tuning\') works; ./package.json exported; deep imports blocked by the exports map');
" || fail "the CommonJS entry point"

step "types (tsc, module node16) for an ESM and a CommonJS consumer"
tsc="$repo/node_modules/typescript/bin/tsc"
if [ -f "$tsc" ]; then
  cat >types-check.mts <<'EOF'
import { loadModel, backendInfo, Tensor, RouterTuningError, type BackendInfo, type LoadModelOptions } from 'router-tuning';
import rt from 'router-tuning';
const info: BackendInfo = backendInfo();
const cuda: boolean = info.cuda;
const load: (dir: string, options?: LoadModelOptions) => Promise<unknown> = loadModel;
const same: typeof loadModel = rt.loadModel;
const e: Error = new RouterTuningError('RT_ERR_ARG', 'x');
const code: string = (e as RouterTuningError).code;
const t: typeof Tensor = rt.Tensor;
export { cuda, load, same, code, t };
EOF
  cat >types-check.cts <<'EOF'
import rt = require('router-tuning');
const info: rt.BackendInfo = rt.backendInfo();
const n: number = info.threads;
const m: Promise<rt.CausalLM> = rt.loadModel('dir');
export = { n, m };
EOF
  node "$tsc" --noEmit --strict --module node16 --moduleResolution node16 --target es2022 --skipLibCheck \
    --typeRoots "$repo/node_modules/@types" --types node types-check.mts types-check.cts \
    || fail "the package's types do not type-check for ESM/CJS consumers"
  echo "  types-check.mts and types-check.cts type-check"
else
  echo "  (skipped: $tsc not found)"
fi

mb() { node -p "($1 / 1048576).toFixed(1)"; }
echo
echo "pack-test: OK"
echo "pack-test: tarball $(basename "$tarball"): $(mb "$size") MB ($entries files), unpacked $(mb "$unpacked") MB; installed package $(mb $((installed_kb * 1024))) MB, node_modules $(mb $((all_kb * 1024))) MB"
echo "pack-test: install time ${install_s} s (npm install --prefer-offline of the tarball, no compiler); generate (8 tokens, incl. start-up) ${gen_s} s"
