/**
 * `npm run bench -- [--suite kernels|e2e|tune|skip|peers|load|embedded|cuda|all] [--json] [--out DIR] [--filter TEXT]`
 * Measures the ceilings, runs the suite, prints a table (stderr when --json), writes
 * results.json and results.md into DIR (default bench/out), and with --json prints the
 * DESIGN.md §7 bench object on stdout.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { backendInfo, Tensor, dispose } from '../lib';
import { callNative } from '../lib/ops/dispatch';
import { Rng } from '../lib/util/rng';
import { writeFileAtomic } from '../lib/util/atomic';
import { CaseResult, measureCeilings, runCase, BenchCase, timeRun, randomTensor } from './harness';
import { kernelCases } from './kernels';
import { runLoadSuite } from './load';
import { runTuneSuite } from './tune';
import { runSkipSuite } from './skip';
import { runEmbeddedSuite } from './embedded';
import { runCudaSuite } from './cuda';
import { BenchCeilings, ReportCase, runE2eSuite, e2eTable, measureReadBandwidth } from './e2e';
import { runPeersSuite, peersTable, writePeersJson, PEERS, PeersSuiteResult } from './peers';

interface Options {
  suite: string;
  json: boolean;
  out: string;
  filter?: string;
  quick?: boolean;
  peers?: string[];
  help?: boolean;
}

export const BENCH_USAGE = `usage: router-tuning bench [--suite kernels|e2e|tune|skip|peers|load|embedded|cuda|all] [--json] [--out DIR] [--filter TEXT]

Measures the machine's ceilings (large copy, read-only pass, sgemm 2048³) and the suite's cases in one run.
  --suite S     kernels | e2e | tune | skip | peers | load | embedded | cuda | all
                (default all; all = every CPU suite: kernels, load, e2e, tune, skip, embedded, peers)
                e2e: prefill/decode tok/s of ~20M, 134M, ~500M and MoE models at contexts 128, 512, 2048,
                     as fractions of their rooflines
                peers: the 134M reference model against PyTorch and llama.cpp (each set up by the bench
                     into bench/.cache/peers, or RT_BENCH_CACHE/peers; skipped with a notice when it cannot be)
                cuda: GPU ceilings (D2D copy, bf16 GEMM) and cases; results files only with --out
  --json        print the result object (DESIGN.md §7) on stdout; the table goes to stderr
  --out DIR     write results.json and results.md there (default bench/out)
  --filter TEXT only cases whose name contains TEXT (e2e: 'e2e <model> ctx <T>', e.g. --filter 134M)
  --peers LIST  peers to run, comma-separated: ${PEERS.map((p) => p.name).join(', ')} (default all; 'none' for ours only)
  --quick       tiny models, one repetition, small ceilings: a smoke test of the e2e and peers suites
                (numbers are not meaningful)
`;

export const SUITES = ['kernels', 'e2e', 'tune', 'skip', 'peers', 'load', 'embedded', 'cuda', 'all'];

class UsageError extends Error {}

function parseArgs(argv: string[]): Options {
  const o: Options = { suite: 'all', json: false, out: path.join('bench', 'out') };
  const value = (i: number, flag: string): string => {
    const v = argv[i];
    if (v === undefined || v.startsWith('--')) throw new UsageError(`bench: ${flag} expects a value`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = true;
    else if (a === '--suite') o.suite = value(++i, '--suite');
    else if (a === '--out') o.out = value(++i, '--out');
    else if (a === '--filter') o.filter = value(++i, '--filter');
    else if (a === '--quick') o.quick = true;
    else if (a === '--peers') {
      const v = value(++i, '--peers');
      const names = v === 'none' ? [] : v.split(',').map((x) => x.trim()).filter(Boolean);
      const known = PEERS.map((p) => p.name);
      for (const n of names) if (!known.includes(n)) throw new UsageError(`bench: --peers expected names from ${known.join(', ')} (or none), received '${n}'`);
      o.peers = names;
    } else if (a === '--help' || a === '-h') o.help = true;
    else throw new UsageError(`bench: unknown option '${a}' (see --help)`);
  }
  if (!SUITES.includes(o.suite)) throw new UsageError(`bench: --suite expected one of ${SUITES.join(', ')}, received '${o.suite}'`);
  return o;
}

/** Small, fast ceilings for --quick (16 MiB copy and read, sgemm 512³): a smoke test only. */
function quickCeilings(): BenchCeilings {
  const n = 4 * 1024 * 1024;
  const a = Tensor.empty([n]);
  const b = Tensor.empty([n]);
  callNative('fill', [a.handle, 1, n]);
  const tCopy = timeRun(() => callNative('tensor_copy', [b.handle, a.handle, 0, 0, n]), 0.05, 3);
  dispose([a, b]);
  const m = 512;
  const rng = new Rng(7);
  const x = randomTensor(rng, [m, m]);
  const w = randomTensor(rng, [m, m]);
  const c = Tensor.empty([m, m]);
  let gemmGFLOPS = NaN;
  try {
    const t = timeRun(() => callNative('matmul', [c.handle, x.handle, w.handle, 0, 0, 1, m, m, m, 0, 0, 0, 1, 0]), 0.05, 3);
    gemmGFLOPS = (2 * m * m * m) / t / 1e9;
  } finally {
    dispose([x, w, c]);
  }
  const read = measureReadBandwidth({ bytes: 16 * 2 ** 20, minSeconds: 0.05 });
  return { copyGBps: (2 * n * 4) / tCopy / 1e9, gemmGFLOPS, readGBps: read.readGBps };
}

export function machineDescription() {
  const info = backendInfo();
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    threads: info.threads,
    simd: info.simd,
    blas: info.blas,
    node: process.version,
    version: info.version,
  };
}

function fmt(n: number, digits = 2): string {
  return Number.isFinite(n) ? n.toFixed(digits) : String(n);
}

export function markdownTable(results: CaseResult[]): string {
  const lines = ['| case | time (ms) | rate | fraction of ceiling | target | met |', '|---|---:|---:|---:|---:|:-:|'];
  for (const r of results) {
    if (r.higherIsBetter) {
      const met = r.target === undefined ? '' : r.value >= r.target ? 'yes' : '**no**';
      lines.push(`| ${r.name} | | ${fmt(r.value, 3)} ${r.unit} | | ≥ ${r.target} | ${met} |`);
      continue;
    }
    if (r.lowerIsBetter) {
      const met = r.target === undefined ? '' : r.value <= r.target ? 'yes' : '**no**';
      lines.push(`| ${r.name} | ${fmt(r.seconds * 1e3, 0)} | ${fmt(r.value, 3)} ${r.unit} | | ≤ ${r.target} | ${met} |`);
      continue;
    }
    const met = r.target === undefined ? '' : r.fraction >= r.target ? 'yes' : '**no**';
    const frac = Number.isFinite(r.fraction) ? `${fmt(r.fraction * 100, 1)}%` : '';
    lines.push(
      `| ${r.name} | ${fmt(r.seconds * 1e3, 3)} | ${fmt(r.value, 2)} ${r.unit} | ${frac} | ${r.target === undefined ? '' : fmt(r.target * 100, 0) + '%'} | ${met} |`,
    );
  }
  return lines.join('\n');
}

/** The suites `all` runs, in order (every CPU suite). */
export const ALL_SUITES = ['kernels', 'load', 'e2e', 'tune', 'skip', 'embedded', 'peers'];

/** Runs the bench CLI; returns the exit code (0 ok, 1 failure, 2 bad usage). */
export async function runBench(argv: string[]): Promise<number> {
  let opts: Options;
  try {
    opts = parseArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(e.message + '\n');
      return 2;
    }
    throw e;
  }
  if (opts.help) {
    process.stdout.write(BENCH_USAGE);
    return 0;
  }
  if (opts.suite === 'cuda') return runCudaSuite({ json: opts.json, out: argv.includes('--out') ? opts.out : undefined, filter: opts.filter, argv });
  const log = (s: string) => (opts.json ? process.stderr : process.stdout).write(s + '\n');
  const machine = machineDescription();
  log(`machine: ${machine.cpu}, ${machine.cores} cores, ${machine.threads} threads, ${machine.simd}`);
  let ceilings: BenchCeilings;
  const quickCeil = !!opts.quick && (opts.suite === 'e2e' || opts.suite === 'peers');
  if (quickCeil) {
    log('measuring ceilings (quick: 16 MiB copy and read, sgemm 512³)…');
    ceilings = quickCeilings();
  } else {
    log('measuring ceilings (256 MiB copy, 256 MiB read, sgemm 2048³)…');
    const read = measureReadBandwidth();
    ceilings = { ...measureCeilings(), readGBps: read.readGBps };
    log(`  read-only pass over 256 MiB: sum of squares ${fmt(read.sumSquaresGBps)} GB/s, GEMV ${fmt(read.gemvGBps)} GB/s (the faster is readGBps)`);
  }
  log(`ceilings: copy ${fmt(ceilings.copyGBps)} GB/s (read+write), read ${fmt(ceilings.readGBps ?? NaN)} GB/s, sgemm ${fmt(ceilings.gemmGFLOPS, 1)} GFLOP/s`);
  const runs = (name: string) => opts.suite === name || (opts.suite === 'all' && ALL_SUITES.includes(name));
  // the older suites run whole unless the filter names them; e2e filters its own cases
  const whole = (name: string) => runs(name) && (!opts.filter || name.includes(opts.filter));
  const results: ReportCase[] = [];
  let peers: PeersSuiteResult | undefined;
  const remeasure = quickCeil ? undefined : (): BenchCeilings => ({ ...measureCeilings(), readGBps: measureReadBandwidth().readGBps });
  if (whole('load')) results.push(...runLoadSuite(log));
  if (runs('e2e')) {
    log('e2e: prefill and decode tokens/s against their rooflines …');
    results.push(...runE2eSuite(log, ceilings, { quick: opts.quick, filter: opts.filter, remeasure }));
  }
  if (whole('tune')) results.push(...runTuneSuite(log));
  if (whole('skip')) results.push(...(await runSkipSuite(log)));
  if (whole('embedded')) results.push(...runEmbeddedSuite(log));
  if (runs('kernels')) {
    let cases: BenchCase[] = kernelCases();
    if (opts.filter) cases = cases.filter((c) => c.name.includes(opts.filter!));
    for (const c of cases) {
      const r = runCase(c, ceilings);
      results.push(r);
      log(`  ${r.name.padEnd(56)} ${fmt(r.value, 1).padStart(8)} ${r.unit.padEnd(7)} ${fmt(r.fraction * 100, 1).padStart(6)}%`);
    }
  }
  if (whole('peers')) {
    log('peers: the 134M reference model against PyTorch and llama.cpp …');
    peers = await runPeersSuite(log, ceilings, { quick: opts.quick, peers: opts.peers, remeasure });
    results.push(...peers.cases);
  }
  const cmd = `router-tuning bench ${argv.join(' ')}`.trim();
  const report = {
    command: cmd,
    machine,
    ceilings,
    cases: results.map((r) => ({
      suite: r.suite,
      name: r.name,
      value: r.value,
      unit: r.unit,
      ...(Number.isFinite(r.fraction) ? { fraction: r.fraction } : {}),
      ...(r.ideal !== undefined && Number.isFinite(r.ideal) ? { ideal: r.ideal } : {}),
      ...(r.peer !== undefined ? { peer: r.peer } : {}),
      ...(r.peerValue !== undefined ? { peerValue: r.peerValue } : {}),
      ...(r.ratio !== undefined ? { ratio: r.ratio } : {}),
      ...(r.skipped !== undefined ? { skipped: r.skipped } : {}),
      ...(r.target !== undefined ? { target: r.target } : {}),
      ...(r.target !== undefined && r.ratio !== undefined ? { met: r.ratio >= r.target } : {}),
      seconds: r.seconds,
    })),
    ...(peers ? { peers: peers.peers, peerSettings: peers.settings } : {}),
  };
  fs.mkdirSync(opts.out, { recursive: true });
  const sections: string[] = [];
  const bySuite = new Map<string, ReportCase[]>();
  for (const r of results) bySuite.set(r.suite, [...(bySuite.get(r.suite) ?? []), r]);
  for (const [suite, rows] of bySuite) {
    sections.push(`## ${suite}`, '');
    if (suite === 'e2e') {
      sections.push(
        `Prefill roofline: sgemm rate / FLOPs per prompt token (2·active non-embedding weights + causal attention + lm_head/T); ` +
          `decode roofline: read-only bandwidth / bytes per step (active weights incl. lm_head + K/V read at the mean context). ` +
          `Ceilings measured again right before and after each model, the larger of each used (the last column); on a shared machine whose load drifts, ` +
          `a fraction above 100% means the machine was busier while the ceiling was measured than while the case ran.`,
        '',
        e2eTable(rows),
      );
    } else if (suite === 'peers') sections.push(peersTable(rows, peers?.peers ?? []));
    else sections.push(markdownTable(rows));
    sections.push('');
  }
  const md = [
    `# Bench: ${opts.suite}${opts.quick ? ' (quick smoke test: numbers are not meaningful)' : ''}`,
    '',
    `Command: \`${cmd}\``,
    '',
    `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.threads} threads, SIMD ${machine.simd}, ${machine.memoryGiB} GiB, Node ${machine.node}, ${machine.blas}`,
    '',
    `Ceilings (same run): copy ${fmt(ceilings.copyGBps)} GB/s (read+write), read ${fmt(ceilings.readGBps ?? NaN)} GB/s (read-only: the faster of a sum of squares and a GEMV), sgemm ${quickCeil ? '512³' : '2048³'} ${fmt(ceilings.gemmGFLOPS, 1)} GFLOP/s`,
    '',
    ...sections,
  ].join('\n');
  writeFileAtomic(path.join(opts.out, 'results.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileAtomic(path.join(opts.out, 'results.md'), md);
  if (peers) writePeersJson(opts.out, peers);
  if (opts.json) process.stdout.write(JSON.stringify(report) + '\n');
  else {
    for (const suite of ['e2e', 'peers']) if (bySuite.has(suite)) log(`\n${suite === 'e2e' ? e2eTable(bySuite.get(suite)!) : peersTable(bySuite.get(suite)!, peers?.peers ?? [])}`);
    log(`\nwrote ${path.join(opts.out, 'results.md')}`);
  }
  return 0;
}

if (require.main === module) {
  runBench(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`bench: ${(e as Error).message}\n`);
      process.exit(1);
    },
  );
}
