#!/usr/bin/env node
// Prints, per golden fixture, the worst |Δ| between our logits and transformers' (prefill
// of every prompt), absolute and relative to max|ref|. Needs `npm run build` first.
'use strict';
const fs = require('fs');
const path = require('path');
const { loadModel } = require('../../dist/lib');

async function main() {
  const root = path.join(__dirname, '..', '..', 'test', 'fixtures', 'models');
  for (const family of fs.readdirSync(root).sort()) {
    const dir = path.join(root, family);
    const golden = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
    const model = await loadModel(dir);
    let worst = 0, scale = 0;
    for (const p of golden.prompts) {
      const buf = Buffer.from(p.logits, 'base64');
      const ref = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
      const got = await model.logits(p.ids);
      for (let i = 0; i < ref.length; i++) {
        worst = Math.max(worst, Math.abs(got[i] - ref[i]));
        scale = Math.max(scale, Math.abs(ref[i]));
      }
    }
    model.dispose();
    console.log(`${family.padEnd(18)} max|Δ| ${worst.toExponential(2)}  relative ${(worst / scale).toExponential(2)}  (max|ref| ${scale.toFixed(2)})`);
  }
}
main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
