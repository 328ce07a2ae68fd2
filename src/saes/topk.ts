/**
 * TopK SAE (SAELens `topk`) and the machinery the TopK family shares (BatchTopK, Matryoshka):
 * optional rescaling of pre-activations by decoder norms, a selection function, and the AuxK
 * loss over dead latents.
 */
import type { Tensor } from "../gpu/tensor.ts";
import { binary, unary } from "../kernels/elementwise.ts";
import { reduceAll, reduceCols } from "../kernels/reduce.ts";
import { topkPerRow, topkPerRowMasked } from "../kernels/topk.ts";
import type { Architecture, InferenceSae } from "./architecture.ts";
import { copyWeights, encoderDecoderShapes, hostRowNorms } from "./common.ts";
import type { StepConfig, StepOutputs, TrainStep } from "./step.ts";

export interface TopKFamilyConfig extends StepConfig {
  k: number;
  aux_loss_coefficient: number;
  rescale_acts_by_decoder_norm: boolean;
}

/** Hooks a TopK-family architecture supplies to `trainTopKFamily`. */
export interface TopKFamilyHooks {
  /** Feature activations from the (rescaled) pre-activations. */
  select(hiddenPre: Tensor): Tensor;
  /** Extra losses on the selected activations; returns their gradient w.r.t. featureActs. */
  extraLosses?(featureActs: Tensor): Tensor | undefined;
}

/** Forward, MSE, AuxK and backward shared by the TopK family. */
export function trainTopKFamily(
  step: TrainStep,
  cfg: TopKFamilyConfig,
  hooks: TopKFamilyHooks,
): StepOutputs {
  const rescale = cfg.rescale_acts_by_decoder_norm;
  const norms = step.decoderRowNorms;
  const linear = step.encodeLinear(step.params.b_enc);
  const hiddenPre = rescale ? binary("mul", linear, norms, "perCol") : linear;
  const featureActs = hooks.select(hiddenPre);
  const { out: saeOut, decoded } = step.decode(featureActs, rescale);
  const dOut = step.squaredErrorLoss("mse_loss", saeOut, step.x);
  const dHiddenAux = auxKLoss(step, cfg, hiddenPre, saeOut);
  const dExtra = hooks.extraLosses?.(featureActs);

  const dDecoded = step.decoderBackward(decoded, dOut);
  const dActs = rescale ? step.divideByNormsBackward(featureActs, dDecoded) : dDecoded;
  if (dExtra) binary("add", dActs, dExtra, "full", { out: dActs });
  // Gradient reaches only selected, positive latents (zeros elsewhere are constants).
  const dHidden = binary("maskGreater", dActs, featureActs, "full", { alpha: 0 });
  binary("add", dHidden, dHiddenAux, "full", { out: dHidden });
  if (rescale) {
    step.addDecoderNormGrad(reduceCols(binary("mul", dHidden, linear)));
    binary("mul", dHidden, norms, "perCol", { out: dHidden });
  }
  step.encoderBackward(dHidden, "b_enc");
  return { hidden_pre: hiddenPre, feature_acts: featureActs, sae_out: saeOut };
}

/**
 * SAELens TopK auxiliary loss: the top k_aux = d_in//2 raw pre-activations among dead latents
 * (at most n_dead of them) reconstruct the detached residual x − sae_out, with b_dec, scaled by
 * min(n_dead/k_aux, 1)·aux_loss_coefficient. n_dead stays on the GPU (no sync); with no dead
 * latent every term is zero. Returns the gradient w.r.t. hiddenPre.
 */
function auxKLoss(
  step: TrainStep,
  cfg: TopKFamilyConfig,
  hiddenPre: Tensor,
  saeOut: Tensor,
): Tensor {
  const kAux = Math.floor(cfg.d_in / 2);
  const nDead = reduceAll(step.input.deadMask);
  const scale = unary("scaledMin", nDead, { alpha: 1 / kAux, beta: 1 });
  const residual = binary("sub", step.x, saeOut);
  const auxActs = topkPerRowMasked(
    hiddenPre,
    step.input.deadMask,
    Math.min(kAux, cfg.d_sae),
    nDead,
  );
  const rescale = cfg.rescale_acts_by_decoder_norm;
  const { out: recons, decoded } = step.decode(auxActs, rescale);
  const dRecons = step.squaredErrorLoss(
    "auxiliary_reconstruction_loss",
    recons,
    residual,
    cfg.aux_loss_coefficient,
    scale,
  );
  const dDecoded = step.decoderBackward(decoded, dRecons);
  const dAux = rescale ? step.divideByNormsBackward(auxActs, dDecoded) : dDecoded;
  return binary("maskGreater", dAux, unary("abs", auxActs), "full", { alpha: 0 });
}

/** SAELens TopK inference conversion: fold decoder norms into the encoder when rescaling. */
export function foldDecoderNorms(
  cfg: TopKFamilyConfig,
  params: Record<string, Float32Array>,
): InferenceSae["weights"] {
  const weights = copyWeights(params, { ...encoderDecoderShapes(cfg), b_enc: [cfg.d_sae] });
  if (!cfg.rescale_acts_by_decoder_norm) return weights;
  const { d_in: dIn, d_sae: dSae } = cfg;
  const norms = hostRowNorms(params.W_dec, dSae, dIn).map((n) => Math.max(n, 1e-8));
  const f = Math.fround;
  for (let j = 0; j < dSae; j++) {
    weights.b_enc.data[j] = f(weights.b_enc.data[j] * norms[j]);
    for (let i = 0; i < dIn; i++) {
      weights.W_dec.data[j * dIn + i] = f(weights.W_dec.data[j * dIn + i] / norms[j]);
      weights.W_enc.data[i * dSae + j] = f(weights.W_enc.data[i * dSae + j] * norms[j]);
    }
  }
  return weights;
}

export const topk: Architecture<TopKFamilyConfig> = {
  name: "topk",
  paramShapes: (cfg) => ({ ...encoderDecoderShapes(cfg), b_enc: [cfg.d_sae] }),
  coefficients: () => ({}),
  trainForward: (step, cfg) => trainTopKFamily(step, cfg, { select: (h) => topkPerRow(h, cfg.k) }),
  toInference: (cfg, params) => ({
    architecture: "topk",
    weights: foldDecoderNorms(cfg, params),
    config: { k: cfg.k, rescale_acts_by_decoder_norm: cfg.rescale_acts_by_decoder_norm },
  }),
};
