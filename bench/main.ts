/**
 * `npm run bench -- [--suite kernels|load|tune|skip|embedded|cuda|all] [--json] [--out DIR] [--filter TEXT]`
 * Measures the ceilings, runs the suite, prints a table (stderr when --json), writes
 * results.json and results.md into DIR (default bench/out), and with --json prints the
 * DESIGN.md §7 bench object on stdout.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { backendInfo } from '../lib';
import { writeFileAtomic } from '../lib/util/atomic';
import { CaseResult, measureCeilings, runCase, BenchCase } from './harness';
import { kernelCases } from './kernels';
import { runLoadSuite } from './load';
import { runTuneSuite } from './tune';
import { runSkipSuite } from './skip';
import { runEmbeddedSuite } from './embedded';
import { runCudaSuite } from './cuda';

interface Options {
  suite: string;
  json: boolean;
  out: string;
  filter?: string;
  help?: boolean;
}

export const BENCH_USAGE = `usage: router-tuning bench [--suite kernels|load|tune|skip|embedded|cuda|all] [--json] [--out DIR] [--filter TEXT]

Measures the machine's ceilings (large copy, sgemm 2048³) and the suite's cases in one run.
  --suite S     kernels | load | tune | skip | embedded | cuda | all (default all; all = the CPU suites)
                cuda: GPU ceilings (D2D copy, bf16 GEMM) and cases; results files only with --out
  --json        print the result object (DESIGN.md §7) on stdout; the table goes to stderr
  --out DIR     write results.json and results.md there (default bench/out)
  --filter TEXT only cases whose name contains TEXT
`;

const SUITES = ['kernels', 'load', 'tune', 'skip', 'embedded', 'cuda', 'all'];

class UsageError extends Error {}

function parseArgs(argv: string[]): Options {
  const o: Options = { suite: 'all', json: false, out: path.join('bench', 'out') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = true;
    else if (a === '--suite') o.suite = argv[++i];
    else if (a === '--out') o.out = argv[++i];
    else if (a === '--filter') o.filter = argv[++i];
    else if (a === '--help' || a === '-h') o.help = true;
    else throw new UsageError(`bench: unknown option '${a}' (see --help)`);
  }
  if (!SUITES.includes(o.suite)) throw new UsageError(`bench: --suite expected one of ${SUITES.join(', ')}, received '${o.suite}'`);
  for (const [k, v] of Object.entries({ out: o.out, suite: o.suite }))
    if (v === undefined || v.startsWith('--')) throw new UsageError(`bench: --${k} expects a value`);
  return o;
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
  log('measuring ceilings (256 MiB copy, sgemm 2048³)…');
  const ceilings = measureCeilings();
  log(`ceilings: copy ${fmt(ceilings.copyGBps)} GB/s, sgemm ${fmt(ceilings.gemmGFLOPS, 1)} GFLOP/s`);
  let cases: BenchCase[] = [];
  if (opts.suite === 'kernels' || opts.suite === 'all') cases = cases.concat(kernelCases());
  if (opts.filter) cases = cases.filter((c) => c.name.includes(opts.filter!));
  const results: CaseResult[] = [];
  if ((opts.suite === 'load' || opts.suite === 'all') && (!opts.filter || 'load'.includes(opts.filter))) results.push(...runLoadSuite(log));
  if ((opts.suite === 'tune' || opts.suite === 'all') && (!opts.filter || 'tune'.includes(opts.filter))) results.push(...runTuneSuite(log));
  if ((opts.suite === 'skip' || opts.suite === 'all') && (!opts.filter || 'skip'.includes(opts.filter))) results.push(...(await runSkipSuite(log)));
  if ((opts.suite === 'embedded' || opts.suite === 'all') && (!opts.filter || 'embedded'.includes(opts.filter))) results.push(...runEmbeddedSuite(log));
  for (const c of cases) {
    const r = runCase(c, ceilings);
    results.push(r);
    log(`  ${r.name.padEnd(56)} ${fmt(r.value, 1).padStart(8)} ${r.unit.padEnd(7)} ${fmt(r.fraction * 100, 1).padStart(6)}%`);
  }
  const report = {
    machine,
    ceilings,
    cases: results.map((r) => ({
      suite: r.suite,
      name: r.name,
      value: r.value,
      unit: r.unit,
      ...(Number.isFinite(r.fraction) ? { fraction: r.fraction } : {}),
      ...(r.target !== undefined ? { target: r.target } : {}),
      seconds: r.seconds,
    })),
  };
  fs.mkdirSync(opts.out, { recursive: true });
  const cmd = `npm run bench -- ${argv.join(' ')}`.trim();
  const md = [
    `# Bench: ${opts.suite}`,
    '',
    `Command: \`${cmd}\``,
    '',
    `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.threads} threads, SIMD ${machine.simd}, ${machine.memoryGiB} GiB, Node ${machine.node}, ${machine.blas}`,
    '',
    `Ceilings (same run): copy ${fmt(ceilings.copyGBps)} GB/s (read+write), sgemm 2048³ ${fmt(ceilings.gemmGFLOPS, 1)} GFLOP/s`,
    '',
    markdownTable(results),
    '',
  ].join('\n');
  writeFileAtomic(path.join(opts.out, 'results.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileAtomic(path.join(opts.out, 'results.md'), md);
  if (opts.json) process.stdout.write(JSON.stringify(report) + '\n');
  else log(`\nwrote ${path.join(opts.out, 'results.md')}`);
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
