import { execFileSync } from 'child_process';
import { createHash } from 'crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import { Tensor, dispose, ops } from '../../lib';
import { native } from '../../lib/native';
import { expectClose, f64, TOL } from '../helpers/compare';
import { checkGradient, dot } from '../helpers/gradcheck';
import { Rng } from '../helpers/random';
import { embeddingBackwardRef, embeddingRef } from '../reference/embedding';

const rng = new Rng(777);
/** Uniform values with unit variance: fresh random data, cheaper to draw than normals for big tensors. */
function randoms(count: number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = (2 * rng.uniform() - 1) * Math.sqrt(3);
  return out;
}
const n = () => native() as any;
// The addon expression a child process uses to load the same build as this one.
const addonExpr = process.env.RT_ADDON
  ? `require(${JSON.stringify(resolve(process.env.RT_ADDON))})`
  : `require('node-gyp-build')(${JSON.stringify(join(__dirname, '..', '..'))})`;

describe('embedding vs float64 reference', () => {
  test.each([
    [[1], 1, 1],
    [[13], 7, 5],
    [[3, 11], 50, 129],
    [[2, 300], 200, 600], // two column blocks in the backward, parallel forward
  ])('ids %j, V=%i, C=%i: forward (f32 and bf16 table) and backward', (idShape, V, C) => {
    const T = idShape.reduce((p, d) => p * d, 1);
    const ids = rng.ints(T, 0, V);
    if (T > 2) ids[T - 1] = ids[0]; // at least one repeated id
    const table = randoms(V * C), dout = randoms(T * C);
    const tids = Tensor.from(ids, idShape);
    for (const dt of ['float32', 'bfloat16'] as const) {
      const ttab = Tensor.from(table, [V, C], dt);
      const out = ops.embedding(tids, ttab);
      expect(out.shape).toEqual([...idShape, C]);
      // bf16: the gather is exact on the bf16-rounded table
      const ref = embeddingRef(ids, ttab.toFloat32Array(), C);
      expectClose(out.toFloat32Array(), ref, { atol: 0, rtol: 0 }, `forward ${dt}`);
      const into = Tensor.empty(out.shape);
      expect(ops.embedding(tids, ttab, into)).toBe(into);
      expectClose(into.toFloat32Array(), ref, { atol: 0, rtol: 0 }, `forward into out ${dt}`);
      dispose([ttab, out, into]);
    }
    const tdout = Tensor.from(dout, [...idShape, C]);
    const dtab = ops.embeddingBackward(tdout, tids, V);
    const ref = embeddingBackwardRef(dout, ids, V, C);
    expect(dtab.shape).toEqual([V, C]);
    expectClose(dtab.toFloat32Array(), ref, TOL.reduction, 'backward');
    ops.embeddingBackward(tdout, tids, V, dtab); // accumulates
    expectClose(dtab.toFloat32Array(), ref.map((v) => 2 * v), TOL.reduction, 'backward accumulated');
    dispose([tids, tdout, dtab]);
  });

  test('backward with heavily repeated ids is deterministic and independent of the thread count', () => {
    // Three hot rows plus one every 7th token, C across three column blocks. The pool is sized
    // per process (RT_NUM_THREADS), so the same scatter runs in children with 1 and 3 threads.
    const T = 2000, V = 37, C = 700;
    const ids = rng.ints(T, 0, 3);
    for (let t = 0; t < T; t += 7) ids[t] = V - 1;
    const dout = randoms(T * C);
    const tids = Tensor.from(ids), tdout = Tensor.from(dout, [T, C]);
    const first = ops.embeddingBackward(tdout, tids, V);
    expectClose(first.toFloat32Array(), embeddingBackwardRef(dout, ids, V, C), TOL.reduction, 'hot rows');
    const digest = createHash('sha256').update(Buffer.from(first.toFloat32Array().buffer)).digest('hex');
    const dir = mkdtempSync(join(tmpdir(), 'rt-emb-'));
    try {
      writeFileSync(join(dir, 'ids.bin'), Buffer.from(ids.buffer));
      writeFileSync(join(dir, 'dout.bin'), Buffer.from(dout.buffer));
      const script = `
        const fs = require('fs'), path = require('path'), crypto = require('crypto');
        const n = ${addonExpr};
        const rd = (f, A) => { const b = fs.readFileSync(path.join(${JSON.stringify(dir)}, f)); return new A(b.buffer, b.byteOffset, b.byteLength / 4); };
        const ids = rd('ids.bin', Int32Array), dout = rd('dout.bin', Float32Array);
        const hi = n.tensor_alloc(${T}, 2), hd = n.tensor_alloc(${T * C}, 0), ht = n.tensor_alloc(${V * C}, 0);
        n.tensor_write(hi, ids, 0); n.tensor_write(hd, dout, 0); n.fill(ht, 0, ${V * C});
        n.embedding_bwd(ht, hd, hi, ${T}, ${V}, ${C});
        const out = new Float32Array(${V * C}); n.tensor_read(ht, out, 0);
        process.stdout.write(n.runtime_info().threads + ' ' + crypto.createHash('sha256').update(Buffer.from(out.buffer)).digest('hex'));`;
      for (const threads of ['1', '3']) {
        const res = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, RT_NUM_THREADS: threads } }).toString();
        expect(res).toBe(`${threads} ${digest}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    dispose([tids, tdout, first]);
  });

  test('reference backward matches finite differences', () => {
    const V = 4, C = 3, ids = [2, 0, 2, 3, 2];
    const table = f64(rng.floats(V * C)), r = f64(rng.floats(ids.length * C));
    checkGradient((tab) => dot(embeddingRef(ids, tab, C), r), table, embeddingBackwardRef(r, ids, V, C), { label: 'dtable' });
  });

  test('empty ids give an empty output and leave the gradient untouched', () => {
    const tab = Tensor.from(rng.floats(12), [4, 3]), ids = Tensor.from(new Int32Array(0), [0]);
    const out = ops.embedding(ids, tab);
    expect(out.shape).toEqual([0, 3]);
    const d = ops.embeddingBackward(Tensor.empty([0, 3]), ids, 4);
    expect(Array.from(d.toFloat32Array())).toEqual(new Array(12).fill(0));
    dispose([tab, ids, out, d]);
  });
});

describe('embedding guards (TS and binding)', () => {
  test('TS validation names op, argument, expected and received', () => {
    const tab = Tensor.zeros([10, 4]), ids = Tensor.from(new Int32Array([1, 2, 3])), fids = Tensor.zeros([3]);
    expect(() => ops.embedding(fids, tab)).toThrow("embedding: 'ids' expected dtype int32, received float32");
    expect(() => ops.embedding(ids, Tensor.zeros([10, 4], 'int32'))).toThrow("embedding: 'table' expected dtype float32 or bfloat16, received int32");
    expect(() => ops.embedding(ids, Tensor.zeros([40]))).toThrow("embedding: 'table' expected rank 2, received rank 1 [40]");
    expect(() => ops.embedding(ids, tab, Tensor.zeros([3, 5]))).toThrow("embedding: 'out' expected shape [...ids, C] = [3, 4], received [3, 5]");
    expect(() => ops.embeddingBackward(Tensor.zeros([4, 4]), ids, 10)).toThrow("embeddingBackward: 'dout' expected shape [...ids, C] = [3, 4], received [4, 4]");
    expect(() => ops.embeddingBackward(Tensor.zeros([3, 4]), ids, 10, Tensor.zeros([9, 4]))).toThrow(
      "embeddingBackward: 'into' expected shape [V, C] = [10, 4], received [9, 4]",
    );
    expect(() => ops.embeddingBackward(Tensor.zeros([3, 4]), ids, 2.5)).toThrow("embeddingBackward: 'V' expected an integer in [0, 2147483647], received 2.5");
    dispose([tab, ids, fids]);
  });

  test('out-of-range ids name the position, the value and V (TS path and binding)', () => {
    const tab = Tensor.zeros([10, 4]), ids = Tensor.from(new Int32Array([1, 2, 10, 3]));
    const before = n().runtime_info().liveBuffers;
    expect(() => ops.embedding(ids, tab)).toThrow("embedding_fwd: 'ids' expected values in [0, V) = [0, 10), received ids[2] = 10");
    expect(n().runtime_info().liveBuffers).toBe(before); // the output was freed
    const neg = Tensor.from(new Int32Array([0, -1]));
    expect(() => ops.embeddingBackward(Tensor.zeros([2, 4]), neg, 10)).toThrow("embedding_bwd: 'ids' expected values in [0, V) = [0, 10), received ids[1] = -1");
    try {
      ops.embedding(neg, tab);
      throw new Error('no throw');
    } catch (e) {
      expect((e as { code?: string }).code).toBe('RT_ERR_INDEX');
      expect((e as Error).name).toBe('RangeError');
    }
    dispose([tab, ids, neg]);
  });

  test('binding rejects short buffers, wrong dtypes and bad sizes', () => {
    const nn = n();
    const out = nn.tensor_alloc(12, 0), tab = nn.tensor_alloc(40, 0), bf = nn.tensor_alloc(40, 1), ids = nn.tensor_alloc(3, 2), small = nn.tensor_alloc(11, 0);
    nn.tensor_write(ids, new Int32Array([0, 9, 4]), 0);
    expect(() => nn.embedding_fwd(small, tab, ids, 3, 10, 4)).toThrow("embedding_fwd: 'out' expected at least 12 elements, received 11");
    expect(() => nn.embedding_fwd(out, tab, ids, 3, 11, 4)).toThrow("embedding_fwd: 'table' expected at least 44 elements, received 40");
    expect(() => nn.embedding_fwd(out, tab, ids, 4, 10, 3)).toThrow("embedding_fwd: 'ids' expected at least 4 elements, received 3");
    expect(() => nn.embedding_fwd(out, tab, out, 3, 10, 4)).toThrow("embedding_fwd: 'ids' expected dtype int32, received float32");
    expect(() => nn.embedding_fwd(out, ids, ids, 3, 1, 1)).toThrow("embedding_fwd: 'table' expected dtype float32 or bfloat16, received int32");
    expect(() => nn.embedding_fwd(out, tab, ids, -1, 10, 4)).toThrow(/embedding_fwd: 'T' expected an integer in \[0, \d+\], received -1/);
    expect(() => nn.embedding_fwd(out, tab, ids, 3, 2 ** 31, 0)).toThrow("embedding_fwd: 'V' expected an integer in [0, 2147483647], received 2147483648");
    expect(() => nn.embedding_fwd(out, tab, ids, 3, 5, 4)).toThrow("embedding_fwd: 'ids' expected values in [0, V) = [0, 5), received ids[1] = 9");
    expect(() => nn.embedding_bwd(bf, out, ids, 3, 10, 4)).toThrow("embedding_bwd: 'dtable' expected dtype float32, received bfloat16");
    expect(() => nn.embedding_bwd(tab, small, ids, 3, 10, 4)).toThrow("embedding_bwd: 'dout' expected at least 12 elements, received 11");
    expect(() => nn.embedding_bwd(tab, out, ids, 3, 9, 4)).toThrow("embedding_bwd: 'ids' expected values in [0, V) = [0, 9), received ids[1] = 9");
    expect(() => nn.embedding_bwd(tab, out, ids, 3, 10)).toThrow('embedding_bwd: expected 6 arguments, received 5');
    for (const h of [out, tab, bf, ids, small]) nn.tensor_free(h);
  });
});
