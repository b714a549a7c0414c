/**
 * The embedded default models (trained by scripts/models/train-base.js) load and match
 * transformers on a fixed prompt (fixture: scripts/golden/embedded_logits.py), and a
 * shortened main job runs end to end.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadModel } from '../lib/model/causal_lm';
import { runCli } from './helpers/cli';

const root = path.join(__dirname, '..');

describe.each([['dense'], ['moe']])('embedded %s model', (name) => {
  test('loads and matches transformers on a fixed prompt', async () => {
    const golden = JSON.parse(fs.readFileSync(path.join(root, 'test', 'fixtures', 'embedded', `${name}.json`), 'utf8'));
    const model = await loadModel(path.join(root, 'models', name));
    try {
      expect(model.tokenizer!.encode(golden.prompt)).toEqual(golden.ids);
      const buf = Buffer.from(golden.logits, 'base64');
      const ref = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
      const got = await model.logits(golden.ids);
      let worst = 0, scale = 0;
      for (let i = 0; i < ref.length; i++) {
        worst = Math.max(worst, Math.abs(got[i] - ref[i]));
        scale = Math.max(scale, Math.abs(ref[i]));
      }
      expect(worst).toBeLessThanOrEqual(1e-4 * scale);
    } finally {
      model.dispose();
    }
  });
});

test('a shortened main job (router-tuning tune with no model or data) runs end to end', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-main-'));
  try {
    const r = await runCli(['tune', '--steps', '3', '--eval-tokens', '300', '--out', path.join(tmp, 'routers.safetensors'), '--report', path.join(tmp, 'report'), '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j).toMatchObject({ granularity: 'attn-token', steps: 3 });
    for (const k of ['base', 'routed', 'staticDrop']) {
      expect(j.eval[k].perplexity).toBeGreaterThan(1);
      expect(j.eval[k].nextTokenAccuracy).toBeGreaterThanOrEqual(0);
      expect(j.eval[k].prefillTokensPerSecond).toBeGreaterThan(0);
      expect(j.eval[k].decodeTokensPerSecond).toBeGreaterThan(0);
    }
    expect(j.eval.tokens).toBe(300);
    for (const f of ['report.md', 'quality-vs-skip.svg', 'layer-skip.svg']) expect(fs.existsSync(path.join(tmp, 'report', f))).toBe(true);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
