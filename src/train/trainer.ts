/**
 * SAELens 6.18 `SAETrainer` on the GPU. Each `step(x)` is `_train_step`:
 *
 * 1. at step i with (i+1) % feature_sampling_window == 0 the act-frequency statistics restart;
 * 2. forward + backward with the dead mask left by the previous steps
 *    (n_forward_passes_since_fired > dead_feature_window) and the warmed-up coefficients;
 * 3. bookkeeping: a latent fired if any row has a non-zero activation; its counter resets, the
 *    others count up; act_freq_scores adds the firing rows; n_frac_active_samples adds
 *    `train_batch_size_samples` (the config value, not the batch's rows);
 * 4. gradient clipping to global norm 1, then Adam with this step's learning rate.
 *
 * The counters, the dead mask and every intermediate live on the GPU: `step()` records work and
 * submits it without reading anything back. Logged steps (`{ log: true }`) also record their
 * metrics into a small tensor, read later with `readMetrics()` (one sync for all pending steps).
 * @module
 */
import type { TrainerConfig } from "../config/trainer.ts";
import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { unary } from "../kernels/elementwise.ts";
import { type FeatureCounters, updateFeatureCounters } from "../kernels/feature_stats.ts";
import { reduceAll } from "../kernels/reduce.ts";
import type { Coefficient } from "../saes/architecture.ts";
import type { StepResult, TrainingSae } from "../saes/training_sae.ts";
import { MetricsLayout, recordLogStatistics, type TrainStepMetrics } from "./metrics.ts";
import { coefficientAt, LrSchedule } from "./schedule.ts";

/** The SAETrainerConfig fields the training loop reads. */
export type TrainLoopConfig = Pick<
  TrainerConfig,
  | "lr"
  | "lr_end"
  | "lr_scheduler_name"
  | "lr_warm_up_steps"
  | "lr_decay_steps"
  | "n_restart_cycles"
  | "total_training_samples"
  | "train_batch_size_samples"
  | "dead_feature_window"
  | "feature_sampling_window"
>;

export interface StepOptions {
  /** Record this step's metrics for `readMetrics()`. */
  log?: boolean;
}

/** The trainer's resumable state besides the SAE and its optimizer (host copies). */
export interface TrainerState {
  nTrainingSteps: number;
  nTrainingSamples: number;
  nFracActiveSamples: number;
  actFreqScores: Float32Array;
  passesSinceFired: Float32Array;
}

/** A logged step waiting to be read back. */
interface PendingMetrics {
  tensor: Tensor;
  layout: MetricsLayout;
  host: Pick<TrainStepMetrics, "step" | "n_training_samples" | "lr" | "coefficients">;
}

export class Trainer {
  readonly gpu: Gpu;
  readonly schedule: LrSchedule;
  /** SAELens `total_training_steps`. */
  readonly totalSteps: number;
  /** Per-latent counters and the dead mask (GPU tensors, updated in place every step). */
  readonly counters: FeatureCounters;
  /** Steps taken (SAELens `n_training_steps`); the next step's index. */
  nTrainingSteps = 0;
  /** Rows trained on (SAELens `n_training_samples`). */
  nTrainingSamples = 0;
  /** Denominator of the feature sparsity (SAELens `n_frac_active_samples`). */
  nFracActiveSamples = 0;
  private readonly coefficientSpecs: Record<string, Coefficient>;
  private pending: PendingMetrics[] = [];

  constructor(readonly sae: TrainingSae, readonly cfg: TrainLoopConfig) {
    this.gpu = sae.gpu;
    this.totalSteps = Math.floor(cfg.total_training_samples / cfg.train_batch_size_samples);
    this.schedule = new LrSchedule({ ...cfg, total_steps: this.totalSteps });
    this.coefficientSpecs = sae.arch.coefficients(sae.cfg);
    const dSae = sae.cfg.d_sae;
    this.counters = {
      actFreqScores: this.gpu.keep(this.gpu.zeros([dSae])),
      passesSinceFired: this.gpu.keep(this.gpu.zeros([dSae])),
      deadMask: this.gpu.keep(this.gpu.zeros([dSae])),
    };
  }

  /** Whether SAELens's `fit()` would stop: n_training_samples >= total_training_samples. */
  get done(): boolean {
    return this.nTrainingSamples >= this.cfg.total_training_samples;
  }

  /** The sparsity coefficients in effect during step `step`, after warm-up. */
  coefficientsAt(step: number): Record<string, number> {
    return Object.fromEntries(
      Object.entries(this.coefficientSpecs).map((
        [name, c],
      ) => [name, coefficientAt(step, c.value, c.warmUpSteps)]),
    );
  }

  /** One training step on the batch `x` [B, d_in] (already scaled if the run scales inputs). */
  step(x: Tensor, options: StepOptions = {}): void {
    const i = this.nTrainingSteps;
    const reset = (i + 1) % this.cfg.feature_sampling_window === 0;
    const lr = this.schedule.lrAt(i);
    const coefficients = this.coefficientsAt(i);
    const nTrainingSamples = this.nTrainingSamples + x.rows;
    // Everything allocated in here (the step's outputs, losses, gradients) is released at the end.
    this.gpu.scope(() => {
      const result = this.sae.forwardBackward(x, this.counters.deadMask, coefficients);
      const metrics = options.log ? this.beginMetrics(result) : undefined;
      // A sparse step's lists count firing latents without the dense activations.
      updateFeatureCounters(
        result.latentOffsets
          ? { latentOffsets: result.latentOffsets }
          : { featureActs: result.outputs.feature_acts },
        this.counters,
        this.cfg.dead_feature_window,
        reset,
      );
      const clip = this.sae.clip(result.grads);
      if (metrics) {
        this.finishMetrics(metrics, x, result, clip);
        this.pending.push({
          ...metrics,
          host: { step: i, n_training_samples: nTrainingSamples, lr, coefficients },
        });
      }
      this.sae.optimizerStep(result.grads, lr, clip);
    });
    this.nTrainingSteps = i + 1;
    this.nTrainingSamples = nTrainingSamples;
    this.nFracActiveSamples = (reset ? 0 : this.nFracActiveSamples) +
      this.cfg.train_batch_size_samples;
    this.gpu.flush();
  }

  /** Allocates a logged step's metrics tensor; records what must be read before bookkeeping. */
  private beginMetrics(result: StepResult): { tensor: Tensor; layout: MetricsLayout } {
    const layout = new MetricsLayout(Object.keys(result.losses), Object.keys(this.sae.state));
    const tensor = this.gpu.keep(this.gpu.empty([layout.size]));
    this.gpu.copy(
      reduceAll(this.counters.deadMask),
      tensor,
      0,
      MetricsLayout.DEAD_FEATURES_USED,
      1,
    );
    return { tensor, layout };
  }

  /** Records the rest of a logged step's metrics (after bookkeeping and clipping). */
  private finishMetrics(
    { tensor, layout }: { tensor: Tensor; layout: MetricsLayout },
    x: Tensor,
    result: StepResult,
    clip: Tensor,
  ): void {
    const { outputs } = result;
    recordLogStatistics(
      { x, saeOut: outputs.sae_out, featureActs: outputs.feature_acts, counters: this.counters },
      tensor,
      0,
    );
    this.gpu.copy(clip, tensor, 0, MetricsLayout.GRAD_NORM, 1);
    this.gpu.copy(result.total, tensor, 0, MetricsLayout.OVERALL_LOSS, 1);
    layout.lossNames.forEach((name, i) =>
      this.gpu.copy(result.losses[name], tensor, 0, layout.lossSlot(i), 1)
    );
    layout.stateNames.forEach((name, i) =>
      this.gpu.copy(this.sae.state[name], tensor, 0, layout.stateSlot(i), 1)
    );
  }

  /** Metrics of every logged step since the last call, oldest first (one sync). */
  async readMetrics(): Promise<TrainStepMetrics[]> {
    const pending = this.pending;
    this.pending = [];
    if (pending.length === 0) return [];
    const values = await this.gpu.readMany(pending.map((p) => p.tensor));
    for (const p of pending) p.tensor.dispose();
    const metrics = pending.map((p, i) => p.layout.decode(values[i], p.host));
    const last = metrics[metrics.length - 1];
    this.sae.measured = {
      activeFraction: last.l0 / this.sae.cfg.d_sae,
      deadLatents: last.dead_features,
    };
    return metrics;
  }

  /** SAELens `feature_sparsity`: act_freq_scores / n_frac_active_samples, in float32 (one sync). */
  async featureSparsity(): Promise<Float32Array> {
    const scores = await this.gpu.read(this.counters.actFreqScores);
    return scores.map((s) => s / this.nFracActiveSamples);
  }

  /** Host copies of the counters, for checkpoints (one sync). */
  async readState(): Promise<TrainerState> {
    const [actFreqScores, passesSinceFired] = await this.gpu.readMany([
      this.counters.actFreqScores,
      this.counters.passesSinceFired,
    ]);
    const { nTrainingSteps, nTrainingSamples, nFracActiveSamples } = this;
    return {
      nTrainingSteps,
      nTrainingSamples,
      nFracActiveSamples,
      actFreqScores,
      passesSinceFired,
    };
  }

  /** Restores the counters from a checkpoint; the dead mask follows from passesSinceFired. */
  loadState(state: TrainerState): void {
    this.gpu.write(this.counters.actFreqScores, state.actFreqScores);
    this.gpu.write(this.counters.passesSinceFired, state.passesSinceFired);
    unary("greater", this.counters.passesSinceFired, {
      alpha: this.cfg.dead_feature_window,
      out: this.counters.deadMask,
    });
    this.nTrainingSteps = state.nTrainingSteps;
    this.nTrainingSamples = state.nTrainingSamples;
    this.nFracActiveSamples = state.nFracActiveSamples;
  }

  /** Releases the counters and any unread metrics (the SAE is the caller's). */
  dispose(): void {
    for (const p of this.pending) p.tensor.dispose();
    this.pending = [];
    for (const t of Object.values(this.counters)) t.dispose();
  }
}
