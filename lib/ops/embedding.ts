/**
 * Token embedding: `embedding` gathers table rows by id (a bfloat16 table is widened
 * to float32), `embeddingBackward` scatter-adds the output gradient into a [V, C]
 * table gradient (repeated ids accumulate; deterministic for any thread count).
 */
import { callNative } from './dispatch';
import { fill } from './elementwise';
import { expectDtype, expectInt, expectRank, expectShape } from './validate';
import { Tensor } from '../tensor';

/**
 * out[..., :] = table[ids[...], :].
 *   ids [...] int32 with values in [0, V), table [V, C] float32 or bfloat16 → [..., C] float32
 *   (written into `out` when given).
 */
export function embedding(ids: Tensor, table: Tensor, out?: Tensor): Tensor {
  const op = 'embedding';
  expectDtype(op, 'ids', ids, 'int32');
  expectDtype(op, 'table', table, ['float32', 'bfloat16']);
  expectRank(op, 'table', table, 2);
  const [V, C] = table.shape;
  if (out) {
    expectDtype(op, 'out', out, 'float32');
    expectShape(op, 'out', out, [...ids.shape, C], '[...ids, C]');
  }
  const o = out ?? Tensor.empty([...ids.shape, C], 'float32', table.device);
  try {
    callNative('embedding_fwd', [o.handle, table.handle, ids.handle, ids.numel, V, C]);
  } catch (e) {
    if (!out) o.dispose(); // an id out of range
    throw e;
  }
  return o;
}

/**
 * Gradient of `embedding` with respect to the table: dtable[ids[t]] += dout[t].
 *   dout [..., C] float32 (leading dims = ids' shape), ids int32, V rows
 *   → dtable [V, C] float32: a new zeroed tensor, or `into` accumulated into and returned.
 */
export function embeddingBackward(dout: Tensor, ids: Tensor, V: number, into?: Tensor): Tensor {
  const op = 'embeddingBackward';
  expectDtype(op, 'dout', dout, 'float32');
  expectDtype(op, 'ids', ids, 'int32');
  expectInt(op, 'V', V, 0, 2 ** 31 - 1);
  expectRank(op, 'dout', dout, ids.rank + 1);
  const C = dout.shape[dout.rank - 1];
  expectShape(op, 'dout', dout, [...ids.shape, C], '[...ids, C]');
  let dtable = into;
  if (dtable) {
    expectDtype(op, 'into', dtable, 'float32');
    expectShape(op, 'into', dtable, [V, C], '[V, C]');
  } else {
    dtable = fill(Tensor.empty([V, C], 'float32', dout.device), 0);
  }
  try {
    callNative('embedding_bwd', [dtable.handle, dout.handle, ids.handle, ids.numel, V, C]);
  } catch (e) {
    if (!into) dtable.dispose(); // an id out of range
    throw e;
  }
  return dtable;
}
