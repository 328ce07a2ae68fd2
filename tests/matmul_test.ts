import { type LiveCount, matmul, type MatmulInternals, matmulWith } from "../src/kernels/matmul.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { binary } from "../src/kernels/elementwise.ts";
import { unrollWgsl, wgsl } from "../src/kernels/source.ts";
import { deepStrictEqual } from "node:assert/strict";
import { assertClose, bitMasks, gpuTest, randomArray, testGpu } from "./helpers.ts";

/** Plain-TypeScript reference: f32 rounding after every multiply and add, k ascending. */
function referenceMatmul(
  a: Float32Array,
  b: Float32Array,
  M: number,
  N: number,
  K: number,
  transA: boolean,
  transB: boolean,
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

/** Runs op(A)·op(B) for each shape through `matmulWith` and compares with the reference. */
async function checkShapes(
  shapes: Array<[number, number, number]>,
  transA: boolean,
  transB: boolean,
  internals: MatmulInternals,
): Promise<void> {
  const gpu = await testGpu();
  for (const [M, N, K] of shapes) {
    const a = randomArray(M * K, M * 31 + K);
    const b = randomArray(K * N, N * 17 + K);
    const ta = gpu.upload(a, transA ? [K, M] : [M, K]);
    const tb = gpu.upload(b, transB ? [N, K] : [K, N]);
    const c = await matmulWith(ta, tb, { transA, transB }, internals).read();
    assertClose(c, referenceMatmul(a, b, M, N, K, transA, transB), {
      rtol: 1e-5,
      atol: 1e-5,
      what: `C ${M}x${N}x${K} ${JSON.stringify(internals)}`,
    });
    ta.dispose();
    tb.dispose();
  }
}

const oddShapes: Array<[number, number, number]> = [
  [1, 1, 1],
  [7, 13, 5],
  [33, 65, 17],
  [64, 128, 32],
  [130, 67, 129],
];
const layouts = [[false, false], [false, true], [true, false], [true, true]] as const;

for (const [transA, transB] of layouts) {
  const layout = `transA=${transA} transB=${transB}`;
  Deno.test(`matmul ${layout} matches reference on odd sizes`, gpuTest, async () => {
    await checkShapes(oddShapes, transA, transB, {});
  });
  Deno.test(`matmul ${layout} tiled path matches reference on odd sizes`, gpuTest, async () => {
    await checkShapes([...oddShapes, [300, 260, 70]], transA, transB, { path: "tiled" });
  });
  Deno.test(
    `matmul ${layout} splits operands over small bindings and textures`,
    gpuTest,
    async () => {
      // 4 KiB bindings hold 1024 floats: every operand and C is bound in several windows; a texture
      // side of 16 splits K into chunks of 16 and M, N into blocks.
      const internals = { path: "tiled", maxBindingBytes: 4096, maxTextureSide: 16 } as const;
      // Rows of 64 floats are packed by buffer-to-texture copies, the others by the pack kernel.
      await checkShapes([[37, 70, 45], [20, 129, 9], [20, 128, 64]], transA, transB, internals);
      await checkShapes([[130, 67, 129]], transA, transB, { path: "tiled", maxBindingBytes: 4096 });
    },
  );
}

Deno.test("matmul alpha and accumulate add into the target", gpuTest, async () => {
  const gpu = await testGpu();
  for (const path of ["simple", "tiled"] as const) {
    for (const [M, N, K] of [[9, 11, 6], [140, 150, 40]]) {
      const a = randomArray(M * K, 1), b = randomArray(K * N, 2), c0 = randomArray(M * N, 3);
      const target = gpu.upload(c0, [M, N]);
      matmulWith(gpu.upload(a, [M, K]), gpu.upload(b, [K, N]), {
        alpha: -0.5,
        accumulateInto: target,
      }, { path, maxTextureSide: 16 });
      const ref = referenceMatmul(a, b, M, N, K, false, false).map((v, i) => c0[i] - 0.5 * v);
      assertClose(await target.read(), ref, {
        rtol: 1e-5,
        atol: 1e-5,
        what: `${path} ${M}x${N}x${K}`,
      });
    }
  }
});

Deno.test(
  "matmul's bias epilogue equals adding the bias in a second pass, bit for bit",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const cases: [MatmulInternals, [number, number, number]][] = [
      [{ path: "simple" }, [9, 11, 6]],
      [{ path: "tiled" }, [140, 150, 40]],
      // K in chunks of 16 (the bias comes after the last) and N in blocks (offsets into bias).
      [{ path: "tiled", maxTextureSide: 16, maxBindingBytes: 4096 }, [37, 70, 45]],
    ];
    for (const [internals, [M, N, K]] of cases) {
      const a = gpu.upload(randomArray(M * K, 7), [M, K]);
      const b = gpu.upload(randomArray(K * N, 8), [K, N]);
      const bias = gpu.upload(randomArray(N, 9));
      const fused = await matmulWith(a, b, { bias }, internals).read();
      const twoPass = await binary("add", matmulWith(a, b, {}, internals), bias, "perCol").read();
      assertClose(fused, twoPass, { rtol: 0, atol: 0, what: `${JSON.stringify(internals)}` });
    }
  },
);

Deno.test(
  "matmul's positive masks match the product it stored, on either path and over split blocks",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const cases: [MatmulInternals, [number, number, number]][] = [
      [{ path: "simple" }, [9, 40, 6]],
      [{ path: "tiled" }, [140, 150, 40]],
      [{ path: "tiled" }, [64, 96, 12]],
      // K in three chunks (masks after the last), M in blocks of 32 rows, N in blocks of 128.
      [{ path: "tiled", maxTextureSide: 40 }, [100, 300, 90]],
    ];
    for (const [internals, [M, N, K]] of cases) {
      const a = gpu.upload(randomArray(M * K, 11), [M, K]);
      const b = gpu.upload(randomArray(K * N, 12), [K, N]);
      const bias = gpu.upload(randomArray(N, 13));
      const masks = garbageMasks(gpu, M, N);
      const c = matmulWith(a, b, { bias, positiveMasks: masks }, internals);
      const [product, rowBits, colBits] = await gpu.readMany([c, masks.rowBits, masks.colBits]);
      checkMasks(product, rowBits, colBits, M, N, `${JSON.stringify(internals)} ${M}x${N}x${K}`);
    }
  },
);

/** Mask words for an [M, N] product, all ones: every word the kernel owns must be written. */
function garbageMasks(gpu: Gpu, M: number, N: number) {
  const garbage = (n: number) => gpu.upload(new Uint32Array(n).fill(0xffffffff));
  return { rowBits: garbage(M * Math.ceil(N / 32)), colBits: garbage(N * Math.ceil(M / 32)) };
}

/** Asserts that the mask words read back are the positive bits of `product`. */
function checkMasks(
  product: Float32Array,
  rowBits: Float32Array,
  colBits: Float32Array,
  M: number,
  N: number,
  what: string,
): void {
  const [expectedRows, expectedCols] = bitMasks(product, M, N, (v) => v > 0);
  const words = (f: Float32Array) => new Uint32Array(f.buffer, f.byteOffset, f.length);
  deepStrictEqual(words(rowBits), expectedRows, `${what} row masks`);
  deepStrictEqual(words(colBits), expectedCols, `${what} column masks`);
  if (!expectedRows.some((w) => w !== 0) || expectedRows.every((w) => w === 0xffffffff)) {
    throw new Error(`${what}: the product should be partly positive`);
  }
}

Deno.test(
  "the tiled kernel on whole 256x256 tiles (unguarded stores): product, alpha and accumulation, bias, masks, K chunks, mixed blocks",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const cases: [MatmulInternals, [number, number, number]][] = [
      [{ path: "tiled" }, [256, 512, 40]],
      // 298-texel sides: two whole blocks of 256 rows, K in three chunks that accumulate.
      [{ path: "tiled", maxTextureSide: 300 }, [512, 256, 600]],
      // Column blocks of 1024 (whole tiles) and 276 (guarded) in one product.
      [{ path: "tiled", maxTextureSide: 300 }, [256, 1300, 16]],
    ];
    for (const [internals, [M, N, K]] of cases) {
      const what = `${JSON.stringify(internals)} ${M}x${N}x${K}`;
      const [a, b, c0] = [randomArray(M * K, 51), randomArray(K * N, 52), randomArray(M * N, 53)];
      const [ta, tb] = [gpu.upload(a, [M, K]), gpu.upload(b, [K, N])];
      const reference = referenceMatmul(a, b, M, N, K, false, false);
      const product = matmulWith(ta, tb, {}, internals);
      assertClose(await product.read(), reference, { rtol: 1e-5, atol: 1e-5, what });
      const target = gpu.upload(c0, [M, N]);
      matmulWith(ta, tb, { alpha: -0.5, accumulateInto: target }, internals);
      assertClose(await target.read(), reference.map((v, i) => c0[i] - 0.5 * v), {
        rtol: 1e-5,
        atol: 1e-5,
        what: `${what} accumulated`,
      });
      const bias = gpu.upload(randomArray(N, 54));
      const masks = garbageMasks(gpu, M, N);
      const fused = matmulWith(ta, tb, { bias, positiveMasks: masks }, internals);
      const twoPass = binary("add", product, bias, "perCol");
      const [withBias, added, rowBits, colBits] = await gpu.readMany([
        fused,
        twoPass,
        masks.rowBits,
        masks.colBits,
      ]);
      assertClose(withBias, added, { rtol: 0, atol: 0, what: `${what} bias` });
      checkMasks(withBias, rowBits, colBits, M, N, what);
    }
  },
);

Deno.test(
  "matmul picks the tiled path for large shapes and matches the reference",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const [M, N, K] = [260, 300, 1000]; // above the tiled path's size threshold
    const a = randomArray(M * K, 5), b = randomArray(N * K, 6);
    const c = await matmul(gpu.upload(a, [M, K]), gpu.upload(b, [N, K]), { transB: true }).read();
    assertClose(c, referenceMatmul(a, b, M, N, K, false, true), { rtol: 1e-5, atol: 1e-5 });
  },
);

Deno.test("unrollWgsl repeats marked lines, first variable outermost", () => {
  const out = unrollWgsl("const R = 2u;\nx{i}{j}; // unroll i<R j<3\nend");
  const expected = "const R = 2u;\nx00;\nx01;\nx02;\nx10;\nx11;\nx12;\nend";
  if (out !== expected) throw new Error(`got ${JSON.stringify(out)}`);
});

Deno.test("wgsl(name, consts) specialises a const before unrolling, and names a missing one", () => {
  const lines = (length: number) =>
    wgsl("topk_scan", { SCAN_K: length }).split("\n").filter((l) => l.includes("var key_"));
  if (lines(8).length !== 8 || lines(16).length !== 16) {
    throw new Error(`register list lengths ${lines(8).length}, ${lines(16).length}`);
  }
  if (!wgsl("topk_scan", { SCAN_K: 16 }).includes("const SCAN_K = 16u;")) {
    throw new Error("SCAN_K not replaced");
  }
  let message = "";
  try {
    wgsl("topk_scan", { NO_SUCH_CONST: 1 });
  } catch (e) {
    message = String(e);
  }
  if (!message.includes("NO_SUCH_CONST")) throw new Error(`no clear error: ${message}`);
});

Deno.test(
  "the tiled kernel skips the rows, columns or depth past a GPU-side live count",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const [M, N, K] = [100, 300, 90];
    // Each invocation owns 32 rows and 32 columns and steps depth by 4: past the live count it
    // skips whole blocks (rows from 64 with 40 live, columns from 96 with 70 live) and depth
    // from 52 with 50 live. Zeros fill the rest past the count, as promised; the skipped parts
    // hold garbage that would show if they were read.
    // `along` gives the index of A[r, k] or B[k, c] that runs along the limited dimension.
    type Along = ((row: number, col: number) => number) | null;
    const cases: {
      dim: LiveCount["dim"];
      live: number;
      skipFrom: number;
      alongA: Along;
      alongB: Along;
    }[] = [
      { dim: "rows", live: 40, skipFrom: 64, alongA: (m) => m, alongB: null },
      { dim: "cols", live: 70, skipFrom: 96, alongA: null, alongB: (_k, n) => n },
      { dim: "depth", live: 50, skipFrom: 52, alongA: (_m, k) => k, alongB: (k) => k },
    ];
    const count = gpu.upload(Uint32Array.of(7, 0));
    for (const c of cases) {
      // The operand as given (zeros past the count, garbage where the kernel skips) and as the
      // reference sees it (zeros past the count).
      const operand = (rows: number, cols: number, seed: number, along: Along) => {
        const given = randomArray(rows * cols, seed), zeroed = Float32Array.from(given);
        for (let r = 0; along && r < rows; r++) {
          for (let col = 0; col < cols; col++) {
            const i = along(r, col);
            if (i < c.live) continue;
            zeroed[r * cols + col] = 0;
            given[r * cols + col] = i >= c.skipFrom ? 1e30 : 0;
          }
        }
        return [given, zeroed];
      };
      const [a, aZero] = operand(M, K, 41, c.alongA);
      const [b, bZero] = operand(K, N, 42, c.alongB);
      gpu.write(count, Uint32Array.of(7, c.live));
      const got = await matmulWith(
        gpu.upload(a, [M, K]),
        gpu.upload(b, [K, N]),
        { live: { count, at: 1, dim: c.dim } },
        { path: "tiled" },
      ).read();
      const want = referenceMatmul(aZero, bZero, M, N, K, false, false);
      assertClose(got, want, { rtol: 1e-5, atol: 1e-4, what: `live ${c.dim}` });
    }
  },
);
