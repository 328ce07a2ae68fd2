/**
 * Training on the tiny GPT-2's residual stream (data.source "model"): a run completes, and a
 * run stopped at a checkpoint and resumed gives bit-identical parameters to an uninterrupted one.
 */
import assert from "node:assert/strict";
import { parseRunConfig } from "../src/config/run.ts";
import { runTraining } from "../src/train/run.ts";
import { gpuTest, testGpu } from "./helpers.ts";

const raw = {
  sae: { architecture: "topk", d_in: 64, d_sae: 128, k: 8 },
  trainer: {
    lr: 1e-3,
    total_training_samples: 64 * 30,
    train_batch_size_samples: 64,
    lr_warm_up_steps: 3,
    dead_feature_window: 10,
    feature_sampling_window: 10,
    logger: { log_to_wandb: false },
  },
  data: {
    source: "model",
    model_name: "fixtures/tiny-gpt2",
    hook_name: "blocks.1.hook_resid_post",
    dataset_path: "fixtures/tiny-gpt2/corpus",
    context_size: 32,
    store_batch_size_prompts: 4,
    n_batches_in_buffer: 4,
    threads: 1,
  },
  seed: 3,
  log_every: 10,
  checkpoint_every: 10,
  n_eval_batches: 2,
};

Deno.test(
  "model source: 10 steps + resume + 20 steps gives the same SAE as 30 straight",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const config = parseRunConfig(raw);
    const straight = await runTraining(gpu, config, { outDir: await Deno.makeTempDir() });
    assert.equal(straight.steps, 30);
    const saved = JSON.parse(await Deno.readTextFile(`${straight.saeDir}/cfg.json`));
    assert.equal(saved.metadata.hook_name, "blocks.1.hook_resid_post");
    assert.equal(saved.metadata.model_name, raw.data.model_name);
    const outDir = await Deno.makeTempDir();
    await runTraining(gpu, config, { outDir, stopAfterSteps: 10 });
    const resumed = await runTraining(gpu, config, { outDir, resume: true });
    assert.equal(resumed.steps, 30);
    for (const [name, value] of Object.entries(straight.params)) {
      assert.deepEqual(resumed.params[name], value, `${name} differs after resume`);
    }
  },
);
