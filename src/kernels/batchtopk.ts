/** BatchTopK threshold EMA (`kernels/batchtopk.wgsl`). */
import { bind, chunks } from "../gpu/chunks.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { groups, params, wgsl } from "./source.ts";
import { wholeTexels } from "./staging.ts";

/** Activations each partial_minima workgroup reduces (256 invocations · SPAN). */
const PER_WORKGROUP = 256 * 64;

/**
 * threshold ← (1−lr)·threshold + lr·min(acts > 0), in place on the GPU; unchanged if none fire.
 * Two stages: many workgroups take partial minima, one reduces them and updates.
 */
export function updateTopkThreshold(acts: Tensor, threshold: Tensor, lr: number): void {
  const gpu = acts.gpu;
  const code = wgsl("batchtopk");
  const texels = wholeTexels(acts, "flat0");
  let partials: Tensor;
  if (texels) {
    partials = gpu.empty([groups(acts.size, PER_WORKGROUP)]);
    gpu.dispatch(
      gpu.kernel("batchtopk", code, "partial_minima_staged"),
      [undefined, undefined, partials, texels],
      [partials.size],
      params([acts.size, 0], [lr, 0]),
    );
  } else {
    // Activations over one binding go in chunks, each filling its own range of partial minima.
    const parts = chunks(gpu, acts.size, 1, { aligned: true });
    const perPart = parts.map((c) => groups(c.count, PER_WORKGROUP));
    partials = gpu.empty([perPart.reduce((a, b) => a + b, 0)]);
    let at = 0;
    parts.forEach((c, i) => {
      gpu.dispatch(
        gpu.kernel("batchtopk", code, "partial_minima"),
        [bind(acts, c), undefined, partials],
        [perPart[i]],
        params([c.count, at], [lr, 0]),
      );
      at += perPart[i];
    });
  }
  gpu.dispatch(
    gpu.kernel("batchtopk", code, "update_threshold"),
    [undefined, threshold, partials],
    [1],
    params([partials.size, 0], [lr, 0]),
  );
  partials.dispose();
}
