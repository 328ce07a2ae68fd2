import {
  normalizeDecoderRows,
  removeGradientParallelToDecoder,
  standardV5,
  type StandardV5Config,
} from "../src/saes/standard_v5.ts";
import { standard } from "../src/saes/standard.ts";
import { TrainStep } from "../src/saes/step.ts";
import { TrainingSae } from "../src/saes/training_sae.ts";
import { assertClose, gpuTest, randomArray, testGpu } from "./helpers.ts";

const [dIn, dSae, batch] = [8, 24, 6];

function hostParams(seed: number): Record<string, Float32Array> {
  return {
    W_enc: randomArray(dIn * dSae, seed, -0.5, 0.5),
    W_dec: randomArray(dSae * dIn, seed + 1, -0.5, 0.5),
    b_dec: randomArray(dIn, seed + 2, -0.1, 0.1),
    b_enc: randomArray(dSae, seed + 3, -0.2, 0.1),
  };
}

function config(overrides: Partial<StandardV5Config> = {}): StandardV5Config {
  return {
    d_in: dIn,
    d_sae: dSae,
    apply_b_dec_to_input: true,
    l1_coefficient: 0.3,
    lp_norm: 1,
    use_ghost_grads: true,
    normalize_sae_decoder: true,
    scale_sparsity_penalty_by_decoder_norm: false,
    ...overrides,
  };
}

/** Row j of W divided by its 2-norm, and the projection of G off the rows of a unit W. */
function normalizeRef(w: Float32Array): Float32Array {
  const out = new Float32Array(w.length);
  for (let j = 0; j < dSae; j++) {
    let s = 0;
    for (let i = 0; i < dIn; i++) s += w[j * dIn + i] ** 2;
    for (let i = 0; i < dIn; i++) out[j * dIn + i] = w[j * dIn + i] / Math.sqrt(s);
  }
  return out;
}

function projectRef(g: Float32Array, w: Float32Array): Float64Array {
  const out = new Float64Array(g.length);
  for (let j = 0; j < dSae; j++) {
    let dot = 0;
    for (let i = 0; i < dIn; i++) dot += g[j * dIn + i] * w[j * dIn + i];
    for (let i = 0; i < dIn; i++) out[j * dIn + i] = g[j * dIn + i] - dot * w[j * dIn + i];
  }
  return out;
}

Deno.test(
  "unit-norm decoder rows and the gradient projection match the reference",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const p = hostParams(1);
    const params = Object.fromEntries(
      Object.entries(standardV5.paramShapes(config())).map(([n, s]) => [n, gpu.upload(p[n], s)]),
    );
    const step = new TrainStep(config(), params, {
      x: gpu.upload(randomArray(batch * dIn, 9), [batch, dIn]),
      deadMask: gpu.zeros([dSae]),
      coefficients: { l1: 0.3 },
    });
    normalizeDecoderRows(step);
    const [wDec, norms] = await gpu.readMany([params.W_dec, step.decoderRowNorms]);
    const unit = normalizeRef(p.W_dec);
    assertClose(wDec, unit, { rtol: 1e-6, atol: 1e-7, what: "normalized W_dec" });
    assertClose(norms, new Float32Array(dSae).fill(1), { rtol: 0, atol: 1e-6, what: "row norms" });

    const g = randomArray(dSae * dIn, 3);
    const grad = gpu.upload(g, [dSae, dIn]);
    removeGradientParallelToDecoder(grad, params.W_dec);
    assertClose(await grad.read(), projectRef(g, wDec), {
      rtol: 1e-5,
      atol: 1e-6,
      what: "projected",
    });
  },
);

Deno.test(
  "before_step projects only W_dec's gradient; after_step leaves it raw",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const p = hostParams(2);
    const x = randomArray(batch * dIn, 4, -1, 1);
    const dead = Float32Array.from({ length: dSae }, (_, j) => (j % 3 === 0 ? 1 : 0));
    const run = async (mode: "after_step" | "before_step") => {
      const cfg = config({ decoder_grad_projection: mode });
      const sae = TrainingSae.fromHost(gpu, standardV5, cfg, p, {}, { beta1: 0, beta2: 0.999 });
      const result = sae.forwardBackward(
        gpu.upload(x, [batch, dIn]),
        gpu.upload(dead),
        { l1: 0.3 },
      );
      const names = Object.keys(result.grads);
      const values = await gpu.readMany([...names.map((n) => result.grads[n]), sae.params.W_dec]);
      const grads = Object.fromEntries(names.map((n, i) => [n, values[i]]));
      return { grads, wDec: values[names.length] };
    };
    const raw = await run("after_step");
    const projected = await run("before_step");
    for (const name of ["W_enc", "b_enc", "b_dec"]) {
      assertClose(projected.grads[name], raw.grads[name], { rtol: 0, atol: 0, what: name });
    }
    assertClose(projected.grads.W_dec, projectRef(raw.grads.W_dec, raw.wDec), {
      rtol: 1e-5,
      atol: 1e-7,
      what: "W_dec grad",
    });
  },
);

Deno.test("ghost grads with no dead latent change the loss but no gradient", gpuTest, async () => {
  const gpu = await testGpu();
  const p = hostParams(3);
  const x = randomArray(batch * dIn, 5, -1, 1);
  const run = async (useGhost: boolean) => {
    const sae = TrainingSae.fromHost(
      gpu,
      standardV5,
      config({ use_ghost_grads: useGhost }),
      p,
      {},
      { beta1: 0, beta2: 0.999 },
    );
    const result = sae.forwardBackward(gpu.upload(x, [batch, dIn]), gpu.zeros([dSae]), {
      l1: 0.3,
    });
    const names = Object.keys(result.grads);
    const values = await gpu.readMany([
      ...names.map((n) => result.grads[n]),
      result.total,
      result.losses.mse_loss,
    ]);
    return {
      grads: Object.fromEntries(names.map((n, i) => [n, values[i]])),
      total: values[names.length][0],
      mse: values[names.length + 1][0],
      ghost: useGhost ? (await result.losses.ghost_grad_loss.read())[0] : 0,
    };
  };
  const without = await run(false);
  const withGhost = await run(true);
  for (const name of Object.keys(without.grads)) {
    assertClose(withGhost.grads[name], without.grads[name], { rtol: 0, atol: 0, what: name });
  }
  // mse_loss sums over d_in; the ghost loss is the per-element mean: mse / d_in.
  assertClose([withGhost.ghost], [without.mse / dIn], { rtol: 1e-4, atol: 1e-6, what: "ghost" });
  assertClose([withGhost.total], [without.total + withGhost.ghost], {
    rtol: 1e-6,
    atol: 1e-6,
    what: "total",
  });
});

Deno.test(
  "without a unit-norm decoder, norm-weighted sparsity equals the v6 standard SAE",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const p = hostParams(4);
    const x = randomArray(batch * dIn, 6, -1, 1);
    const v5 = config({
      use_ghost_grads: false,
      normalize_sae_decoder: false,
      scale_sparsity_penalty_by_decoder_norm: true,
      lp_norm: 2,
    });
    const v6 = {
      d_in: dIn,
      d_sae: dSae,
      apply_b_dec_to_input: true,
      l1_coefficient: 0.3,
      lp_norm: 2,
      l1_warm_up_steps: 0,
    };
    const results = [];
    for (
      const sae of [
        TrainingSae.fromHost(gpu, standardV5, v5, p, {}, { beta1: 0, beta2: 0.999 }),
        TrainingSae.fromHost(gpu, standard, v6, p, {}, { beta1: 0, beta2: 0.999 }),
      ]
    ) {
      const r = sae.forwardBackward(gpu.upload(x, [batch, dIn]), gpu.zeros([dSae]), { l1: 0.3 });
      const names = ["W_enc", "W_dec", "b_enc", "b_dec"];
      const values = await gpu.readMany([
        ...names.map((n) => r.grads[n]),
        r.losses.l1_loss,
        r.total,
      ]);
      results.push(
        Object.fromEntries([...names, "l1_loss", "total"].map((n, i) => [n, values[i]])),
      );
    }
    for (const name of Object.keys(results[0])) {
      assertClose(results[0][name], results[1][name], { rtol: 1e-6, atol: 1e-7, what: name });
    }
  },
);
