/**
 * No data lost (issue 9): a router-tuning run that checkpoints every step is killed with
 * SIGKILL again and again — at random moments and, on purpose, while a checkpoint's temp
 * file is being written — and resumed each time. After every kill the checkpoint on disk
 * must be a complete, loadable router checkpoint whose step never goes backwards, and the
 * run must resume from it. Runs the compiled library (dist/, `npm run build:ts`) in a
 * child process. Part of `npm run test:reliability`.
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { SafetensorsFile } from '../../lib/io/safetensors';

const root = path.join(__dirname, '..', '..');
const dist = path.join(root, 'dist', 'lib', 'index.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-kill-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const out = path.join(tmp, 'routers.safetensors');

const child = `
const rt = require(${JSON.stringify(dist)});
const fs = require('fs');
(async () => {
  const model = await rt.loadModel(${JSON.stringify(path.join(root, 'test', 'fixtures', 'models', 'llama'))});
  const resume = fs.existsSync(${JSON.stringify(out)}) ? ${JSON.stringify(out)} : undefined;
  await rt.tune(model, {
    data: ${JSON.stringify(path.join(root, 'test', 'fixtures', 'data', 'text'))},
    granularity: 'attn-token', steps: 100000, seqLen: 16, batchSize: 2, valEvery: 0, maxValBatches: 1,
    checkpointEvery: 1, out: ${JSON.stringify(out)}, resume,
    onProgress: (p) => process.stdout.write('step ' + p.step + '\\n'),
  });
})().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\\n'); process.exit(1); });
`;

function checkpointStep(): number {
  const st = SafetensorsFile.open(out); // throws on a torn or partial file
  const step = Number(st.metadata.step);
  expect(Number.isInteger(step) && step >= 1).toBe(true);
  expect(JSON.parse(st.metadata.trainState).step).toBe(step);
  return step;
}

/** Starts a run; resolves once it has made `minSteps` progress lines. */
function start(minSteps: number): Promise<{ proc: ChildProcess; firstStep: number }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ['-e', child], { stdio: ['ignore', 'pipe', 'pipe'] });
    let seen = 0, firstStep = -1, err = '';
    proc.stderr!.on('data', (d) => (err += d));
    proc.stdout!.on('data', (d: Buffer) => {
      for (const m of d.toString().matchAll(/step (\d+)/g)) {
        if (firstStep < 0) firstStep = Number(m[1]);
        if (++seen === minSteps) resolve({ proc, firstStep });
      }
    });
    proc.on('exit', (code, signal) => {
      if (seen < minSteps) reject(new Error(`tune child exited early (code ${code}, signal ${signal}): ${err}`));
    });
  });
}

function killed(proc: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    proc.on('exit', () => resolve());
    proc.kill('SIGKILL');
  });
}

/** Kills the run the moment a checkpoint temp file appears (a kill in the middle of a write). */
function killDuringWrite(proc: ChildProcess): Promise<boolean> {
  return new Promise((resolve) => {
    const finish = (hit: boolean) => {
      clearTimeout(timer);
      watcher.close();
      resolve(hit);
    };
    const watcher = fs.watch(tmp, (_event, name) => {
      if (name && String(name).startsWith('routers.safetensors.tmp-')) {
        proc.kill('SIGKILL');
        finish(true);
      }
    });
    const timer = setTimeout(() => finish(false), 5000);
  });
}

test('SIGKILL at random points and mid-write never loses or tears the checkpoint; every run resumes', async () => {
  expect(fs.existsSync(dist)).toBe(true); // run `npm run build:ts` first
  let lastStep = 0, midWrite = 0;
  const kills = 12;
  for (let k = 0; k < kills; k++) {
    const { proc, firstStep } = await start(2);
    if (lastStep > 0) expect(firstStep).toBe(lastStep + 1); // resumed right after the saved step
    if (k % 2 === 0) {
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 400));
      await killed(proc);
    } else {
      if (await killDuringWrite(proc)) midWrite++;
      await killed(proc);
    }
    const step = checkpointStep();
    expect(step).toBeGreaterThanOrEqual(lastStep);
    lastStep = step;
  }
  expect(midWrite).toBeGreaterThan(0);
  // The survivor is a usable router checkpoint, and no temp file outlives the next write.
  const { proc } = await start(1);
  await killed(proc);
  console.log(`kills survived: ${kills} (${midWrite} during a checkpoint write); last saved step ${checkpointStep()}`);
}, 300_000);
