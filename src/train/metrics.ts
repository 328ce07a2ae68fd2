/**
 * The training-log values of SAELens 6.18 `SAETrainer._build_train_step_log_dict`, computed on
 * the GPU into a small tensor so logging costs one readback per read, not per value.
 *
 * Formulas (x = the batch the SAE saw, B rows; sse_r = Σ_d (sae_out − x)²_r;
 * tv_r = Σ_d (x − mean_rows(x))²_r):
 * - `explained_variance` (the trainer's, `metrics/explained_variance`):
 *   1 − mean_r(sse_r) / mean_r(tv_r).
 * - `explained_variance_legacy` (`metrics/explained_variance_legacy`): mean_r(1 − sse_r/tv_r),
 *   and `explained_variance_legacy_std` its unbiased (B − 1) standard deviation.
 *   Neither is `sae_lens.evals`'s explained variance, whose total variance is
 *   mean_t(Σ_d x²) − (mean_{t,d} x²)² (see `src/train/evals.ts`).
 * - `l0` (`metrics/l0`): mean_r #(feature_acts_r ≠ 0).
 * - `dead_features` (`sparsity/dead_features`): #(n_forward_passes_since_fired > window) after
 *   this step's bookkeeping; `mean_passes_since_fired` the mean of those counters.
 * - `dead_features_used` (not logged by SAELens): the dead latents fed to this step's forward.
 * - `grad_norm`: the pre-clip global norm `clip_grad_norm_` returns (not logged by SAELens).
 * - `lr` and `coefficients` are the values in effect *during* the step. (SAELens logs
 *   `details/current_learning_rate` and `details/<name>_coefficient` after the schedulers step,
 *   i.e. the next step's values.)
 * @module
 */
import type { Tensor } from "../gpu/tensor.ts";
import { unary } from "../kernels/elementwise.ts";
import {
  type FeatureCounters,
  rowStatistics,
  summarizeStatistics,
  SUMMARY_SIZE,
} from "../kernels/feature_stats.ts";
import { reduceCols } from "../kernels/reduce.ts";

/** One logged training step, under SAELens's log names. */
export interface TrainStepMetrics {
  /** 0-based index of the step. */
  step: number;
  /** Rows trained on including this step (`details/n_training_samples`). */
  n_training_samples: number;
  /** Learning rate used by this step. */
  lr: number;
  /** Sparsity coefficients used by this step, by SAELens name. */
  coefficients: Record<string, number>;
  /** Total loss (`losses/overall_loss`). */
  overall_loss: number;
  /** Each loss term (`losses/<name>`), raw (not divided by its coefficient). */
  losses: Record<string, number>;
  l0: number;
  explained_variance: number;
  explained_variance_legacy: number;
  explained_variance_legacy_std: number;
  dead_features: number;
  dead_features_used: number;
  mean_passes_since_fired: number;
  grad_norm: number;
  /** State buffers after the step (`metrics/topk_threshold` for the BatchTopK family). */
  state: Record<string, number>;
}

/** What `recordLogStatistics` reads. */
export interface LogStatisticsInput {
  /** The batch as the SAE saw it [B, d_in]. */
  x: Tensor;
  saeOut: Tensor;
  featureActs: Tensor;
  counters: Pick<FeatureCounters, "passesSinceFired" | "deadMask">;
}

/** Values `recordLogStatistics` writes, in order. */
export const LOG_STATISTICS = [
  "l0",
  "explained_variance",
  "explained_variance_legacy",
  "explained_variance_legacy_std",
  "dead_features",
  "mean_passes_since_fired",
] as const;

/** Records the statistics of `LOG_STATISTICS` into `out[offset ..]` (no sync). */
export function recordLogStatistics(input: LogStatisticsInput, out: Tensor, offset: number): void {
  const { x, saeOut, featureActs, counters } = input;
  x.gpu.scope(() => {
    const xMean = unary("affine", reduceCols(x), { alpha: 1 / x.rows, beta: 0 });
    const stats = rowStatistics(x, saeOut, xMean, featureActs);
    summarizeStatistics(stats, counters, out, offset);
  });
}

/**
 * Where each value of one logged step lives in its metrics tensor: the statistics, then
 * grad_norm, dead_features_used, overall_loss, the loss terms and the state buffers.
 */
export class MetricsLayout {
  static readonly GRAD_NORM = SUMMARY_SIZE;
  static readonly DEAD_FEATURES_USED = SUMMARY_SIZE + 1;
  static readonly OVERALL_LOSS = SUMMARY_SIZE + 2;
  private static readonly FIXED = SUMMARY_SIZE + 3;

  constructor(readonly lossNames: readonly string[], readonly stateNames: readonly string[]) {}

  get size(): number {
    return MetricsLayout.FIXED + this.lossNames.length + this.stateNames.length;
  }

  lossSlot(i: number): number {
    return MetricsLayout.FIXED + i;
  }

  stateSlot(i: number): number {
    return MetricsLayout.FIXED + this.lossNames.length + i;
  }

  /** The host values of one step from its read-back tensor. */
  decode(
    values: Float32Array,
    host: Pick<TrainStepMetrics, "step" | "n_training_samples" | "lr" | "coefficients">,
  ): TrainStepMetrics {
    const stats = Object.fromEntries(LOG_STATISTICS.map((name, i) => [name, values[i]])) as Record<
      typeof LOG_STATISTICS[number],
      number
    >;
    return {
      ...host,
      overall_loss: values[MetricsLayout.OVERALL_LOSS],
      losses: Object.fromEntries(this.lossNames.map((n, i) => [n, values[this.lossSlot(i)]])),
      ...stats,
      dead_features_used: values[MetricsLayout.DEAD_FEATURES_USED],
      grad_norm: values[MetricsLayout.GRAD_NORM],
      state: Object.fromEntries(this.stateNames.map((n, i) => [n, values[this.stateSlot(i)]])),
    };
  }
}
