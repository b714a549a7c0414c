/**
 * Argument validation at the TS boundary, one message style for every op:
 *   "<op>: '<arg>' expected <what>, received <what>"
 * The native bindings check again (lengths, dtypes, index ranges) as a second guard.
 */
import { ArgumentError, DTypeError, ShapeError } from '../errors';
import type { DType, Tensor } from '../tensor';

const fmt = (shape: readonly number[]) => `[${shape.join(', ')}]`;

export function expectDtype(op: string, name: string, t: Tensor, dtypes: DType | readonly DType[]): void {
  const allowed = typeof dtypes === 'string' ? [dtypes] : dtypes;
  if (!allowed.includes(t.dtype))
    throw new DTypeError(`${op}: '${name}' expected dtype ${allowed.join(' or ')}, received ${t.dtype}`);
}

/** Exact shape; -1 in `shape` matches any size. */
export function expectShape(op: string, name: string, t: Tensor, shape: readonly number[], legend?: string): void {
  const ok = t.shape.length === shape.length && shape.every((d, i) => d === -1 || d === t.shape[i]);
  if (!ok)
    throw new ShapeError(
      `${op}: '${name}' expected shape ${legend ? legend + ' = ' : ''}${fmt(shape).replace(/-1/g, '*')}, received ${fmt(t.shape)}`,
    );
}

export function expectRank(op: string, name: string, t: Tensor, ranks: number | readonly number[]): void {
  const allowed = typeof ranks === 'number' ? [ranks] : ranks;
  if (!allowed.includes(t.rank))
    throw new ShapeError(`${op}: '${name}' expected rank ${allowed.join(' or ')}, received rank ${t.rank} ${fmt(t.shape)}`);
}

export function expectInt(op: string, name: string, v: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(v) || v < min || v > max)
    throw new ArgumentError(`${op}: '${name}' expected an integer in [${min}, ${max}], received ${v}`);
}

export function expectFinite(op: string, name: string, v: number): void {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ArgumentError(`${op}: '${name}' expected a finite number, received ${v}`);
}

/** Product of all dims but the last, and the last: a tensor seen as (rows, cols). */
export function rowsCols(t: Tensor): [number, number] {
  if (t.rank === 0) return [1, 1];
  const cols = t.shape[t.rank - 1];
  return [cols === 0 ? 0 : t.numel / cols, cols];
}
