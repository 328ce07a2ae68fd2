/** JumpReLU SAE kernels (`kernels/jumprelu.wgsl`): the thresholded forward and fused backward. */
import { bind, type Chunk, chunks } from "../gpu/chunks.ts";
import { GpuError } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { grid1d } from "./elementwise.ts";
import { reduceRows } from "./reduce.ts";
import { groups, params, QUOTIENT_LIMIT, wgsl } from "./source.ts";
import type { SparseLists } from "./sparse.ts";
import { flatRuns, flatTexels, runRange } from "./staging.ts";

/** How the sparsity and pre-activation losses are formed (SAELens JumpReLU config). */
export interface JumpReluLossOptions {
  bandwidth: number;
  /** "step": Σ(h > t), trains only the threshold; "tanh": Σ tanh(tanhScale·f·‖W_dec‖). */
  mode: "step" | "tanh";
  /** Sparsity coefficient / batch size. */
  l0Scale: number;
  tanhScale: number;
  /** pre_act_loss_coefficient / batch size, or null when there is no pre-activation loss. */
  preActScale: number | null;
}

export interface JumpReluBackward {
  /** dL/d‖W_dec[j]‖ from the tanh and pre-activation losses, [cols]. */
  dNorms: Tensor;
  /** l0Scale · Σ of the sparsity terms, [1]. */
  l0Loss: Tensor;
  /** preActScale · Σ relu(t − h)·dead·‖W_dec‖, [1] (0 without a pre-activation loss). */
  preActLoss: Tensor;
}

/** Chunk fields: forward takes element chunks, backward chunks of whole rows. */
function uniforms(h: Tensor, c: Chunk, o?: JumpReluLossOptions): ArrayBuffer {
  const f32s = o ? [o.bandwidth, o.l0Scale, o.tanhScale, o.preActScale ?? 0] : [1, 0, 0, 0];
  const rows = c.unit === 1 ? h.rows : c.count;
  return params([rows, h.cols, c.first * c.unit, c.first, c.count, c.shift], f32s);
}

/** f = h where h > threshold (per column, strict), else 0. */
export function jumpReluForward(h: Tensor, threshold: Tensor): Tensor {
  return forward(h, threshold).acts;
}

/**
 * `jumpReluForward` plus, from the same read of h, the gradient support: 1 where the backward
 * reads dL/df (h > threshold, or h within `bandwidth`/2 of it: the threshold's straight-through
 * window), 0 elsewhere.
 */
export function jumpReluForwardWithSupport(
  h: Tensor,
  threshold: Tensor,
  bandwidth: number,
): { acts: Tensor; support: Tensor } {
  const { acts, support } = forward(h, threshold, bandwidth);
  return { acts, support: support! };
}

function forward(h: Tensor, threshold: Tensor, supportBandwidth?: number) {
  const gpu = h.gpu;
  const acts = gpu.empty(h.shape);
  const support = supportBandwidth === undefined ? undefined : gpu.empty(h.shape);
  const constants = { SUPPORT: support ? 1 : 0 };
  const bandwidth = supportBandwidth ?? 1;
  // Four elements per invocation from staging textures when each group of four shares a row
  // (and rows are few enough for `quotient`, kernels/quotient.wgsl, to find each one's column).
  if (h.cols % 4 === 0 && h.rows < QUOTIENT_LIMIT) {
    const kernel = gpu.kernel("jumprelu", wgsl("jumprelu"), "forward_staged4", constants);
    const thresholds = flatTexels(threshold, { start: 0, count: threshold.size }, "flat1");
    for (const run of flatRuns(gpu, h.size)) {
      const supportOut = support ? runRange(support, run) : gpu.unusedBinding;
      const outputs = [runRange(acts, run), undefined, supportOut];
      const textures = [flatTexels(h, run, "flat0"), thresholds];
      const fields = [h.rows, h.cols, run.start, 0, run.count, 0];
      gpu.dispatch(
        kernel,
        [undefined, undefined, undefined, undefined, ...outputs, ...textures],
        grid1d(run.count / 4),
        params(fields, [bandwidth, 0, 0, 0]),
      );
    }
    return { acts, support };
  }
  const kernel = gpu.kernel("jumprelu", wgsl("jumprelu"), "forward", constants);
  const options = { bandwidth, mode: "step" as const, l0Scale: 0, tanhScale: 0, preActScale: 0 };
  for (const c of chunks(gpu, h.size, 1, { multiple: 4, aligned: true })) {
    const supportOut = support ? bind(support, c) : gpu.unusedBinding;
    const bindings = [bind(h, c), threshold, undefined, undefined, bind(acts, c), undefined];
    gpu.dispatch(kernel, [...bindings, supportOut], grid1d(c.count), uniforms(h, c, options));
  }
  return { acts, support };
}

/**
 * The JumpReLU losses and backward in one pass over the columns. `grad` holds dL/df from the
 * reconstruction and is overwritten with dL/dh; dL/dlog_threshold is added to `dLogThreshold`.
 * With `support` (the latent lists of `jumpReluForwardWithSupport`'s support; not with a
 * pre-activation loss) each column walks only its listed rows, with the same results as the
 * dense walk when `grad` is zero off the lists.
 */
export function jumpReluBackward(
  h: Tensor,
  threshold: Tensor,
  decoderNorms: Tensor,
  deadMask: Tensor,
  grad: Tensor,
  dLogThreshold: Tensor,
  options: JumpReluLossOptions,
  support?: SparseLists,
): JumpReluBackward {
  const gpu = h.gpu;
  const cols = h.cols;
  const colOut = gpu.empty([3, cols]);
  const constants = {
    TANH: options.mode === "tanh" ? 1 : 0,
    PRE_ACT: options.preActScale === null ? 0 : 1,
  };
  const common = [threshold, decoderNorms, deadMask];
  if (support) {
    if (options.preActScale !== null) {
      throw new GpuError("jumpReluBackward: the pre-activation loss needs the dense walk");
    }
    const kernel = gpu.kernel("jumprelu", wgsl("jumprelu"), "backward_lists", constants);
    const whole: Chunk = { first: 0, count: h.rows, unit: cols, base: 0, shift: 0, whole: true };
    const bindings = [h, ...common, grad, dLogThreshold, colOut, support.offsets, support.index];
    gpu.dispatch(kernel, bindings, [groups(cols, 64)], uniforms(h, whole, options));
  } else {
    const kernel = gpu.kernel("jumprelu", wgsl("jumprelu"), "backward", constants);
    // Big matrices go in chunks of whole rows; later chunks add into the per-column results.
    for (const c of chunks(gpu, h.rows, cols)) {
      const bindings = [bind(h, c), ...common, bind(grad, c), dLogThreshold, colOut];
      gpu.dispatch(kernel, bindings, [groups(cols, 256)], uniforms(h, c, options));
    }
  }
  const sums = reduceRows(colOut); // [Σ dn (unused), l0, pre_act]
  const dNorms = gpu.empty([cols]);
  const l0Loss = gpu.empty([1]);
  const preActLoss = gpu.empty([1]);
  gpu.copy(colOut, dNorms, 0, 0, cols);
  gpu.copy(sums, l0Loss, 1, 0, 1);
  gpu.copy(sums, preActLoss, 2, 0, 1);
  return { dNorms, l0Loss, preActLoss };
}
