#!/usr/bin/env node
// Summary table of a device check (scripts/device-check.sh): test counts and failures
// from test-cuda.log (node --test spec reporter) and every case of bench-cuda.json
// (DESIGN.md §7 bench object), as markdown on stdout.
'use strict';
const fs = require('fs');
const path = require('path');

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node scripts/cuda/summarize.js OUTDIR');
  process.exit(2);
}
const read = (f) => {
  try {
    return fs.readFileSync(path.join(dir, f), 'utf8');
  } catch {
    return '';
  }
};

const lines = ['# Device check summary', ''];
const env = read('env.txt');
const gpu = env.split('\n').find((l) => /H100|H200|A100|NVIDIA|RTX|L40|L4\b/.test(l) && !l.startsWith('name'));
if (gpu) lines.push(`GPU: ${gpu.trim()}`, '');

// TAP from each test file run on its own (node file.js): top-level "ok N - name" /
// "not ok N - name" lines, "# pass N" totals, and the exit line device-check adds.
const log = read('test-cuda.log');
const top = log.split('\n').filter((l) => /^(not )?ok \d+ - /.test(l));
const passed = top.filter((l) => l.startsWith('ok')).length;
const failed = top.filter((l) => l.startsWith('not ok'));
lines.push('## test:cuda', '', `top-level tests: ${top.length}, pass ${passed}, fail ${failed.length}`, '');
for (const l of log.split('\n').filter((x) => x.startsWith('# exit '))) lines.push(`- ${l.slice(2)}`);
lines.push('');
if (failed.length) lines.push('Failed:', '', ...failed.slice(0, 40).map((l) => `- ${l}`), '');

let bench = null;
try {
  bench = JSON.parse(read('bench-cuda.json'));
} catch {
  /* reported below */
}
lines.push('## bench:cuda', '');
if (!bench) {
  lines.push('no bench JSON (see bench-cuda.log)');
} else {
  if (bench.ceilings) lines.push(`Ceilings: ${Object.entries(bench.ceilings).map(([k, v]) => `${k} ${typeof v === 'number' ? +v.toPrecision(4) : v}`).join(', ')}`, '');
  lines.push('| case | value | unit | fraction | note |', '|---|---|---|---|---|');
  for (const c of bench.cases ?? []) {
    const v = typeof c.value === 'number' ? +c.value.toPrecision(4) : c.value;
    const f = typeof c.fraction === 'number' ? `${(c.fraction * 100).toFixed(1)}%` : '';
    lines.push(`| ${c.name} | ${v ?? ''} | ${c.unit ?? ''} | ${f} | ${c.error ?? c.note ?? c.skipped ?? ''} |`);
  }
}
console.log(lines.join('\n'));
