/**
 * SAELens's initialisation (TrainingSAE.initialize_weights): W_dec rows kaiming-uniform
 * (bound √2·√(3/d_in)) rescaled to `decoder_init_norm`, W_enc = W_decᵀ, biases zero, plus what
 * an architecture sets itself (JumpReLU's log_threshold). Seeded with our own generator, so
 * values differ from torch's for the same seed; the distribution is the same.
 */
import { Rng } from "../util/rng.ts";
import type { Architecture } from "./architecture.ts";
import type { StepConfig } from "./step.ts";

export interface InitConfig extends StepConfig {
  decoder_init_norm?: number | null;
}

/** Fresh host parameters for `arch` under `cfg`. */
export function initializeParams<C extends InitConfig>(
  arch: Architecture<C>,
  cfg: C,
  seed: number,
): Record<string, Float32Array> {
  const { d_in: dIn, d_sae: dSae } = cfg;
  const rng = new Rng(seed);
  const bound = Math.sqrt(2) * Math.sqrt(3 / dIn);
  const wDec = Float32Array.from({ length: dSae * dIn }, () => (2 * rng.next() - 1) * bound);
  const initNorm = cfg.decoder_init_norm;
  if (initNorm !== null && initNorm !== undefined) {
    for (let j = 0; j < dSae; j++) {
      const row = wDec.subarray(j * dIn, (j + 1) * dIn);
      const norm = Math.hypot(...row);
      for (let i = 0; i < dIn; i++) row[i] = (row[i] / norm) * initNorm;
    }
  }
  const wEnc = new Float32Array(dIn * dSae);
  for (let j = 0; j < dSae; j++) {
    for (let i = 0; i < dIn; i++) wEnc[i * dSae + j] = wDec[j * dIn + i];
  }
  const params: Record<string, Float32Array> = {};
  for (const [name, shape] of Object.entries(arch.paramShapes(cfg))) {
    params[name] = new Float32Array(shape.reduce((a, b) => a * b, 1));
  }
  return { ...params, W_dec: wDec, W_enc: wEnc, ...(arch.initialParams?.(cfg) ?? {}) };
}
