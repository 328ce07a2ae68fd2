/**
 * JumpReLU SAE (SAELens `jumprelu`): f = h·(h > t) with t = exp(log_threshold), trained through
 * rectangle-kernel pseudo-gradients of bandwidth `jumprelu_bandwidth`. Sparsity loss "step"
 * (L0, gradient to the threshold only) or "tanh"; optional pre-activation loss on dead latents.
 */
import type { Tensor } from "../gpu/tensor.ts";
import { unary } from "../kernels/elementwise.ts";
import {
  jumpReluBackward,
  jumpReluForward,
  jumpReluForwardWithSupport,
} from "../kernels/jumprelu.ts";
import {
  compressSelection,
  entryDotsDense,
  sparseDecode,
  type SparseLists,
} from "../kernels/sparse.ts";
import type { Architecture } from "./architecture.ts";
import { copyWeights, encoderDecoderShapes } from "./common.ts";
import type { StepConfig } from "./step.ts";

export interface JumpReluConfig extends StepConfig {
  jumprelu_init_threshold: number;
  jumprelu_bandwidth: number;
  jumprelu_sparsity_loss_mode: "step" | "tanh";
  l0_coefficient: number;
  l0_warm_up_steps: number;
  pre_act_loss_coefficient: number | null;
  jumprelu_tanh_scale: number;
}

const inferenceShapes = (cfg: StepConfig) => ({
  ...encoderDecoderShapes(cfg),
  b_enc: [cfg.d_sae],
});

export const jumprelu: Architecture<JumpReluConfig> = {
  name: "jumprelu",
  paramShapes: (cfg) => ({ ...inferenceShapes(cfg), log_threshold: [cfg.d_sae] }),
  initialParams: (cfg) => ({
    log_threshold: new Float32Array(cfg.d_sae).fill(Math.log(cfg.jumprelu_init_threshold)),
  }),
  coefficients: (cfg) => ({
    l0: { value: cfg.l0_coefficient, warmUpSteps: cfg.l0_warm_up_steps },
  }),

  trainForward(step, cfg) {
    const { params, batch } = step;
    const threshold = unary("exp", params.log_threshold);
    const hiddenPre = step.encodeLinear(params.b_enc);
    const preAct = cfg.pre_act_loss_coefficient;
    // The pre-activation loss has a gradient at every latent below its threshold: dense only.
    const sparse = step.useSparse({ reluActivations: true, possible: preAct === null });
    const forward = sparse
      ? jumpReluForwardWithSupport(hiddenPre, threshold, cfg.jumprelu_bandwidth)
      : { acts: jumpReluForward(hiddenPre, threshold), support: undefined };
    const featureActs = forward.acts;
    let saeOut: Tensor;
    let grad: Tensor;
    let finishEncoder: () => void;
    // The backward walks only these latent lists when set (they cover every nonzero term).
    let supportRows: SparseLists | undefined;
    if (forward.support) {
      // Active latents decode; dL/df is needed there and inside the threshold's window.
      const acts = step.compressFeatures(featureActs);
      saeOut = step.decodeOutput(sparseDecode(acts, step.wDecRows));
      const dPre = step.decodeOutputBackward(step.squaredErrorLoss("mse_loss", saeOut, step.x));
      grad = step.x.gpu.zeros(hiddenPre.shape);
      const widths = [cfg.d_sae];
      const supportLists = compressSelection(forward.support);
      entryDotsDense(supportLists, { wDec: step.wDecRows, dPre: [dPre], widths }, grad);
      supportRows = supportLists.byLatent;
      finishEncoder = () => {
        const dBEnc = step.x.gpu.zeros([cfg.d_sae]);
        // grad now holds dL/dh: the entries' whole gradient, no decoder dot left to add.
        const lists = { dPre: [dPre], widths, linearPre: hiddenPre, extraGrad: grad, dot: false };
        step.sparseBackward(acts, lists, { dBEnc, first: true, foldDecoderNorms: true });
        step.encoderBiasBackward(dBEnc, "b_enc");
      };
    } else {
      saeOut = step.decode(featureActs).out;
      const dOut = step.squaredErrorLoss("mse_loss", saeOut, step.x);
      // dL/df from the reconstruction, turned into dL/dh in place by the fused backward.
      grad = step.decoderBackward(featureActs, dOut);
      finishEncoder = () => step.encoderBackward(grad, "b_enc");
    }
    const { dNorms, l0Loss, preActLoss } = jumpReluBackward(
      hiddenPre,
      threshold,
      step.decoderRowNorms,
      step.input.deadMask,
      grad,
      step.grads.log_threshold,
      {
        bandwidth: cfg.jumprelu_bandwidth,
        mode: cfg.jumprelu_sparsity_loss_mode,
        l0Scale: step.input.coefficients.l0 / batch,
        tanhScale: cfg.jumprelu_tanh_scale,
        preActScale: preAct === null ? null : preAct / batch,
      },
      supportRows,
    );
    step.losses.l0_loss = l0Loss;
    if (preAct !== null) step.losses.pre_act_loss = preActLoss;
    if (cfg.jumprelu_sparsity_loss_mode === "tanh" || preAct !== null) {
      step.addDecoderNormGrad(dNorms);
    }
    finishEncoder();
    const outputs = {
      hidden_pre: hiddenPre,
      feature_acts: featureActs,
      sae_out: saeOut,
      threshold,
    };
    return outputs;
  },

  toInference: (cfg, params) => {
    const weights = copyWeights(params, inferenceShapes(cfg));
    weights.threshold = { data: params.log_threshold.map(Math.exp), shape: [cfg.d_sae] };
    return { architecture: "jumprelu", weights, config: {} };
  },
};
