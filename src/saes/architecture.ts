/** What an architecture adds to the shared training step (SAELens's `registry.py` shape). */
import type { Tensor } from "../gpu/tensor.ts";
import type { StepConfig, StepOutputs, TrainStep } from "./step.ts";

/** A sparsity coefficient and its warm-up length (SAELens `get_coefficients`). */
export interface Coefficient {
  value: number;
  warmUpSteps: number;
}

/** Host-side weights of an SAE converted for inference, in SAELens's saved layout. */
export interface InferenceSae {
  architecture: "standard" | "topk" | "jumprelu" | "gated";
  /** SAELens state-dict names → values (f32), with their shapes. */
  weights: Record<string, { data: Float32Array; shape: number[] }>;
  /** Inference config fields that change the math (k, rescale_acts_by_decoder_norm, ...). */
  config: Record<string, unknown>;
}

export interface Architecture<C extends StepConfig = StepConfig> {
  readonly name: string;
  /** Trainable parameters and their shapes, SAELens names. */
  paramShapes(cfg: C): Record<string, number[]>;
  /** Parameters that do not start at zero besides W_enc/W_dec (JumpReLU's log_threshold). */
  initialParams?(cfg: C): Record<string, Float32Array>;
  /** Non-trained state buffers (BatchTopK's `topk_threshold`) with their initial values. */
  initialState?(cfg: C): Record<string, number>;
  /** Sparsity coefficients by SAELens name. */
  coefficients(cfg: C): Record<string, Coefficient>;
  /**
   * Encode, extra losses and their gradients, on top of the shared step. Returns the outputs
   * SAELens reports; losses and grads are left in `step`.
   */
  trainForward(step: TrainStep, cfg: C, state: Record<string, Tensor>): StepOutputs;
  /** SAELens `process_state_dict_for_saving_inference` on host copies of the parameters. */
  toInference(
    cfg: C,
    params: Record<string, Float32Array>,
    state: Record<string, number>,
  ): InferenceSae;
}
