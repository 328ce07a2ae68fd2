/**
 * Top-k selection (`kernels/topk_select.wgsl`): per row (TopK) or over the whole batch
 * (BatchTopK), returning ReLU of the kept values and zeros elsewhere.
 */
import { GpuError } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { binary, grid1d } from "./elementwise.ts";
import { groups, params, wgsl } from "./source.ts";

const ITEMS_PER_WORKGROUP = 256 * 16;

interface SelectOptions {
  /** Keep the raw selected values instead of ReLU'd ones. */
  raw?: boolean;
  /** A [1] tensor whose value further caps k (read on the GPU, no sync). */
  kLimit?: Tensor;
}

function selectTopK(
  values: Tensor,
  segments: number,
  k: number,
  options: SelectOptions = {},
): Tensor {
  const gpu = values.gpu;
  const segLen = values.size / segments;
  if (!Number.isInteger(k) || k < 0 || k > segLen) {
    throw new GpuError(`top-k: k=${k} must be an integer in [0, ${segLen}]`);
  }
  if (k === 0) return gpu.zeros(values.shape);
  const out = gpu.empty(values.shape);
  const hist = gpu.empty([segments * 256], "u32");
  const state = gpu.empty([segments * 3], "u32");
  const code = wgsl("topk_select");
  const constants = { K_FROM_BUFFER: options.kLimit ? 1 : 0, RELU_OUTPUT: options.raw ? 0 : 1 };
  // The init entry point always declares the k_limit binding; bind a placeholder when unused.
  const kLimit = options.kLimit ?? gpu.empty([1]);
  gpu.dispatch(
    gpu.kernel("topk_select", code, "init", constants),
    [undefined, hist, state, undefined, kLimit],
    [groups(segments * 256, 256)],
    params([segments, segLen, k, 0]),
  );
  for (let pass = 0; pass < 4; pass++) {
    const uniforms = params([segments, segLen, k, pass]);
    gpu.dispatch(gpu.kernel("topk_select", code, "histogram"), [values, hist, state], [
      groups(segLen, ITEMS_PER_WORKGROUP),
      segments,
    ], uniforms);
    gpu.dispatch(gpu.kernel("topk_select", code, "choose"), [undefined, hist, state], [
      groups(segments, 64),
    ], uniforms);
  }
  gpu.dispatch(
    gpu.kernel("topk_select", code, "apply", constants),
    [values, undefined, state, out],
    grid1d(values.size),
    params([segments, segLen, k, 0]),
  );
  hist.dispose();
  state.dispose();
  if (!options.kLimit) kLimit.dispose();
  return out;
}

/** ReLU of each row's k largest values; zeros elsewhere (SAELens TopK: top-k, then ReLU). */
export function topkPerRow(hiddenPre: Tensor, k: number): Tensor {
  return selectTopK(hiddenPre, hiddenPre.rows, k);
}

/**
 * Each row's k largest values among the entries where `mask` > 0, unrectified, with k capped by
 * `kLimit` (TopK's auxiliary loss over dead latents).
 */
export function topkPerRowMasked(values: Tensor, mask: Tensor, k: number, kLimit: Tensor): Tensor {
  const candidates = binary("maskGreaterOrNegInf", values, mask, "perCol", { alpha: 0 });
  const out = selectTopK(candidates, values.rows, k, { raw: true, kLimit });
  candidates.dispose();
  return out;
}

/** The `count` largest values of the whole tensor (ReLU'd), zeros elsewhere (BatchTopK). */
export function topkOverBatch(values: Tensor, count: number): Tensor {
  return selectTopK(values, 1, count);
}
