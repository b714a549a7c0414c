import { CausalLM } from '../../lib/model/causal_lm';
import { Example } from '../../lib/train/data';
import { Rng } from '../../lib/util/rng';

/** Sequences sampled from the model itself (temperature 1): the model is their true generator. */
export function sampleFrom(model: CausalLM, n: number, len: number, seed: number): Example[] {
  const rng = new Rng(seed);
  const V = model.config.vocabSize;
  const out: Example[] = [];
  for (let i = 0; i < n; i++) {
    const ids = new Int32Array(len + 1);
    ids[0] = 1;
    const cache = model.newCache(1, len + 1);
    let logits = model.forward(ids.subarray(0, 1), null, 1, 1, cache);
    for (let t = 1; t <= len; t++) {
      const row = logits.toFloat32Array();
      logits.dispose();
      let m = -Infinity;
      for (const v of row) m = Math.max(m, v);
      let sum = 0;
      const p = row.map((v) => {
        const e = Math.exp(v - m);
        sum += e;
        return e;
      });
      let u = rng.uniform() * sum, tok = 0;
      while (tok < V - 1 && u > p[tok]) u -= p[tok++];
      ids[t] = tok;
      if (t < len) logits = model.forward(Int32Array.of(tok), null, 1, 1, cache);
    }
    cache.dispose();
    out.push({ ids: ids.slice(0, len), targets: ids.slice(1, len + 1) });
  }
  return out;
}

