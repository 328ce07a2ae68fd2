/**
 * The `normalize` kind: the two-step check under each `normalize_activations` mode, plus for
 * `expected_average_only_in` the scaling-factor estimate, the folding of the factor into the
 * weights (`folded.*`) and a short real fit() from a fresh SAE (`fit.*`).
 */
import type { Gpu } from "../src/gpu/device.ts";
import { InferenceModel } from "../src/saes/inference.ts";
import {
  estimateScalingFactor,
  foldScalingFactor,
  scaleBatch,
} from "../src/train/activation_scaler.ts";
import { Trainer } from "../src/train/trainer.ts";
import type { Comparison } from "./compare.ts";
import type { FixtureCase } from "./fixtures.ts";
import {
  compareGroup,
  compareInference,
  f32,
  group,
  makeSae,
  readRecord,
  runTwoSteps,
  setupStepCase,
  type StepCase,
  type Tensors,
} from "./step.ts";

export async function checkNormalizeCase(
  gpu: Gpu,
  c: FixtureCase,
  tensors: Tensors,
): Promise<Comparison> {
  const k = setupStepCase(gpu, c, tensors);
  if (k.cfg.normalize_activations !== "expected_average_only_in") {
    await runTwoSteps(k);
    if (tensors.has("inference.W_enc")) await compareInference(k);
    return k.cmp;
  }
  const norm = tensors.get("input.norm_batches")!;
  const [n, rows, dIn] = norm.shape;
  const all = f32(norm);
  const batches = Array.from(
    { length: n },
    (_, b) => all.subarray(b * rows * dIn, (b + 1) * rows * dIn),
  );
  const scale = estimateScalingFactor(batches, dIn);
  const trained = await runTwoSteps(k, scale);
  await compareFolded(k, trained.readParams(), trained.readState(), scale);
  if (tensors.has("fit.stream")) await compareFit(k);
  return k.cmp;
}

/**
 * fit.*: SAETrainer.fit() on a fresh SAE (fit.init.*) whose provider cycles fit.stream: the
 * scaling factor from the first 1000 provider batches (SAELens's hard-coded count), then
 * `expected.fit_steps` scaled training steps, then the factor folded into the weights; for
 * BatchTopK also the converted JumpReLU and the training-mode encode of fit.stream[0].
 */
async function compareFit(k: StepCase): Promise<void> {
  const { gpu, tensors, cmp } = k;
  const stream = tensors.get("fit.stream")!;
  const [n, rows, dIn] = stream.shape;
  const all = f32(stream);
  const providerBatch = (j: number) => all.slice((j % n) * rows * dIn, ((j % n) + 1) * rows * dIn);
  const normBatches = 1000;
  const scale = estimateScalingFactor(
    Array.from({ length: normBatches }, (_, j) => providerBatch(j)),
    dIn,
  );
  const expected = k.c.expected ?? {};
  cmp.check(
    "expected.fit_scaling_factor",
    [scale],
    [expected.fit_scaling_factor as number],
    k.f64Tol,
  );

  const steps = expected.fit_steps as number;
  const init = Object.fromEntries(
    [...group(tensors, "fit.init")].map(([name, t]) => [name, f32(t)]),
  );
  const sae = makeSae(k, init, {});
  const trainer = new Trainer(sae, { ...k.trainer, total_training_samples: steps * rows });
  const x = gpu.empty([rows, dIn]);
  for (let i = 0; i < steps; i++) {
    gpu.write(x, scaleBatch(providerBatch(normBatches + i), scale));
    trainer.step(x, { log: true });
  }
  const losses = (await trainer.readMetrics()).map((m) => m.overall_loss);
  cmp.check("fit.trace.loss", losses, tensors.get("fit.trace.loss")!.values, k.tol);
  const state = await sae.readState();
  const folded = foldScalingFactor(await sae.readParams(), scale);
  const final: Record<string, ArrayLike<number>> = { ...folded };
  for (const [name, value] of Object.entries(state)) final[name] = [value];
  compareGroup(cmp, tensors, "fit.final", final, k.tol, k.f64Tol);
  if (typeof expected.fit_topk_threshold === "number") {
    cmp.check(
      "expected.fit_topk_threshold",
      [state.topk_threshold],
      [expected.fit_topk_threshold],
      k.f64Tol,
    );
  }
  trainer.dispose();
  if (!tensors.has("fit.inference.W_enc")) return;

  // The folded model converted for inference (threshold left in scaled units, as SAELens does)
  // and the folded training model, both encoding fit.stream[0] in raw units.
  const raw = providerBatch(0);
  const inference = k.arch.toInference(k.cfg, folded, state);
  const model = InferenceModel.upload(gpu, inference, { ...k.cfg, normalize_activations: "none" });
  const inferenceActs = await gpu.read(model.encode(gpu.upload(raw, [rows, dIn])));
  compareGroup(
    cmp,
    tensors,
    "fit.inference",
    {
      ...Object.fromEntries(Object.entries(inference.weights).map(([name, w]) => [name, w.data])),
      feature_acts: inferenceActs,
    },
    k.tol,
    k.f64Tol,
  );
  const trainMode = makeSae(k, folded, state).forwardBackward(
    gpu.upload(raw, [rows, dIn]),
    gpu.zeros([k.cfg.d_sae]),
    {},
  );
  const trainActs = (await readRecord(gpu, { acts: trainMode.outputs.feature_acts })).acts;
  compareGroup(cmp, tensors, "fit.train_mode", { feature_acts: trainActs }, k.tol, k.f64Tol);
  const l0 = (acts: Float32Array) => acts.filter((v) => v !== 0).length / rows;
  cmp.check(
    "expected.fit_inference_l0",
    [l0(inferenceActs)],
    [expected.fit_inference_l0 as number],
    k.scalarTol,
  );
  cmp.check(
    "expected.fit_train_mode_l0",
    [l0(trainActs)],
    [expected.fit_train_mode_l0 as number],
    k.scalarTol,
  );
}

/** folded.*: the trained model with the factor folded in, run on raw x; the reference runs the unfolded model on scaled x. */
async function compareFolded(
  k: StepCase,
  paramsPromise: Promise<Record<string, Float32Array>>,
  statePromise: Promise<Record<string, number>>,
  scale: number,
): Promise<void> {
  const [params, state] = [await paramsPromise, await statePromise];
  const folded = foldScalingFactor(params, scale);
  const stored = k.tensors.get("input.x")!;
  const run = async (weights: Record<string, Float32Array>, x: Float32Array) => {
    // A copy per forward: BatchTopK's forward moves its threshold, as SAELens's does.
    const sae = makeSae(k, weights, state);
    const result = sae.forwardBackward(
      k.gpu.upload(x, stored.shape),
      k.gpu.zeros([k.cfg.d_sae]),
      {},
    );
    return (await readRecord(k.gpu, { sae_out: result.outputs.sae_out })).sae_out;
  };
  const values: Record<string, ArrayLike<number>> = { ...folded };
  values.sae_out = await run(folded, f32(stored));
  values.sae_out_ref = Float32Array.from(
    await run(params, scaleBatch(f32(stored), scale)),
    (v) => v / scale,
  );
  compareGroup(k.cmp, k.tensors, "folded", values, k.tol, k.f64Tol);
}
