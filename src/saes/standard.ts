/** Standard SAE: ReLU encoder, decoder-norm-weighted Lp sparsity penalty (SAELens `standard`). */
import { binary, unary } from "../kernels/elementwise.ts";
import { rowLpNorms, rowLpNormsBackward } from "../kernels/lp_norm.ts";
import { reduceAll, reduceCols } from "../kernels/reduce.ts";
import { emptyNonzeroBits, latentSums, sparseDecode } from "../kernels/sparse.ts";
import type { Architecture } from "./architecture.ts";
import { copyWeights, encoderDecoderShapes } from "./common.ts";
import type { StepConfig, TrainStep } from "./step.ts";
import type { Tensor } from "../gpu/tensor.ts";

export interface StandardConfig extends StepConfig {
  l1_coefficient: number;
  lp_norm: number;
  l1_warm_up_steps: number;
}

/**
 * The Lp penalty on decoder-norm-weighted activations, elementwise: adds l1_loss and its
 * decoder-norm gradient, returns dL/df ([batch, d_sae]).
 */
function lpPenalty(step: TrainStep, featureActs: Tensor, p: number, scale: number): Tensor {
  const weighted = binary("mul", featureActs, step.decoderRowNorms, "perCol");
  const norms = rowLpNorms(weighted, p);
  step.losses.l1_loss = unary("affine", reduceAll(norms), { alpha: scale, beta: 0 });
  const dWeighted = rowLpNormsBackward(weighted, norms, p, scale);
  step.addDecoderNormGrad(reduceCols(binary("mul", dWeighted, featureActs)));
  return binary("mul", dWeighted, step.decoderRowNorms, "perCol");
}

export const standard: Architecture<StandardConfig> = {
  name: "standard",
  paramShapes: (cfg) => ({ ...encoderDecoderShapes(cfg), b_enc: [cfg.d_sae] }),
  coefficients: (cfg) => ({ l1: { value: cfg.l1_coefficient, warmUpSteps: cfg.l1_warm_up_steps } }),

  trainForward(step, cfg) {
    const { params, batch } = step;
    // Sparse: the encoder GEMM also writes where hidden_pre > 0, i.e. the ReLU's nonzeros.
    const masks = step.useSparse({ reluActivations: true })
      ? emptyNonzeroBits(step.x.gpu, batch, cfg.d_sae)
      : undefined;
    const hiddenPre = step.encodeLinear(params.b_enc, params.W_enc, masks);
    // The sparse step works from the lists, so the dense ReLU (a pass over [batch, d_sae]) runs
    // only where something reads it: the dense step, an Lp penalty with p ≠ 1, logged metrics.
    let featureActs: Tensor | undefined;
    const relu = () => featureActs ??= unary("relu", hiddenPre);
    const acts = masks ? step.compressFeatures(hiddenPre, undefined, masks) : undefined;
    const saeOut = acts
      ? step.decodeOutput(sparseDecode(acts, step.wDecRows))
      : step.decode(relu()).out;
    const dOut = step.squaredErrorLoss("mse_loss", saeOut, step.x);

    // l1_loss = coeff · mean_rows(‖f ⊙ ‖W_dec‖‖_p); its gradient w.r.t. f. With p = 1 and f ≥ 0
    // it is Σ_j ‖W_dec[j]‖ · Σ_b f_bj: the column sums (from the latent lists) give the loss and
    // a gradient of one value per latent for the sparse step to read at its entries.
    const scale = step.input.coefficients.l1 / batch;
    const dL1 = acts && cfg.lp_norm === 1
      ? step.decoderWeightedL1(latentSums(acts), scale)
      : lpPenalty(step, relu(), cfg.lp_norm, scale);

    if (acts) {
      const dBEnc = step.x.gpu.zeros([cfg.d_sae]);
      const dPre = step.decodeOutputBackward(dOut);
      step.sparseBackward(
        acts,
        { dPre: [dPre], widths: [cfg.d_sae], linearPre: hiddenPre, extraGrad: dL1 },
        { dBEnc, first: true, foldDecoderNorms: true },
      );
      step.encoderBiasBackward(dBEnc, "b_enc");
    } else {
      const dActs = step.decoderBackward(relu(), dOut);
      binary("add", dActs, dL1, "full", { out: dActs });
      step.encoderBackward(binary("maskGreater", dActs, hiddenPre, "full", { alpha: 0 }), "b_enc");
    }
    // Made already (dense step), the activations are a plain output, kept with the step's
    // results; else a getter (Gpu.scope leaves getters alone), made in whatever scope reads it.
    if (featureActs) return { hidden_pre: hiddenPre, feature_acts: featureActs, sae_out: saeOut };
    return {
      hidden_pre: hiddenPre,
      get feature_acts() {
        return relu();
      },
      sae_out: saeOut,
    };
  },

  toInference: (cfg, params) => ({
    architecture: "standard",
    weights: copyWeights(params, standard.paramShapes(cfg)),
    config: {},
  }),
};
