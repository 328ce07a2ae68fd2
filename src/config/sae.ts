/**
 * SAE configs under SAELens's own field names: a v6 `TrainingSAEConfig.to_dict()` (SAELens 6.18)
 * parses unchanged, with SAELens's defaults for omitted fields. One schema per architecture,
 * discriminated on `architecture`. Unknown fields are errors that name the field and the closest
 * known one; SAELens's metadata fields are the only extras allowed (moved into `metadata`).
 * SAELens 5.x SAE configs (`use_ghost_grads`, `normalize_sae_decoder`, ...) have their own schema,
 * `parseV5SaeConfig`.
 * @module
 */
import { z } from "zod";
import {
  ConfigError,
  flag,
  formatPath,
  nonNegativeInt,
  nonNegativeNumber,
  parseOrThrow,
  positiveInt,
  positiveNumber,
  quoteList,
  unitInterval,
  unknownFieldsMessage,
} from "./errors.ts";

/** The architectures this trainer implements (SAELens 6.18 names). */
export const ARCHITECTURES = [
  "standard",
  "topk",
  "batchtopk",
  "jumprelu",
  "gated",
  "matryoshka_batchtopk",
] as const;

/** One of `ARCHITECTURES`. */
export type Architecture = typeof ARCHITECTURES[number];

/** Input normalisation modes (SAELens `normalize_activations`). */
export const NORMALIZE_ACTIVATIONS = [
  "none",
  "expected_average_only_in",
  "constant_norm_rescale",
  "layer_norm",
] as const;

/** One-line remedies appended to errors about these fields. */
const FIXES: Record<string, string> = {
  architecture: `use one of ${quoteList(ARCHITECTURES)}`,
  d_in: "set d_in to the width of the activations you train on, e.g. 768",
  d_sae: "set d_sae to the number of latents, e.g. 16 * d_in",
  dtype: 'this trainer computes in float32 only: set dtype to "float32"',
  normalize_activations: `use one of ${quoteList(NORMALIZE_ACTIVATIONS)}`,
  k: "k is the number of latents kept per row: a positive number no larger than d_sae, e.g. 32",
  matryoshka_widths:
    "list strictly increasing latent counts that end at d_sae, e.g. [d_sae/8, d_sae/2, d_sae]",
  jumprelu_sparsity_loss_mode: 'use "step" (DeepMind L0) or "tanh" (Anthropic)',
  decoder_init_norm: "use a positive norm such as 0.1, or null to keep the Kaiming init",
};

// Fields of SAELens's `TrainingSAEConfig` shared by every architecture.
const commonFields = {
  /** Input width: the dimension of the activations being encoded. */
  d_in: positiveInt(),
  /** Number of latents (features) in the SAE. */
  d_sae: positiveInt(),
  /** Parameter dtype; only "float32" is supported here. */
  dtype: z.literal("float32").default("float32"),
  /** SAELens device string, kept for round-trips; the WebGPU device is chosen elsewhere. */
  device: z.string().default("cpu"),
  /** Subtract b_dec from the input before encoding. */
  apply_b_dec_to_input: flag().default(true),
  /** How inputs are normalised before encoding (and outputs de-normalised after decoding). */
  normalize_activations: z.enum(NORMALIZE_ACTIVATIONS).default("none"),
  /** Input reshaping: "hook_z" flattens attention-head outputs [.., n_heads, d_head]. */
  reshape_activations: z.enum(["none", "hook_z"]).default("none"),
  /** SAELens `SAEMetadata` (model, hook, versions, ...): passed through untouched. */
  metadata: z.looseObject({}).default({}),
  /** Norm of every decoder row at init (0.1 = Anthropic's heuristic); null keeps Kaiming init. */
  decoder_init_norm: positiveNumber().nullable().default(0.1),
};

// Fields of `TopKTrainingSAEConfig`, shared by the TopK family.
const topkFields = {
  /** Kept latents per row (SAELens default 100). */
  k: positiveInt().default(100),
  /** Produce sparse COO activations in SAELens (a memory optimisation; no effect on math). */
  use_sparse_activations: flag().default(false),
  /** Weight of the dead-latent auxiliary reconstruction loss. */
  aux_loss_coefficient: nonNegativeNumber().default(1.0),
  /** Select and scale latents as if every decoder row had unit norm. */
  rescale_acts_by_decoder_norm: flag().default(true),
};

// Fields of `BatchTopKTrainingSAEConfig` (on top of the TopK ones).
const batchtopkFields = {
  ...topkFields,
  /** Average kept latents per row over the batch; may be fractional (top int(k*rows) kept). */
  k: positiveNumber().default(100),
  /** EMA rate of the inference threshold towards the batch's smallest kept activation. */
  topk_threshold_lr: unitInterval().default(0.01),
};

/** `StandardTrainingSAEConfig`: ReLU SAE with an Lp penalty weighted by decoder row norms. */
export const StandardSaeConfigSchema = z.strictObject({
  /** Architecture name. */
  architecture: z.literal("standard"),
  ...commonFields,
  /** Final coefficient of the sparsity penalty. */
  l1_coefficient: nonNegativeNumber().default(1.0),
  /** p of the Lp norm in the sparsity penalty. */
  lp_norm: positiveNumber().default(1.0),
  /** Steps over which the sparsity coefficient ramps linearly from 0. */
  l1_warm_up_steps: nonNegativeInt().default(0),
});

/** `TopKTrainingSAEConfig`: per-row top-k then ReLU. */
export const TopKSaeConfigSchema = z.strictObject({
  /** Architecture name. */
  architecture: z.literal("topk"),
  ...commonFields,
  ...topkFields,
}).superRefine((cfg, ctx) => {
  if (cfg.k > cfg.d_sae) tooLargeK(cfg.k, cfg.d_sae, ctx);
});

/** `BatchTopKTrainingSAEConfig`: top int(k*rows) over the whole batch; saved as JumpReLU. */
export const BatchTopKSaeConfigSchema = z.strictObject({
  /** Architecture name. */
  architecture: z.literal("batchtopk"),
  ...commonFields,
  ...batchtopkFields,
}).superRefine((cfg, ctx) => {
  if (cfg.k > cfg.d_sae) tooLargeK(cfg.k, cfg.d_sae, ctx);
});

/** `MatryoshkaBatchTopKTrainingSAEConfig`: BatchTopK plus nested prefix reconstruction losses. */
export const MatryoshkaBatchTopKSaeConfigSchema = z.strictObject({
  /** Architecture name. */
  architecture: z.literal("matryoshka_batchtopk"),
  ...commonFields,
  ...batchtopkFields,
  /** Nested prefix widths, strictly increasing; the last is d_sae (appended if missing). */
  matryoshka_widths: z.array(positiveInt()).min(1),
  /** Later-SAELens option (absent in 6.18): per-prefix aux loss; false is 6.18's behaviour. */
  use_matryoshka_aux_loss: flag().default(false),
}).superRefine((cfg, ctx) => {
  if (cfg.k > cfg.d_sae) tooLargeK(cfg.k, cfg.d_sae, ctx);
  const w = cfg.matryoshka_widths;
  for (let i = 0; i < w.length; i++) {
    if (w[i] > cfg.d_sae) {
      ctx.addIssue({
        code: "custom",
        path: ["matryoshka_widths", i],
        input: w[i],
        message: `width ${w[i]} exceeds d_sae (${cfg.d_sae})`,
      });
    } else if (i > 0 && w[i] <= w[i - 1]) {
      ctx.addIssue({
        code: "custom",
        path: ["matryoshka_widths", i],
        input: w[i],
        message: `widths must be strictly increasing, but ${w[i]} follows ${w[i - 1]}`,
      });
    }
  }
  if (w[0] < cfg.k) {
    ctx.addIssue({
      code: "custom",
      path: ["matryoshka_widths", 0],
      input: w[0],
      message: `the smallest width (${w[0]}) cannot be smaller than k (${cfg.k}), as in SAELens`,
    });
  }
});

/** `JumpReLUTrainingSAEConfig`: learned per-latent thresholds with a straight-through L0. */
export const JumpReLUSaeConfigSchema = z.strictObject({
  /** Architecture name. */
  architecture: z.literal("jumprelu"),
  ...commonFields,
  /** Initial threshold of every latent (stored as log_threshold). */
  jumprelu_init_threshold: positiveNumber().default(0.01),
  /** Width of the rectangle kernel in the threshold's pseudo-gradient. */
  jumprelu_bandwidth: positiveNumber().default(0.05),
  /** Final coefficient of the sparsity (L0 or tanh) loss. */
  l0_coefficient: nonNegativeNumber().default(1.0),
  /** Steps over which the sparsity coefficient ramps linearly from 0. */
  l0_warm_up_steps: nonNegativeInt().default(0),
  /** Anthropic's pre-activation loss on dead latents; null disables it. */
  pre_act_loss_coefficient: nonNegativeNumber().nullable().default(null),
  /** "step": DeepMind's L0 through Step; "tanh": Anthropic's tanh(scale * f * |W_dec|). */
  jumprelu_sparsity_loss_mode: z.enum(["step", "tanh"]).default("step"),
  /** Scale inside tanh for the "tanh" sparsity loss. */
  jumprelu_tanh_scale: positiveNumber().default(4.0),
});

/** `GatedTrainingSAEConfig`: gate and magnitude paths sharing W_enc. */
export const GatedSaeConfigSchema = z.strictObject({
  /** Architecture name. */
  architecture: z.literal("gated"),
  ...commonFields,
  /** Final coefficient of the gate sparsity penalty. */
  l1_coefficient: nonNegativeNumber().default(1.0),
  /** Steps over which the sparsity coefficient ramps linearly from 0. */
  l1_warm_up_steps: nonNegativeInt().default(0),
});

/**
 * Every v6 SAE config, discriminated on `architecture`. Prefer `parseSaeConfig`, which adds
 * SAELens's normalisations (metadata fields, matryoshka widths) and field-naming messages.
 */
export const SaeConfigSchema = z.discriminatedUnion("architecture", [
  StandardSaeConfigSchema,
  TopKSaeConfigSchema,
  BatchTopKSaeConfigSchema,
  MatryoshkaBatchTopKSaeConfigSchema,
  JumpReLUSaeConfigSchema,
  GatedSaeConfigSchema,
]);

/** Parsed standard SAE config. */
export type StandardSaeConfig = z.output<typeof StandardSaeConfigSchema>;
/** Parsed TopK SAE config. */
export type TopKSaeConfig = z.output<typeof TopKSaeConfigSchema>;
/** Parsed BatchTopK SAE config. */
export type BatchTopKSaeConfig = z.output<typeof BatchTopKSaeConfigSchema>;
/** Parsed Matryoshka BatchTopK SAE config (widths always end at d_sae after parseSaeConfig). */
export type MatryoshkaBatchTopKSaeConfig = z.output<typeof MatryoshkaBatchTopKSaeConfigSchema>;
/** Parsed JumpReLU SAE config. */
export type JumpReLUSaeConfig = z.output<typeof JumpReLUSaeConfigSchema>;
/** Parsed gated SAE config. */
export type GatedSaeConfig = z.output<typeof GatedSaeConfigSchema>;
/** Any parsed v6 SAE config; switch on `architecture`. */
export type SaeConfig = z.output<typeof SaeConfigSchema>;

const SCHEMAS = {
  standard: StandardSaeConfigSchema,
  topk: TopKSaeConfigSchema,
  batchtopk: BatchTopKSaeConfigSchema,
  matryoshka_batchtopk: MatryoshkaBatchTopKSaeConfigSchema,
  jumprelu: JumpReLUSaeConfigSchema,
  gated: GatedSaeConfigSchema,
} as const;

/** Field names each architecture accepts. */
const FIELDS = {} as Record<Architecture, readonly string[]>;
for (const a of ARCHITECTURES) FIELDS[a] = Object.keys(SCHEMAS[a].shape);

/**
 * SAELens `SAEMetadata` fields. Pre-6 `cfg.json` files keep them at the top level; parseSaeConfig
 * moves them into `metadata` (they never change the math).
 */
export const METADATA_FIELDS = [
  "sae_lens_version",
  "sae_lens_training_version",
  "model_name",
  "model_class_name",
  "hook_name",
  "hook_head_index",
  "dataset_path",
  "dataset_trust_remote_code",
  "context_size",
  "prepend_bos",
  "seqpos_slice",
  "model_from_pretrained_kwargs",
  "exclude_special_tokens",
  "sequence_separator_token",
  "disable_concat_sequences",
  "neuronpedia_id",
] as const;

/** Fields only a SAELens 5.x SAE config has; their presence routes users to parseV5SaeConfig. */
const V5_ONLY_FIELDS = [
  "use_ghost_grads",
  "normalize_sae_decoder",
  "activation_fn_str",
  "activation_fn_kwargs",
  "finetuning_scaling_factor",
  "decoder_heuristic_init",
  "decoder_heuristic_init_norm",
  "decoder_orthogonal_init",
  "init_encoder_as_decoder_transpose",
  "scale_sparsity_penalty_by_decoder_norm",
  "mse_loss_normalization",
  "noise_scale",
  "hook_layer",
];

function tooLargeK(k: number, dSae: number, ctx: z.RefinementCtx): void {
  ctx.addIssue({
    code: "custom",
    path: ["k"],
    input: k,
    message: `k (${k}) cannot exceed d_sae (${dSae})`,
  });
}

/** Where an unknown key is valid instead, worded for an error message. */
function ownerOf(key: string): string | undefined {
  if (V5_ONLY_FIELDS.includes(key)) return "a SAELens 5.x field that v6 removed";
  const owners = ARCHITECTURES.filter((a) => FIELDS[a].includes(key));
  return owners.length ? `it is a field of architecture ${owners.join(", ")}` : undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Parses a SAELens v6 `TrainingSAEConfig.to_dict()` (6.18 field names, defaults for omitted
 * fields). `source` names where `obj` sits (e.g. "config.sae" or "run.json sae"); errors are
 * `ConfigError`s with one `<source>.<field>: expected ..., got ... (fix: ...)` line per problem.
 * Matryoshka widths that stop short of d_sae get d_sae appended with a warning, as SAELens does.
 */
export function parseSaeConfig(
  obj: unknown,
  source = "config.sae",
  warn: (message: string) => void = console.warn,
): SaeConfig {
  if (!isRecord(obj)) {
    throw new ConfigError([`${source}: expected an object with an "architecture" field`]);
  }
  const arch = obj.architecture;
  if (typeof arch !== "string" || !(ARCHITECTURES as readonly string[]).includes(arch)) {
    const got = arch === undefined ? "it is missing" : `got ${JSON.stringify(arch)}`;
    throw new ConfigError([
      `${formatPath(source, ["architecture"])}: unknown architecture, ${got}; ` +
      `valid architectures: ${ARCHITECTURES.join(", ")}`,
    ]);
  }
  const v5 = V5_ONLY_FIELDS.filter((f) => f in obj && !FIELDS[arch as Architecture].includes(f));
  if (v5.length > 0) {
    throw new ConfigError([
      `${source}: this is a SAELens 5.x SAE config (it has ${quoteList(v5)}), which v6 ` +
      `dropped (fix: parse it with parseV5SaeConfig, or write a v6 config)`,
    ]);
  }
  // Move top-level metadata fields (pre-6 cfg.json style) into `metadata`.
  const input: Record<string, unknown> = { ...obj };
  const moved: Record<string, unknown> = {};
  for (const key of METADATA_FIELDS) {
    if (key in input) {
      moved[key] = input[key];
      delete input[key];
    }
  }
  if (Object.keys(moved).length > 0) {
    input.metadata = { ...moved, ...(isRecord(input.metadata) ? input.metadata : {}) };
  }
  const schema = SCHEMAS[arch as Architecture];
  const unknown = Object.keys(input).filter((k) => !FIELDS[arch as Architecture].includes(k));
  const unknownLines = unknown.length === 0 ? [] : unknownFieldsMessage(
    unknown,
    FIELDS[arch as Architecture],
    ` for architecture ${arch}`,
    ownerOf,
  ).split("\n").map((line) => `${source}: ${line}`);
  for (const key of unknown) delete input[key];
  let cfg: SaeConfig;
  try {
    cfg = parseOrThrow(schema, input, source, FIXES);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError([...unknownLines, ...e.issues]);
    throw e;
  }
  if (unknownLines.length > 0) throw new ConfigError(unknownLines);
  if (cfg.architecture === "matryoshka_batchtopk") {
    const w = cfg.matryoshka_widths;
    if (w[w.length - 1] !== cfg.d_sae) {
      warn(
        `${formatPath(source, ["matryoshka_widths"])}: the last width (${w[w.length - 1]}) is ` +
          `not d_sae; appending ${cfg.d_sae} as SAELens does ("A final matryoshka level of ` +
          `width=cfg.d_sae will be added.")`,
      );
      cfg = { ...cfg, matryoshka_widths: [...w, cfg.d_sae] };
    }
    if (cfg.matryoshka_widths.length === 1) {
      warn(
        `${formatPath(source, ["matryoshka_widths"])}: only one matryoshka level; this is a ` +
          `plain BatchTopK SAE (SAELens warns the same)`,
      );
    }
  }
  return cfg;
}

// SAELens 5.x (`TrainingSAEConfig` of 5.11): the fields that change the math.

/** SAELens 5.x loss/init fields, shared by the v5 SAE config and the v5 runner config. */
export const v5LossFields = {
  /** Input normalisation mode. */
  normalize_activations: z.enum(NORMALIZE_ACTIVATIONS).default("none"),
  /** Subtract b_dec from the input before encoding. */
  apply_b_dec_to_input: flag().default(true),
  /** Coefficient of the sparsity penalty (also the L0 coefficient of v5 JumpReLU). */
  l1_coefficient: nonNegativeNumber().default(1e-3),
  /** p of the Lp sparsity penalty. */
  lp_norm: positiveNumber().default(1),
  /** Ghost-grads dead-latent loss. */
  use_ghost_grads: flag().default(false),
  /** Renormalise decoder rows to unit norm every step (and project their gradients). */
  normalize_sae_decoder: flag().default(true),
  /** Std of Gaussian noise added to pre-activations during training. */
  noise_scale: nonNegativeNumber().default(0),
  /** Orthogonal decoder init. */
  decoder_orthogonal_init: flag().default(false),
  /** Initialise W_enc as W_dec transposed. */
  init_encoder_as_decoder_transpose: flag().default(false),
  /** "dense_batch" divides the MSE by the batch's per-dimension variance; null: plain MSE. */
  mse_loss_normalization: z.enum(["dense_batch"]).nullable().default(null),
  /** Anthropic heuristic init: uniform decoder rows rescaled to decoder_heuristic_init_norm. */
  decoder_heuristic_init: flag().default(false),
  /** Row norm used by decoder_heuristic_init. */
  decoder_heuristic_init_norm: positiveNumber().default(0.1),
  /** Weight each latent's penalty by its decoder row norm. */
  scale_sparsity_penalty_by_decoder_norm: flag().default(false),
  /** Initial JumpReLU threshold. */
  jumprelu_init_threshold: positiveNumber().default(0.001),
  /** JumpReLU pseudo-gradient bandwidth. */
  jumprelu_bandwidth: positiveNumber().default(0.001),
};

/** SAELens 5.x `TrainingSAEConfig.to_dict()`: math fields typed, the rest passed through. */
export const V5SaeConfigSchema = z.looseObject({
  /** v5 architecture name. */
  architecture: z.enum(["standard", "gated", "jumprelu", "topk"]).default("standard"),
  /** Input width. */
  d_in: positiveInt(),
  /** Number of latents. */
  d_sae: positiveInt(),
  /** Parameter dtype; only "float32" is supported here. */
  dtype: z.literal("float32").default("float32"),
  /** SAELens device string. */
  device: z.string().default("cpu"),
  /** Activation: "relu", "tanh-relu" or "topk". */
  activation_fn_str: z.enum(["relu", "tanh-relu", "topk"]).default("relu"),
  /** Activation options ({k} for topk). */
  activation_fn_kwargs: z.record(z.string(), z.number()).default({}),
  /** Whether a learned per-latent output scale exists (finetuning). */
  finetuning_scaling_factor: flag().default(false),
  ...v5LossFields,
}).superRefine((cfg, ctx) => {
  if (cfg.architecture === "topk" && cfg.activation_fn_str !== "topk") {
    ctx.addIssue({
      code: "custom",
      path: ["activation_fn_str"],
      input: cfg.activation_fn_str,
      message: 'the topk architecture needs activation_fn_str "topk"',
    });
  }
  if (cfg.activation_fn_str === "topk" && cfg.activation_fn_kwargs.k === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["activation_fn_kwargs", "k"],
      message: "a topk activation needs activation_fn_kwargs.k",
    });
  }
});

/** Parsed SAELens 5.x SAE config. */
export type V5SaeConfig = z.output<typeof V5SaeConfigSchema>;

/** Parses a SAELens 5.x `TrainingSAEConfig.to_dict()` (the `config.sae` of the 5.11 fixtures). */
export function parseV5SaeConfig(obj: unknown, source = "config.sae"): V5SaeConfig {
  return parseOrThrow(V5SaeConfigSchema, obj, source, FIXES);
}
