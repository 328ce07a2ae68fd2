/**
 * Matryoshka BatchTopK SAE (SAELens `matryoshka_batchtopk`): BatchTopK plus, for every width but
 * the last, an MSE loss reconstructing x from the first `width` latents of the already-selected
 * activations (with b_dec), so that prefixes of the dictionary work on their own.
 */
import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { binary } from "../kernels/elementwise.ts";
import type { Architecture } from "./architecture.ts";
import { type BatchTopKConfig, batchTopKSelect, batchTopKToInference } from "./batchtopk.ts";
import { encoderDecoderShapes } from "./common.ts";
import { trainTopKFamily } from "./topk.ts";

export interface MatryoshkaConfig extends BatchTopKConfig {
  matryoshka_widths: number[];
}

/** [d_sae] masks with ones on the first `width` latents, uploaded once per device. */
const prefixMasks = new WeakMap<Gpu, Map<string, Tensor>>();
function prefixMask(gpu: Gpu, width: number, dSae: number): Tensor {
  let masks = prefixMasks.get(gpu);
  if (!masks) prefixMasks.set(gpu, masks = new Map());
  const key = `${width}/${dSae}`;
  let mask = masks.get(key);
  if (!mask) {
    mask = gpu.keep(gpu.upload(Float32Array.from({ length: dSae }, (_, j) => (j < width ? 1 : 0))));
    masks.set(key, mask);
  }
  return mask;
}

export const matryoshka: Architecture<MatryoshkaConfig> = {
  name: "matryoshka_batchtopk",
  paramShapes: (cfg) => ({ ...encoderDecoderShapes(cfg), b_enc: [cfg.d_sae] }),
  initialState: () => ({ topk_threshold: 0 }),
  coefficients: () => ({}),
  trainForward: (step, cfg, state) =>
    trainTopKFamily(step, cfg, {
      select: batchTopKSelect(step, cfg, state.topk_threshold),
      extraLosses(featureActs) {
        const gpu = featureActs.gpu;
        const dActs = gpu.zeros(featureActs.shape);
        for (const width of cfg.matryoshka_widths.slice(0, -1)) {
          const mask = prefixMask(gpu, width, cfg.d_sae);
          const prefixActs = binary("mul", featureActs, mask, "perCol");
          const { out, decoded } = step.decode(prefixActs, cfg.rescale_acts_by_decoder_norm);
          const dOut = step.squaredErrorLoss(`inner_mse_loss_${width}`, out, step.x);
          const dDecoded = step.decoderBackward(decoded, dOut);
          const dPrefix = cfg.rescale_acts_by_decoder_norm
            ? step.divideByNormsBackward(prefixActs, dDecoded)
            : dDecoded;
          binary("add", dActs, binary("mul", dPrefix, mask, "perCol"), "full", { out: dActs });
        }
        return dActs;
      },
    }),
  toInference: batchTopKToInference,
};
