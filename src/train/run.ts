/**
 * A whole training run: data source → (activation scaling) → Trainer steps → logs, checkpoints
 * and the final SAE in SAELens's layout. `deno task train` is a thin CLI over `runTraining`.
 */
import { join } from "node:path";
import { ConfigError } from "../config/errors.ts";
import type { RunConfig } from "../config/run.ts";
import { openSource } from "../data/sources.ts";
import { SyntheticSource } from "../data/synthetic.ts";
import type { Gpu } from "../gpu/device.ts";
import { saveSaeDirectory } from "../io/saelens_format.ts";
import { InferenceModel } from "../saes/inference.ts";
import { initializeParams } from "../saes/init.ts";
import { getArchitecture } from "../saes/registry.ts";
import type { StepConfig } from "../saes/step.ts";
import { TrainingSae } from "../saes/training_sae.ts";
import { estimateScalingFactor, foldScalingFactor, scaleBatch } from "./activation_scaler.ts";
import { dictionaryRecovery, evaluate } from "./evals.ts";
import { loadLatestCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import type { TrainStepMetrics } from "./metrics.ts";
import { Trainer } from "./trainer.ts";

export interface RunOptions {
  /** Output directory: metrics.jsonl, checkpoints/, sae/. */
  outDir: string;
  /** Continue from the newest checkpoint in outDir/checkpoints. */
  resume?: boolean;
  /** Stop after this many steps in total (the rest of the run can be resumed). */
  stopAfterSteps?: number;
  /** Called with each logged step's metrics and the measured throughput. */
  onLog?(
    metrics: TrainStepMetrics,
    progress: { tokensPerSecond: number; totalSteps: number },
  ): void;
}

export interface RunResult {
  steps: number;
  /** Final parameters (before any folding), SAELens names. */
  params: Record<string, Float32Array>;
  /** Final state buffers (BatchTopK's topk_threshold). */
  state: Record<string, number>;
  /** sae_lens.evals metrics of the saved SAE on held-out batches (also in DIR/eval.json). */
  evals?: Record<string, number>;
  saeDir?: string;
  /** Mean best cosine of the synthetic source's true features with decoder rows. */
  dictionaryRecovery?: number;
  tokensPerSecond: number;
}

/** Rejects non-finite activations, naming the step and position. */
export function assertFinite(batch: Float32Array, dIn: number, step: number): void {
  for (let i = 0; i < batch.length; i++) {
    if (!Number.isFinite(batch[i])) {
      throw new Error(
        `activation batch for step ${step} has ${batch[i]} at row ${Math.floor(i / dIn)}, column ${
          i % dIn
        }; ` +
          "fix the activation source (NaN/Inf would corrupt the SAE)",
      );
    }
  }
}

/** SAELens's cfg.json `metadata`: the config's own plus where the activations came from. */
function saeMetadata(config: RunConfig): Record<string, unknown> {
  const own = (config.sae as { metadata?: Record<string, unknown> }).metadata ?? {};
  const data = config.data as Record<string, unknown>;
  const fromSource = Object.fromEntries(
    ["model_name", "hook_name", "context_size", "prepend_bos", "dataset_path"]
      .filter((key) => data[key] !== undefined)
      .map((key) => [key, data[key]]),
  );
  return { ...own, ...fromSource };
}

export async function runTraining(
  gpu: Gpu,
  config: RunConfig,
  options: RunOptions,
): Promise<RunResult> {
  const cfg = config.sae as unknown as StepConfig & { decoder_init_norm?: number | null };
  const arch = getArchitecture(config.sae.architecture);
  const batchSize = config.trainer.train_batch_size_samples;
  const source = openSource(config, cfg.d_in);
  const checkpointDir = join(options.outDir, "checkpoints");
  const runFile = join(options.outDir, "run.json");
  if (!options.resume && await Deno.stat(runFile).then(() => true, () => false)) {
    throw new ConfigError([
      `${options.outDir} already holds a run (${runFile}); continue it with --resume or choose ` +
      "another --out (a new run never overwrites an earlier one)",
    ]);
  }
  await Deno.mkdir(options.outDir, { recursive: true });
  await Deno.writeTextFile(
    runFile,
    JSON.stringify(config, null, 2) + "\n",
  );

  const sae = TrainingSae.fromHost(gpu, arch, cfg, initializeParams(arch, cfg, config.seed), {}, {
    beta1: config.trainer.adam_beta1,
    beta2: config.trainer.adam_beta2,
  });
  const trainer = new Trainer(sae, config.trainer);
  let scalingFactor = 1;
  if (options.resume) {
    const meta = await loadLatestCheckpoint(checkpointDir, sae, trainer);
    source.restore(meta.dataPosition);
    scalingFactor = meta.scalingFactor;
  } else if (config.sae.normalize_activations === "expected_average_only_in") {
    // SAELens's fit() consumes these batches from the same stream before training.
    const batches: Float32Array[] = [];
    for (let i = 0; i < config.n_batches_for_norm_estimate; i++) {
      batches.push(await source.nextBatch(batchSize));
    }
    scalingFactor = estimateScalingFactor(batches, cfg.d_in);
  }

  const x = gpu.keep(gpu.empty([batchSize, cfg.d_in]));
  const metricsFile = await Deno.open(join(options.outDir, "metrics.jsonl"), {
    append: true,
    create: true,
  });
  const encoder = new TextEncoder();
  const startStep = trainer.nTrainingSteps;
  const start = performance.now();
  const lastStep = Math.min(trainer.totalSteps, options.stopAfterSteps ?? Infinity);
  let tokensPerSecond = 0;
  try {
    while (!trainer.done && trainer.nTrainingSteps < lastStep) {
      const step = trainer.nTrainingSteps;
      const batch = await source.nextBatch(batchSize);
      assertFinite(batch, cfg.d_in, step);
      if (scalingFactor !== 1) scaleBatch(batch, scalingFactor);
      gpu.write(x, batch);
      const log = (step + 1) % config.log_every === 0 || step + 1 === lastStep;
      trainer.step(x, { log });
      tokensPerSecond = ((step + 1 - startStep) * batchSize) / ((performance.now() - start) / 1000);
      if (log) {
        for (const m of await trainer.readMetrics()) {
          await metricsFile.write(
            encoder.encode(JSON.stringify({ ...m, tokens_per_s: tokensPerSecond }) + "\n"),
          );
          options.onLog?.(m, { tokensPerSecond, totalSteps: trainer.totalSteps });
        }
      }
      const done = step + 1;
      if (
        config.checkpoint_every > 0 && done % config.checkpoint_every === 0 &&
        done < trainer.totalSteps
      ) {
        await saveCheckpoint(checkpointDir, sae, trainer, {
          dataPosition: source.position(),
          scalingFactor,
        });
      }
    }
  } finally {
    metricsFile.close();
  }
  const params = await sae.readParams();
  const state = await sae.readState();
  const result: RunResult = {
    steps: trainer.nTrainingSteps,
    params,
    state,
    dictionaryRecovery: source instanceof SyntheticSource
      ? dictionaryRecovery(source.trueFeatures, params.W_dec, cfg.d_in)
      : undefined,
    tokensPerSecond,
  };
  if (trainer.done && config.save_final) {
    // SAELens folds the activation scale into the weights when it saves.
    const folded = scalingFactor === 1 ? params : foldScalingFactor(params, scalingFactor);
    const sparsity = (await trainer.featureSparsity()).map((s) => Math.log10(s + 1e-10));
    result.saeDir = join(options.outDir, "sae");
    // After folding, the saved SAE takes raw activations: its normalisation is "none".
    const normalize = scalingFactor === 1 ? cfg.normalize_activations ?? "none" : "none";
    const savedCfg = { ...cfg, normalize_activations: normalize, metadata: saeMetadata(config) };
    const inference = arch.toInference(savedCfg, folded, state);
    await saveSaeDirectory(result.saeDir, inference, savedCfg, sparsity);
    const heldOut: Float32Array[] = [];
    for (let i = 0; i < config.n_eval_batches; i++) heldOut.push(await source.nextBatch(batchSize));
    const model = InferenceModel.upload(gpu, inference, savedCfg);
    result.evals = await evaluate(model, heldOut, cfg.d_in, cfg.d_sae);
    if (result.dictionaryRecovery !== undefined) {
      result.evals.dictionary_recovery = result.dictionaryRecovery;
    }
    await Deno.writeTextFile(
      join(options.outDir, "eval.json"),
      JSON.stringify(result.evals, null, 2) + "\n",
    );
  } else if (!trainer.done) {
    await saveCheckpoint(checkpointDir, sae, trainer, {
      dataPosition: source.position(),
      scalingFactor,
    });
  }
  trainer.dispose();
  return result;
}
