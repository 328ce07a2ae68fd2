/** The per-row part of SAELens 5.x's ghost-grads loss (`kernels/ghost_grads.wgsl`). */
import { GpuError } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { grid1d } from "./elementwise.ts";
import { params, wgsl } from "./source.ts";

/** Row loss sums and the gradient with respect to the unscaled ghost output. */
export interface GhostRows {
  /** [rows] Σ_d w·m per row (the loss is their sum times `scale`). */
  rowLoss: Tensor;
  /** [rows, cols] gradient of scale·Σ w·m with respect to `raw`. */
  dRaw: Tensor;
}

/**
 * Given raw = exp(hidden_pre over dead latents) · W_dec (unscaled ghost output), the batch x
 * and sae_out, computes SAELens's rescaled ghost loss per row and its gradient with respect to
 * `raw`, treating the norm ratio and the MSE rescaling factor as constants (they are detached
 * in SAELens). `scale` multiplies the gradient: 1/(rows·cols) for SAELens's mean.
 */
export function ghostGradRows(raw: Tensor, saeOut: Tensor, x: Tensor, scale: number): GhostRows {
  for (const [name, t] of [["sae_out", saeOut], ["x", x]] as const) {
    if (t.rows !== raw.rows || t.cols !== raw.cols) {
      throw new GpuError(`ghostGradRows: ${name} is [${t.shape}], raw is [${raw.shape}]`);
    }
  }
  const gpu = raw.gpu;
  const rowLoss = gpu.empty([raw.rows]);
  const dRaw = gpu.empty(raw.shape);
  const [gx, gy] = grid1d(raw.rows * 256);
  gpu.dispatch(
    gpu.kernel("ghost_grads", wgsl("ghost_grads")),
    [raw, saeOut, x, rowLoss, dRaw],
    [gx, gy],
    params([raw.rows, raw.cols], [scale, 0]),
  );
  return { rowLoss, dRaw };
}
