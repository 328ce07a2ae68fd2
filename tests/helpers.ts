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
