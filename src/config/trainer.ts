/**
 * Trainer configs under SAELens's own field names: v6 `SAETrainerConfig` (SAELens 6.18, as
 * `dataclasses.asdict` writes it), the LR-schedule arguments of the `schedule` fixtures, and the
 * SAELens 5.x `LanguageModelSAERunnerConfig` (only the fields that change the math are typed).
 * SAELens's `SAETrainerConfig` has no defaults of its own; ours are those
 * `LanguageModelSAERunnerConfig` (6.18) passes it.
 * @module
 */
import { z } from "zod";
import {
  ConfigError,
  flag,
  nonNegativeInt,
  nonNegativeNumber,
  parseOrThrow,
  positiveInt,
  positiveNumber,
  quoteList,
  unitIntervalOpen,
} from "./errors.ts";
import { v5LossFields } from "./sae.ts";

/** LR scheduler names (SAELens lower-cases the name before matching, and so do we). */
export const LR_SCHEDULERS = [
  "constant",
  "cosineannealing",
  "cosineannealingwarmrestarts",
] as const;

/** One of `LR_SCHEDULERS`. */
export type LrSchedulerName = typeof LR_SCHEDULERS[number];

/** One-line remedies appended to errors about these fields. */
const FIXES: Record<string, string> = {
  lr_scheduler_name: `use one of ${quoteList(LR_SCHEDULERS)}`,
  lr: "use a positive learning rate such as 3e-4",
  adam_beta1: "use a value in [0, 1), e.g. 0.9",
  adam_beta2: "use a value in [0, 1), e.g. 0.999",
  train_batch_size_samples: "set the number of rows per step, e.g. 4096",
  total_training_samples: "set the number of rows to train on, e.g. 2000000",
  architecture: 'use one of "standard", "gated", "jumprelu", "topk" (SAELens 5.x names)',
};

/** Lower-cases strings so "CosineAnnealing" matches, as SAELens's get_lr_scheduler does. */
const schedulerName = z.preprocess(
  (v) => (typeof v === "string" ? v.toLowerCase() : v),
  z.enum(LR_SCHEDULERS),
);

/** SAELens `LoggingConfig` (W&B settings): known fields typed, others kept. */
export const LoggingConfigSchema = z.looseObject({
  /** Log to Weights & Biases (SAELens default true; not supported by this trainer). */
  log_to_wandb: flag().default(true),
  /** Log activation-store state to W&B. */
  log_activations_store_to_wandb: flag().default(false),
  /** Log optimizer state to W&B. */
  log_optimizer_state_to_wandb: flag().default(false),
  /** W&B project. */
  wandb_project: z.string().default("sae_lens_training"),
  /** W&B run id (also names the checkpoint folder). */
  wandb_id: z.string().nullable().default(null),
  /** Run name. */
  run_name: z.string().nullable().default(null),
  /** W&B entity. */
  wandb_entity: z.string().nullable().default(null),
  /** Log every this many steps. */
  wandb_log_frequency: positiveInt().default(10),
  /** Run evals every this many logs. */
  eval_every_n_wandb_logs: positiveInt().default(100),
});

/** Parsed logging config. */
export type LoggingConfig = z.output<typeof LoggingConfigSchema>;

const trainerObject = z.strictObject({
  /** Checkpoints written during training (0: none). */
  n_checkpoints: nonNegativeInt().default(0),
  /** Checkpoint folder; null disables checkpoints. */
  checkpoint_path: z.string().nullable().default("checkpoints"),
  /** Also write a checkpoint when training ends. */
  save_final_checkpoint: flag().default(false),
  /** Rows (tokens) to train on; steps = total_training_samples // train_batch_size_samples. */
  total_training_samples: positiveInt().default(2_000_000),
  /** SAELens device string, kept for round-trips. */
  device: z.string().default("cpu"),
  /** Mixed precision in SAELens; ignored here (everything is float32). */
  autocast: flag().default(false),
  /** Peak learning rate. */
  lr: positiveNumber().default(3e-4),
  /** Learning rate at the end of the cosine phase / start of the decay; null means lr / 10. */
  lr_end: nonNegativeNumber().nullable().default(null),
  /** Main LR schedule between warm-up and decay. */
  lr_scheduler_name: schedulerName.default("constant"),
  /** Linear LR warm-up steps (from lr/W to lr at step W-1). */
  lr_warm_up_steps: nonNegativeInt().default(0),
  /** Adam beta1 (v6 default 0.9; v5's was 0.0). */
  adam_beta1: unitIntervalOpen().default(0.9),
  /** Adam beta2. */
  adam_beta2: unitIntervalOpen().default(0.999),
  /** Final linear LR decay steps (towards 0). */
  lr_decay_steps: nonNegativeInt().default(0),
  /** Cycles of cosineannealingwarmrestarts. */
  n_restart_cycles: positiveInt().default(1),
  /** Rows per training step. */
  train_batch_size_samples: positiveInt().default(4096),
  /** A latent is dead after firing in none of more than this many steps. */
  dead_feature_window: nonNegativeInt().default(1000),
  /** Steps between resets of the feature-frequency statistics. */
  feature_sampling_window: positiveInt().default(2000),
  /** W&B logging settings. */
  logger: LoggingConfigSchema.default(() => LoggingConfigSchema.parse({})),
}).superRefine((cfg, ctx) => {
  const steps = Math.floor(cfg.total_training_samples / cfg.train_batch_size_samples);
  const lrEnd = cfg.lr_end ?? cfg.lr / 10;
  checkSchedule(ctx, {
    name: cfg.lr_scheduler_name,
    steps,
    lr: cfg.lr,
    lrEnd,
    warm: cfg.lr_warm_up_steps,
    decay: cfg.lr_decay_steps,
    cycles: cfg.n_restart_cycles,
    keys: { warm: "lr_warm_up_steps", decay: "lr_decay_steps", lrEnd: "lr_end" },
  });
});

/** SAELens 6.18 `SAETrainerConfig`; a null or missing `lr_end` becomes lr / 10 as in SAELens. */
export const TrainerConfigSchema = trainerObject.transform((cfg) => ({
  ...cfg,
  lr_end: cfg.lr_end ?? cfg.lr / 10,
}));

/** Parsed trainer config (`lr_end` always a number). */
export type TrainerConfig = z.output<typeof TrainerConfigSchema>;

/** Parses a SAELens `SAETrainerConfig` dict; errors name `source` and the field. */
export function parseTrainerConfig(obj: unknown, source = "config.trainer"): TrainerConfig {
  return parseOrThrow(TrainerConfigSchema, obj, source, FIXES);
}

/** Training steps, as SAELens computes them: total_training_samples // train_batch_size_samples. */
export function totalTrainingSteps(cfg: TrainerConfig): number {
  return Math.floor(cfg.total_training_samples / cfg.train_batch_size_samples);
}

interface ScheduleCheck {
  name: LrSchedulerName;
  steps: number;
  lr: number;
  lrEnd: number;
  warm: number;
  decay: number;
  cycles: number;
  keys: { warm: string; decay: string; lrEnd: string };
}

/** Cross-field checks for the setups where SAELens's get_lr_scheduler would crash. */
function checkSchedule(ctx: z.RefinementCtx, s: ScheduleCheck): void {
  const main = s.steps - s.warm - s.decay;
  if (main < 0) {
    ctx.addIssue({
      code: "custom",
      path: [s.keys.decay],
      input: s.decay,
      message: `warm-up (${s.warm}) + decay (${s.decay}) steps exceed the ${s.steps} training ` +
        `steps (fix: shorten them or train longer)`,
    });
  } else if (s.name !== "constant" && main === 0) {
    ctx.addIssue({
      code: "custom",
      path: [s.keys.warm],
      input: s.warm,
      message: `${s.name} needs at least one step between warm-up and decay, but warm-up ` +
        `(${s.warm}) + decay (${s.decay}) = all ${s.steps} steps (fix: shorten them)`,
    });
  } else if (s.name === "cosineannealingwarmrestarts" && Math.floor(main / s.cycles) < 1) {
    ctx.addIssue({
      code: "custom",
      path: ["n_restart_cycles"],
      input: s.cycles,
      message: `${s.cycles} restart cycles do not fit in ${main} cosine steps ` +
        `(fix: use at most ${main} cycles)`,
    });
  }
  // SAELens decays from lr_end (from lr for "constant") and refuses to decay from 0.
  if (s.decay > 0 && (s.name === "constant" ? s.lr : s.lrEnd) === 0) {
    ctx.addIssue({
      code: "custom",
      path: [s.keys.lrEnd],
      input: s.lrEnd,
      message: "decay steps with lr_end 0 would decay from 0 to 0, which SAELens refuses " +
        "(fix: set lr_end > 0 or the decay steps to 0)",
    });
  }
}

/**
 * Arguments of SAELens's `get_lr_scheduler` plus a `CoefficientScheduler` (the `config.trainer`
 * of the `schedule-*` fixtures, which is not a SAETrainerConfig).
 */
export const ScheduleConfigSchema = z.strictObject({
  /** Main LR schedule. */
  lr_scheduler_name: schedulerName,
  /** Total training steps. */
  steps: positiveInt(),
  /** Peak learning rate. */
  lr: positiveNumber(),
  /** Learning rate at the end of the cosine phase / start of the decay. */
  lr_end: nonNegativeNumber(),
  /** Linear warm-up steps. */
  warm_up_steps: nonNegativeInt().default(0),
  /** Final linear decay steps. */
  decay_steps: nonNegativeInt().default(0),
  /** Cycles of cosineannealingwarmrestarts (`num_cycles`). */
  n_restart_cycles: positiveInt().default(1),
  /** Warm-up steps of the coefficient scheduler. */
  coeff_warm_up_steps: nonNegativeInt().default(0),
  /** Final value of the coefficient scheduler. */
  coeff_value: nonNegativeNumber(),
}).superRefine((cfg, ctx) =>
  checkSchedule(ctx, {
    name: cfg.lr_scheduler_name,
    steps: cfg.steps,
    lr: cfg.lr,
    lrEnd: cfg.lr_end,
    warm: cfg.warm_up_steps,
    decay: cfg.decay_steps,
    cycles: cfg.n_restart_cycles,
    keys: { warm: "warm_up_steps", decay: "decay_steps", lrEnd: "lr_end" },
  })
);

/** Parsed schedule-fixture config. */
export type ScheduleConfig = z.output<typeof ScheduleConfigSchema>;

/** Parses the `config.trainer` of a `schedule-*` fixture case. */
export function parseScheduleConfig(obj: unknown, source = "config.trainer"): ScheduleConfig {
  return parseOrThrow(ScheduleConfigSchema, obj, source, FIXES);
}

/**
 * SAELens 5.x `LanguageModelSAERunnerConfig.to_dict()`: the fields that change the math are
 * typed with 5.11's defaults; the language-model, data and logging fields pass through.
 */
const v5RunnerObject = z.looseObject({
  /** v5 architecture name. */
  architecture: z.enum(["standard", "gated", "jumprelu", "topk"]).default("standard"),
  /** Input width. */
  d_in: positiveInt().default(512),
  /** Number of latents; null: d_in * expansion_factor. */
  d_sae: positiveInt().nullable().default(null),
  /** d_sae / d_in when d_sae is null (default 4). */
  expansion_factor: positiveInt().nullable().default(null),
  /** b_dec initialisation. */
  b_dec_init_method: z.enum(["geometric_median", "mean", "zeros"]).default("geometric_median"),
  /** Activation; null: "topk" for the topk architecture, else "relu". */
  activation_fn: z.enum(["relu", "tanh-relu", "topk"]).nullable().default(null),
  /** Activation options ({k} for topk); null: {k: 100} for topk, else {}. */
  activation_fn_kwargs: z.record(z.string(), z.number()).nullable().default(null),
  /** Parameter dtype; only "float32" is supported here. */
  dtype: z.literal("float32").default("float32"),
  /** SAELens device string. */
  device: z.string().default("cpu"),
  /** Seed of SAELens's initialisation. */
  seed: z.number().int().default(42),
  /** Training tokens (rows). */
  training_tokens: positiveInt().default(2_000_000),
  /** Extra fine-tuning tokens after training. */
  finetuning_tokens: nonNegativeInt().default(0),
  /** Fine-tuning method; null: none. */
  finetuning_method: z.enum(["scale", "decoder", "unrotated_decoder"]).nullable().default(null),
  /** Mixed precision in SAELens; ignored here. */
  autocast: flag().default(false),
  /** Rows per training step. */
  train_batch_size_tokens: positiveInt().default(4096),
  /** Adam beta1 (v5 default 0.0). */
  adam_beta1: unitIntervalOpen().default(0.0),
  /** Adam beta2. */
  adam_beta2: unitIntervalOpen().default(0.999),
  /** Steps over which the L1 coefficient ramps linearly (v5: (1+step)/W). */
  l1_warm_up_steps: nonNegativeInt().default(0),
  /** Peak learning rate. */
  lr: positiveNumber().default(3e-4),
  /** Main LR schedule. */
  lr_scheduler_name: schedulerName.default("constant"),
  /** Linear LR warm-up steps. */
  lr_warm_up_steps: nonNegativeInt().default(0),
  /** LR at the end of the cosine phase / start of the decay; null means lr / 10. */
  lr_end: nonNegativeNumber().nullable().default(null),
  /** Final linear decay steps. */
  lr_decay_steps: nonNegativeInt().default(0),
  /** Cycles of cosineannealingwarmrestarts. */
  n_restart_cycles: positiveInt().default(1),
  /** Steps between resets of the feature-frequency statistics. */
  feature_sampling_window: positiveInt().default(2000),
  /** A latent is dead after firing in none of more than this many steps. */
  dead_feature_window: nonNegativeInt().default(1000),
  /** Firing-frequency threshold below which a latent counts as dead in v5's stats. */
  dead_feature_threshold: nonNegativeNumber().default(1e-8),
  /** Checkpoints written during training. */
  n_checkpoints: nonNegativeInt().default(0),
  ...v5LossFields,
}).superRefine((cfg, ctx) => {
  const fail = (path: string, input: unknown, message: string) =>
    ctx.addIssue({ code: "custom", path: [path], input, message });
  if (cfg.d_sae !== null && cfg.expansion_factor !== null) {
    fail("expansion_factor", cfg.expansion_factor, "set d_sae or expansion_factor, not both");
  }
  if (cfg.architecture === "topk" && (cfg.activation_fn ?? "topk") !== "topk") {
    fail("activation_fn", cfg.activation_fn, 'the topk architecture needs activation_fn "topk"');
  }
  if (cfg.normalize_sae_decoder && cfg.decoder_heuristic_init) {
    fail(
      "decoder_heuristic_init",
      true,
      "cannot be combined with normalize_sae_decoder (SAELens refuses it)",
    );
  }
  if (cfg.normalize_sae_decoder && cfg.scale_sparsity_penalty_by_decoder_norm) {
    fail(
      "scale_sparsity_penalty_by_decoder_norm",
      true,
      "is meaningless with normalize_sae_decoder (unit-norm rows); SAELens refuses it",
    );
  }
  if (cfg.finetuning_method === "decoder" && cfg.apply_b_dec_to_input) {
    fail("apply_b_dec_to_input", true, 'must be false when finetuning_method is "decoder"');
  }
  checkSchedule(ctx, {
    name: cfg.lr_scheduler_name,
    steps: Math.floor((cfg.training_tokens + cfg.finetuning_tokens) / cfg.train_batch_size_tokens),
    lr: cfg.lr,
    lrEnd: cfg.lr_end ?? cfg.lr / 10,
    warm: cfg.lr_warm_up_steps,
    decay: cfg.lr_decay_steps,
    cycles: cfg.n_restart_cycles,
    keys: { warm: "lr_warm_up_steps", decay: "lr_decay_steps", lrEnd: "lr_end" },
  });
});

/**
 * SAELens 5.x runner config with `__post_init__`'s resolutions applied: d_sae, activation_fn,
 * activation_fn_kwargs and lr_end are always set.
 */
export const V5RunnerConfigSchema = v5RunnerObject.transform((cfg) => {
  const activation_fn = cfg.activation_fn ?? (cfg.architecture === "topk" ? "topk" : "relu");
  const resolved = {
    d_sae: cfg.d_sae ?? cfg.d_in * (cfg.expansion_factor ?? 4),
    activation_fn,
    activation_fn_kwargs: cfg.activation_fn_kwargs ?? (activation_fn === "topk" ? { k: 100 } : {}),
    lr_end: cfg.lr_end ?? cfg.lr / 10,
  };
  // The intersection keeps the pass-through index signature that a spread would drop.
  return { ...cfg, ...resolved } as typeof cfg & typeof resolved;
});

/** Parsed SAELens 5.x runner config. */
export type V5RunnerConfig = z.output<typeof V5RunnerConfigSchema>;

/** Parses a SAELens 5.x `LanguageModelSAERunnerConfig.to_dict()` (`config.runner` of 5.11 cases). */
export function parseV5RunnerConfig(obj: unknown, source = "config.runner"): V5RunnerConfig {
  return parseOrThrow(V5RunnerConfigSchema, obj, source, FIXES);
}

/**
 * The v6 trainer fields equivalent to a 5.11 runner config: v5 counts tokens where v6 counts
 * samples (total = training_tokens + finetuning_tokens, as v5's `total_training_tokens`);
 * everything else keeps its name. Adam beta1 keeps v5's default of 0. v5 fine-tuning (a
 * `finetuning_method` that freezes parameters after training_tokens) is refused.
 */
export function v5TrainerConfig(runner: V5RunnerConfig, source = "config.runner"): TrainerConfig {
  if (runner.finetuning_method !== null && runner.finetuning_tokens > 0) {
    throw new ConfigError([
      `${source}.finetuning_method: "${runner.finetuning_method}" is not supported ` +
      `(fix: set finetuning_tokens to 0 or finetuning_method to null)`,
    ]);
  }
  return parseTrainerConfig({
    total_training_samples: runner.training_tokens + runner.finetuning_tokens,
    train_batch_size_samples: runner.train_batch_size_tokens,
    lr: runner.lr,
    lr_end: runner.lr_end,
    lr_scheduler_name: runner.lr_scheduler_name,
    lr_warm_up_steps: runner.lr_warm_up_steps,
    lr_decay_steps: runner.lr_decay_steps,
    n_restart_cycles: runner.n_restart_cycles,
    adam_beta1: runner.adam_beta1,
    adam_beta2: runner.adam_beta2,
    dead_feature_window: runner.dead_feature_window,
    feature_sampling_window: runner.feature_sampling_window,
  }, source);
}
