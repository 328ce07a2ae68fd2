/**
 * SAELens 5.11's standard TrainingSAE as an option set on the shared step: ReLU encoder, an Lp
 * penalty on the raw activations (weighted by decoder norms only with
 * `scale_sparsity_penalty_by_decoder_norm`), decoder rows re-normalised to unit norm at the
 * start of every step (`normalize_sae_decoder`), ghost grads for dead latents
 * (`use_ghost_grads`) and the projection of W_dec's gradient off the decoder directions.
 *
 * Gradient projection (`decoder_grad_projection`, only with `normalize_sae_decoder`):
 * - "after_step" (default): what 5.11 does. Its trainer calls
 *   `remove_gradient_parallel_to_decoder_directions()` after `optimizer.step()`, on gradients
 *   that `zero_grad()` discards next, so it changes nothing; reproduced as a no-op.
 * - "before_step": the projection OpenAI's and EleutherAI's sparsify trainers apply, here to
 *   the raw W_dec gradient before clipping and Adam: grad[j] −= (grad[j]·W_dec[j]) W_dec[j],
 *   exact for the unit rows this step just set. (Older sparsify versions clipped first.)
 */
import type { V5SaeConfig } from "../config/sae.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { binary, unary } from "../kernels/elementwise.ts";
import { ghostGradRows } from "../kernels/ghost_grads.ts";
import { rowLpNorms, rowLpNormsBackward } from "../kernels/lp_norm.ts";
import { matmul } from "../kernels/matmul.ts";
import { reduceAll, reduceCols, reduceRows } from "../kernels/reduce.ts";
import type { Architecture } from "./architecture.ts";
import { copyWeights, encoderDecoderShapes, hostRowNorms } from "./common.ts";
import type { StepConfig, TrainStep } from "./step.ts";

/** Where the decoder-gradient projection acts (see the module comment). */
export type DecoderGradProjection = "after_step" | "before_step";

export interface StandardV5Config extends StepConfig {
  l1_coefficient: number;
  lp_norm: number;
  /** L1 warm-up steps (a v5 runner field); 0 when absent. */
  l1_warm_up_steps?: number;
  use_ghost_grads: boolean;
  normalize_sae_decoder: boolean;
  scale_sparsity_penalty_by_decoder_norm: boolean;
  /** Default "after_step" (SAELens 5.11). */
  decoder_grad_projection?: DecoderGradProjection;
  /** Only null is supported ("dense_batch" is refused). */
  mse_loss_normalization?: string | null;
  /** Only 0 is supported (training noise is random in SAELens). */
  noise_scale?: number;
  /** Only "relu" is supported. */
  activation_fn_str?: string;
  /** Only false is supported (no finetuning scaling factor parameter). */
  finetuning_scaling_factor?: boolean;
}

/** Throws on v5 options this implementation does not reproduce. */
function checkSupported(cfg: StandardV5Config): void {
  const refuse = (what: string) => {
    throw new Error(`standard_v5: ${what} is not supported`);
  };
  if ((cfg.activation_fn_str ?? "relu") !== "relu") {
    refuse(`activation_fn_str "${cfg.activation_fn_str}"`);
  }
  if (cfg.mse_loss_normalization != null) {
    refuse(`mse_loss_normalization "${cfg.mse_loss_normalization}"`);
  }
  if ((cfg.noise_scale ?? 0) !== 0) refuse(`noise_scale ${cfg.noise_scale}`);
  if (cfg.finetuning_scaling_factor) refuse("finetuning_scaling_factor");
  if (cfg.normalize_sae_decoder && cfg.scale_sparsity_penalty_by_decoder_norm) {
    refuse(
      "scale_sparsity_penalty_by_decoder_norm with normalize_sae_decoder (SAELens refuses it)",
    );
  }
  const mode = cfg.decoder_grad_projection ?? "after_step";
  if (mode !== "after_step" && mode !== "before_step") {
    refuse(`decoder_grad_projection "${mode}" (use "after_step" or "before_step")`);
  }
}

/** The architecture config from a parsed v5 SAE config plus runner-level options. */
export function standardV5Config(
  sae: V5SaeConfig,
  options: { l1_warm_up_steps?: number; decoder_grad_projection?: DecoderGradProjection } = {},
): StandardV5Config {
  if (sae.architecture !== "standard") {
    throw new Error(`standard_v5: config architecture is "${sae.architecture}", not "standard"`);
  }
  const cfg: StandardV5Config = {
    d_in: sae.d_in,
    d_sae: sae.d_sae,
    apply_b_dec_to_input: sae.apply_b_dec_to_input,
    l1_coefficient: sae.l1_coefficient,
    lp_norm: sae.lp_norm,
    l1_warm_up_steps: options.l1_warm_up_steps ?? 0,
    use_ghost_grads: sae.use_ghost_grads,
    normalize_sae_decoder: sae.normalize_sae_decoder,
    scale_sparsity_penalty_by_decoder_norm: sae.scale_sparsity_penalty_by_decoder_norm,
    decoder_grad_projection: options.decoder_grad_projection ?? "after_step",
    mse_loss_normalization: sae.mse_loss_normalization,
    noise_scale: sae.noise_scale,
    activation_fn_str: sae.activation_fn_str,
    finetuning_scaling_factor: sae.finetuning_scaling_factor,
  };
  checkSupported(cfg);
  return cfg;
}

/**
 * SAELens `set_decoder_norm_to_unit_norm` in place: W_dec[j] /= ‖W_dec[j]‖, using the norms the
 * step computed from the incoming W_dec, then refreshes those norms to describe the new rows.
 */
export function normalizeDecoderRows(step: TrainStep): void {
  const wDec = step.params.W_dec;
  binary("div", wDec, step.decoderRowNorms, "perRow", { out: wDec });
  const sumSquares = reduceRows(wDec, "sumSquares");
  unary("sqrt", sumSquares, { out: step.decoderRowNorms });
  sumSquares.dispose();
}

/**
 * SAELens `remove_gradient_parallel_to_decoder_directions` in place:
 * grad[j] −= (Σ_i grad[j,i]·W_dec[j,i]) · W_dec[j] (a true projection only for unit rows).
 */
export function removeGradientParallelToDecoder(grad: Tensor, wDec: Tensor): void {
  const products = binary("mul", grad, wDec);
  const dots = reduceRows(products);
  const parallel = binary("mul", wDec, dots, "perRow");
  binary("sub", grad, parallel, "full", { out: grad });
  for (const t of [products, dots, parallel]) t.dispose();
}

/**
 * SAELens 5.x ghost-grads loss (`calculate_ghost_grad_loss`), added as `ghost_grad_loss`:
 * dead latents get exp(hidden_pre) activations whose (norm-matched, detached-scale) decoding is
 * fitted to the detached residual, each element's squared error rescaled (detached) to the
 * main per-element MSE; mean over all elements. Alive latents are masked to exactly 0, so the
 * sums equal SAELens's over the dead subset. With no dead latent the loss still evaluates to
 * ~mean per-element MSE and every gradient is 0, as in SAELens. Returns dL/d(hidden_pre).
 */
function ghostGradLoss(step: TrainStep, hiddenPre: Tensor, saeOut: Tensor): Tensor {
  const { params, grads } = step;
  // exp only where dead: select() keeps exp(h) = inf of alive latents out of the product.
  const ghostActs = binary("maskGreater", unary("exp", hiddenPre), step.input.deadMask, "perCol", {
    alpha: 0.5,
  });
  const raw = matmul(ghostActs, params.W_dec);
  const scale = 1 / (step.batch * step.cfg.d_in);
  const { rowLoss, dRaw } = ghostGradRows(raw, saeOut, step.x, scale);
  step.losses.ghost_grad_loss = unary("affine", reduceAll(rowLoss), { alpha: scale, beta: 0 });
  matmul(ghostActs, dRaw, { transA: true, accumulateInto: grads.W_dec });
  const dActs = matmul(dRaw, params.W_dec, { transB: true });
  return binary("mul", dActs, ghostActs, "full", { out: dActs });
}

export const standardV5: Architecture<StandardV5Config> = {
  name: "standard_v5",
  paramShapes: (cfg) => ({ ...encoderDecoderShapes(cfg), b_enc: [cfg.d_sae] }),
  coefficients: (cfg) => ({
    l1: { value: cfg.l1_coefficient, warmUpSteps: cfg.l1_warm_up_steps ?? 0 },
  }),

  trainForward(step, cfg) {
    checkSupported(cfg);
    const { params, batch } = step;
    if (cfg.normalize_sae_decoder) normalizeDecoderRows(step);
    const hiddenPre = step.encodeLinear(params.b_enc);
    const featureActs = unary("relu", hiddenPre);
    const { out: saeOut } = step.decode(featureActs);
    const dOut = step.squaredErrorLoss("mse_loss", saeOut, step.x);

    // l1_loss = mean_rows(coeff · ‖f‖_p), f weighted by ‖W_dec‖ only when asked.
    const coeff = step.input.coefficients.l1;
    const byNorms = cfg.scale_sparsity_penalty_by_decoder_norm;
    const weighted = byNorms
      ? binary("mul", featureActs, step.decoderRowNorms, "perCol")
      : featureActs;
    const norms = rowLpNorms(weighted, cfg.lp_norm);
    step.losses.l1_loss = unary("affine", reduceAll(norms), { alpha: coeff / batch, beta: 0 });
    const dWeighted = rowLpNormsBackward(weighted, norms, cfg.lp_norm, coeff / batch);
    const dHiddenGhost = cfg.use_ghost_grads ? ghostGradLoss(step, hiddenPre, saeOut) : undefined;

    const dActs = step.decoderBackward(featureActs, dOut);
    if (byNorms) {
      // weighted = f·‖W_dec‖: the norms get Σ_b dWeighted·f, the activations dWeighted·‖W_dec‖.
      step.addDecoderNormGrad(reduceCols(binary("mul", dWeighted, featureActs)));
      binary("mul", dWeighted, step.decoderRowNorms, "perCol", { out: dWeighted });
    }
    binary("add", dActs, dWeighted, "full", { out: dActs });
    const dHidden = binary("maskGreater", dActs, hiddenPre, "full", { alpha: 0 });
    if (dHiddenGhost) binary("add", dHidden, dHiddenGhost, "full", { out: dHidden });
    step.encoderBackward(dHidden, "b_enc");

    // finish() adds nothing to W_dec here: with a unit-norm decoder no loss term depends on the
    // row norms (byNorms is refused), so projecting now gives the final projected gradient.
    if (cfg.normalize_sae_decoder && cfg.decoder_grad_projection === "before_step") {
      removeGradientParallelToDecoder(step.grads.W_dec, params.W_dec);
    }
    return { hidden_pre: hiddenPre, feature_acts: featureActs, sae_out: saeOut };
  },

  toInference(cfg, params) {
    const weights = copyWeights(params, standardV5.paramShapes(cfg));
    // 5.11 saves checkpoints (and the final SAE) after set_decoder_norm_to_unit_norm().
    if (cfg.normalize_sae_decoder) {
      const { d_in: dIn, d_sae: dSae } = cfg;
      const norms = hostRowNorms(params.W_dec, dSae, dIn);
      const w = weights.W_dec.data;
      for (let j = 0; j < dSae; j++) {
        for (let i = 0; i < dIn; i++) w[j * dIn + i] = Math.fround(w[j * dIn + i] / norms[j]);
      }
    }
    return { architecture: "standard", weights, config: {} };
  },
};
