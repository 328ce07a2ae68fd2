/** Dispatches that run only when a GPU-side value exceeds a limit (`kernels/gate.wgsl`). */
import type { Tensor } from "../gpu/tensor.ts";
import { params, wgsl } from "./source.ts";

/** Work gated on `value[0] > limit`, decided on the GPU. */
export interface Gate {
  /** [1] f32. */
  value: Tensor;
  limit: number;
}

/** Indirect dispatch arguments: `grid` when the gate is open, no workgroups otherwise. */
export function gatedGrid(gate: Gate, grid: readonly [number, number?]): Tensor {
  const gpu = gate.value.gpu;
  const args = gpu.empty([3], "u32");
  gpu.dispatch(
    gpu.kernel("gate", wgsl("gate"), "grid_if_above"),
    [gate.value, args],
    [1],
    params([grid[0], grid[1] ?? 1, 0, 0], [gate.limit, 0, 0, 0]),
  );
  return args;
}

/** `grid` without a gate; with one, indirect arguments that dispatch it only when it opens. */
export function gatedIf(
  gate: Gate | undefined,
  grid: readonly [number, number?],
): readonly [number, number?] | Tensor {
  return gate ? gatedGrid(gate, grid) : grid;
}

/** [1] f32: value[0] when it is at most `limit` (the gate is closed), else 0. */
export function valueIfClosed(gate: Gate): Tensor {
  const gpu = gate.value.gpu;
  const out = gpu.empty([1]);
  gpu.dispatch(
    gpu.kernel("gate", wgsl("gate"), "value_if_at_most"),
    [gate.value, undefined, out],
    [1],
    params([0, 0, 0, 0], [gate.limit, 0, 0, 0]),
  );
  return out;
}
