/**
 * SAELens `evals` per-feature metrics (`get_featurewise_weight_based_metrics` and the density
 * statistics of `get_sparsity_and_variance_metrics`), computed on the host from read-back
 * weights and activations: evaluation is not in the training loop.
 */

/** Encoder column norms, encoder/decoder cosine similarity and encoder bias per latent. */
export function featurewiseWeightMetrics(
  params: Record<string, Float32Array>,
  dIn: number,
  dSae: number,
): {
  encoder_norm: Float32Array;
  encoder_decoder_cosine_sim: Float32Array;
  encoder_bias: Float32Array;
} {
  const encoderNorm = new Float32Array(dSae);
  const cosine = new Float32Array(dSae);
  for (let j = 0; j < dSae; j++) {
    let ee = 0, dd = 0, ed = 0;
    for (let i = 0; i < dIn; i++) {
      const e = params.W_enc[i * dSae + j], d = params.W_dec[j * dIn + i];
      ee += e * e;
      dd += d * d;
      ed += e * d;
    }
    encoderNorm[j] = Math.sqrt(ee);
    cosine[j] = ed / Math.sqrt(ee * dd);
  }
  // Gated SAEs have no b_enc; SAELens reports b_mag for them.
  const bias = params.b_enc ?? params.b_mag ?? new Float32Array(dSae);
  return {
    encoder_norm: encoderNorm,
    encoder_decoder_cosine_sim: cosine,
    encoder_bias: bias.slice(),
  };
}

/**
 * Feature density (fraction of tokens where a latent fires) and the consistent-activation
 * heuristic (firing tokens per prompt that has any; NaN for never-firing latents, as SAELens's
 * 0/0). `featureActs` is [prompts·ctx, d_sae], prompt-major.
 */
export function featureDensityStats(
  featureActs: Float32Array,
  dSae: number,
  ctx: number,
): { feature_density: Float32Array; consistent_activation_heuristic: Float32Array } {
  const tokens = featureActs.length / dSae;
  const firing = new Float64Array(dSae), prompts = new Float64Array(dSae);
  const firedInPrompt = new Uint8Array(dSae);
  for (let t = 0; t < tokens; t++) {
    if (t % ctx === 0) firedInPrompt.fill(0);
    for (let j = 0; j < dSae; j++) {
      if (featureActs[t * dSae + j] > 0) {
        firing[j]++;
        if (!firedInPrompt[j]) {
          firedInPrompt[j] = 1;
          prompts[j]++;
        }
      }
    }
  }
  return {
    feature_density: Float32Array.from(firing, (c) => c / tokens),
    consistent_activation_heuristic: Float32Array.from(firing, (c, j) => c / prompts[j]),
  };
}
