/**
 * The `step` kind: two real SAETrainer._train_step calls from given parameters. We replay them
 * on WebGPU, reading back between phases to compare every stored tensor group.
 */
import { parseSaeConfig } from "../src/config/sae.ts";
import {
  parseTrainerConfig,
  totalTrainingSteps,
  type TrainerConfig,
} from "../src/config/trainer.ts";
import type { Gpu } from "../src/gpu/device.ts";
import type { Tensor } from "../src/gpu/tensor.ts";
import { binary, unary } from "../src/kernels/elementwise.ts";
import { reduceCols } from "../src/kernels/reduce.ts";
import type { Architecture } from "../src/saes/architecture.ts";
import { InferenceModel } from "../src/saes/inference.ts";
import { getArchitecture } from "../src/saes/registry.ts";
import { type StepResult, TrainingSae } from "../src/saes/training_sae.ts";
import type { StepConfig } from "../src/saes/step.ts";
import { scaleBatch } from "../src/train/activation_scaler.ts";
import { featurewiseWeightMetrics, sparsityAndVarianceMetrics } from "../src/train/evals.ts";
import { coefficientAt, learningRates } from "../src/train/schedule.ts";
import { Comparison, type Tolerance } from "./compare.ts";
import type { FixtureCase, StoredTensor } from "./fixtures.ts";
import { applyClip } from "../src/train/optimizer.ts";

export type Tensors = Map<string, StoredTensor>;

export const f32 = (t: StoredTensor) => Float32Array.from(t.values);

/** Tensors of a prefix group (`params.W_enc` → `W_enc`). */
export function group(tensors: Tensors, prefix: string): Map<string, StoredTensor> {
  const out = new Map<string, StoredTensor>();
  for (const [name, t] of tensors) {
    if (name.startsWith(prefix + ".")) out.set(name.slice(prefix.length + 1), t);
  }
  return out;
}

/** Compares every stored tensor of `prefix` that we produced; missing ones fail. */
export function compareGroup(
  cmp: Comparison,
  tensors: Tensors,
  prefix: string,
  actual: Record<string, ArrayLike<number>>,
  tol: Tolerance,
  f64Tol: Tolerance,
): void {
  for (const [name, expected] of group(tensors, prefix)) {
    const got = actual[name];
    const full = `${prefix}.${name}`;
    if (!got) cmp.fail(`${full}: not produced by this implementation`);
    else cmp.check(full, got, expected.values, expected.dtype === "float64" ? f64Tol : tol);
  }
}

export async function readRecord(
  gpu: Gpu,
  record: Record<string, Tensor>,
): Promise<Record<string, Float32Array>> {
  const names = Object.keys(record);
  const values = await gpu.readMany(names.map((n) => record[n]));
  return Object.fromEntries(names.map((n, i) => [n, values[i]]));
}

function releaseResult(result: StepResult): void {
  const tensors = new Set<Tensor>([
    ...Object.values(result.outputs),
    ...Object.values(result.losses),
    ...Object.values(result.grads),
    result.total,
  ]);
  for (const t of tensors) if (!t.disposed) t.dispose();
}

/** Everything a step-like case check needs, parsed once. */
export interface StepCase {
  gpu: Gpu;
  c: FixtureCase;
  tensors: Tensors;
  cmp: Comparison;
  tol: Tolerance;
  f64Tol: Tolerance;
  scalarTol: Tolerance;
  cfg: StepConfig;
  arch: Architecture<StepConfig>;
  trainer: TrainerConfig;
  hostParams: Record<string, Float32Array>;
  hostState: Record<string, number>;
}

/** The model a case runs: its parsed SAE config, architecture and trainer config. */
export type CaseModel = Pick<StepCase, "cfg" | "arch" | "trainer">;

/** Parses a step-like case's inputs; the model defaults to the case's v6 configs. */
export function setupStepCase(
  gpu: Gpu,
  c: FixtureCase,
  tensors: Tensors,
  model: CaseModel = {
    cfg: parseSaeConfig(c.config.sae, `${c.id} config.sae`, () => {}) as unknown as StepConfig,
    trainer: parseTrainerConfig(c.config.trainer, `${c.id} config.trainer`),
    arch: getArchitecture(c.architecture ?? ""),
  },
): StepCase {
  const tol = c.tolerance as unknown as Tolerance;
  return {
    gpu,
    c,
    tensors,
    cmp: new Comparison(),
    tol,
    f64Tol: (c.tolerance.float64_tensors ?? tol) as Tolerance,
    scalarTol: (c.tolerance.expected_scalars ?? tol) as Tolerance,
    ...model,
    hostParams: Object.fromEntries([...group(tensors, "params")].map(([n, t]) => [n, f32(t)])),
    hostState: Object.fromEntries([...group(tensors, "state")].map(([n, t]) => [n, t.values[0]])),
  };
}

/** Uploads host parameters into a fresh TrainingSae with the case's Adam betas. */
export function makeSae(k: StepCase, params = k.hostParams, state = k.hostState): TrainingSae {
  return TrainingSae.fromHost(k.gpu, k.arch, k.cfg, params, state, {
    beta1: k.trainer.adam_beta1,
    beta2: k.trainer.adam_beta2,
  });
}

/**
 * Replays SAETrainer's two steps (forward+backward, clip, Adam) on input.x and input.x2,
 * comparing each group as it is produced. With `xScale` (expected_average_only_in) the batches
 * are scaled first and the unscaled output is reported as SAELens's ActivationScaler does.
 * Returns the trained SAE.
 */
export async function runTwoSteps(k: StepCase, xScale = 1): Promise<TrainingSae> {
  const { gpu, cmp, tensors, tol, f64Tol, cfg, arch } = k;
  const sae = makeSae(k);
  const lrs = learningRates({ ...k.trainer, total_steps: totalTrainingSteps(k.trainer) }, 2);
  const coefficientsAt = (i: number) =>
    Object.fromEntries(
      Object.entries(arch.coefficients(cfg)).map((
        [n, co],
      ) => [n, coefficientAt(i, co.value, co.warmUpSteps)]),
    );
  // Cases without dead latents store no mask: all alive.
  const storedMask = tensors.get("input.dead_neuron_mask");
  let deadMask = storedMask ? gpu.upload(f32(storedMask)) : gpu.zeros([cfg.d_sae]);
  const expectedNorms = [k.c.expected?.grad_norm, k.c.expected?.grad_norm2];
  const expectedDead = k.c.expected?.n_dead as number[] | undefined;
  for (const [i, suffix] of [[0, ""], [1, "2"]] as const) {
    const stored = tensors.get(`input.x${suffix}`)!;
    const hostX = f32(stored);
    if (xScale !== 1) scaleBatch(hostX, xScale);
    const x = gpu.upload(hostX, stored.shape);
    const result = sae.forwardBackward(x, deadMask, coefficientsAt(i));
    const losses = await readRecord(gpu, { ...result.losses, total: result.total });
    compareGroup(cmp, tensors, `loss${suffix}`, losses, tol, f64Tol);
    if (i === 0) {
      const outputs: Record<string, ArrayLike<number>> = await readRecord(gpu, result.outputs);
      if (xScale !== 1) {
        outputs.x_scaled = hostX;
        outputs.sae_out_scaled = outputs.sae_out;
        outputs.sae_out = Float32Array.from(outputs.sae_out, (v) => v / xScale);
        outputs.scaling_factor = [xScale];
      }
      compareGroup(cmp, tensors, "output", outputs, tol, f64Tol);
      if (xScale === 1) compareEvals(k, hostX, outputs);
      compareGroup(cmp, tensors, "grad", await readRecord(gpu, result.grads), tol, f64Tol);
    }
    const clip = sae.clip(result.grads);
    // Clipped in place so they can be read (training scales them inside Adam instead).
    applyClip(Object.values(result.grads), clip);
    if (i === 0) {
      compareGroup(cmp, tensors, "grad_clipped", await readRecord(gpu, result.grads), tol, f64Tol);
    }
    const [norm] = await gpu.read(clip);
    if (typeof expectedNorms[i] === "number") {
      cmp.check(`expected.grad_norm${suffix}`, [norm], [expectedNorms[i] as number], k.scalarTol);
    }
    if (expectedDead) {
      const nDead = (await gpu.read(deadMask)).reduce((a, b) => a + b, 0);
      cmp.checkExact(`expected.n_dead[${i}]`, [nDead], [expectedDead[i]]);
    }
    sae.optimizerStep(result.grads, lrs[i]);
    const after: Record<string, ArrayLike<number>> = await sae.readParams();
    for (const [name, value] of Object.entries(await sae.readState())) after[name] = [value];
    compareGroup(cmp, tensors, `after_step${suffix}`, after, tol, f64Tol);
    if (i === 0) {
      // Latents dead before step 1 stay dead unless they fired in it (their counters exceed the window).
      const fired = unary("greater", reduceCols(unary("abs", result.outputs.feature_acts)), {
        alpha: 0,
      });
      const next = binary("mul", deadMask, unary("affine", fired, { alpha: -1, beta: 1 }));
      const storedMask2 = tensors.get("input.dead_neuron_mask2");
      if (storedMask2) {
        cmp.checkExact("input.dead_neuron_mask2", await gpu.read(next), storedMask2.values);
      }
      deadMask = next;
    }
    releaseResult(result);
  }
  return sae;
}

/**
 * eval.*: SAELens evals of the pre-step model on input.x, one prompt of all rows (the fixtures'
 * test double returns the batch as one prompt). SAELens's training-mode encode is what the step
 * just ran, so its feature_acts are reused.
 */
function compareEvals(
  k: StepCase,
  x: Float32Array,
  outputs: Record<string, ArrayLike<number>>,
): void {
  if (!k.tensors.has("eval.feature_density")) return;
  const rows = x.length / k.cfg.d_in;
  const batch = {
    x,
    saeOut: outputs.sae_out as Float32Array,
    featureActs: outputs.feature_acts as Float32Array,
    rows,
  };
  const evals = sparsityAndVarianceMetrics([batch], k.cfg.d_in, k.cfg.d_sae, rows);
  compareGroup(
    k.cmp,
    k.tensors,
    "eval",
    {
      ...featurewiseWeightMetrics(k.hostParams, k.cfg.d_in, k.cfg.d_sae),
      feature_density: evals.featureDensity,
      consistent_activation_heuristic: evals.consistentActivationHeuristic,
    },
    k.tol,
    k.f64Tol,
  );
}

/** The pre-step model converted for inference, and its encode/decode on input.x. */
export async function compareInference(k: StepCase): Promise<void> {
  const { gpu, cfg, tensors } = k;
  const inference = k.arch.toInference(cfg, k.hostParams, k.hostState);
  const values: Record<string, ArrayLike<number>> = Object.fromEntries(
    Object.entries(inference.weights).map(([n, w]) => [n, w.data]),
  );
  const model = InferenceModel.upload(gpu, inference, cfg);
  const x = gpu.upload(f32(tensors.get("input.x")!), tensors.get("input.x")!.shape);
  const acts = model.encode(x);
  values.feature_acts = await gpu.read(acts);
  values.sae_out = await gpu.read(model.decode(acts));
  compareGroup(k.cmp, tensors, "inference", values, k.tol, k.f64Tol);
}

/** Runs one step case and compares it. */
export async function checkStepCase(
  gpu: Gpu,
  c: FixtureCase,
  tensors: Tensors,
): Promise<Comparison> {
  const k = setupStepCase(gpu, c, tensors);
  await runTwoSteps(k);
  await compareInference(k);
  return k.cmp;
}
