/** BatchTopK threshold EMA (`kernels/batchtopk.wgsl`). */
import { bind, chunks } from "../gpu/chunks.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { params, wgsl } from "./source.ts";

/** threshold ← (1−lr)·threshold + lr·min(acts > 0), in place on the GPU; unchanged if none fire. */
export function updateTopkThreshold(acts: Tensor, threshold: Tensor, lr: number): void {
  const gpu = acts.gpu;
  const kernel = gpu.kernel("batchtopk", wgsl("batchtopk"), "update_threshold");
  // Activations over one binding go in chunks, carrying the running minimum in `partial`.
  const parts = chunks(gpu, acts.size, 1, { aligned: true });
  const partial = gpu.empty([1]);
  parts.forEach((c, i) => {
    const flags = (i > 0 ? 1 : 0) | (i === parts.length - 1 ? 2 : 0);
    const uniforms = params([c.count, flags], [lr, 0]);
    gpu.dispatch(kernel, [bind(acts, c), threshold, partial], [1], uniforms);
  });
  partial.dispose();
}
