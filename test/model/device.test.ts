/**
 * Model placement: loadModel/randomModel on a device, model.to(device), and the errors
 * a build or machine without CUDA gives. On a GPU machine (backendInfo().cuda) the
 * fixture model's CUDA logits are checked against the CPU ones instead.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ArgumentError, RouterTuningError, Tensor, backendInfo, loadModel, randomModel, syntheticConfig } from '../../lib';

const fixture = path.join(__dirname, '..', 'fixtures', 'models', 'llama');
const cuda = backendInfo().cuda;
const ids = [1, 5, 9, 2, 7, 3, 11, 4];

/** max |a − b| / max |b| */
function relErr(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / Math.max(m, 1e-30);
}

/** The native backend's own message for a CUDA allocation on this build/machine. */
function nativeCudaMessage(): string {
  try {
    Tensor.empty([1], 'float32', 'cuda').dispose();
  } catch (e) {
    return (e as Error).message;
  }
  return '';
}

describe('device placement', () => {
  test('a CPU model reports its device; to("cpu") is a no-op returning the same model', async () => {
    const model = await loadModel(fixture);
    try {
      expect(model.device).toBe('cpu');
      expect(model.weights.embed.device).toBe('cpu');
      const before = await model.logits(ids);
      const embed = model.weights.embed, q0 = model.weights.layers[0].q.weight;
      const routers = model.attachRouters({ granularity: 'attn-token', layers: [0, 1] });
      expect(routers.device).toBe('cpu');
      const w0 = routers.weight(0);
      expect(model.to('cpu')).toBe(model);
      expect(model.weights.embed).toBe(embed);
      expect(model.weights.layers[0].q.weight).toBe(q0);
      expect(routers.weight(0)).toBe(w0);
      expect(embed.disposed).toBe(false);
      expect(await model.logits(ids, { routing: false })).toEqual(before);
    } finally {
      model.dispose();
    }
  });

  test('an unknown device name is rejected with a clear error', async () => {
    await expect(loadModel(fixture, { device: 'tpu' as never })).rejects.toThrow(ArgumentError);
    await expect(loadModel(fixture, { device: 'tpu' as never })).rejects.toThrow(`loadModel: unknown device "tpu", expected 'cpu' or 'cuda'`);
    const cfg = syntheticConfig({ vocab_size: 32, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 64 });
    expect(() => randomModel(cfg, { device: 'gpu' as never })).toThrow(`randomModel: unknown device "gpu", expected 'cpu' or 'cuda'`);
    const model = randomModel(cfg, { seed: 1 });
    try {
      expect(() => model.to('metal' as never)).toThrow(ArgumentError);
      expect(() => model.to('metal' as never)).toThrow(`model.to: unknown device "metal", expected 'cpu' or 'cuda'`);
      expect(model.device).toBe('cpu');
    } finally {
      model.dispose();
    }
  });

  (cuda ? test.skip : test)('without CUDA: loadModel({ device: "cuda" }) says CUDA is unavailable and why', async () => {
    const why = nativeCudaMessage();
    expect(why).not.toBe('');
    let err: unknown;
    try {
      await loadModel(fixture, { device: 'cuda' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RouterTuningError);
    const e = err as RouterTuningError;
    expect(e.code).toBe('RT_ERR_UNAVAILABLE');
    expect(e.message).toMatch(/^loadModel: CUDA is unavailable: /);
    expect(e.message).toContain(why);

    // the same for randomModel and for moving a CPU model; the CPU model stays usable
    const cfg = syntheticConfig({ vocab_size: 32, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 64 });
    expect(() => randomModel(cfg, { device: 'cuda' })).toThrow(/^randomModel: CUDA is unavailable: /);
    const model = randomModel(cfg, { seed: 2 });
    try {
      const before = await model.logits([1, 2, 3]);
      expect(() => model.to('cuda')).toThrow(/^model\.to: CUDA is unavailable: /);
      expect(model.device).toBe('cpu');
      expect(await model.logits([1, 2, 3])).toEqual(before);
    } finally {
      model.dispose();
    }
  });

  (cuda ? test : test.skip)('with CUDA: the fixture model on cuda gives the CPU logits (within 2e-2 relative)', async () => {
    const cpu = await loadModel(fixture);
    const gpu = await loadModel(fixture, { device: 'cuda' });
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-device-'));
    try {
      expect(gpu.device).toBe('cuda');
      expect(gpu.weights.embed.device).toBe('cuda');
      const ref = await cpu.logits(ids);
      expect(relErr(await gpu.logits(ids), ref)).toBeLessThan(2e-2);
      // a batch with padding, and token-level routers placed on the model's device
      const r = gpu.attachRouters({ granularity: 'attn-token', layers: [0, 1] });
      expect(r.device).toBe('cuda');
      expect(r.weight(0).device).toBe('cuda');
      expect(relErr(await gpu.logits(ids), ref)).toBeLessThan(2e-2); // zero routers execute everything
      const file = path.join(tmp, 'routers.safetensors');
      gpu.saveRouters(file);
      const loaded = gpu.loadRouters(file);
      expect(loaded.weight(0).device).toBe('cuda');
      // moving: cpu → cuda → cpu
      expect(cpu.to('cuda')).toBe(cpu);
      expect(cpu.device).toBe('cuda');
      expect(relErr(await cpu.logits(ids), ref)).toBeLessThan(2e-2);
      cpu.to('cpu');
      expect(cpu.weights.embed.device).toBe('cpu');
      expect(relErr(await cpu.logits(ids), ref)).toBeLessThan(1e-5);
    } finally {
      cpu.dispose();
      gpu.dispose();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
