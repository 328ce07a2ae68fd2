/** Small helpers shared by the architecture files. */
import type { StepConfig } from "./step.ts";

/** Shapes of the parameters every architecture has. */
export function encoderDecoderShapes(cfg: StepConfig): Record<string, number[]> {
  return { W_enc: [cfg.d_in, cfg.d_sae], W_dec: [cfg.d_sae, cfg.d_in], b_dec: [cfg.d_in] };
}

/** Host weights with shapes, copied so the caller's arrays can change afterwards. */
export function copyWeights(
  params: Record<string, Float32Array>,
  shapes: Record<string, number[]>,
): Record<string, { data: Float32Array; shape: number[] }> {
  return Object.fromEntries(
    Object.entries(shapes).map(([name, shape]) => [name, { data: params[name].slice(), shape }]),
  );
}

/** ‖W_dec[j]‖₂ per latent, on the host. */
export function hostRowNorms(wDec: Float32Array, dSae: number, dIn: number): Float32Array {
  const norms = new Float32Array(dSae);
  for (let j = 0; j < dSae; j++) {
    let s = 0;
    for (let i = 0; i < dIn; i++) s += wDec[j * dIn + i] ** 2;
    norms[j] = Math.sqrt(s);
  }
  return norms;
}
