/**
 * Gathers and scatter-adds of rows or columns named by an index list computed on the GPU
 * (`kernels/gather.wgsl`): AuxK over the dead latents as dense products.
 */
import type { Tensor } from "../gpu/tensor.ts";
import { params, wgsl } from "./source.ts";

/** The first min(count, slots) entries of `list` are valid; count is `total[totalAt]`. */
export interface IndexList {
  /** [slots] u32 indices. */
  list: Tensor;
  /** u32 tensor holding the number of valid indices at `totalAt`. */
  total: Tensor;
  totalAt: number;
  slots: number;
}

/** Rows per workgroup (STRIP in gather.wgsl). */
const STRIP = 32;

type Entry = "gather_cols" | "gather_rows" | "scatter_add_rows" | "scatter_add_cols";

function run(
  entry: Entry,
  idx: IndexList,
  rows: number,
  width: number,
  src: Tensor | undefined,
  dst: Tensor,
  fill = 0,
) {
  const gpu = dst.gpu;
  // 256 columns by STRIP rows per workgroup (gather.wgsl): rows of the list (slots) when whole
  // rows move, else rows of the matrix.
  const [inner, outer] = entry === "gather_rows" || entry === "scatter_add_rows"
    ? [width, idx.slots]
    : [idx.slots, rows];
  gpu.dispatch(
    gpu.kernel("gather", wgsl("gather"), entry, { TOTAL_AT: idx.totalAt }),
    [idx.list, idx.total, src, dst],
    [Math.max(1, Math.ceil(inner / 256)), Math.max(1, Math.ceil(outer / STRIP))],
    params([rows, width, idx.slots, 0], [fill, 0, 0, 0]),
  );
}

/** out[r, c] = src[r, list[c]] → [rows, slots] (`fill` in the columns past the count). */
export function gatherCols(src: Tensor, idx: IndexList, fill = 0): Tensor {
  const out = src.gpu.empty([src.rows, idx.slots]);
  run("gather_cols", idx, src.rows, src.cols, src, out, fill);
  return out;
}

/** out[c, :] = src[list[c], :] → [slots, cols] (zero rows past the count). */
export function gatherRows(src: Tensor, idx: IndexList): Tensor {
  const out = src.gpu.empty([idx.slots, src.cols]);
  run("gather_rows", idx, src.rows, src.cols, src, out);
  return out;
}

/** dst[list[c], :] += src[c, :]. */
export function scatterAddRows(dst: Tensor, src: Tensor, idx: IndexList): void {
  run("scatter_add_rows", idx, dst.rows, dst.cols, src, dst);
}

/** dst[:, list[c]] += src[:, c]. */
export function scatterAddCols(dst: Tensor, src: Tensor, idx: IndexList): void {
  run("scatter_add_cols", idx, dst.rows, dst.cols, src, dst);
}
