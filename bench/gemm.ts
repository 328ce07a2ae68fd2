/**
 * GEMM throughput in the three layouts of an SAE training step:
 * encoder forward X·W (NN), weight gradient Xᵀ·G (TN) and input gradient G·Wᵀ (NT).
 *
 *   deno run -A bench/gemm.ts [--m 4096] [--k 768] [--n 12288] [--repeats 3]
 */
import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/device.ts";
import { matmul, type MatmulOptions } from "../src/kernels/matmul.ts";

export interface GemmResult {
  layout: "NN" | "TN" | "NT";
  M: number;
  N: number;
  K: number;
  gflops: number;
  /** Milliseconds per product. */
  ms: number;
}

/**
 * Times X[M,K]·W[K,N], Xᵀ·G (X[M,K], G[M,N] -> [K,N]) and G·Wᵀ (-> [M,K]): one warm-up product
 * (compiles pipelines, packs textures), then `repeats` products recorded back to back with one
 * sync at the end.
 */
export async function benchGemm(
  gpu: Gpu,
  { M, N, K, repeats = 3 }: { M: number; N: number; K: number; repeats?: number },
): Promise<GemmResult[]> {
  const cases: Array<{ layout: GemmResult["layout"]; dims: [number, number, number] }> = [
    { layout: "NN", dims: [M, N, K] },
    { layout: "TN", dims: [K, N, M] },
    { layout: "NT", dims: [M, K, N] },
  ];
  const results: GemmResult[] = [];
  for (const { layout, dims: [m, n, k] } of cases) {
    const options: MatmulOptions = { transA: layout === "TN", transB: layout === "NT" };
    const a = gpu.zeros(options.transA ? [k, m] : [m, k]);
    const b = gpu.zeros(options.transB ? [n, k] : [k, n]);
    const c = gpu.empty([m, n]);
    matmul(a, b, { ...options, out: c });
    await gpu.sync();
    const start = performance.now();
    for (let r = 0; r < repeats; r++) matmul(a, b, { ...options, out: c });
    await gpu.sync();
    const ms = (performance.now() - start) / repeats;
    results.push({ layout, M: m, N: n, K: k, gflops: (2 * m * n * k) / (ms * 1e6), ms });
    for (const t of [a, b, c]) t.dispose();
  }
  return results;
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      m: { type: "string", default: "4096" },
      n: { type: "string", default: "12288" },
      k: { type: "string", default: "768" },
      repeats: { type: "string", default: "3" },
    },
  });
  const gpu = await Gpu.acquire();
  const [M, N, K, repeats] = [values.m, values.n, values.k, values.repeats].map(Number);
  console.log(`${gpu.describe()}: X[${M}x${K}]·W[${K}x${N}] and its backward layouts`);
  console.log("layout      M      N      K   GFLOP/s       ms");
  for (const r of await benchGemm(gpu, { M, N, K, repeats })) {
    const cols = [r.M, r.N, r.K].map((v) => String(v).padStart(6)).join(" ");
    console.log(
      `${r.layout.padEnd(6)} ${cols} ${r.gflops.toFixed(1).padStart(9)} ${
        r.ms.toFixed(1).padStart(8)
      }`,
    );
  }
  gpu.destroy();
}
