#!/usr/bin/env node
// The package's `install` script. In an installed package it is node-gyp-build's install
// step: when a prebuilt binary (prebuilds/<platform>-<arch>/) or an earlier source build
// loads, nothing is compiled; otherwise `node-gyp rebuild` builds from source (needs a C++
// compiler, make, python3 and libopenblas-dev). In a source checkout (lib/*.ts present)
// it does nothing: `npm run build` builds the addon and the TypeScript.
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
if (fs.existsSync(path.join(root, 'lib', 'index.ts')) && fs.existsSync(path.join(root, 'tsconfig.json'))) {
  console.log('router-tuning: source checkout; build with `npm run build`');
  process.exit(0);
}
require('node-gyp-build/bin.js');
