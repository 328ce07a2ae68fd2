/**
 * Sparse steps (the TopK family, the standard, JumpReLU and Gated SAEs) against the dense steps: same
 * losses, outputs and gradients on the same batch (with dead latents so AuxK runs, with and
 * without decoder-norm rescaling, Matryoshka's prefix losses, the standard SAE's L1 gradients,
 * JumpReLU's threshold window), and the sparse kernels really run.
 */
import { parseSaeConfig } from "../src/config/sae.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { initializeParams } from "../src/saes/init.ts";
import { getArchitecture } from "../src/saes/registry.ts";
import type { Measured, StepConfig } from "../src/saes/step.ts";
import { TrainingSae } from "../src/saes/training_sae.ts";
import { assertClose, gpuTest, randomArray, testGpu } from "./helpers.ts";

const [dIn, dSae, batch] = [24, 96, 40];

async function stepOn(
  gpu: Gpu,
  policy: Gpu["sparseKernels"],
  saeConfig: Record<string, unknown>,
  measured?: Measured,
) {
  const cfg = parseSaeConfig(
    { d_in: dIn, d_sae: dSae, ...saeConfig },
    "test",
    () => {},
  ) as unknown as StepConfig;
  const arch = getArchitecture(saeConfig.architecture as string);
  const params = initializeParams(arch, cfg, 3);
  // Nonzero biases so centring and b_enc both matter.
  params.b_dec = randomArray(dIn, 4, -0.2, 0.2);
  params.b_enc = randomArray(cfg.d_sae, 5, -0.1, 0.1);
  const sae = TrainingSae.fromHost(gpu, arch, cfg, params, {}, { beta1: 0.9, beta2: 0.999 });
  sae.measured = measured;
  const x = gpu.upload(randomArray(batch * dIn, 6, -1, 1), [batch, dIn]);
  // Every third latent is dead.
  const dead = gpu.upload(
    Float32Array.from({ length: cfg.d_sae }, (_, j) => (j % 3 === 0 ? 1 : 0)),
  );
  gpu.sparseKernels = policy;
  const dispatch = gpu.dispatch.bind(gpu);
  let sparseDispatches = 0;
  let gatherDispatches = 0;
  gpu.dispatch = (kernel, ...rest) => {
    if (kernel.label.startsWith("sparse:")) sparseDispatches++;
    if (kernel.label.startsWith("gather:")) gatherDispatches++;
    return dispatch(kernel, ...rest);
  };
  try {
    const result = sae.forwardBackward(x, dead, { l1: 0.3, l0: 0.2 });
    const named = {
      ...Object.fromEntries(Object.entries(result.losses).map(([k, v]) => [`loss.${k}`, v])),
      ...Object.fromEntries(Object.entries(result.grads).map(([k, v]) => [`grad.${k}`, v])),
      sae_out: result.outputs.sae_out,
      feature_acts: result.outputs.feature_acts,
    };
    const values = await gpu.readMany(Object.values(named));
    return {
      values: Object.fromEntries(Object.keys(named).map((k, i) => [k, values[i]])),
      sparseDispatches,
      gatherDispatches,
    };
  } finally {
    gpu.dispatch = dispatch;
    gpu.sparseKernels = "auto";
  }
}

const CASES: Record<string, unknown>[] = [
  { architecture: "gated" },
  { architecture: "gated", apply_b_dec_to_input: false },
  // JumpReLU thresholds near the pre-activations, so the bandwidth window holds inactive latents.
  { architecture: "jumprelu", jumprelu_init_threshold: 0.05, jumprelu_bandwidth: 0.1 },
  {
    architecture: "jumprelu",
    jumprelu_init_threshold: 0.05,
    jumprelu_bandwidth: 0.1,
    jumprelu_sparsity_loss_mode: "tanh",
  },
  { architecture: "standard" },
  { architecture: "standard", lp_norm: 2, apply_b_dec_to_input: false },
  { architecture: "topk", k: 6, rescale_acts_by_decoder_norm: true },
  { architecture: "topk", k: 6, rescale_acts_by_decoder_norm: false, apply_b_dec_to_input: true },
  { architecture: "batchtopk", k: 6, rescale_acts_by_decoder_norm: true },
  { architecture: "matryoshka_batchtopk", k: 6, matryoshka_widths: [8, 40, dSae] },
  {
    architecture: "matryoshka_batchtopk",
    k: 6,
    matryoshka_widths: [30, dSae],
    rescale_acts_by_decoder_norm: true,
    normalize_activations: "layer_norm",
  },
];

for (const saeConfig of CASES) {
  Deno.test(
    `sparse and dense steps agree: ${JSON.stringify(saeConfig)}`,
    gpuTest,
    async () => {
      const gpu = await testGpu();
      const dense = await stepOn(gpu, "never", saeConfig);
      const sparse = await stepOn(gpu, "always", saeConfig);
      if (dense.sparseDispatches !== 0) throw new Error("the dense path ran sparse kernels");
      if (sparse.sparseDispatches === 0) throw new Error("the sparse path never ran");
      for (const [name, expected] of Object.entries(dense.values)) {
        const got = sparse.values[name];
        if (!got) throw new Error(`sparse step lacks ${name}`);
        assertClose(got, expected, { rtol: 1e-4, atol: 1e-6, what: name });
      }
    },
  );
}

Deno.test(
  "auto mode: TopK always sparse, standard only at a low measured density",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const ran = async (config: Record<string, unknown>, activeFraction?: number) =>
      (await stepOn(
        gpu,
        "auto",
        config,
        activeFraction === undefined ? undefined : { activeFraction, deadLatents: 0 },
      )).sparseDispatches > 0;
    const standard = { architecture: "standard" };
    if (!await ran({ architecture: "topk", k: 6 })) throw new Error("topk did not run sparse");
    if (await ran(standard)) throw new Error("standard ran sparse with no measured density");
    if (await ran(standard, 0.5)) throw new Error("standard ran sparse at density 0.5");
    if (!await ran(standard, 0.01)) throw new Error("standard did not run sparse at density 0.01");
  },
);

Deno.test(
  "AuxK over dead latents: dense slots, sparse lists, or both, all as the dense step",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // 86 of 256 latents dead; a measured count of 10 gives 64 dense slots and 22 dead latents left
    // to the lists, no measurement none.
    const config = { architecture: "topk", k: 6, d_sae: 256, rescale_acts_by_decoder_norm: true };
    const dense = await stepOn(gpu, "never", config);
    const runs = {
      "all in slots": await stepOn(gpu, "always", config),
      "slots and lists": await stepOn(gpu, "auto", config, { activeFraction: 0, deadLatents: 10 }),
      "slots, lists gated off": await stepOn(gpu, "auto", config, {
        activeFraction: 0,
        deadLatents: 80,
      }),
      "lists only": await stepOn(gpu, "auto", config),
    };
    for (const [what, run] of Object.entries(runs)) {
      if ((run.gatherDispatches > 0) !== (what !== "lists only")) {
        throw new Error(`${what}: ${run.gatherDispatches} gather dispatches`);
      }
      for (const [name, expected] of Object.entries(dense.values)) {
        assertClose(run.values[name], expected, {
          rtol: 1e-4,
          atol: 1e-6,
          what: `${what} ${name}`,
        });
      }
    }
  },
);
