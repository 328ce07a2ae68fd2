/**
 * SAELens's `expected_average_only_in` normalisation, which lives in the trainer: every batch is
 * multiplied by one constant s = √d_in / E[‖x‖₂] estimated before training, and at save time s
 * is folded into the weights so the saved SAE works on raw activations.
 */

/** s = √d_in / mean over batches of the mean row norm (SAELens estimates over 1000 batches). */
export function estimateScalingFactor(batches: Iterable<Float32Array>, dIn: number): number {
  let sum = 0, count = 0;
  for (const batch of batches) {
    const rows = batch.length / dIn;
    let batchSum = 0;
    for (let r = 0; r < rows; r++) {
      let sq = 0;
      for (let i = 0; i < dIn; i++) sq += batch[r * dIn + i] ** 2;
      batchSum += Math.fround(Math.sqrt(sq));
    }
    sum += Math.fround(batchSum / rows);
    count++;
  }
  if (count === 0 || sum === 0) {
    throw new Error(
      "cannot estimate the activation scaling factor from zero batches or all-zero activations",
    );
  }
  return Math.sqrt(dIn) / (sum / count);
}

/** Multiplies a batch by s in place (float32, as torch multiplies by a Python scalar). */
export function scaleBatch(batch: Float32Array, s: number): Float32Array {
  for (let i = 0; i < batch.length; i++) batch[i] = Math.fround(batch[i] * s);
  return batch;
}

/**
 * SAELens `fold_activation_norm_scaling_factor`: W_enc·s, W_dec/s, b_dec/s; everything else
 * (b_enc, thresholds, BatchTopK's topk_threshold: a SAELens quirk kept for parity) unchanged.
 */
export function foldScalingFactor(
  params: Record<string, Float32Array>,
  s: number,
): Record<string, Float32Array> {
  const folded = { ...params };
  folded.W_enc = params.W_enc.map((v) => Math.fround(v * s));
  folded.W_dec = params.W_dec.map((v) => Math.fround(v / s));
  folded.b_dec = params.b_dec.map((v) => Math.fround(v / s));
  return folded;
}
