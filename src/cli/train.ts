/**
 * `deno task train [--config FILE] [--out DIR] [--resume]`: trains an SAE. Without --config it
 * trains the embedded default (a TopK SAE on synthetic activations with a known dictionary).
 * Progress goes to stderr; metrics to DIR/metrics.jsonl; the SAE to DIR/sae in SAELens's layout.
 */
import { parseArgs } from "node:util";
import { ConfigError } from "../config/errors.ts";
import { DEFAULT_RUN, parseRunConfig, type RunConfig } from "../config/run.ts";
import { Gpu, GpuError } from "../gpu/device.ts";
import { runTraining } from "../train/run.ts";

const USAGE = `usage: deno task train [--config FILE] [--out DIR] [--resume] [--stop-after STEPS]
  --config FILE      JSON run config (sae, trainer: SAELens field names; data; see README)
  --out DIR          output directory (default runs/<architecture>-<date>-<time>)
  --resume           continue from the newest checkpoint in DIR/checkpoints (uses DIR/run.json)
  --stop-after N     stop after N steps in total and checkpoint (resume later)
  --kernels MODE     auto (default: sparse steps where they fit and activations are sparse),
                     always (sparse wherever they fit) or never (dense GEMMs only)`;

async function loadConfig(
  path: string | undefined,
  outDir: string | undefined,
  resume: boolean,
): Promise<RunConfig> {
  if (resume) {
    if (!outDir) throw new ConfigError(["--resume needs --out DIR: the run directory to continue"]);
    path = `${outDir}/run.json`;
  }
  if (!path) return parseRunConfig(DEFAULT_RUN, "embedded default config");
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError([`${path}: cannot read the config (${(e as Error).message})`]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError([`${path}: not valid JSON (${(e as Error).message})`]);
  }
  return parseRunConfig(json, path);
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "--:--";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      config: { type: "string" },
      out: { type: "string" },
      resume: { type: "boolean", default: false },
      "stop-after": { type: "string" },
      kernels: { type: "string", default: "auto" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const kernels = values.kernels as Gpu["sparseKernels"];
  if (!["auto", "always", "never"].includes(kernels)) {
    throw new ConfigError([`--kernels: "${kernels}" is not one of auto, always, never`]);
  }
  const config = await loadConfig(values.config, values.out, values.resume!);
  const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
  const outDir = values.out ?? `runs/${config.sae.architecture}-${stamp}`;
  const gpu = await Gpu.acquire();
  gpu.sparseKernels = kernels;
  const interactive = Deno.stderr.isTerminal();
  const encoder = new TextEncoder();
  console.error(
    `webgpu-sae: training ${config.sae.architecture} d_in=${config.sae.d_in} d_sae=${config.sae.d_sae} on ${gpu.describe()}`,
  );
  const result = await runTraining(gpu, config, {
    outDir,
    resume: values.resume,
    stopAfterSteps: values["stop-after"] ? Number(values["stop-after"]) : undefined,
    onLog(m, { tokensPerSecond, totalSteps }) {
      const done = m.step + 1;
      const eta = ((totalSteps - done) * config.trainer.train_batch_size_samples) / tokensPerSecond;
      const line =
        `step ${done}/${totalSteps} | ${Math.round(tokensPerSecond)} tok/s | loss ${
          m.overall_loss.toFixed(4)
        } | ` +
        `L0 ${m.l0.toFixed(1)} | dead ${
          ((100 * m.dead_features) / config.sae.d_sae).toFixed(1)
        }% | ` +
        `EV ${m.explained_variance.toFixed(3)} | ETA ${formatDuration(eta)}`;
      Deno.stderr.writeSync(encoder.encode(interactive ? `\r${line}\x1b[K` : `${line}\n`));
    },
  });
  if (interactive) console.error();
  const recovery = result.dictionaryRecovery === undefined ? "" : `, dictionary recovery ` +
    `(mean max cosine with the true features) ${result.dictionaryRecovery.toFixed(3)}`;
  console.error(
    `done: ${result.steps} steps, ${Math.round(result.tokensPerSecond)} tokens/s${recovery}`,
  );
  if (result.evals) {
    const e = result.evals;
    console.error(
      `held-out (${outDir}/eval.json): explained variance ` +
        `${e["reconstruction_quality.explained_variance"].toFixed(3)} (sae_lens.evals formula), ` +
        `MSE ${e["reconstruction_quality.mse"].toFixed(4)}, L0 ${e["sparsity.l0"].toFixed(1)}, ` +
        `L1 ${e["sparsity.l1"].toFixed(2)}, never fired ${
          e["sparsity.never_fired_pct"].toFixed(1)
        }%`,
    );
  }
  console.error(
    result.saeDir
      ? `SAE saved in SAELens format: ${result.saeDir}`
      : `checkpoint saved in ${outDir}/checkpoints`,
  );
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    if (e instanceof ConfigError || e instanceof GpuError) {
      console.error(`error: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
