/**
 * Whole training runs on a tiny config: SAELens-format output loads back, resume is
 * bit-identical (in-process and after SIGKILL), bad configs and bad activations fail clearly.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadSae } from "../mod.ts";
import { ConfigError } from "../src/config/errors.ts";
import { parseRunConfig } from "../src/config/run.ts";
import { InferenceModel } from "../src/saes/inference.ts";
import { getArchitecture } from "../src/saes/registry.ts";
import { listCheckpoints } from "../src/train/checkpoint.ts";
import { assertFinite, runTraining } from "../src/train/run.ts";
import { assertClose, gpuTest, randomArray, testGpu } from "./helpers.ts";

const tiny = (architecture: string, extra: Record<string, unknown> = {}) => ({
  sae: { architecture, d_in: 16, d_sae: 64, ...extra },
  trainer: {
    lr: 3e-3,
    total_training_samples: 64 * 40,
    train_batch_size_samples: 64,
    lr_warm_up_steps: 5,
    lr_decay_steps: 10,
    dead_feature_window: 10,
    feature_sampling_window: 15,
    logger: { log_to_wandb: false },
  },
  data: { source: "synthetic", n_features: 32 },
  seed: 1,
  log_every: 10,
  checkpoint_every: 10,
});

const archConfigs: Record<string, Record<string, unknown>> = {
  standard: { l1_coefficient: 0.5 },
  topk: { k: 4 },
  batchtopk: { k: 4 },
  matryoshka_batchtopk: { k: 4, matryoshka_widths: [8, 32, 64] },
  jumprelu: { l0_coefficient: 0.1, jumprelu_init_threshold: 0.05 },
  gated: { l1_coefficient: 0.5 },
};

for (const [arch, extra] of Object.entries(archConfigs)) {
  Deno.test(
    `${arch}: a training run writes a SAELens directory whose encode/decode match the trained model`,
    gpuTest,
    async () => {
      const gpu = await testGpu();
      const config = parseRunConfig(tiny(arch, extra));
      const outDir = await Deno.makeTempDir();
      const result = await runTraining(gpu, config, { outDir });
      assert.equal(result.steps, 40);
      const loaded = await loadSae(gpu, result.saeDir!);
      const architecture = getArchitecture(arch);
      const reference = InferenceModel.upload(
        gpu,
        architecture.toInference(config.sae as never, result.params, result.state),
        { apply_b_dec_to_input: true },
      );
      const x = randomArray(8 * 16, 3, -1, 1);
      const acts = await gpu.read(reference.encode(gpu.upload(x, [8, 16])));
      assertClose(await loaded.encode(x, 8), acts, { rtol: 1e-6, atol: 1e-6, what: "encode" });
      const out = await gpu.read(reference.decode(gpu.upload(acts, [8, 64])));
      assertClose(await loaded.decode(acts, 8), out, { rtol: 1e-6, atol: 1e-6, what: "decode" });
      const evals = JSON.parse(await Deno.readTextFile(join(outDir, "eval.json")));
      assert.ok(
        evals["reconstruction_quality.explained_variance"] > 0,
        "the trained SAE explains variance",
      );
      const lines = (await Deno.readTextFile(join(outDir, "metrics.jsonl"))).trim().split("\n");
      assert.equal(lines.length, 4);
      assert.ok(Number.isFinite(JSON.parse(lines[3]).overall_loss));
    },
  );
}

Deno.test(
  "resume: 20 steps + resume + 20 steps gives the same parameters as 40 straight",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const config = parseRunConfig(tiny("batchtopk", { k: 4 }));
    const straight = await runTraining(gpu, config, { outDir: await Deno.makeTempDir() });
    const outDir = await Deno.makeTempDir();
    const first = await runTraining(gpu, config, { outDir, stopAfterSteps: 20 });
    assert.equal(first.steps, 20);
    assert.equal(first.saeDir, undefined);
    const resumed = await runTraining(gpu, config, { outDir, resume: true });
    assert.equal(resumed.steps, 40);
    for (const [name, value] of Object.entries(straight.params)) {
      assert.deepEqual(resumed.params[name], value, `${name} differs after resume`);
    }
  },
);

Deno.test(
  "resume after SIGKILL of a training process gives the uninterrupted result",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const raw = { ...tiny("topk", { k: 4 }), checkpoint_every: 5 };
    raw.trainer.total_training_samples = 64 * 200;
    const dir = await Deno.makeTempDir();
    const configPath = join(dir, "config.json");
    await Deno.writeTextFile(configPath, JSON.stringify(raw));
    const outDir = join(dir, "run");
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "src/cli/train.ts", "--config", configPath, "--out", outDir],
      stdout: "null",
      stderr: "null",
    }).spawn();
    // Kill as soon as one checkpoint exists (the process may be writing the next one).
    while ((await listCheckpoints(join(outDir, "checkpoints"))).length === 0) {
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill("SIGKILL");
    await child.status;
    const config = parseRunConfig(raw);
    const resumed = await runTraining(gpu, config, { outDir, resume: true });
    const straight = await runTraining(gpu, config, { outDir: join(dir, "straight") });
    for (const [name, value] of Object.entries(straight.params)) {
      assert.deepEqual(resumed.params[name], value, `${name} differs after kill + resume`);
    }
  },
);

Deno.test("bad run configs name the field and the fix", () => {
  const cases: Array<[unknown, RegExp]> = [
    [
      tiny("resnet"),
      /config\.sae\.architecture: unknown architecture.*valid architectures: standard/,
    ],
    [tiny("topk", { k: -3 }), /config\.sae\.k: expected a positive integer, got -3/],
    [
      tiny("matryoshka_batchtopk", { k: 4, matryoshka_widths: [8, 32] }),
      /matryoshka_widths.*make d_sae the last width/,
    ],
    [
      { ...tiny("topk", { k: 4 }), sae: { architecture: "topk", d_in: "16", d_sae: 64, k: 4 } },
      /config\.sae\.d_in: expected a positive integer, got the string "16"/,
    ],
    [{ ...tiny("topk", { k: 4 }), log_evry: 3 }, /log_evry/],
    [{ ...tiny("topk", { k: 4 }), data: { source: "web" } }, /config\.data\.source/],
  ];
  for (const [config, pattern] of cases) {
    assert.throws(
      () => parseRunConfig(config),
      (e: Error) => e instanceof ConfigError && pattern.test(e.message),
      String(pattern),
    );
  }
});

Deno.test("non-finite activations are rejected with the step, row and column", () => {
  const batch = new Float32Array(32);
  batch[21] = NaN;
  assert.throws(() => assertFinite(batch, 16, 7), /step 7 has NaN at row 1, column 5/);
  batch[21] = Infinity;
  assert.throws(() => assertFinite(batch, 16, 0), /Infinity at row 1, column 5/);
});

Deno.test(
  "a new run refuses a directory that already holds one (no silent overwrite)",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const config = parseRunConfig({
      ...tiny("topk", { k: 4 }),
      trainer: { ...tiny("topk").trainer, total_training_samples: 64 * 16 },
    });
    const outDir = await Deno.makeTempDir();
    await runTraining(gpu, config, { outDir });
    const before = await Deno.readFile(join(outDir, "sae", "sae_weights.safetensors"));
    await assert.rejects(
      () => runTraining(gpu, config, { outDir }),
      /already holds a run.*--resume/,
    );
    assert.deepEqual(await Deno.readFile(join(outDir, "sae", "sae_weights.safetensors")), before);
  },
);
