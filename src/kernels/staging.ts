/**
 * Flat staging textures: a tensor's elements copied (buffer-to-texture copies, a memcpy in
 * lavapipe) into an rgba32float texture, texel i at (i % gpu.flatWidth, i / gpu.flatWidth), so that
 * elementwise-style kernels read their operands as gathered texel loads instead of storage-buffer
 * loads, which llvmpipe runs as a scalar loop over SIMD lanes (README, "What llvmpipe rewards").
 */
import { type Gpu, GpuError } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { alignDown, packedTexture, textureSide } from "./textures.ts";

/** Rows of a flat staging texture: with 16368 texels a row, about 17 MB per role. */
const FLAT_ROWS = 64;

/** Elements a flat texture of `rows` rows holds (4 per texel): by default, what one
 * `flatTexels` call can stage, for callers that split their work. */
export function flatCapacity(gpu: Gpu, rows = FLAT_ROWS): number {
  return 4 * gpu.flatWidth * textureSide(rows, false);
}

/** A piece [start, start + count) of a flat tensor. */
export interface FlatRun {
  start: number;
  count: number;
}

/**
 * Pieces of `n` elements (n % 4 == 0) that each fit one staging texture and one storage
 * binding, starting at 256-byte-aligned offsets (so each is a valid binding range).
 */
export function flatRuns(gpu: Gpu, n: number): FlatRun[] {
  const run = Math.min(flatCapacity(gpu), alignDown(gpu.maxBindingBytes / 4));
  const runs: FlatRun[] = [];
  for (let start = 0; start < n; start += run) {
    runs.push({ start, count: Math.min(run, n - start) });
  }
  return runs;
}

/** The storage-buffer range of `t` that a run covers. */
export function runRange(t: Tensor, { start, count }: FlatRun): GPUBufferBinding {
  return { buffer: t.buffer, offset: 4 * start, size: 4 * count };
}

/**
 * Elements [start, start + count) of `t` as the first count/4 texels of a cached flat texture
 * (`role` names it), texel i at (i % gpu.flatWidth, i / gpu.flatWidth): buffer-to-texture copies, a
 * memcpy in lavapipe. Elementwise kernels read their operands from these instead of from storage
 * buffers, whose per-lane loads llvmpipe runs as a scalar loop (a 37.7 MB read: ~45 ms from a
 * buffer, ~12 ms from a texture). start and count must be multiples of 4 and count at most
 * `flatCapacity(gpu, rows)`: the texture has `rows` rows (FLAT_ROWS unless a caller stages a
 * whole tensor at once).
 */
export function flatTexels(
  t: Tensor,
  { start, count }: FlatRun,
  role: string,
  rows = FLAT_ROWS,
): GPUTextureView {
  const gpu = t.gpu;
  if (start % 4 !== 0 || count % 4 !== 0 || count > flatCapacity(gpu, rows)) {
    throw new GpuError(`flatTexels: [${start}, +${count}) is not whole texels of one staging`);
  }
  const width = gpu.flatWidth;
  // Small tensors take a shorter texture (rows in powers of two, so few sizes get cached), never
  // shorter than the run.
  const needed = Math.max(1, Math.ceil(count / 4 / width));
  const height = Math.max(needed, Math.min(rows, 2 ** Math.ceil(Math.log2(needed))));
  const texture = packedTexture(gpu, role, width, height);
  const texels = count / 4;
  const fullRows = Math.floor(texels / width);
  const rest = texels % width;
  const source = (row: number) => ({
    buffer: t.buffer,
    offset: 4 * start + 16 * width * row,
    bytesPerRow: 16 * width,
  });
  if (fullRows > 0) gpu.copyBufferToTexture(source(0), { texture }, [width, fullRows]);
  if (rest > 0) {
    gpu.copyBufferToTexture(source(fullRows), { texture, origin: [0, fullRows] }, [rest, 1]);
  }
  return texture.createView();
}

/** Whether `a`'s rows can be staged in runs of whole rows (whole texels, a row per run). */
export function rowsStageable(a: Tensor): boolean {
  return a.cols % 4 === 0 && a.cols <= flatCapacity(a.gpu);
}

/**
 * Runs of whole rows of `a` (`rowsStageable`), each staged into one flat texture (its first row
 * at texel 0) as the loop reaches it: a generator, so each run's copy is recorded after the
 * previous run's dispatch.
 */
export function* stagedRowRuns(
  a: Tensor,
): Generator<{ row0: number; rows: number; texels: GPUTextureView }> {
  const perRun = Math.floor(flatCapacity(a.gpu) / a.cols);
  for (let row0 = 0; row0 < a.rows; row0 += perRun) {
    const rows = Math.min(perRun, a.rows - row0);
    const run = { start: row0 * a.cols, count: rows * a.cols };
    yield { row0, rows, texels: flatTexels(a, run, "flat0") };
  }
}

/**
 * All of `t` in one flat texture (`role`), for kernels that read it in several passes or in an
 * order that runs of rows do not fit; null unless it is whole texels within one texture.
 */
export function wholeTexels(t: Tensor, role: string): GPUTextureView | null {
  const gpu = t.gpu;
  const rows = Math.ceil(t.size / 4 / gpu.flatWidth);
  const fits = textureSide(rows, false) <= gpu.limits.maxTextureDimension2D;
  return t.size % 4 === 0 && fits ? flatTexels(t, { start: 0, count: t.size }, role, rows) : null;
}

/** A tiny texture for a declared texture binding that a dispatch leaves unread. */
export function unusedTexels(gpu: Gpu): GPUTextureView {
  return packedTexture(gpu, "unused", 1, 1).createView();
}
