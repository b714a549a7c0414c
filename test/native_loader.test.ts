/**
 * The native loader (lib/native.ts): the one RT_ERR_LOAD error when nothing loads (naming
 * platform, arch, libc, Node ABI, every attempt and the fix), the order of the search
 * (override, CUDA, source build, prebuild), prebuild selection by N-API/ABI/libc tags, and
 * the CUDA probe: a binary that fails or crashes on load is refused in a child process
 * without taking this process down.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFileSync } from 'child_process';
import { RouterTuningError } from '../lib/errors';
import { detectLibc, loadAddon, native, nativeLoadInfo, probeAddon, selectPrebuild } from '../lib/native';

const tuple = `${process.platform}-${process.arch}`;
let tmp: string;
let realAddon: string;
const savedEnv = { RT_ADDON: process.env.RT_ADDON, RT_DEVICE: process.env.RT_DEVICE };

function restoreEnv(): void {
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
}

/** A fake package folder: package.json plus the given files (path → content or symlink target). */
function fakePackage(name: string, files: Record<string, string | { link: string }>): string {
  const root = path.join(tmp, name);
  fs.mkdirSync(root, { recursive: true });
  fs.writeFileSync(path.join(root, 'package.json'), JSON.stringify({ name: 'router-tuning', version: '0.0.0' }));
  for (const [rel, content] of Object.entries(files)) {
    const file = path.join(root, rel);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    if (typeof content === 'string') fs.writeFileSync(file, content);
    else fs.symlinkSync(content.link, file);
  }
  return root;
}

function loadError(fn: () => unknown): RouterTuningError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(RouterTuningError);
    return e as RouterTuningError;
  }
  throw new Error('expected the loader to throw');
}

function expectTargetNamed(message: string): void {
  expect(message).toContain(`platform ${process.platform}`);
  expect(message).toContain(`arch ${process.arch}`);
  expect(message).toMatch(/libc (glibc|musl|unknown|n\/a)/);
  expect(message).toContain(`ABI ${process.versions.modules}`);
  expect(message).toContain(`node ${process.versions.node}`);
  expect(message).toMatch(/\nFix: /);
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-loader-'));
  restoreEnv();
  delete process.env.RT_ADDON;
  native(); // the addon the rest of the suite uses
  realAddon = nativeLoadInfo()!.path;
  expect(fs.existsSync(realAddon)).toBe(true);
});

afterEach(() => {
  restoreEnv();
  jest.restoreAllMocks();
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('RT_ERR_LOAD: one error naming the target, every attempt and the fix', () => {
  test('RT_ADDON pointing to a missing file', () => {
    const missing = path.join(tmp, 'does-not-exist', 'router_tuning.node');
    process.env.RT_ADDON = missing;
    const e = loadError(() => loadAddon());
    expect(e.code).toBe('RT_ERR_LOAD');
    expect(e.name).toBe('RouterTuningError');
    expectTargetNamed(e.message);
    expect(e.message).toContain(`RT_ADDON=${missing}`);
    expect(e.message).toMatch(/Cannot find module/);
    // An explicit override never falls back silently: exactly one attempt.
    expect(e.message.match(/^ {2}\d+\. /gm)).toHaveLength(1);
    expect(e.message).toMatch(/Fix: point RT_ADDON at/);
  });

  test('RT_ADDON pointing to a garbage file', () => {
    const garbage = path.join(tmp, 'garbage.node');
    fs.writeFileSync(garbage, Buffer.from('this is not an ELF shared object, just bytes\n'.repeat(20)));
    process.env.RT_ADDON = garbage;
    const e = loadError(() => loadAddon());
    expect(e.code).toBe('RT_ERR_LOAD');
    expectTargetNamed(e.message);
    expect(e.message).toContain(garbage);
    expect(e.message).toMatch(/invalid ELF header|file too short|not a dynamic/i);
  });

  test('no source build and no prebuild: every place searched is listed, with the fix', () => {
    const root = fakePackage('empty', { 'prebuilds/linux-x64/README': 'nothing' });
    const e = loadError(() => loadAddon({ root }));
    expect(e.code).toBe('RT_ERR_LOAD');
    expectTargetNamed(e.message);
    expect(e.message).toContain(path.join(root, 'build', 'Release', 'router_tuning.node'));
    expect(e.message).toContain(path.join(root, 'prebuilds', tuple));
    expect(e.message).toMatch(/\[source\].*not built/);
    expect(e.message).toMatch(/\[prebuild\].*no prebuil/);
    expect(e.message).toMatch(/npm rebuild router-tuning/);
    expect(e.message).toMatch(/libopenblas-dev/);
  });

  test('a prebuild that does not load is an attempt with its error', () => {
    const root = fakePackage('bad-prebuild', { [`prebuilds/${tuple}/router_tuning.napi.node`]: 'garbage' });
    const e = loadError(() => loadAddon({ root }));
    expect(e.message).toMatch(/\[prebuild\] .*router_tuning\.napi\.node: .*(invalid ELF header|file too short)/i);
  });
});

describe('search order', () => {
  test('the CPU prebuild loads when there is no source build', () => {
    const root = fakePackage('prebuild-only', { [`prebuilds/${tuple}/router_tuning.napi.node`]: { link: realAddon } });
    const { addon, info } = loadAddon({ root });
    expect(typeof addon.runtime_info).toBe('function');
    expect(info.kind).toBe('prebuild');
    expect(info.path).toBe(path.join(root, 'prebuilds', tuple, 'router_tuning.napi.node'));
    expect(info.attempts[0]).toMatchObject({ kind: 'source', error: expect.stringMatching(/not built/) });
  });

  test('a source build (build/Release) comes before the prebuild', () => {
    const root = fakePackage('both', {
      'build/Release/router_tuning.node': { link: realAddon },
      [`prebuilds/${tuple}/router_tuning.napi.node`]: 'garbage',
    });
    const { info } = loadAddon({ root });
    expect(info.kind).toBe('source');
    expect(info.attempts).toHaveLength(1);
  });

  test('RT_DEVICE=cpu never looks at the CUDA variant', () => {
    process.env.RT_DEVICE = 'cpu';
    const root = fakePackage('cpu-only', {
      [`prebuilds-cuda/${tuple}/router_tuning.napi.node`]: 'garbage',
      [`prebuilds/${tuple}/router_tuning.napi.node`]: { link: realAddon },
    });
    const { info } = loadAddon({ root, preferCuda: true });
    expect(info.kind).toBe('prebuild');
    expect(info.attempts.some((a) => a.kind === 'cuda')).toBe(false);
  });
});

describe('the CUDA probe', () => {
  test('a CUDA binary that fails to load is refused in the child; the CPU prebuild is used', () => {
    process.env.RT_DEVICE = 'cuda';
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const root = fakePackage('bad-cuda', {
      [`prebuilds-cuda/${tuple}/router_tuning.napi.node`]: 'garbage, not a shared object',
      [`prebuilds/${tuple}/router_tuning.napi.node`]: { link: realAddon },
    });
    const { info } = loadAddon({ root });
    expect(info.kind).toBe('prebuild');
    expect(info.attempts[0].kind).toBe('cuda');
    expect(info.attempts[0].error).toMatch(/does not load \(in the probe process\): .*(invalid ELF header|file too short)/i);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0][0])).toMatch(/CUDA was requested/);
  });

  test('CUDA requested but no CUDA binary: the attempt says so, the CPU addon loads', () => {
    jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const root = fakePackage('no-cuda', { [`prebuilds/${tuple}/router_tuning.napi.node`]: { link: realAddon } });
    const { info } = loadAddon({ root, preferCuda: true });
    expect(info.kind).toBe('prebuild');
    expect(info.attempts[0]).toMatchObject({ kind: 'cuda', error: expect.stringMatching(/no CUDA binary/) });
  });

  test('nothing loads: the CUDA attempt is in the one error too', () => {
    process.env.RT_DEVICE = 'cuda';
    jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const root = fakePackage('nothing-loads', { [`prebuilds-cuda/${tuple}/router_tuning.napi.node`]: 'garbage' });
    const e = loadError(() => loadAddon({ root }));
    expect(e.code).toBe('RT_ERR_LOAD');
    expectTargetNamed(e.message);
    expect(e.message).toMatch(/\[cuda\] .*prebuilds-cuda.*does not load \(in the probe process\)/);
    expect(e.message).toMatch(/\[source\]/);
    expect(e.message).toMatch(/\[prebuild\]/);
  });

  test('a probe that crashes (a signal) or hangs reports it; this process lives on', () => {
    const crash = path.join(tmp, 'crash.js');
    fs.writeFileSync(crash, "process.kill(process.pid, 'SIGSEGV');\n");
    const r = probeAddon(crash);
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/crashed the probe process \(SIGSEGV\)/);

    const hang = path.join(tmp, 'hang.js');
    fs.writeFileSync(hang, 'for (;;) {}\n');
    const h = probeAddon(hang, 1500);
    expect(h.ok).toBe(false);
    expect(h.error).toMatch(/timed out after 2 s/);

    const ok = probeAddon(realAddon);
    expect(ok.ok).toBe(true);
    expect(typeof ok.info?.cuda).toBe('boolean');
  });

  const cc = ['cc', 'gcc'].find((c) => {
    try {
      execFileSync(c, ['--version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  });
  (cc ? test : test.skip)('a real .node that segfaults when loaded is refused without crashing this process', () => {
    process.env.RT_DEVICE = 'cuda';
    jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const src = path.join(tmp, 'segv.c');
    fs.writeFileSync(src, '__attribute__((constructor)) static void boom(void) { *(volatile int *)0 = 1; }\n');
    const root = fakePackage('segv-cuda', { [`prebuilds/${tuple}/router_tuning.napi.node`]: { link: realAddon } });
    const bad = path.join(root, 'prebuilds-cuda', tuple, 'router_tuning.napi.node');
    fs.mkdirSync(path.dirname(bad), { recursive: true });
    execFileSync(cc as string, ['-shared', '-fPIC', '-o', bad, src]);
    const { info } = loadAddon({ root });
    expect(info.kind).toBe('prebuild');
    expect(info.attempts[0]).toMatchObject({ kind: 'cuda', path: bad, error: expect.stringMatching(/crashed the probe process \(SIGSEGV\)/) });
  });
});

describe('prebuild selection (node-gyp-build 4.8 tags)', () => {
  test('N-API or this ABI, this libc; the most specific wins', () => {
    const dir = path.join(tmp, 'select');
    fs.mkdirSync(dir, { recursive: true });
    for (const f of ['node.napi.glibc.node', 'node.napi.musl.node', 'node.abi1.node', 'notes.txt', 'x.napi.node.map']) fs.writeFileSync(path.join(dir, f), '');
    expect(selectPrebuild(dir, 'glibc')).toBe(path.join(dir, 'node.napi.glibc.node'));
    expect(selectPrebuild(dir, 'musl')).toBe(path.join(dir, 'node.napi.musl.node'));
    fs.writeFileSync(path.join(dir, `node.abi${process.versions.modules}.glibc.node`), '');
    expect(selectPrebuild(dir, 'glibc')).toBe(path.join(dir, `node.abi${process.versions.modules}.glibc.node`));
    expect(selectPrebuild(path.join(tmp, 'absent'))).toBeUndefined();
  });

  test('libc detection', () => {
    if (process.platform === 'linux') expect(['glibc', 'musl', 'unknown']).toContain(detectLibc());
    else expect(detectLibc()).toBe('');
  });
});
