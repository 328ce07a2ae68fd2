/**
 * Train-step throughput: a full Trainer step (forward, every loss, backward, bookkeeping, clip,
 * Adam) per architecture at a given shape, timed over `steps` steps with one sync at the end.
 */
import { parseSaeConfig } from "../src/config/sae.ts";
import { parseTrainerConfig } from "../src/config/trainer.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { initializeParams } from "../src/saes/init.ts";
import { getArchitecture } from "../src/saes/registry.ts";
import type { StepConfig } from "../src/saes/step.ts";
import { TrainingSae } from "../src/saes/training_sae.ts";
import { Trainer } from "../src/train/trainer.ts";
import { Rng } from "../src/util/rng.ts";
import { releaseTextures, textureBytes } from "../src/kernels/textures.ts";

export interface TrainStepShape {
  arch: string;
  batch: number;
  d_in: number;
  d_sae: number;
  /** TopK-family k (also the target L0 of the others' config where it applies). */
  k: number;
  steps: number;
}

/**
 * Latents held dead in TopK-family benchmarks, as the PyTorch baseline marks them, so that both
 * sides compute AuxK (SAELens skips it when nothing is dead).
 */
export const DEAD_FRACTION = 0.125;
const TOPK_FAMILY = ["topk", "batchtopk", "matryoshka_batchtopk"];

export interface TrainStepResult extends TrainStepShape {
  tokens_per_s: number;
  ms_per_step: number;
  /** Peak bytes held in GPU tensors during the run. */
  peak_buffer_bytes: number;
  /** Bytes of the packing and staging textures the run created (held until released). */
  texture_bytes: number;
  /** Latents the trainer counted dead after the timed steps (and one more). */
  dead_latents: number;
  /** GPU time per kernel over the timed steps, largest first (with `passes`). */
  kernels?: { label: string; ms_per_step: number; calls_per_step: number }[];
  /** Mean active latents per row, measured at the last warm-up step. */
  l0: number;
  /** The same, measured at one more step after the timed ones. */
  l0_after: number;
}

/** Architecture config fields for a benchmark at this shape. */
function saeFields(s: TrainStepShape): Record<string, unknown> {
  const base = { architecture: s.arch, d_in: s.d_in, d_sae: s.d_sae };
  switch (s.arch) {
    case "topk":
      return { ...base, k: s.k };
    case "batchtopk":
      return { ...base, k: s.k };
    case "matryoshka_batchtopk": {
      const widths = [s.d_sae / 8, s.d_sae / 2, s.d_sae].map(Math.floor);
      return {
        ...base,
        k: s.k,
        matryoshka_widths: widths.filter((w, i) => w >= s.k && (i === 0 || w > widths[i - 1])),
      };
    }
    case "jumprelu":
      return { ...base, l0_coefficient: 1, jumprelu_init_threshold: 0.05 };
    default:
      return { ...base, l1_coefficient: 1 };
  }
}

/**
 * Times `shape.steps` training steps after warm-up. With `passes`, every dispatch of the timed
 * steps is also timed on the GPU (timestamp queries) and the result lists per-kernel time.
 */
export async function benchTrainStep(
  gpu: Gpu,
  shape: TrainStepShape,
  { passes = false }: { passes?: boolean } = {},
): Promise<TrainStepResult> {
  const cfg = parseSaeConfig(saeFields(shape), "bench sae", () => {}) as unknown as StepConfig;
  const arch = getArchitecture(shape.arch);
  const trainerCfg = parseTrainerConfig({
    lr: 1e-4,
    train_batch_size_samples: shape.batch,
    total_training_samples: shape.batch * (shape.steps + 3),
    // Dead after two silent steps: the warm-up steps mark the held-dead latents before timing.
    dead_feature_window: 1,
    logger: { log_to_wandb: false },
  }, "bench trainer");
  // Textures cached by an earlier run would go uncounted here: start without any.
  await gpu.sync();
  releaseTextures(gpu);
  const before = gpu.liveBytes;
  gpu.peakBytes = before;
  const params = initializeParams(arch, cfg, 0);
  if (TOPK_FAMILY.includes(shape.arch)) holdDead(params.b_enc, DEAD_FRACTION);
  else targetL0(params, shape);
  const sae = TrainingSae.fromHost(gpu, arch, cfg, params, {}, {
    beta1: trainerCfg.adam_beta1,
    beta2: trainerCfg.adam_beta2,
  });
  const trainer = new Trainer(sae, trainerCfg);
  const rng = new Rng(1);
  const x = gpu.keep(
    gpu.upload(Float32Array.from({ length: shape.batch * shape.d_in }, () => rng.normal()), [
      shape.batch,
      shape.d_in,
    ]),
  );
  // Warm-up steps compile every pipeline; logging them measures L0, which picks kernel paths.
  trainer.step(x, { log: true });
  trainer.step(x, { log: true });
  const warmUp = await trainer.readMetrics();
  // One more on the kernel path the measured L0 picks, so its pipelines compile before timing.
  trainer.step(x);
  await gpu.sync();
  if (passes) gpu.startPassTiming();
  const start = performance.now();
  for (let i = 0; i < shape.steps; i++) trainer.step(x);
  await gpu.sync();
  const seconds = (performance.now() - start) / 1000;
  const passTimes = passes ? await gpu.stopPassTiming() : undefined;
  const peak = gpu.peakBytes - before;
  // One logged step after timing: where L0 ended up (the ReLU family's drifts on a repeated batch).
  trainer.step(x, { log: true });
  const after = await trainer.readMetrics();
  const dead = (await gpu.read(trainer.counters.deadMask)).reduce((a, b) => a + b, 0);
  trainer.dispose();
  x.dispose();
  for (
    const t of [
      ...Object.values(sae.params),
      ...Object.values(sae.state),
      ...Object.values(sae.adam.expAvg),
      ...Object.values(sae.adam.expAvgSq),
    ]
  ) t.dispose();
  return {
    ...shape,
    tokens_per_s: (shape.batch * shape.steps) / seconds,
    ms_per_step: (seconds * 1000) / shape.steps,
    peak_buffer_bytes: peak,
    texture_bytes: textureBytes(gpu),
    dead_latents: dead,
    l0: warmUp[warmUp.length - 1].l0,
    l0_after: after[after.length - 1].l0,
    ...(passTimes && {
      kernels: passTimes.map((t) => ({
        label: t.label,
        ms_per_step: t.ms / shape.steps,
        calls_per_step: t.calls / shape.steps,
      })),
    }),
  };
}

/**
 * ReLU-family SAEs start near L0 = d_sae / 2; a trained one fires about k latents per token.
 * Shifts the encoder bias (the gate's, for Gated) by −z·‖W_enc[:, j]‖ so that a standard-normal
 * input fires latent j with probability k / d_sae: the L0 ≈ k regime the benchmark measures.
 */
function targetL0(params: Record<string, Float32Array>, s: TrainStepShape): void {
  const bias = params.b_gate ?? params.b_enc;
  const z = normalQuantile(1 - s.k / s.d_sae);
  for (let j = 0; j < s.d_sae; j++) {
    let sq = 0;
    for (let i = 0; i < s.d_in; i++) sq += params.W_enc[i * s.d_sae + j] ** 2;
    bias[j] = -z * Math.sqrt(sq);
  }
}

/** Φ⁻¹(p) by bisection on the normal CDF (erf after Abramowitz & Stegun 7.1.26, |ε| < 2e-7). */
function normalQuantile(p: number): number {
  const cdf = (x: number) => {
    const t = 1 / (1 + 0.3275911 * Math.abs(x) / Math.SQRT2);
    const poly = t *
      (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    const erf = 1 - poly * Math.exp(-(x * x) / 2);
    return 0.5 * (1 + Math.sign(x) * erf);
  };
  let [lo, hi] = [-10, 10];
  for (let i = 0; i < 100; i++) {
    const mid = (lo + hi) / 2;
    if (cdf(mid) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** A seeded `fraction` of latents get b_enc −1000: they never fire, so they stay dead. */
function holdDead(bEnc: Float32Array, fraction: number): void {
  const rng = new Rng(7);
  const order = Array.from(bEnc.keys());
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  for (const j of order.slice(0, Math.round(bEnc.length * fraction))) bEnc[j] = -1000;
}
