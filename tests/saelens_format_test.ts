import assert from "node:assert/strict";
import { join } from "node:path";
import { loadSae } from "../mod.ts";
import { saveSaeDirectory } from "../src/io/saelens_format.ts";
import { InferenceModel } from "../src/saes/inference.ts";
import { initializeParams } from "../src/saes/init.ts";
import { getArchitecture } from "../src/saes/registry.ts";
import { assertClose, gpuTest, randomArray, testGpu } from "./helpers.ts";

const base = { d_in: 12, d_sae: 40, apply_b_dec_to_input: true, normalize_activations: "none" };

Deno.test("SAELens initialisation: decoder rows at decoder_init_norm, W_enc = W_decᵀ", () => {
  const cfg = { ...base, decoder_init_norm: 0.1, jumprelu_init_threshold: 0.02 };
  const params = initializeParams(getArchitecture("jumprelu"), cfg, 3);
  for (let j = 0; j < cfg.d_sae; j++) {
    const row = params.W_dec.subarray(j * cfg.d_in, (j + 1) * cfg.d_in);
    assert.ok(Math.abs(Math.hypot(...row) - 0.1) < 1e-6);
    for (let i = 0; i < cfg.d_in; i++) assert.equal(params.W_enc[i * cfg.d_sae + j], row[i]);
  }
  assert.ok(params.b_enc.every((v) => v === 0) && params.b_dec.every((v) => v === 0));
  assert.ok(params.log_threshold.every((v) => Math.abs(v - Math.log(0.02)) < 1e-6));
});

for (const arch of ["standard", "topk", "batchtopk", "jumprelu", "gated"]) {
  Deno.test(
    `${arch}: saved SAE directory loads back and encodes/decodes like the in-memory model`,
    gpuTest,
    async () => {
      const gpu = await testGpu();
      const cfg = {
        ...base,
        decoder_init_norm: 0.5,
        k: 5,
        rescale_acts_by_decoder_norm: true,
        jumprelu_init_threshold: 0.05,
      };
      const architecture = getArchitecture(arch);
      const params = initializeParams(architecture, cfg, 11);
      params.W_enc = randomArray(params.W_enc.length, 4); // off the symmetric start so encode is non-trivial
      const sae = architecture.toInference(cfg, params, { topk_threshold: 0.1 });
      const dir = join(await Deno.makeTempDir(), "sae");
      await saveSaeDirectory(dir, sae, cfg, new Float32Array(cfg.d_sae).fill(-3));
      const loaded = await loadSae(gpu, dir);
      const x = randomArray(7 * cfg.d_in, 5, -2, 2);
      const reference = InferenceModel.upload(gpu, sae, { apply_b_dec_to_input: true });
      const acts = await gpu.read(reference.encode(gpu.upload(x, [7, cfg.d_in])));
      assertClose(await loaded.encode(x, 7), acts, { rtol: 0, atol: 0, what: "feature_acts" });
      const out = await gpu.read(reference.decode(gpu.upload(acts, [7, cfg.d_sae])));
      assertClose(await loaded.decode(acts, 7), out, { rtol: 0, atol: 0, what: "sae_out" });
      const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
      assert.deepEqual(files, ["cfg.json", "sae_weights.safetensors", "sparsity.safetensors"]);
    },
  );
}

Deno.test("loading a directory without cfg.json names the file", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(
    () => loadSae(undefined as never, dir),
    /cfg\.json: cannot read the SAE config/,
  );
});

Deno.test("saving over an existing SAE replaces it whole and leaves no temp directories", async () => {
  const root = await Deno.makeTempDir();
  const dir = join(root, "sae");
  const cfg = { ...base, decoder_init_norm: 0.1 };
  const arch = getArchitecture("standard");
  for (const seed of [1, 2]) {
    await saveSaeDirectory(dir, arch.toInference(cfg, initializeParams(arch, cfg, seed), {}), cfg);
  }
  assert.deepEqual([...Deno.readDirSync(root)].map((e) => e.name), ["sae"]);
});
