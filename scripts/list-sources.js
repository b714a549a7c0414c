#!/usr/bin/env node
// Lists the C++ sources of the CPU addon for binding.gyp (gyp has no globbing), so that
// a new op file in csrc/cpu or csrc/binding is built without editing the build files.
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const dirs = ['csrc/cpu', 'csrc/binding'];
const files = [];
for (const dir of dirs) {
  for (const name of fs.readdirSync(path.join(root, dir)).sort()) {
    if (name.endsWith('.cc')) files.push(`${dir}/${name}`);
  }
}
files.push('csrc/cuda/cuda_stub.cc');
process.stdout.write(files.join('\n') + '\n');
