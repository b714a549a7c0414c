/**
 * Soak (issue 9): 1,000 generate calls in one process on the embedded default model,
 * with and without routers. After a warm-up of 100 calls, resident memory may grow by at
 * most 5%, native buffers and bytes return to their baseline after every call, and the
 * KV caches are freed. Part of `npm run test:reliability`.
 */
import * as path from 'path';

import { backendInfo } from '../../lib/backend';
import { loadModel } from '../../lib/model/causal_lm';

const modelDir = path.join(__dirname, '..', '..', 'models', 'dense');

function rssMiB(): number {
  return process.memoryUsage().rss / 2 ** 20;
}

test('1,000 generate calls: RSS growth <= 5% after warm-up, no native buffer leaks', async () => {
  const model = await loadModel(modelDir);
  const prompts = ['Call me Ishmael.', 'The whale', 'Mr. Speaker, the state of the Union', 'It was a dark'];
  const calls = 1000, warmup = 100;
  const native0 = backendInfo().memory;
  let rssWarm = 0, rssPeak = 0;
  try {
    for (let i = 0; i < calls; i++) {
      if (i === warmup) {
        (global as { gc?: () => void }).gc?.();
        rssWarm = rssMiB();
      }
      model.attachRouters({ granularity: 'attn-token', layers: [3, 4, 5, 6] });
      if (i % 2 === 0) {
        model.routers!.dispose();
        model.routers = undefined;
      }
      const tokens: number[] = [];
      for await (const t of model.generate(prompts[i % prompts.length], { maxTokens: 8, temperature: 0.8, seed: i })) tokens.push(t.token);
      expect(tokens.length).toBeGreaterThan(0);
      model.routers?.dispose();
      model.routers = undefined;
      const mem = backendInfo().memory;
      expect(mem.liveBuffers).toBe(native0.liveBuffers);
      expect(mem.allocatedBytes).toBe(native0.allocatedBytes);
      if (i >= warmup) rssPeak = Math.max(rssPeak, rssMiB());
    }
  } finally {
    model.dispose();
  }
  const growth = (rssPeak - rssWarm) / rssWarm;
  console.log(`soak: ${calls} generate calls; RSS after warm-up ${rssWarm.toFixed(1)} MiB, peak ${rssPeak.toFixed(1)} MiB, growth ${(growth * 100).toFixed(2)}%`);
  expect(growth).toBeLessThanOrEqual(0.05);
}, 900_000);
