/**
 * Learning-rate and sparsity-coefficient schedules with the exact float64 semantics of SAELens
 * 6.18 (`sae_lens.training.optim.get_lr_scheduler` and `CoefficientScheduler`).
 *
 * SAELens builds a torch `SequentialLR` of
 *   [LinearLR warm-up (only if warm-up > 0), main scheduler, LinearLR decay (only if decay > 0)]
 * with milestones [warm-up, total - decay]. Rather than re-deriving closed forms (which differ from
 * torch's chainable recurrences by rounding), this module replays the torch 1.13 / 2.x scheduler
 * objects step by step on one simulated param group, so every value is bit-for-bit the python
 * float torch produces (up to libm `cos` ulps). Quirks reproduced on purpose:
 *
 * - Every scheduler constructor performs an initial step that writes the group lr; SequentialLR
 *   then resets the lr to `initial_lr`, rewinds every child's `last_epoch` by one and re-runs only
 *   the first child's initial step.
 * - The warm-up is `LinearLR(1/W -> 1, total_iters=W-1)`: the lr is `lr*(1/W)` at step 0 and
 *   reaches `lr` at step W-1 (one step early); W = 1 means no ramp at all.
 * - At a milestone SequentialLR calls `next.step(0)`, which uses the *closed form* where the
 *   scheduler has one (LinearLR, CosineAnnealingLR): the cosine phase starts at
 *   `eta_min + (lr - eta_min)`, the decay at `lr * (lr_end / lr)` (both may differ from `lr` /
 *   `lr_end` in the last ulp). Every other step uses the chainable (recursive) form, which is
 *   what this module evaluates.
 * - Cosine annealing has `T_max = total - W - D` but only reaches epoch `T_max - 1`, so its last lr
 *   stays slightly above `lr_end`.
 * - Warm restarts use `T_0 = (total - W - D) // n_restart_cycles`; leftover steps start a new
 *   (truncated) cycle. Its lr is always the closed form of `T_cur`.
 * - The decay `LinearLR(lr_end/lr -> 0, total_iters=D)` runs epochs 0..D-1, so the last step uses
 *   about `lr_end / D`, never 0. For `constant` the decay starts from `lr` (lr_end is ignored).
 * - A milestone at 0 (no warm-up, decay over every step) is never "hit": SequentialLR starts with
 *   the main scheduler at step 0, and the decay is then stepped by its chainable form from epoch 0
 *   at step 1 (so it lags one epoch).
 * @module
 */

/** The scheduler names SAELens accepts (`lr_scheduler_name`, compared lower-cased). */
export type LrSchedulerName = "constant" | "cosineannealing" | "cosineannealingwarmrestarts";

/** The trainer fields that determine the lr schedule (SAELens `SAETrainerConfig` names). */
export interface LrScheduleConfig {
  /** Peak learning rate (`initial_lr` of the Adam param group). */
  lr: number;
  /**
   * Cosine floor / decay start. `null` means `lr / 10` (SAELens's runner config post-init). It is
   * ignored for `constant` (the decay then starts at `lr`).
   */
  lr_end: number | null;
  lr_scheduler_name: LrSchedulerName;
  /** Linear warm-up steps W (0 = none). */
  lr_warm_up_steps: number;
  /** Linear decay steps D at the end of training (0 = none). */
  lr_decay_steps: number;
  /** Number of cosine cycles for `cosineannealingwarmrestarts` (ignored otherwise). */
  n_restart_cycles: number;
  /** Total training steps (`total_training_samples // train_batch_size_samples`). */
  total_steps: number;
}

/** One simulated optimizer param group: `lr` is the value the next optimizer step will use. */
interface Group {
  lr: number;
  initialLr: number;
}

/** Python's `%` (result has the sign of the divisor). */
function pyMod(a: number, b: number): number {
  return ((a % b) + b) % b;
}

/** Minimal model of torch's `LRScheduler` base class for one param group. */
abstract class TorchScheduler {
  lastEpoch = -1;
  stepCount = 0;
  readonly baseLr: number;

  constructor(readonly group: Group) {
    this.baseLr = group.initialLr;
  }

  /** torch `_initial_step`: reset the step counter and step once. Subclass ctors call it. */
  initialStep(): void {
    this.stepCount = 0;
    this.step();
  }

  /** torch `step(epoch)`: chainable form without epoch, closed form (if any) with it. */
  step(epoch?: number): void {
    this.stepCount++;
    if (epoch === undefined) {
      this.lastEpoch++;
      this.group.lr = this.chainable();
    } else {
      this.lastEpoch = epoch;
      this.group.lr = this.closedForm?.() ?? this.chainable();
    }
  }

  /** torch `get_lr` (reads the current group lr for the recursive forms). */
  abstract chainable(): number;
  /** torch `_get_closed_form_lr`, where the scheduler defines one. */
  closedForm?(): number;
}

/** `LambdaLR(lambda _: 1.0)`: SAELens's constant main scheduler (no closed form). */
class ConstantLambda extends TorchScheduler {
  constructor(group: Group) {
    super(group);
    this.initialStep();
  }
  chainable(): number {
    return this.baseLr * 1.0;
  }
}

/** torch `LinearLR(start_factor, end_factor, total_iters)`. */
class LinearLR extends TorchScheduler {
  constructor(
    group: Group,
    readonly startFactor: number,
    readonly endFactor: number,
    readonly totalIters: number,
  ) {
    super(group);
    if (startFactor > 1 || startFactor <= 0) {
      throw new RangeError(
        `LinearLR start_factor must be in (0, 1], got ${startFactor} (lr_end/lr for the decay)`,
      );
    }
    if (endFactor > 1 || endFactor < 0) {
      throw new RangeError(`LinearLR end_factor must be in [0, 1], got ${endFactor}`);
    }
    this.initialStep();
  }
  chainable(): number {
    const e = this.lastEpoch, sf = this.startFactor, ef = this.endFactor, n = this.totalIters;
    if (e === 0) return this.group.lr * sf;
    if (e > n) return this.group.lr;
    return this.group.lr * (1 + (ef - sf) / (n * sf + (e - 1) * (ef - sf)));
  }
  override closedForm(): number {
    const sf = this.startFactor, ef = this.endFactor, n = this.totalIters;
    return this.baseLr * (sf + ((ef - sf) * Math.min(n, this.lastEpoch)) / n);
  }
}

/** torch `CosineAnnealingLR(T_max, eta_min)` with its recursive `get_lr`. */
class CosineAnnealingLR extends TorchScheduler {
  constructor(group: Group, readonly tMax: number, readonly etaMin: number) {
    super(group);
    this.initialStep();
  }
  chainable(): number {
    const e = this.lastEpoch, t = this.tMax, eta = this.etaMin, lr = this.group.lr;
    if (e === 0) return lr;
    if (this.stepCount === 1 && e > 0) {
      return eta + ((this.baseLr - eta) * (1 + Math.cos((e * Math.PI) / t))) / 2;
    }
    if (pyMod(e - 1 - t, 2 * t) === 0) {
      return lr + ((this.baseLr - eta) * (1 - Math.cos(Math.PI / t))) / 2;
    }
    return ((1 + Math.cos((Math.PI * e) / t)) / (1 + Math.cos((Math.PI * (e - 1)) / t))) *
        (lr - eta) + eta;
  }
  override closedForm(): number {
    const eta = this.etaMin;
    return eta + ((this.baseLr - eta) * (1 + Math.cos((Math.PI * this.lastEpoch) / this.tMax))) / 2;
  }
}

/** torch `CosineAnnealingWarmRestarts(T_0, T_mult=1, eta_min)`: always the closed form of T_cur. */
class CosineAnnealingWarmRestarts extends TorchScheduler {
  tCur: number;
  tI: number;
  constructor(group: Group, readonly t0: number, readonly etaMin: number) {
    super(group);
    if (!Number.isInteger(t0) || t0 <= 0) {
      throw new RangeError(
        `CosineAnnealingWarmRestarts needs T_0 = (steps - warm-up - decay) // n_restart_cycles ` +
          `>= 1, got ${t0}`,
      );
    }
    this.tI = t0;
    this.tCur = this.lastEpoch;
    this.initialStep();
  }
  // Overrides the whole step like torch does (T_cur bookkeeping, then the closed form).
  override step(epoch?: number): void {
    this.stepCount++;
    if (epoch === undefined && this.lastEpoch < 0) epoch = 0;
    if (epoch === undefined) {
      epoch = this.lastEpoch + 1;
      this.tCur += 1;
      if (this.tCur >= this.tI) this.tCur -= this.tI; // T_mult = 1: T_i stays T_0
    } else if (epoch >= this.t0) {
      this.tCur = epoch % this.t0;
    } else {
      this.tI = this.t0;
      this.tCur = epoch;
    }
    this.lastEpoch = Math.floor(epoch);
    this.group.lr = this.chainable();
  }
  chainable(): number {
    const eta = this.etaMin;
    return eta + ((this.baseLr - eta) * (1 + Math.cos((Math.PI * this.tCur) / this.tI))) / 2;
  }
}

/** torch `SequentialLR(schedulers, milestones)` including its constructor's reset. */
class SequentialLR {
  lastEpoch = 0;
  constructor(
    readonly group: Group,
    readonly schedulers: TorchScheduler[],
    readonly milestones: number[],
  ) {
    group.lr = group.initialLr;
    for (const s of schedulers) s.lastEpoch -= 1;
    schedulers[0].initialStep();
  }
  step(): void {
    this.lastEpoch++;
    // bisect_right(milestones, last_epoch)
    let idx = 0;
    while (idx < this.milestones.length && this.milestones[idx] <= this.lastEpoch) idx++;
    const s = this.schedulers[idx];
    if (idx > 0 && this.milestones[idx - 1] === this.lastEpoch) s.step(0);
    else s.step();
  }
}

function checkInt(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) {
    throw new RangeError(`${name} must be an integer >= ${min}, got ${v}`);
  }
}

/** Validates `cfg` and returns the effective lr_end (null -> lr/10). */
function validate(cfg: LrScheduleConfig): number {
  const names: readonly string[] = ["constant", "cosineannealing", "cosineannealingwarmrestarts"];
  if (!names.includes(cfg.lr_scheduler_name)) {
    throw new RangeError(`unsupported lr_scheduler_name ${JSON.stringify(cfg.lr_scheduler_name)}`);
  }
  if (!(Number.isFinite(cfg.lr) && cfg.lr > 0)) {
    throw new RangeError(`lr must be a positive number, got ${cfg.lr}`);
  }
  const lrEnd = cfg.lr_end ?? cfg.lr / 10;
  if (!(Number.isFinite(lrEnd) && lrEnd >= 0)) {
    throw new RangeError(`lr_end must be a non-negative number, got ${lrEnd}`);
  }
  checkInt("total_steps", cfg.total_steps, 1);
  checkInt("lr_warm_up_steps", cfg.lr_warm_up_steps, 0);
  checkInt("lr_decay_steps", cfg.lr_decay_steps, 0);
  if (cfg.lr_scheduler_name === "cosineannealingwarmrestarts") {
    checkInt("n_restart_cycles", cfg.n_restart_cycles, 1);
  }
  // torch would silently build non-monotonic milestones here; refuse instead.
  if (cfg.lr_warm_up_steps + cfg.lr_decay_steps > cfg.total_steps) {
    throw new RangeError(
      `lr_warm_up_steps (${cfg.lr_warm_up_steps}) + lr_decay_steps (${cfg.lr_decay_steps}) ` +
        `exceed total_steps (${cfg.total_steps})`,
    );
  }
  return lrEnd;
}

/** Builds the SequentialLR exactly as `get_lr_scheduler` does (constructor order matters). */
function build(cfg: LrScheduleConfig): SequentialLR {
  let lrEnd = validate(cfg);
  const { lr, lr_warm_up_steps: warm, lr_decay_steps: decay, total_steps: steps } = cfg;
  const group: Group = { lr, initialLr: lr };
  const mainSteps = steps - warm - decay;
  let main: TorchScheduler;
  switch (cfg.lr_scheduler_name) {
    case "constant":
      main = new ConstantLambda(group);
      lrEnd = lr; // constant ignores lr_end: the decay starts at lr
      break;
    case "cosineannealing":
      main = new CosineAnnealingLR(group, mainSteps, lrEnd);
      break;
    case "cosineannealingwarmrestarts":
      main = new CosineAnnealingWarmRestarts(
        group,
        Math.floor(mainSteps / cfg.n_restart_cycles),
        lrEnd,
      );
      break;
  }
  const schedulers: TorchScheduler[] = [];
  const milestones: number[] = [];
  if (warm > 0) {
    schedulers.push(new LinearLR(group, 1 / warm, 1.0, warm - 1));
    milestones.push(warm);
  }
  schedulers.push(main);
  if (decay > 0) {
    if (lrEnd === 0) {
      throw new RangeError("lr_decay_steps > 0 needs lr_end > 0 (SAELens refuses to decay 0 -> 0)");
    }
    schedulers.push(new LinearLR(group, lrEnd / lr, 0.0, decay));
    milestones.push(steps - decay);
  }
  return new SequentialLR(group, schedulers, milestones);
}

/**
 * The learning rate in effect during each training step `0..n-1` (what Adam's step `i` reads,
 * i.e. before the i-th `lr_scheduler.step()`), exactly as SAELens 6.18 computes it.
 * `n` defaults to `total_steps`; larger `n` continues the torch schedulers past the end (SAELens
 * does so if the sample count is not a multiple of the batch size).
 */
export function learningRates(cfg: LrScheduleConfig, n: number = cfg.total_steps): Float64Array {
  checkInt("n", n, 0);
  const seq = build(cfg);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (i > 0) seq.step();
    out[i] = seq.group.lr;
  }
  return out;
}

/**
 * Stateless-by-step view of the lr schedule: `lrAt(step)` is a pure function of the step index,
 * so a run resumed from a checkpoint at step `s` continues with exactly the same lrs. Values are
 * computed once (the recurrences need every previous step) and cached; the cache grows on demand
 * for steps past `total_steps`.
 */
export class LrSchedule {
  readonly config: LrScheduleConfig;
  #values: Float64Array;

  /** Validates `cfg` (throws RangeError on unusable settings) and precomputes every step. */
  constructor(cfg: LrScheduleConfig) {
    this.config = { ...cfg };
    this.#values = learningRates(this.config);
  }

  /** The lr used by training step `step` (0-based). */
  lrAt(step: number): number {
    checkInt("step", step, 0);
    if (step >= this.#values.length) {
      this.#values = learningRates(this.config, Math.max(step + 1, 2 * this.#values.length));
    }
    return this.#values[step];
  }

  /** A copy of the lr for steps `0..total_steps-1`. */
  values(): Float64Array {
    return this.#values.slice(0, this.config.total_steps);
  }
}

/**
 * The sparsity coefficient in effect during training step `step`, as SAELens's
 * `CoefficientScheduler(warm_up_steps, final_value)` (and v5's `L1Scheduler`) yields it: with
 * warm-up W > 0 it is 0 at step 0, `final * (i / W)` at step i (float order as in python), and
 * exactly `final` from step W on; with W = 0 it is `final` throughout. (A fractional W behaves as
 * in python: `final * (i / W)` while `i - 1 < W`, which overshoots `final` at the last such step.)
 */
export function coefficientAt(step: number, final: number, warmUpSteps: number): number {
  checkInt("step", step, 0);
  if (!(warmUpSteps >= 0)) throw new RangeError(`warm-up steps must be >= 0, got ${warmUpSteps}`);
  if (!(warmUpSteps > 0)) return final;
  if (step === 0) return 0;
  // Step i reads the value left by the i-th scheduler.step(), computed with current_step = i-1:
  // final * ((current_step + 1) / W) while current_step < W, else final. For integer W that is
  // exactly final at step W; a fractional W (python allows a float) overshoots once, as there.
  return step - 1 < warmUpSteps ? final * (step / warmUpSteps) : final;
}

/** `coefficientAt` for steps `0..n-1`. */
export function coefficients(n: number, final: number, warmUpSteps: number): Float64Array {
  checkInt("n", n, 0);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = coefficientAt(i, final, warmUpSteps);
  return out;
}

/** Result of comparing one fixture case with this module. */
export interface ScheduleCheckResult {
  /** The tensor names compared (e.g. `trace.lr`, `trace.coefficient`, `trace.coeff.l1`). */
  compared: string[];
  /**
   * The element with the largest `abs / (atol + rtol*|want|)`: `abs` = |got - want|,
   * `rel` = abs / |want| (0 when abs is 0).
   */
  worst: { tensor: string; abs: number; rel: number };
  passed: boolean;
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (v && typeof v === "object" ? v as Json : {});
const num = (v: unknown): number | undefined => (typeof v === "number" ? v : undefined);

/**
 * The coefficients a SAELens config schedules, as `name -> [final, warmUpSteps]` (6.x:
 * `get_coefficients()`; only standard/gated `l1` and jumprelu `l0` are warmed up; TopK-family
 * coefficients are not scheduled). v5 (`runner` config): `l1` with `l1_warm_up_steps`.
 */
function scheduledCoefficients(config: Json): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>();
  const sae = obj(config.sae);
  const runner = obj(config.runner);
  // v5 keeps the coefficients in the runner config, which then wins over its sae section.
  for (const src of [sae, runner]) {
    for (const name of ["l1", "l0"]) {
      const value = num(src[`${name}_coefficient`]);
      if (value !== undefined) out.set(name, [value, num(src[`${name}_warm_up_steps`]) ?? 0]);
    }
  }
  return out;
}

/** Reads an `LrScheduleConfig` from a fixture case config (schedule, train or v5 train). */
function scheduleConfigOf(config: Json, kind: string, steps: number): LrScheduleConfig {
  const t = obj(config.trainer), r = obj(config.runner);
  const src = kind === "schedule" ? t : Object.keys(t).length ? t : r;
  const pick = (...keys: string[]) => {
    for (const k of keys) if (src[k] !== undefined) return src[k];
    return undefined;
  };
  return {
    lr: num(pick("lr"))!,
    lr_end: (pick("lr_end") as number | null | undefined) ?? null,
    lr_scheduler_name: String(pick("lr_scheduler_name")).toLowerCase() as LrSchedulerName,
    lr_warm_up_steps: num(pick("lr_warm_up_steps", "warm_up_steps")) ?? 0,
    lr_decay_steps: num(pick("lr_decay_steps", "decay_steps")) ?? 0,
    n_restart_cycles: num(pick("n_restart_cycles")) ?? 1,
    total_steps: steps,
  };
}

/**
 * Compares a SAELens fixture case (`kind` `schedule` or `train`, as in
 * `fixtures/saelens/manifest.json`) with this module. `tensors` holds the case's float64 tensors
 * by name; `trace.lr` and `trace.coefficient` / `trace.coeff.<name>` are compared at the case's
 * tolerance (`tolerance.rtol/atol` for schedule cases, `tolerance.schedule_traces` for train
 * cases): passing needs `|got - want| <= atol + rtol * |want|` everywhere. Dependency-free.
 */
export function checkScheduleCase(
  caseJson: unknown,
  tensors: Map<string, Float64Array>,
): ScheduleCheckResult {
  const c = obj(caseJson), config = obj(c.config), kind = String(c.kind);
  const tol = obj(c.tolerance);
  const sched = kind === "schedule" ? tol : obj(tol.schedule_traces);
  const rtol = num(sched.rtol) ?? 1e-12, atol = num(sched.atol) ?? 0;

  const lrWant = tensors.get("trace.lr");
  if (!lrWant) throw new Error(`case ${c.id}: no trace.lr tensor`);
  const steps = kind === "schedule"
    ? num(obj(config.trainer).steps) ?? lrWant.length
    : lrWant.length;
  const cfg = scheduleConfigOf(config, kind, kind === "schedule" ? steps : trainSteps(config));

  const checks: [string, Float64Array, Float64Array][] = [];
  checks.push(["trace.lr", learningRates(cfg, lrWant.length), lrWant]);
  if (kind === "schedule") {
    const t = obj(config.trainer);
    const want = tensors.get("trace.coefficient");
    if (want) {
      const final = num(t.coeff_value)!, warm = num(t.coeff_warm_up_steps) ?? 0;
      checks.push(["trace.coefficient", coefficients(want.length, final, warm), want]);
    }
  } else {
    const coeffs = scheduledCoefficients(config);
    for (const [name, want] of tensors) {
      if (!name.startsWith("trace.coeff.")) continue;
      const spec = coeffs.get(name.slice("trace.coeff.".length));
      if (!spec) throw new Error(`case ${c.id}: no coefficient config for ${name}`);
      checks.push([name, coefficients(want.length, spec[0], spec[1]), want]);
    }
  }

  let passed = true;
  const worst = { tensor: "", abs: 0, rel: 0 };
  let worstRatio = -1; // abs / allowed: the element closest to (or furthest past) its bound
  for (const [name, got, want] of checks) {
    if (got.length !== want.length) passed = false;
    for (let i = 0; i < want.length; i++) {
      const abs = Math.abs(got[i] - want[i]);
      const bound = atol + rtol * Math.abs(want[i]);
      if (!(abs <= bound)) passed = false;
      const ratio = Number.isNaN(abs) ? Infinity : abs === 0 ? 0 : abs / bound;
      if (ratio > worstRatio) {
        worstRatio = ratio;
        worst.tensor = `${name}[${i}]`;
        worst.abs = Number.isNaN(abs) ? Infinity : abs;
        worst.rel = abs === 0 ? 0 : want[i] === 0 ? Infinity : abs / Math.abs(want[i]);
      }
    }
  }
  return { compared: checks.map(([n]) => n), worst, passed };
}

/** Training steps of a train case: total samples // batch (6.x) or tokens // batch (v5). */
function trainSteps(config: Json): number {
  const t = obj(config.trainer), r = obj(config.runner);
  const explicit = num(t.total_training_steps);
  if (explicit !== undefined) return explicit;
  if (num(t.total_training_samples) !== undefined) {
    return Math.floor(num(t.total_training_samples)! / num(t.train_batch_size_samples)!);
  }
  return Math.floor(
    (num(r.training_tokens)! + (num(r.finetuning_tokens) ?? 0)) / num(r.train_batch_size_tokens)!,
  );
}
