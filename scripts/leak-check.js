#!/usr/bin/env node
// Leak check (npm run test:asan runs it under AddressSanitizer; `node scripts/leak-check.js`
// runs it plain): load the embedded model,
// generate with and without routers, dispose — 40 times. After each round every native
// buffer must be back (live buffers and bytes equal to the start), and the resident set
// must not keep growing (≤ 10% over the second half of the rounds, outside ASan).
'use strict';
const path = require('path');
const rt = require(path.join(__dirname, '..', 'dist', 'lib', 'index.js'));

(async () => {
  const start = rt.backendInfo().memory;
  const rounds = Number(process.env.RT_LEAK_ROUNDS || 40);
  const rss = [];
  for (let r = 0; r < rounds; r++) {
    const model = await rt.loadModel(path.join(__dirname, '..', 'models', 'dense'));
    if (r % 2) model.attachRouters({ granularity: 'attn-token', layers: [3, 4, 5, 6] });
    for await (const t of model.generate('Call me Ishmael.', { maxTokens: 6, seed: r })) void t;
    await model.logits([1, 2, 3, 4]);
    model.dispose();
    await new Promise(setImmediate); // let napi finalizers run
    const m = rt.backendInfo().memory;
    if (m.liveBuffers !== start.liveBuffers || m.allocatedBytes !== start.allocatedBytes) {
      console.error(`leak-check: round ${r}: ${m.liveBuffers - start.liveBuffers} buffers / ${m.allocatedBytes - start.allocatedBytes} bytes not returned`);
      process.exit(1);
    }
    rss.push(process.memoryUsage().rss);
  }
  const mib = (b) => (b / 2 ** 20).toFixed(1);
  // The allocator's arenas settle over the first loads (each load reads ~14 MB of weights
  // through fresh buffers): judge the second half of the rounds.
  const mid = Math.floor(rounds / 2) - 1;
  const growth = (rss[rounds - 1] - rss[mid]) / rss[mid];
  console.log(`leak-check: ${rounds} load/generate/dispose rounds, every native buffer returned; RSS ${mib(rss[0])} after round 1, ${mib(rss[mid])} after round ${mid + 1}, ${mib(rss[rounds - 1])} MiB at the end (+${(growth * 100).toFixed(1)}% over the second half)`);
  // Under AddressSanitizer freed memory sits in its quarantine (256 MiB by default), so
  // RSS is not a leak signal there: the native buffer counts above are the check.
  const underAsan = /libasan/.test(process.env.LD_PRELOAD || '');
  if (growth > 0.1 && !underAsan) {
    console.error('leak-check: resident memory keeps growing');
    process.exit(1);
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
