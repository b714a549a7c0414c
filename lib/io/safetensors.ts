/**
 * safetensors: read (single file or sharded through model.safetensors.index.json) and
 * write (atomically: temp file + rename).
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {str: str}},
 * then the data region; offsets are relative to the data region.
 *
 * The header is validated before any data is read: length within the file, JSON,
 * known dtype, shape × dtype size = byte length, offsets inside the data region and
 * non-overlapping. Tensors are read one at a time in bounded chunks straight into
 * native memory, so loading never holds a second copy of the weights.
 */
import * as fs from 'fs';
import * as path from 'path';
import { RouterTuningError } from '../errors';
import { DType, Tensor, bf16BitsToFloat, floatToBf16Bits } from '../tensor';

export type StDType = 'F32' | 'BF16' | 'F16' | 'I32';
const ST_BYTES: Record<StDType, number> = { F32: 4, BF16: 2, F16: 2, I32: 4 };
const MAX_HEADER = 100 * 1024 * 1024;
const CHUNK_BYTES = 8 * 1024 * 1024;

export class SafetensorsError extends RouterTuningError {
  constructor(message: string) {
    super('RT_ERR_FORMAT', message);
    this.name = 'SafetensorsError';
  }
}

export interface StEntry {
  name: string;
  dtype: StDType;
  shape: number[];
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
  file: string;
}

export class SafetensorsFile {
  readonly entries = new Map<string, StEntry>();
  readonly metadata: Record<string, string> = {};

  private constructor(readonly file: string) {}

  static open(file: string): SafetensorsFile {
    const st = new SafetensorsFile(file);
    st.parse();
    return st;
  }

  private fail(msg: string): never {
    throw new SafetensorsError(`${this.file}: ${msg}`);
  }

  private parse(): void {
    let fd: number;
    try {
      fd = fs.openSync(this.file, 'r');
    } catch (e) {
      throw new SafetensorsError(`${this.file}: cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < 8) this.fail(`truncated: ${size} bytes, a safetensors file needs at least an 8-byte header length`);
      const lenBuf = Buffer.alloc(8);
      fs.readSync(fd, lenBuf, 0, 8, 0);
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(size - 8))
        this.fail(`header length ${n} runs past the end of the file (${size} bytes)`);
      if (n > BigInt(MAX_HEADER)) this.fail(`header length ${n} exceeds the ${MAX_HEADER}-byte limit`);
      const headerLen = Number(n);
      const headerBuf = Buffer.alloc(headerLen);
      fs.readSync(fd, headerBuf, 0, headerLen, 8);
      let header: unknown;
      try {
        header = JSON.parse(headerBuf.toString('utf8'));
      } catch (e) {
        this.fail(`header is not valid JSON (${(e as Error).message})`);
      }
      if (!header || typeof header !== 'object' || Array.isArray(header)) this.fail('header is not a JSON object');
      const dataStart = 8 + headerLen;
      const dataLen = size - dataStart;
      const spans: [number, number, string][] = [];
      for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
        if (name === '__metadata__') {
          if (raw && typeof raw === 'object')
            for (const [k, v] of Object.entries(raw as Record<string, unknown>)) this.metadata[k] = String(v);
          continue;
        }
        const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
        if (!e || typeof e !== 'object') this.fail(`tensor '${name}': entry is not an object`);
        if (typeof e.dtype !== 'string' || !(e.dtype in ST_BYTES))
          this.fail(`tensor '${name}': unsupported dtype ${JSON.stringify(e.dtype)} (supported: ${Object.keys(ST_BYTES).join(', ')})`);
        const dtype = e.dtype as StDType;
        if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0))
          this.fail(`tensor '${name}': shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
        const shape = e.shape as number[];
        const off = e.data_offsets;
        if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0))
          this.fail(`tensor '${name}': data_offsets ${JSON.stringify(off)} is not [begin, end]`);
        const [b, en] = off as [number, number];
        if (b > en) this.fail(`tensor '${name}': data_offsets [${b}, ${en}] end before they begin`);
        if (en > dataLen)
          this.fail(`tensor '${name}': data_offsets [${b}, ${en}] are outside the data region (${dataLen} bytes)`);
        const numel = shape.reduce((a, d) => a * d, 1);
        const want = numel * ST_BYTES[dtype];
        if (en - b !== want)
          this.fail(`tensor '${name}': ${dtype} shape [${shape.join(', ')}] needs ${want} bytes, data_offsets span ${en - b}`);
        spans.push([b, en, name]);
        this.entries.set(name, { name, dtype, shape, begin: dataStart + b, end: dataStart + en, file: this.file });
      }
      spans.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
      let prev: [number, number, string] | undefined;
      for (const span of spans) {
        if (span[1] === span[0]) continue; // empty tensors occupy no bytes
        if (prev && span[0] < prev[1])
          this.fail(`tensors '${prev[2]}' and '${span[2]}' overlap (bytes ${span[0]}..${Math.min(prev[1], span[1])} of the data region)`);
        if (!prev || span[1] > prev[1]) prev = span;
      }
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** Reads one entry into a native tensor: F32/I32 as is; BF16 as bfloat16 (or widened); F16 widened to float32. */
export function readEntry(entry: StEntry, as?: DType): Tensor {
  const srcBytes = ST_BYTES[entry.dtype];
  const target: DType =
    as ?? (entry.dtype === 'BF16' ? 'bfloat16' : entry.dtype === 'I32' ? 'int32' : 'float32');
  const ok =
    (entry.dtype === 'I32' && target === 'int32') ||
    (entry.dtype !== 'I32' && target !== 'int32');
  if (!ok) throw new SafetensorsError(`${entry.file}: tensor '${entry.name}' is ${entry.dtype} and cannot be read as ${target}`);
  const t = Tensor.empty(entry.shape, target);
  const numel = t.numel;
  let fd: number | undefined;
  try {
    fd = fs.openSync(entry.file, 'r');
    const chunkElems = Math.max(1, Math.floor(CHUNK_BYTES / srcBytes));
    const buf = new ArrayBuffer(Math.min(numel, chunkElems) * srcBytes);
    const u8 = new Uint8Array(buf);
    for (let start = 0; start < numel; start += chunkElems) {
      const count = Math.min(chunkElems, numel - start);
      const bytes = count * srcBytes;
      let got = 0;
      while (got < bytes) {
        const r = fs.readSync(fd, u8, got, bytes - got, entry.begin + start * srcBytes + got);
        if (r === 0) throw new SafetensorsError(`${entry.file}: tensor '${entry.name}' is truncated (file ended early)`);
        got += r;
      }
      t.write(convertChunk(buf, count, entry.dtype, target), start);
    }
  } catch (e) {
    t.dispose();
    throw e;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
  return t;
}

function convertChunk(buf: ArrayBuffer, count: number, src: StDType, target: DType): Float32Array | Int32Array | Uint16Array {
  switch (src) {
    case 'F32':
      return target === 'float32' ? new Float32Array(buf, 0, count) : floatToBf16Bits(new Float32Array(buf, 0, count));
    case 'I32':
      return new Int32Array(buf, 0, count);
    case 'BF16': {
      const bits = new Uint16Array(buf, 0, count);
      return target === 'bfloat16' ? bits : bf16BitsToFloat(bits);
    }
    case 'F16': {
      const f = f16BitsToFloat(new Uint16Array(buf, 0, count));
      return target === 'float32' ? f : floatToBf16Bits(f);
    }
  }
}

export function f16BitsToFloat(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

/**
 * A checkpoint folder: model.safetensors, or shards listed by model.safetensors.index.json
 * (or any single *.safetensors when it is the only one).
 */
export class Checkpoint {
  readonly entries = new Map<string, StEntry>();
  readonly metadata: Record<string, string> = {};

  private constructor(readonly dir: string) {}

  static open(dir: string): Checkpoint {
    const ck = new Checkpoint(dir);
    const index = path.join(dir, 'model.safetensors.index.json');
    let files: string[];
    if (fs.existsSync(index)) {
      let parsed: { weight_map?: Record<string, string> };
      try {
        parsed = JSON.parse(fs.readFileSync(index, 'utf8'));
      } catch (e) {
        throw new SafetensorsError(`${index}: not valid JSON (${(e as Error).message})`);
      }
      if (!parsed.weight_map || typeof parsed.weight_map !== 'object')
        throw new SafetensorsError(`${index}: expected a "weight_map" object`);
      files = [...new Set(Object.values(parsed.weight_map))].map((f) => path.join(dir, f));
      for (const f of files) if (!fs.existsSync(f)) throw new SafetensorsError(`${index}: shard ${path.basename(f)} is missing`);
      for (const f of files) {
        const st = SafetensorsFile.open(f);
        Object.assign(ck.metadata, st.metadata);
        for (const e of st.entries.values()) ck.entries.set(e.name, e);
      }
      for (const [name, file] of Object.entries(parsed.weight_map)) {
        const e = ck.entries.get(name);
        if (!e) throw new SafetensorsError(`${index}: tensor '${name}' is listed for ${file} but not stored there`);
      }
      return ck;
    }
    const single = path.join(dir, 'model.safetensors');
    if (fs.existsSync(single)) files = [single];
    else {
      let all: string[] = [];
      try {
        all = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
      } catch (e) {
        throw new SafetensorsError(`${dir}: cannot read the folder (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
      if (all.length !== 1)
        throw new SafetensorsError(
          `${dir}: expected model.safetensors or model.safetensors.index.json, found ${all.length ? all.join(', ') : 'no .safetensors file'}`,
        );
      files = [path.join(dir, all[0])];
    }
    const st = SafetensorsFile.open(files[0]);
    Object.assign(ck.metadata, st.metadata);
    for (const e of st.entries.values()) ck.entries.set(e.name, e);
    return ck;
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  entry(name: string): StEntry {
    const e = this.entries.get(name);
    if (!e) throw new SafetensorsError(`${this.dir}: tensor '${name}' is missing from the checkpoint`);
    return e;
  }

  read(name: string, as?: DType): Tensor {
    return readEntry(this.entry(name), as);
  }
}

/**
 * Writes tensors (float32 → F32, bfloat16 → BF16, int32 → I32) and string metadata,
 * atomically: a temp file in the same folder renamed over `file` when complete.
 */
export function writeSafetensors(file: string, tensors: Record<string, Tensor>, metadata: Record<string, string> = {}): void {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  const stType: Record<DType, StDType> = { float32: 'F32', bfloat16: 'BF16', int32: 'I32' };
  for (const name of names) {
    const t = tensors[name];
    const bytes = t.numel * (t.dtype === 'bfloat16' ? 2 : 4);
    header[name] = { dtype: stType[t.dtype], shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8); // data region 8-byte aligned
  const headerBuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(headerBuf.length));
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, lenBuf);
    fs.writeSync(fd, headerBuf);
    for (const name of names) {
      const t = tensors[name];
      const data = t.dtype === 'float32' ? t.toFloat32Array() : t.dtype === 'int32' ? t.toInt32Array() : t.toBf16Bits();
      fs.writeSync(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    }
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}
