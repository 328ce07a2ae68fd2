/**
 * The `step` kind: two real SAETrainer._train_step calls from given parameters. We replay them
 * on WebGPU, reading back between phases to compare every stored tensor group.
 */
import { parseSaeConfig } from "../src/config/sae.ts";
import { parseTrainerConfig, totalTrainingSteps } from "../src/config/trainer.ts";
import type { Gpu } from "../src/gpu/device.ts";
import type { Tensor } from "../src/gpu/tensor.ts";
import { binary, unary } from "../src/kernels/elementwise.ts";
import { InferenceModel } from "../src/saes/inference.ts";
import { getArchitecture } from "../src/saes/registry.ts";
import { type StepResult, TrainingSae } from "../src/saes/training_sae.ts";
import type { StepConfig } from "../src/saes/step.ts";
import { coefficientAt, learningRates } from "../src/train/schedule.ts";
import { Comparison, type Tolerance } from "./compare.ts";
import type { FixtureCase, StoredTensor } from "./fixtures.ts";

type Tensors = Map<string, StoredTensor>;

const f32 = (t: StoredTensor) => Float32Array.from(t.values);

/** Tensors of a prefix group (`params.W_enc` → `W_enc`). */
function group(tensors: Tensors, prefix: string): Map<string, StoredTensor> {
  const out = new Map<string, StoredTensor>();
  for (const [name, t] of tensors) {
    if (name.startsWith(prefix + ".")) out.set(name.slice(prefix.length + 1), t);
  }
  return out;
}

/** Compares every stored tensor of `prefix` that we produced; missing ones fail. */
function compareGroup(
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

async function readRecord(
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
    result.fired,
  ]);
  for (const t of tensors) if (!t.disposed) t.dispose();
}

/** Runs one step case and compares it. */
export async function checkStepCase(
  gpu: Gpu,
  c: FixtureCase,
  tensors: Tensors,
): Promise<Comparison> {
  const cmp = new Comparison();
  const tol = c.tolerance as unknown as Tolerance;
  const f64Tol = (c.tolerance.float64_tensors ?? tol) as Tolerance;
  const scalarTol = (c.tolerance.expected_scalars ?? tol) as Tolerance;
  const cfg = parseSaeConfig(c.config.sae, `${c.id} config.sae`, () => {}) as unknown as StepConfig;
  const trainer = parseTrainerConfig(c.config.trainer, `${c.id} config.trainer`);
  const arch = getArchitecture(c.architecture ?? "");

  const hostParams = Object.fromEntries([...group(tensors, "params")].map(([n, t]) => [n, f32(t)]));
  const hostState = Object.fromEntries(
    [...group(tensors, "state")].map(([n, t]) => [n, t.values[0]]),
  );
  const sae = TrainingSae.fromHost(gpu, arch, cfg, hostParams, hostState, {
    beta1: trainer.adam_beta1,
    beta2: trainer.adam_beta2,
  });
  const lrs = learningRates({ ...trainer, total_steps: totalTrainingSteps(trainer) }, 2);
  const coefficientsAt = (i: number) =>
    Object.fromEntries(
      Object.entries(arch.coefficients(cfg)).map((
        [n, co],
      ) => [n, coefficientAt(i, co.value, co.warmUpSteps)]),
    );

  // Cases without dead latents store no mask: all alive.
  const storedMask = tensors.get("input.dead_neuron_mask");
  let deadMask = storedMask ? gpu.upload(f32(storedMask)) : gpu.zeros([cfg.d_sae]);
  const expectedNorms = [c.expected?.grad_norm, c.expected?.grad_norm2];
  const expectedDead = c.expected?.n_dead as number[] | undefined;
  for (const [i, suffix] of [[0, ""], [1, "2"]] as const) {
    const x = gpu.upload(
      f32(tensors.get(`input.x${suffix}`)!),
      tensors.get(`input.x${suffix}`)!.shape,
    );
    const result = sae.forwardBackward(x, deadMask, coefficientsAt(i));
    const losses = await readRecord(gpu, { ...result.losses, total: result.total });
    compareGroup(cmp, tensors, `loss${suffix}`, losses, tol, f64Tol);
    if (i === 0) {
      compareGroup(cmp, tensors, "output", await readRecord(gpu, result.outputs), tol, f64Tol);
      compareGroup(cmp, tensors, "grad", await readRecord(gpu, result.grads), tol, f64Tol);
    }
    const clip = sae.clip(result.grads);
    if (i === 0) {
      compareGroup(cmp, tensors, "grad_clipped", await readRecord(gpu, result.grads), tol, f64Tol);
    }
    const [norm] = await gpu.read(clip);
    if (typeof expectedNorms[i] === "number") {
      cmp.check(`expected.grad_norm${suffix}`, [norm], [expectedNorms[i] as number], scalarTol);
    }
    if (expectedDead) {
      cmp.checkExact(`expected.n_dead[${i}]`, [
        (await gpu.read(deadMask)).reduce((a, b) => a + b, 0),
      ], [expectedDead[i]]);
    }
    sae.optimizerStep(result.grads, lrs[i]);
    const after = { ...(await sae.readParams()), ...(await sae.readState()) };
    compareGroup(
      cmp,
      tensors,
      `after_step${suffix}`,
      Object.fromEntries(
        Object.entries(after).map(([k, v]) => [k, typeof v === "number" ? [v] : v]),
      ),
      tol,
      f64Tol,
    );
    if (i === 0) {
      // Latents dead before step 1 stay dead unless they fired in it (their counters exceed the window).
      const next = binary("mul", deadMask, unary("affine", result.fired, { alpha: -1, beta: 1 }));
      const storedMask2 = tensors.get("input.dead_neuron_mask2");
      if (storedMask2) {
        cmp.checkExact("input.dead_neuron_mask2", await gpu.read(next), storedMask2.values);
      }
      deadMask = next;
    }
    releaseResult(result);
  }

  // Inference conversion of the pre-step model.
  const inference = arch.toInference(cfg, hostParams, hostState);
  const inferenceValues: Record<string, ArrayLike<number>> = Object.fromEntries(
    Object.entries(inference.weights).map(([n, w]) => [n, w.data]),
  );
  const model = InferenceModel.upload(gpu, inference, cfg.apply_b_dec_to_input);
  const x = gpu.upload(f32(tensors.get("input.x")!), tensors.get("input.x")!.shape);
  const acts = model.encode(x);
  inferenceValues.feature_acts = await gpu.read(acts);
  inferenceValues.sae_out = await gpu.read(model.decode(acts));
  compareGroup(cmp, tensors, "inference", inferenceValues, tol, f64Tol);
  return cmp;
}
