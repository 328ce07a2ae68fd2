import assert from "node:assert/strict";
import { parseSaeConfig } from "../src/config/sae.ts";
import { parseTrainerConfig } from "../src/config/trainer.ts";
import type { Gpu } from "../src/gpu/device.ts";
import type { Tensor } from "../src/gpu/tensor.ts";
import { getArchitecture } from "../src/saes/registry.ts";
import type { StepConfig } from "../src/saes/step.ts";
import { TrainingSae } from "../src/saes/training_sae.ts";
import { Trainer } from "../src/train/trainer.ts";
import { gpuTest, randomArray, testGpu } from "./helpers.ts";

const [dIn, dSae, batch] = [8, 16, 32];
const WINDOW = 2, SAMPLING_WINDOW = 3;

/**
 * A tiny standard SAE whose first 4 latents never fire (b_enc −10), last 4 always fire (+10)
 * and middle 8 fire on some rows, plus a trainer with short windows.
 */
function tinyTrainer(gpu: Gpu): Trainer {
  const cfg = parseSaeConfig(
    { architecture: "standard", d_in: dIn, d_sae: dSae, l1_coefficient: 0.1 },
    "test",
    () => {},
  ) as unknown as StepConfig;
  const bEnc = Float32Array.from({ length: dSae }, (_, j) => (j < 4 ? -10 : j >= 12 ? 10 : 0));
  const params = {
    W_enc: randomArray(dIn * dSae, 1, -0.5, 0.5),
    W_dec: randomArray(dSae * dIn, 2, -0.5, 0.5),
    b_enc: bEnc,
    b_dec: new Float32Array(dIn),
  };
  const trainerCfg = parseTrainerConfig({
    lr: 1e-3,
    total_training_samples: batch * 100,
    train_batch_size_samples: batch,
    dead_feature_window: WINDOW,
    feature_sampling_window: SAMPLING_WINDOW,
  });
  const sae = TrainingSae.fromHost(gpu, getArchitecture("standard"), cfg, params, {}, {
    beta1: 0.9,
    beta2: 0.999,
  });
  return new Trainer(sae, trainerCfg);
}

function batchTensor(gpu: Gpu, seed: number): Tensor {
  return gpu.upload(randomArray(batch * dIn, seed, -1, 1), [batch, dIn]);
}

Deno.test(
  "step() never reads back; readMetrics reads every logged step at once",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const trainer = tinyTrainer(gpu);
    const x = batchTensor(gpu, 10);
    const proto = GPUBuffer.prototype;
    const mapAsync = proto.mapAsync;
    let maps = 0;
    proto.mapAsync = function (...args: Parameters<GPUBuffer["mapAsync"]>) {
      maps++;
      return mapAsync.apply(this, args);
    };
    try {
      for (let i = 0; i < 6; i++) trainer.step(x, { log: i === 1 || i === 4 });
      assert.equal(maps, 0, "step() mapped a buffer");
      const logged = await trainer.readMetrics();
      assert.equal(maps, 1, "readMetrics() should read all pending steps with one map");
      assert.deepEqual(logged.map((m) => m.step), [1, 4]);
      assert.deepEqual(logged.map((m) => m.n_training_samples), [2 * batch, 5 * batch]);
      assert.deepEqual(logged.map((m) => m.lr), [
        trainer.schedule.lrAt(1),
        trainer.schedule.lrAt(4),
      ]);
      assert.deepEqual(Object.keys(logged[0].losses).sort(), ["l1_loss", "mse_loss"]);
      for (const m of logged) {
        assert.ok(Math.abs(m.overall_loss - m.losses.mse_loss - m.losses.l1_loss) < 1e-5);
        assert.ok(m.grad_norm > 0 && Number.isFinite(m.explained_variance));
      }
      assert.deepEqual(await trainer.readMetrics(), []);
    } finally {
      proto.mapAsync = mapAsync;
      trainer.dispose();
    }
  },
);

Deno.test("GPU memory stays flat over 20 steps, logged or not", gpuTest, async () => {
  const gpu = await testGpu();
  const trainer = tinyTrainer(gpu);
  const x = batchTensor(gpu, 11);
  trainer.step(x, { log: true });
  await trainer.readMetrics();
  const baseline = gpu.liveBytes;
  for (let i = 0; i < 20; i++) {
    const log = i % 5 === 0;
    trainer.step(x, { log });
    if (log) await trainer.readMetrics();
    assert.equal(gpu.liveBytes, baseline, `live bytes grew at step ${i + 1}`);
  }
  trainer.dispose();
});

Deno.test("dead-feature counters follow SAELens's bookkeeping step by step", gpuTest, async () => {
  const gpu = await testGpu();
  const trainer = tinyTrainer(gpu);
  const { sae, counters } = trainer;
  const actFreq = new Float64Array(dSae), passes = new Float64Array(dSae);
  let nFrac = 0;
  for (let i = 0; i < 12; i++) {
    const x = batchTensor(gpu, 100 + i);
    // The step's activations: a standard SAE's forward is a pure function of params and x.
    const actsTensor = gpu.scope(() =>
      sae.forwardBackward(x, counters.deadMask, trainer.coefficientsAt(i)).outputs.feature_acts
    );
    const acts = await actsTensor.read();
    actsTensor.dispose();
    const deadBefore = passes.filter((p) => p > WINDOW).length;
    trainer.step(x, { log: true });

    const reset = (i + 1) % SAMPLING_WINDOW === 0;
    if (reset) actFreq.fill(0);
    for (let j = 0; j < dSae; j++) {
      let n = 0;
      for (let r = 0; r < batch; r++) if (acts[r * dSae + j] !== 0) n++;
      actFreq[j] += n;
      passes[j] = n > 0 ? 0 : passes[j] + 1;
    }
    nFrac = (reset ? 0 : nFrac) + batch;

    const [gotFreq, gotPasses, gotDead] = await gpu.readMany([
      counters.actFreqScores,
      counters.passesSinceFired,
      counters.deadMask,
    ]);
    assert.deepEqual(Array.from(gotFreq), Array.from(actFreq), `act_freq_scores at step ${i}`);
    assert.deepEqual(Array.from(gotPasses), Array.from(passes), `passes at step ${i}`);
    assert.deepEqual(Array.from(gotDead), Array.from(passes, (p) => (p > WINDOW ? 1 : 0)));
    assert.equal(trainer.nFracActiveSamples, nFrac);
    const [m] = await trainer.readMetrics();
    assert.equal(m.dead_features_used, deadBefore, `dead_features_used at step ${i}`);
    assert.equal(m.dead_features, passes.filter((p) => p > WINDOW).length);
    assert.ok(Math.abs(m.mean_passes_since_fired - passes.reduce((a, b) => a + b) / dSae) < 1e-6);
    x.dispose();
  }
  // The never-firing latents are dead; the always-firing ones are not.
  const dead = await gpu.read(counters.deadMask);
  assert.deepEqual(Array.from(dead.subarray(0, 4)), [1, 1, 1, 1]);
  assert.deepEqual(Array.from(dead.subarray(12)), [0, 0, 0, 0]);

  // Checkpoint round trip: the restored trainer recomputes the same dead mask.
  const restored = tinyTrainer(gpu);
  restored.loadState(await trainer.readState());
  assert.deepEqual(Array.from(await gpu.read(restored.counters.deadMask)), Array.from(dead));
  assert.equal(restored.nTrainingSteps, 12);
  trainer.dispose();
  restored.dispose();
});
