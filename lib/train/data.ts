/**
 * Training data for router-tuning: text and JSONL files → token examples → padded batches.
 *
 * An Example is one sequence of L ≤ seqLen positions: ids[t] is the input token at t and
 * targets[t] the token the model must predict there (the next one), or -100 where nothing
 * is trained (prompt tokens of instruction data, padding). Every example is built the same
 * way from a token sequence S (n tokens) and a per-token "trained" flag:
 *   ids[t] = S[t],  targets[t] = trained[t+1] ? S[t+1] : -100,   t = 0 … min(n−1, seqLen)−1
 * so the last token of S is only ever a target (it has no next token to predict).
 *
 * Sources (DESIGN.md §1, issue 4 "Data"):
 *   - plain text (a file, or a folder walked recursively for *.txt, *.md and extension-less
 *     files, sorted by path, hidden entries skipped): each document is tokenised
 *     (bos? + tokens + eos?), all documents are concatenated and cut into windows of
 *     seqLen+1 tokens with stride seqLen, so every token but the first is a target exactly
 *     once; the last window may be shorter (≥ 2 tokens).
 *   - JSONL (a *.jsonl file, or a folder holding *.jsonl files — those are then the only
 *     files read): one JSON object per non-empty line, one example per line:
 *       {text}                        every token trained (like a document), truncated to seqLen
 *       {prompt, completion}          only the completion (and eos) trained
 *       {instruction, input?, output} prompt = instruction + ("\n\n" + input) + "\n\n", response = output
 *       {messages: [{role, content}]} rendered with the tokenizer's chat template; only the
 *                                     tokens of assistant turns (and a final eos) trained
 *     Prompt and response are tokenised separately and concatenated: S = bos? + prompt + response + eos?.
 *
 * Batches are row-major [B, T], right-padded to the longest example of the batch (ids 0,
 * targets -100, mask 0). BatchStream walks a fresh deterministic permutation per epoch and
 * can be restored from its state to continue bit-identically (resume).
 */
import * as fs from 'fs';
import * as path from 'path';
import { RouterTuningError } from '../errors';
import { ChatMessage, TextTokenizer } from '../model/tokenizer';
import { Rng } from '../util/rng';

export class DataError extends RouterTuningError {
  constructor(message: string) {
    super('RT_ERR_DATA', message);
    this.name = 'DataError';
  }
}

/** The target value of a position that is not trained. */
export const IGNORE_INDEX = -100;

export interface Example {
  /** input tokens, length L ≤ seqLen */
  ids: Int32Array;
  /** next token to predict at each position, or -100; length L */
  targets: Int32Array;
}

export interface LoadOptions {
  /** positions per example (≥ 2) */
  seqLen: number;
  /** prepended to every document / JSONL record (unless a chat template already starts with it) */
  bosId?: number;
  /** appended to every document / JSONL record (unless it already ends with it) */
  eosId?: number;
  /** plain text: read at most this many characters per file, cut at the last blank line before it */
  maxChars?: number;
}

export interface LoadedData {
  examples: Example[];
  format: 'text' | 'jsonl';
  /** the files read, in reading order */
  files: string[];
  /** positions over all examples (Σ L) */
  tokens: number;
  /** trained positions over all examples (targets ≠ -100) */
  targets: number;
  /** JSONL records cut to seqLen positions (and kept) */
  truncated: number;
  /** JSONL records dropped because truncation left no trained position */
  dropped: number;
}

const ACCEPTED_FORMS =
  '{"text"}, {"prompt", "completion"}, {"instruction", "input"?, "output"}, {"messages": [{"role", "content"}, ...]}';
const TEXT_EXTENSIONS = new Set(['.txt', '.md', '']);

/** Loads a text or JSONL dataset (file or folder) and tokenises it into examples. */
export function loadExamples(dataPath: string, tok: TextTokenizer, opts: LoadOptions): LoadedData {
  const { seqLen, bosId, eosId } = opts;
  if (!Number.isInteger(seqLen) || seqLen < 2)
    throw new DataError(`loadExamples: 'seqLen' expected an integer >= 2 (one input and one target need 2 tokens), received ${seqLen}`);
  for (const [name, id] of [['bosId', bosId], ['eosId', eosId]] as const)
    if (id !== undefined && (!Number.isInteger(id) || id < 0 || (tok.vocabSize > 0 && id >= tok.vocabSize)))
      throw new DataError(`loadExamples: '${name}' expected a token id in [0, ${tok.vocabSize}), received ${id}`);

  const { format, files } = findFiles(dataPath);
  const out: LoadedData = { examples: [], format, files, tokens: 0, targets: 0, truncated: 0, dropped: 0 };
  if (format === 'text') loadText(files, tok, opts, out);
  else for (const f of files) loadJsonl(f, tok, opts, out);

  for (const e of out.examples) {
    out.tokens += e.ids.length;
    for (let i = 0; i < e.targets.length; i++) if (e.targets[i] !== IGNORE_INDEX) out.targets++;
  }
  if (out.targets === 0) {
    const why = out.dropped ? ` (${out.dropped} record(s) dropped: truncation to seqLen ${seqLen} left no trained token)` : '';
    throw new DataError(`${dataPath}: no training tokens${why}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Files

function findFiles(p: string): { format: 'text' | 'jsonl'; files: string[] } {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw new DataError(`${p}: no such file or folder`);
  }
  if (st.isFile()) {
    const ext = path.extname(p).toLowerCase();
    if (ext === '.json')
      throw new DataError(`${p}: a .json file is not a dataset; use JSONL (one JSON object per line, *.jsonl) or plain text`);
    return { format: ext === '.jsonl' ? 'jsonl' : 'text', files: [p] };
  }
  if (!st.isDirectory()) throw new DataError(`${p}: not a regular file or folder`);
  const all: string[] = [];
  walk(p, all, new Set());
  const jsonl = all.filter((f) => path.extname(f).toLowerCase() === '.jsonl');
  if (jsonl.length) return { format: 'jsonl', files: jsonl };
  const text = all.filter((f) => TEXT_EXTENSIONS.has(path.extname(f).toLowerCase()) && !looksBinary(f));
  if (!text.length)
    throw new DataError(`${p}: no usable files (expected *.jsonl, or plain text: *.txt, *.md, files without extension)`);
  return { format: 'text', files: text };
}

/** Recursive, sorted by name (code-unit order, not locale), hidden entries skipped, symlink cycles cut. */
function walk(dir: string, into: string[], seen: Set<string>): void {
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch {
    return;
  }
  if (seen.has(real)) return;
  seen.add(real);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    throw new DataError(`${dir}: cannot read the folder (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const name of names) {
    if (name.startsWith('.')) continue;
    const full = path.join(dir, name);
    let st: fs.Stats;
    try {
      st = fs.statSync(full);
    } catch {
      continue; // dangling link
    }
    if (st.isDirectory()) walk(full, into, seen);
    else if (st.isFile()) into.push(full);
  }
}

/** A NUL byte in the first 8 KB: an extension-less binary file, not text. */
function looksBinary(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(8192);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n).includes(0);
  } finally {
    fs.closeSync(fd);
  }
}

function readText(file: string): string {
  let s: string;
  try {
    s = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DataError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
}

// ---------------------------------------------------------------------------------------
// Plain text: documents packed into windows of seqLen+1 tokens, stride seqLen

function loadText(files: string[], tok: TextTokenizer, o: LoadOptions, out: LoadedData): void {
  const docs: number[][] = [];
  let total = 0;
  for (const f of files) {
    let text = readText(f);
    if (o.maxChars !== undefined && text.length > o.maxChars) {
      const cut = text.lastIndexOf('\n\n', o.maxChars);
      text = text.slice(0, cut > 0 ? cut + 1 : o.maxChars);
    }
    if (!text.length) continue;
    const ids = tok.encode(text);
    if (o.bosId !== undefined) ids.unshift(o.bosId);
    if (o.eosId !== undefined) ids.push(o.eosId);
    docs.push(ids);
    total += ids.length;
  }
  const all = new Int32Array(total);
  let at = 0;
  for (const d of docs) {
    all.set(d, at);
    at += d.length;
  }
  // window i covers all[i .. i+seqLen]; inputs all[i .. i+seqLen), targets all[i+1 .. i+seqLen]
  for (let i = 0; i + 1 < total; i += o.seqLen) {
    const L = Math.min(o.seqLen, total - 1 - i);
    out.examples.push({ ids: all.slice(i, i + L), targets: all.slice(i + 1, i + 1 + L) });
  }
}

// ---------------------------------------------------------------------------------------
// JSONL

type Rec = Record<string, unknown>;

function typeName(v: unknown): string {
  return v === undefined ? 'nothing' : v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

function loadJsonl(file: string, tok: TextTokenizer, o: LoadOptions, out: LoadedData): void {
  const lines = readText(file).split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i];
    if (!line.trim()) continue;
    const where = `${file}:${i + 1}`;
    const fail = (what: string): never => {
      throw new DataError(`${where}: ${what}`);
    };
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      fail(`not valid JSON (${(e as Error).message})`);
    }
    if (!rec || typeof rec !== 'object' || Array.isArray(rec)) fail(`expected a JSON object, got ${typeName(rec)}`);
    const seq = recordSequence(rec as Rec, tok, o, fail);
    const ex = makeExample(seq.ids, seq.trained, o.seqLen);
    if (!ex.hasTarget) {
      if (!seq.trained.some((t, k) => k > 0 && t))
        fail(`nothing to train on: the sequence has ${seq.ids.length} token(s) and no trained token after the first`);
      out.dropped++;
      continue;
    }
    if (ex.truncated) out.truncated++;
    out.examples.push(ex.example);
  }
}

/** The token sequence S of one record and which of its tokens are trained. */
function recordSequence(rec: Rec, tok: TextTokenizer, o: LoadOptions, fail: (what: string) => never): { ids: number[]; trained: boolean[] } {
  const str = (key: string, optional = false): string | undefined => {
    const v = rec[key];
    if (v === undefined || (optional && v === null)) {
      if (!optional) fail(`has ${formOf(rec)} but no "${key}"`);
      return undefined;
    }
    if (typeof v !== 'string') fail(`"${key}" must be a string, got ${typeName(v)}`);
    return v as string;
  };
  if ('messages' in rec) return chatSequence(rec.messages, tok, o, fail);
  if ('prompt' in rec || 'completion' in rec) return promptResponse(str('prompt')!, str('completion')!, tok, o);
  if ('instruction' in rec || 'output' in rec) {
    const instruction = str('instruction')!, input = str('input', true), output = str('output')!;
    const prompt = instruction + (input ? `\n\n${input}` : '') + '\n\n';
    return promptResponse(prompt, output, tok, o);
  }
  if ('text' in rec) {
    const ids = tok.encode(str('text')!);
    if (o.bosId !== undefined) ids.unshift(o.bosId);
    if (o.eosId !== undefined) ids.push(o.eosId);
    return { ids, trained: ids.map(() => true) };
  }
  const keys = Object.keys(rec);
  return fail(`no recognised fields (found ${keys.length ? keys.map((k) => `"${k}"`).join(', ') : 'none'}); expected one of ${ACCEPTED_FORMS}`);
}

function formOf(rec: Rec): string {
  for (const k of ['prompt', 'completion', 'instruction', 'output']) if (k in rec) return `"${k}"`;
  return 'a field';
}

function promptResponse(prompt: string, response: string, tok: TextTokenizer, o: LoadOptions): { ids: number[]; trained: boolean[] } {
  const p = tok.encode(prompt), r = tok.encode(response);
  const ids: number[] = [], trained: boolean[] = [];
  const push = (id: number, t: boolean) => {
    ids.push(id);
    trained.push(t);
  };
  if (o.bosId !== undefined) push(o.bosId, false);
  for (const id of p) push(id, false);
  for (const id of r) push(id, true);
  if (o.eosId !== undefined) push(o.eosId, true);
  return { ids, trained };
}

/**
 * A conversation through the chat template. Assistant spans are found by token prefixes:
 * for the assistant message i, start = the tokens shared by render(messages[0..i), with the
 * generation prompt) and the full render; end = the tokens shared by render(messages[0..i])
 * and the full render. Comparing prefixes (rather than assuming the partial renders tokenise
 * as exact prefixes) keeps a template that merges tokens at the boundary, or renders past
 * turns differently, from shifting a span into prompt text.
 */
function chatSequence(raw: unknown, tok: TextTokenizer, o: LoadOptions, fail: (what: string) => never): { ids: number[]; trained: boolean[] } {
  if (!Array.isArray(raw) || raw.length === 0) fail(`"messages" must be a non-empty array of {"role", "content"} objects, got ${typeName(raw)}`);
  const messages = (raw as unknown[]).map((m, k): ChatMessage => {
    if (!m || typeof m !== 'object' || Array.isArray(m)) fail(`"messages"[${k}] must be an object {"role", "content"}, got ${typeName(m)}`);
    const { role, content } = m as Rec;
    if (typeof role !== 'string') fail(`"messages"[${k}].role must be a string, got ${typeName(role)}`);
    if (typeof content !== 'string') fail(`"messages"[${k}].content must be a string, got ${typeName(content)}`);
    return { ...(m as Rec), role: role as string, content: content as string };
  });
  if (!tok.hasChatTemplate) fail('{"messages"} needs a chat template, and the tokenizer has none (chat_template in tokenizer_config.json)');
  if (!messages.some((m) => m.role === 'assistant')) fail('"messages" has no assistant message: nothing to train on');
  const render = (msgs: ChatMessage[], addGenerationPrompt: boolean): number[] => {
    try {
      return tok.encode(tok.applyChatTemplate(msgs, { addGenerationPrompt }));
    } catch (e) {
      return fail(`the chat template failed (${(e as Error).message})`);
    }
  };
  const ids = render(messages, false);
  const trained = ids.map(() => false);
  for (let i = 0; i < messages.length; i++) {
    if (messages[i].role !== 'assistant') continue;
    const start = commonPrefix(render(messages.slice(0, i), true), ids);
    const end = commonPrefix(render(messages.slice(0, i + 1), false), ids);
    for (let t = start; t < end; t++) trained[t] = true;
  }
  if (o.bosId !== undefined && ids[0] !== o.bosId) {
    ids.unshift(o.bosId);
    trained.unshift(false);
  }
  if (o.eosId !== undefined && ids[ids.length - 1] !== o.eosId) {
    ids.push(o.eosId);
    trained.push(messages[messages.length - 1].role === 'assistant');
  }
  return { ids, trained };
}

function commonPrefix(a: number[], b: number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** S and its trained flags → one example of at most seqLen positions (the start is kept). */
function makeExample(S: number[], trained: boolean[], seqLen: number): { example: Example; truncated: boolean; hasTarget: boolean } {
  const L = Math.max(0, Math.min(S.length - 1, seqLen));
  const ids = new Int32Array(L), targets = new Int32Array(L);
  let hasTarget = false;
  for (let t = 0; t < L; t++) {
    ids[t] = S[t];
    targets[t] = trained[t + 1] ? S[t + 1] : IGNORE_INDEX;
    if (trained[t + 1]) hasTarget = true;
  }
  return { example: { ids, targets }, truncated: S.length - 1 > seqLen, hasTarget };
}

// ---------------------------------------------------------------------------------------
// Split, batches

/**
 * Deterministic train/validation split: a Fisher–Yates shuffle with Rng(seed), the first
 * nVal examples for validation. nVal = round(n·valFraction), at least 1 when n ≥ 2 and
 * valFraction > 0, at most maxVal, and always leaving at least one training example.
 */
export function splitExamples(examples: Example[], o: { valFraction: number; seed: number; maxVal?: number }): { train: Example[]; val: Example[] } {
  const { valFraction, seed, maxVal } = o;
  if (typeof valFraction !== 'number' || !(valFraction >= 0 && valFraction < 1))
    throw new DataError(`splitExamples: 'valFraction' expected a number in [0, 1), received ${valFraction}`);
  if (!Number.isInteger(seed)) throw new DataError(`splitExamples: 'seed' expected an integer, received ${seed}`);
  if (maxVal !== undefined && !(Number.isInteger(maxVal) && maxVal >= 0))
    throw new DataError(`splitExamples: 'maxVal' expected an integer >= 0, received ${maxVal}`);
  const n = examples.length;
  const order = permutation(n, new Rng(seed));
  let nVal = valFraction > 0 && n >= 2 ? Math.max(1, Math.round(n * valFraction)) : 0;
  nVal = Math.min(nVal, n - 1, maxVal ?? Infinity);
  nVal = Math.max(nVal, 0);
  return { val: order.slice(0, nVal).map((i) => examples[i]), train: order.slice(nVal).map((i) => examples[i]) };
}

function permutation(n: number, rng: Rng): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/** Row-major [B, T] batch, right-padded: ids 0, targets -100, mask 0 past each example's end. */
export interface Batch {
  ids: Int32Array;
  targets: Int32Array;
  mask: Int32Array;
  B: number;
  T: number;
}

/** Pads examples into one batch (T = the longest example). */
export function collate(examples: Example[]): Batch {
  const B = examples.length;
  let T = 0;
  for (const e of examples) T = Math.max(T, e.ids.length);
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T).fill(IGNORE_INDEX), mask = new Int32Array(B * T);
  examples.forEach((e, b) => {
    ids.set(e.ids, b * T);
    targets.set(e.targets, b * T);
    mask.fill(1, b * T, b * T + e.ids.length);
  });
  return { ids, targets, mask, B, T };
}

/** Trained positions of a batch (targets ≠ -100): the cross-entropy normaliser. */
export function countTargets(batch: Pick<Batch, 'targets'>): number {
  let n = 0;
  for (let i = 0; i < batch.targets.length; i++) if (batch.targets[i] !== IGNORE_INDEX) n++;
  return n;
}

export interface BatchStreamOptions {
  batchSize: number;
  seed: number;
  /** default true; false walks the examples in order every epoch */
  shuffle?: boolean;
}

export interface BatchStreamState {
  /** epochs completed */
  epoch: number;
  /** index, in this epoch's permutation, of the next example */
  position: number;
  seed: number;
}

/**
 * Endless batches: epoch e visits every example once, in the order of a permutation drawn
 * from Rng(seed + e). A batch never spans two epochs, so the last batch of an epoch holds
 * the remaining n mod batchSize examples when batchSize does not divide n (like a PyTorch
 * DataLoader with drop_last=False), and no batch repeats an example.
 */
export class BatchStream {
  private readonly batchSize: number;
  private readonly shuffle: boolean;
  private readonly seed: number;
  private epoch = 0;
  private position = 0;
  private order: number[] = [];

  constructor(
    private readonly examples: Example[],
    opts: BatchStreamOptions,
  ) {
    if (!examples.length) throw new DataError('BatchStream: no examples');
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1)
      throw new DataError(`BatchStream: 'batchSize' expected an integer >= 1, received ${opts.batchSize}`);
    if (!Number.isInteger(opts.seed)) throw new DataError(`BatchStream: 'seed' expected an integer, received ${opts.seed}`);
    this.batchSize = opts.batchSize;
    this.shuffle = opts.shuffle ?? true;
    this.seed = opts.seed;
    this.startEpoch(0);
  }

  /** Continues a stream from `state` (the examples and batch size must be the run's own; state.seed wins over opts.seed). */
  static restore(examples: Example[], opts: BatchStreamOptions, state: BatchStreamState): BatchStream {
    const ok = (v: unknown, min: number) => Number.isInteger(v) && (v as number) >= min;
    if (!state || !ok(state.epoch, 0) || !ok(state.position, 0) || !Number.isInteger(state.seed))
      throw new DataError(`BatchStream.restore: state expected {epoch, position, seed} integers, received ${JSON.stringify(state)}`);
    if (state.position > examples.length)
      throw new DataError(`BatchStream.restore: state position ${state.position} is past the ${examples.length} examples (a different dataset?)`);
    const s = new BatchStream(examples, { ...opts, seed: state.seed });
    s.startEpoch(state.epoch);
    s.position = state.position;
    return s;
  }

  get state(): BatchStreamState {
    return { epoch: this.epoch, position: this.position, seed: this.seed };
  }

  /** Batches per epoch (ceil(n / batchSize)). */
  get batchesPerEpoch(): number {
    return Math.ceil(this.examples.length / this.batchSize);
  }

  next(): Batch {
    if (this.position >= this.order.length) this.startEpoch(this.epoch + 1);
    const end = Math.min(this.position + this.batchSize, this.order.length);
    const rows = this.order.slice(this.position, end).map((i) => this.examples[i]);
    this.position = end;
    if (this.position >= this.order.length) this.startEpoch(this.epoch + 1);
    return collate(rows);
  }

  private startEpoch(epoch: number): void {
    this.epoch = epoch;
    this.position = 0;
    const n = this.examples.length;
    this.order = this.shuffle ? permutation(n, new Rng((this.seed + epoch) >>> 0)) : Array.from({ length: n }, (_, i) => i);
  }
}
