import {
  type FeatureCounters,
  rowStatistics,
  updateFeatureCounters,
} from "../src/kernels/feature_stats.ts";
import { compressSelection } from "../src/kernels/sparse.ts";
import { LOG_STATISTICS, recordLogStatistics } from "../src/train/metrics.ts";
import { assertClose, gpuTest, randomArray, rng, testGpu } from "./helpers.ts";

// Past one workgroup in every direction, so the strided loops and the row grid are exercised.
const [rows, dIn, dSae] = [300, 40, 520];

/** Feature activations where about `pZero` of the entries are 0 and some latents never fire. */
function sparseActs(seed: number, pZero = 0.9): Float32Array {
  const next = rng(seed);
  return Float32Array.from({ length: rows * dSae }, (_, i) => {
    const j = i % dSae;
    if (j % 7 === 0) return 0; // never fires in this batch
    return next() < pZero ? 0 : 0.1 + next();
  });
}

/** SAELens's per-step bookkeeping in plain TS. */
function counterReference(
  acts: Float32Array,
  actFreq: Float32Array,
  passes: Float32Array,
  window: number,
  reset: boolean,
) {
  const freq = new Float32Array(dSae),
    since = new Float32Array(dSae),
    dead = new Float32Array(dSae);
  for (let j = 0; j < dSae; j++) {
    let n = 0;
    for (let r = 0; r < rows; r++) if (acts[r * dSae + j] !== 0) n++;
    freq[j] = (reset ? 0 : actFreq[j]) + n;
    since[j] = n > 0 ? 0 : passes[j] + 1;
    dead[j] = since[j] > window ? 1 : 0;
  }
  return { freq, since, dead };
}

Deno.test(
  "updateFeatureCounters matches the SAELens bookkeeping, from the matrix or its latent lists",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const acts = sparseActs(1);
    const next = rng(2);
    const actFreq = Float32Array.from({ length: dSae }, () => Math.floor(next() * 50));
    const passes = Float32Array.from({ length: dSae }, () => Math.floor(next() * 6));
    const window = 3;
    for (const [reset, fromLists] of [[false, false], [true, false], [false, true], [true, true]]) {
      const counters: FeatureCounters = {
        actFreqScores: gpu.upload(actFreq),
        passesSinceFired: gpu.upload(passes),
        deadMask: gpu.zeros([dSae]),
      };
      const dense = gpu.upload(acts, [rows, dSae]);
      const offsets = fromLists ? compressSelection(dense).byLatent.offsets : undefined;
      const source = offsets ? { latentOffsets: offsets } : { featureActs: dense };
      updateFeatureCounters(source, counters, window, reset);
      const [freq, since, dead] = await gpu.readMany([
        counters.actFreqScores,
        counters.passesSinceFired,
        counters.deadMask,
      ]);
      const want = counterReference(acts, actFreq, passes, window, reset);
      const what = `(reset ${reset}, lists ${fromLists})`;
      assertClose(freq, want.freq, { rtol: 0, atol: 0, what: `act_freq ${what}` });
      assertClose(since, want.since, { rtol: 0, atol: 0, what: `passes ${what}` });
      assertClose(dead, want.dead, { rtol: 0, atol: 0, what: `dead mask ${what}` });
    }
  },
);

/** Per-row SSE, centred total variance and non-zero count, in float64. */
function rowReference(x: Float32Array, out: Float32Array, acts: Float32Array) {
  const mean = new Float64Array(dIn);
  for (let r = 0; r < rows; r++) for (let d = 0; d < dIn; d++) mean[d] += x[r * dIn + d] / rows;
  const sse = new Float64Array(rows), tv = new Float64Array(rows), nnz = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    for (let d = 0; d < dIn; d++) {
      sse[r] += (out[r * dIn + d] - x[r * dIn + d]) ** 2;
      tv[r] += (x[r * dIn + d] - mean[d]) ** 2;
    }
    for (let j = 0; j < dSae; j++) if (acts[r * dSae + j] !== 0) nnz[r]++;
  }
  return { sse, tv, nnz };
}

Deno.test("rowStatistics matches a float64 reference", gpuTest, async () => {
  const gpu = await testGpu();
  const x = randomArray(rows * dIn, 3, -2, 2), out = randomArray(rows * dIn, 4, -2, 2);
  const acts = sparseActs(5);
  const tx = gpu.upload(x, [rows, dIn]);
  const mean = new Float32Array(dIn);
  for (let r = 0; r < rows; r++) for (let d = 0; d < dIn; d++) mean[d] += x[r * dIn + d] / rows;
  const stats = await rowStatistics(
    tx,
    gpu.upload(out, [rows, dIn]),
    gpu.upload(mean),
    gpu.upload(acts, [rows, dSae]),
  ).read();
  const want = rowReference(x, out, acts);
  const column = (k: number) => stats.filter((_, i) => i % 3 === k);
  assertClose(column(0), want.sse, { rtol: 1e-5, atol: 1e-5, what: "sse" });
  assertClose(column(1), want.tv, { rtol: 1e-5, atol: 1e-5, what: "total variance" });
  assertClose(column(2), want.nnz, { rtol: 0, atol: 0, what: "nnz" });
});

Deno.test("recordLogStatistics follows _build_train_step_log_dict", gpuTest, async () => {
  const gpu = await testGpu();
  const x = randomArray(rows * dIn, 6, -2, 2);
  // A reconstruction close to x, so explained variances are meaningful (not far below 0).
  const noise = randomArray(rows * dIn, 9, -0.5, 0.5);
  const out = x.map((v, i) => v + noise[i]);
  const acts = sparseActs(7);
  const next = rng(8);
  const passes = Float32Array.from({ length: dSae }, () => Math.floor(next() * 10));
  const dead = passes.map((p) => (p > 4 ? 1 : 0));
  const metrics = gpu.zeros([LOG_STATISTICS.length + 2]);
  recordLogStatistics(
    {
      x: gpu.upload(x, [rows, dIn]),
      saeOut: gpu.upload(out, [rows, dIn]),
      featureActs: gpu.upload(acts, [rows, dSae]),
      counters: { passesSinceFired: gpu.upload(passes), deadMask: gpu.upload(dead) },
    },
    metrics,
    2,
  );
  const got = (await metrics.read()).subarray(2);

  const { sse, tv, nnz } = rowReference(x, out, acts);
  const mean = (v: ArrayLike<number>) => Array.from(v).reduce((a, b) => a + b, 0) / v.length;
  const legacy = sse.map((s, r) => 1 - s / tv[r]);
  const legacyMean = mean(legacy);
  const legacyStd = Math.sqrt(
    legacy.reduce((a, v) => a + (v - legacyMean) ** 2, 0) / (rows - 1),
  );
  const want = [
    mean(nnz), // l0
    1 - mean(sse) / mean(tv), // explained_variance (trainer)
    legacyMean, // explained_variance_legacy
    legacyStd, // explained_variance_legacy_std (unbiased)
    dead.reduce((a, b) => a + b, 0), // dead_features
    mean(passes), // mean_passes_since_fired
  ];
  assertClose(got, want, { rtol: 1e-5, atol: 1e-6, what: "log statistics" });
});
