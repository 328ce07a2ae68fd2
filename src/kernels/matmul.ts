/** GEMM in the three layouts a training step needs: X·W, Xᵀ·G and G·Wᵀ. */
import { GpuError } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { groups, params, wgsl } from "./source.ts";

export interface MatmulOptions {
  /** A is stored [K, M] and used transposed. */
  transA?: boolean;
  /** B is stored [N, K] and used transposed. */
  transB?: boolean;
  /** Scale applied to the product. */
  alpha?: number;
  /** Add the product into this tensor instead of allocating a new one. */
  accumulateInto?: Tensor;
  /** Write the product into this tensor (overwriting it). */
  out?: Tensor;
}

/** C = alpha · op(A) · op(B) (+ C). A and B are row-major matrices. */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const { transA = false, transB = false, alpha = 1 } = options;
  const [M, K] = transA ? [a.cols, a.rows] : [a.rows, a.cols];
  const [Kb, N] = transB ? [b.cols, b.rows] : [b.rows, b.cols];
  if (K !== Kb) {
    throw new GpuError(`matmul: inner dimensions differ (${K} vs ${Kb}) for [${a.shape}]${transA ? "ᵀ" : ""}·[${b.shape}]${transB ? "ᵀ" : ""}`);
  }
  const gpu = a.gpu;
  const target = options.accumulateInto ?? options.out;
  if (target && target.size !== M * N) throw new GpuError(`matmul: output holds ${target.size}, need ${M}x${N}`);
  const c = target ?? gpu.empty([M, N]);
  const kernel = gpu.kernel("matmul", wgsl("matmul"), "main", {
    TRANS_A: transA ? 1 : 0,
    TRANS_B: transB ? 1 : 0,
    ACCUMULATE: options.accumulateInto ? 1 : 0,
  });
  gpu.dispatch(kernel, [a, b, c], [groups(N, 32), groups(M, 32)], params([M, N, K], [alpha]));
  return c;
}
