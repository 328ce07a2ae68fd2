/**
 * Inference SAEs on the GPU: the four architectures SAELens saves for inference (BatchTopK and
 * Matryoshka are saved as JumpReLU). Encode and decode match SAELens's inference `SAE` classes.
 */
import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { binary, unary } from "../kernels/elementwise.ts";
import { matmul } from "../kernels/matmul.ts";
import { reduceRows } from "../kernels/reduce.ts";
import { topkPerRow } from "../kernels/topk.ts";
import type { InferenceSae } from "./architecture.ts";
import { normalizeInput, type RunTimeNormalization } from "./normalization.ts";

/** The config fields inference needs besides the weights. */
export interface InferenceOptions {
  apply_b_dec_to_input: boolean;
  /** Run-time normalisation (`constant_norm_rescale`, `layer_norm`); default none. */
  normalize_activations?: string;
}

export class InferenceModel {
  /** Normalisation of the last encoded batch; decode undoes it, as SAELens's SAE does. */
  private lastNormalization?: RunTimeNormalization;

  private constructor(
    readonly sae: InferenceSae,
    readonly weights: Record<string, Tensor>,
    readonly options: InferenceOptions,
  ) {}

  /** Uploads converted weights. */
  static upload(gpu: Gpu, sae: InferenceSae, options: InferenceOptions): InferenceModel {
    const weights: Record<string, Tensor> = {};
    for (const [name, w] of Object.entries(sae.weights)) {
      weights[name] = gpu.upload(w.data, w.shape);
    }
    return new InferenceModel(sae, weights, options);
  }

  private get rescale(): boolean {
    return this.sae.architecture === "topk" &&
      this.sae.config.rescale_acts_by_decoder_norm === true;
  }

  private decoderRowNorms(): Tensor {
    return unary("sqrt", reduceRows(this.weights.W_dec, "sumSquares"));
  }

  /** Feature activations [B, d_sae] for a batch x [B, d_in]. */
  encode(x: Tensor): Tensor {
    const w = this.weights;
    const normalization = normalizeInput(this.options.normalize_activations ?? "none", x);
    for (const t of this.lastNormalization?.factors ?? []) t.dispose();
    for (const t of normalization.factors) x.gpu.keep(t);
    this.lastNormalization = normalization;
    const input = normalization.input;
    const saeIn = this.options.apply_b_dec_to_input
      ? binary("sub", input, w.b_dec, "perCol")
      : input;
    const linear = (weight: Tensor, bias: Tensor) =>
      binary("add", matmul(saeIn, weight), bias, "perCol");
    switch (this.sae.architecture) {
      case "standard":
        return unary("relu", linear(w.W_enc, w.b_enc));
      case "jumprelu": {
        const h = linear(w.W_enc, w.b_enc);
        return binary(
          "maskGreater",
          unary("relu", h),
          binary("sub", h, w.threshold, "perCol"),
          "full",
          { alpha: 0 },
        );
      }
      case "topk": {
        let h = linear(w.W_enc, w.b_enc);
        if (this.rescale) h = binary("mul", h, this.decoderRowNorms(), "perCol");
        return topkPerRow(h, Number(this.sae.config.k));
      }
      case "gated": {
        const gate = linear(w.W_enc, w.b_gate);
        const magWeight = binary("mul", w.W_enc, unary("exp", w.r_mag), "perCol");
        const mag = unary("relu", linear(magWeight, w.b_mag));
        return binary("maskGreater", mag, gate, "full", { alpha: 0 });
      }
    }
  }

  /**
   * Reconstruction [B, d_in] from feature activations. With a run-time normalisation the
   * per-row factors come from the last `encode` (SAELens keeps them on the SAE the same way).
   */
  decode(acts: Tensor): Tensor {
    const factors = this.lastNormalization?.factors ?? [];
    if (factors.length > 0 && factors[0].size !== acts.rows) {
      throw new Error(
        `decode: this SAE normalises activations per row (${this.options.normalize_activations}); ` +
          `decode the same rows that were just encoded`,
      );
    }
    const decoded = this.rescale ? binary("div", acts, this.decoderRowNorms(), "perCol") : acts;
    const out = matmul(decoded, this.weights.W_dec);
    binary("add", out, this.weights.b_dec, "perCol", { out });
    return this.lastNormalization?.denormalize?.(out) ?? out;
  }
}
