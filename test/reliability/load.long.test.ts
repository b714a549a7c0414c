/**
 * Load (issue 9): `router-tuning serve` on 127.0.0.1 (the embedded model, the built CLI in
 * dist/) under 8 concurrent clients for 20 s with a small queue, so that some requests
 * are deliberately refused with 429. No request may fail otherwise; latency percentiles,
 * /health latency during the load and the server's peak memory are reported
 * (scripts/serve-load.js). Part of `npm run test:reliability`.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const root = path.join(__dirname, '..', '..');

test('serve holds 8 clients for 20 s: only deliberate 429s, latencies and memory reported', () => {
  const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'serve-load.js'), '--clients', '8', '--seconds', '20', '--max-tokens', '16', '--queue', '4', '--json'], {
    encoding: 'utf8',
    timeout: 180_000,
  });
  expect(r.status).toBe(0);
  const result = JSON.parse(r.stdout.trim().split('\n').pop()!);
  console.log(`load: ${JSON.stringify(result)}`);
  expect(result.errors).toBe(0);
  expect(result.requests).toBeGreaterThan(0);
  expect(result.rejected429).toBeGreaterThanOrEqual(0);
}, 240_000);
