import { matmul } from "../src/kernels/matmul.ts";
import { assertClose, gpuTest, randomArray, testGpu } from "./helpers.ts";

/** Plain-TypeScript reference: f32 rounding after every multiply and add, k ascending. */
function referenceMatmul(
  a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  transA: boolean, transB: boolean,
): Float32Array {
  const c = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) {
        const av = transA ? a[k * M + m] : a[m * K + k];
        const bv = transB ? b[n * K + k] : b[k * N + n];
        acc = Math.fround(acc + Math.fround(av * bv));
      }
      c[m * N + n] = acc;
    }
  }
  return c;
}

const shapes: Array<[number, number, number]> = [[1, 1, 1], [7, 13, 5], [33, 65, 17], [64, 128, 32], [130, 67, 129]];

for (const transA of [false, true]) {
  for (const transB of [false, true]) {
    Deno.test(`matmul transA=${transA} transB=${transB} matches reference on odd sizes`, gpuTest, async () => {
      const gpu = await testGpu();
      for (const [M, N, K] of shapes) {
        const a = randomArray(M * K, M * 31 + K);
        const b = randomArray(K * N, N * 17 + K);
        const ta = gpu.upload(a, transA ? [K, M] : [M, K]);
        const tb = gpu.upload(b, transB ? [N, K] : [K, N]);
        const c = await matmul(ta, tb, { transA, transB }).read();
        assertClose(c, referenceMatmul(a, b, M, N, K, transA, transB), {
          rtol: 1e-5, atol: 1e-5, what: `C ${M}x${N}x${K}`,
        });
      }
    });
  }
}

Deno.test("matmul alpha and accumulate add into the target", gpuTest, async () => {
  const gpu = await testGpu();
  const [M, N, K] = [9, 11, 6];
  const a = randomArray(M * K, 1), b = randomArray(K * N, 2), c0 = randomArray(M * N, 3);
  const target = gpu.upload(c0, [M, N]);
  matmul(gpu.upload(a, [M, K]), gpu.upload(b, [K, N]), { alpha: -0.5, accumulateInto: target });
  const ref = referenceMatmul(a, b, M, N, K, false, false).map((v, i) => c0[i] - 0.5 * v);
  assertClose(await target.read(), ref, { rtol: 1e-5, atol: 1e-5 });
});
