/** Row and column reductions (`kernels/reduce.wgsl`). */
import { bind, chunks } from "../gpu/chunks.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { grid1d } from "./elementwise.ts";
import { groups, params, wgsl } from "./source.ts";
import { flatTexels, rowsStageable, stagedRowRuns } from "./staging.ts";

const ROW_FNS = { sum: 0, sumSquares: 1, sumAbs: 2, countGreater: 3, sumAbsPow: 4 } as const;
/** What each row sums: values, squares, |values|, count of values > alpha, |values|^alpha. */
export type RowReduction = keyof typeof ROW_FNS;

/**
 * Rows at most this long and at least SHORT_MIN_ROWS of them use `rows_short` (same results): at
 * [12288, 768] it takes ~10 ms where a workgroup per row takes ~100 ms on llvmpipe.
 */
const SHORT_MAX_COLS = 2048;
const SHORT_MIN_ROWS = 256;
/** Long rows are staged from this many values: below, the copy costs more than it saves. */
const STAGED_MAIN_MIN = 2 ** 16;

/** out[r] = Σ_j f(a[r, j]) → shape [rows]. */
export function reduceRows(a: Tensor, fn: RowReduction = "sum", alpha = 0, out?: Tensor): Tensor {
  const gpu = a.gpu;
  const result = out ?? gpu.empty([a.rows]);
  const short = a.cols <= SHORT_MAX_COLS && a.rows >= SHORT_MIN_ROWS;
  const constants = { F: ROW_FNS[fn] };
  if (rowsStageable(a) && (short || a.size >= STAGED_MAIN_MIN)) {
    const entry = short ? "rows_short_staged" : "rows_main_staged";
    const kernel = gpu.kernel("reduce", wgsl("reduce"), entry, constants);
    for (const { row0, rows, texels } of stagedRowRuns(a)) {
      const uniforms = params([rows, a.cols, row0, 0], [alpha, 0]);
      // 64 rows per workgroup, or one
      const grid = grid1d(short ? rows * 4 : rows * 256);
      gpu.dispatch(kernel, [undefined, result, undefined, texels], grid, uniforms);
    }
    return result;
  }
  const kernel = gpu.kernel(
    "reduce",
    wgsl("reduce"),
    short ? "rows_short" : "rows_main",
    constants,
  );
  // Big matrices go in chunks of whole rows.
  for (const c of chunks(gpu, a.rows, a.cols)) {
    const [x, y] = grid1d(short ? c.count * 4 : c.count * 256); // 64 or 1 rows per workgroup
    const uniforms = params([c.count, a.cols, c.first, c.shift], [alpha, 0]);
    gpu.dispatch(kernel, [bind(a, c), result], [x, y], uniforms);
  }
  return result;
}

/** out[j] = Σ_r a[r, j] → shape [cols] (bias gradients). */
export function reduceCols(a: Tensor, out?: Tensor): Tensor {
  const gpu = a.gpu;
  const result = out ?? gpu.empty([a.cols]);
  if (rowsStageable(a)) {
    const kernel = gpu.kernel("reduce", wgsl("reduce"), "cols_main_staged");
    for (const { row0, rows, texels } of stagedRowRuns(a)) {
      const uniforms = params([rows, a.cols, row0, 0], [0, 0]);
      gpu.dispatch(
        kernel,
        [undefined, result, undefined, texels],
        [groups(a.cols / 4, 256)],
        uniforms,
      );
    }
    return result;
  }
  const kernel = gpu.kernel("reduce", wgsl("reduce"), "cols_main");
  // Big matrices go in chunks of whole rows; later chunks continue each column's running sum.
  for (const c of chunks(gpu, a.rows, a.cols)) {
    const uniforms = params([c.count, a.cols, c.first, c.shift], [0, 0]);
    gpu.dispatch(kernel, [bind(a, c), result], [groups(a.cols, 256)], uniforms);
  }
  return result;
}

/** Σ f(a) over every element → shape [1] (two stages: rows, then the row sums). */
export function reduceAll(a: Tensor, fn: RowReduction = "sum", alpha = 0, out?: Tensor): Tensor {
  const perRow = reduceRows(a, fn, alpha);
  const total = reduceRows(perRow.view([1, perRow.size]), "sum", 0, out);
  perRow.dispose();
  return total;
}

/** out = alpha · (a · v) + beta · out for a [rows, cols] matrix and a [cols] vector, in place. */
export function matVecInto(a: Tensor, v: Tensor, out: Tensor, alpha = 1, beta = 1): void {
  const gpu = a.gpu;
  if (rowsStageable(a)) {
    const kernel = gpu.kernel("reduce", wgsl("reduce"), "row_dots_staged");
    const vTexels = flatTexels(v, { start: 0, count: v.size }, "flat1");
    for (const { row0, rows, texels } of stagedRowRuns(a)) {
      const uniforms = params([rows, a.cols, row0, 0], [alpha, beta]);
      const bindings = [undefined, out, undefined, texels, vTexels];
      gpu.dispatch(kernel, bindings, grid1d(rows * 4), uniforms);
    }
    return;
  }
  const kernel = gpu.kernel("reduce", wgsl("reduce"), "row_dots");
  for (const c of chunks(gpu, a.rows, a.cols)) {
    const [x, y] = grid1d(c.count * 4); // 64 rows per workgroup
    const uniforms = params([c.count, a.cols, c.first, c.shift], [alpha, beta]);
    gpu.dispatch(kernel, [bind(a, c), out, v], [x, y], uniforms);
  }
}
