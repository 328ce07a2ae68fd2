/**
 * The SAELens 5.11 step kinds `ghost_grads` and `decoder_norm`: two real v5
 * SAETrainer._train_step calls replayed with the `standard_v5` architecture (unit-norm decoder
 * at the start of each step, ghost grads, 5.11's no-op gradient projection). `decoder_norm`
 * cases also store a projection probe: the normalised decoder (`normalized.*`) and W_dec's
 * gradient before and after `remove_gradient_parallel_to_decoder_directions` (`projection.*`),
 * which we reproduce with the architecture's "after_step" and "before_step" modes.
 */
import { parseV5SaeConfig } from "../src/config/sae.ts";
import { parseV5RunnerConfig, totalTrainingSteps, v5TrainerConfig } from "../src/config/trainer.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { getArchitecture } from "../src/saes/registry.ts";
import { type DecoderGradProjection, standardV5Config } from "../src/saes/standard_v5.ts";
import type { StepConfig } from "../src/saes/step.ts";
import { TrainingSae } from "../src/saes/training_sae.ts";
import { coefficientAt, learningRates } from "../src/train/schedule.ts";
import type { Comparison } from "./compare.ts";
import type { FixtureCase } from "./fixtures.ts";
import {
  compareGroup,
  f32,
  group,
  runTwoSteps,
  setupStepCase,
  type StepCase,
  type Tensors,
} from "./step.ts";

/** A v5 step case with the `standard_v5` architecture and its projection mode. */
function setupV5Case(
  gpu: Gpu,
  c: FixtureCase,
  tensors: Tensors,
  projection: DecoderGradProjection = "after_step",
): StepCase {
  const runner = parseV5RunnerConfig(c.config.runner, `${c.id} config.runner`);
  const cfg = standardV5Config(parseV5SaeConfig(c.config.sae, `${c.id} config.sae`), {
    l1_warm_up_steps: runner.l1_warm_up_steps,
    decoder_grad_projection: projection,
  });
  return setupStepCase(gpu, c, tensors, {
    cfg: cfg as StepConfig,
    arch: getArchitecture("standard_v5"),
    trainer: v5TrainerConfig(runner, `${c.id} config.runner`),
  });
}

/** max_j |Σ_i grad[j,i]·W_dec[j,i]| (in float64 on the host). */
function maxAbsRowDot(grad: Float32Array, wDec: Float32Array, dIn: number): number {
  let max = 0;
  for (let j = 0; j < grad.length / dIn; j++) {
    let dot = 0;
    for (let i = 0; i < dIn; i++) dot += grad[j * dIn + i] * wDec[j * dIn + i];
    max = Math.max(max, Math.abs(dot));
  }
  return max;
}

/**
 * The projection probe: one training forward on input.x from the stored parameters (no dead
 * latents), in each projection mode. "after_step" leaves the raw gradient; "before_step" must
 * give SAELens's projected one.
 */
async function checkProjectionProbe(k: StepCase): Promise<void> {
  const { gpu, c, tensors, cmp, tol, f64Tol } = k;
  if (group(tensors, "normalized").size === 0 && group(tensors, "projection").size === 0) return;
  const stored = tensors.get("input.x")!;
  const probe = async (mode: DecoderGradProjection) => {
    const m = setupV5Case(gpu, c, tensors, mode);
    const betas = { beta1: m.trainer.adam_beta1, beta2: m.trainer.adam_beta2 };
    const sae = TrainingSae.fromHost(gpu, m.arch, m.cfg, m.hostParams, {}, betas);
    // SAELens's probe passes the final l1_coefficient (no warm-up).
    const coefficients = { l1: m.arch.coefficients(m.cfg).l1.value };
    const x = gpu.upload(f32(stored), stored.shape);
    const result = sae.forwardBackward(x, gpu.zeros([m.cfg.d_sae]), coefficients);
    const [wDec, grad] = await gpu.readMany([sae.params.W_dec, result.grads.W_dec]);
    return { wDec, grad };
  };
  const raw = await probe("after_step");
  const projected = await probe("before_step");
  compareGroup(cmp, tensors, "normalized", { W_dec: raw.wDec }, tol, f64Tol);
  compareGroup(
    cmp,
    tensors,
    "projection",
    {
      grad_W_dec: raw.grad,
      grad_W_dec_projected: projected.grad,
    },
    tol,
    f64Tol,
  );
  const dIn = k.cfg.d_in;
  for (
    const [key, grad] of [
      ["max_abs_row_dot_grad_W_dec_before_projection", raw.grad],
      ["max_abs_row_dot_grad_W_dec_after_projection", projected.grad],
    ] as const
  ) {
    const expected = c.expected?.[key];
    if (typeof expected === "number") {
      cmp.check(`expected.${key}`, [maxAbsRowDot(grad, raw.wDec, dIn)], [expected], k.scalarTol);
    }
  }
}

/** Runs one `ghost_grads` or `decoder_norm` case and compares it. */
export async function checkV5StepCase(
  gpu: Gpu,
  c: FixtureCase,
  tensors: Tensors,
): Promise<Comparison> {
  const k = setupV5Case(gpu, c, tensors);
  // The schedules the two steps use, against what SAELens reported.
  const lrs = learningRates({ ...k.trainer, total_steps: totalTrainingSteps(k.trainer) }, 2);
  const l1 = k.arch.coefficients(k.cfg).l1;
  const expected = c.expected ?? {};
  if (Array.isArray(expected.lr)) k.cmp.check("expected.lr", lrs, expected.lr, k.scalarTol);
  if (Array.isArray(expected.l1_coefficient)) {
    const coefficients = [0, 1].map((i) => coefficientAt(i, l1.value, l1.warmUpSteps));
    k.cmp.check("expected.l1_coefficient", coefficients, expected.l1_coefficient, k.scalarTol);
  }
  await checkProjectionProbe(k);
  await runTwoSteps(k);
  return k.cmp;
}
