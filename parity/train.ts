/**
 * The `train` kind: a whole SAELens 6.18 `SAETrainer.fit()` from `init.*` on `data.acts`
 * (consecutive batches). We run our `Trainer` for the same steps, logging every step, and compare
 * the per-step traces, then (when `tolerance.final.applies`) the final parameters, counters,
 * held-out forward, inference conversion and evals; otherwise the `end_of_run` aggregates.
 * Every stored tensor outside `init.*`/`data.*` is compared or reported as not produced.
 *
 * SAELens 5.11 cases (a v5 `SAETrainer.fit()` of a standard TrainingSAE) run the `standard_v5`
 * architecture under the trainer config equivalent to the 5.11 runner config. v5's
 * `_build_train_step_log_dict` defines l0, both explained variances, dead_features and
 * mean_passes_since_fired as 6.18 does, and the fixture's loss traces are the raw
 * `TrainStepOutput.losses` (ghost_grad_loss included), so the traces compare as in 6.18. Only
 * the held-out log differs: v5's is an eval-mode forward of the final model without a dead mask,
 * so it neither re-normalises the decoder nor adds the ghost-grad loss. v5 names its counters
 * after tokens (`n_training_tokens`, `n_frac_active_tokens`) and logs `raw_l1_loss`.
 */
import { parseSaeConfig, parseV5SaeConfig } from "../src/config/sae.ts";
import {
  parseTrainerConfig,
  parseV5RunnerConfig,
  type TrainerConfig,
  v5TrainerConfig,
} from "../src/config/trainer.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { InferenceModel } from "../src/saes/inference.ts";
import type { Architecture } from "../src/saes/architecture.ts";
import { getArchitecture } from "../src/saes/registry.ts";
import { standardV5Config } from "../src/saes/standard_v5.ts";
import type { StepConfig } from "../src/saes/step.ts";
import { TrainingSae } from "../src/saes/training_sae.ts";
import {
  LOG_STATISTICS,
  recordLogStatistics,
  type TrainStepMetrics,
} from "../src/train/metrics.ts";
import { Trainer } from "../src/train/trainer.ts";
import { Comparison, type Tolerance } from "./compare.ts";
import type { FixtureCase, StoredTensor } from "./fixtures.ts";
import {
  dictionaryRecovery,
  type EvalBatch,
  featurewiseWeightMetrics,
  sparsityAndVarianceMetrics,
} from "../src/train/evals.ts";

type Tensors = Map<string, StoredTensor>;
type Json = Record<string, unknown>;

const EXACT: Tolerance = { rtol: 0, atol: 0 };
const f32 = (t: StoredTensor) => Float32Array.from(t.values);
const obj = (v: unknown): Json => (v && typeof v === "object" ? v as Json : {});

interface TrainTolerances {
  schedule: Tolerance;
  traces: Tolerance & { steps: number };
  final: { applies: boolean; params: Tolerance; actFreq: Tolerance; scalars: Tolerance };
  endOfRun: Record<string, number>;
}

function tolerances(c: FixtureCase): TrainTolerances {
  const t = c.tolerance as Record<string, Json>;
  const fin = t.final;
  return {
    schedule: t.schedule_traces as unknown as Tolerance,
    traces: t.traces as unknown as Tolerance & { steps: number },
    final: {
      applies: fin.applies === true,
      params: { rtol: fin.params_rtol as number, atol: fin.params_atol as number },
      actFreq: { rtol: 0, atol: fin.act_freq_atol as number },
      scalars: { rtol: fin.expected_scalars_rtol as number, atol: 0 },
    },
    endOfRun: t.end_of_run as Record<string, number>,
  };
}

/** A stored value group (`init.W_enc` → `W_enc`). */
function group(tensors: Tensors, prefix: string): Map<string, StoredTensor> {
  const out = new Map<string, StoredTensor>();
  for (const [name, t] of tensors) {
    if (name.startsWith(prefix + ".")) out.set(name.slice(prefix.length + 1), t);
  }
  return out;
}

/** A trace value of one logged step (`trace.<name>`), or undefined if we do not produce it. */
function traceValue(m: TrainStepMetrics, name: string): number | undefined {
  if (name === "lr") return m.lr;
  if (name.startsWith("coeff.")) return m.coefficients[name.slice("coeff.".length)];
  if (name === "loss") return m.overall_loss;
  if (name in m.losses) return m.losses[name];
  if (name in m.state) return m.state[name];
  const value = (m as unknown as Json)[name];
  return typeof value === "number" ? value : undefined;
}

/** What a train case runs: the architecture, its config and the trainer config. */
interface TrainSetup {
  arch: Architecture<StepConfig>;
  cfg: StepConfig;
  trainerCfg: TrainerConfig;
  /** The held-out forward: its config and whether it sees the final dead mask. */
  heldout: { cfg: StepConfig; deadMask: boolean };
}

function setup(c: FixtureCase): TrainSetup {
  if (c.saelens_version.startsWith("5.")) {
    const runner = parseV5RunnerConfig(c.config.runner, `${c.id} config.runner`);
    const cfg = standardV5Config(parseV5SaeConfig(c.config.sae, `${c.id} config.sae`), {
      l1_warm_up_steps: runner.l1_warm_up_steps,
    });
    return {
      arch: getArchitecture("standard_v5"),
      cfg: cfg as StepConfig,
      trainerCfg: v5TrainerConfig(runner, `${c.id} config.runner`),
      // Eval mode: no decoder re-normalisation (the trainer does that), no ghost grads.
      heldout: {
        cfg: { ...cfg, normalize_sae_decoder: false, use_ghost_grads: false } as StepConfig,
        deadMask: false,
      },
    };
  }
  const cfg = parseSaeConfig(c.config.sae, `${c.id} config.sae`, () => {}) as unknown as StepConfig;
  return {
    arch: getArchitecture(c.architecture ?? ""),
    cfg,
    trainerCfg: parseTrainerConfig(c.config.trainer, `${c.id} config.trainer`),
    heldout: { cfg, deadMask: true },
  };
}

/** Runs one train case and compares it. */
export async function checkTrainCase(
  gpu: Gpu,
  c: FixtureCase,
  tensors: Tensors,
): Promise<Comparison> {
  const cmp = new Comparison();
  const tol = tolerances(c);
  const run = setup(c);
  const { arch, cfg, trainerCfg } = run;
  const betas = { beta1: trainerCfg.adam_beta1, beta2: trainerCfg.adam_beta2 };

  // init.* holds the parameters and any state buffer (topk_threshold).
  const paramNames = new Set(Object.keys(arch.paramShapes(cfg)));
  const hostParams: Record<string, Float32Array> = {};
  const hostState: Record<string, number> = {};
  for (const [name, t] of group(tensors, "init")) {
    if (paramNames.has(name)) hostParams[name] = f32(t);
    else hostState[name] = t.values[0];
  }
  const sae = TrainingSae.fromHost(gpu, arch, cfg, hostParams, hostState, betas);
  const trainer = new Trainer(sae, trainerCfg);

  const acts = tensors.get("data.acts")!;
  const dIn = cfg.d_in, batch = trainerCfg.train_batch_size_samples;
  const x = gpu.empty([batch, dIn]);
  const data = f32(acts);
  while (!trainer.done) {
    const start = trainer.nTrainingSteps * batch * dIn;
    if (start + batch * dIn > data.length) throw new Error(`data.acts ran out at ${start / dIn}`);
    gpu.write(x, data.subarray(start, start + batch * dIn));
    trainer.step(x, { log: true });
  }
  x.dispose();
  const metrics = await trainer.readMetrics();
  compareTraces(cmp, tensors, metrics, tol);

  const finals = await finalValues(gpu, c, tensors, trainer, metrics, run.heldout);
  if (tol.final.applies) compareFinal(cmp, c, tensors, finals, tol);
  else compareEndOfRun(cmp, c, finals, metrics, tol);
  trainer.dispose();
  return cmp;
}

function compareTraces(
  cmp: Comparison,
  tensors: Tensors,
  metrics: TrainStepMetrics[],
  tol: TrainTolerances,
): void {
  for (const [name, stored] of group(tensors, "trace")) {
    const full = `trace.${name}`;
    const schedule = name === "lr" || name.startsWith("coeff.");
    const steps = schedule ? stored.values.length : tol.traces.steps;
    const got = metrics.slice(0, steps).map((m) => traceValue(m, name));
    if (got.some((v) => v === undefined)) {
      cmp.fail(`${full}: not produced by this implementation`);
      continue;
    }
    const tolerance = schedule
      ? tol.schedule
      : name.startsWith("dead_features")
      ? EXACT
      : tol.traces;
    cmp.check(full, got as number[], stored.values.subarray(0, steps), tolerance);
  }
}

/** Everything compared after training, on the host. */
interface FinalValues {
  values: Record<string, ArrayLike<number>>;
  scalars: Record<string, number>;
}

/** Reads the trained model and counters, and evaluates it on `data.eval_acts`. */
async function finalValues(
  gpu: Gpu,
  c: FixtureCase,
  tensors: Tensors,
  trainer: Trainer,
  metrics: TrainStepMetrics[],
  heldout: TrainSetup["heldout"],
): Promise<FinalValues> {
  const out: FinalValues = { values: {}, scalars: {} };
  const { sae } = trainer;
  const params = await sae.readParams();
  const state = await sae.readState();
  await trainedValues(trainer, params, state, metrics, out);
  const evalData = evalRows(c, tensors, sae.cfg.d_in);
  await heldoutValues(trainer, heldout, params, state, evalData, out);
  const inference = sae.arch.toInference(sae.cfg, params, state);
  for (const [n, w] of Object.entries(inference.weights)) out.values[`inference.${n}`] = w.data;
  await inferenceValues(
    InferenceModel.upload(gpu, inference, sae.cfg),
    sae.cfg,
    evalData,
    out,
  );
  const trueFeatures = tensors.get("data.true_features");
  if (trueFeatures) {
    out.scalars["oracle_mean_max_cos_true_features"] = dictionaryRecovery(
      trueFeatures.values,
      params.W_dec,
      sae.cfg.d_in,
    );
  }
  return out;
}

/** Parameters, buffers, counters and the trainer's end-of-run scalars (`expected.final`). */
async function trainedValues(
  trainer: Trainer,
  params: Record<string, Float32Array>,
  state: Record<string, number>,
  metrics: TrainStepMetrics[],
  out: FinalValues,
): Promise<void> {
  const { values, scalars } = out;
  const counters = await trainer.readState();
  const sparsity = await trainer.featureSparsity();
  const deadMask = await trainer.gpu.read(trainer.counters.deadMask);
  // SAELens _log_feature_sparsity: log10(feature_sparsity + 1e-10) in float32.
  const eps = Math.fround(1e-10);
  const logSparsity = sparsity.map((s) => Math.log10(Math.fround(s + eps)));
  for (const [n, v] of Object.entries(params)) values[`final.${n}`] = v;
  for (const [n, v] of Object.entries(state)) values[`final.${n}`] = [v];
  values["final.act_freq"] = sparsity;
  values["final.dead_mask"] = deadMask;
  values["final.n_forward_passes_since_fired"] = counters.passesSinceFired;
  values["final.log_feature_sparsity"] = logSparsity;

  const last10 = metrics.slice(-10);
  const deadFeatures = deadMask.reduce((a, b) => a + b, 0);
  Object.assign(scalars, {
    "final.dead_features": deadFeatures,
    "final.dead_pct": (100 * deadFeatures) / trainer.sae.cfg.d_sae,
    "final.n_frac_active_samples": trainer.nFracActiveSamples,
    "final.n_training_steps": trainer.nTrainingSteps,
    "final.n_training_samples": trainer.nTrainingSamples,
    // v5 names (one token per row).
    "final.n_frac_active_tokens": trainer.nFracActiveSamples,
    "final.n_training_tokens": trainer.nTrainingSamples,
    "final.steps_with_dead_features_in_forward": metrics.filter((m) => m.dead_features_used > 0)
      .length,
    "final.mean_log10_feature_sparsity": logSparsity.reduce((a, b) => a + b, 0) /
      logSparsity.length,
    "final.below_1e-5": sparsity.filter((s) => s < 1e-5).length,
    "final.below_1e-6": sparsity.filter((s) => s < 1e-6).length,
    "final.last_loss": metrics.at(-1)!.overall_loss,
    "final.last_mse_loss": metrics.at(-1)!.losses.mse_loss,
    "final.mean_mse_loss_last10": last10.reduce((a, m) => a + m.losses.mse_loss, 0) / 10,
    "final.mean_l0_last10": last10.reduce((a, m) => a + m.l0, 0) / 10,
  });
}

/** data.eval_acts, whole and split as the oracle's evals did ([n_batches, n_prompts, ctx]). */
interface EvalRows {
  all: Float32Array;
  batches: Float32Array[];
  promptLength: number;
}

function evalRows(c: FixtureCase, tensors: Tensors, dIn: number): EvalRows {
  const all = f32(tensors.get("data.eval_acts")!);
  const evalCfg = obj(obj(c.config.oracle).eval);
  const nBatches = evalCfg.n_batches as number;
  const batchSize = all.length / nBatches;
  const batches = Array.from(
    { length: nBatches },
    (_, b) => all.subarray(b * batchSize, (b + 1) * batchSize),
  );
  if (batchSize % dIn !== 0) throw new Error("data.eval_acts does not split into eval batches");
  return { all, batches, promptLength: evalCfg.ctx as number };
}

/**
 * The held-out training log (`expected.final_heldout_train_log`, `final.heldout_sae_out`) and
 * `sae_lens.evals` (`expected.final_eval`, `eval.*`), from training-mode forwards of a copy of
 * the trained model (so BatchTopK's threshold update leaves the original alone). The copy gets
 * the final coefficients and, where the case's held-out forward had one (6.18), the final dead
 * mask; its config is the held-out one (v5's eval-mode forward).
 */
async function heldoutValues(
  trainer: Trainer,
  heldout: TrainSetup["heldout"],
  params: Record<string, Float32Array>,
  state: Record<string, number>,
  rows: EvalRows,
  out: FinalValues,
): Promise<void> {
  const { gpu, sae } = trainer;
  const cfg = heldout.cfg;
  const copy = TrainingSae.fromHost(gpu, sae.arch, cfg, params, state, { beta1: 0, beta2: 0 });
  const coefficients = trainer.coefficientsAt(trainer.nTrainingSteps);
  const deadMask = heldout.deadMask ? trainer.counters.deadMask : gpu.zeros([cfg.d_sae]);
  const forward = async (data: Float32Array) => {
    const x = gpu.upload(data, [data.length / cfg.d_in, cfg.d_in]);
    const result = copy.forwardBackward(x, deadMask, coefficients);
    const log = gpu.empty([LOG_STATISTICS.length]);
    const { sae_out: saeOut, feature_acts: featureActs } = result.outputs;
    recordLogStatistics({ x, saeOut, featureActs, counters: trainer.counters }, log, 0);
    const lossNames = Object.keys(result.losses);
    const read = await gpu.readMany([
      saeOut,
      featureActs,
      log,
      result.total,
      ...lossNames.map((n) => result.losses[n]),
    ]);
    const scalars: Record<string, number> = { overall_loss: read[3][0] };
    LOG_STATISTICS.forEach((n, i) => (scalars[n] = read[2][i]));
    lossNames.forEach((n, i) => (scalars[n] = read[4 + i][0]));
    const batch: EvalBatch = { x: data, saeOut: read[0], featureActs: read[1], rows: x.rows };
    return { batch, scalars };
  };

  const whole = await forward(rows.all);
  out.values["final.heldout_sae_out"] = whole.batch.saeOut;
  for (const [n, v] of Object.entries(whole.scalars)) {
    out.scalars[`final_heldout_train_log.${n}`] = v;
  }
  // v5's log: the l1 term with the final coefficient as `raw_l1_loss`.
  const l1 = whole.scalars.l1_loss;
  if (l1 !== undefined) out.scalars["final_heldout_train_log.raw_l1_loss"] = l1;

  const batches: EvalBatch[] = [];
  for (const data of rows.batches) batches.push((await forward(data)).batch);
  const evals = sparsityAndVarianceMetrics(batches, cfg.d_in, cfg.d_sae, rows.promptLength);
  for (const [n, v] of Object.entries(evals.scalars)) out.scalars[`final_eval.${n}`] = v;
  out.values["eval.feature_density"] = evals.featureDensity;
  out.values["eval.consistent_activation_heuristic"] = evals.consistentActivationHeuristic;
  for (const [n, v] of Object.entries(featurewiseWeightMetrics(params, cfg.d_in, cfg.d_sae))) {
    out.values[`eval.${n}`] = v;
  }
}

/**
 * The converted inference model on the held-out rows: per-row L0
 * (`inference.heldout_feature_acts_l0`) and `sae_lens.evals` (`expected.final_eval_inference`).
 */
async function inferenceValues(
  model: InferenceModel,
  cfg: StepConfig,
  rows: EvalRows,
  out: FinalValues,
): Promise<void> {
  const gpu = Object.values(model.weights)[0].gpu;
  const run = async (data: Float32Array): Promise<EvalBatch> => {
    const x = gpu.upload(data, [data.length / cfg.d_in, cfg.d_in]);
    const acts = model.encode(x);
    const [saeOut, featureActs] = await gpu.readMany([model.decode(acts), acts]);
    return { x: data, saeOut, featureActs, rows: x.rows };
  };
  const all = await run(rows.all);
  const l0 = new Float32Array(all.rows);
  all.featureActs.forEach((a, i) => (l0[Math.floor(i / cfg.d_sae)] += a !== 0 ? 1 : 0));
  out.values["inference.heldout_feature_acts_l0"] = l0;

  const batches: EvalBatch[] = [];
  for (const data of rows.batches) batches.push(await run(data));
  const evals = sparsityAndVarianceMetrics(batches, cfg.d_in, cfg.d_sae, rows.promptLength);
  for (const [n, v] of Object.entries(evals.scalars)) out.scalars[`final_eval_inference.${n}`] = v;
}

/** Tolerance of a `final.*`/`eval.*`/`inference.*` tensor. */
function finalTolerance(name: string, tol: TrainTolerances): Tolerance {
  if (name === "final.dead_mask" || name === "final.n_forward_passes_since_fired") return EXACT;
  if (name === "final.act_freq") return tol.final.actFreq;
  return tol.final.params;
}

/** Integer-valued scalars, compared exactly. */
const EXACT_SCALARS = new Set([
  "final.dead_features",
  "final.n_frac_active_samples",
  "final.n_training_steps",
  "final.n_training_samples",
  "final.n_frac_active_tokens",
  "final.n_training_tokens",
  "final.steps_with_dead_features_in_forward",
  "final.below_1e-5",
  "final.below_1e-6",
]);

function compareFinal(
  cmp: Comparison,
  c: FixtureCase,
  tensors: Tensors,
  finals: FinalValues,
  tol: TrainTolerances,
): void {
  for (const [name, stored] of tensors) {
    if (!/^(final|eval|inference)\./.test(name)) continue;
    const got = finals.values[name];
    if (!got) cmp.fail(`${name}: not produced by this implementation`);
    else cmp.check(name, got, stored.values, finalTolerance(name, tol));
  }
  // expected.final*, expected.oracle_*: scalars; f32_vs_f64_train describes the oracle's run.
  const expected = obj(c.expected);
  const flat: Record<string, number> = {};
  for (const [key, value] of Object.entries(expected)) {
    if (key === "f32_vs_f64_train") continue;
    if (typeof value === "number") flat[key] = value;
    else for (const [k, v] of Object.entries(obj(value))) flat[`${key}.${k}`] = v as number;
  }
  for (const [name, want] of Object.entries(flat)) {
    const got = finals.scalars[name];
    const full = `expected.${name}`;
    if (got === undefined) cmp.fail(`${full}: not produced by this implementation`);
    else cmp.check(full, [got], [want], EXACT_SCALARS.has(name) ? EXACT : tol.final.scalars);
  }
}

/** Counters that do not depend on the trajectory, compared exactly in every run. */
const COUNTERS = [
  "n_training_steps",
  "n_training_samples",
  "n_training_tokens",
  "n_frac_active_samples",
  "n_frac_active_tokens",
];

/**
 * The aggregate bounds used when a run's trajectory is not expected to match element-wise, and
 * the trajectory-independent counters. The explained variance is `sae_lens.evals`'s
 * (`expected.final_eval`) where the case has it, else the held-out training log's (v5).
 */
function compareEndOfRun(
  cmp: Comparison,
  c: FixtureCase,
  finals: FinalValues,
  metrics: TrainStepMetrics[],
  tol: TrainTolerances,
): void {
  const expected = obj(c.expected);
  const fin = obj(expected.final);
  const bounds = tol.endOfRun;
  const relative = (name: string, got: number, want: number, bound: number) =>
    cmp.check(name, [got], [want], { rtol: bound, atol: 0 });
  const s = finals.scalars;
  relative(
    "end_of_run.mean_mse_loss_last10",
    s["final.mean_mse_loss_last10"],
    fin.mean_mse_loss_last10 as number,
    bounds.mean_mse_loss_last10_rel,
  );
  relative(
    "end_of_run.mean_l0_last10",
    s["final.mean_l0_last10"],
    fin.mean_l0_last10 as number,
    bounds.mean_l0_last10_rel,
  );
  const [evSource, evKey] = "final_eval" in expected
    ? ["final_eval", "reconstruction_quality.explained_variance"]
    : ["final_heldout_train_log", "explained_variance"];
  cmp.check(
    `end_of_run.${evSource}.explained_variance`,
    [s[`${evSource}.${evKey}`]],
    [obj(expected[evSource])[evKey] as number],
    { rtol: 0, atol: bounds.final_eval_explained_variance_abs },
  );
  cmp.check("end_of_run.dead_pct", [s["final.dead_pct"]], [fin.dead_pct as number], {
    rtol: 0,
    atol: bounds.dead_pct_abs,
  });
  for (const name of COUNTERS) {
    if (name in fin) {
      cmp.check(`expected.final.${name}`, [s[`final.${name}`]], [fin[name] as number], EXACT);
    }
  }
  if (metrics.length === 0) cmp.fail("no steps were run");
}
