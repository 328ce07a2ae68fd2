/**
 * `deno task bench [--quick] [--arch A,B] [--batch N] [--d-in N] [--d-sae N] [--k N]
 * [--steps N] [--json FILE] [--md FILE] [--skip-sources] [--skip-torch]
 * [--kernels auto|always|never] [--passes]`: GEMM GFLOP/s in the three training layouts,
 * train-step tokens/s per architecture next to a same-run PyTorch dense-step baseline
 * (`bench/torch_baseline.py`, when a Python with torch is present) and activation-source
 * throughput; with `--passes`, each architecture's GPU time per kernel. Writes a Markdown report
 * and a JSON file.
 */
import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/device.ts";
import { architectureNames } from "../src/saes/registry.ts";
import { mergeBaselines, type TorchBaseline, torchBaseline } from "./baseline.ts";
import { benchGemm, type GemmResult } from "./gemm.ts";
import { benchSources, type SourceResult } from "./sources.ts";
import { benchTrainStep, DEAD_FRACTION, type TrainStepResult } from "./train_step.ts";

/** SAELens's reference shape (issue #5) and a CI-sized one. */
const FULL = {
  batch: 1024,
  d_in: 768,
  d_sae: 12288,
  k: 64,
  steps: 3,
  gemm: { M: 4096, K: 768, N: 12288 },
};
const QUICK = {
  batch: 256,
  d_in: 128,
  d_sae: 1024,
  k: 16,
  steps: 10,
  gemm: { M: 1024, K: 256, N: 2048 },
};
const TRAINED = architectureNames().filter((a) => a !== "standard_v5");

function markdown(
  adapter: string,
  gemm: GemmResult[],
  steps: TrainStepResult[],
  sources: SourceResult[],
  quick: boolean,
  torch: TorchBaseline,
): string {
  const mib = (b: number) => (b / 2 ** 20).toFixed(1);
  const peer = (s: TrainStepResult) => torch.results.find((t) => t.arch === s.arch);
  const withTorch = torch.available;
  const torchCells = (s: TrainStepResult) => {
    if (!withTorch) return "";
    const t = peer(s);
    return t
      ? ` ${Math.round(t.tokens_per_s)} | ${(s.tokens_per_s / t.tokens_per_s).toFixed(2)} |`
      : " – | – |";
  };
  const env = Object.entries(torch.env ?? {}).map(([k, v]) =>
    v === null ? `${k} unset` : `${k}=${v}`
  );
  const torchLine = withTorch
    ? `- PyTorch baseline (same run, each architecture timed right after ours, \`bench/torch_baseline.py\`: dense SAELens 6.18 step, autograd, clip_grad_norm_ 1.0, Adam; AuxK with ${
      ((torch.dead_fraction ?? 0) * 100).toFixed(1)
    }% latents dead): torch ${torch.torch_version} on ${torch.python}, ${torch.threads} threads, BLAS ${torch.blas}; ${
      env.join(", ")
    }; its [${torch.gemm?.m}×${torch.gemm?.k}]·[${torch.gemm?.k}×${torch.gemm?.n}] GEMM ${
      torch.gemm?.gflops.toFixed(1)
    } GFLOP/s. Ratio = ours / torch.`
    : `- PyTorch baseline: not run (${torch.reason})`;
  return [
    `# webgpu-sae benchmark${quick ? " (quick)" : ""}`,
    "",
    `- Adapter: ${adapter}`,
    `- Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} CPU threads, ${
      new Date().toISOString()
    }`,
    "",
    "## GEMM",
    "",
    "| layout | M | N | K | GFLOP/s | ms |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    ...gemm.map((g) =>
      `| ${g.layout} | ${g.M} | ${g.N} | ${g.K} | ${g.gflops.toFixed(1)} | ${g.ms.toFixed(1)} |`
    ),
    "",
    "## Train step (forward, losses, backward, bookkeeping, clip, Adam)",
    "",
    `| architecture | batch | d_in | d_sae | k | L0 (warm-up → after) | dead latents | tokens/s | ms/step | peak GPU buffers (MiB) | textures (MiB) |${
      withTorch ? " PyTorch tokens/s | ratio |" : ""
    }`,
    `| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |${
      withTorch ? " ---: | ---: |" : ""
    }`,
    ...steps.map((s) =>
      `| ${s.arch} | ${s.batch} | ${s.d_in} | ${s.d_sae} | ${s.k} | ${s.l0.toFixed(0)} → ${
        s.l0_after.toFixed(0)
      } | ${s.dead_latents} | ${Math.round(s.tokens_per_s)} | ${s.ms_per_step.toFixed(1)} | ${
        mib(s.peak_buffer_bytes)
      } | ${mib(s.texture_bytes)} |${torchCells(s)}`
    ),
    "",
    `- TopK-family runs hold ${
      DEAD_FRACTION * 100
    }% of latents dead (b_enc −1000, dead_feature_window 1), as the baseline marks them, so both sides compute AuxK; latents that never fire on the repeated benchmark batch count as dead too. Standard, JumpReLU and Gated start with encoder (gate) biases that put L0 near k, the regime of a trained SAE. Kernel paths are chosen as in training (\`auto\`): the TopK family always runs the sparse step, the ReLU family (standard, JumpReLU without a pre-activation loss, Gated) while the L0 measured in warm-up is at most d_sae/32; one more warm-up step on the chosen path compiles its pipelines before timing. L0 is measured at the last warm-up step and at one step after the timed ones: on the repeated batch the ReLU family's L0 drifts (the standard SAE's rises by about 5 a step at the reference shape), so the timed steps run between the two. Textures: the packing and staging textures (GEMM operands, staged operands of elementwise kernels, the sparse step's entries) each run creates; they are cached for reuse, outside the buffer pool.`,
    "",
    torchLine,
    "",
    ...kernelTables(steps),
    "## Activation sources (tiny GPT-2 fixture, blocks.1.hook_resid_post, CPU onnxruntime)",
    "",
    "| source | batch | activations/s |",
    "| --- | ---: | ---: |",
    ...sources.map((s) => `| ${s.source} | ${s.batch} | ${Math.round(s.tokens_per_s)} |`),
    "",
  ].join("\n");
}

/** With `--passes`: each architecture's kernels by GPU time per step (timestamp queries). */
function kernelTables(steps: TrainStepResult[]): string[] {
  if (!steps.some((s) => s.kernels)) return [];
  return [
    "## GPU time per kernel (`--passes`: timestamp queries around every dispatch of the timed steps)",
    "",
    ...steps.flatMap((s) => {
      const kernels = s.kernels ?? [];
      const total = kernels.reduce((a, k) => a + k.ms_per_step, 0);
      return [
        `### ${s.arch}: ${total.toFixed(0)} ms of GPU time per step`,
        "",
        "| kernel | ms/step | calls/step | share |",
        "| --- | ---: | ---: | ---: |",
        ...kernels.slice(0, KERNELS_SHOWN).map((k) =>
          `| ${k.label} | ${k.ms_per_step.toFixed(1)} | ${k.calls_per_step.toFixed(1)} | ${
            (100 * k.ms_per_step / total).toFixed(1)
          }% |`
        ),
        "",
      ];
    }),
  ];
}

/** Kernels listed per architecture in the `--passes` tables (the JSON has all of them). */
const KERNELS_SHOWN = 15;

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      arch: { type: "string" },
      batch: { type: "string" },
      "d-in": { type: "string" },
      "d-sae": { type: "string" },
      k: { type: "string" },
      steps: { type: "string" },
      json: { type: "string", default: "bench/report.json" },
      md: { type: "string", default: "bench/report.md" },
      "skip-sources": { type: "boolean", default: false },
      "skip-torch": { type: "boolean", default: false },
      kernels: { type: "string", default: "auto" },
      passes: { type: "boolean", default: false },
    },
  });
  const preset = values.quick ? QUICK : FULL;
  const num = (v: string | undefined, fallback: number) => (v === undefined ? fallback : Number(v));
  const shape = {
    batch: num(values.batch, preset.batch),
    d_in: num(values["d-in"], preset.d_in),
    d_sae: num(values["d-sae"], preset.d_sae),
    k: num(values.k, preset.k),
    steps: num(values.steps, preset.steps),
  };
  const archs = values.arch ? values.arch.split(",") : TRAINED;
  const gpu = await Gpu.acquire();
  if (!["auto", "always", "never"].includes(values.kernels!)) {
    console.error(`--kernels must be auto, always or never (got "${values.kernels}")`);
    Deno.exit(2);
  }
  gpu.sparseKernels = values.kernels as Gpu["sparseKernels"];
  console.error(`adapter: ${gpu.describe()}`);
  const gemm = await benchGemm(gpu, { ...preset.gemm, repeats: values.quick ? 3 : 2 });
  for (const g of gemm) {
    console.error(`gemm ${g.layout} ${g.M}x${g.N}x${g.K}: ${g.gflops.toFixed(1)} GFLOP/s`);
  }
  // Each architecture's PyTorch step is timed right after ours, so that both sides of a ratio
  // see the same machine: this VM's speed drifts by up to 1.5x over a run.
  const trainSteps: TrainStepResult[] = [];
  const baselines: TorchBaseline[] = [];
  for (const arch of archs) {
    const result = await benchTrainStep(gpu, { arch, ...shape }, { passes: values.passes });
    console.error(
      `${arch}: ${Math.round(result.tokens_per_s)} tokens/s (${
        result.ms_per_step.toFixed(1)
      } ms/step)`,
    );
    trainSteps.push(result);
    if (values["skip-torch"]) continue;
    const peer = await torchBaseline(shape, [arch]);
    for (const t of peer.results) {
      console.error(`torch ${t.arch}: ${Math.round(t.tokens_per_s)} tokens/s`);
    }
    baselines.push(peer);
  }
  const torch: TorchBaseline = values["skip-torch"]
    ? { available: false, reason: "skipped (--skip-torch)", results: [] }
    : mergeBaselines(baselines);
  if (!torch.available) console.error(`torch baseline: not run (${torch.reason})`);
  const sources = values["skip-sources"]
    ? []
    : await benchSources({ seconds: values.quick ? 2 : 5 });
  for (const s of sources) {
    console.error(`source ${s.source}: ${Math.round(s.tokens_per_s)} activations/s`);
  }
  const report = markdown(gpu.describe(), gemm, trainSteps, sources, values.quick!, torch);
  await Deno.writeTextFile(values.md!, report);
  await Deno.writeTextFile(
    values.json!,
    JSON.stringify(
      {
        adapter: gpu.describe(),
        quick: values.quick,
        gemm,
        train_steps: trainSteps,
        torch_baseline: torch,
        sources,
      },
      null,
      2,
    ) + "\n",
  );
  console.log(report);
}
