/**
 * Top-k selection (`kernels/topk_select.wgsl`): per row (TopK) or over the whole batch
 * (BatchTopK), returning ReLU of the kept values and zeros elsewhere. Exactly k values are kept
 * per segment (ties with the k-th value go to the lowest indices), so at most k·segments outputs
 * are nonzero.
 */
import { GpuError } from "../gpu/device.ts";
import { bind, type Chunk, chunks } from "../gpu/chunks.ts";
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
  // One segment (the whole batch) streams element chunks through each histogram pass: the
  // histogram is global, so chunks just add into it. Several segments (rows) go in chunks of
  // whole rows, each selected independently.
  const parts = segments === 1
    ? [{ rows: 1, elementChunks: chunks(gpu, segLen) }]
    : chunks(gpu, segments, segLen).map((c) => ({ rows: c.count, elementChunks: [c] }));
  const maxRows = Math.max(...parts.map((part) => part.rows));
  const hist = gpu.empty([maxRows * 256], "u32");
  const state = gpu.empty([maxRows * 6], "u32");
  const code = wgsl("topk_select");
  const constants = { K_FROM_BUFFER: options.kLimit ? 1 : 0, RELU_OUTPUT: options.raw ? 0 : 1 };
  // The init entry point always declares the k_limit binding; bind a placeholder when unused.
  const kLimit = options.kLimit ?? gpu.empty([1]);
  for (const { rows, elementChunks } of parts) {
    // Values per segment inside one dispatch: a row, or the chunk's share of the batch.
    const len = (c: Chunk) => (segments === 1 ? c.count : segLen);
    gpu.dispatch(
      gpu.kernel("topk_select", code, "init", constants),
      [undefined, hist, state, undefined, kLimit],
      [groups(rows * 256, 256)],
      params([rows, segLen, k, 0, 0, 0]),
    );
    // Passes 0-3 find the k-th value; 4-7 break ties with it by index (no work without ties).
    for (let pass = 0; pass < 8; pass++) {
      for (const c of elementChunks) {
        gpu.dispatch(
          gpu.kernel("topk_select", code, "histogram"),
          [bind(values, c), hist, state],
          [groups(len(c), ITEMS_PER_WORKGROUP), rows],
          params([rows, len(c), k, pass, c.shift, segments === 1 ? c.first : 0]),
        );
      }
      gpu.dispatch(
        gpu.kernel("topk_select", code, "choose"),
        [undefined, hist, state],
        [groups(rows, 64)],
        params([rows, segLen, k, pass, 0, 0]),
      );
    }
    for (const c of elementChunks) {
      gpu.dispatch(
        gpu.kernel("topk_select", code, "apply", constants),
        [bind(values, c), undefined, state, bind(out, c)],
        grid1d(rows * len(c)),
        params([rows, len(c), k, 0, c.shift, segments === 1 ? c.first : 0]),
      );
    }
  }
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
