/**
 * BatchTopK SAE (SAELens `batchtopk`): ReLU, then the int(k·B) largest activations over the whole
 * batch; a running threshold (EMA of the smallest kept activation) becomes a JumpReLU threshold
 * at inference.
 */
import type { Tensor } from "../gpu/tensor.ts";
import { updateTopkThreshold } from "../kernels/batchtopk.ts";
import { unary } from "../kernels/elementwise.ts";
import { topkOverBatch } from "../kernels/topk.ts";
import type { Architecture } from "./architecture.ts";
import { encoderDecoderShapes } from "./common.ts";
import {
  foldDecoderNorms,
  type TopKFamilyConfig,
  type TopKFamilyHooks,
  trainTopKFamily,
} from "./topk.ts";
import type { TrainStep } from "./step.ts";

export interface BatchTopKConfig extends TopKFamilyConfig {
  topk_threshold_lr: number;
}

/**
 * Batch-wide selection of int(k·B) activations that also updates the threshold buffer (as
 * SAELens does in every forward).
 */
export function batchTopKSelect(
  step: TrainStep,
  cfg: BatchTopKConfig,
  threshold: Tensor,
): TopKFamilyHooks {
  const count = Math.floor(cfg.k * step.batch);
  return {
    select: (hiddenPre, masks) => {
      const acts = topkOverBatch(unary("relu", hiddenPre), count, masks);
      updateTopkThreshold(acts, threshold, cfg.topk_threshold_lr);
      return acts;
    },
    capacity: count,
  };
}

/** BatchTopK/Matryoshka → JumpReLU: TopK's norm folding plus one shared threshold. */
export function batchTopKToInference(
  cfg: BatchTopKConfig,
  params: Record<string, Float32Array>,
  state: Record<string, number>,
) {
  const weights = foldDecoderNorms(cfg, params);
  weights.threshold = {
    data: new Float32Array(cfg.d_sae).fill(state.topk_threshold),
    shape: [cfg.d_sae],
  };
  return { architecture: "jumprelu" as const, weights, config: {} };
}

export const batchtopk: Architecture<BatchTopKConfig> = {
  name: "batchtopk",
  paramShapes: (cfg) => ({ ...encoderDecoderShapes(cfg), b_enc: [cfg.d_sae] }),
  initialState: () => ({ topk_threshold: 0 }),
  coefficients: () => ({}),
  trainForward: (step, cfg, state) =>
    trainTopKFamily(step, cfg, batchTopKSelect(step, cfg, state.topk_threshold)),
  toInference: batchTopKToInference,
};
