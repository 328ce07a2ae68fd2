/** Gradient clipping and Adam on the GPU, with torch's arithmetic order. */
import { bind, chunks } from "../gpu/chunks.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { binary, grid1d } from "../kernels/elementwise.ts";
import { reduceAll } from "../kernels/reduce.ts";
import { params, wgsl } from "../kernels/source.ts";
import { flatRuns, flatTexels, runRange } from "../kernels/staging.ts";

/**
 * torch.nn.utils.clip_grad_norm_'s coefficient: a [2] tensor [total 2-norm of all gradients,
 * scale = min(1, maxNorm / (norm + 1e-6))]. Nothing is scaled here: Adam applies the scale as it
 * reads each gradient (one pass fewer over the weights), `applyClip` does it in place.
 */
export function clipCoefficient(grads: readonly Tensor[], maxNorm = 1.0): Tensor {
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
  return result;
}

/** Scales gradients in place by a `clipCoefficient` result (for reading clipped gradients). */
export function applyClip(grads: readonly Tensor[], clip: Tensor): void {
  const gpu = clip.gpu;
  const scale = gpu.empty([1]);
  gpu.copy(clip, scale, 1, 0, 1);
  for (const g of grads) binary("mul", g, scale, "scalar", { out: g });
  scale.dispose();
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

  /**
   * Applies one update with learning rate `lr`. With `clip` (a `clipCoefficient` result) each
   * gradient is scaled as it is read, exactly as if it had been clipped in place first.
   */
  update(grads: Record<string, Tensor>, lr: number, clip?: Tensor): void {
    this.step += 1;
    const { beta1, beta2, eps = 1e-8 } = this.config;
    const stepSize = lr / (1 - beta1 ** this.step);
    const bc2Sqrt = Math.sqrt(1 - beta2 ** this.step);
    const f32s = [beta1, beta2, stepSize, bc2Sqrt, eps, 1 - beta1, 1 - beta2, 0, 0, 0];
    for (const [name, p] of Object.entries(this.params)) {
      const tensors = [p, grads[name], this.expAvg[name], this.expAvgSq[name]];
      if (p.size % 4 === 0) this.updateStaged(tensors, f32s, clip);
      else this.updateScalar(tensors, f32s, clip);
    }
  }

  /** Four elements per invocation, operands read from staging textures, in `flatRuns`. */
  private updateStaged(tensors: Tensor[], f32s: number[], clip?: Tensor): void {
    const [p, grad, expAvg, expAvgSq] = tensors;
    const gpu = p.gpu;
    const kernel = gpu.kernel("adam", wgsl("adam"), "staged4", { CLIP: clip ? 1 : 0 });
    for (const run of flatRuns(gpu, p.size)) {
      const staged = tensors.map((t, i) => flatTexels(t, run, `flat${i}`));
      const [param, m, v, g] = [p, expAvg, expAvgSq, grad].map((t) => runRange(t, run));
      gpu.dispatch(
        kernel,
        // Without clipping the (unread) coefficient binding takes the gradient's range.
        [param, undefined, m, v, clip ?? g, ...staged],
        grid1d(run.count / 4),
        params([run.count], f32s),
      );
    }
  }

  /** One element per invocation from storage buffers (sizes that are not whole vec4s). */
  private updateScalar(tensors: Tensor[], f32s: number[], clip?: Tensor): void {
    const gpu = tensors[0].gpu;
    const kernel = gpu.kernel("adam", wgsl("adam"), "main", { CLIP: clip ? 1 : 0 });
    // Parameters over one binding are updated in aligned chunks.
    for (const c of chunks(gpu, tensors[0].size, 1, { aligned: true })) {
      gpu.dispatch(
        kernel,
        [...tensors.map((t) => bind(t, c)), clip ?? bind(tensors[1], c)],
        grid1d(c.count),
        params([c.count], f32s),
      );
    }
  }
}
