/**
 * Splitting tensors larger than one storage binding into chunks bound as buffer ranges.
 *
 * A chunk is a run of whole units (elements or rows) of a tensor. Its binding starts at the
 * chunk's first element rounded down to `minStorageBufferOffsetAlignment`; `shift` says where the
 * chunk's first element lies inside the binding. When the whole tensor fits one binding there is
 * a single chunk and `bind` returns the tensor itself, so small tensors bind exactly as before.
 */
import type { Binding, Gpu } from "./device.ts";
import { GpuError } from "./device.ts";
import type { Tensor } from "./tensor.ts";

export interface Chunk {
  /** First unit covered and number of units. */
  first: number;
  count: number;
  /** Elements per unit. */
  unit: number;
  /** Element index where the binding starts (aligned). */
  base: number;
  /** Index of the chunk's first element inside its binding: first·unit − base. */
  shift: number;
  /** True when this chunk is the whole tensor (bind the tensor itself). */
  whole: boolean;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Splits `units` units of `unit` elements into chunks that each fit one storage binding
 * (`gpu.maxBindingBytes`). Chunk lengths (in units) are multiples of `multiple` except the last.
 * With `aligned`, chunk starts are multiples of the offset alignment, so every `shift` is 0
 * (elementwise kernels: all operands of the same shape share each chunk's range).
 */
export function chunks(
  gpu: Gpu,
  units: number,
  unit = 1,
  { multiple = 1, aligned = false }: { multiple?: number; aligned?: boolean } = {},
): Chunk[] {
  const maxElems = Math.floor(gpu.maxBindingBytes / 4);
  if (units * unit <= maxElems) {
    return [{ first: 0, count: units, unit, base: 0, shift: 0, whole: true }];
  }
  const alignElems = Math.max(1, gpu.limits.minStorageBufferOffsetAlignment / 4);
  if (aligned) {
    // Units per chunk that keep every start aligned: a multiple of alignElems / gcd(unit, ·).
    const step = alignElems / gcd(unit * multiple, alignElems) * multiple;
    const per = Math.floor(maxElems / unit / step) * step;
    if (per < 1) throw new GpuError(`${step} units of ${unit} values exceed a storage binding`);
    const out: Chunk[] = [];
    for (let first = 0; first < units; first += per) {
      const count = Math.min(per, units - first);
      out.push({ first, count, unit, base: first * unit, shift: 0, whole: false });
    }
    return out;
  }
  const out: Chunk[] = [];
  for (let first = 0; first < units;) {
    const start = first * unit;
    const shift = start % alignElems;
    let count = Math.floor((maxElems - shift) / unit);
    if (count < units - first) count = Math.floor(count / multiple) * multiple;
    if (count < 1) {
      throw new GpuError(
        `${multiple} units of ${unit} values (from an aligned offset) exceed a storage binding`,
      );
    }
    count = Math.min(count, units - first);
    out.push({ first, count, unit, base: start - shift, shift, whole: false });
    first += count;
  }
  return out;
}

/** The binding of tensor `t` for chunk `c`: the tensor itself, or the chunk's buffer range. */
export function bind(t: Tensor, c: Chunk): Binding {
  if (c.whole) return t;
  const end = (c.first + c.count) * c.unit;
  return { buffer: t.buffer, offset: 4 * c.base, size: 4 * (end - c.base) };
}
