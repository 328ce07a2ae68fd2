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
  /** Latents the trainer counted dead after the timed steps. */
  dead_latents: number;
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

export async function benchTrainStep(gpu: Gpu, shape: TrainStepShape): Promise<TrainStepResult> {
  const cfg = parseSaeConfig(saeFields(shape), "bench sae", () => {}) as unknown as StepConfig;
  const arch = getArchitecture(shape.arch);
  const trainerCfg = parseTrainerConfig({
    lr: 1e-4,
    train_batch_size_samples: shape.batch,
    total_training_samples: shape.batch * (shape.steps + 2),
    // Dead after two silent steps: the warm-up steps mark the held-dead latents before timing.
    dead_feature_window: 1,
    logger: { log_to_wandb: false },
  }, "bench trainer");
  const before = gpu.liveBytes;
  gpu.peakBytes = before;
  const params = initializeParams(arch, cfg, 0);
  if (TOPK_FAMILY.includes(shape.arch)) holdDead(params.b_enc, DEAD_FRACTION);
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
  trainer.step(x); // compiles every pipeline
  trainer.step(x);
  await gpu.sync();
  const start = performance.now();
  for (let i = 0; i < shape.steps; i++) trainer.step(x);
  await gpu.sync();
  const seconds = (performance.now() - start) / 1000;
  const peak = gpu.peakBytes - before;
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
    dead_latents: dead,
  };
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
