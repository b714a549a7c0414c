/**
 * PyTorch + transformers peer (CPU): prefill, decode and one router-tuning step of the
 * reference model, measured by bench/peers/torch_peer.py in a Python environment the bench
 * sets up itself (not a dependency of the package):
 *
 *   1. python3 >= 3.9 (RT_BENCH_PYTHON overrides);
 *   2. a venv in setup.cacheDir/venv (python -m venv), or, where venv is unavailable,
 *      `pip install --target setup.cacheDir/site`;
 *   3. torch (the CPU build), transformers and safetensors from pip's *local* indexes only:
 *      the file:// indexes and find-links folders of `pip config list` (or
 *      RT_BENCH_PIP_INDEX="URL [URL…]"), passed explicitly with --isolated, a 5 s timeout
 *      and no retries, so pip never waits on the public index. A CPU-only torch wheel found
 *      in a find-links folder is preferred over the index's torch (the CUDA build pulls
 *      gigabytes of CUDA libraries);
 *   4. once: a marker file with the installed versions; later runs only check the imports.
 *
 * The script gets a JSON job on stdin and prints one JSON line on stdout; its progress
 * (stderr) goes to setup.log. Every failure becomes { name, skipped: reason }, never a throw.
 * The same model check: the prompt's last-token logits from PyTorch vs ours (loadModel).
 */
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadModel } from '../../lib/model/causal_lm';
import type { PeerModel, PeerOutcome, PeerRouterStep, PeerSetup } from './types';

const NAME = 'pytorch';
const MARKER = 'rt-bench-peer.json';
const INSTALL_TIMEOUT_MS = 30 * 60_000;
const RUN_TIMEOUT_MS = 30 * 60_000;
/** tune()'s defaults (lib/train/tune.ts): the step the peer runs is the one `tune` runs. */
const STEP_DEFAULTS = { threshold: 0.5, lambda: 1, targetSkip: 0.25, lr: 1e-3, weightDecay: 0, maxGradNorm: 1 };
/** Known local indexes of these machines, used when `pip config list` names none. */
const FALLBACK_INDEXES = ['file:///opt/pypi/simple', 'file:///opt/pypi-more/simple'];

interface PythonInfo {
  exe: string;
  version: string;
  /** wheel tag of the interpreter, e.g. cp311 */
  tag: string;
  /** platform.machine(), e.g. x86_64 */
  machine: string;
}

interface PipSources {
  indexes: string[];
  findLinks: string[];
  constraints: string[];
}

interface PyEnv {
  python: string;
  env: NodeJS.ProcessEnv;
  dir: string;
  versions: Record<string, string>;
  installed: boolean;
}

/** The result line of torch_peer.py. */
interface ScriptResult {
  ok: boolean;
  error?: string;
  errors?: string[];
  torch?: string;
  transformers?: string;
  threads?: number;
  importSeconds?: number;
  loadSeconds?: number;
  logitsKeyword?: string | null;
  attnImplementation?: string | null;
  prefillTokensPerSecond?: number;
  prefillSeconds?: number[];
  decodeTokensPerSecond?: number;
  decodeSeconds?: number[];
  routerStepSeconds?: number;
  routerStepRuns?: number[];
  routerStepInfo?: { loss: number; ce: number; executedFraction: number; first?: { loss: number; ce: number; reg: number; executedFraction?: number; gradNorms: number[] } };
}

class Skip extends Error {}

/** Versions compare by their numeric release parts (2.13.0+cpu → [2, 13, 0]). */
function versionKey(v: string): number[] {
  return v.split('+')[0].split('.').map((x) => parseInt(x, 10) || 0);
}

function compareVersions(a: string, b: string): number {
  const x = versionKey(a), y = versionKey(b);
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}

/** Quiet, bounded pip: no prompts, no version check, no waiting on an unreachable index. */
function pipEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...base, PIP_DEFAULT_TIMEOUT: '5', PIP_RETRIES: '0', PIP_NO_INPUT: '1', PIP_DISABLE_PIP_VERSION_CHECK: '1' };
}

function findPython(): PythonInfo {
  const probe = 'import json, platform, sys; print(json.dumps({"v": "%d.%d.%d" % sys.version_info[:3], "tag": "cp%d%d" % sys.version_info[:2], "m": platform.machine()}))';
  const tried: string[] = [];
  for (const exe of [process.env.RT_BENCH_PYTHON, 'python3', 'python'].filter((x): x is string => !!x)) {
    const r = spawnSync(exe, ['-c', probe], { encoding: 'utf8', timeout: 30_000 });
    if (r.status !== 0) {
      tried.push(`${exe}: ${r.error ? r.error.message : (r.stderr || '').trim().split('\n').pop() || `exit ${r.status}`}`);
      continue;
    }
    const p = JSON.parse(r.stdout.trim()) as { v: string; tag: string; m: string };
    if (compareVersions(p.v, '3.9') < 0) {
      tried.push(`${exe}: Python ${p.v} (< 3.9)`);
      continue;
    }
    return { exe, version: p.v, tag: p.tag, machine: p.m };
  }
  throw new Skip(`no Python >= 3.9 found (${tried.join('; ')}); set RT_BENCH_PYTHON to one`);
}

/** A local path from a find-links / index entry (file:// URL or absolute path), or undefined. */
function localPath(entry: string): string | undefined {
  if (entry.startsWith('file://')) return decodeURIComponent(entry.slice('file://'.length));
  if (path.isAbsolute(entry)) return entry;
  return undefined;
}

/**
 * The pip sources to use: local (file://) indexes and find-links folders and the constraint
 * files of `pip config list` (plus PIP_FIND_LINKS); RT_BENCH_PIP_INDEX replaces the indexes.
 */
function pipSources(python: string): PipSources {
  const vals: Record<string, string[]> = {};
  const r = spawnSync(python, ['-m', 'pip', 'config', 'list'], { encoding: 'utf8', timeout: 60_000, env: pipEnv() });
  if (r.status === 0) {
    for (const line of r.stdout.split('\n')) {
      const m = /^[^=]*\.([a-z-]+)=(.*)$/.exec(line.trim());
      if (!m) continue;
      const v = m[2].replace(/^'(.*)'$/, '$1').replace(/^"(.*)"$/, '$1');
      (vals[m[1]] ??= []).push(...v.split(/\s+/).filter(Boolean));
    }
  }
  const envLinks = (process.env.PIP_FIND_LINKS ?? '').split(/\s+/).filter(Boolean);
  const uniq = (xs: string[]) => [...new Set(xs)];
  let indexes: string[];
  const override = (process.env.RT_BENCH_PIP_INDEX ?? '').split(/\s+/).filter(Boolean);
  if (override.length) indexes = override;
  else {
    // local indexes only: the public index may be unreachable, and pip would wait on it
    indexes = uniq([...(vals['index-url'] ?? []), ...(vals['extra-index-url'] ?? [])]).filter((u) => {
      const p = localPath(u);
      return p !== undefined && fs.existsSync(p);
    });
    if (!indexes.length) indexes = FALLBACK_INDEXES.filter((u) => fs.existsSync(localPath(u)!));
  }
  const findLinks = uniq([...(vals['find-links'] ?? []), ...envLinks])
    .map(localPath)
    .filter((p): p is string => p !== undefined && fs.existsSync(p));
  const constraints = uniq(vals['constraint'] ?? []).filter((p) => path.isAbsolute(p) && fs.existsSync(p));
  return { indexes, findLinks, constraints };
}

/** The newest CPU-only torch wheel for this interpreter in the find-links folders, if any. */
function cpuTorchWheel(py: PythonInfo, findLinks: string[]): string | undefined {
  let best: { file: string; version: string } | undefined;
  for (const dir of findLinks) {
    let names: string[];
    try {
      names = fs.statSync(dir).isDirectory() ? fs.readdirSync(dir) : [path.basename(dir)];
    } catch {
      continue;
    }
    const base = fs.statSync(dir).isDirectory() ? dir : path.dirname(dir);
    for (const n of names) {
      const m = /^torch-([0-9][^-]*)-(cp\d+)-([a-z0-9_]+)-(.+)\.whl$/.exec(n);
      if (!m || !m[1].includes('+cpu') || m[2] !== py.tag || !m[4].includes(py.machine)) continue;
      if (!best || compareVersions(m[1], best.version) > 0) best = { file: path.join(base, n), version: m[1] };
    }
  }
  return best?.file;
}

/** Runs a process, streaming its output lines; resolves with the exit code and the whole stdout. */
function run(
  cmd: string,
  args: string[],
  o: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs: number; onLine?: (line: string, stream: 'stdout' | 'stderr') => void },
): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean; error?: Error }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: o.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '', stderr = '', timedOut = false, spawnError: Error | undefined;
    const partial = { stdout: '', stderr: '' };
    const feed = (stream: 'stdout' | 'stderr', chunk: string) => {
      if (stream === 'stdout') stdout += chunk;
      else stderr = (stderr + chunk).slice(-20_000);
      if (!o.onLine) return;
      const lines = (partial[stream] + chunk).split('\n');
      partial[stream] = lines.pop()!;
      for (const l of lines) if (l.trim()) o.onLine(l, stream);
    };
    child.stdout.setEncoding('utf8').on('data', (c: string) => feed('stdout', c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => feed('stderr', c));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, o.timeoutMs);
    child.on('error', (e) => (spawnError = e));
    child.on('close', (code) => {
      clearTimeout(timer);
      for (const s of ['stdout', 'stderr'] as const) if (partial[s].trim() && o.onLine) o.onLine(partial[s], s);
      resolve({ code, stdout, stderr, timedOut, error: spawnError });
    });
    child.stdin.on('error', () => undefined); // a child that exits early closes its stdin
    child.stdin.end(o.input ?? '');
  });
}

function lastLines(s: string, n = 3): string {
  return s.trim().split('\n').slice(-n).join(' | ');
}

/** Imports torch, transformers and safetensors in the environment: their versions, or undefined. */
function importedVersions(python: string, env: NodeJS.ProcessEnv): Record<string, string> | undefined {
  const code = 'import json, sys, torch, transformers, safetensors; print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "torch": torch.__version__, "transformers": transformers.__version__, "safetensors": safetensors.__version__}))';
  const r = spawnSync(python, ['-c', code], { encoding: 'utf8', timeout: 120_000, env });
  if (r.status !== 0) return undefined;
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, string>;
  } catch {
    return undefined;
  }
}

function readMarker(dir: string): Record<string, string> | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, MARKER), 'utf8')) as Record<string, string>;
  } catch {
    return undefined;
  }
}

function sameVersions(a: Record<string, string>, b: Record<string, string>): boolean {
  return ['python', 'torch', 'transformers', 'safetensors'].every((k) => a[k] === b[k]);
}

/** The Python environment with torch, transformers and safetensors: reused when its marker matches, else installed. */
async function ensureEnv(setup: PeerSetup, py: PythonInfo): Promise<PyEnv> {
  const log = (s: string) => setup.log(`  pytorch peer: ${s}`);
  fs.mkdirSync(setup.cacheDir, { recursive: true });
  const venvDir = path.join(setup.cacheDir, 'venv');
  const siteDir = path.join(setup.cacheDir, 'site');
  const venvPython = path.join(venvDir, process.platform === 'win32' ? 'Scripts/python.exe' : 'bin/python');
  const siteEnv = (): NodeJS.ProcessEnv => ({ ...process.env, PYTHONPATH: [siteDir, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter), PYTHONNOUSERSITE: '1' });

  // reuse: a marker written after a complete install, and imports that still agree with it
  for (const [dir, python, env] of [
    [venvDir, venvPython, process.env],
    [siteDir, py.exe, siteEnv()],
  ] as const) {
    const marker = readMarker(dir);
    if (!marker) continue;
    const v = importedVersions(python, env);
    if (v && sameVersions(v, marker)) {
      log(`reusing ${dir}: torch ${v.torch}, transformers ${v.transformers} (delete the folder to reinstall)`);
      return { python, env, dir, versions: v, installed: false };
    }
    log(`the environment in ${dir} does not match its marker (${v ? JSON.stringify(v) : 'imports fail'}); reinstalling`);
  }

  const src = pipSources(py.exe);
  if (!src.indexes.length)
    throw new Skip('no local pip index found (pip config list names no file:// index, /opt/pypi* missing); set RT_BENCH_PIP_INDEX="URL [URL…]" to choose one');
  const wheel = cpuTorchWheel(py, src.findLinks);
  log(`pip sources: ${src.indexes.join(', ')}${src.findLinks.length ? `; find-links ${src.findLinks.join(', ')}` : ''}; torch: ${wheel ?? 'torch from the index (no CPU-only wheel in find-links: the CUDA build may pull large CUDA libraries)'}`);

  // venv first; where it is unavailable (no ensurepip), pip --target with the system pip
  let python: string, env: NodeJS.ProcessEnv, dir: string, target: string[] = [];
  fs.rmSync(venvDir, { recursive: true, force: true });
  log(`creating a venv in ${venvDir} …`);
  const venv = await run(py.exe, ['-m', 'venv', venvDir], { timeoutMs: 10 * 60_000 });
  if (venv.code === 0 && fs.existsSync(venvPython)) {
    python = venvPython;
    env = process.env;
    dir = venvDir;
  } else {
    log(`venv unavailable (${lastLines(venv.stderr, 1) || venv.error?.message || `exit ${venv.code}`}); installing with pip --target ${siteDir}`);
    fs.rmSync(venvDir, { recursive: true, force: true });
    const pipOk = spawnSync(py.exe, ['-m', 'pip', '--version'], { encoding: 'utf8', timeout: 60_000, env: pipEnv() });
    if (pipOk.status !== 0) throw new Skip(`neither venv nor pip is available for ${py.exe} (${lastLines(pipOk.stderr || venv.stderr, 1)})`);
    fs.rmSync(siteDir, { recursive: true, force: true });
    fs.mkdirSync(siteDir, { recursive: true });
    python = py.exe;
    env = siteEnv();
    dir = siteDir;
    target = ['--target', siteDir];
  }

  const args = [
    '-m', 'pip', 'install', '--isolated', '--disable-pip-version-check', '--no-input', '--progress-bar', 'off',
    '--timeout', '5', '--retries', '0',
    '--index-url', src.indexes[0],
    ...src.indexes.slice(1).flatMap((u) => ['--extra-index-url', u]),
    ...src.findLinks.flatMap((f) => ['--find-links', f]),
    ...src.constraints.flatMap((c) => ['-c', c]),
    ...target,
    wheel ?? 'torch', 'transformers', 'safetensors',
  ];
  log(`installing ${wheel ? path.basename(wheel) : 'torch'}, transformers, safetensors (once; a few minutes) …`);
  const t0 = Date.now();
  let fetched = 0;
  const pip = await run(python, args, {
    env: pipEnv(env),
    timeoutMs: INSTALL_TIMEOUT_MS,
    onLine: (line) => {
      const l = line.trim();
      // a heartbeat per 10 packages; errors, warnings (but not the index's missing-project notes) and the summary
      if (/^(Collecting|Processing)/.test(l) && ++fetched % 10 === 0) log(`pip: ${fetched} packages …`);
      else if (/^(ERROR|Successfully installed)/.test(l) || (/^WARNING/.test(l) && !/is ignored: it is neither a file nor a directory|Running pip as the 'root' user/.test(l)))
        log(`pip: ${l.length > 400 ? l.slice(0, 400) + ' …' : l}`);
    },
  });
  if (pip.code !== 0) {
    const why = pip.timedOut ? `timed out after ${INSTALL_TIMEOUT_MS / 60_000} min` : lastLines(pip.stderr, 2) || pip.error?.message || `exit ${pip.code}`;
    throw new Skip(`pip install of torch/transformers/safetensors failed from ${src.indexes.join(', ')}: ${why}`);
  }
  const versions = importedVersions(python, env);
  if (!versions) throw new Skip(`installed, but importing torch/transformers/safetensors fails in ${dir}`);
  fs.writeFileSync(path.join(dir, MARKER), JSON.stringify({ ...versions, indexes: src.indexes.join(' '), torchWheel: wheel ?? 'index', installedAt: new Date().toISOString() }, null, 2) + '\n');
  log(`installed in ${((Date.now() - t0) / 1000).toFixed(0)} s: torch ${versions.torch}, transformers ${versions.transformers}, safetensors ${versions.safetensors}`);
  return { python, env, dir, versions, installed: true };
}

/** bench/peers/torch_peer.py next to this file, or in the source tree when running from dist/. */
function scriptPath(): string {
  const candidates = [
    path.join(__dirname, 'torch_peer.py'),
    path.resolve(__dirname, '..', '..', '..', 'bench', 'peers', 'torch_peer.py'),
    path.resolve(process.cwd(), 'bench', 'peers', 'torch_peer.py'),
  ];
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found) throw new Skip(`torch_peer.py not found (looked in ${candidates.join(', ')})`);
  return found;
}

/** Our last-token logits of the prompt (the prefill the bench times: last row only). */
async function ourLastLogits(hfDir: string, prompt: number[]): Promise<Float32Array> {
  const model = await loadModel(hfDir, { noTokenizer: true });
  const T = prompt.length;
  const cache = model.newCache(1, T);
  try {
    const out = model.forward(Int32Array.from(prompt), null, 1, T, cache, { logitsRows: Int32Array.of(T - 1) });
    const data = out.toFloat32Array();
    out.dispose();
    return data;
  } finally {
    cache.dispose();
    model.dispose();
  }
}

function compareLogits(peer: Float32Array, ours: Float32Array): string {
  if (peer.length !== ours.length) return `logits: PyTorch gave ${peer.length} values, ours ${ours.length}`;
  let maxAbs = 0, scale = 0, maxRel = 0, am = 0, bm = 0;
  for (let i = 0; i < ours.length; i++) {
    const d = Math.abs(peer[i] - ours[i]);
    maxAbs = Math.max(maxAbs, d);
    scale = Math.max(scale, Math.abs(ours[i]));
    maxRel = Math.max(maxRel, d / Math.max(Math.abs(ours[i]), 1e-3));
    if (peer[i] > peer[am]) am = i;
    if (ours[i] > ours[bm]) bm = i;
  }
  return (
    `same model: last-token logits of the prompt, PyTorch vs ours: max |Δ| ${maxAbs.toExponential(2)} = ` +
    `${(maxAbs / scale).toExponential(2)} of max |logit| (${scale.toFixed(2)}); max elementwise relative ${maxRel.toExponential(2)}; ` +
    `argmax ${am === bm ? 'agrees' : `differs (${am} vs ${bm})`}`
  );
}

const fmtRuns = (xs: number[] | undefined, digits = 3) => (xs ?? []).map((x) => x.toFixed(digits)).join(' / ');

/**
 * The PyTorch peer: sets up its environment in setup.cacheDir (once), then measures the
 * reference model's prefill, decode and, with `step`, one router-tuning step.
 */
export async function runTorchPeer(setup: PeerSetup, model: PeerModel, step?: PeerRouterStep): Promise<PeerOutcome> {
  const log = (s: string) => setup.log(`  pytorch peer: ${s}`);
  const tSetup = Date.now();
  let scratch: string | undefined;
  try {
    const script = scriptPath();
    const py = findPython();
    const env = await ensureEnv(setup, py);
    const setupSeconds = (Date.now() - tSetup) / 1000;

    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-torch-peer-'));
    const logitsOut = path.join(scratch, 'last_logits.f32');
    const job = {
      hfDir: path.resolve(model.hfDir),
      threads: model.threads,
      promptIds: model.promptIds,
      decodeTokens: model.decodeTokens,
      logitsOut,
      step: step ? { ...STEP_DEFAULTS, ...step, routersFile: path.resolve(step.routersFile) } : null,
    };
    const threads = String(model.threads);
    log(`measuring with ${path.basename(env.python)} (${env.dir}), ${model.threads} threads …`);
    const r = await run(env.python, [script], {
      env: {
        ...env.env,
        OMP_NUM_THREADS: threads,
        MKL_NUM_THREADS: threads,
        OPENBLAS_NUM_THREADS: threads,
        PYTHONUNBUFFERED: '1',
        HF_HUB_OFFLINE: '1',
        TRANSFORMERS_OFFLINE: '1',
        TRANSFORMERS_VERBOSITY: 'error',
        HF_HUB_DISABLE_PROGRESS_BARS: '1',
        TQDM_DISABLE: '1',
        TOKENIZERS_PARALLELISM: 'false',
      },
      input: JSON.stringify(job),
      timeoutMs: RUN_TIMEOUT_MS,
      onLine: (l, s) => {
        if (s === 'stderr') setup.log(l.startsWith('pytorch peer:') ? `  ${l}` : `  pytorch peer (stderr): ${l}`);
      },
    });
    const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
    let res: ScriptResult | undefined;
    try {
      res = line ? (JSON.parse(line) as ScriptResult) : undefined;
    } catch {
      res = undefined;
    }
    if (!res || res.ok === false) {
      const why = r.timedOut ? `timed out after ${RUN_TIMEOUT_MS / 60_000} min` : res?.error ?? (lastLines(r.stderr, 2) || r.error?.message || `exit ${r.code}`);
      return { name: NAME, skipped: `the PyTorch run failed: ${why}` };
    }
    const notes: string[] = [
      `torch ${res.torch}, transformers ${res.transformers}, Python ${env.versions.python}; fp32, eval, attn_implementation ${res.attnImplementation ?? 'sdpa'}, ` +
        `${res.threads} threads (torch.set_num_threads, OMP_NUM_THREADS=${threads})`,
      env.installed ? `setup: installed into ${env.dir} in ${setupSeconds.toFixed(0)} s` : `setup: reused ${env.dir} (marker ${MARKER})`,
      `Python start: import ${Number(res.importSeconds).toFixed(1)} s, model load ${Number(res.loadSeconds).toFixed(1)} s (not in setupSeconds)`,
    ];
    if (res.prefillTokensPerSecond !== undefined)
      notes.push(
        `prefill-${model.promptIds.length}: one forward with the KV cache on, last-token logits only (${res.logitsKeyword ?? 'all rows: no logits_to_keep in this transformers'}=1); ` +
          `median of 3 after a warm-up, runs ${fmtRuns(res.prefillSeconds)} s`,
      );
    if (res.decodeTokensPerSecond !== undefined)
      notes.push(`decode: ${model.decodeTokens} greedy steps (argmax, past_key_values) after the ${model.promptIds.length}-token prefill; median of 3 after a warm-up, runs ${fmtRuns(res.decodeSeconds)} s`);
    if (res.routerStepSeconds !== undefined && step) {
      const i = res.routerStepInfo;
      const c = 1 - STEP_DEFAULTS.targetSkip;
      notes.push(
        `router step: token-level MindSkip attention routers (mod semantics) on layers ${step.layers.join(',')}, batch ${step.batch}×${step.seqLen}, frozen model; ` +
          `loss = CE + ${STEP_DEFAULTS.lambda}·max(0, ḡ − ${c}); AdamW (lr ${STEP_DEFAULTS.lr}, wd ${STEP_DEFAULTS.weightDecay}) on the routers + clip ${STEP_DEFAULTS.maxGradNorm}; ` +
          `forward + backward + optimizer, median of 3 after a warm-up, runs ${fmtRuns(res.routerStepRuns, 2)} s; ` +
          `first step loss ${Number(i?.first?.loss).toFixed(4)} (CE ${Number(i?.first?.ce).toFixed(4)}), executed fraction ${Number(i?.first?.executedFraction).toFixed(3)}`,
      );
    }
    for (const e of res.errors ?? []) notes.push(`error: ${e}`);
    try {
      if (fs.existsSync(logitsOut)) {
        const buf = fs.readFileSync(logitsOut);
        const peer = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
        notes.push(compareLogits(peer, await ourLastLogits(model.hfDir, model.promptIds)));
      }
    } catch (e) {
      notes.push(`same-model check failed: ${(e as Error).message}`);
    }
    if (res.prefillTokensPerSecond === undefined && res.decodeTokensPerSecond === undefined && res.routerStepSeconds === undefined)
      return { name: NAME, skipped: `the PyTorch run measured nothing: ${(res.errors ?? []).join('; ')}` };
    return {
      name: NAME,
      version: `torch ${res.torch}, transformers ${res.transformers}`,
      prefillTokensPerSecond: res.prefillTokensPerSecond,
      decodeTokensPerSecond: res.decodeTokensPerSecond,
      routerStepSeconds: res.routerStepSeconds,
      setupSeconds,
      notes,
    };
  } catch (e) {
    const msg = e instanceof Skip ? e.message : `unexpected error: ${(e as Error).message}`;
    log(`skipped: ${msg}`);
    return { name: NAME, skipped: msg };
  } finally {
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
}
