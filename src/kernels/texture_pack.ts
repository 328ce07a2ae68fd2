/**
 * Packing matrices into rgba32float textures (4 consecutive columns per texel), for kernels that
 * read them as read-only storage textures: llvmpipe gathers texel loads across SIMD lanes, while a
 * storage-buffer load whose address differs per lane becomes a scalar loop over the lanes
 * (PLATFORM.md). The pack kernels are `pack` and `pack_transposed` in kernels/matmul.wgsl;
 * aligned, untransposed blocks are plain copies. Flat staging of elementwise operands is in
 * staging.ts; both fill the textures cached by textures.ts.
 */
import { type Binding, type Gpu, GpuError, type Kernel } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { groups, params, wgsl } from "./source.ts";
import { flatCapacity, flatTexels } from "./staging.ts";
import { alignDown, BINDING_ALIGN_BYTES, packedTexture } from "./textures.ts";

/**
 * A matrix packed once by `texelRows` for several kernels that read it while it is unchanged (a
 * training step's W_dec: staging it again for each sparse kernel copied 37.7 MB each time at the
 * reference shape). Its own role keeps other calls from refilling its texture.
 */
export class StagedRows {
  readonly view: GPUTextureView;
  constructor(readonly tensor: Tensor, role: string) {
    this.view = texelRows(tensor, role);
  }
}

/** The tensor behind a matrix that may come staged. */
export function tensorOf(t: Tensor | StagedRows): Tensor {
  return t instanceof StagedRows ? t.tensor : t;
}

/**
 * A [rows, cols] matrix as a texture of cols/4 texels by rows (`role` names its cached texture:
 * a later call with the same role and shape refills it, which passes running in order make safe).
 * Throws unless cols % 4 == 0 and both sides fit a texture. A `StagedRows` gives its view.
 */
export function texelRows(t: Tensor | StagedRows, role: string): GPUTextureView {
  if (t instanceof StagedRows) return t.view;
  const gpu = t.gpu;
  const texture = packedTexture(gpu, role, t.cols / 4, t.rows);
  packBlock(gpu, t, false, texture, [0, 0], [t.rows, t.cols], t.rows, gpu.maxBindingBytes);
  return texture.createView();
}

/**
 * Packs the block [origin, origin + size) of L = op(stored) into the top-left ceil(cols/4) x
 * `height` texels of `texture` (`pack` or `pack_transposed` in matmul.wgsl); rows from `rows` to `height` are
 * zero. The stored rows the block needs are bound in windows of at most `maxBinding`
 * bytes; with a transposed operand a window holds whole texels (multiples of 4 stored rows).
 */
export function packBlock(
  gpu: Gpu,
  stored: Tensor,
  transposed: boolean,
  texture: GPUTexture,
  [row0, col0]: readonly [number, number],
  [rows, cols]: readonly [number, number],
  height: number,
  maxBinding: number,
): void {
  const width4 = Math.ceil(cols / 4);
  const stride = stored.cols;
  // Whole texels of an untransposed operand, rows 256-byte aligned, no padding: a plain copy,
  // which is much faster than the pack kernel and has no binding-size limit.
  if (!transposed && stride % 64 === 0 && col0 % 4 === 0 && cols % 4 === 0 && rows === height) {
    gpu.copyBufferToTexture(
      { buffer: stored.buffer, offset: 4 * (row0 * stride + col0), bytesPerRow: 4 * stride },
      { texture },
      [cols / 4, rows],
    );
    return;
  }
  // Stored rows hold logical rows, or logical columns when transposed.
  const [first, count] = transposed ? [col0, cols] : [row0, rows];
  // Whole texels of stored rows: pack_transposed reads them staged, 4 texel rows per invocation.
  const staged = transposed && stride % 4 === 0 && row0 % 4 === 0;
  // Windows fit one binding (and one staging texture when staged).
  const bindable = maxBinding / 4 - BINDING_ALIGN_BYTES / 4;
  const windowElements = staged ? Math.min(flatCapacity(gpu), bindable) : bindable;
  const windowRows = Math.floor(windowElements / stride / 4) * 4;
  if (windowRows < 4) throw new GpuError(`pack: 4 rows of [${stored.shape}] exceed a binding`);
  const kernel = gpu.kernel("matmul", wgsl("matmul"), staged ? "pack_transposed" : "pack");
  const view = texture.createView();
  for (let s = 0; s < count; s += windowRows) {
    const e = Math.min(count, s + windowRows);
    const base = staged ? (first + s) * stride : alignDown((first + s) * stride);
    const end = (first + e) * stride;
    // Texels this window fills; the last window also writes the zero padding beyond the block.
    const last = e === count;
    const [x0, y0, x1, y1] = transposed
      ? [s / 4, 0, last ? width4 : Math.ceil(e / 4), height]
      : [0, s, width4, last ? height : e];
    const source = staged
      ? {
        binding: 3,
        resource: flatTexels(stored, { start: base, count: end - base }, "pack rows"),
      }
      : {
        binding: 1,
        resource: { buffer: stored.buffer, offset: 4 * base, size: 4 * (end - base) },
      };
    record(
      gpu,
      kernel,
      [source, { binding: 2, resource: view }],
      staged
        ? [groups(x1 - x0, 8), groups(Math.ceil((y1 - y0) / 4), 8)]
        : [groups(x1 - x0, 8), groups(y1 - y0, 8)],
      params([
        ...[rows, cols, row0, col0, stride, base, x0, y0],
        ...[width4, height, transposed ? 1 : 0],
      ]),
    );
  }
}

/** Records a dispatch whose bindings are given by binding number (texture views, buffer ranges). */
export function record(
  gpu: Gpu,
  kernel: Kernel,
  entries: GPUBindGroupEntry[],
  workgroups: readonly [number, number],
  uniforms: ArrayBuffer,
): void {
  const bindings: Binding[] = [];
  for (const e of entries) bindings[e.binding - 1] = e.resource as Binding;
  gpu.dispatch(kernel, bindings, workgroups, uniforms);
}
