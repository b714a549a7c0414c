#!/usr/bin/env node
// Leak check (npm run test:asan runs it under AddressSanitizer): load the embedded model,
// generate with and without routers, dispose — 20 times. After each round every native
// buffer must be back (live buffers and bytes equal to the start), and the resident set
// must not keep growing.
'use strict';
const path = require('path');
const rt = require(path.join(__dirname, '..', 'dist', 'lib', 'index.js'));

(async () => {
  const start = rt.backendInfo().memory;
  const rounds = 20;
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
  const growth = (rss[rounds - 1] - rss[4]) / rss[4];
  console.log(`leak-check: ${rounds} load/generate/dispose rounds, every native buffer returned; RSS ${mib(rss[4])} → ${mib(rss[rounds - 1])} MiB after round 5 (${(growth * 100).toFixed(1)}%)`);
  if (growth > 0.2) {
    console.error('leak-check: resident memory keeps growing');
    process.exit(1);
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
