import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tensor, dispose } from '../../lib';
import { Checkpoint, SafetensorsFile, f16BitsToFloat, writeSafetensors } from '../../lib/io/safetensors';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-st-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Builds a raw safetensors file from a header object and a data buffer. */
function rawFile(name: string, header: unknown, data: Buffer, headerLenOverride?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLenOverride ?? BigInt(json.length));
  const file = path.join(tmp, name);
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

describe('safetensors', () => {
  test('write then read round-trips F32, BF16 and I32 with metadata', () => {
    const a = Tensor.from(new Float32Array([1, -2, 3.5, 4, 5, 6]), [2, 3]);
    const b = Tensor.from([0.5, -1.25, 3], [3], 'bfloat16');
    const c = Tensor.from(new Int32Array([7, 8]), [2]);
    const file = path.join(tmp, 'rt.safetensors');
    writeSafetensors(file, { a, b, c }, { granularity: 'attn-seq' });
    const st = SafetensorsFile.open(file);
    expect(st.metadata).toEqual({ granularity: 'attn-seq' });
    expect(st.entries.get('a')).toMatchObject({ dtype: 'F32', shape: [2, 3] });
    expect(st.entries.get('b')).toMatchObject({ dtype: 'BF16', shape: [3] });
    const ck = Checkpoint.open(tmp);
    const ra = ck.read('a'), rb = ck.read('b'), rbf = ck.read('b', 'float32'), rc = ck.read('c');
    expect(Array.from(ra.toFloat32Array())).toEqual([1, -2, 3.5, 4, 5, 6]);
    expect(rb.dtype).toBe('bfloat16');
    expect(Array.from(rbf.toFloat32Array())).toEqual([0.5, -1.25, 3]);
    expect(Array.from(rc.toInt32Array())).toEqual([7, 8]);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
    dispose([a, b, c, ra, rb, rbf, rc]);
    fs.rmSync(file);
  });

  test('F16 is widened exactly', () => {
    const bits = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x0000]);
    expect(Array.from(f16BitsToFloat(bits))).toEqual([1, -2, 65504, 2 ** -24, Infinity, 0]);
    const file = rawFile('f16.safetensors', { x: { dtype: 'F16', shape: [6], data_offsets: [0, 12] } }, Buffer.from(bits.buffer));
    const st = SafetensorsFile.open(file);
    expect(st.entries.get('x')!.dtype).toBe('F16');
    fs.rmSync(file);
  });

  test('sharded checkpoints through model.safetensors.index.json', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'shards-'));
    const a = Tensor.from(new Float32Array([1, 2]), [2]);
    const b = Tensor.from(new Float32Array([3, 4, 5]), [3]);
    writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), { a });
    writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), { b });
    fs.writeFileSync(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } }),
    );
    const ck = Checkpoint.open(dir);
    const rb = ck.read('b');
    expect(Array.from(rb.toFloat32Array())).toEqual([3, 4, 5]);
    expect(() => ck.read('nope')).toThrow(/tensor 'nope' is missing from the checkpoint/);
    fs.rmSync(path.join(dir, 'model-00002-of-00002.safetensors'));
    expect(() => Checkpoint.open(dir)).toThrow(/shard model-00002-of-00002.safetensors is missing/);
    dispose([a, b, rb]);
  });

  const f32 = (n: number) => Buffer.alloc(n * 4);
  test.each([
    ['truncated file', () => {
      const f = path.join(tmp, 'trunc.safetensors');
      fs.writeFileSync(f, Buffer.from([1, 2, 3]));
      return f;
    }, /truncated: 3 bytes/],
    ['header length past the end', () => rawFile('hl.safetensors', { x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32(1), 10_000n), /header length 10000 runs past the end of the file/],
    ['header not JSON', () => rawFile('nj.safetensors', '{"x": [', f32(1)), /header is not valid JSON/],
    ['unknown dtype', () => rawFile('dt.safetensors', { x: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }, f32(2)), /tensor 'x': unsupported dtype "F64"/],
    ['offsets out of range', () => rawFile('oor.safetensors', { x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32(2)), /data_offsets \[0, 16\] are outside the data region \(8 bytes\)/],
    ['overlapping offsets', () => rawFile('ov.safetensors', { x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, y: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, f32(3)), /tensors 'x' and 'y' overlap/],
    ['shape not matching bytes', () => rawFile('sh.safetensors', { x: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(2)), /F32 shape \[3\] needs 12 bytes, data_offsets span 8/],
    ['bad shape', () => rawFile('bs.safetensors', { x: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, f32(1)), /is not a list of non-negative integers/],
    ['missing file', () => path.join(tmp, 'does-not-exist.safetensors'), /cannot open \(ENOENT\)/],
  ])('%s is a clear error', (_label, make, message) => {
    const file = (make as () => string)();
    expect(() => SafetensorsFile.open(file)).toThrow(message as RegExp);
    try {
      SafetensorsFile.open(file);
    } catch (e) {
      expect((e as { code: string }).code).toBe('RT_ERR_FORMAT');
    }
  });

  test('a folder without weights is a clear error', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'empty-'));
    expect(() => Checkpoint.open(dir)).toThrow(/expected model.safetensors or model.safetensors.index.json, found no .safetensors file/);
  });
});
