import * as path from 'path';
import { normalizeConfig, readConfig, isMoeLayer, SUPPORTED_FAMILIES } from '../../lib/model/config';

const fixtures = path.join(__dirname, '..', 'fixtures', 'models');

describe('config normalisation', () => {
  test.each(SUPPORTED_FAMILIES.map((f) => [f]))('%s fixture normalises', (family) => {
    const cfg = readConfig(path.join(fixtures, family));
    expect(cfg.family).toBe(family);
    expect(cfg.numLayers).toBe(3);
    expect(cfg.numHeads % cfg.numKvHeads).toBe(0);
    expect(cfg.ignoredKeys).toEqual([]);
  });

  test('family specifics', () => {
    const llama = readConfig(path.join(fixtures, 'llama'));
    expect(llama.rope).toEqual({ type: 'llama3', theta: 10000, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 });
    expect(llama.tieWordEmbeddings).toBe(true);
    const mistral = readConfig(path.join(fixtures, 'mistral')); // 4.x keys: rope_theta at the top level
    expect(mistral.slidingWindow).toEqual([8, 8, 8]);
    expect(mistral.rope).toEqual({ type: 'default', theta: 10000 });
    expect(readConfig(path.join(fixtures, 'qwen2')).qkvBias).toBe(true);
    expect(readConfig(path.join(fixtures, 'qwen3'))).toMatchObject({ qkNorm: 'head', headDim: 24 });
    expect(readConfig(path.join(fixtures, 'olmoe'))).toMatchObject({ qkNorm: 'full', moe: { numExperts: 4, topK: 2, normTopkProb: false } });
    expect(readConfig(path.join(fixtures, 'mixtral')).moe).toMatchObject({ normTopkProb: true, expertIntermediateSize: 96 });
    const q2m = readConfig(path.join(fixtures, 'qwen2_moe'));
    expect(q2m.moe).toMatchObject({ sharedExpertIntermediateSize: 80, expertIntermediateSize: 48, normTopkProb: false });
    expect(readConfig(path.join(fixtures, 'qwen3_moe')).moe).toMatchObject({ numExperts: 4, normTopkProb: true });
  });

  const base = { model_type: 'llama', vocab_size: 10, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 2, num_attention_heads: 2 };

  test('rope_scaling (4.x) and rope_parameters (5.x) give the same result', () => {
    const scaling = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
    const a = normalizeConfig({ ...base, rope_theta: 500000, rope_scaling: scaling });
    const b = normalizeConfig({ ...base, rope_parameters: { ...scaling, rope_theta: 500000 } });
    expect(a.rope).toEqual(b.rope);
    expect(a.rope.theta).toBe(500000);
    expect(normalizeConfig({ ...base, rope_scaling: { type: 'linear', factor: 2 } }).rope).toEqual({ type: 'linear', theta: 10000, factor: 2 });
  });

  test('qwen sliding window follows use_sliding_window and layer_types / max_window_layers', () => {
    const q = { ...base, model_type: 'qwen2', num_hidden_layers: 4, sliding_window: 16 };
    expect(normalizeConfig({ ...q, use_sliding_window: false }).slidingWindow).toEqual([null, null, null, null]);
    expect(normalizeConfig({ ...q, use_sliding_window: true, max_window_layers: 2 }).slidingWindow).toEqual([null, null, 16, 16]);
    const types = ['sliding_attention', 'full_attention', 'sliding_attention', 'full_attention'];
    expect(normalizeConfig({ ...q, use_sliding_window: true, layer_types: types }).slidingWindow).toEqual([16, null, 16, null]);
  });

  test('MoE layer placement: decoder_sparse_step and mlp_only_layers', () => {
    const cfg = normalizeConfig({ ...base, model_type: 'qwen3_moe', num_hidden_layers: 4, num_experts: 4, moe_intermediate_size: 8, decoder_sparse_step: 2, mlp_only_layers: [3] });
    expect([0, 1, 2, 3].map((l) => isMoeLayer(cfg, l))).toEqual([false, true, false, false]);
  });

  test('unknown keys are reported as ignored', () => {
    expect(normalizeConfig({ ...base, fancy_new_thing: 3, use_cache: true }).ignoredKeys).toEqual(['fancy_new_thing']);
  });

  test.each([
    [{ ...base, model_type: 'gpt2' }, /model_type "gpt2" is not supported; supported model types: llama, mistral, qwen2, qwen3, mixtral, olmoe, qwen2_moe, qwen3_moe/],
    [{ ...base, model_type: undefined }, /model_type undefined is not supported/],
    [{ ...base, hidden_size: undefined }, /missing required key "hidden_size"/],
    [{ ...base, num_key_value_heads: 3 }, /num_attention_heads \(2\) must be a multiple of num_key_value_heads \(3\)/],
    [{ ...base, hidden_size: 9 }, /hidden_size \(9\) is not divisible by num_attention_heads \(2\)/],
    [{ ...base, vocab_size: 'many' }, /"vocab_size" expected an integer >= 1, received "many"/],
    [{ ...base, hidden_act: 'gelu' }, /hidden_act "gelu" is not supported/],
    [{ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } }, /rope type "yarn" is not supported/],
    [{ ...base, model_type: 'mixtral', num_local_experts: 2, num_experts_per_tok: 3 }, /num_experts_per_tok \(3\) exceeds the number of experts \(2\)/],
    [{ ...base, model_type: 'qwen2_moe', num_experts: 4, moe_intermediate_size: 4 }, /missing required key "shared_expert_intermediate_size"/],
  ])('bad config %# is a clear error', (raw, message) => {
    expect(() => normalizeConfig(raw as Record<string, unknown>)).toThrow(message);
  });

  test('missing config.json names the file', () => {
    expect(() => readConfig('/nonexistent/model')).toThrow(/\/nonexistent\/model\/config.json: cannot read \(ENOENT\)/);
  });
});
