/** The bench CLI surface: suites, usage errors, the e2e and peers suites in their quick (smoke-test) mode. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runCli } from './helpers/cli';
import { syntheticConfig } from '../lib/model/random';
import { REFERENCE_134M, workModel, prefillFlopsPerToken, decodeBytesPerToken } from '../bench/e2e';
import { loadPeer } from '../bench/peers';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'rt-bench-'));

describe('router-tuning bench', () => {
  test('an unknown suite is a usage error (exit 2) that lists the suites', async () => {
    const r = await runCli(['bench', '--suite', 'nope']);
    expect(r.code).toBe(2);
    for (const s of ['kernels', 'e2e', 'tune', 'skip', 'peers', 'all']) expect(r.err).toContain(s);
    expect(r.err).toMatch(/received 'nope'/);
    expect(r.out).toBe('');
  });

  test('missing values, unknown options and unknown peers are usage errors', async () => {
    expect((await runCli(['bench', '--suite'])).code).toBe(2);
    expect((await runCli(['bench', '--out', '--json'])).code).toBe(2);
    expect((await runCli(['bench', '--frobnicate'])).code).toBe(2);
    const p = await runCli(['bench', '--peers', 'tensorflow']);
    expect(p.code).toBe(2);
    expect(p.err).toMatch(/--peers expected names from pytorch, llama\.cpp/);
  });

  test('--help documents the suites', async () => {
    const r = await runCli(['bench', '--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/--suite kernels\|e2e\|tune\|skip\|peers/);
    expect(r.out).toMatch(/--quick/);
  });

  test('e2e --quick --json: tokens/s as fractions of their rooflines, files written', async () => {
    const out = tmp();
    try {
      const r = await runCli(['bench', '--suite', 'e2e', '--quick', '--json', '--out', out]);
      expect(r.code).toBe(0);
      const report = JSON.parse(r.out);
      expect(report.ceilings).toMatchObject({ copyGBps: expect.any(Number), gemmGFLOPS: expect.any(Number), readGBps: expect.any(Number) });
      const cases = report.cases as { suite: string; name: string; value: number; unit: string; fraction: number; ideal: number }[];
      expect(cases.length).toBe(4); // 2 contexts × prefill/decode
      for (const c of cases) {
        expect(c.suite).toBe('e2e');
        expect(c.unit).toBe('tok/s');
        expect(c.value).toBeGreaterThan(0);
        expect(c.ideal).toBeGreaterThan(0);
        expect(c.fraction).toBeCloseTo(c.value / c.ideal, 6);
      }
      expect(cases.filter((c) => c.name.startsWith('prefill')).length).toBe(2);
      const md = fs.readFileSync(path.join(out, 'results.md'), 'utf8');
      expect(md).toMatch(/\| model \| params \(active\) \| ctx \| prefill tok\/s/);
      expect(JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')).cases.length).toBe(4);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  test('e2e --filter selects combinations', async () => {
    const out = tmp();
    try {
      const r = await runCli(['bench', '--suite', 'e2e', '--quick', '--json', '--out', out, '--filter', 'ctx 32']);
      expect(r.code).toBe(0);
      const names = (JSON.parse(r.out).cases as { name: string }[]).map((c) => c.name);
      expect(names).toHaveLength(2);
      for (const n of names) expect(n).toMatch(/ctx 32/);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  test('peers --quick --peers none: our numbers, peers listed as not selected, the checkpoint cached', async () => {
    const out = tmp();
    const cache = tmp();
    const before = process.env.RT_BENCH_CACHE;
    process.env.RT_BENCH_CACHE = cache;
    try {
      const r = await runCli(['bench', '--suite', 'peers', '--quick', '--peers', 'none', '--json', '--out', out]);
      expect(r.code).toBe(0);
      const report = JSON.parse(r.out);
      const cases = report.cases as { name: string; value: number; unit: string; peer?: string; skipped?: string; target?: number }[];
      const ours = cases.filter((c) => !c.peer);
      // prefill, decode (fp32), prefill and decode in the bf16 compute mode, the router step
      expect(ours.map((c) => c.unit)).toEqual(['tok/s', 'tok/s', 'tok/s', 'tok/s', 's']);
      for (const c of ours) expect(c.value).toBeGreaterThan(0);
      const pt = cases.filter((c) => c.peer === 'pytorch');
      expect(pt).toHaveLength(5);
      for (const c of pt) expect(c.skipped).toMatch(/not selected/);
      expect(pt.map((c) => c.target)).toEqual([1.1, 2.5, 1.6, undefined, 1.3]);
      expect(cases.filter((c) => c.peer === 'llama.cpp')).toHaveLength(4);
      expect(report.peers).toEqual([
        { name: 'pytorch', skipped: 'not selected (--peers)' },
        { name: 'llama.cpp', skipped: 'not selected (--peers)' },
      ]);
      const dir = path.join(cache, 'models', 'tiny-seed1');
      for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'bench-model.json']) expect(fs.existsSync(path.join(dir, f))).toBe(true);
      const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
      expect(cfg).toMatchObject({ torch_dtype: 'float32', tie_word_embeddings: false, architectures: ['LlamaForCausalLM'] });
      expect(fs.readFileSync(path.join(out, 'results.md'), 'utf8')).toMatch(/skipped — not selected/);
      // the second run reuses the checkpoint
      const again = await runCli(['bench', '--suite', 'peers', '--quick', '--peers', 'none', '--json', '--out', out]);
      expect(again.code).toBe(0);
      expect(again.err).toMatch(/reference model: reusing/);
    } finally {
      if (before === undefined) delete process.env.RT_BENCH_CACHE;
      else process.env.RT_BENCH_CACHE = before;
      fs.rmSync(out, { recursive: true, force: true });
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });

  test('a peer module that is not there is skipped, not a crash', async () => {
    const run = loadPeer({ name: 'nothing', module: './peers/does-not-exist', exportName: 'runNothingPeer' });
    await expect(run({ cacheDir: os.tmpdir(), log: () => {} }, { hfDir: '', prefillTokens: 1, decodeTokens: 1, threads: 1, promptIds: [1] })).resolves.toEqual({
      name: 'nothing',
      skipped: 'peer module not built',
    });
  });

  test('the reference model is ~134M parameters; its work per token', () => {
    const cfg = syntheticConfig(REFERENCE_134M);
    const w = workModel(cfg);
    expect(w.params).toBeGreaterThan(134e6);
    expect(w.params).toBeLessThan(135e6);
    // 12 layers × (4·768² + 3·768·2048) matmul weights
    expect(w.layerMatmulParams).toBe(12 * (4 * 768 * 768 + 3 * 768 * 2048));
    // prefill-512: 2·85M + attention 12·2·768·513 + lm_head 2·768·32000/512
    expect(prefillFlopsPerToken(cfg, 512)).toBeCloseTo(2 * w.layerMatmulParams + 12 * 2 * 768 * 513 + (2 * 768 * 32000) / 512, 0);
    // decode: fp32 weights (layers + lm_head) dominate; K/V adds 12·2·768·4 bytes per context position
    const d0 = decodeBytesPerToken(cfg, 0), d512 = decodeBytesPerToken(cfg, 512);
    expect(d512 - d0).toBe(12 * 2 * 768 * 4 * 512);
    expect(d0).toBeGreaterThan((w.layerMatmulParams + 32000 * 768) * 4);
  });
});
