/**
 * The TopK family's sparse step against its dense step: same losses, outputs and gradients on
 * the same batch (with dead latents so AuxK runs, with and without decoder-norm rescaling, and
 * Matryoshka's prefix losses), and the sparse kernels really run.
 */
import { parseSaeConfig } from "../src/config/sae.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { initializeParams } from "../src/saes/init.ts";
import { getArchitecture } from "../src/saes/registry.ts";
import type { StepConfig } from "../src/saes/step.ts";
import { TrainingSae } from "../src/saes/training_sae.ts";
import { assertClose, gpuTest, randomArray, testGpu } from "./helpers.ts";

const [dIn, dSae, batch] = [24, 96, 40];

async function stepOn(gpu: Gpu, sparse: boolean, saeConfig: Record<string, unknown>) {
  const cfg = parseSaeConfig(
    { d_in: dIn, d_sae: dSae, k: 6, ...saeConfig },
    "test",
    () => {},
  ) as unknown as StepConfig;
  const arch = getArchitecture(saeConfig.architecture as string);
  const params = initializeParams(arch, cfg, 3);
  // Nonzero biases so centring and b_enc both matter.
  params.b_dec = randomArray(dIn, 4, -0.2, 0.2);
  params.b_enc = randomArray(dSae, 5, -0.1, 0.1);
  const sae = TrainingSae.fromHost(gpu, arch, cfg, params, {}, { beta1: 0.9, beta2: 0.999 });
  const x = gpu.upload(randomArray(batch * dIn, 6, -1, 1), [batch, dIn]);
  // Every third latent is dead.
  const dead = gpu.upload(Float32Array.from({ length: dSae }, (_, j) => (j % 3 === 0 ? 1 : 0)));
  gpu.sparseKernels = sparse;
  const dispatch = gpu.dispatch.bind(gpu);
  let sparseDispatches = 0;
  gpu.dispatch = (kernel, ...rest) => {
    if (kernel.label.startsWith("sparse:")) sparseDispatches++;
    return dispatch(kernel, ...rest);
  };
  try {
    const result = sae.forwardBackward(x, dead, {});
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
    };
  } finally {
    gpu.dispatch = dispatch;
    gpu.sparseKernels = true;
  }
}

const CASES: Record<string, unknown>[] = [
  { architecture: "topk", rescale_acts_by_decoder_norm: true },
  { architecture: "topk", rescale_acts_by_decoder_norm: false, apply_b_dec_to_input: true },
  { architecture: "batchtopk", rescale_acts_by_decoder_norm: true },
  { architecture: "matryoshka_batchtopk", matryoshka_widths: [8, 40, dSae] },
  {
    architecture: "matryoshka_batchtopk",
    matryoshka_widths: [30, dSae],
    rescale_acts_by_decoder_norm: true,
    normalize_activations: "layer_norm",
  },
];

for (const saeConfig of CASES) {
  Deno.test(
    `sparse and dense TopK-family steps agree: ${JSON.stringify(saeConfig)}`,
    gpuTest,
    async () => {
      const gpu = await testGpu();
      const dense = await stepOn(gpu, false, saeConfig);
      const sparse = await stepOn(gpu, true, saeConfig);
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
