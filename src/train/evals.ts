/**
 * SAELens `evals` metrics (`get_sparsity_and_variance_metrics` with l2-norm, sparsity, variance
 * and feature-density statistics; `get_featurewise_weight_based_metrics`; KL/CE not included),
 * plus ground-truth dictionary recovery for synthetic data. Computed on the host from read-back
 * weights and activations: evaluation is not in the training loop.
 */
import type { InferenceModel } from "../saes/inference.ts";

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

/** One eval batch: inputs, reconstructions and feature activations (row-major, flat). */
export interface EvalBatch {
  x: Float32Array;
  saeOut: Float32Array;
  featureActs: Float32Array;
  rows: number;
}

export interface SparsityAndVariance {
  /** `expected.final_eval` names (`reconstruction_quality.*`, `shrinkage.*`, ...). */
  scalars: Record<string, number>;
  /** `eval.feature_density`: fraction of tokens with act > 0. */
  featureDensity: Float64Array;
  /** `eval.consistent_activation_heuristic`: firing tokens / prompts with a firing token. */
  consistentActivationHeuristic: Float64Array;
}

const mean = (v: readonly number[]) => v.reduce((a, b) => a + b, 0) / v.length;

/**
 * SAELens `get_sparsity_and_variance_metrics`: per-token values averaged over every token of
 * every batch, except `relative_reconstruction_bias` (one value per batch) and the running
 * `explained_variance`, whose total variance is mean_t(Σ_d x²) − (mean_{t,d} x²)² (sic).
 * `mse` divides each token's SSE by the batch's token count. Prompts are `promptLength` rows.
 */
export function sparsityAndVarianceMetrics(
  batches: readonly EvalBatch[],
  dIn: number,
  dSae: number,
  promptLength: number,
): SparsityAndVariance {
  const perToken: Record<string, number[]> = {
    "shrinkage.l2_norm_in": [],
    "shrinkage.l2_norm_out": [],
    "shrinkage.l2_ratio": [],
    "sparsity.l0": [],
    "sparsity.l1": [],
    "reconstruction_quality.mse": [],
    "reconstruction_quality.explained_variance_legacy": [],
    "reconstruction_quality.cossim": [],
  };
  const bias: number[] = [];
  const firing = new Float64Array(dSae);
  const firingPrompts = new Float64Array(dSae);
  let tokens = 0, sse = 0, sumSquares = 0;
  for (const b of batches) {
    const xMean = new Float64Array(dIn);
    for (let r = 0; r < b.rows; r++) for (let d = 0; d < dIn; d++) xMean[d] += b.x[r * dIn + d];
    xMean.forEach((v, d) => (xMean[d] = v / b.rows));
    let hatSquares = 0, dot = 0;
    for (let r = 0; r < b.rows; r++) {
      let nIn = 0, nOut = 0, rowDot = 0, rowSse = 0, tv = 0;
      for (let d = 0; d < dIn; d++) {
        const x = b.x[r * dIn + d], y = b.saeOut[r * dIn + d];
        nIn += x * x;
        nOut += y * y;
        rowDot += x * y;
        rowSse += (x - y) ** 2;
        tv += (x - xMean[d]) ** 2;
      }
      let l0 = 0, l1 = 0;
      for (let j = 0; j < dSae; j++) {
        const a = b.featureActs[r * dSae + j];
        l1 += a;
        if (a > 0) {
          l0++;
          firing[j]++;
        }
      }
      const l2In = Math.sqrt(nIn), l2Out = Math.sqrt(nOut);
      perToken["shrinkage.l2_norm_in"].push(l2In);
      perToken["shrinkage.l2_norm_out"].push(l2Out);
      perToken["shrinkage.l2_ratio"].push(l2Out / (Math.abs(l2In) < 1e-4 ? 1 : l2In));
      perToken["sparsity.l0"].push(l0);
      perToken["sparsity.l1"].push(l1);
      perToken["reconstruction_quality.mse"].push(rowSse / b.rows);
      perToken["reconstruction_quality.explained_variance_legacy"].push(1 - rowSse / tv);
      perToken["reconstruction_quality.cossim"].push(rowDot / (l2In * l2Out));
      hatSquares += nOut;
      dot += rowDot;
      sse += rowSse;
      sumSquares += nIn;
    }
    bias.push(hatSquares / b.rows / (dot / b.rows));
    for (let p = 0; p < b.rows / promptLength; p++) {
      for (let j = 0; j < dSae; j++) {
        let fired = false;
        for (let t = 0; t < promptLength && !fired; t++) {
          fired = b.featureActs[(p * promptLength + t) * dSae + j] > 0;
        }
        if (fired) firingPrompts[j]++;
      }
    }
    tokens += b.rows;
  }
  const scalars: Record<string, number> = {};
  for (const [name, values] of Object.entries(perToken)) scalars[name] = mean(values);
  scalars["shrinkage.relative_reconstruction_bias"] = mean(bias);
  const totalVariance = sumSquares / tokens - (sumSquares / (tokens * dIn)) ** 2;
  scalars["reconstruction_quality.explained_variance"] = 1 - sse / tokens / totalVariance;
  scalars["token_stats.total_tokens_eval_sparsity_variance"] = tokens;
  // KL/CE evals are off in these runs, so no token is used for reconstruction evals.
  scalars["token_stats.total_tokens_eval_reconstruction"] = 0;
  return {
    scalars,
    featureDensity: firing.map((n) => n / tokens),
    // 0/0 = NaN for latents that never fired, as in SAELens.
    consistentActivationHeuristic: firing.map((n, j) => n / firingPrompts[j]),
  };
}

/** Mean over true features of the best cosine with any decoder row (1 = all recovered). */
export function dictionaryRecovery(
  trueFeatures: ArrayLike<number>,
  wDec: Float32Array,
  dIn: number,
): number {
  const nTrue = trueFeatures.length / dIn, dSae = wDec.length / dIn;
  const rowNorm = (m: ArrayLike<number>, r: number) => {
    let s = 0;
    for (let i = 0; i < dIn; i++) s += m[r * dIn + i] ** 2;
    return Math.sqrt(s);
  };
  const decoderNorms = Float64Array.from({ length: dSae }, (_, j) => rowNorm(wDec, j));
  let total = 0;
  for (let t = 0; t < nTrue; t++) {
    const trueNorm = rowNorm(trueFeatures, t);
    let best = -Infinity;
    for (let j = 0; j < dSae; j++) {
      let dot = 0;
      for (let i = 0; i < dIn; i++) dot += trueFeatures[t * dIn + i] * wDec[j * dIn + i];
      best = Math.max(best, dot / (trueNorm * decoderNorms[j]));
    }
    total += best;
  }
  return total / nTrue;
}

/**
 * sae_lens.evals-style scalar metrics of an inference SAE on `batches` (each [rows, d_in], one
 * prompt per batch), plus the dead percentage of latents that never fired on them.
 */
export async function evaluate(
  model: InferenceModel,
  batches: readonly Float32Array[],
  dIn: number,
  dSae: number,
): Promise<Record<string, number>> {
  const gpu = model.weights.W_dec.gpu;
  const evalBatches: EvalBatch[] = [];
  for (const x of batches) {
    const rows = x.length / dIn;
    const [featureActs, saeOut] = await gpu.readMany(gpu.scope(() => {
      const acts = model.encode(gpu.upload(x, [rows, dIn]));
      return [acts, model.decode(acts)];
    }));
    evalBatches.push({ x, saeOut, featureActs, rows });
  }
  const metrics = sparsityAndVarianceMetrics(evalBatches, dIn, dSae, evalBatches[0].rows);
  const neverFired = metrics.featureDensity.filter((d) => d === 0).length;
  return { ...metrics.scalars, "sparsity.never_fired_pct": (100 * neverFired) / dSae };
}
