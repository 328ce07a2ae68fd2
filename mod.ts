/**
 * webgpu-sae: sparse autoencoders for mechanistic interpretability, trained with WebGPU kernels
 * and checked step by step against SAELens.
 *
 * @example Load an SAE saved by `deno task train` (or by SAELens) and encode activations:
 * ```ts
 * import { Gpu, loadSae } from "./mod.ts";
 * const gpu = await Gpu.acquire();
 * const sae = await loadSae(gpu, "runs/topk-20261123-235959/sae");
 * const acts = await sae.encode(new Float32Array(sae.dIn * 4), 4); // [4, d_sae]
 * ```
 * @module
 */
import type { Gpu } from "./src/gpu/device.ts";
import { loadSaeDirectory } from "./src/io/saelens_format.ts";
import { InferenceModel } from "./src/saes/inference.ts";

export { Gpu, GpuError } from "./src/gpu/device.ts";
export { Tensor } from "./src/gpu/tensor.ts";
export type { Architecture, InferenceSae } from "./src/saes/architecture.ts";
export { architectureNames, getArchitecture } from "./src/saes/registry.ts";
export { TrainingSae } from "./src/saes/training_sae.ts";
export { InferenceModel } from "./src/saes/inference.ts";
export { parseSaeConfig, type SaeConfig } from "./src/config/sae.ts";
export { parseTrainerConfig, type TrainerConfig } from "./src/config/trainer.ts";
export { ConfigError } from "./src/config/errors.ts";
export { coefficientAt, learningRates } from "./src/train/schedule.ts";
export { loadSaeDirectory, saveSaeDirectory } from "./src/io/saelens_format.ts";
export { readSafetensors, SafetensorsError, writeSafetensorsAtomic } from "./src/io/safetensors.ts";
export { SyntheticSource } from "./src/data/synthetic.ts";

/** An SAE loaded for inference, with host-array encode/decode. */
export interface LoadedSae {
  readonly dIn: number;
  readonly dSae: number;
  readonly model: InferenceModel;
  /** Feature activations [rows, d_sae] of activations [rows, d_in]. */
  encode(x: Float32Array, rows: number): Promise<Float32Array>;
  /** Reconstruction [rows, d_in] of feature activations [rows, d_sae]. */
  decode(acts: Float32Array, rows: number): Promise<Float32Array>;
}

/** Loads an SAE directory in SAELens's layout (cfg.json + sae_weights.safetensors). */
export async function loadSae(gpu: Gpu, dir: string): Promise<LoadedSae> {
  const { sae, cfg } = await loadSaeDirectory(dir);
  const model = InferenceModel.upload(gpu, sae, cfg);
  const { d_in: dIn, d_sae: dSae } = cfg;
  const check = (data: Float32Array, rows: number, width: number, what: string) => {
    if (data.length !== rows * width) {
      throw new Error(
        `${what}: expected ${rows}×${width} = ${rows * width} values, got ${data.length}`,
      );
    }
  };
  return {
    dIn,
    dSae,
    model,
    async encode(x, rows) {
      check(x, rows, dIn, "encode input");
      const acts = gpu.scope(() => model.encode(gpu.upload(x, [rows, dIn])));
      const out = await gpu.read(acts);
      acts.dispose();
      return out;
    },
    async decode(acts, rows) {
      check(acts, rows, dSae, "decode input");
      const out = gpu.scope(() => model.decode(gpu.upload(acts, [rows, dSae])));
      const values = await gpu.read(out);
      out.dispose();
      return values;
    },
  };
}
