/**
 * Gated SAE (SAELens `gated`): a gate path `saeIn·W_enc + b_gate` decides which latents fire, a
 * magnitude path `saeIn·(W_enc·diag(exp(r_mag))) + b_mag` sets their values. The gate is a
 * non-differentiable mask; its parameters are trained only by the L1 and auxiliary losses on
 * `relu(pi_gate)`.
 */
import { binary, unary } from "../kernels/elementwise.ts";
import { reduceAll, reduceCols } from "../kernels/reduce.ts";
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
    const piGate = step.encodeLinear(params.b_gate);
    const magScale = unary("exp", params.r_mag);
    const magWeight = binary("mul", params.W_enc, magScale, "perCol");
    const hiddenPre = step.encodeLinear(params.b_mag, magWeight);
    // f = 1[pi_gate > 0] · relu(h_mag)
    const featureActs = binary("maskGreater", unary("relu", hiddenPre), piGate, "full", {
      alpha: 0,
    });
    const { out: saeOut } = step.decode(featureActs);
    const dOut = step.squaredErrorLoss("mse_loss", saeOut, step.x);

    // Gate-path losses on relu(pi_gate); the aux input x − b_dec·apply_b_dec_to_input is saeIn.
    const coeff = step.input.coefficients.l1;
    const gateActs = unary("relu", piGate);
    const weighted = reduceAll(binary("mul", gateActs, step.decoderRowNorms, "perCol"));
    step.losses.l1_loss = unary("affine", weighted, { alpha: coeff / batch, beta: 0 });
    const { out: auxOut } = step.decode(gateActs);
    const dAux = step.squaredErrorLoss("auxiliary_reconstruction_loss", auxOut, step.x);

    // Magnitude path: d h_mag = dF where f > 0; its weight gradient splits into W_enc and r_mag.
    const dActs = step.decoderBackward(featureActs, dOut);
    const dMag = binary("maskGreater", dActs, featureActs, "full", { alpha: 0 });
    const dMagWeight = magWeight.gpu.zeros(magWeight.shape);
    step.encoderBackward(dMag, "b_mag", magWeight, dMagWeight);
    binary("add", grads.W_enc, binary("mul", dMagWeight, magScale, "perCol"), "full", {
      out: grads.W_enc,
    });
    const dR = reduceCols(binary("mul", dMagWeight, magWeight));
    binary("add", grads.r_mag, dR, "full", { out: grads.r_mag });

    // Gate path: L1 (weighted by ‖W_dec‖) plus the auxiliary reconstruction.
    const dGate = step.decoderBackward(gateActs, dAux);
    binary("axpby", dGate, step.decoderRowNorms, "perCol", {
      alpha: 1,
      beta: coeff / batch,
      out: dGate,
    });
    step.addDecoderNormGrad(
      unary("affine", reduceCols(gateActs), { alpha: coeff / batch, beta: 0 }),
    );
    step.encoderBackward(binary("maskGreater", dGate, piGate, "full", { alpha: 0 }), "b_gate");
    return { hidden_pre: hiddenPre, feature_acts: featureActs, sae_out: saeOut };
  },

  toInference: (cfg, params) => ({
    architecture: "gated",
    weights: copyWeights(params, gated.paramShapes(cfg)),
    config: {},
  }),
};
