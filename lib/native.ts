/**
 * Loads the native addon (CPU kernels, optional CUDA). Search order:
 *
 *  1. `RT_ADDON=/path/router_tuning.node` — that file only (side-by-side builds,
 *     sanitizer variants); if it does not load, that is an error, never a silent fallback.
 *  2. The CUDA variant — when CUDA is asked for (`RT_DEVICE=cuda`, or `native({ preferCuda })`
 *     before the first use) or when a CUDA binary is present and a GPU is likely
 *     (`/dev/nvidia0` or `/proc/driver/nvidia`). Looked for in `prebuilds-cuda/<platform>-<arch>/`
 *     and in the optional package `router-tuning-cuda-<platform>-<arch>`. It is first loaded
 *     in a child process (`runtime_info()`, with a timeout), so a binary that crashes on load
 *     (wrong driver, bad build) cannot take this process down. `RT_DEVICE=cpu` skips it.
 *  3. A source build, `build/Release/router_tuning.node` (what `npm run build` makes in a
 *     checkout; in an installed package it exists only when the install fell back to
 *     compiling, i.e. no prebuild loaded) — first, like node-gyp-build, so a developer's
 *     fresh build is never shadowed by an older prebuild.
 *  4. The CPU prebuild, `prebuilds/<platform>-<arch>/*.napi[.glibc|.musl].node`
 *     (node-gyp-build 4.8 naming; OpenBLAS linked statically).
 *
 * When nothing loads, one RouterTuningError (code RT_ERR_LOAD) names the platform, arch,
 * libc, Node ABI, every attempt with its error, and the fix.
 * Each op module declares the typed subset of the addon it calls.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { RouterTuningError } from './errors';

export type NativeHandle = object & { readonly __rtHandle?: never };

/** Core runtime functions every module may use; op families add their own typed views. */
export interface NativeCore {
  tensor_alloc(numel: number, dtype: number, device?: number): NativeHandle;
  tensor_free(h: NativeHandle): void;
  tensor_write(h: NativeHandle, data: Float32Array | Int32Array | Uint16Array, offset: number): void;
  tensor_read(h: NativeHandle, data: Float32Array | Int32Array | Uint16Array, offset: number): void;
  tensor_copy(dst: NativeHandle, src: NativeHandle, dstOffset: number, srcOffset: number, count: number): void;
  tensor_info(h: NativeHandle): { numel: number; bytes: number; dtype: number; disposed: boolean; device: string };
  runtime_info(): {
    threads: number;
    simd: string;
    blas: string;
    cuda: boolean;
    cudaDevices: number;
    cudaDevice?: string;
    cudaReason?: string;
    cudaBlas?: string;
    cudaAllocatedBytes?: number;
    cudaPeakBytes?: number;
    cudaCachedBytes?: number;
    cudaLiveBuffers?: number;
    allocatedBytes: number;
    peakBytes: number;
    liveBuffers: number;
  };
  set_num_threads(n: number): void;
  cuda_synchronize(): void;
  cuda_empty_cache(): void;
  cuda_set_gemm_backend(backend: number): void;
  abiVersion: number;
}

/** Hints for the first load of the addon (later calls cannot switch the loaded addon). */
export interface NativeLoadOptions {
  /** Try the CUDA variant first, as `RT_DEVICE=cuda` does (default: only when a GPU is likely). */
  preferCuda?: boolean;
  /** Package folder to search (default: this package; tests point it elsewhere). */
  root?: string;
}

export type AddonKind = 'override' | 'cuda' | 'source' | 'prebuild';

/** One place the loader looked, and why it was not used (`error` absent: it was loaded). */
export interface LoadAttempt {
  kind: AddonKind;
  path: string;
  error?: string;
}

/** Which addon is loaded, and what was tried before it. */
export interface NativeLoadInfo {
  kind: AddonKind;
  path: string;
  attempts: LoadAttempt[];
}

type Addon = NativeCore & Record<string, unknown>;

let cached: Addon | undefined;
let loadInfo: NativeLoadInfo | undefined;
let preference: NativeLoadOptions = {};

/** The package root (holds package.json), from lib/ (ts-jest) or dist/lib/ (compiled). */
export function packageRoot(): string {
  let dir = path.join(__dirname, '..');
  for (let i = 0; i < 3; i++) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
      if (pkg.name === 'router-tuning') return dir;
    } catch {
      /* not here */
    }
    dir = path.dirname(dir);
  }
  return path.join(__dirname, '..', fs.existsSync(path.join(__dirname, '..', 'binding.gyp')) ? '' : '..');
}

/** 'glibc' | 'musl' | 'unknown' on Linux (LIBC overrides, as for node-gyp-build); '' elsewhere. */
export function detectLibc(): string {
  if (process.env.LIBC) return process.env.LIBC;
  if (process.platform !== 'linux') return '';
  if (fs.existsSync('/etc/alpine-release')) return 'musl';
  try {
    if (fs.readdirSync('/lib').some((n) => n.startsWith('ld-musl-'))) return 'musl';
  } catch {
    /* no /lib */
  }
  // The glibc dynamic loader (cheap); else ask process.report (~10 ms).
  for (const dir of ['/lib64', '/lib', '/usr/lib64']) {
    try {
      if (fs.readdirSync(dir).some((n) => /^ld-linux.*\.so\.\d$/.test(n))) return 'glibc';
    } catch {
      /* no such folder */
    }
  }
  const header = reportHeader();
  if (header?.glibcVersionRuntime) return 'glibc';
  return header ? 'musl' : 'unknown';
}

function reportHeader(): { glibcVersionRuntime?: string } | undefined {
  try {
    return (process.report?.getReport() as unknown as { header: { glibcVersionRuntime?: string } }).header;
  } catch {
    return undefined;
  }
}

function libcDescription(): string {
  const libc = detectLibc();
  if (libc === 'glibc') {
    const v = reportHeader()?.glibcVersionRuntime;
    return v ? `glibc ${v}` : 'glibc';
  }
  return libc || 'n/a';
}

/** True when an NVIDIA driver is visible (a GPU is likely usable). */
export function gpuLikely(): boolean {
  return fs.existsSync('/dev/nvidia0') || fs.existsSync('/proc/driver/nvidia');
}

/**
 * The .node in a node-gyp-build style folder that fits this process: N-API (or this
 * exact ABI) and this libc; the most specific name wins.
 */
export function selectPrebuild(dir: string, libc = detectLibc()): string | undefined {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return undefined;
  }
  const fits: { file: string; score: number }[] = [];
  for (const file of names) {
    const tags = file.split('.');
    if (tags.pop() !== 'node') continue;
    let napi = false;
    let abi: string | undefined;
    let fileLibc: string | undefined;
    let runtime: string | undefined;
    for (const t of tags) {
      if (t === 'napi') napi = true;
      else if (t.startsWith('abi')) abi = t.slice(3);
      else if (t === 'glibc' || t === 'musl') fileLibc = t;
      else if (t === 'node' || t === 'electron' || t === 'node-webkit') runtime = t;
    }
    if (runtime && runtime !== 'node' && !napi) continue;
    if (abi !== undefined ? abi !== process.versions.modules : !napi) continue;
    if (fileLibc && fileLibc !== libc) continue;
    fits.push({ file, score: (abi ? 4 : 0) + (fileLibc ? 2 : 0) + (runtime ? 1 : 0) });
  }
  fits.sort((a, b) => b.score - a.score || a.file.localeCompare(b.file));
  return fits.length ? path.join(dir, fits[0].file) : undefined;
}

/** Where CUDA variants may be: prebuilds-cuda/ in the package, or the optional package. */
export function cudaCandidates(root = packageRoot()): { dir: string; file?: string }[] {
  const tuple = `${process.platform}-${process.arch}`;
  const dirs = [path.join(root, 'prebuilds-cuda', tuple)];
  try {
    const pkg = require.resolve(`router-tuning-cuda-${tuple}/package.json`, { paths: [root] });
    dirs.push(path.join(path.dirname(pkg), tuple));
  } catch {
    /* optional package not installed */
  }
  return dirs.map((dir) => ({ dir, file: selectPrebuild(dir) }));
}

export interface ProbeResult {
  ok: boolean;
  /** runtime_info() of the probed addon (when ok). */
  info?: { cuda: boolean; cudaReason?: string; cudaDevice?: string; blas?: string };
  error?: string;
}

/**
 * Loads `file` in a child process and calls runtime_info() there, so a binary that
 * crashes (segfault, abort, missing symbol, hung driver) only takes the child down.
 * Timeout: `timeoutMs`, default RT_PROBE_TIMEOUT_MS or 60 s (CUDA context creation).
 */
export function probeAddon(file: string, timeoutMs = Number(process.env.RT_PROBE_TIMEOUT_MS) || 60000): ProbeResult {
  const script =
    'let b; try { b = require(process.argv[1]); } catch (e) {' +
    ' process.stderr.write("\\nRT_PROBE_ERROR " + String((e && e.message) || e).split("\\n")[0] + "\\n"); process.exit(3); }' +
    'const i = b.runtime_info();' +
    'process.stdout.write("\\nRT_PROBE " + JSON.stringify({ cuda: i.cuda, cudaReason: i.cudaReason, cudaDevice: i.cudaDevice, blas: i.blas }) + "\\n");';
  const env: NodeJS.ProcessEnv = { ...process.env, ELECTRON_RUN_AS_NODE: '1' };
  delete env.RT_ADDON;
  delete env.NODE_OPTIONS;
  const r = spawnSync(process.execPath, ['-e', script, file], {
    encoding: 'utf8',
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    env,
    cwd: os.tmpdir(), // a core dump of a crashing probe does not land in the caller's folder
    stdio: ['ignore', 'pipe', 'pipe'],
    windowsHide: true,
    maxBuffer: 4 << 20,
  });
  const stderr = r.stderr || '';
  const loadErr = /RT_PROBE_ERROR (.*)/.exec(stderr);
  if (loadErr) return { ok: false, error: `does not load (in the probe process): ${loadErr[1].trim()}` };
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const stderrTail = (lines.find((l) => /^\w*Error\b|^Error:|abort|Assertion|terminate/.test(l)) ?? lines.slice(-1)[0] ?? '').slice(0, 300);
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT')
    return { ok: false, error: `probe timed out after ${Math.round(timeoutMs / 1000)} s (killed)` };
  if (r.error) return { ok: false, error: `probe could not run: ${r.error.message}` };
  if (r.signal) return { ok: false, error: `crashed the probe process (${r.signal})${stderrTail ? `: ${stderrTail}` : ''}` };
  if (r.status !== 0) return { ok: false, error: `probe process exited with code ${r.status}${stderrTail ? `: ${stderrTail}` : ''}` };
  const line = (r.stdout || '').split('\n').find((l) => l.startsWith('RT_PROBE '));
  if (!line) return { ok: false, error: 'probe process printed no runtime_info()' };
  try {
    return { ok: true, info: JSON.parse(line.slice('RT_PROBE '.length)) };
  } catch (e) {
    return { ok: false, error: `probe output unreadable: ${(e as Error).message}` };
  }
}

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split('\n')[0].trim();
}

function tryRequire(file: string): Addon {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const addon = require(file) as Addon;
  if (!addon || typeof addon.runtime_info !== 'function' || typeof addon.tensor_alloc !== 'function') {
    throw new Error('loaded, but it is not a router-tuning addon (no runtime_info/tensor_alloc)');
  }
  return addon;
}

/** Finds, (probes) and loads the addon; exported for tests — use native(). */
export function loadAddon(options: NativeLoadOptions = {}): { addon: Addon; info: NativeLoadInfo } {
  const attempts: LoadAttempt[] = [];
  let cudaFallback = false;
  const done = (addon: Addon, kind: AddonKind, file: string) => {
    if (cudaFallback) {
      process.emitWarning(
        `router-tuning: CUDA was requested but the CUDA addon was not loaded; using ${file}.\n  ` +
          attempts.map((a) => `${a.path}: ${a.error}`).join('\n  '),
        { code: 'RT_CUDA_FALLBACK' },
      );
    }
    attempts.push({ kind, path: file });
    return { addon, info: { kind, path: file, attempts } };
  };
  const override = process.env.RT_ADDON;
  const root = options.root ?? packageRoot();
  const libc = detectLibc();

  if (override) {
    const file = path.resolve(override);
    try {
      return done(tryRequire(file), 'override', file);
    } catch (e) {
      attempts.push({ kind: 'override', path: `RT_ADDON=${override}`, error: firstLine(e) });
    }
    throw loadError(attempts, root, libc, true);
  }

  const device = (process.env.RT_DEVICE || '').toLowerCase();
  const wantCuda = device === 'cuda' || (!!options.preferCuda && device !== 'cpu');
  if (device !== 'cpu') {
    const found = cudaCandidates(root).filter((c) => c.file);
    if (wantCuda || (found.length > 0 && gpuLikely())) {
      if (found.length === 0) {
        attempts.push({
          kind: 'cuda',
          path: path.join(root, 'prebuilds-cuda', `${process.platform}-${process.arch}`),
          error: `CUDA requested, but no CUDA binary is installed (build one with \`npm run build:prebuild -- --cuda\`, or \`npm run build:cuda\` and set RT_ADDON)`,
        });
      }
      for (const c of found) {
        const file = c.file as string;
        const probe = probeAddon(file);
        if (!probe.ok) {
          attempts.push({ kind: 'cuda', path: file, error: probe.error });
          continue;
        }
        if (!probe.info?.cuda && !wantCuda) {
          attempts.push({ kind: 'cuda', path: file, error: `skipped: loads, but ${probe.info?.cudaReason ?? 'CUDA is unavailable'}` });
          continue;
        }
        try {
          return done(tryRequire(file), 'cuda', file);
        } catch (e) {
          attempts.push({ kind: 'cuda', path: file, error: firstLine(e) });
        }
      }
      cudaFallback = wantCuda;
    }
  }

  for (const sub of ['build/Release', 'build/Debug']) {
    const file = path.join(root, sub, 'router_tuning.node');
    if (!fs.existsSync(file)) {
      if (sub === 'build/Release') attempts.push({ kind: 'source', path: file, error: 'not built (no source build)' });
      continue;
    }
    try {
      return done(tryRequire(file), 'source', file);
    } catch (e) {
      attempts.push({ kind: 'source', path: file, error: firstLine(e) });
    }
  }

  const prebuildDir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  const prebuild = selectPrebuild(prebuildDir, libc);
  if (prebuild) {
    try {
      return done(tryRequire(prebuild), 'prebuild', prebuild);
    } catch (e) {
      attempts.push({ kind: 'prebuild', path: prebuild, error: firstLine(e) });
    }
  } else {
    let present: string[] = [];
    try {
      present = fs.readdirSync(prebuildDir).filter((n) => n.endsWith('.node'));
    } catch {
      /* folder absent */
    }
    attempts.push({
      kind: 'prebuild',
      path: prebuildDir,
      error: present.length
        ? `no prebuild for N-API/abi ${process.versions.modules} + ${libc || 'this libc'} among ${present.join(', ')}`
        : `no prebuilt binary for ${process.platform}-${process.arch}${libc ? ` (${libc})` : ''}`,
    });
  }
  throw loadError(attempts, root, libc, false);
}

function loadError(attempts: LoadAttempt[], root: string, libc: string, override: boolean): RouterTuningError {
  const target =
    `platform ${process.platform}, arch ${process.arch}, libc ${libcDescription()}, ` +
    `node ${process.versions.node} (ABI ${process.versions.modules}, N-API ${process.versions.napi})`;
  const fix = override
    ? `Fix: point RT_ADDON at a router_tuning.node built for this machine (after \`npm run build\`: ` +
      `${path.join(root, 'build', 'Release', 'router_tuning.node')}), or unset RT_ADDON to use the bundled addon.`
    : (process.platform === 'linux' && process.arch === 'x64' && libc === 'glibc'
        ? `Fix: linux-x64 (glibc) has a prebuilt binary in the package (prebuilds/linux-x64): reinstall router-tuning ` +
          `to restore it (npm install router-tuning), or build from source — `
        : `Fix: prebuilt binaries cover linux-x64 with glibc only; build from source — `) +
      `install a C++17 compiler, make, python3 and OpenBLAS ` +
      `(Debian/Ubuntu: apt-get install -y g++ make python3 libopenblas-dev; Alpine: apk add build-base python3 openblas-dev), ` +
      `then run \`npm rebuild router-tuning\` (in a checkout: \`npm run build\`); or set RT_ADDON=/path/to/router_tuning.node.`;
  return new RouterTuningError(
    'RT_ERR_LOAD',
    `router-tuning: could not load the native addon (${target}; package ${root}).\n` +
      `Tried:\n` +
      attempts.map((a, i) => `  ${i + 1}. [${a.kind}] ${a.path}: ${a.error}`).join('\n') +
      `\n${fix}`,
  );
}

/**
 * The loaded addon (loaded on first use). `options.preferCuda` only matters for the
 * first call (the addon of a process cannot be switched).
 */
export function native<T = NativeCore>(options?: NativeLoadOptions): T & NativeCore {
  if (!cached) {
    const r = loadAddon({ ...preference, ...options });
    cached = r.addon;
    loadInfo = r.info;
  }
  return cached as unknown as T & NativeCore;
}

/** Sets load hints before the first use of the addon (e.g. from loadModel(dir, { device: 'cuda' })). */
export function setNativePreference(options: NativeLoadOptions): void {
  preference = { ...preference, ...options };
}

/** Which addon file is loaded and what was tried first (undefined before the first use). */
export function nativeLoadInfo(): NativeLoadInfo | undefined {
  return loadInfo;
}
