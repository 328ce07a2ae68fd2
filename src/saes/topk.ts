/**
 * TopK SAE (SAELens `topk`) and the machinery the TopK family shares (BatchTopK, Matryoshka):
 * optional rescaling of pre-activations by decoder norms, a selection function, and the AuxK
 * loss over dead latents.
 */
import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { binary } from "../kernels/elementwise.ts";
import { reduceCols } from "../kernels/reduce.ts";
import {
  emptyNonzeroBits,
  MAX_TERMS,
  type NonzeroBits,
  sparseDecodePrefixes,
} from "../kernels/sparse.ts";
import { topkPerRow } from "../kernels/topk.ts";
import { type AuxKInputs, denseAuxK, sparseAuxK } from "./auxk.ts";
import type { Architecture, InferenceSae } from "./architecture.ts";
import { copyWeights, encoderDecoderShapes, hostRowNorms } from "./common.ts";
import type { StepConfig, StepOutputs, TrainStep } from "./step.ts";

export interface TopKFamilyConfig extends StepConfig {
  k: number;
  aux_loss_coefficient: number;
  rescale_acts_by_decoder_norm: boolean;
}

/** What a TopK-family architecture supplies to `trainTopKFamily`. */
export interface TopKFamilyHooks {
  /**
   * Feature activations from the (rescaled) pre-activations; with `masks`, also the masks of
   * their nonzeros, which the sparse step compresses from instead of reading them again.
   */
  select(hiddenPre: Tensor, masks?: NonzeroBits): Tensor;
  /** Most nonzeros `select` returns (it keeps exactly k per segment); sizes sparse lists. */
  capacity: number;
  /**
   * Matryoshka: widths w (all but the full one) whose first-w-latent reconstructions add an MSE
   * loss `inner_mse_loss_${w}`.
   */
  prefixWidths?: readonly number[];
}

/** Forward, MSE, AuxK and backward shared by the TopK family, sparse where it fits. */
export function trainTopKFamily(
  step: TrainStep,
  cfg: TopKFamilyConfig,
  hooks: TopKFamilyHooks,
): StepOutputs {
  const norms = cfg.rescale_acts_by_decoder_norm ? step.decoderRowNorms : undefined;
  const linear = step.encodeLinear(step.params.b_enc);
  const hiddenPre = norms ? binary("mul", linear, norms, "perCol") : linear;
  const terms = 1 + (hooks.prefixWidths?.length ?? 0);
  const sparse = step.useSparse({ reluActivations: false, possible: terms <= MAX_TERMS, terms });
  const masks = sparse ? emptyNonzeroBits(step.x.gpu, step.batch, cfg.d_sae) : undefined;
  const featureActs = hooks.select(hiddenPre, masks);
  const forward = sparse ? sparseTopKFamily : denseTopKFamily;
  const saeOut = forward(step, cfg, hooks, { linear, hiddenPre, featureActs, norms, masks });
  return { hidden_pre: hiddenPre, feature_acts: featureActs, sae_out: saeOut };
}

interface Encoded extends AuxKInputs {
  featureActs: Tensor;
  /** The masks of featureActs' nonzeros, made by the selection (sparse step only). */
  masks?: NonzeroBits;
}

/** The dense step: decoding and every gradient as GEMMs over [batch, d_sae]. Returns sae_out. */
function denseTopKFamily(
  step: TrainStep,
  cfg: TopKFamilyConfig,
  hooks: TopKFamilyHooks,
  { linear, hiddenPre, featureActs, norms }: Encoded,
): Tensor {
  const rescale = norms !== undefined;
  const { out: saeOut, decoded } = step.decode(featureActs, rescale);
  const dOut = step.squaredErrorLoss("mse_loss", saeOut, step.x);
  const dHiddenAux = denseAuxK(step, cfg, hiddenPre, saeOut);
  const dExtra = hooks.prefixWidths?.length
    ? densePrefixLosses(step, hooks.prefixWidths, featureActs, rescale)
    : undefined;

  const dDecoded = step.decoderBackward(decoded, dOut);
  const dActs = rescale ? step.divideByNormsBackward(featureActs, dDecoded) : dDecoded;
  if (dExtra) binary("add", dActs, dExtra, "full", { out: dActs });
  // Gradient reaches only selected, positive latents (zeros elsewhere are constants).
  const dHidden = binary("maskGreater", dActs, featureActs, "full", { alpha: 0 });
  binary("add", dHidden, dHiddenAux, "full", { out: dHidden });
  if (norms) {
    step.addDecoderNormGrad(reduceCols(binary("mul", dHidden, linear)));
    binary("mul", dHidden, norms, "perCol", { out: dHidden });
  }
  step.encoderBackward(dHidden, "b_enc");
  return saeOut;
}

/** Matryoshka inner losses on the dense path; returns their gradient w.r.t. featureActs. */
function densePrefixLosses(
  step: TrainStep,
  widths: readonly number[],
  featureActs: Tensor,
  rescale: boolean,
): Tensor {
  const gpu = featureActs.gpu;
  const dActs = gpu.zeros(featureActs.shape);
  for (const width of widths) {
    const mask = prefixMask(gpu, width, step.cfg.d_sae);
    const prefixActs = binary("mul", featureActs, mask, "perCol");
    const { out, decoded } = step.decode(prefixActs, rescale);
    const dOut = step.squaredErrorLoss(`inner_mse_loss_${width}`, out, step.x);
    const dDecoded = step.decoderBackward(decoded, dOut);
    const dPrefix = rescale ? step.divideByNormsBackward(prefixActs, dDecoded) : dDecoded;
    binary("mul", dPrefix, mask, "perCol", { out: dActs, accumulate: true });
  }
  return dActs;
}

/** [d_sae] masks with ones on the first `width` latents, uploaded once per device. */
const prefixMasks = new WeakMap<Gpu, Map<string, Tensor>>();
function prefixMask(gpu: Gpu, width: number, dSae: number): Tensor {
  let masks = prefixMasks.get(gpu);
  if (!masks) prefixMasks.set(gpu, masks = new Map());
  const key = `${width}/${dSae}`;
  let mask = masks.get(key);
  if (!mask) {
    mask = gpu.keep(gpu.upload(Float32Array.from({ length: dSae }, (_, j) => (j < width ? 1 : 0))));
    masks.set(key, mask);
  }
  return mask;
}

/**
 * The sparse step: the selections become row and latent lists; decoding gathers decoder rows
 * and every gradient is computed over the selected entries only. The encoder GEMM is the one
 * dense product left. Returns sae_out.
 */
function sparseTopKFamily(
  step: TrainStep,
  cfg: TopKFamilyConfig,
  hooks: TopKFamilyHooks,
  { linear, hiddenPre, featureActs, norms, masks }: Encoded,
): Tensor {
  const gpu = featureActs.gpu;
  const wDec = step.wDecRows;
  const acts = step.compressFeatures(featureActs, hooks.capacity, masks);
  const prefixWidths = hooks.prefixWidths ?? [];
  // Every decoder term (the full width, then Matryoshka's prefixes) in one walk over the lists.
  const [product, ...prefixProducts] = sparseDecodePrefixes(acts, wDec, {
    norms,
    widths: [cfg.d_sae, ...prefixWidths],
  });
  const saeOut = step.decodeOutput(product);
  const dOut = step.squaredErrorLoss("mse_loss", saeOut, step.x);
  const dBEnc = gpu.zeros([cfg.d_sae]);
  const dInner = prefixWidths.map((width, t) => {
    const out = step.decodeOutput(prefixProducts[t]);
    return step.squaredErrorLoss(`inner_mse_loss_${width}`, out, step.x);
  });

  // Every decoder term's gradient before b_dec, for one pass over the lists. It runs first and
  // stores W_dec's rows and W_enc's columns (no reading them back to add); AuxK adds after. Their
  // elements and b_enc's sum at most two nonzero terms (AuxK's compact and overflow parts never
  // both add), so the order changes no rounding; Matryoshka's b_dec gradient now adds its decoder
  // terms before AuxK's, another order within rounding.
  const dPre = [dOut, ...dInner].map((dTerm) => step.decodeOutputBackward(dTerm));
  const widths = [cfg.d_sae, ...prefixWidths];
  step.sparseBackward(acts, { norms, linearPre: linear, dPre, widths }, { dBEnc, first: true });
  sparseAuxK(step, cfg, { hiddenPre, linear, norms }, saeOut, dBEnc);
  step.encoderBiasBackward(dBEnc, "b_enc");
  return saeOut;
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
  trainForward: (step, cfg) =>
    trainTopKFamily(step, cfg, {
      select: (h, masks) => topkPerRow(h, cfg.k, undefined, masks),
      capacity: step.batch * cfg.k,
    }),
  toInference: (cfg, params) => ({
    architecture: "topk",
    weights: foldDecoderNorms(cfg, params),
    config: { k: cfg.k, rescale_acts_by_decoder_norm: cfg.rescale_acts_by_decoder_norm },
  }),
};
