/**
 * Matryoshka BatchTopK SAE (SAELens `matryoshka_batchtopk`): BatchTopK plus, for every width but
 * the last, an MSE loss reconstructing x from the first `width` latents of the already-selected
 * activations (with b_dec), so that prefixes of the dictionary work on their own.
 */
import type { Architecture } from "./architecture.ts";
import { type BatchTopKConfig, batchTopKSelect, batchTopKToInference } from "./batchtopk.ts";
import { encoderDecoderShapes } from "./common.ts";
import { trainTopKFamily } from "./topk.ts";

export interface MatryoshkaConfig extends BatchTopKConfig {
  matryoshka_widths: number[];
}

export const matryoshka: Architecture<MatryoshkaConfig> = {
  name: "matryoshka_batchtopk",
  paramShapes: (cfg) => ({ ...encoderDecoderShapes(cfg), b_enc: [cfg.d_sae] }),
  initialState: () => ({ topk_threshold: 0 }),
  coefficients: () => ({}),
  trainForward: (step, cfg, state) =>
    trainTopKFamily(step, cfg, {
      ...batchTopKSelect(step, cfg, state.topk_threshold),
      prefixWidths: cfg.matryoshka_widths.slice(0, -1),
    }),
  toInference: batchTopKToInference,
};
