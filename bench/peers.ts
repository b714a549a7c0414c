/**
 * peers suite: the engine side by side with what a user would pick instead, on the same
 * weights, the same machine, in the same run, with the same settings (2 threads each):
 *
 *   - the reference model (REFERENCE_134M: hidden 768, intermediate 2048, 12 layers, 12 heads,
 *     vocab 32000, untied, fp32, randomModel init 'scaled', seed 1) saved once as a Hugging
 *     Face fp32 checkpoint in the bench cache (<cache>/models/…), reused while its marker
 *     matches; our side loads that very checkpoint;
 *   - prefill-512 tokens/s (last-token logits only), decode tokens/s (greedy steps after a
 *     512-token prefill), the same prompt for everyone;
 *   - one router-tuning step: token-level attention routers ('attn-token', mod) on the last 6
 *     layers, batch 4 × 512, forward + backward + AdamW on the router weights only, from the
 *     same initial weights for everyone (a safetensors file with `router.<layer>` [C]: zeros,
 *     as a real run starts — σ(0) = 0.5 ≥ τ = 0.5, so every token executes).
 *
 * Each peer module (bench/peers/<name>.ts, the interface in bench/peers/types.ts) sets
 * itself up into <cache>/peers/<name> and returns { name, skipped } when it cannot; a module
 * that is missing or fails to load is reported as skipped too. The cache root is
 * bench/.cache under the package (RT_BENCH_CACHE overrides it).
 *
 * Every metric becomes one case per peer: our value, the peer's, and the ratio (higher is
 * better for us: ours/peer for tokens/s, peer/ours for step seconds), with the issue's targets.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Tensor, dispose, loadModel, backendInfo, setNumThreads, setComputeDtype } from '../lib';
import { randomModel, syntheticConfig } from '../lib/model/random';
import type { CausalLM } from '../lib/model/causal_lm';
import { Routers } from '../lib/routing/routers';
import { forwardBackward, Batch } from '../lib/train/backprop';
import { AdamW, clipGradNorm, Param } from '../lib/train/optimizer';
import { saveHfModel } from '../lib/train/pretrain';
import { packageRoot } from '../lib/native';
import { SafetensorsFile, readEntry, writeSafetensors } from '../lib/io/safetensors';
import { writeFileAtomic } from '../lib/util/atomic';
import {
  BenchCeilings,
  ReportCase,
  REFERENCE_134M,
  measureGeneration,
  randomPrompt,
  prefillFlopsPerToken,
  decodeBytesPerToken,
  workModel,
} from './e2e';
import type { PeerModel, PeerOutcome, PeerResult, PeerRouterStep, PeerSetup } from './peers/types';

export type PeerFn = (setup: PeerSetup, model: PeerModel, step?: PeerRouterStep) => Promise<PeerOutcome>;

interface PeerSpec {
  name: string;
  /** Module path relative to this file. */
  module: string;
  exportName: string;
}

export const PEERS: PeerSpec[] = [
  { name: 'pytorch', module: './peers/torch', exportName: 'runTorchPeer' },
  { name: 'llama.cpp', module: './peers/llamacpp', exportName: 'runLlamaCppPeer' },
];

/** Targets of the issue (ratio ours/peer, higher is better for us). */
export const PEER_TARGETS: Record<string, Partial<Record<Metric, number>>> = {
  pytorch: { prefill: 1.1, decode: 2.5, routerStep: 1.3, prefillBf16: 1.6 },
  'llama.cpp': { decode: 1.5 },
};

/** prefillBf16 / decodeBf16: ours in the opt-in bf16 compute mode against the peer's fp32. */
type Metric = 'prefill' | 'decode' | 'routerStep' | 'prefillBf16' | 'decodeBf16';

/** What each peer measures (a skipped peer gets a row for each of these). */
export const PEER_METRICS: Record<string, Metric[]> = {
  pytorch: ['prefill', 'decode', 'routerStep', 'prefillBf16', 'decodeBf16'],
  'llama.cpp': ['prefill', 'decode', 'prefillBf16', 'decodeBf16'],
};

/**
 * The peer's run function, or one that reports it skipped: a module that is not there
 * ('peer module not built'), fails to load, or lacks the export never breaks the suite.
 */
export function loadPeer(spec: PeerSpec): PeerFn {
  let mod: Record<string, unknown>;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    mod = require(spec.module) as Record<string, unknown>;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const missing = err.code === 'MODULE_NOT_FOUND' && String(err.message).includes(path.basename(spec.module));
    const reason = missing ? 'peer module not built' : `peer module failed to load: ${String(err.message).split('\n')[0]}`;
    return async () => ({ name: spec.name, skipped: reason });
  }
  const fn = mod[spec.exportName];
  if (typeof fn !== 'function') return async () => ({ name: spec.name, skipped: `peer module ${spec.module} does not export ${spec.exportName}` });
  return fn as PeerFn;
}

/** The bench cache root: RT_BENCH_CACHE, else bench/.cache under the package. */
export function benchCacheRoot(): string {
  return path.resolve(process.env.RT_BENCH_CACHE || path.join(packageRoot(), 'bench', '.cache'));
}

interface PeersSettings {
  key: string;
  raw: Record<string, unknown>;
  prefillTokens: number;
  decodeTokens: number;
  decodeReps: number;
  prefillReps: number;
  routerLayers: number[];
  batch: number;
  seqLen: number;
  stepReps: number;
}

function settings(quick: boolean): PeersSettings {
  if (quick) {
    const raw = { ...REFERENCE_134M, vocab_size: 512, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 4, num_attention_heads: 2, num_key_value_heads: 2 };
    return { key: 'tiny-seed1', raw, prefillTokens: 32, decodeTokens: 4, decodeReps: 1, prefillReps: 1, routerLayers: [2, 3], batch: 2, seqLen: 32, stepReps: 1 };
  }
  return { key: 'ref134m-seed1', raw: { ...REFERENCE_134M }, prefillTokens: 512, decodeTokens: 32, decodeReps: 3, prefillReps: 5, routerLayers: [6, 7, 8, 9, 10, 11], batch: 4, seqLen: 512, stepReps: 3 };
}

const MODEL_MARKER = 'bench-model.json';

/**
 * The reference model's HF fp32 checkpoint in the cache: reused when its marker matches
 * (same config, seed, init), else built (randomModel seed 1) and saved (tokenizer files from
 * models/tokenizer). Written into a temporary folder and renamed, so a broken run leaves
 * no half checkpoint.
 */
export function ensureReferenceCheckpoint(root: string, s: PeersSettings, log: (s: string) => void): string {
  const dir = path.join(root, 'models', s.key);
  const marker = { format: 'router-tuning-bench-model@1', seed: 1, init: 'scaled', dtype: 'float32', config: s.raw };
  const want = JSON.stringify(marker);
  try {
    const have = fs.readFileSync(path.join(dir, MODEL_MARKER), 'utf8');
    if (have.trim() === want && fs.existsSync(path.join(dir, 'model.safetensors')) && fs.existsSync(path.join(dir, 'config.json'))) {
      log(`  reference model: reusing ${dir}`);
      return dir;
    }
  } catch {
    /* build it */
  }
  const t0 = Date.now();
  log(`  reference model: building (seed 1) and saving an HF fp32 checkpoint into ${dir} …`);
  const cfg = syntheticConfig(s.raw);
  const model = randomModel(cfg, { seed: 1, init: 'scaled' });
  const tmp = `${dir}.tmp-${process.pid}`;
  try {
    fs.rmSync(tmp, { recursive: true, force: true });
    saveHfModel(tmp, model, s.raw, path.join(packageRoot(), 'models', 'tokenizer'), 'float32');
    fs.writeFileSync(path.join(tmp, MODEL_MARKER), want + '\n');
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  } finally {
    model.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  log(`    saved in ${((Date.now() - t0) / 1e3).toFixed(1)} s`);
  return dir;
}

/** The routers' initial weights, shared by everyone: `router.<layer>` [C] float32 zeros. */
export function writeRouterInit(file: string, layers: number[], C: number): void {
  const tensors: Record<string, Tensor> = {};
  for (const l of layers) tensors[`router.${l}`] = Tensor.zeros([C]);
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    writeSafetensors(file, tensors, { granularity: 'attn-token', mode: 'mod', threshold: '0.5', layers: JSON.stringify(layers), init: 'zeros' });
  } finally {
    dispose(Object.values(tensors));
  }
}

function routerBatch(s: PeersSettings, vocabHi: number): { ids: number[][]; batch: Batch } {
  const B = s.batch, T = s.seqLen;
  const rows = Array.from({ length: B }, (_, b) => randomPrompt(T, 1000 + b, 2, vocabHi));
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T), mask = new Int32Array(B * T).fill(1);
  rows.forEach((r, b) => r.forEach((id, t) => (ids[b * T + t] = id)));
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) targets[b * T + t] = t + 1 < T ? ids[b * T + t + 1] : -100;
  return { ids: rows, batch: { ids, targets, mask, B, T } };
}

/**
 * Our router-tuning step: zero the grads, forward + backward (cross-entropy and the capacity
 * term, tune's defaults λ 1, target skip 0.25), clip at 1, AdamW (lr 1e-3, no decay) on the
 * router weights only. The routers are reset to the shared initial weights before each timed
 * step, so every step is the first step of a run. Median of `reps` after one warm-up.
 */
export function measureRouterStep(model: CausalLM, file: string, layers: number[], batch: Batch, reps: number): { seconds: number; all: number[] } {
  const st = SafetensorsFile.open(file);
  const init = new Map<number, Float32Array>();
  for (const l of layers) {
    const e = st.entries.get(`router.${l}`);
    if (!e) throw new Error(`${file}: no tensor router.${l}`);
    const t = readEntry(e, 'float32');
    init.set(l, t.toFloat32Array());
    t.dispose();
  }
  const routers = new Routers(model.config, { granularity: 'attn-token', mode: 'mod', layers, threshold: 0.5 });
  const grads = new Map<number, Tensor>();
  const params: Param[] = [];
  for (const [l, w] of routers.weights) {
    const g = Tensor.zeros(w.shape).keep();
    grads.set(l, g);
    params.push({ name: `router.${l}.weight`, value: w, grad: g });
  }
  const opt = new AdamW(params, { weightDecay: 0 });
  const regularizer = { lambda: 1, targetSkip: 0.25, kind: 'global' as const };
  const reset = () => {
    for (const [l, w] of routers.weights) w.write(init.get(l)!);
  };
  const step = () => {
    opt.zeroGrad();
    forwardBackward(model, batch, { routers, routerGrads: grads, regularizer });
    const { norm, scale } = clipGradNorm(params, 1);
    if (Number.isFinite(norm)) opt.step(1e-3, scale);
  };
  const all: number[] = [];
  try {
    for (let r = 0; r <= reps; r++) {
      reset();
      const t0 = process.hrtime.bigint();
      step();
      const dt = Number(process.hrtime.bigint() - t0) / 1e9;
      if (r > 0) all.push(dt); // r = 0 is the warm-up
    }
  } finally {
    opt.dispose();
    dispose([...grads.values()]);
    routers.dispose();
  }
  const sorted = [...all].sort((a, b) => a - b);
  return { seconds: sorted[Math.floor(sorted.length / 2)], all };
}

export interface PeersSuiteOptions {
  quick?: boolean;
  /** Peer names to run (default every peer); [] runs ours only. */
  peers?: string[];
  /** Threads for everyone (default 2). */
  threads?: number;
  /** Measures the ceilings again right before our measurements (for the roofline fractions). */
  remeasure?: () => BenchCeilings;
}

export interface PeersSuiteResult {
  cases: ReportCase[];
  peers: PeerOutcome[];
  settings: { model: string; prefillTokens: number; decodeTokens: number; threads: number; routerStep: { layers: number[]; batch: number; seqLen: number } };
}

const isResult = (o: PeerOutcome): o is PeerResult => !('skipped' in o);
const good = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n) && n > 0;

export async function runPeersSuite(log: (s: string) => void, ceilings: BenchCeilings, opts: PeersSuiteOptions = {}): Promise<PeersSuiteResult> {
  const s = settings(!!opts.quick);
  const threads = opts.threads ?? 2;
  const root = benchCacheRoot();
  const hfDir = ensureReferenceCheckpoint(root, s, log);
  const cfg = syntheticConfig(s.raw);
  const vocabHi = Math.min(cfg.vocabSize, 4096); // ids the shipped tokenizer knows (byte-level BPE, 4096)
  const promptIds = randomPrompt(s.prefillTokens, 512, 2, vocabHi);
  const routersFile = path.join(root, 'models', s.key, `routers-init-${s.routerLayers.join('-')}.safetensors`);
  writeRouterInit(routersFile, s.routerLayers, cfg.hiddenSize);
  const { ids: batchIds, batch } = routerBatch(s, vocabHi);

  // ---- ours, with the peers' thread count
  if (opts.remeasure) {
    // the larger of the run's first measurement and this one: the best estimate of the machine's capacity
    const now = opts.remeasure();
    log(`  ceilings now: read ${(now.readGBps ?? now.copyGBps).toFixed(2)} GB/s, sgemm ${now.gemmGFLOPS.toFixed(1)} GFLOP/s`);
    ceilings = {
      copyGBps: Math.max(ceilings.copyGBps, now.copyGBps),
      gemmGFLOPS: Math.max(ceilings.gemmGFLOPS, now.gemmGFLOPS),
      readGBps: Math.max(ceilings.readGBps ?? 0, now.readGBps ?? 0) || undefined,
    };
  }
  const threadsBefore = backendInfo().threads;
  setNumThreads(threads);
  let ours: { prefill: number; decode: number; step: number; steps: number[]; prefillBf16: number; decodeBf16: number };
  try {
    log(`  ours: loading ${hfDir} (fp32), ${threads} threads …`);
    const model = await loadModel(hfDir, { noTokenizer: true, dtype: 'float32' });
    try {
      log(`  ours: prefill-${s.prefillTokens} and decode (${s.decodeTokens} greedy steps) …`);
      const g = measureGeneration(model, promptIds, { prefillReps: s.prefillReps, decodeReps: s.decodeReps, decodeTokens: s.decodeTokens });
      log(`    prefill ${g.prefillTokensPerSecond.toFixed(1)} tok/s, decode ${g.decodeTokensPerSecond.toFixed(1)} tok/s`);
      log(`  ours: router-tuning step (attn-token, layers ${s.routerLayers.join(',')}, ${s.batch}×${s.seqLen}) …`);
      const st = measureRouterStep(model, routersFile, s.routerLayers, batch, s.stepReps);
      log(`    ${st.seconds.toFixed(3)} s per step (runs: ${st.all.map((x) => x.toFixed(2)).join(', ')} s)`);
      ours = { prefill: g.prefillTokensPerSecond, decode: g.decodeTokensPerSecond, step: st.seconds, steps: st.all, prefillBf16: NaN, decodeBf16: NaN };
    } finally {
      model.dispose();
    }
    // The opt-in bf16 compute mode (AVX-512 BF16 where the CPU has it): weights stored as
    // bf16, activations rounded per GEMM, fp32 accumulation — the same checkpoint.
    setComputeDtype('bfloat16');
    try {
      log(`  ours, bf16 compute mode: loading ${hfDir} (weights as bf16) …`);
      const m16 = await loadModel(hfDir, { noTokenizer: true });
      try {
        const g = measureGeneration(m16, promptIds, { prefillReps: s.prefillReps, decodeReps: s.decodeReps, decodeTokens: s.decodeTokens });
        log(`    prefill ${g.prefillTokensPerSecond.toFixed(1)} tok/s, decode ${g.decodeTokensPerSecond.toFixed(1)} tok/s`);
        ours.prefillBf16 = g.prefillTokensPerSecond;
        ours.decodeBf16 = g.decodeTokensPerSecond;
      } finally {
        m16.dispose();
      }
    } finally {
      setComputeDtype('float32');
    }
  } finally {
    setNumThreads(threadsBefore);
  }

  // ---- peers, one after the other (our model is freed: no competition for memory)
  const peerModel: PeerModel = { hfDir, prefillTokens: s.prefillTokens, decodeTokens: s.decodeTokens, threads, promptIds };
  const step: PeerRouterStep = { layers: s.routerLayers, batch: s.batch, seqLen: s.seqLen, routersFile, batchIds };
  const wanted = opts.peers ?? PEERS.map((p) => p.name);
  const outcomes: PeerOutcome[] = [];
  for (const spec of PEERS) {
    if (!wanted.includes(spec.name)) {
      outcomes.push({ name: spec.name, skipped: 'not selected (--peers)' });
      continue;
    }
    const cacheDir = path.join(root, 'peers', spec.name);
    const plog = (m: string) => process.stderr.write(`    [${spec.name}] ${m}\n`);
    log(`  peer ${spec.name}: setting up in ${cacheDir} and measuring …`);
    let out: PeerOutcome;
    try {
      fs.mkdirSync(cacheDir, { recursive: true });
      out = await loadPeer(spec)({ cacheDir, log: plog }, peerModel, step);
    } catch (e) {
      out = { name: spec.name, skipped: `peer failed: ${(e as Error).message.split('\n')[0]}` };
    }
    if (isResult(out)) {
      const parts = [
        good(out.prefillTokensPerSecond) ? `prefill ${out.prefillTokensPerSecond.toFixed(1)} tok/s` : '',
        good(out.decodeTokensPerSecond) ? `decode ${out.decodeTokensPerSecond.toFixed(1)} tok/s` : '',
        good(out.routerStepSeconds) ? `router step ${out.routerStepSeconds.toFixed(3)} s` : '',
      ].filter(Boolean);
      log(`    ${spec.name} ${out.version}: ${parts.join(', ') || 'no metrics'} (setup ${out.setupSeconds.toFixed(1)} s)`);
    } else log(`    ${spec.name}: skipped — ${out.skipped}`);
    outcomes.push(out);
  }

  // ---- cases
  const bw = ceilings.readGBps ?? ceilings.copyGBps;
  const prefillRoof = (ceilings.gemmGFLOPS * 1e9) / prefillFlopsPerToken(cfg, s.prefillTokens);
  const decodeRoof = (bw * 1e9) / decodeBytesPerToken(cfg, s.prefillTokens + (s.decodeTokens - 1) / 2);
  const wm = workModel(cfg);
  const label = `${(wm.params / 1e6).toFixed(0)}M fp32, ${threads} threads`;
  const metrics: { metric: Metric; name: string; ours: number; unit: string; peerValue: (r: PeerResult) => number | undefined; higherIsBetter: boolean; ideal?: number }[] = [
    { metric: 'prefill', name: `prefill-${s.prefillTokens} tok/s (last-token logits), ${label}`, ours: ours.prefill, unit: 'tok/s', peerValue: (r) => r.prefillTokensPerSecond, higherIsBetter: true, ideal: prefillRoof },
    { metric: 'decode', name: `decode tok/s after a ${s.prefillTokens}-token prefill (${s.decodeTokens} greedy steps), ${label}`, ours: ours.decode, unit: 'tok/s', peerValue: (r) => r.decodeTokensPerSecond, higherIsBetter: true, ideal: decodeRoof },
    { metric: 'prefillBf16', name: `prefill-${s.prefillTokens} tok/s (last-token logits), ours in bf16 compute mode vs the peer's fp32, ${threads} threads`, ours: ours.prefillBf16, unit: 'tok/s', peerValue: (r) => r.prefillTokensPerSecond, higherIsBetter: true },
    { metric: 'decodeBf16', name: `decode tok/s, ours in bf16 compute mode (bf16 weights: half the bytes) vs the peer's fp32, ${threads} threads`, ours: ours.decodeBf16, unit: 'tok/s', peerValue: (r) => r.decodeTokensPerSecond, higherIsBetter: true },
    { metric: 'routerStep', name: `router-tuning step (attn-token, layers ${s.routerLayers.join(',')}, ${s.batch}x${s.seqLen}, fwd+bwd+AdamW), ${label}`, ours: ours.step, unit: 's', peerValue: (r) => r.routerStepSeconds, higherIsBetter: false },
  ];
  const cases: ReportCase[] = [];
  for (const m of metrics) {
    cases.push({
      suite: 'peers',
      name: `ours: ${m.name}`,
      value: m.ours,
      unit: m.unit,
      fraction: m.ideal ? m.ours / m.ideal : NaN,
      ...(m.ideal ? { ideal: m.ideal } : {}),
      seconds: m.unit === 's' ? m.ours : 1 / m.ours,
    });
    for (const o of outcomes) {
      if (!(PEER_METRICS[o.name] ?? ['prefill', 'decode', 'routerStep']).includes(m.metric)) continue;
      const target = PEER_TARGETS[o.name]?.[m.metric];
      const base: ReportCase = { suite: 'peers', name: `${m.name} vs ${o.name}`, value: m.ours, unit: m.unit, fraction: NaN, seconds: m.unit === 's' ? m.ours : 1 / m.ours, peer: o.name, ...(target !== undefined ? { target } : {}) };
      if (!isResult(o)) {
        cases.push({ ...base, skipped: o.skipped });
        continue;
      }
      const pv = m.peerValue(o);
      if (!good(pv)) {
        cases.push({ ...base, skipped: `${o.name} reported no value for this metric` });
        continue;
      }
      const ratio = m.higherIsBetter ? m.ours / pv : pv / m.ours;
      cases.push({ ...base, peerValue: pv, ratio, note: o.version });
    }
  }
  return {
    cases,
    peers: outcomes,
    settings: { model: hfDir, prefillTokens: s.prefillTokens, decodeTokens: s.decodeTokens, threads, routerStep: { layers: s.routerLayers, batch: s.batch, seqLen: s.seqLen } },
  };
}

/** The peers rows as a markdown table: ours, the peer's, the ratio, the issue's target, met. */
export function peersTable(rows: ReportCase[], outcomes: PeerOutcome[] = []): string {
  const f = (n: number, unit: string) => (unit === 's' ? `${n.toFixed(3)} s` : `${n.toFixed(1)} ${unit}`);
  const lines = ['| metric | ours | peer | peer value | ratio (ours vs peer, >1 = we are faster) | target | met |', '|---|---:|---|---:|---:|---:|:-:|'];
  for (const r of rows) {
    if (r.suite !== 'peers') continue;
    if (!r.peer) {
      const frac = Number.isFinite(r.fraction) && r.ideal ? ` (${(r.fraction * 100).toFixed(1)}% of roofline ${r.ideal.toFixed(r.unit === 's' ? 3 : 1)})` : '';
      lines.push(`| ${r.name.replace(/^ours: /, '')} | ${f(r.value, r.unit)}${frac} | — | | | | |`);
      continue;
    }
    const target = r.target === undefined ? '' : `≥ ${r.target}×`;
    if (r.skipped !== undefined) {
      lines.push(`| ↳ vs ${r.peer} | | ${r.peer} | skipped | | ${target} | — |`);
      continue;
    }
    const met = r.target === undefined || r.ratio === undefined ? '' : r.ratio >= r.target ? 'yes' : '**no**';
    lines.push(`| ↳ vs ${r.peer} | ${f(r.value, r.unit)} | ${r.note ? `${r.peer} (${r.note})` : r.peer} | ${f(r.peerValue!, r.unit)} | ${r.ratio!.toFixed(2)}× | ${target} | ${met} |`);
  }
  const notes: string[] = [];
  for (const o of outcomes) {
    if (!isResult(o)) notes.push(`- ${o.name}: skipped — ${o.skipped}`);
    else {
      notes.push(`- ${o.name} ${o.version}: setup ${o.setupSeconds.toFixed(1)} s${o.notes?.length ? '; ' + o.notes.join('; ') : ''}`);
    }
  }
  return notes.length ? `${lines.join('\n')}\n\n${notes.join('\n')}` : lines.join('\n');
}

/** Writes the peers' outcomes next to the results (for RESULTS.md and debugging). */
export function writePeersJson(dir: string, r: PeersSuiteResult): void {
  writeFileAtomic(path.join(dir, 'peers.json'), JSON.stringify({ settings: r.settings, peers: r.peers }, null, 2) + '\n');
}
