/**
 * llama.cpp peer (through node-llama-cpp@3.21.1): prefill and decode tokens/s of the
 * reference model's weights converted to GGUF f32, CPU backend, the same thread count.
 *
 * Set up by the bench itself into setup.cacheDir (never a dependency of the package):
 *   npm install --prefix <cacheDir> node-llama-cpp@3.21.1 --no-save   (once; version checked)
 *   <cacheDir>/models/<sha256 of the checkpoint>.gguf                   (lib/io/gguf.ts)
 * node-llama-cpp is ESM and the bench CommonJS: it is loaded with a real dynamic import()
 * (through `new Function`, so TypeScript's CommonJS output does not turn it into require()).
 *
 * Measurement, per run (one warm-up, then the median of 3): the sequence's history is
 * cleared; prefill = controlledEvaluate of the whole prompt with a next-token request on the
 * last token only (llama.cpp computes logits for that row alone); decode = model.decodeTokens
 * greedy steps, each one controlledEvaluate of the previous token.
 * Parity: on a short prompt, llama.cpp's next-token distribution (softmax over the full
 * vocabulary; node-llama-cpp exposes probabilities, not logits) against our logits of the
 * same checkpoint: log-probabilities are logits up to a constant, so both are centred and
 * compared; a wrong Q/K permutation or RoPE layout shows up as a large difference.
 *
 * llama.cpp runs with node-llama-cpp's defaults otherwise (flash attention 'auto', F16 KV
 * cache); the parity check measures ~1e-3 relative on the reference model, not fp32
 * round-off (a missing Q/K permutation gives ~0.5). Its worker threads
 * spin while waiting: on a busy machine (other processes on the same cores) decode collapses
 * to ~1 tok/s, so run the peers suite on a quiet machine.
 *
 * Returns { name, skipped } (with the reason) instead of throwing when npm, the install, the
 * prebuilt binary or the conversion fails.
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { pathToFileURL } from 'url';
import { writeGgufFromCheckpoint } from '../../lib/io/gguf';
import { loadModel } from '../../lib/model/causal_lm';
import type { PeerModel, PeerOutcome, PeerSetup } from './types';

export const NODE_LLAMA_CPP_VERSION = '3.21.1';
const NAME = 'llama.cpp';
/** Bumped when lib/io/gguf.ts changes what it writes (part of the cache key). */
const GGUF_FORMAT_TAG = 'rt-gguf-f32-v1';
const PARITY_TOKENS = 16;

/** A real ESM import() that TypeScript's CommonJS emit leaves alone. */
// eslint-disable-next-line @typescript-eslint/no-implied-eval
const esmImport = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<any>;

const now = () => Number(process.hrtime.bigint()) / 1e9;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const errText = (e: unknown) => (e instanceof Error ? e.message : String(e)).split('\n')[0].slice(0, 400);

function installedVersion(cacheDir: string): string | undefined {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(cacheDir, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8'));
    return typeof pkg.version === 'string' ? pkg.version : undefined;
  } catch {
    return undefined;
  }
}

/** Installs node-llama-cpp into cacheDir unless that version is there; returns an error text or undefined. */
function ensureInstalled(cacheDir: string, log: (s: string) => void): string | undefined {
  const have = installedVersion(cacheDir);
  if (have === NODE_LLAMA_CPP_VERSION) return undefined;
  fs.mkdirSync(cacheDir, { recursive: true });
  log(`  llama.cpp peer: installing node-llama-cpp@${NODE_LLAMA_CPP_VERSION} into ${cacheDir}${have ? ` (found ${have})` : ''} …`);
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const r = spawnSync(npm, ['install', '--prefix', cacheDir, `node-llama-cpp@${NODE_LLAMA_CPP_VERSION}`, '--no-save', '--no-audit', '--no-fund'], {
    cwd: cacheDir,
    // npm's output goes to stderr: stdout belongs to the bench's --json report
    stdio: ['ignore', 2, 2],
    // the prebuilt binaries are used as they are; never download or compile llama.cpp at install
    env: { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' },
    timeout: 20 * 60 * 1000,
  });
  if (r.error) return `npm could not run (${errText(r.error)})`;
  if (r.status !== 0) return `npm install node-llama-cpp@${NODE_LLAMA_CPP_VERSION} failed (exit ${r.status ?? r.signal}; no network or registry?)`;
  const got = installedVersion(cacheDir);
  if (got !== NODE_LLAMA_CPP_VERSION) return `npm install finished but node-llama-cpp ${got ?? 'is missing'} is installed, not ${NODE_LLAMA_CPP_VERSION}`;
  return undefined;
}

/** sha256 over the checkpoint's config.json and safetensors files (names, sizes, bytes). */
function checkpointHash(dir: string): string {
  const h = crypto.createHash('sha256');
  h.update(GGUF_FORMAT_TAG);
  const files = fs.readdirSync(dir).filter((f) => f === 'config.json' || f.endsWith('.safetensors') || f === 'model.safetensors.index.json').sort();
  const buf = Buffer.alloc(8 << 20);
  for (const f of files) {
    const file = path.join(dir, f);
    h.update(`\0${f}\0${fs.statSync(file).size}\0`);
    const fd = fs.openSync(file, 'r');
    try {
      for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
    } finally {
      fs.closeSync(fd);
    }
  }
  return h.digest('hex').slice(0, 24);
}

/** Our logits vs llama.cpp's next-token probabilities on the last token of `ids`. */
function compareDistributions(ours: Float32Array, probs: Map<number, number>): { maxRel: number; maxAbs: number; top1Match: boolean; missing: number } {
  const V = ours.length;
  let meanO = 0, meanL = 0, n = 0, missing = 0;
  const lp = new Float64Array(V).fill(NaN);
  for (let i = 0; i < V; i++) {
    const p = probs.get(i);
    if (p === undefined || !(p > 0)) {
      missing++;
      continue;
    }
    lp[i] = Math.log(p);
    meanO += ours[i];
    meanL += lp[i];
    n++;
  }
  meanO /= n;
  meanL /= n;
  let maxAbs = 0, scale = 0, argO = 0, argL = 0;
  for (let i = 0; i < V; i++) {
    if (ours[i] > ours[argO]) argO = i;
    if (Number.isNaN(lp[i])) continue;
    if (!(lp[argL] >= lp[i])) argL = i;
    const a = ours[i] - meanO, b = lp[i] - meanL;
    maxAbs = Math.max(maxAbs, Math.abs(a - b));
    scale = Math.max(scale, Math.abs(a));
  }
  return { maxRel: maxAbs / scale, maxAbs, top1Match: argO === argL, missing };
}

/**
 * The short-prompt parity check on `seq` (its history is cleared first): llama.cpp's
 * next-token distribution against our logits of the same checkpoint. Returns the note.
 */
async function parity(seq: any, model: PeerModel, log: (s: string) => void): Promise<string> {
  await seq.clearHistory();
  const short = model.promptIds.slice(0, PARITY_TOKENS);
  const res = await seq.controlledEvaluate(short.map((t, i) => (i === short.length - 1 ? [t, { generateNext: { token: true, probabilities: true } }] : t)));
  const probs: Map<number, number> | undefined = res[short.length - 1]?.next?.probabilities;
  if (!probs || !probs.size) return 'parity: node-llama-cpp returned no next-token probabilities';
  const ours = await loadModel(model.hfDir, { noTokenizer: true });
  let ourLast: Float32Array;
  try {
    const all = await ours.logits(short);
    const V = ours.config.vocabSize;
    ourLast = all.slice((short.length - 1) * V, short.length * V);
  } finally {
    ours.dispose();
  }
  const c = compareDistributions(ourLast, probs);
  if (c.maxRel > 1e-2) log(`  llama.cpp peer: WARNING the GGUF model does not compute our model's logits (relative difference ${c.maxRel.toExponential(2)})`);
  return (
    `parity (${short.length}-token prompt, last token): max |Δ centred logit| / max |logit| = ${c.maxRel.toExponential(2)} ` +
    `(max |Δ| ${c.maxAbs.toExponential(2)}; llama.cpp logits recovered from its softmax, ${c.missing} zero probabilities left out); ` +
    `greedy token ${c.top1Match ? 'matches' : 'DIFFERS'}`
  );
}

export async function runLlamaCppPeer(setup: PeerSetup, model: PeerModel): Promise<PeerOutcome> {
  const log = setup.log;
  const t0 = now();
  const skip = (why: string): PeerOutcome => {
    log(`  llama.cpp peer skipped: ${why}`);
    return { name: NAME, skipped: why };
  };
  if (model.promptIds.length !== model.prefillTokens) return skip(`the prompt has ${model.promptIds.length} tokens, prefillTokens says ${model.prefillTokens}`);

  // 1. node-llama-cpp
  let installError: string | undefined;
  try {
    installError = ensureInstalled(setup.cacheDir, log);
  } catch (e) {
    installError = errText(e);
  }
  if (installError) return skip(installError);
  let mod: any;
  try {
    mod = await esmImport(pathToFileURL(path.join(setup.cacheDir, 'node_modules', 'node-llama-cpp', 'dist', 'index.js')).href);
  } catch (e) {
    return skip(`node-llama-cpp could not be imported (${errText(e)})`);
  }
  let llama: any;
  try {
    llama = await mod.getLlama({
      gpu: false,
      build: 'never',
      usePrebuiltBinaries: true,
      skipDownload: true,
      progressLogs: false,
      logLevel: 'error',
      maxThreads: model.threads,
    });
  } catch (e) {
    return skip(`the prebuilt llama.cpp binary could not be loaded (${errText(e)})`);
  }

  const notes: string[] = [];
  let lm: any, context: any;
  let stage = 'convert the checkpoint to GGUF';
  try {
    // 2. the checkpoint as GGUF f32, cached by content
    log('  llama.cpp peer: hashing the checkpoint …');
    const key = checkpointHash(model.hfDir);
    const gguf = path.join(setup.cacheDir, 'models', `${key}.gguf`);
    if (!fs.existsSync(gguf)) {
      log('  llama.cpp peer: converting the checkpoint to GGUF f32 …');
      writeGgufFromCheckpoint(model.hfDir, gguf, { name: 'router-tuning-bench-reference', log });
    }
    stage = 'load the GGUF model';
    lm = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
    context = await lm.createContext({
      contextSize: model.prefillTokens + model.decodeTokens + 16,
      batchSize: Math.max(model.prefillTokens, PARITY_TOKENS),
      sequences: 1,
      threads: { ideal: model.threads, min: model.threads },
    });
    const seq = context.getSequence();
    const release = llama.llamaCppRelease?.release ?? 'unknown build';
    const version = `${NODE_LLAMA_CPP_VERSION} (llama.cpp ${release})`;
    notes.push(
      `node-llama-cpp ${NODE_LLAMA_CPP_VERSION}, llama.cpp ${release} ${llama.buildType} binary, CPU backend (gpu: ${llama.gpu}), ` +
        `${context.currentThreads} threads, batch ${context.batchSize}, context ${context.contextSize}, flash attention ${context.flashAttention}`,
    );
    const setupSeconds = now() - t0;
    stage = 'run the GGUF model';

    // 3. parity on a short prompt: llama.cpp's next-token distribution vs our logits
    try {
      notes.push(await parity(seq, model, log));
    } catch (e) {
      notes.push(`parity check failed: ${errText(e)}`);
    }

    // 4. prefill and decode, one warm-up then the median of 3
    const runOnce = async () => {
      await seq.clearHistory();
      const prompt = model.promptIds;
      const items = prompt.map((t, i) => (i === prompt.length - 1 ? [t, { generateNext: { token: true } }] : t));
      let s = now();
      const out = await seq.controlledEvaluate(items);
      const prefill = now() - s;
      let tok: number | null | undefined = out[prompt.length - 1]?.next?.token;
      s = now();
      for (let i = 0; i < model.decodeTokens; i++) {
        if (tok == null) throw new Error('llama.cpp returned no next token');
        const r = await seq.controlledEvaluate([[tok, { generateNext: { token: true } }]]);
        tok = r[0]?.next?.token;
      }
      const decode = now() - s;
      return { prefill: prompt.length / prefill, decode: model.decodeTokens / decode };
    };
    log('  llama.cpp peer: warm-up …');
    await runOnce();
    const runs: { prefill: number; decode: number }[] = [];
    for (let i = 0; i < 3; i++) {
      runs.push(await runOnce());
      log(`  llama.cpp peer: run ${i + 1}/3: prefill ${runs[i].prefill.toFixed(0)} tok/s, decode ${runs[i].decode.toFixed(1)} tok/s`);
    }
    return {
      name: NAME,
      version,
      prefillTokensPerSecond: median(runs.map((r) => r.prefill)),
      decodeTokensPerSecond: median(runs.map((r) => r.decode)),
      setupSeconds,
      notes,
    };
  } catch (e) {
    return skip(`llama.cpp peer could not ${stage} (${errText(e)})`);
  } finally {
    try {
      await context?.dispose();
      await lm?.dispose();
      await llama?.dispose?.();
    } catch {
      // disposal errors do not change the measurement
    }
  }
}
