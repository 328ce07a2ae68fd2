/** BatchTopK threshold EMA (`kernels/batchtopk.wgsl`). */
import type { Tensor } from "../gpu/tensor.ts";
import { params, wgsl } from "./source.ts";

/** threshold ← (1−lr)·threshold + lr·min(acts > 0), in place on the GPU; unchanged if none fire. */
export function updateTopkThreshold(acts: Tensor, threshold: Tensor, lr: number): void {
  const gpu = acts.gpu;
  const kernel = gpu.kernel("batchtopk", wgsl("batchtopk"), "update_threshold");
  gpu.dispatch(kernel, [acts, threshold], [1], params([acts.size, 0], [lr, 0]));
}
