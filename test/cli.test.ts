import { runCli } from './helpers/cli';


describe('router-tuning CLI', () => {
  test('info --json prints backendInfo() as one JSON object', async () => {
    const r = await runCli(['info', '--json']);
    expect(r.code).toBe(0);
    const info = JSON.parse(r.out);
    expect(info).toMatchObject({ cuda: false, simd: expect.any(String), threads: expect.any(Number) });
    expect(info.memory).toHaveProperty('allocatedBytes');
  });
  test('info prints a readable summary', async () => {
    const r = await runCli(['info']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/threads, SIMD/);
  });
  test('unknown flags and commands are usage errors (exit 2) without stack traces', async () => {
    const a = await runCli(['info', '--nope']);
    expect(a.code).toBe(2);
    expect(a.err).toBe("router-tuning info: unknown option '--nope' (allowed: --json, --help, -h)\n");
    const b = await runCli(['frobnicate']);
    expect(b.code).toBe(2);
    expect(b.err).toMatch(/unknown command 'frobnicate'/);
    expect(b.err).not.toMatch(/at .*\.ts:\d+/);
  });
  test('--help exits 0', async () => {
    expect((await runCli(['--help'])).code).toBe(0);
    expect((await runCli(['info', '--help'])).out).toMatch(/usage: router-tuning info/);
  });
  test('generate and eval default to the embedded model (and eval to its test split)', async () => {
    const g = await runCli(['generate', '--prompt', 'Call me', '--max-tokens', '3', '--json']);
    expect(g.code).toBe(0);
    expect(JSON.parse(g.out).tokens).toHaveLength(3);
    const e = await runCli(['eval', '--limit', '300', '--json']);
    expect(e.code).toBe(0);
    expect(JSON.parse(e.out)).toMatchObject({ task: 'perplexity', tokens: 300 });
  });
});
