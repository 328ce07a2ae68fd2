/**
 * The `normalize` kind: the two-step check under each `normalize_activations` mode, plus for
 * `expected_average_only_in` the scaling-factor estimate and the folding of the factor into the
 * weights (`folded.*`).
 */
import type { Gpu } from "../src/gpu/device.ts";
import {
  estimateScalingFactor,
  foldScalingFactor,
  scaleBatch,
} from "../src/train/activation_scaler.ts";
import type { Comparison } from "./compare.ts";
import type { FixtureCase } from "./fixtures.ts";
import {
  compareGroup,
  compareInference,
  f32,
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
  return k.cmp;
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
