#!/usr/bin/env node
/**
 * The `router-tuning` command line. Every command takes --json (one JSON object on
 * stdout, logs on stderr) and --help. Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
 */
import * as path from 'path';
import { backendInfo } from '../backend';
import { RouterTuningError } from '../errors';
import { writeFileAtomic } from '../util/atomic';

const USAGE = `usage: router-tuning <command> [options]

commands:
  info     backends, threads, SIMD, BLAS, CUDA devices, native memory in use
  tune     router-tune a model: attach routers, train only them, save them
  generate text generation with dynamic depth (layers really skipped), streaming
  eval     perplexity / multiple-choice accuracy: no routers, routers, static attention drop
  logits   logits of a model for given token ids (interop and conformance checks)
  serve    HTTP service: OpenAI-style completions and chat (SSE streaming), /health, /metrics
  bench    the bench suite (kernels, e2e, tune, skip, peers, cuda, …) against this machine's ceilings and peers

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

/**
 * Main-job defaults: token-level attention routers (keep-kv) on the default layers (the
 * deepest half but the last), skipping half of their executions = a quarter of all
 * attention work. Measured on the embedded model, keep-kv token routing lost the least
 * perplexity at that ratio (seq-level and mod token routing lost more; see bench/RESULTS.md).
 */
const MAIN_JOB = { granularity: 'attn-token', mode: 'keep-kv' as const, targetSkip: 0.5, steps: 150, lr: 3e-3, lambda: 0.3, evalTokens: 20000, trainChars: 2_000_000 };
const MAIN_JOB_EVAL_TOKENS = MAIN_JOB.evalTokens;

const BAD_INPUT_CODES = new Set(['RT_ERR_FORMAT', 'RT_ERR_CONFIG', 'RT_ERR_TOKENIZER', 'RT_ERR_WEIGHTS', 'RT_ERR_ARG', 'RT_ERR_SHAPE', 'RT_ERR_INDEX', 'RT_ERR_DATA']);

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


async function info(argv: string[]): Promise<number> {
  const flags = parseOptions(argv, [], ['--json', '--help', '-h']);
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
      writeFileAtomic(out, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
      if (!o.has('--json')) process.stderr.write(`wrote ${shape[0]}×${shape[1]} float32 logits to ${out}\n`);
    }
    if (o.has('--json')) process.stdout.write(JSON.stringify({ shape, logits: Array.from(values) }) + '\n');
    return 0;
  } finally {
    model.dispose();
  }
}

const TUNE_USAGE = `usage: router-tuning tune [--model DIR] [--data PATH] [options]

Attaches routers to the model, trains only them, and saves them (safetensors + metadata).
With neither --model nor --data, runs the main job: router-tunes the embedded model on the
embedded corpus, then compares no routers / tuned routers / static attention drop on the
held-out test split (table, --json, and a report folder).
  --model DIR          Hugging Face model folder (default: the embedded model)
  --data PATH          text file/folder, or JSONL ({text} | {prompt, completion} |
                       {instruction, input, output} | {messages}) (default: the embedded corpus)
  --report DIR         main job: where to write the report (default router-tuning-report)
  --eval-tokens N      main job: test tokens to score (default ${MAIN_JOB_EVAL_TOKENS})
  --no-eval            main job: skip the test-split comparison
  --granularity G      attn-seq (default) | attn-token | mlp-seq | mlp-token | block-seq |
                       block-token | moe-token | expert
  --layers 3,5,7       routed layers (default: the deepest ⌊L/2⌋ except the last)
  --mode M             token-level attention: mod (default) | keep-kv
  --threshold F        decision threshold τ (default 0.5)
  --target-skip F      requested skip ratio (default 0.25)
  --lambda F           weight of the capacity term (default 1)
  --regularizer R      global (default) | per-layer | l1
  --steps N            optimiser steps (default 200; 0 saves fresh routers)
  --lr F               peak learning rate (default 1e-3), cosine schedule
  --warmup N           warmup steps (default 10% of steps)
  --batch-size N       sequences per micro-batch (default 8)
  --grad-accum N       micro-batches per step (default 1)
  --seq-len N          tokens per sequence (default 256)
  --val-every N        validation every N steps (default 50)
  --calibrate          set the threshold so the held-out skip ratio equals --target-skip
  --lora-rank R        also train rank-R LoRA adapters on q/k/v/o and the MLP projections
  --seed N             seed for data order (default 0); runs are deterministic
  --out FILE           where to save the routers (default routers.safetensors)
  --resume FILE        continue a run saved with --out
  --json               print the result object on stdout
`;

function num(o: Map<string, string | true>, key: string, kind: 'int' | 'float'): number | undefined {
  const v = o.get(key);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !Number.isFinite(n) || (kind === 'int' && !Number.isInteger(n)))
    throw new UsageError(`${key} expected ${kind === 'int' ? 'an integer' : 'a number'}, received '${v}'`);
  return n;
}

async function tuneCommand(argv: string[]): Promise<number> {
  const valued = ['--model', '--data', '--granularity', '--layers', '--mode', '--threshold', '--target-skip', '--lambda', '--regularizer', '--steps', '--lr', '--warmup', '--batch-size', '--grad-accum', '--seq-len', '--val-every', '--seed', '--out', '--resume', '--lora-rank', '--report', '--eval-tokens'];
  const o = parseOptions(argv, valued, ['--json', '--calibrate', '--no-eval', '--help', '-h']);
  if (o.has('--help') || o.has('-h')) {
    process.stdout.write(TUNE_USAGE);
    return 0;
  }
  const { EMBEDDED_MODEL, EMBEDDED_CORPUS } = await import('./main_job');
  const dirOpt = o.get('--model');
  const dataOpt = o.get('--data');
  // The main job: no model and no data → the embedded model on the embedded corpus, then
  // the test-split table and report.
  const mainJob = dirOpt === undefined && dataOpt === undefined;
  if (dirOpt !== undefined && dataOpt === undefined)
    throw new UsageError('--data PATH is required with --model (run with neither for the main job on the embedded model and corpus)');
  const dir = typeof dirOpt === 'string' ? dirOpt : EMBEDDED_MODEL;
  const data = typeof dataOpt === 'string' ? dataOpt : path.join(EMBEDDED_CORPUS, 'train.txt');
  const fsm = await import('fs');
  if (!fsm.existsSync(path.join(dir, 'config.json'))) throw new UsageError(`${dir}: no model there (config.json missing)${dirOpt === undefined ? '; the embedded model is not built in this checkout' : ''}`);
  const { GRANULARITIES } = await import('../routing/routers');
  const granularity = (o.get('--granularity') as string | undefined) ?? (mainJob ? MAIN_JOB.granularity : 'attn-seq');
  if (!(GRANULARITIES as readonly string[]).includes(granularity))
    throw new UsageError(`--granularity expected one of ${GRANULARITIES.join(', ')}, received '${granularity}'`);
  let layers: number[] | undefined;
  const layersText = o.get('--layers');
  if (typeof layersText === 'string') {
    layers = layersText.split(',').map((x) => {
      if (!/^\d+$/.test(x.trim())) throw new UsageError(`--layers expected comma-separated layer indices, received '${layersText}'`);
      return Number(x);
    });
  }
  const mode = o.get('--mode') as string | undefined;
  if (mode !== undefined && mode !== 'mod' && mode !== 'keep-kv') throw new UsageError(`--mode expected mod or keep-kv, received '${mode}'`);
  const regularizer = o.get('--regularizer') as string | undefined;
  if (regularizer !== undefined && !['global', 'per-layer', 'l1'].includes(regularizer))
    throw new UsageError(`--regularizer expected global, per-layer or l1, received '${regularizer}'`);
  const json = o.has('--json');
  const out = (o.get('--out') as string | undefined) ?? 'routers.safetensors';
  const { loadModel } = await import('../model/causal_lm');
  const { tune } = await import('../train/tune');
  const model = await loadModel(dir);
  let valExamples: import('../train/data').Example[] | undefined;
  let examples: import('../train/data').Example[] | undefined;
  if (mainJob) {
    // the corpus's own validation split for validation and calibration; test stays unseen
    const { loadExamples } = await import('../train/data');
    const seqLen = num(o, '--seq-len', 'int') ?? 256;
    const lo = { seqLen, bosId: model.config.bosTokenId, eosId: model.config.eosTokenIds[0] };
    // a prefix of the (hash-ordered, so mixed) train split is plenty for the routers
    examples = loadExamples(path.join(EMBEDDED_CORPUS, 'train.txt'), model.tokenizer!, { ...lo, maxChars: MAIN_JOB.trainChars }).examples;
    valExamples = loadExamples(path.join(EMBEDDED_CORPUS, 'validation.txt'), model.tokenizer!, lo).examples.slice(0, 32);
  }
  const tty = process.stderr.isTTY;
  let lastDraw = 0;
  try {
    const r = await tune(model, {
      data: examples ? undefined : data,
      examples,
      valExamples,
      granularity: granularity as never,
      layers,
      mode: (mode as 'mod' | 'keep-kv' | undefined) ?? (mainJob && granularity === MAIN_JOB.granularity ? MAIN_JOB.mode : undefined),
      threshold: num(o, '--threshold', 'float'),
      targetSkip: num(o, '--target-skip', 'float') ?? (mainJob ? MAIN_JOB.targetSkip : undefined),
      lambda: num(o, '--lambda', 'float') ?? (mainJob ? MAIN_JOB.lambda : undefined),
      regularizer: regularizer as never,
      steps: num(o, '--steps', 'int') ?? (mainJob ? MAIN_JOB.steps : undefined),
      lr: num(o, '--lr', 'float') ?? (mainJob ? MAIN_JOB.lr : undefined),
      warmupSteps: num(o, '--warmup', 'int'),
      batchSize: num(o, '--batch-size', 'int'),
      gradAccum: num(o, '--grad-accum', 'int'),
      seqLen: num(o, '--seq-len', 'int'),
      valEvery: num(o, '--val-every', 'int'),
      seed: num(o, '--seed', 'int'),
      // the main job calibrates on the validation split so the skip ratio is the one asked for
      calibrate: o.has('--calibrate') || mainJob,
      loraRank: num(o, '--lora-rank', 'int'),
      out,
      resume: o.get('--resume') as string | undefined,
      onProgress: (p) => {
        const now = Date.now();
        if (now - lastDraw < 200 && p.step < p.steps) return;
        lastDraw = now;
        const width = 24;
        const filled = Math.round((p.step / Math.max(1, p.steps)) * width);
        const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
        const eta = p.etaSeconds >= 60 ? `${Math.floor(p.etaSeconds / 60)}m${Math.round(p.etaSeconds % 60)}s` : `${Math.round(p.etaSeconds)}s`;
        const line = `tune ${bar} ${p.step}/${p.steps} loss ${p.loss.toFixed(4)} exec ${(p.executedFraction * 100).toFixed(1)}% ${Math.round(p.tokensPerSecond)} tok/s ETA ${eta}${p.valLoss !== undefined ? ` val ${p.valLoss.toFixed(4)}` : ''}`;
        if (tty) process.stderr.write(`\r${line}\x1b[K${p.step === p.steps ? '\n' : ''}`);
        else if (p.step === p.steps || p.step % Math.max(1, Math.floor(p.steps / 10)) === 0) process.stderr.write(line + '\n');
      },
    });
    const result = {
      routers: r.routers,
      granularity: r.granularity,
      steps: r.steps,
      trainLoss: r.trainLoss,
      valLoss: r.valLoss,
      skipRatio: r.skipRatio,
      layers: r.layers,
      thresholds: r.thresholds,
      calibrated: r.calibrated,
      tokensPerSecond: r.tokensPerSecond,
    };
    if (mainJob && !o.has('--no-eval')) {
      const { measureAll, mainJobTable, writeMainJobReport } = await import('./main_job');
      const testText = fsm.readFileSync(path.join(EMBEDDED_CORPUS, 'test.txt'), 'utf8');
      process.stderr.write('measuring on the test split: no routers, tuned routers, static attention drop …\n');
      const m = await measureAll(model, testText, { window: 256, limit: num(o, '--eval-tokens', 'int') ?? MAIN_JOB.evalTokens });
      const reportDir = (o.get('--report') as string | undefined) ?? 'router-tuning-report';
      // the unigram baseline: token frequencies of the train prefix, scored on the same test tokens
      const { unigramPerplexity } = await import('./main_job');
      const trainIds: number[] = [];
      for (const e of examples!) for (const t of e.ids) trainIds.push(t);
      const testIds = model.tokenizer!.encode(testText).slice(0, (m.eval.tokens ?? 0) + 1).slice(1);
      const unigram = unigramPerplexity(trainIds, testIds, model.config.vocabSize);
      writeMainJobReport(reportDir, m.rows, result, m.eval.tokens ?? 0, unigram);
      const withEval = { ...result, eval: { ...m.eval, base: m.rows.base, routed: m.rows.routed, staticDrop: m.rows.staticDrop, unigramPerplexity: unigram }, report: reportDir };
      r.routerSet.dispose();
      if (json) process.stdout.write(JSON.stringify(withEval) + '\n');
      else process.stdout.write(`${mainJobTable(m.rows, m.eval.tokens ?? 0)}\n(unigram model on the same tokens: perplexity ${unigram.toFixed(1)})\nrouters saved to ${r.routers}; report written to ${reportDir}/report.md\n`);
      return 0;
    }
    r.routerSet.dispose();
    if (json) process.stdout.write(JSON.stringify(result) + '\n');
    else {
      const lines = [
        `routers saved to ${r.routers} (${r.granularity}, ${r.steps} steps)`,
        `train loss ${r.trainLoss.toFixed(4)}   validation loss ${r.valLoss.toFixed(4)}   skip ratio ${(r.skipRatio * 100).toFixed(1)}%`,
        ...r.layers.map((l) => `  layer ${String(l.layer).padStart(3)}  executed ${(l.executedFraction * 100).toFixed(1)}%`),
      ];
      process.stdout.write(lines.join('\n') + '\n');
    }
    return 0;
  } finally {
    model.dispose();
  }
}

const GENERATE_USAGE = `usage: router-tuning generate [--model DIR] [--routers FILE] --prompt TEXT [options]

Generates text with the routers' skipped layers really skipped, streaming to stdout.
  --model DIR        Hugging Face model folder (default: the embedded model)
  --routers FILE     routers saved by 'tune' (default: none, the full model)
  --prompt TEXT      the prompt (repeat --prompt for a batch of prompts)
  --max-tokens N     tokens to generate (default 64)
  --temperature F    0 = greedy (default); > 0 samples
  --top-k N          sample among the N most likely tokens (default: all)
  --top-p F          nucleus sampling mass (default 1)
  --seed N           sampling seed (default 0)
  --stop TEXT        stop at this text (repeatable)
  --no-routing       ignore the routers (the full model, for comparison)
  --json             print {text, tokens, stats} (an array for several prompts)
`;

async function generateCommand(argv: string[]): Promise<number> {
  const prompts: string[] = [];
  const stops: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--prompt' || argv[i] === '--stop') {
      const v = argv[i + 1];
      if (v === undefined) throw new UsageError(`option '${argv[i]}' expects a value`);
      (argv[i] === '--prompt' ? prompts : stops).push(v);
      i++;
    } else rest.push(argv[i]);
  }
  const o = parseOptions(rest, ['--model', '--routers', '--max-tokens', '--temperature', '--top-k', '--top-p', '--seed'], ['--json', '--no-routing', '--help', '-h']);
  if (o.has('--help') || o.has('-h')) {
    process.stdout.write(GENERATE_USAGE);
    return 0;
  }
  const { EMBEDDED_MODEL } = await import('./main_job');
  const dirOpt = o.get('--model');
  const dir = typeof dirOpt === 'string' ? dirOpt : EMBEDDED_MODEL;
  if (prompts.length === 0) throw new UsageError('--prompt TEXT is required');
  const { loadModel } = await import('../model/causal_lm');
  const { generateStream } = await import('../infer/generate');
  const model = await loadModel(dir);
  try {
    const routers = o.get('--routers');
    if (typeof routers === 'string') model.loadRouters(routers);
    const json = o.has('--json');
    const it = generateStream(model, prompts, {
      maxTokens: num(o, '--max-tokens', 'int'),
      temperature: num(o, '--temperature', 'float'),
      topK: num(o, '--top-k', 'int'),
      topP: num(o, '--top-p', 'float'),
      seed: num(o, '--seed', 'int'),
      stop: stops,
      routing: !o.has('--no-routing'),
    });
    const single = prompts.length === 1;
    if (!json && single) process.stdout.write(prompts[0]);
    let r = await it.next();
    while (!r.done) {
      if (!json && single) process.stdout.write(r.value.text);
      r = await it.next();
    }
    const results = r.value;
    if (json) {
      const pack = (x: (typeof results)[number]) => ({ text: x.text, tokens: x.tokens, stats: x.stats });
      process.stdout.write(JSON.stringify(single ? pack(results[0]) : results.map(pack)) + '\n');
    } else {
      if (!single) results.forEach((x, i) => process.stdout.write(`--- [${i}] ${prompts[i]}${x.text}\n`));
      else process.stdout.write('\n');
      const st = results[0].stats;
      process.stderr.write(
        `prefill ${st.prefillTokensPerSecond.toFixed(1)} tok/s, decode ${st.decodeTokensPerSecond.toFixed(1)} tok/s, skip ratio ${(st.skipRatio * 100).toFixed(1)}%, KV ${st.kvBytes} bytes (saved ${st.kvBytesSaved})\n`,
      );
    }
    return 0;
  } finally {
    model.dispose();
  }
}

const EVAL_USAGE = `usage: router-tuning eval [--model DIR] [--routers FILE] [--data PATH] [options]

Scores the model without routers, with routers (layers really skipped), and the static
Attention Drop baseline at the same skip ratio.
  --model DIR         Hugging Face model folder (default: the embedded model)
  --data PATH         text or JSONL to score (default: the embedded corpus's test split)
  --task T            perplexity (default; --data is a text file) | multiple-choice
                      (--data is JSONL of {context, choices, label})
  --routers FILE      routers saved by 'tune'
  --baseline B        static-drop (default with routers) | none
  --window N          perplexity window in tokens (default min(1024, max positions))
  --stride N          perplexity stride (default window / 2)
  --limit N           score at most N tokens (perplexity) or items (multiple-choice)
  --report DIR        write report.md, quality-vs-skip.svg and layer-skip.svg there
  --json              print the eval object on stdout
`;

async function evalCommand(argv: string[]): Promise<number> {
  const o = parseOptions(argv, ['--model', '--routers', '--data', '--task', '--baseline', '--window', '--stride', '--limit', '--report'], ['--json', '--help', '-h']);
  if (o.has('--help') || o.has('-h')) {
    process.stdout.write(EVAL_USAGE);
    return 0;
  }
  const { EMBEDDED_MODEL, EMBEDDED_CORPUS } = await import('./main_job');
  const dirOpt = o.get('--model');
  const dataOpt = o.get('--data');
  const dir = typeof dirOpt === 'string' ? dirOpt : EMBEDDED_MODEL;
  const data = typeof dataOpt === 'string' ? dataOpt : path.join(EMBEDDED_CORPUS, 'test.txt');
  const task = (o.get('--task') as string | undefined) ?? 'perplexity';
  if (task !== 'perplexity' && task !== 'multiple-choice') throw new UsageError(`--task expected perplexity or multiple-choice, received '${task}'`);
  const baseline = (o.get('--baseline') as string | undefined) ?? 'static-drop';
  if (baseline !== 'static-drop' && baseline !== 'none') throw new UsageError(`--baseline expected static-drop or none, received '${baseline}'`);
  const { loadModel } = await import('../model/causal_lm');
  const { evaluate } = await import('../infer/evaluate');
  const model = await loadModel(dir);
  try {
    const routers = o.get('--routers');
    if (typeof routers === 'string') model.loadRouters(routers);
    const r = await evaluate(model, {
      task,
      data,
      window: num(o, '--window', 'int'),
      stride: num(o, '--stride', 'int'),
      limit: num(o, '--limit', 'int'),
      staticDrop: baseline === 'static-drop',
    });
    const report = o.get('--report');
    if (typeof report === 'string') writeEvalReport(report, r);
    if (o.has('--json')) process.stdout.write(JSON.stringify(r) + '\n');
    else {
      const metric = task === 'perplexity' ? 'perplexity' : 'accuracy';
      const rows: [string, import('../infer/evaluate').EvalMetrics | undefined][] = [['no routers', r.base], ['routers', r.routed], ['static attention drop', r.staticDrop]];
      const lines = [`${task} on ${r.tokens ?? r.items} ${task === 'perplexity' ? 'tokens' : 'items'}`, `${'model'.padEnd(24)}${metric.padStart(12)}${task === 'multiple-choice' ? 'acc_norm'.padStart(12) : ''}${'skip ratio'.padStart(12)}`];
      for (const [name, m] of rows) {
        if (!m) continue;
        const v = task === 'perplexity' ? m.perplexity!.toFixed(3) : (m.accuracy! * 100).toFixed(1) + '%';
        const n = task === 'multiple-choice' ? (m.accuracyNorm! * 100).toFixed(1).padStart(11) + '%' : '';
        lines.push(`${name.padEnd(24)}${v.padStart(12)}${n}${((m.skipRatio * 100).toFixed(1) + '%').padStart(12)}${m.droppedLayers ? `  dropped layers ${m.droppedLayers.join(',')}` : ''}`);
      }
      process.stdout.write(lines.join('\n') + '\n');
    }
    return 0;
  } finally {
    model.dispose();
  }
}

function writeEvalReport(dir: string, r: import('../infer/evaluate').EvalResult): void {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const fs = require('fs') as typeof import('fs');
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const path = require('path') as typeof import('path');
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { lineChartSvg, barChartSvg } = require('../infer/plots') as typeof import('../infer/plots');
  fs.mkdirSync(dir, { recursive: true });
  const val = (m: import('../infer/evaluate').EvalMetrics) => (r.task === 'perplexity' ? m.perplexity! : m.accuracy!);
  const yLabel = r.task === 'perplexity' ? 'perplexity (lower is better)' : 'accuracy';
  const series = [{ label: 'routers', color: '#3b7dd8', points: [{ x: 0, y: val(r.base) }, ...(r.routed ? [{ x: r.routed.skipRatio, y: val(r.routed) }] : [])] }];
  if (r.staticDrop) series.push({ label: 'static attention drop', color: '#d8643b', points: [{ x: 0, y: val(r.base) }, { x: r.staticDrop.skipRatio, y: val(r.staticDrop) }] });
  const write = (name: string, text: string) => writeFileAtomic(path.join(dir, name), text);
  write('quality-vs-skip.svg', lineChartSvg(`${r.task}: quality vs skip ratio`, 'skip ratio', yLabel, series));
  if (r.routed?.layers) write('layer-skip.svg', barChartSvg('skip rate per routed layer', r.routed.layers.map((l) => ({ label: String(l.layer), value: 1 - l.executedFraction })), 'skipped'));
  const md = ['# Evaluation', '', `Task: ${r.task} (${r.tokens ?? r.items} ${r.task === 'perplexity' ? 'tokens' : 'items'})`, '', '| model | ' + (r.task === 'perplexity' ? 'perplexity' : 'accuracy | acc_norm') + ' | skip ratio |', r.task === 'perplexity' ? '|---|---:|---:|' : '|---|---:|---:|---:|'];
  for (const [name, m] of [['no routers', r.base], ['routers', r.routed], ['static attention drop', r.staticDrop]] as const) {
    if (!m) continue;
    md.push(r.task === 'perplexity' ? `| ${name} | ${m.perplexity!.toFixed(3)} | ${(m.skipRatio * 100).toFixed(1)}% |` : `| ${name} | ${(m.accuracy! * 100).toFixed(1)}% | ${(m.accuracyNorm! * 100).toFixed(1)}% | ${(m.skipRatio * 100).toFixed(1)}% |`);
  }
  md.push('', '![quality vs skip ratio](quality-vs-skip.svg)', '', r.routed?.layers ? '![skip rate per layer](layer-skip.svg)' : '', '');
  write('report.md', md.join('\n'));
}

async function bench(argv: string[]): Promise<number> {
  // dist/lib/cli → dist/bench
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const mod = require(path.join(__dirname, '..', '..', 'bench', 'main')) as { runBench(argv: string[]): Promise<number> };
  return mod.runBench(argv);
}

const SERVE_USAGE = `usage: router-tuning serve [--model DIR] [--routers FILE] [--host 127.0.0.1] [--port N] [options]

Serves the model over HTTP until SIGINT/SIGTERM (then: stop accepting, let running
generations finish for up to 10 s, cancel the rest, exit 0). The model runs in a worker
thread; the HTTP side stays responsive during generation.
  POST /v1/completions        OpenAI-style; "stream": true for server-sent events
  POST /v1/chat/completions   messages → the model's chat template (else "role: content" lines)
  GET  /v1/models, /health, /metrics (Prometheus text)
Per request, "routing": "off" | "on" | {"target_skip": F} | {"threshold": F}.
  --model DIR              Hugging Face model folder (default: the embedded model)
  --routers FILE           routers saved by 'tune' (default: none; routing then "off")
  --calibration PATH       text for target_skip calibration (default: the embedded corpus's
                           validation split)
  --host H                 address to bind (default 127.0.0.1, loopback only)
  --port N                 port (default 8080; 0 picks a free one)
  --concurrency N          generations run at once, interleaved token by token (default 1)
  --queue N                requests that may wait for a slot (default 32); beyond: 429
  --max-body BYTES         largest request body (default 1048576); beyond: 413
  --max-prompt-tokens N    largest prompt (default: the model's context length); beyond: 400
  --max-tokens N           largest max_tokens (default min(1024, context length)); beyond: 400
  --threads N              engine threads (default RT_NUM_THREADS or all cores)
  --device D               cpu (default) | cuda
  --json                   print {"url","host","port","model",…} on stdout once listening
`;

async function serveCommand(argv: string[]): Promise<number> {
  const valued = ['--model', '--routers', '--calibration', '--host', '--port', '--concurrency', '--queue', '--max-body', '--max-prompt-tokens', '--max-tokens', '--threads', '--device'];
  const o = parseOptions(argv, valued, ['--json', '--help', '-h']);
  if (o.has('--help') || o.has('-h')) {
    process.stdout.write(SERVE_USAGE);
    return 0;
  }
  const fsm = await import('fs');
  const { EMBEDDED_MODEL } = await import('./main_job');
  const dirOpt = o.get('--model');
  const dir = typeof dirOpt === 'string' ? dirOpt : EMBEDDED_MODEL;
  if (!fsm.existsSync(path.join(dir, 'config.json'))) throw new UsageError(`${dir}: no model there (config.json missing)${dirOpt === undefined ? '; the embedded model is not built in this checkout' : ''}`);
  const routers = o.get('--routers') as string | undefined;
  if (routers !== undefined && !fsm.existsSync(routers)) throw new UsageError(`--routers ${routers}: no such file`);
  const calibration = o.get('--calibration') as string | undefined;
  if (calibration !== undefined && !fsm.existsSync(calibration)) throw new UsageError(`--calibration ${calibration}: no such file or folder`);
  const device = o.get('--device') as string | undefined;
  if (device !== undefined && device !== 'cpu' && device !== 'cuda') throw new UsageError(`--device expected cpu or cuda, received '${device}'`);
  const atLeast = (key: string, min: number): number | undefined => {
    const v = num(o, key, 'int');
    if (v !== undefined && v < min) throw new UsageError(`${key} expected an integer >= ${min}, received ${v}`);
    return v;
  };
  const port = atLeast('--port', 0);
  if (port !== undefined && port > 65535) throw new UsageError(`--port expected an integer in [0, 65535], received ${port}`);
  const { createServer } = await import('../serve/server');
  const server = await createServer({
    model: dir,
    routers,
    calibration,
    host: o.get('--host') as string | undefined,
    port,
    concurrency: atLeast('--concurrency', 1),
    queue: atLeast('--queue', 0),
    maxBodyBytes: atLeast('--max-body', 1),
    maxPromptTokens: atLeast('--max-prompt-tokens', 1),
    maxTokens: atLeast('--max-tokens', 1),
    threads: atLeast('--threads', 1),
    device: device as 'cpu' | 'cuda' | undefined,
  });
  let address;
  try {
    address = await server.listen();
  } catch (e) {
    await server.close(0);
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL') throw new UsageError(`cannot listen on ${o.get('--host') ?? '127.0.0.1'}:${port ?? 8080}: ${err.message}`);
    throw e;
  }
  const m = server.model;
  if (o.has('--json')) process.stdout.write(JSON.stringify({ ...address, model: m.name, modelDir: m.dir, routers: m.routers?.file ?? null, concurrency: server.engine.concurrency, queue: server.engine.capacity }) + '\n');
  process.stderr.write(`router-tuning serve: ${m.name} (${m.family}, ${m.numLayers} layers${m.routers ? `, ${m.routers.granularity} routers on layers ${m.routers.layers.join(',')}` : ', no routers'}) listening on ${address.url}\n`);
  // first signal: drain; a second one cancels the running generations. The handlers stay
  // installed, so a late signal while the process winds down is ignored rather than fatal.
  let signals = 0;
  await new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      if (++signals > 1) return server.abort();
      process.stderr.write(`router-tuning serve: ${sig}: finishing ${server.engine.inFlight} running generation(s), then exiting (signal again to cancel them)\n`);
      server.close().then(resolve, resolve);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  process.stderr.write('router-tuning serve: stopped\n');
  return 0;
}

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = { info, tune: tuneCommand, eval: evalCommand, generate: generateCommand, logits, serve: serveCommand, bench };

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
