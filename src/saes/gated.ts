/**
 * Gated SAE (SAELens `gated`): a gate path `saeIn·W_enc + b_gate` decides which latents fire, a
 * magnitude path `saeIn·(W_enc·diag(exp(r_mag))) + b_mag` sets their values. The gate is a
 * non-differentiable mask; its parameters are trained only by the L1 and auxiliary losses on
 * `relu(pi_gate)`.
 */
import type { Tensor } from "../gpu/tensor.ts";
import { binary, unary } from "../kernels/elementwise.ts";
import { matmul } from "../kernels/matmul.ts";
import { reduceCols } from "../kernels/reduce.ts";
import { compressSelection, latentSums, type SparseActs, sparseDecode } from "../kernels/sparse.ts";
import type { Architecture } from "./architecture.ts";
import { copyWeights, encoderDecoderShapes } from "./common.ts";
import type { StepConfig } from "./step.ts";

export interface GatedConfig extends StepConfig {
  l1_coefficient: number;
  l1_warm_up_steps: number;
}

export const gated: Architecture<GatedConfig> = {
  name: "gated",
  paramShapes: (cfg) => ({
    ...encoderDecoderShapes(cfg),
    b_gate: [cfg.d_sae],
    b_mag: [cfg.d_sae],
    r_mag: [cfg.d_sae],
  }),
  coefficients: (cfg) => ({ l1: { value: cfg.l1_coefficient, warmUpSteps: cfg.l1_warm_up_steps } }),

  trainForward(step, cfg) {
    if (
      cfg.normalize_activations === "constant_norm_rescale" ||
      cfg.normalize_activations === "layer_norm"
    ) {
      // SAELens computes the gated aux losses from the un-normalised input; not reproduced yet.
      throw new Error(
        `gated with normalize_activations "${cfg.normalize_activations}" is not supported; use "none" or "expected_average_only_in"`,
      );
    }
    const { params, grads, batch } = step;
    // One encoder GEMM serves both paths: saeIn·(W_enc·diag(s)) = (saeIn·W_enc)·diag(s), so the
    // magnitude pre-activation scales the gate's product per column instead of running a second
    // GEMM over exp(r_mag)-scaled weights (SAELens's order; the two differ only in rounding).
    const linear = matmul(step.saeIn, params.W_enc);
    const piGate = binary("add", linear, params.b_gate, "perCol");
    const magScale = unary("exp", params.r_mag);
    const hiddenPre = binary("mul", linear, magScale, "perCol", { out: linear });
    binary("add", hiddenPre, params.b_mag, "perCol", { out: hiddenPre });
    const magWeight = binary("mul", params.W_enc, magScale, "perCol");
    // f = 1[pi_gate > 0] · relu(h_mag)
    const featureActs = binary("reluMaskGreater", hiddenPre, piGate, "full", { alpha: 0 });
    const gateActs = unary("relu", piGate);
    // Sparse: both paths live on the gate-active latents; lists hold the whole batch (exact).
    const lists = step.useSparse({ reluActivations: true })
      ? {
        acts: step.compressFeatures(featureActs),
        gate: compressSelection(gateActs),
      }
      : undefined;
    const decode = (acts: Tensor, compressed?: SparseActs) =>
      compressed
        ? step.decodeOutput(sparseDecode(compressed, step.wDecRows))
        : step.decode(acts).out;
    const saeOut = decode(featureActs, lists?.acts);
    const dOut = step.squaredErrorLoss("mse_loss", saeOut, step.x);

    // Gate-path losses on relu(pi_gate); the aux input x − b_dec·apply_b_dec_to_input is saeIn.
    // L1 = coeff/batch · Σ_b,j gate_bj·‖W_dec[j]‖: from the gate's column sums (the lists when
    // sparse); its gradient is coeff/batch · ‖W_dec[j]‖ at every gate-active latent.
    const gateColSums = lists ? latentSums(lists.gate) : reduceCols(gateActs);
    const dL1 = step.decoderWeightedL1(gateColSums, step.input.coefficients.l1 / batch);
    const auxOut = decode(gateActs, lists?.gate);
    const dAux = step.squaredErrorLoss("auxiliary_reconstruction_loss", auxOut, step.x);

    // Magnitude path: d h_mag = dF where f > 0; its weight gradient splits into W_enc and r_mag.
    const dMagWeight = magWeight.gpu.zeros(magWeight.shape);
    if (lists) {
      const dBMag = step.x.gpu.zeros([cfg.d_sae]);
      const dPre = step.decodeOutputBackward(dOut);
      step.sparseBackward(
        lists.acts,
        { dPre: [dPre], widths: [cfg.d_sae], linearPre: hiddenPre },
        { dBEnc: dBMag, dWEnc: dMagWeight, first: true },
      );
      step.encoderBiasBackward(dBMag, "b_mag", magWeight);
    } else {
      const dActs = step.decoderBackward(featureActs, dOut);
      const dMag = binary("maskGreater", dActs, featureActs, "full", { alpha: 0 });
      step.encoderBackward(dMag, "b_mag", magWeight, dMagWeight);
    }
    binary("mul", dMagWeight, magScale, "perCol", { out: grads.W_enc, accumulate: true });
    const dR = reduceCols(binary("mul", dMagWeight, magWeight));
    binary("add", grads.r_mag, dR, "full", { out: grads.r_mag });

    // Gate path: L1 (weighted by ‖W_dec‖) plus the auxiliary reconstruction.
    if (lists) {
      const dBGate = step.x.gpu.zeros([cfg.d_sae]);
      const dPre = step.decodeOutputBackward(dAux);
      const inputs = { dPre: [dPre], widths: [cfg.d_sae], linearPre: piGate, extraGrad: dL1 };
      step.sparseBackward(lists.gate, inputs, { dBEnc: dBGate });
      step.encoderBiasBackward(dBGate, "b_gate");
    } else {
      const dGate = step.decoderBackward(gateActs, dAux);
      binary("add", dGate, dL1, "perCol", { out: dGate });
      step.encoderBackward(binary("maskGreater", dGate, piGate, "full", { alpha: 0 }), "b_gate");
    }
    return { hidden_pre: hiddenPre, feature_acts: featureActs, sae_out: saeOut };
  },

  toInference: (cfg, params) => ({
    architecture: "gated",
    weights: copyWeights(params, gated.paramShapes(cfg)),
    config: {},
  }),
};
