/** LR / coefficient schedules vs the SAELens 6.18 (and 5.11) fixtures, plus SAELens edge cases. */
import assert from "node:assert/strict";
import { readSafetensors, toFloat64 } from "../src/io/safetensors.ts";
import {
  checkScheduleCase,
  coefficientAt,
  coefficients,
  learningRates,
  LrSchedule,
  type LrScheduleConfig,
} from "../src/train/schedule.ts";

const FIXTURES = new URL("../fixtures/saelens/", import.meta.url);

interface Case {
  id: string;
  kind: string;
  file: string;
  config: Record<string, Record<string, unknown>>;
  tolerance: Record<string, unknown>;
  tensors: Record<string, { dtype: string; shape: number[] }>;
}

const manifest = JSON.parse(
  Deno.readTextFileSync(new URL("manifest.json", FIXTURES)),
) as { cases: Case[] };

/** The case's schedule-relevant float64 tensors (trace.lr, trace.coefficient, trace.coeff.*). */
async function scheduleTensors(c: Case): Promise<Map<string, Float64Array>> {
  const { tensors } = await readSafetensors(new URL(c.file, FIXTURES).pathname);
  const out = new Map<string, Float64Array>();
  for (const [name, entry] of tensors) {
    if (name === "trace.lr" || name === "trace.coefficient" || name.startsWith("trace.coeff.")) {
      assert.equal(entry.dtype, "float64", `${c.id} ${name} is float64`);
      out.set(name, toFloat64(entry));
    }
  }
  return out;
}

/** |a-e| <= atol + rtol*|e| elementwise, naming the first offending index. */
function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, atol: number) {
  assert.equal(got.length, want.length, "length");
  for (let i = 0; i < want.length; i++) {
    const ok = Math.abs(got[i] - want[i]) <= atol + rtol * Math.abs(want[i]);
    assert.ok(ok, `[${i}]: got ${got[i]}, want ${want[i]} (rtol ${rtol}, atol ${atol})`);
  }
}

const scheduleCases = manifest.cases.filter((c) => c.kind === "schedule");
const trainCases = manifest.cases.filter((c) => c.kind === "train");

Deno.test("fixtures: the manifest has schedule and train cases", () => {
  assert.ok(scheduleCases.length >= 6, `schedule cases: ${scheduleCases.length}`);
  assert.ok(trainCases.length >= 6, `train cases: ${trainCases.length}`);
});

for (const c of scheduleCases) {
  Deno.test(`fixture ${c.id}: lr and coefficient traces`, async () => {
    const tensors = await scheduleTensors(c);
    const t = c.config.trainer;
    const rtol = c.tolerance.rtol as number, atol = c.tolerance.atol as number;
    const cfg: LrScheduleConfig = {
      lr: t.lr as number,
      lr_end: t.lr_end as number,
      lr_scheduler_name: t.lr_scheduler_name as LrScheduleConfig["lr_scheduler_name"],
      lr_warm_up_steps: t.warm_up_steps as number,
      lr_decay_steps: t.decay_steps as number,
      n_restart_cycles: (t.n_restart_cycles as number | undefined) ?? 1,
      total_steps: t.steps as number,
    };
    assertClose(learningRates(cfg), tensors.get("trace.lr")!, rtol, atol);
    const schedule = new LrSchedule(cfg);
    assertClose(
      Array.from({ length: cfg.total_steps }, (_, i) => schedule.lrAt(i)),
      tensors.get("trace.lr")!,
      rtol,
      atol,
    );
    const want = tensors.get("trace.coefficient")!;
    const got = coefficients(
      want.length,
      t.coeff_value as number,
      t.coeff_warm_up_steps as number,
    );
    assertClose(got, want, rtol, atol);

    const res = checkScheduleCase(c, tensors);
    assert.deepEqual(res.compared, ["trace.lr", "trace.coefficient"]);
    assert.ok(res.passed, `${c.id}: worst ${JSON.stringify(res.worst)}`);
  });
}

for (const c of trainCases) {
  Deno.test(`fixture ${c.id}: trace.lr and trace.coeff.* (schedule_traces tolerance)`, async () => {
    const tensors = await scheduleTensors(c);
    const res = checkScheduleCase(c, tensors);
    assert.deepEqual(
      [...res.compared].sort(),
      [...tensors.keys()].sort(),
      "every schedule trace is compared",
    );
    assert.ok(res.passed, `${c.id}: worst ${JSON.stringify(res.worst)}`);
  });
}

Deno.test("checkScheduleCase reports a perturbed trace", async () => {
  const c = scheduleCases.find((x) => x.id === "schedule-cosine-warmup-decay")!;
  const tensors = await scheduleTensors(c);
  const lr = tensors.get("trace.lr")!.slice();
  lr[30] *= 1 + 1e-9;
  tensors.set("trace.lr", lr);
  const res = checkScheduleCase(c, tensors);
  assert.equal(res.passed, false);
  assert.equal(res.worst.tensor, "trace.lr[30]");
  assert.ok(Math.abs(res.worst.rel - 1e-9) < 1e-12, `rel ${res.worst.rel}`);
});

const base: LrScheduleConfig = {
  lr: 1e-3,
  lr_end: 1e-4,
  lr_scheduler_name: "constant",
  lr_warm_up_steps: 0,
  lr_decay_steps: 0,
  n_restart_cycles: 1,
  total_steps: 40,
};

Deno.test("constant without warm-up/decay is lr everywhere", () => {
  assert.ok(learningRates(base).every((v) => v === 1e-3));
});

Deno.test("warm-up: lr*(1/W) at step 0, peak at step W-1; W=1 has no ramp", () => {
  const W = 8;
  const lrs = learningRates({ ...base, lr_warm_up_steps: W });
  assert.equal(lrs[0], 1e-3 * (1 / W));
  assert.ok(Math.abs(lrs[W - 1] - 1e-3) < 1e-18);
  assert.equal(lrs[W], 1e-3);
  for (let i = 1; i < W; i++) assert.ok(Math.abs(lrs[i] - 1e-3 * (i + 1) / W) < 1e-17);
  const one = learningRates({ ...base, lr_warm_up_steps: 1 });
  assert.ok(one.every((v) => v === 1e-3));
});

Deno.test("decay: starts at lr_end (lr for constant) and ends at lr_end/D, never 0", () => {
  const D = 10;
  const cos = learningRates({ ...base, lr_scheduler_name: "cosineannealing", lr_decay_steps: D });
  const start = base.total_steps - D;
  assert.ok(cos[start - 1] > 1e-4, "cosine stops above lr_end");
  assert.ok(Math.abs(cos[start] - 1e-4) < 1e-19);
  assert.ok(Math.abs(cos[base.total_steps - 1] - 1e-4 / D) < 1e-18);
  const con = learningRates({ ...base, lr_decay_steps: D });
  assert.equal(con[start - 1], 1e-3);
  assert.equal(con[start], 1e-3); // lr_end is ignored for constant
  assert.ok(Math.abs(con[base.total_steps - 1] - 1e-3 / D) < 1e-18);
});

Deno.test("decay over every step: milestone 0 is never hit, so the decay lags one epoch", () => {
  const D = base.total_steps;
  const lrs = learningRates({ ...base, lr_decay_steps: D });
  assert.equal(lrs[0], 1e-3); // the main (constant) scheduler's initial value
  assert.equal(lrs[1], 1e-3); // decay epoch 0: lr * (lr/lr)
  for (let i = 1; i < D; i++) assert.ok(Math.abs(lrs[i] - 1e-3 * (1 - (i - 1) / D)) < 1e-17);
  // With warm-up the decay starts right after it (closed form at the shared milestone).
  const wd = learningRates({ ...base, lr_warm_up_steps: 4, lr_decay_steps: D - 4 });
  assert.equal(wd[4], 1e-3);
  assert.ok(Math.abs(wd[D - 1] - 1e-3 / (D - 4)) < 1e-18);
});

Deno.test("cosine without warm-up starts exactly at lr and follows the closed form", () => {
  const cfg = { ...base, lr_scheduler_name: "cosineannealing" as const };
  const lrs = learningRates(cfg);
  assert.equal(lrs[0], 1e-3);
  for (let i = 0; i < lrs.length; i++) {
    const closed = 1e-4 + (1e-3 - 1e-4) * (1 + Math.cos(Math.PI * i / 40)) / 2;
    assert.ok(Math.abs(lrs[i] - closed) <= 1e-12 * closed);
  }
  assert.ok(lrs[39] > 1e-4);
});

Deno.test("warm restarts: T_0 = (steps-W-D)//cycles, leftover steps start a new cycle", () => {
  const lrs = learningRates({
    ...base,
    lr_scheduler_name: "cosineannealingwarmrestarts",
    total_steps: 50,
    n_restart_cycles: 4,
  });
  const t0 = 12;
  for (const r of [0, 12, 24, 36, 48]) assert.equal(lrs[r], lrs[0], `restart at ${r}`);
  for (let i = 0; i < 50; i++) {
    const closed = 1e-4 + (1e-3 - 1e-4) * (1 + Math.cos(Math.PI * (i % t0) / t0)) / 2;
    assert.ok(Math.abs(lrs[i] - closed) <= 1e-15 * closed);
  }
});

Deno.test("lr_end null defaults to lr/10", () => {
  const cfg = { ...base, lr_scheduler_name: "cosineannealing" as const, lr_decay_steps: 5 };
  assert.deepEqual(
    learningRates({ ...cfg, lr_end: null }),
    learningRates({ ...cfg, lr_end: 1e-4 }),
  );
});

Deno.test("LrSchedule.lrAt is a pure function of the step (resume-safe), also past the end", () => {
  const cfg: LrScheduleConfig = {
    ...base,
    lr_scheduler_name: "cosineannealing",
    lr_warm_up_steps: 5,
    lr_decay_steps: 7,
  };
  const all = learningRates(cfg, 100);
  const a = new LrSchedule(cfg), b = new LrSchedule(cfg);
  for (const s of [17, 3, 39, 0, 99, 40, 64]) assert.equal(a.lrAt(s), all[s]);
  for (let s = 0; s < 100; s++) assert.equal(b.lrAt(s), all[s]);
  assert.deepEqual(a.values(), all.slice(0, 40));
  // One step past SAELens's last step the decay reaches ~0 (torch's recurrence rounds it to a
  // tiny value, possibly negative, rather than exactly 0).
  assert.ok(Math.abs(all[40]) < 1e-19, `${all[40]}`);
});

Deno.test("invalid settings throw like SAELens/torch (or refuse nonsense)", () => {
  assert.throws(() =>
    learningRates({
      ...base,
      lr_scheduler_name: "cosineannealingwarmrestarts",
      n_restart_cycles: 41,
    }), /T_0/);
  assert.throws(
    () =>
      learningRates({
        ...base,
        lr_scheduler_name: "cosineannealing",
        lr_end: 0,
        lr_decay_steps: 3,
      }),
    /lr_end/,
  );
  assert.throws(
    () =>
      learningRates({
        ...base,
        lr_scheduler_name: "cosineannealing",
        lr_end: 2e-3,
        lr_decay_steps: 3,
      }),
    /start_factor/,
  );
  assert.throws(
    () => learningRates({ ...base, lr_warm_up_steps: 30, lr_decay_steps: 11 }),
    /exceed/,
  );
  assert.throws(
    () => learningRates({ ...base, lr_scheduler_name: "linear" as "constant" }),
    /unsupported/,
  );
  // lr_end 0 is fine without decay (cosine to 0).
  assert.equal(
    learningRates({ ...base, lr_scheduler_name: "cosineannealing", lr_end: 0 })[0],
    1e-3,
  );
});

Deno.test("coefficientAt: 0 at step 0, final*(i/W) during warm-up, exactly final from W", () => {
  assert.equal(coefficientAt(0, 2, 15), 0);
  assert.equal(coefficientAt(7, 0.7, 25), 0.7 * (7 / 25));
  assert.equal(coefficientAt(15, 2, 15), 2);
  assert.equal(coefficientAt(1000, 2, 15), 2);
  assert.equal(coefficientAt(0, 3, 0), 3);
  assert.equal(coefficientAt(0, 3, 1), 0);
  assert.equal(coefficientAt(1, 3, 1), 3);
  // python's float warm-up: current_step 2 < 2.5 -> final * (3 / 2.5)
  assert.equal(coefficientAt(3, 1, 2.5), 3 / 2.5);
  assert.equal(coefficientAt(4, 1, 2.5), 1);
});
