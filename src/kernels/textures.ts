/**
 * The textures that packing and staging fill, cached per role and size, and the alignment of
 * storage-buffer windows: shared by texture_pack.ts (GEMM operands, staged rows) and staging.ts
 * (flat staging of elementwise operands).
 */
import type { Gpu } from "../gpu/device.ts";

/** Storage bindings must start at a multiple of this many bytes (WebGPU's largest allowed
 * minStorageBufferOffsetAlignment, so valid on every device). */
export const BINDING_ALIGN_BYTES = 256;

/** Element index rounded down to a valid binding offset. */
export function alignDown(element: number): number {
  const perAlign = BINDING_ALIGN_BYTES / 4;
  return Math.floor(element / perAlign) * perAlign;
}

/**
 * One packing texture per role and size and GPU, reused by every call: passes run in order, so a
 * later product may overwrite a texture an earlier one has finished reading.
 */
const textures = new WeakMap<Gpu, Map<string, GPUTexture>>();

export function packedTexture(
  gpu: Gpu,
  role: string,
  minWidth: number,
  minHeight: number,
): GPUTexture {
  const [width, height] = [textureSide(minWidth, true), textureSide(minHeight, false)];
  let cache = textures.get(gpu);
  if (!cache) textures.set(gpu, cache = new Map());
  const key = `${role}:${width}x${height}`;
  let texture = cache.get(key);
  if (!texture) {
    texture = gpu.device.createTexture({
      label: `packed ${key}`,
      size: [width, height],
      format: "rgba32float",
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING |
        GPUTextureUsage.COPY_DST,
    });
    cache.set(key, texture);
  }
  return texture;
}

/** Bytes held by the cached packing and staging textures of `gpu` (for memory reports). */
export function textureBytes(gpu: Gpu): number {
  let bytes = 0;
  for (const t of textures.get(gpu)?.values() ?? []) bytes += 16 * t.width * t.height;
  return bytes;
}

/** Destroys the cached textures of `gpu` (nothing recorded may still read them). */
export function releaseTextures(gpu: Gpu): void {
  for (const t of textures.get(gpu)?.values() ?? []) t.destroy();
  textures.delete(gpu);
}

/**
 * A texture side of at least `n` texels that is never a power of two: llvmpipe compiles a kernel
 * variant per power-of-two-ness of each bound texture's sides (a long compile each for the tiled
 * kernel). Widths also avoid multiples of 256 texels: rows 4 KiB apart share L1 cache sets, and
 * an invocation reads 32 rows of Ap at once (power-of-two widths halved the speed).
 */
export function textureSide(n: number, isWidth: boolean): number {
  let side = n;
  while ((side & (side - 1)) === 0 || (isWidth && side % 256 === 0)) side++;
  return side;
}
