/**
 * The peer interface of the bench's peers suite (bench/peers.ts): each peer module
 * (bench/peers/<name>.ts) exports
 *   async function run<Name>Peer(setup: PeerSetup, model: PeerModel, step?: PeerRouterStep): Promise<PeerOutcome>
 * and sets itself up into setup.cacheDir, returning { name, skipped } (never throwing) when it cannot.
 */

export interface PeerSetup { cacheDir: string; log: (s: string) => void; }
export interface PeerModel {
  /** HF checkpoint directory of the reference model (config.json + model.safetensors fp32). */
  hfDir: string;
  prefillTokens: number;      // 512
  decodeTokens: number;       // e.g. 32
  threads: number;            // 2
  promptIds: number[];        // the prompt (length prefillTokens), same for everyone
}
export interface PeerRouterStep {
  /** Routers on these layers (token-level MindSkip attention routers: w ∈ R^C on the
   *  layer's input_layernorm output, sigmoid, STE gate; see DESIGN.md §1), the same
   *  initial weights for everyone (a safetensors file with tensors `router.<layer>` [C]). */
  layers: number[]; batch: number; seqLen: number; routersFile: string; batchIds: number[][];
}
export interface PeerResult {
  name: string;                     // 'pytorch' | 'llama.cpp'
  version: string;
  prefillTokensPerSecond?: number;
  decodeTokensPerSecond?: number;
  routerStepSeconds?: number;       // pytorch only
  setupSeconds: number;
  notes?: string[];
}
export type PeerOutcome = PeerResult | { name: string; skipped: string };
// each peer module exports: async function run<Name>Peer(setup: PeerSetup, model: PeerModel, step?: PeerRouterStep): Promise<PeerOutcome>
