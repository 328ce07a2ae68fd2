/**
 * Per-latent bookkeeping of SAELens's `SAETrainer` and the row statistics of its training log
 * (`kernels/feature_stats.wgsl`). Everything stays on the GPU.
 */
import { bind, chunks } from "../gpu/chunks.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { grid1d } from "./elementwise.ts";
import { groups, params, wgsl } from "./source.ts";

/** The trainer's per-latent state, one value per latent ([d_sae] f32 tensors). */
export interface FeatureCounters {
  /** Rows with a non-zero activation since the last reset (SAELens `act_freq_scores`). */
  actFreqScores: Tensor;
  /** Steps since the latent last fired (SAELens `n_forward_passes_since_fired`). */
  passesSinceFired: Tensor;
  /** 1 where passesSinceFired > dead_feature_window (SAELens `dead_neurons`), else 0. */
  deadMask: Tensor;
}

/**
 * One step of bookkeeping from the step's feature activations [B, d_sae] (`featureActs`), or from
 * the offsets of their latent lists ([d_sae + 1] u32, from a sparse step: `latentOffsets`):
 * counts firing rows into actFreqScores (zeroed first when `reset`), resets or increments
 * passesSinceFired and recomputes deadMask. One dispatch.
 */
export function updateFeatureCounters(
  source: { featureActs: Tensor } | { latentOffsets: Tensor },
  counters: FeatureCounters,
  deadFeatureWindow: number,
  reset: boolean,
): void {
  const { actFreqScores, passesSinceFired, deadMask } = counters;
  const gpu = deadMask.gpu;
  if ("latentOffsets" in source) {
    const dSae = deadMask.size;
    gpu.dispatch(
      gpu.kernel("feature_stats", wgsl("feature_stats"), "update_from_lists"),
      // Bindings 2-4 are the counters, 10 the offsets (feature_stats.wgsl).
      [undefined, actFreqScores, passesSinceFired, deadMask, ...new Array(5), source.latentOffsets],
      [groups(dSae, 256)],
      params([0, dSae, 0, reset ? 1 : 0, 0, 0, 0, 0], [deadFeatureWindow, 0, 0, 0]),
    );
    return;
  }
  const { featureActs } = source;
  const kernel = gpu.kernel("feature_stats", wgsl("feature_stats"), "update");
  // Big activations go in chunks of whole rows; chunks after the first continue the counts.
  for (const c of chunks(gpu, featureActs.rows, featureActs.cols)) {
    const flag = (reset ? 1 : 0) | (c.first > 0 ? 2 : 0);
    gpu.dispatch(
      kernel,
      [bind(featureActs, c), actFreqScores, passesSinceFired, deadMask],
      [groups(featureActs.cols, 256)],
      params([c.count, featureActs.cols, 0, flag, 0, c.shift, 0, 0], [deadFeatureWindow, 0, 0, 0]),
    );
  }
}

/**
 * Per-row [Σ_d (saeOut − x)², Σ_d (x − xMean)², #(featureActs ≠ 0)] → [B, 3].
 * `xMean` is the column mean of x ([d_in]).
 */
export function rowStatistics(
  x: Tensor,
  saeOut: Tensor,
  xMean: Tensor,
  featureActs: Tensor,
): Tensor {
  const gpu = x.gpu;
  const stats = gpu.empty([x.rows, 3]);
  const kernel = gpu.kernel("feature_stats", wgsl("feature_stats"), "row_stats");
  // Big activations go in chunks of whole rows.
  for (const c of chunks(gpu, x.rows, featureActs.cols)) {
    gpu.dispatch(
      kernel,
      [bind(featureActs, c), undefined, undefined, undefined, x, saeOut, xMean, stats],
      grid1d(c.count * 256),
      params([c.count, featureActs.cols, x.cols, 0, c.first, c.shift, 0, 0], [0, 0, 0, 0]),
    );
  }
  return stats;
}

/** Number of values `summarizeStatistics` writes. */
export const SUMMARY_SIZE = 6;

/**
 * Reduces row statistics and the counters into `out[offset .. offset+6]`:
 * [l0, explained_variance, explained_variance_legacy, explained_variance_legacy_std,
 *  dead_features, mean_passes_since_fired] (formulas in `src/train/metrics.ts`).
 */
export function summarizeStatistics(
  stats: Tensor,
  counters: Pick<FeatureCounters, "passesSinceFired" | "deadMask">,
  out: Tensor,
  offset: number,
): void {
  const gpu = stats.gpu;
  const kernel = gpu.kernel("feature_stats", wgsl("feature_stats"), "summarize");
  gpu.dispatch(
    kernel,
    [
      undefined,
      undefined,
      counters.passesSinceFired,
      counters.deadMask,
      undefined,
      undefined,
      undefined,
      stats,
      out,
    ],
    [1],
    params([stats.rows, counters.deadMask.size, 0, offset, 0, 0, 0, 0], [0, 0, 0, 0]),
  );
}
