import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadTokenizer, TextTokenizer } from '../../lib/model/tokenizer';
import { BatchStream, DataError, Example, collate, countTargets, loadExamples, splitExamples } from '../../lib/train/data';

const modelDir = path.join(__dirname, '..', 'fixtures', 'models', 'llama');
const dataDir = path.join(__dirname, '..', 'fixtures', 'data');
const tok = loadTokenizer(modelDir);
const BOS = tok.tokenToId('<s>')!, EOS = tok.tokenToId('</s>')!;
const IGN = -100;

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-data-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Writes `content` to a fresh file under the temp folder and returns its path. */
let fileNo = 0;
function write(name: string, content: string | Buffer): string {
  const f = path.join(tmp, `${fileNo++}-${name}`);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, content);
  return f;
}
const jsonl = (...recs: unknown[]) => write('d.jsonl', recs.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n');
const arr = (a: Int32Array) => Array.from(a);
/** Expected example from a sequence S and its trained flags (the module's documented rule). */
function expected(S: number[], trained: boolean[], seqLen = 1 << 30): { ids: number[]; targets: number[] } {
  const L = Math.min(S.length - 1, seqLen);
  return { ids: S.slice(0, L), targets: S.slice(1, L + 1).map((id, t) => (trained[t + 1] ? id : IGN)) };
}
const plain = (e: Example) => ({ ids: arr(e.ids), targets: arr(e.targets) });

describe('plain text', () => {
  test('one file: bos + tokens + eos cut into windows of seqLen+1, stride seqLen', () => {
    const text = 'The quick brown fox jumps over the lazy dog, twice.\n';
    const f = write('doc.txt', text);
    const S = [BOS, ...tok.encode(text), EOS];
    const seqLen = 7;
    const r = loadExamples(f, tok, { seqLen, bosId: BOS, eosId: EOS });
    expect(r.format).toBe('text');
    expect(r.files).toEqual([f]);
    const want: { ids: number[]; targets: number[] }[] = [];
    for (let i = 0; i + 1 < S.length; i += seqLen) {
      const chunk = S.slice(i, i + seqLen + 1);
      want.push({ ids: chunk.slice(0, -1), targets: chunk.slice(1) });
    }
    expect(r.examples.map(plain)).toEqual(want);
    // every token but the first is a target exactly once; the last window is shorter
    expect(r.targets).toBe(S.length - 1);
    expect(r.tokens).toBe(S.length - 1);
    expect(r.examples[r.examples.length - 1].ids.length).toBe((S.length - 1) % seqLen || seqLen);
    for (const e of r.examples) expect(e.ids.length).toBeLessThanOrEqual(seqLen);
  });

  test('a folder: recursive, sorted, hidden and non-text files skipped, documents concatenated', () => {
    const dir = path.join(dataDir, 'text');
    const r = loadExamples(dir, tok, { seqLen: 1000, eosId: EOS });
    const files = ['a.txt', 'b.md', path.join('nested', 'notes')].map((f) => path.join(dir, f));
    expect(r.files).toEqual(files);
    const S = files.flatMap((f) => [...tok.encode(fs.readFileSync(f, 'utf8')), EOS]);
    expect(r.examples.map(plain)).toEqual([{ ids: S.slice(0, -1), targets: S.slice(1) }]);
  });

  test('an extension-less binary file is skipped; no bos/eos when not given', () => {
    const dir = path.join(tmp, 'bin-folder');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'blob'), Buffer.from([1, 0, 2, 3]));
    fs.writeFileSync(path.join(dir, 'z.txt'), 'hello world');
    const r = loadExamples(dir, tok, { seqLen: 64 });
    expect(r.files).toEqual([path.join(dir, 'z.txt')]);
    const S = tok.encode('hello world');
    expect(r.examples.map(plain)).toEqual([{ ids: S.slice(0, -1), targets: S.slice(1) }]);
  });
});

describe('JSONL', () => {
  test('{text}: every token trained, one example per line', () => {
    const f = jsonl({ text: 'first line' }, { text: 'second one' });
    const r = loadExamples(f, tok, { seqLen: 100, bosId: BOS, eosId: EOS });
    expect(r.format).toBe('jsonl');
    const all = (s: string) => {
      const S = [BOS, ...tok.encode(s), EOS];
      return expected(S, S.map(() => true));
    };
    expect(r.examples.map(plain)).toEqual([all('first line'), all('second one')]);
  });

  test('{prompt, completion}: only the completion and eos are targets', () => {
    const f = jsonl({ prompt: 'Q: 2+2?\nA:', completion: ' four' });
    const r = loadExamples(f, tok, { seqLen: 100, bosId: BOS, eosId: EOS });
    const p = tok.encode('Q: 2+2?\nA:'), c = tok.encode(' four');
    const S = [BOS, ...p, ...c, EOS];
    const trained = [false, ...p.map(() => false), ...c.map(() => true), true];
    const e = plain(r.examples[0]);
    expect(e).toEqual(expected(S, trained));
    // the first target is the first completion token, predicted at the last prompt position
    expect(e.targets.findIndex((t) => t !== IGN)).toBe(p.length);
    expect(e.targets.filter((t) => t !== IGN)).toEqual([...c, EOS]);
  });

  test('{instruction, input?, output}: prompt = instruction (+ "\\n\\n" + input) + "\\n\\n"', () => {
    const f = jsonl({ instruction: 'Name a colour.', output: 'Blue.' }, { instruction: 'Translate.', input: 'cat', output: 'chat' }, { instruction: 'Say hi.', input: '', output: 'hi' });
    const r = loadExamples(f, tok, { seqLen: 100, eosId: EOS });
    const want = (prompt: string, out: string) => {
      const p = tok.encode(prompt), o = tok.encode(out);
      return expected([...p, ...o, EOS], [...p.map(() => false), ...o.map(() => true), true]);
    };
    expect(r.examples.map(plain)).toEqual([want('Name a colour.\n\n', 'Blue.'), want('Translate.\n\ncat\n\n', 'chat'), want('Say hi.\n\n', 'hi')]);
  });

  test('{messages}: only assistant turns are trained, found through the chat template', () => {
    const messages = [
      { role: 'user', content: 'hi there' },
      { role: 'assistant', content: 'hello you' },
      { role: 'user', content: 'bye' },
      { role: 'assistant', content: 'see you' },
    ];
    const f = jsonl({ messages });
    const r = loadExamples(f, tok, { seqLen: 200, bosId: BOS, eosId: EOS });
    const e = plain(r.examples[0]);
    const S = tok.encode(tok.applyChatTemplate(messages));
    expect(S[0]).toBe(BOS); // the template renders <s> itself: no second bos
    expect(e.ids).toEqual(S); // S + eos, minus the last input
    // the trained targets are the assistant turns' tokens (as the template renders them) and eos
    const runs: number[][] = [];
    e.targets.forEach((t, i) => {
      if (t === IGN) return;
      if (i > 0 && e.targets[i - 1] !== IGN) runs[runs.length - 1].push(t);
      else runs.push([t]);
    });
    expect(runs.map((run) => tok.decode(run))).toEqual(['hello you\n', 'see you\n</s>']);
    // every trained target is the next token
    const full = [...S, EOS];
    e.targets.forEach((t, i) => t !== IGN && expect(t).toBe(full[i + 1]));
  });

  test('a conversation ending with a user turn: its final eos is not trained', () => {
    const f = jsonl({ messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }] });
    const e = plain(loadExamples(f, tok, { seqLen: 200, eosId: EOS }).examples[0]);
    expect(tok.decode(e.targets.filter((t) => t !== IGN))).toBe('b\n');
  });

  test('the fixture file with every form loads; blank lines are skipped', () => {
    const r = loadExamples(path.join(dataDir, 'instruct.jsonl'), tok, { seqLen: 256, bosId: BOS, eosId: EOS });
    expect(r.examples.length).toBe(5);
    expect(r.truncated + r.dropped).toBe(0);
  });

  test('truncation keeps the start and is counted; a record left without targets is dropped and counted', () => {
    const long = 'one two three four five six seven eight nine ten';
    const f = jsonl({ text: long }, { prompt: long, completion: ' end' }, { prompt: 'hi', completion: ' yo' });
    const seqLen = 12;
    const r = loadExamples(f, tok, { seqLen, bosId: BOS, eosId: EOS });
    expect(r.truncated).toBe(1);
    expect(r.dropped).toBe(1);
    expect(r.examples.length).toBe(2);
    const S = [BOS, ...tok.encode(long), EOS];
    expect(plain(r.examples[0])).toEqual(expected(S, S.map(() => true), seqLen));
    expect(r.examples[0].ids.length).toBe(seqLen);
    // everything dropped: no training tokens
    const g = jsonl({ prompt: long, completion: ' end' });
    expect(() => loadExamples(g, tok, { seqLen, eosId: EOS })).toThrow(/no training tokens \(1 record\(s\) dropped/);
  });

  test('a folder of JSONL files is read in sorted order; other files are ignored', () => {
    const dir = path.join(tmp, 'jsonl-folder');
    fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'b.jsonl'), JSON.stringify({ text: 'bee' }) + '\n');
    fs.writeFileSync(path.join(dir, 'sub', 'a.jsonl'), JSON.stringify({ text: 'sub a' }) + '\n');
    fs.writeFileSync(path.join(dir, 'a.jsonl'), JSON.stringify({ text: 'ay' }) + '\n');
    fs.writeFileSync(path.join(dir, 'README.md'), 'not data');
    const r = loadExamples(dir, tok, { seqLen: 32, eosId: EOS });
    expect(r.format).toBe('jsonl');
    expect(r.files).toEqual([path.join(dir, 'a.jsonl'), path.join(dir, 'b.jsonl'), path.join(dir, 'sub', 'a.jsonl')]);
    expect(r.examples.map((e) => tok.decode([...arr(e.ids).slice(0, -1), ...arr(e.targets).slice(-2)]))).toEqual(['ay</s>', 'bee</s>', 'sub a</s>']);
  });
});

describe('bad input is a DataError naming file and line', () => {
  const cases: [string, string[], RegExp][] = [
    ['not JSON', ['{"text": "ok"}', '{"text": oops}'], /:2: not valid JSON/],
    ['an array', ['[1, 2]'], /:1: expected a JSON object, got an array/],
    ['a string', ['{"text": "ab cd"}', '', '"just text"'], /:3: expected a JSON object, got a string/],
    ['null', ['null'], /:1: expected a JSON object, got null/],
    ['no recognised field', ['{"question": "q", "answer": "a"}'], /:1: no recognised fields \(found "question", "answer"\); expected one of \{"text"\}, \{"prompt", "completion"\}/],
    ['wrong type', ['{"prompt": 3, "completion": "x"}'], /:1: "prompt" must be a string, got a number/],
    ['missing half', ['{"completion": "x"}'], /:1: has "completion" but no "prompt"/],
    ['instruction without output', ['{"instruction": "do"}'], /:1: has "instruction" but no "output"/],
    ['input of the wrong type', ['{"instruction": "do", "input": 5, "output": "x"}'], /:1: "input" must be a string, got a number/],
    ['messages not an array', ['{"messages": "hi"}'], /:1: "messages" must be a non-empty array/],
    ['a message without content', ['{"messages": [{"role": "user"}]}'], /:1: "messages"\[0\]\.content must be a string, got nothing/],
    ['no assistant turn', ['{"messages": [{"role": "user", "content": "hi"}]}'], /:1: "messages" has no assistant message/],
    ['nothing to train', ['{"text": "ab cd"}', '{"prompt": "a", "completion": ""}'], /:2: nothing to train on/],
  ];
  test.each(cases)('%s', (_what, lines, re) => {
    const f = write('bad.jsonl', lines.join('\n'));
    let err: unknown;
    try {
      loadExamples(f, tok, { seqLen: 16 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DataError);
    expect((err as DataError).code).toBe('RT_ERR_DATA');
    expect((err as Error).message.startsWith(`${f}:`)).toBe(true);
    expect((err as Error).message).toMatch(re);
  });

  test('{messages} with a tokenizer without a chat template names the file and line', () => {
    const json = JSON.parse(fs.readFileSync(path.join(modelDir, 'tokenizer.json'), 'utf8'));
    const bare = new TextTokenizer(json, {});
    const f = jsonl({ text: 'fine' }, { messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }] });
    expect(() => loadExamples(f, bare, { seqLen: 16 })).toThrow(new RegExp(`${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: \\{"messages"\\} needs a chat template`));
  });

  test('paths, empty data and options', () => {
    expect(() => loadExamples(path.join(tmp, 'nope'), tok, { seqLen: 8 })).toThrow(/nope: no such file or folder/);
    const empty = path.join(tmp, 'empty-folder');
    fs.mkdirSync(path.join(empty, '.git'), { recursive: true });
    fs.writeFileSync(path.join(empty, '.git', 'config.txt'), 'hidden');
    fs.writeFileSync(path.join(empty, 'image.png'), 'x');
    expect(() => loadExamples(empty, tok, { seqLen: 8 })).toThrow(/empty-folder: no usable files/);
    expect(() => loadExamples(write('blank.txt', ''), tok, { seqLen: 8 })).toThrow(/no training tokens/);
    expect(() => loadExamples(write('one.txt', 'a'), tok, { seqLen: 8 })).toThrow(/no training tokens/);
    expect(() => loadExamples(write('blank.jsonl', '\n\n'), tok, { seqLen: 8 })).toThrow(/no training tokens/);
    expect(() => loadExamples(write('x.txt', 'abc'), tok, { seqLen: 1 })).toThrow(/'seqLen' expected an integer >= 2/);
    expect(() => loadExamples(write('x.txt', 'abc'), tok, { seqLen: 8, eosId: 300 })).toThrow(/'eosId' expected a token id in \[0, 300\)/);
    expect(() => loadExamples(write('x.json', '[]'), tok, { seqLen: 8 })).toThrow(/use JSONL/);
  });
});

/** n examples of distinct lengths 2..(n+1) whose ids encode their index. */
function synthetic(n: number): Example[] {
  return Array.from({ length: n }, (_, i) => {
    const L = 2 + (i % 5);
    return { ids: Int32Array.from({ length: L }, (_, t) => 1000 * i + t), targets: Int32Array.from({ length: L }, (_, t) => (t === 0 ? IGN : 1000 * i + t + 1)) };
  });
}
const exampleIndex = (id: number) => Math.floor(id / 1000);

describe('split and batches', () => {
  test('splitExamples is deterministic, disjoint and sized', () => {
    const ex = synthetic(50);
    const a = splitExamples(ex, { valFraction: 0.1, seed: 7 });
    const b = splitExamples(ex, { valFraction: 0.1, seed: 7 });
    const c = splitExamples(ex, { valFraction: 0.1, seed: 8 });
    expect(a.val.length).toBe(5);
    expect(a.train.length).toBe(45);
    expect(a.val).toEqual(b.val);
    expect(a.train).toEqual(b.train);
    expect(a.val).not.toEqual(c.val);
    expect(new Set([...a.train, ...a.val]).size).toBe(50);
    expect(splitExamples(ex, { valFraction: 0.5, seed: 1, maxVal: 3 }).val.length).toBe(3);
    expect(splitExamples(synthetic(2), { valFraction: 0.01, seed: 1 }).val.length).toBe(1);
    expect(splitExamples(synthetic(1), { valFraction: 0.5, seed: 1 }).val.length).toBe(0);
    expect(splitExamples(ex, { valFraction: 0, seed: 1 }).val.length).toBe(0);
    expect(() => splitExamples(ex, { valFraction: 1, seed: 1 })).toThrow(DataError);
  });

  test('collate right-pads to the longest example; countTargets', () => {
    const ex: Example[] = [
      { ids: Int32Array.from([5, 6, 7]), targets: Int32Array.from([IGN, 7, 8]) },
      { ids: Int32Array.from([9, 10]), targets: Int32Array.from([10, 11]) },
    ];
    const b = collate(ex);
    expect([b.B, b.T]).toEqual([2, 3]);
    expect(arr(b.ids)).toEqual([5, 6, 7, 9, 10, 0]);
    expect(arr(b.targets)).toEqual([IGN, 7, 8, 10, 11, IGN]);
    expect(arr(b.mask)).toEqual([1, 1, 1, 1, 1, 0]);
    expect(countTargets(b)).toBe(4);
  });

  test('BatchStream: every epoch visits each example once, a new order per epoch, cycles forever', () => {
    const ex = synthetic(10);
    const s = new BatchStream(ex, { batchSize: 4, seed: 3 });
    expect(s.batchesPerEpoch).toBe(3);
    const epochs: number[][] = [];
    for (let e = 0; e < 3; e++) {
      const seen: number[] = [];
      for (const size of [4, 4, 2]) {
        const b = s.next();
        expect(b.B).toBe(size);
        for (let r = 0; r < b.B; r++) {
          const i = exampleIndex(b.ids[r * b.T]);
          seen.push(i);
          const L = ex[i].ids.length;
          expect(b.T).toBeGreaterThanOrEqual(L);
          expect(arr(b.ids.subarray(r * b.T, r * b.T + L))).toEqual(arr(ex[i].ids));
          expect(arr(b.targets.subarray(r * b.T, (r + 1) * b.T))).toEqual([...arr(ex[i].targets), ...Array(b.T - L).fill(IGN)]);
          expect(arr(b.mask.subarray(r * b.T, (r + 1) * b.T))).toEqual([...Array(L).fill(1), ...Array(b.T - L).fill(0)]);
        }
      }
      expect([...seen].sort((x, y) => x - y)).toEqual([...Array(10).keys()]);
      epochs.push(seen);
      expect(s.state).toEqual({ epoch: e + 1, position: 0, seed: 3 });
    }
    expect(epochs[0]).not.toEqual(epochs[1]);
    // shuffle off: the examples in order, every epoch
    const o = new BatchStream(ex, { batchSize: 4, seed: 3, shuffle: false });
    const ids = Array.from({ length: 6 }, () => o.next()).flatMap((b) => Array.from({ length: b.B }, (_, r) => exampleIndex(b.ids[r * b.T])));
    expect(ids).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  test('BatchStream.restore continues bit-identically (mid-epoch and at an epoch boundary)', () => {
    const ex = synthetic(13);
    const opts = { batchSize: 5, seed: 11 };
    const ref = new BatchStream(ex, opts);
    const refBatches = Array.from({ length: 12 }, () => ref.next());
    for (const cut of [1, 2, 3, 7]) {
      const a = new BatchStream(ex, opts);
      for (let i = 0; i < cut; i++) a.next();
      const state = JSON.parse(JSON.stringify(a.state)); // as saved in a checkpoint's metadata
      const b = BatchStream.restore(ex, opts, state);
      for (let i = cut; i < 12; i++) expect(b.next()).toEqual(refBatches[i]);
    }
    expect(() => BatchStream.restore(ex, opts, { epoch: 0, position: 99, seed: 11 })).toThrow(/past the 13 examples/);
    expect(() => BatchStream.restore(ex, opts, { epoch: -1, position: 0, seed: 11 })).toThrow(DataError);
    expect(() => new BatchStream([], opts)).toThrow(/no examples/);
    expect(() => new BatchStream(ex, { batchSize: 0, seed: 1 })).toThrow(/'batchSize' expected an integer >= 1/);
  });
});
