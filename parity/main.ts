/**
 * `deno task parity [--fixtures DIR] [--filter PATTERN] [--json FILE] [--kernels both|sparse|dense]`:
 * runs every case of a fixture directory against this implementation (GPU cases on both kernel
 * paths by default), prints a table and exits non-zero on any failure. Kinds not implemented yet
 * are failures, never skips.
 */
import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/device.ts";
import { checkScheduleCase } from "../src/train/schedule.ts";
import { Comparison } from "./compare.ts";
import { type FixtureCase, loadCaseTensors, loadManifest, type StoredTensor } from "./fixtures.ts";
import { checkNormalizeCase } from "./normalize.ts";
import { checkStepCase } from "./step.ts";
import { checkV5StepCase } from "./v5_step.ts";
import { checkTrainCase } from "./train.ts";

export interface CaseReport {
  id: string;
  kind: string;
  architecture: string | null;
  passed: boolean;
  compared: string[];
  worst: { tensor: string; abs: number; rel: number };
  error?: string;
  /** Stored results not compared: not computed yet, or not comparable per the manifest (inputs excluded). */
  not_compared: string[];
  seconds: number;
}

/** Stored tensors that are inputs of a case rather than results to compare. */
const INPUT_PREFIXES = ["params.", "input.", "state.", "init.", "data.", "fit.stream", "fit.init."];

type Checker = (
  gpu: () => Promise<Gpu>,
  c: FixtureCase,
  t: Map<string, StoredTensor>,
) => Promise<Comparison>;

const CHECKERS: Record<string, Checker> = {
  step: async (gpu, c, t) => checkStepCase(await gpu(), c, t),
  schedule: (_gpu, c, t) => Promise.resolve(scheduleComparison(c, t)),
  normalize: async (gpu, c, t) => checkNormalizeCase(await gpu(), c, t),
  ghost_grads: async (gpu, c, t) => checkV5StepCase(await gpu(), c, t),
  decoder_norm: async (gpu, c, t) => checkV5StepCase(await gpu(), c, t),
  train: async (gpu, c, t) => checkTrainCase(await gpu(), c, t),
};

function scheduleComparison(c: FixtureCase, t: Map<string, StoredTensor>): Comparison {
  const values = new Map([...t].map(([name, s]) => [name, s.values]));
  const result = checkScheduleCase(c, values);
  const cmp = new Comparison();
  cmp.compared.push(...result.compared);
  cmp.worst = result.worst;
  if (!result.passed) cmp.fail(`worst ${result.worst.tensor}: abs ${result.worst.abs}`);
  return cmp;
}

/** Kinds this implementation can check; cases of other kinds fail as "not implemented". */
export function implementedKinds(): string[] {
  return Object.keys(CHECKERS);
}

/** Runs one case and reports it (errors become failures, never exceptions). */
export async function runCase(
  getGpu: () => Promise<Gpu>,
  dir: string,
  c: FixtureCase,
): Promise<CaseReport> {
  const start = performance.now();
  const report: CaseReport = {
    id: c.id,
    kind: c.kind,
    architecture: c.architecture,
    passed: false,
    compared: [],
    worst: { tensor: "", abs: 0, rel: 0 },
    not_compared: [],
    seconds: 0,
  };
  try {
    const checker = CHECKERS[c.kind];
    if (!checker) throw new Error(`kind "${c.kind}" not implemented`);
    const tensors = await loadCaseTensors(dir, c);
    const cmp = await checker(getGpu, c, tensors);
    Object.assign(report, { passed: cmp.passed, compared: cmp.compared, worst: cmp.worst });
    const compared = new Set(cmp.compared);
    report.not_compared = [...tensors.keys()].filter(
      (name) => !compared.has(name) && !INPUT_PREFIXES.some((p) => name.startsWith(p)),
    );
    if (!cmp.passed) report.error = cmp.failures.slice(0, 5).join("; ") || "nothing compared";
  } catch (e) {
    report.error = (e as Error).message;
  }
  report.seconds = (performance.now() - start) / 1000;
  return report;
}

/** Which kernel paths the GPU cases run on: both (default), or only one of them. */
export type KernelPaths = "both" | "sparse" | "dense";

/**
 * Runs the cases of `dir` whose id matches `filter`. With `both`, every GPU case runs with the
 * sparse kernel paths allowed and again forced dense (reported as "<id> [dense]").
 */
export async function runParity(
  dir: string,
  filter?: RegExp,
  paths: KernelPaths = "both",
): Promise<CaseReport[]> {
  const manifest = await loadManifest(dir);
  let gpu: Promise<Gpu> | undefined;
  const acquire = () => (gpu ??= Gpu.acquire());
  const reports: CaseReport[] = [];
  const runs = paths === "both" ? [true, false] : [paths === "sparse"];
  // The sparse run takes every sparse path that fits, whatever the measured density.
  for (const c of manifest.cases) {
    if (filter && !filter.test(c.id)) continue;
    for (const sparse of runs) {
      if (!sparse && paths === "both" && c.kind === "schedule") continue;
      const getGpu = async () =>
        Object.assign(await acquire(), {
          sparseKernels: sparse ? "always" as const : "never" as const,
        });
      const report = await runCase(getGpu, dir, c);
      if (!sparse) report.id += " [dense]";
      reports.push(report);
    }
  }
  return reports;
}

function formatTable(reports: CaseReport[]): string {
  const header = [
    "case".padEnd(53),
    "kind".padEnd(13),
    "compared",
    " skipped",
    "  worst tensor".padEnd(34),
    "  abs err",
    "   rel err",
    "  result",
  ];
  const lines = [header.join("")];
  for (const r of reports) {
    lines.push([
      r.id.padEnd(53),
      r.kind.padEnd(13),
      String(r.compared.length).padStart(8),
      String(r.not_compared.length).padStart(8),
      "  " + r.worst.tensor.slice(0, 32).padEnd(32),
      r.worst.abs.toExponential(2).padStart(9),
      r.worst.rel.toExponential(2).padStart(10),
      "  " + (r.passed ? "pass" : `FAIL: ${r.error}`),
    ].join(""));
  }
  const passed = reports.filter((r) => r.passed).length;
  lines.push(
    `skipped = stored results not compared: not computed yet, or not comparable per the manifest (e.g. final.* when tolerance.final.applies is false); names in --json not_compared`,
    `worst = the element with the largest |a-e|/(atol+rtol|e|)`,
    `parity: ${passed} passed, ${reports.length - passed} failed`,
  );
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      fixtures: { type: "string", default: "fixtures/saelens" },
      filter: { type: "string" },
      json: { type: "string" },
      kernels: { type: "string", default: "both" },
    },
  });
  if (!["both", "sparse", "dense"].includes(values.kernels!)) {
    console.error(`--kernels must be both, sparse or dense (got "${values.kernels}")`);
    Deno.exit(2);
  }
  const reports = await runParity(
    values.fixtures!,
    values.filter ? new RegExp(values.filter) : undefined,
    values.kernels as KernelPaths,
  );
  console.log(formatTable(reports));
  if (values.json) {
    await Deno.writeTextFile(values.json, JSON.stringify({ cases: reports }, null, 2) + "\n");
  }
  Deno.exit(reports.length > 0 && reports.every((r) => r.passed) ? 0 : 1);
}
