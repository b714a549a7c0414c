#!/usr/bin/env node
/**
 * The `router-tuning` command line. Every command takes --json (one JSON object on
 * stdout, logs on stderr) and --help. Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
 */
import * as path from 'path';
import { backendInfo } from '../backend';
import { RouterTuningError } from '../errors';

const USAGE = `usage: router-tuning <command> [options]

commands:
  info     backends, threads, SIMD, BLAS, CUDA devices, native memory in use
  bench    the bench suite (kernels), measured against this machine's ceilings

Run 'router-tuning <command> --help' for a command's options.
`;

const INFO_USAGE = `usage: router-tuning info [--json]

Prints the loaded backends (CPU threads and SIMD level, BLAS, CUDA) and native memory counters.
  --json   print backendInfo() as one JSON object
`;

class UsageError extends Error {}

function parseFlags(argv: string[], allowed: string[]): Set<string> {
  const flags = new Set<string>();
  for (const a of argv) {
    if (!allowed.includes(a)) throw new UsageError(`unknown option '${a}' (allowed: ${allowed.join(', ')})`);
    flags.add(a);
  }
  return flags;
}

async function info(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, ['--json', '--help', '-h']);
  if (flags.has('--help') || flags.has('-h')) {
    process.stdout.write(INFO_USAGE);
    return 0;
  }
  const i = backendInfo();
  if (flags.has('--json')) {
    process.stdout.write(JSON.stringify(i) + '\n');
    return 0;
  }
  const lines = [
    `router-tuning ${i.version}`,
    `cpu:     ${i.threads} threads, SIMD ${i.simd}`,
    `blas:    ${i.blas}`,
    `cuda:    ${i.cuda ? i.devices.filter((d) => d.type === 'cuda').map((d) => d.name).join(', ') : 'not available'}`,
    `memory:  ${i.memory.allocatedBytes} bytes in ${i.memory.liveBuffers} buffers (peak ${i.memory.peakBytes})`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

async function bench(argv: string[]): Promise<number> {
  // dist/lib/cli → dist/bench
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const mod = require(path.join(__dirname, '..', '..', 'bench', 'main')) as { runBench(argv: string[]): Promise<number> };
  return mod.runBench(argv);
}

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = { info, bench };

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  const run = COMMANDS[command];
  if (!run) {
    process.stderr.write(`router-tuning: unknown command '${command}'\n\n${USAGE}`);
    return 2;
  }
  try {
    return await run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`router-tuning ${command}: ${e.message}\n`);
      return 2;
    }
    if (e instanceof RouterTuningError) {
      process.stderr.write(`router-tuning ${command}: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`router-tuning ${command}: ${(e as Error).stack ?? e}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
