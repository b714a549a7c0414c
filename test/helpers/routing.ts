/** Shared routing test cases: every granularity, token-level attention in both modes. */
import type { Granularity } from '../../lib/routing/routers';

export const ROUTING_CASES: [Granularity, 'mod' | 'keep-kv'][] = [
  ['attn-seq', 'mod'],
  ['attn-token', 'mod'],
  ['attn-token', 'keep-kv'],
  ['mlp-seq', 'mod'],
  ['mlp-token', 'mod'],
  ['block-seq', 'mod'],
  ['block-token', 'mod'],
  ['moe-token', 'mod'],
  ['expert', 'mod'],
];
