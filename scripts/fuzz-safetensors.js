#!/usr/bin/env node
// Mutation fuzzer for the safetensors reader (lib/io/safetensors.ts, compiled in dist/):
// starts from valid files (f32/bf16/i32 tensors, metadata, several tensors), applies
// random mutations — bit flips, byte runs, truncation, extension, header-length edits,
// JSON edits (dtype, shape, data_offsets, duplicated/overlapping entries) — and opens and
// reads every tensor. Every outcome must be a success or a SafetensorsError (a clear
// error); any other exception (TypeError, RangeError from a typed array, a crash) is a
// finding: the input is saved under build-fuzz/ and the script exits 1.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.join(__dirname, '..');
const { SafetensorsFile, SafetensorsError, Checkpoint } = require(path.join(root, 'dist', 'lib', 'io', 'safetensors.js'));
const { dispose } = require(path.join(root, 'dist', 'lib', 'tensor.js'));

let seconds = 60;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--seconds') seconds = Number(argv[++i]);
  else {
    console.error(`fuzz-safetensors: unknown option ${argv[i]}`);
    process.exit(2);
  }
}

let seed = 12345;
const rand = (n) => {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed % n;
};

function file(header, data) {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

const seeds = [
  file({ __metadata__: { format: 'pt' }, a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] } }, Buffer.alloc(24, 1)),
  file({ a: { dtype: 'BF16', shape: [4], data_offsets: [0, 8] }, b: { dtype: 'I32', shape: [2], data_offsets: [8, 16] } }, Buffer.alloc(16, 2)),
  file({ w: { dtype: 'F16', shape: [3, 1], data_offsets: [0, 6] }, z: { dtype: 'F32', shape: [0], data_offsets: [6, 6] } }, Buffer.alloc(6, 3)),
];

const jsonEdits = [
  (h) => { const k = Object.keys(h).find((x) => x !== '__metadata__'); if (k) h[k].dtype = ['F64', 'U8', 'Q4', 7, null][rand(5)]; },
  (h) => { const k = Object.keys(h).find((x) => x !== '__metadata__'); if (k) h[k].shape = [[-1], [1e20], ['2'], 3, [2 ** 53, 2], []][rand(6)]; },
  (h) => { const k = Object.keys(h).find((x) => x !== '__metadata__'); if (k) h[k].data_offsets = [[0, 1e18], [-4, 4], [8, 0], [0], 'x', [0, 2 ** 60]][rand(6)]; },
  (h) => { h.dup = { ...Object.values(h).find((v) => v && v.dtype) }; },
  (h) => { h.__metadata__ = [{ a: 1 }, 'str', null, { k: { nested: 1 } }][rand(4)]; },
  (h) => { const k = Object.keys(h)[0]; if (k) delete h[k].shape; },
];

function mutate(buf) {
  let b = Buffer.from(buf);
  const kind = rand(8);
  if (kind === 0) for (let i = 0, n = 1 + rand(8); i < n; i++) b[rand(b.length)] ^= 1 << rand(8);
  else if (kind === 1) b = b.subarray(0, rand(b.length + 1));
  else if (kind === 2) b = Buffer.concat([b, Buffer.alloc(rand(64), rand(256))]);
  else if (kind === 3) b.writeBigUInt64LE(BigInt([0, 1, 7, b.length, b.length - 8, 2 ** 32, 2 ** 53][rand(7)]), 0);
  else if (kind === 4 || kind === 5) {
    const len = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + len).toString());
    jsonEdits[rand(jsonEdits.length)](header);
    const json = Buffer.from(JSON.stringify(header));
    const lb = Buffer.alloc(8);
    lb.writeBigUInt64LE(BigInt(json.length));
    b = Buffer.concat([lb, json, buf.subarray(8 + len)]);
  } else if (kind === 6) {
    const at = 8 + rand(Math.max(1, b.length - 8));
    b = Buffer.concat([b.subarray(0, at), Buffer.from('{}[]",:\\\u00ff'.charAt(rand(10))), b.subarray(at + 1)]);
  } else for (let i = 0, n = rand(4); i < n; i++) b = mutate(b);
  return b;
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-fuzz-st-'));
const target = path.join(dir, 'model.safetensors');
const deadline = Date.now() + seconds * 1000;
let execs = 0, ok = 0, clear = 0;
try {
  while (Date.now() < deadline) {
    const input = mutate(seeds[rand(seeds.length)]);
    fs.writeFileSync(target, input);
    execs++;
    try {
      const st = SafetensorsFile.open(target);
      const ck = Checkpoint.open(dir);
      for (const name of st.entries.keys()) dispose(ck.read(name));
      ok++;
    } catch (e) {
      if (e instanceof SafetensorsError) {
        if (!e.message || !e.message.includes(target)) throw Object.assign(new Error(`unclear error: ${e.message}`), { input });
        clear++;
      } else {
        e.input = input;
        throw e;
      }
    }
  }
} catch (e) {
  fs.mkdirSync(path.join(root, 'build-fuzz'), { recursive: true });
  const out = path.join(root, 'build-fuzz', `safetensors-crash-${Date.now()}.bin`);
  if (e.input) fs.writeFileSync(out, e.input);
  console.error(`fuzz-safetensors: FINDING after ${execs} inputs: ${e.stack || e}\n  input saved to ${out}`);
  process.exit(1);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
console.log(`fuzz-safetensors: ${execs} inputs in ${seconds}s — ${ok} valid, ${clear} rejected with a clear error, 0 findings`);
