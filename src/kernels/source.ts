/** Loads WGSL kernel sources from the top-level `kernels/` folder (read once per process). */
const cache = new Map<string, string>();

/** The text of `kernels/<name>.wgsl`. */
export function wgsl(name: string): string {
  let code = cache.get(name);
  if (code === undefined) {
    code = Deno.readTextFileSync(new URL(`../../kernels/${name}.wgsl`, import.meta.url));
    cache.set(name, code);
  }
  return code;
}

/** Packs uniform fields (u32 first, then f32) into the layout the kernels' `Params` structs use. */
export function params(u32s: readonly number[], f32s: readonly number[] = []): ArrayBuffer {
  const buffer = new ArrayBuffer(4 * (u32s.length + f32s.length));
  new Uint32Array(buffer, 0, u32s.length).set(u32s);
  new Float32Array(buffer, 4 * u32s.length, f32s.length).set(f32s);
  return buffer;
}

/** Workgroups needed to cover `n` items with `size` per group. */
export function groups(n: number, size: number): number {
  return Math.ceil(n / size);
}
