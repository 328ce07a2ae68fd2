/** Row p-norms and their gradient (`kernels/lp_norm.wgsl`). */
import { bind, chunks } from "../gpu/chunks.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { grid1d, unary } from "./elementwise.ts";
import { reduceRows } from "./reduce.ts";
import { groups, params, wgsl } from "./source.ts";

/** ‖v_r‖_p for each row → [rows]. */
export function rowLpNorms(v: Tensor, p: number): Tensor {
  if (p === 1) return reduceRows(v, "sumAbs");
  if (p === 2) return unary("sqrt", reduceRows(v, "sumSquares"), { out: undefined });
  const sums = reduceRows(v, "sumAbsPow", p);
  const gpu = v.gpu;
  gpu.dispatch(
    gpu.kernel("lp_norm", wgsl("lp_norm"), "finish_norm"),
    [sums],
    [groups(v.rows, 256)],
    params([v.rows, v.cols, 0, 0], [p, 1]),
  );
  return sums;
}

/** scale · ∂‖v_r‖_p/∂v elementwise, given the row norms from `rowLpNorms`. */
export function rowLpNormsBackward(v: Tensor, rowNorms: Tensor, p: number, scale: number): Tensor {
  const gpu = v.gpu;
  const out = gpu.empty(v.shape);
  const kernel = gpu.kernel("lp_norm", wgsl("lp_norm"), "backward");
  for (const c of chunks(gpu, v.size, 1, { aligned: true })) {
    const uniforms = params([v.rows, v.cols, c.first, c.count], [p, scale]);
    gpu.dispatch(kernel, [bind(v, c), rowNorms, bind(out, c)], grid1d(c.count), uniforms);
  }
  return out;
}
