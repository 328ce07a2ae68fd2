/** Config schemas: every fixture config parses unchanged; defaults; readable errors. */
import assert from "node:assert/strict";
import { ConfigError } from "../src/config/errors.ts";
import {
  ARCHITECTURES,
  type BatchTopKSaeConfig,
  type MatryoshkaBatchTopKSaeConfig,
  parseSaeConfig,
  parseV5SaeConfig,
} from "../src/config/sae.ts";
import {
  parseScheduleConfig,
  parseTrainerConfig,
  parseV5RunnerConfig,
  totalTrainingSteps,
} from "../src/config/trainer.ts";

interface FixtureCase {
  id: string;
  kind: string;
  architecture: string | null;
  saelens_version: string;
  config: { sae?: object; trainer?: object; runner?: object };
}

const manifest = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/saelens/manifest.json", import.meta.url)),
) as { cases: FixtureCase[] };

/** Asserts every field of `input` comes back unchanged in `parsed`. */
function assertKeeps(parsed: object, input: object, what: string): void {
  for (const [key, value] of Object.entries(input)) {
    assert.deepStrictEqual((parsed as Record<string, unknown>)[key], value, `${what}.${key}`);
  }
}

/** Runs `fn`, expects a ConfigError, and returns its message. */
function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${e}`);
    return e.message;
  }
  assert.fail("expected a ConfigError, but the config parsed");
}

/** Asserts `message` contains every one of `parts`. */
function assertMentions(message: string, ...parts: string[]): void {
  for (const part of parts) {
    assert.ok(message.includes(part), `expected ${JSON.stringify(part)} in:\n${message}`);
  }
}

const noWarn = () => assert.fail("unexpected warning");
const base = { d_in: 32, d_sae: 128 };

Deno.test("every fixture config parses unchanged", () => {
  const seen = new Set<string>();
  let parsed = 0;
  for (const c of manifest.cases) {
    const where = `${c.id}: config`;
    const v5 = c.saelens_version.startsWith("5.");
    if (c.config.sae) {
      const sae = v5
        ? parseV5SaeConfig(c.config.sae, `${where}.sae`)
        : parseSaeConfig(c.config.sae, `${where}.sae`, noWarn);
      assertKeeps(sae, c.config.sae, `${where}.sae`);
      if (!v5) seen.add(sae.architecture);
      parsed++;
    }
    if (c.config.trainer) {
      const trainer = c.kind === "schedule"
        ? parseScheduleConfig(c.config.trainer, `${where}.trainer`)
        : parseTrainerConfig(c.config.trainer, `${where}.trainer`);
      assertKeeps(trainer, c.config.trainer, `${where}.trainer`);
      parsed++;
    }
    if (c.config.runner) {
      assert.ok(v5, `${c.id}: runner configs come from SAELens 5.x`);
      assertKeeps(parseV5RunnerConfig(c.config.runner, `${where}.runner`), c.config.runner, where);
      parsed++;
    }
  }
  assert.deepStrictEqual([...seen].sort(), [...ARCHITECTURES].sort());
  assert.ok(parsed >= manifest.cases.length, `only ${parsed} configs parsed`);
});

Deno.test("fixture trainer configs give the steps the fixtures ran", () => {
  const c = manifest.cases.find((c) => c.id === "standard-step-l1")!;
  assert.equal(totalTrainingSteps(parseTrainerConfig(c.config.trainer)), 2);
});

Deno.test("SAE defaults follow SAELens 6.18", () => {
  const cfg = (architecture: string, extra = {}) =>
    parseSaeConfig({ architecture, ...base, ...extra }, "config.sae", noWarn);
  const common = {
    dtype: "float32",
    device: "cpu",
    apply_b_dec_to_input: true,
    normalize_activations: "none",
    reshape_activations: "none",
    metadata: {},
    decoder_init_norm: 0.1,
  };
  assert.deepStrictEqual(cfg("standard"), {
    architecture: "standard",
    ...base,
    ...common,
    l1_coefficient: 1,
    lp_norm: 1,
    l1_warm_up_steps: 0,
  });
  const topk = {
    k: 100,
    use_sparse_activations: false,
    aux_loss_coefficient: 1,
    rescale_acts_by_decoder_norm: true,
  };
  assert.deepStrictEqual(cfg("topk"), { architecture: "topk", ...base, ...common, ...topk });
  assert.deepStrictEqual(cfg("batchtopk"), {
    architecture: "batchtopk",
    ...base,
    ...common,
    ...topk,
    topk_threshold_lr: 0.01,
  });
  assert.deepStrictEqual(cfg("matryoshka_batchtopk", { matryoshka_widths: [100, 128] }), {
    architecture: "matryoshka_batchtopk",
    ...base,
    ...common,
    ...topk,
    topk_threshold_lr: 0.01,
    matryoshka_widths: [100, 128],
    use_matryoshka_aux_loss: false,
  });
  assert.deepStrictEqual(cfg("jumprelu"), {
    architecture: "jumprelu",
    ...base,
    ...common,
    jumprelu_init_threshold: 0.01,
    jumprelu_bandwidth: 0.05,
    l0_coefficient: 1,
    l0_warm_up_steps: 0,
    pre_act_loss_coefficient: null,
    jumprelu_sparsity_loss_mode: "step",
    jumprelu_tanh_scale: 4,
  });
  assert.deepStrictEqual(cfg("gated"), {
    architecture: "gated",
    ...base,
    ...common,
    l1_coefficient: 1,
    l1_warm_up_steps: 0,
  });
  // BatchTopK's k may be fractional; null decoder_init_norm keeps the Kaiming init.
  assert.equal((cfg("batchtopk", { k: 6.5 }) as BatchTopKSaeConfig).k, 6.5);
  assert.equal(cfg("standard", { decoder_init_norm: null }).decoder_init_norm, null);
});

Deno.test("top-level SAELens metadata fields move into metadata", () => {
  const cfg = parseSaeConfig(
    { architecture: "standard", ...base, hook_name: "blocks.0.hook_resid_pre", metadata: { a: 1 } },
  );
  assert.deepStrictEqual(cfg.metadata, { hook_name: "blocks.0.hook_resid_pre", a: 1 });
  assert.ok(!("hook_name" in cfg));
});

Deno.test("matryoshka widths short of d_sae get d_sae appended with a warning", () => {
  const warnings: string[] = [];
  const cfg = parseSaeConfig(
    { architecture: "matryoshka_batchtopk", ...base, k: 4, matryoshka_widths: [16, 64] },
    "config.sae",
    (w) => warnings.push(w),
  ) as MatryoshkaBatchTopKSaeConfig;
  assert.deepStrictEqual(cfg.matryoshka_widths, [16, 64, 128]);
  assert.equal(warnings.length, 1);
  assertMentions(warnings[0], "config.sae.matryoshka_widths", "appending 128");
});

Deno.test("trainer defaults follow SAELens 6.18's runner", () => {
  const cfg = parseTrainerConfig({});
  assert.equal(cfg.lr, 3e-4);
  assert.equal(cfg.lr_end, 3e-4 / 10);
  assert.equal(cfg.lr_scheduler_name, "constant");
  assert.equal(cfg.adam_beta1, 0.9);
  assert.equal(cfg.adam_beta2, 0.999);
  assert.equal(cfg.lr_warm_up_steps, 0);
  assert.equal(cfg.lr_decay_steps, 0);
  assert.equal(cfg.n_restart_cycles, 1);
  assert.equal(cfg.train_batch_size_samples, 4096);
  assert.equal(cfg.total_training_samples, 2_000_000);
  assert.equal(cfg.dead_feature_window, 1000);
  assert.equal(cfg.feature_sampling_window, 2000);
  assert.equal(cfg.n_checkpoints, 0);
  assert.equal(cfg.save_final_checkpoint, false);
  assert.equal(cfg.logger.wandb_project, "sae_lens_training");
  // SAELens lower-cases the scheduler name.
  assert.equal(
    parseTrainerConfig({ lr_scheduler_name: "CosineAnnealing" }).lr_scheduler_name,
    "cosineannealing",
  );
});

Deno.test("v5 runner config resolves SAELens 5.x's post-init defaults", () => {
  const cfg = parseV5RunnerConfig({ d_in: 16, expansion_factor: 8, lr: 1e-3, model_name: "gpt2" });
  assert.equal(cfg.d_sae, 128);
  assert.equal(cfg.adam_beta1, 0);
  assert.equal(cfg.activation_fn, "relu");
  assert.deepStrictEqual(cfg.activation_fn_kwargs, {});
  assert.equal(cfg.lr_end, 1e-3 / 10);
  assert.equal(cfg.normalize_sae_decoder, true);
  assert.equal(cfg.model_name, "gpt2", "LM fields pass through");
  const topk = parseV5RunnerConfig({ architecture: "topk", d_in: 16, d_sae: 64 });
  assert.equal(topk.activation_fn, "topk");
  assert.deepStrictEqual(topk.activation_fn_kwargs, { k: 100 });
  assertMentions(
    errorOf(() => parseV5RunnerConfig({ d_in: 16, d_sae: 64, expansion_factor: 4 })),
    "config.runner.expansion_factor",
    "not both",
  );
});

Deno.test("unknown architecture: the message lists the valid ones", () => {
  const msg = errorOf(() => parseSaeConfig({ architecture: "topkk", ...base }));
  assertMentions(msg, "config.sae.architecture", '"topkk"', ...ARCHITECTURES);
  assertMentions(errorOf(() => parseSaeConfig(base)), "architecture", "missing", "standard");
});

Deno.test("k: negative, non-integer for topk, larger than d_sae", () => {
  assert.equal(
    errorOf(() => parseSaeConfig({ architecture: "topk", ...base, k: -3 })).split(" (fix:")[0],
    "config.sae.k: expected a positive integer, got -3",
  );
  assertMentions(
    errorOf(() => parseSaeConfig({ architecture: "topk", ...base, k: 2.5 })),
    "config.sae.k: expected a positive integer, got 2.5",
    "fix:",
  );
  assertMentions(
    errorOf(() => parseSaeConfig({ architecture: "batchtopk", ...base, k: -0.5 })),
    "config.sae.k: expected a number > 0, got -0.5",
  );
  assertMentions(
    errorOf(() => parseSaeConfig({ architecture: "topk", ...base, k: 129 })),
    "config.sae.k",
    "cannot exceed d_sae (128)",
  );
});

Deno.test("matryoshka widths: not increasing, beyond d_sae, below k, empty", () => {
  const mat = (widths: unknown, k = 4) =>
    errorOf(() =>
      parseSaeConfig({
        architecture: "matryoshka_batchtopk",
        ...base,
        k,
        matryoshka_widths: widths,
      })
    );
  assertMentions(mat([32, 16, 128]), "config.sae.matryoshka_widths.1", "strictly increasing");
  assertMentions(mat([16, 256]), "config.sae.matryoshka_widths.1", "exceeds d_sae (128)", "fix:");
  assertMentions(mat([8, 128], 16), "config.sae.matryoshka_widths.0", "smaller than k");
  assertMentions(mat([]), "config.sae.matryoshka_widths", "at least 1");
  assertMentions(mat(undefined), "config.sae.matryoshka_widths", "expected an array", "missing");
});

Deno.test("wrong types name the field, the value and the expected type", () => {
  assertMentions(
    errorOf(() => parseSaeConfig({ architecture: "standard", d_in: "32", d_sae: 128 })),
    'config.sae.d_in: expected a positive integer, got the string "32"',
  );
  assertMentions(
    errorOf(() => parseSaeConfig({ architecture: "gated", ...base, apply_b_dec_to_input: 1 })),
    "config.sae.apply_b_dec_to_input: expected true or false, got 1",
  );
  assertMentions(
    errorOf(() => parseSaeConfig({ architecture: "standard", ...base, dtype: "bfloat16" })),
    "config.sae.dtype",
    '"float32"',
  );
  assertMentions(
    errorOf(() => parseSaeConfig({ architecture: "standard", ...base, lp_norm: "2" }, "run.sae")),
    'run.sae.lp_norm: expected a number > 0, got the string "2"',
  );
});

Deno.test("unknown lr_scheduler_name lists the schedulers", () => {
  const msg = errorOf(() => parseTrainerConfig({ lr_scheduler_name: "cosine" }));
  assertMentions(
    msg,
    "config.trainer.lr_scheduler_name",
    '"cosine"',
    '"constant", "cosineannealing", "cosineannealingwarmrestarts"',
  );
});

Deno.test("misspelled fields: the closest known field is suggested", () => {
  assertMentions(
    errorOf(() => parseSaeConfig({ architecture: "topk", ...base, kk: 3 })),
    'unknown field "kk" for architecture topk; did you mean "k"?',
  );
  assertMentions(
    errorOf(() => parseSaeConfig({ architecture: "jumprelu", ...base, l0_coeficient: 1 })),
    'did you mean "l0_coefficient"?',
  );
  assertMentions(
    errorOf(() => parseSaeConfig({ architecture: "topk", ...base, l1_coefficient: 1 })),
    '"l1_coefficient" for architecture topk (it is a field of architecture standard, gated)',
  );
  assertMentions(
    errorOf(() => parseTrainerConfig({ lr_warmup_steps: 10 })),
    'config.trainer: unknown field "lr_warmup_steps"; did you mean "lr_warm_up_steps"?',
  );
});

Deno.test("several problems are reported together", () => {
  const msg = errorOf(() => parseSaeConfig({ architecture: "topk", d_in: -1, d_sae: 128, kk: 1 }));
  assertMentions(msg, "2 problems", "config.sae.d_in", 'unknown field "kk"');
});

Deno.test("a SAELens 5.x SAE config is routed to parseV5SaeConfig", () => {
  const v5 = manifest.cases.find((c) => c.saelens_version.startsWith("5."))!;
  assertMentions(errorOf(() => parseSaeConfig(v5.config.sae)), "SAELens 5.x", "parseV5SaeConfig");
});

Deno.test("schedules SAELens cannot build are rejected", () => {
  assertMentions(
    errorOf(() =>
      parseTrainerConfig({
        total_training_samples: 100,
        train_batch_size_samples: 10,
        lr_warm_up_steps: 8,
        lr_decay_steps: 5,
      })
    ),
    "config.trainer.lr_decay_steps",
    "exceed the 10 training steps",
  );
  assertMentions(
    errorOf(() =>
      parseTrainerConfig({ lr_scheduler_name: "cosineannealing", lr_end: 0, lr_decay_steps: 3 })
    ),
    "config.trainer.lr_end",
    "decay from 0 to 0",
  );
});
