/**
 * The `deno task train` config file: SAELens's own `sae` and `trainer` sections, the data source,
 * and run options. Unknown fields are errors that name the field.
 */
import { z } from "zod";
import {
  ConfigError,
  flag,
  nonNegativeInt,
  parseOrThrow,
  positiveInt,
  positiveNumber,
} from "./errors.ts";
import { parseSaeConfig, type SaeConfig } from "./sae.ts";
import { parseTrainerConfig, type TrainerConfig } from "./trainer.ts";

/** The embedded synthetic source (sparse combinations of a seeded ground-truth dictionary). */
const SyntheticSourceSchema = z.strictObject({
  source: z.literal("synthetic"),
  /** Ground-truth features in the dictionary. */
  n_features: positiveInt().default(512),
  /** Firing probability of the most frequent feature. */
  p_max: z.number().gt(0).lte(1).default(0.2),
  /** Feature j fires with p_max / (j+1)^zipf_exponent. */
  zipf_exponent: z.number().min(0).default(0.8),
  /** Magnitudes are uniform in [magnitude_min, magnitude_max). */
  magnitude_min: positiveNumber().default(0.5),
  magnitude_max: positiveNumber().default(2),
  /** Standard deviation of Gaussian noise added to every activation. */
  noise: z.number().min(0).default(0.02),
  /** Scale of the constant offset added to every activation. */
  offset_scale: z.number().min(0).default(0.3),
  /** Seed of the dictionary and of the batch stream. */
  seed: nonNegativeInt().default(0),
});

/**
 * A language model's hook point on local text (SAELens's `ActivationsStore` on a text dataset);
 * `trainer.total_training_samples` plays SAELens's `training_tokens`. See src/data/model_source.ts.
 */
const ModelSourceSchema = z.strictObject({
  source: z.literal("model"),
  /**
   * A local model directory in Hugging Face layout (config.json, tokenizer*.json,
   * onnx/model.onnx), or a hub repo id (org/name) downloaded once into a local cache.
   */
  model_name: z.string().min(1),
  /** SAELens hook name: blocks.L.hook_resid_pre, blocks.L.hook_resid_mid, blocks.L.hook_resid_post. */
  hook_name: z.string().regex(/^blocks\.\d+\.hook_resid_(pre|mid|post)$/, {
    error: "must be blocks.L.hook_resid_pre, blocks.L.hook_resid_mid or blocks.L.hook_resid_post",
  }),
  /** A .txt/.jsonl file or a directory of them (.txt: one document per file; .jsonl: "text" per line). */
  dataset_path: z.string().min(1),
  /** Tokens per window (SAELens default 128). */
  context_size: positiveInt().default(128),
  /** BOS at the start of every window and between documents (SAELens default true). */
  prepend_bos: flag().default(true),
  /** Windows per LM forward pass (SAELens default 32). */
  store_batch_size_prompts: positiveInt().default(32),
  /** Mixing buffer: this many LM batches of activations (SAELens default 20). */
  n_batches_in_buffer: positiveInt().default(20),
  /** Drop activations of special tokens: true (the tokenizer's), false, or a list of token ids. */
  exclude_special_tokens: z.union([z.boolean(), z.array(nonNegativeInt())]).default(true),
  /** Seed of the mixing buffer's shuffles. */
  seed: nonNegativeInt().default(0),
  /** onnxruntime threads (default: all cores). */
  threads: positiveInt().optional(),
});

/** Token shards written by `deno task pretokenize`, run through the LM (see model_source.ts). */
const PretokenizedSourceSchema = z.strictObject({
  source: z.literal("pretokenized"),
  model_name: z.string().min(1),
  hook_name: z.string().regex(/^blocks\.\d+\.hook_resid_(pre|mid|post)$/, {
    error: "must be blocks.L.hook_resid_pre, blocks.L.hook_resid_mid or blocks.L.hook_resid_post",
  }),
  /** The token-shard directory. */
  dataset_path: z.string().min(1),
  /** Tokens used of each row (at most the shards' context size). */
  context_size: positiveInt().default(128),
  store_batch_size_prompts: positiveInt().default(32),
  n_batches_in_buffer: positiveInt().default(20),
  exclude_special_tokens: z.union([z.boolean(), z.array(nonNegativeInt())]).default(true),
  seed: nonNegativeInt().default(0),
  threads: positiveInt().optional(),
});

/** Activations cached by `deno task cache`, streamed through the mixing buffer (cached_source.ts). */
const CachedSourceSchema = z.strictObject({
  source: z.literal("cached"),
  /** The cache directory. */
  cached_activations_path: z.string().min(1),
  /** When given, must equal the cache's hook point. */
  hook_name: z.string().optional(),
  /** Windows per batch (default: the cache's). */
  store_batch_size_prompts: positiveInt().optional(),
  n_batches_in_buffer: positiveInt().default(20),
  exclude_special_tokens: z.union([z.boolean(), z.array(nonNegativeInt())]).default(true),
  seed: nonNegativeInt().default(0),
});

const RunSchema = z.strictObject({
  /** SAELens `TrainingSAEConfig` fields (architecture, d_in, d_sae, k, l1_coefficient, ...). */
  sae: z.record(z.string(), z.unknown()),
  /** SAELens `SAETrainerConfig` fields (lr, total_training_samples, train_batch_size_samples, ...). */
  trainer: z.record(z.string(), z.unknown()),
  /** Where activations come from. */
  data: z.discriminatedUnion("source", [
    SyntheticSourceSchema,
    ModelSourceSchema,
    PretokenizedSourceSchema,
    CachedSourceSchema,
  ]),
  /** Seed of the SAE initialisation. */
  seed: nonNegativeInt().default(0),
  /** Read metrics back and log every this many steps (each read costs one GPU sync). */
  log_every: positiveInt().default(50),
  /** Write a checkpoint every this many steps (0: only at the end). */
  checkpoint_every: nonNegativeInt().default(0),
  /** Batches used to estimate the expected_average_only_in factor (SAELens uses 1000). */
  n_batches_for_norm_estimate: positiveInt().default(1000),
  /** Held-out batches the saved SAE is evaluated on at the end (DIR/eval.json). */
  n_eval_batches: positiveInt().default(4),
  /** Save the final SAE in SAELens's format. */
  save_final: flag().default(true),
});

export type SyntheticSourceConfig = z.output<typeof SyntheticSourceSchema>;
export type ModelSourceConfig = z.output<typeof ModelSourceSchema>;

export interface RunConfig extends Omit<z.output<typeof RunSchema>, "sae" | "trainer"> {
  sae: SaeConfig;
  trainer: TrainerConfig;
}

/** Validates a whole run config; every error names `source` and the field. */
export function parseRunConfig(obj: unknown, source = "config"): RunConfig {
  const run = parseOrThrow(RunSchema, obj, source);
  // What SAELens only warns about (widths not ending at d_sae, a single Matryoshka level) is an
  // error here: a training config should say exactly what it trains.
  const sae = parseSaeConfig(run.sae, `${source}.sae`, (warning) => {
    throw new ConfigError([warning.replace(/; appending .*$/, "; make d_sae the last width")]);
  });
  const trainer = parseTrainerConfig(run.trainer, `${source}.trainer`);
  if (run.data.source === "synthetic" && run.data.magnitude_max < run.data.magnitude_min) {
    throw new ConfigError([`${source}.data.magnitude_max: must be >= magnitude_min`]);
  }
  return { ...run, sae, trainer };
}

/**
 * The config `deno task train` uses without --config: a TopK SAE on the synthetic source, sized
 * to finish in about a minute on Mesa's software adapter with 2 CPU cores.
 */
export const DEFAULT_RUN = {
  sae: { architecture: "topk", d_in: 32, d_sae: 256, k: 8 },
  trainer: {
    lr: 2e-3,
    lr_warm_up_steps: 50,
    lr_decay_steps: 200,
    total_training_samples: 256 * 1000,
    train_batch_size_samples: 256,
    dead_feature_window: 200,
    feature_sampling_window: 500,
    logger: { log_to_wandb: false },
  },
  data: { source: "synthetic", n_features: 128, p_max: 0.15 },
  seed: 0,
  log_every: 50,
  checkpoint_every: 250,
  n_batches_for_norm_estimate: 100,
};
