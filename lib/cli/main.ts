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
  logits   logits of a model for given token ids (interop and conformance checks)
  bench    the bench suite (kernels), measured against this machine's ceilings

Run 'router-tuning <command> --help' for a command's options.
`;

const INFO_USAGE = `usage: router-tuning info [--json]

Prints the loaded backends (CPU threads and SIMD level, BLAS, CUDA) and native memory counters.
  --json   print backendInfo() as one JSON object
`;

const LOGITS_USAGE = `usage: router-tuning logits --model DIR --ids 1,2,3 [--json | --out FILE] [--dtype float32|bfloat16]

Runs the model on the token ids and prints or writes the logits [T, V].
  --model DIR   Hugging Face model folder (config.json, *.safetensors)
  --ids LIST    comma-separated token ids
  --json        print {"shape":[T,V],"logits":[…]} (row-major float32 values)
  --out FILE    write raw little-endian float32 logits (row-major) to FILE
  --dtype D     storage dtype of the large weights (default: as stored)
`;

class UsageError extends Error {}

const BAD_INPUT_CODES = new Set(['RT_ERR_FORMAT', 'RT_ERR_CONFIG', 'RT_ERR_TOKENIZER', 'RT_ERR_WEIGHTS', 'RT_ERR_ARG', 'RT_ERR_SHAPE', 'RT_ERR_INDEX']);

/** Parses --flag value pairs and boolean flags; rejects unknown ones. */
function parseOptions(argv: string[], valued: string[], booleans: string[]): Map<string, string | true> {
  const out = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (booleans.includes(a)) out.set(a, true);
    else if (valued.includes(a)) {
      const v = argv[i + 1];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`option '${a}' expects a value`);
      out.set(a, v);
      i++;
    } else throw new UsageError(`unknown option '${a}' (allowed: ${[...valued, ...booleans].join(', ')})`);
  }
  return out;
}

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

async function logits(argv: string[]): Promise<number> {
  const o = parseOptions(argv, ['--model', '--ids', '--out', '--dtype'], ['--json', '--help', '-h']);
  if (o.has('--help') || o.has('-h')) {
    process.stdout.write(LOGITS_USAGE);
    return 0;
  }
  const dir = o.get('--model');
  const idsText = o.get('--ids');
  if (typeof dir !== 'string') throw new UsageError('--model DIR is required');
  if (typeof idsText !== 'string') throw new UsageError('--ids is required (comma-separated token ids)');
  const ids = idsText.split(',').map((s) => s.trim());
  const bad = ids.find((s) => !/^\d+$/.test(s));
  if (bad !== undefined) throw new UsageError(`--ids expected comma-separated non-negative integers, received '${bad}'`);
  const dtype = o.get('--dtype');
  if (dtype !== undefined && dtype !== 'float32' && dtype !== 'bfloat16') throw new UsageError(`--dtype expected float32 or bfloat16, received '${dtype}'`);
  if (!o.has('--json') && !o.has('--out')) throw new UsageError('choose an output: --json or --out FILE');
  const { loadModel } = await import('../model/causal_lm');
  const model = await loadModel(dir, { dtype: dtype as 'float32' | 'bfloat16' | undefined, noTokenizer: true });
  try {
    const values = await model.logits(ids.map(Number));
    const shape = [ids.length, model.config.vocabSize];
    const out = o.get('--out');
    if (typeof out === 'string') {
      const fs = await import('fs');
      const tmp = `${out}.tmp-${process.pid}`;
      fs.writeFileSync(tmp, Buffer.from(values.buffer, values.byteOffset, values.byteLength));
      fs.renameSync(tmp, out);
      if (!o.has('--json')) process.stderr.write(`wrote ${shape[0]}×${shape[1]} float32 logits to ${out}\n`);
    }
    if (o.has('--json')) process.stdout.write(JSON.stringify({ shape, logits: Array.from(values) }) + '\n');
    return 0;
  } finally {
    model.dispose();
  }
}

async function bench(argv: string[]): Promise<number> {
  // dist/lib/cli → dist/bench
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const mod = require(path.join(__dirname, '..', '..', 'bench', 'main')) as { runBench(argv: string[]): Promise<number> };
  return mod.runBench(argv);
}

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = { info, logits, bench };

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
      // Bad input (a malformed file, a bad argument) is exit 2; anything else a runtime failure.
      process.stderr.write(`router-tuning ${command}: ${e.message}\n`);
      return BAD_INPUT_CODES.has(e.code) ? 2 : 1;
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
