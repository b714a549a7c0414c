import { execFileSync } from 'child_process';
import * as path from 'path';
import { Tensor, dispose, ops, setNumThreads, backendInfo } from '../lib';
import { Rng } from './helpers/random';

const root = path.join(__dirname, '..');
const addonExpr = process.env.RT_ADDON
  ? `require(${JSON.stringify(path.resolve(process.env.RT_ADDON))})`
  : `require('node-gyp-build')(${JSON.stringify(root)})`;

function threadsInChild(env: Record<string, string>): number {
  const out = execFileSync(process.execPath, ['-e', `process.stdout.write(String(${addonExpr}.runtime_info().threads))`], {
    cwd: root,
    env: { ...process.env, ...env },
  });
  return Number(out.toString());
}

describe('thread pool', () => {
  test('RT_NUM_THREADS sizes the pool; invalid values fall back to all cores', () => {
    expect(threadsInChild({ RT_NUM_THREADS: '1' })).toBe(1);
    expect(threadsInChild({ RT_NUM_THREADS: '3' })).toBe(3);
    const cores = require('os').cpus().length;
    expect(threadsInChild({ RT_NUM_THREADS: 'lots' })).toBe(cores);
  });

  test('results do not depend on the thread count', () => {
    const rng = new Rng(99);
    const x = Tensor.from(rng.floats(300001));
    const before = backendInfo().threads;
    const sums: number[] = [];
    for (const n of [1, 2, 3]) {
      setNumThreads(n);
      sums.push(ops.sumSquares(x));
    }
    setNumThreads(before);
    expect(new Set(sums).size).toBe(1);
    dispose(x);
  });
});
