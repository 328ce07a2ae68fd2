/** Shared test utilities: one GPU per test process, seeded randoms, closeness checks. */
import { Gpu } from "../src/gpu/device.ts";

let shared: Promise<Gpu> | undefined;

/** The process-wide GPU used by kernel tests. */
export function testGpu(): Promise<Gpu> {
  shared ??= Gpu.acquire();
  return shared;
}

/** Deno.test options for GPU tests: WebGPU keeps internal timers, so skip the sanitizers. */
export const gpuTest = { sanitizeOps: false, sanitizeResources: false } as const;

/** Mulberry32: small seeded generator so failures reproduce. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform values in [lo, hi). */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const next = rng(seed);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * next());
}

/** Asserts |a-e| <= atol + rtol*|e| elementwise, naming the first offending index. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { rtol = 1e-5, atol = 1e-6, what = "tensor" } = {},
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length} != expected ${expected.length}`);
  }
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], e = expected[i];
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (!(Math.abs(a - e) <= atol + rtol * Math.abs(e))) {
      throw new Error(`${what}[${i}]: got ${a}, expected ${e} (rtol ${rtol}, atol ${atol})`);
    }
  }
}

/**
 * Host bit masks of a [rows, cols] matrix's entries that pass `set`, in compress_bits' layout
 * (kernels/sparse.wgsl): row words, then column words.
 */
export function bitMasks(
  x: Float32Array,
  rows: number,
  cols: number,
  set: (v: number) => boolean,
): [Uint32Array, Uint32Array] {
  const rowWords = Math.ceil(cols / 32), colWords = Math.ceil(rows / 32);
  const rowBits = new Uint32Array(rows * rowWords), colBits = new Uint32Array(cols * colWords);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      if (!set(x[r * cols + c])) continue;
      rowBits[r * rowWords + (c >> 5)] |= 1 << (c & 31);
      colBits[c * colWords + (r >> 5)] |= 1 << (r & 31);
    }
  }
  return [rowBits, colBits];
}
