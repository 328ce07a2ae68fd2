/** Gradient clipping and Adam on the GPU, with torch's arithmetic order. */
import { bind, chunks } from "../gpu/chunks.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { binary, grid1d } from "../kernels/elementwise.ts";
import { reduceAll } from "../kernels/reduce.ts";
import { params, wgsl } from "../kernels/source.ts";

/**
 * Scales all gradients in place so their global 2-norm is at most `maxNorm`.
 * Returns a [2] tensor: [pre-clip total norm, applied scale]. SAELens always clips at 1.0.
 */
export function clipGradNorm(grads: readonly Tensor[], maxNorm = 1.0): Tensor {
  const gpu = grads[0].gpu;
  const sumSquares = gpu.empty([grads.length]);
  grads.forEach((g, i) => {
    const s = reduceAll(g, "sumSquares");
    gpu.copy(s, sumSquares, 0, i, 1);
    s.dispose();
  });
  const result = gpu.empty([2]);
  gpu.dispatch(
    gpu.kernel("clip", wgsl("clip"), "finish"),
    [sumSquares, result],
    [1],
    params([grads.length, 0], [maxNorm, 0]),
  );
  sumSquares.dispose();
  const scale = gpu.empty([1]);
  gpu.copy(result, scale, 1, 0, 1);
  for (const g of grads) binary("mul", g, scale, "scalar", { out: g });
  scale.dispose();
  return result;
}

export interface AdamConfig {
  beta1: number;
  beta2: number;
  eps?: number;
}

/** Adam state for a set of named parameters (moments start at zero, as torch's). */
export class Adam {
  step = 0;
  readonly expAvg: Record<string, Tensor> = {};
  readonly expAvgSq: Record<string, Tensor> = {};

  constructor(readonly params: Record<string, Tensor>, readonly config: AdamConfig) {
    for (const [name, p] of Object.entries(params)) {
      this.expAvg[name] = p.gpu.zeros(p.shape);
      this.expAvgSq[name] = p.gpu.zeros(p.shape);
    }
  }

  /** Applies one update with learning rate `lr` using `grads` (already clipped). */
  update(grads: Record<string, Tensor>, lr: number): void {
    this.step += 1;
    const { beta1, beta2, eps = 1e-8 } = this.config;
    const stepSize = lr / (1 - beta1 ** this.step);
    const bc2Sqrt = Math.sqrt(1 - beta2 ** this.step);
    for (const [name, p] of Object.entries(this.params)) {
      const gpu = p.gpu;
      const kernel = gpu.kernel("adam", wgsl("adam"));
      const tensors = [p, grads[name], this.expAvg[name], this.expAvgSq[name]];
      const f32s = [beta1, beta2, stepSize, bc2Sqrt, eps, 1 - beta1, 1 - beta2, 0, 0, 0];
      // Parameters over one binding are updated in aligned chunks.
      for (const c of chunks(gpu, p.size, 1, { aligned: true })) {
        gpu.dispatch(
          kernel,
          tensors.map((t) => bind(t, c)),
          grid1d(c.count),
          params([c.count, 0], f32s),
        );
      }
    }
  }
}
