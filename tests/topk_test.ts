import {
  type RowSelectMethod,
  topkOverBatch,
  topkPerRow,
  topkPerRowMasked,
  topkPerRowRaw,
} from "../src/kernels/topk.ts";
import type { NonzeroBits } from "../src/kernels/sparse.ts";
import type { Tensor } from "../src/gpu/tensor.ts";
import { deepStrictEqual } from "node:assert/strict";
import { assertClose, bitMasks, gpuTest, randomArray, testGpu } from "./helpers.ts";

/** Per-row selection runs both ways where k allows the scan (k <= 64), the default otherwise. */
const methodsFor = (k: number): (RowSelectMethod | undefined)[] =>
  k <= 64 ? ["scan", "radix"] : [undefined];

/** Reference: sort each segment descending, keep the first k, then ReLU. */
function referenceTopK(values: Float32Array, segLen: number, k: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let s = 0; s < values.length / segLen; s++) {
    const idx = Array.from({ length: segLen }, (_, j) => s * segLen + j);
    idx.sort((a, b) => values[b] - values[a]);
    for (const i of idx.slice(0, k)) out[i] = Math.max(values[i], 0);
  }
  return out;
}

Deno.test("per-row top-k keeps exactly the k largest of each row, then ReLU", gpuTest, async () => {
  const gpu = await testGpu();
  // [1100, 4096] (4.5M values) reads its rows from two staging runs. Rows of 4099 are not whole
  // texels: the radix kernel reads them from the buffer in quads, the last one padded, with the
  // prefilter (k 20) and with a bound of 0 from empty slices (k 700 of 513 non-empty ones).
  const cases = [
    [1, 1, 1],
    [5, 7, 3],
    [33, 128, 8],
    [17, 5000, 64],
    [4, 300, 300],
    [3, 40, 0],
    [1100, 4096, 16],
    [3, 4099, 20],
    [2, 4099, 700],
  ];
  for (const [rows, cols, k] of cases) {
    const x = randomArray(rows * cols, rows * 7 + cols, -2, 1);
    for (const method of methodsFor(k)) {
      const got = await topkPerRow(gpu.upload(x, [rows, cols]), k, method).read();
      assertClose(got, referenceTopK(x, cols, k), {
        rtol: 0,
        atol: 0,
        what: `${rows}x${cols} k=${k} ${method}`,
      });
    }
  }
});

Deno.test("batch top-k keeps the count largest over the whole batch", gpuTest, async () => {
  const gpu = await testGpu();
  // Staged batches of at least 8·count values count only values above a bound from slice
  // maxima. In [8, 64] with count 64 each slice of 4 holds one positive value: the bound is the
  // 64th value itself, so a bound even one key too high would lose it.
  const oneBySlice = Float32Array.from({ length: 512 }, (_, i) => i % 4 === 0 ? 1 + i : 0);
  const tight = await topkOverBatch(gpu.upload(oneBySlice, [8, 64]), 64).read();
  assertClose(tight, referenceTopK(oneBySlice, 512, 64), { rtol: 0, atol: 0, what: "tight" });
  for (const [rows, cols, count] of [[32, 128, 208], [7, 3001, 50], [64, 1000, 64 * 32]]) {
    const x = randomArray(rows * cols, count, -1, 1).map((v) => Math.max(v, 0));
    const got = await topkOverBatch(gpu.upload(x, [rows, cols]), count).read();
    assertClose(got, referenceTopK(x, rows * cols, count), {
      rtol: 0,
      atol: 0,
      what: `${rows}x${cols} count=${count}`,
    });
  }
  // The values at or above the bound are collected as candidates, room for 4·count of them.
  // 586 values tie at 1 above the rest: all candidates, the tie broken by index among them. A
  // constant batch puts every value above the bound: the candidates overflow and the passes
  // walk the whole batch.
  const tiedAtTop = randomArray(4096, 5, 0, 0.5).map((v, i) => i % 7 === 0 ? 1 : v);
  const constant = new Float32Array(4096).fill(0.5);
  for (
    const [what, x, count] of [["tied candidates", tiedAtTop, 300], [
      "overflow",
      constant,
      64,
    ]] as const
  ) {
    const got = await topkOverBatch(gpu.upload(x, [64, 64]), count).read();
    assertClose(got, referenceTopK(x, 4096, count), { rtol: 0, atol: 0, what });
  }
});

Deno.test("negative and mixed-sign values order correctly", gpuTest, async () => {
  const gpu = await testGpu();
  const x = Float32Array.from([-3, -1e-30, 0, 1e-30, -0.5, 2, -7, 1e20, -1e20, 0.25]);
  for (let k = 1; k <= x.length; k++) {
    for (const method of methodsFor(k)) {
      const got = await topkPerRow(gpu.upload(x, [1, x.length]), k, method).read();
      const what = `k=${k} ${method}`;
      assertClose(got, referenceTopK(x, x.length, k), { rtol: 0, atol: 0, what });
    }
  }
});

Deno.test(
  "masked per-row top-k keeps raw values among masked columns, k capped on the GPU",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const [rows, cols] = [6, 50];
    const x = randomArray(rows * cols, 77, -2, 1);
    const mask = Float32Array.from({ length: cols }, (_, j) => (j % 3 === 0 ? 1 : 0));
    const nMasked = mask.reduce((a, b) => a + b, 0);
    for (
      const [k, limit, method] of [
        [5, 100, "scan"],
        [25, 7, "scan"],
        [25, 0, "scan"],
        [
          5,
          100,
          "radix",
        ],
        [25, 7, "radix"],
        [25, 0, "radix"],
      ] as const
    ) {
      const got = await topkPerRowMasked(
        gpu.upload(x, [rows, cols]),
        gpu.upload(mask),
        k,
        gpu.upload(Float32Array.of(limit)),
        undefined,
        method,
      ).read();
      const kEff = Math.min(k, limit, nMasked);
      const ref = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) {
        const idx = Array.from({ length: cols }, (_, j) => j).filter((j) => mask[j] > 0);
        idx.sort((a, b) => x[r * cols + b] - x[r * cols + a]);
        for (const j of idx.slice(0, kEff)) ref[r * cols + j] = x[r * cols + j];
      }
      assertClose(got, ref, { rtol: 0, atol: 0, what: `k=${k} limit=${limit} ${method}` });
    }
  },
);

Deno.test("ties with the k-th value keep exactly k, lowest indices first", gpuTest, async () => {
  const gpu = await testGpu();
  const rows = Float32Array.from([1, 3, 1, 1, 0.5, 1, /* row 2 */ 2, 2, 2, 2, 2, 2]);
  for (const method of methodsFor(3)) {
    const perRow = await topkPerRow(gpu.upload(rows, [2, 6]), 3, method).read();
    assertClose(perRow, Float32Array.from([1, 3, 1, 0, 0, 0, 2, 2, 2, 0, 0, 0]), {
      rtol: 0,
      atol: 0,
      what: `per-row ties ${method}`,
    });
  }
  // A larger value arriving after a full list of equal ones: the scan's displaced pair must
  // settle behind its lower-indexed equals, so the highest-indexed one drops out.
  const tiedThenLarger = Float32Array.from([2, 2, 2, 2, 7]);
  for (const method of methodsFor(3)) {
    const got = await topkPerRow(gpu.upload(tiedThenLarger, [1, 5]), 3, method).read();
    assertClose(got, Float32Array.from([2, 2, 0, 0, 7]), {
      rtol: 0,
      atol: 0,
      what: `ties displaced by a later larger value ${method}`,
    });
  }
  const batch = await topkOverBatch(gpu.upload(rows, [2, 6]), 5).read();
  assertClose(batch, Float32Array.from([0, 3, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0]), {
    rtol: 0,
    atol: 0,
    what: "batch ties",
  });
  // Batch selection in chunks (a 4 KiB binding limit): tie-break indices are global.
  const allTied = gpu.upload(new Float32Array(64 * 64).fill(1), [64, 64]);
  gpu.maxBindingOverride = 4096;
  let chunked: Float32Array;
  try {
    chunked = await topkOverBatch(allTied, 1500).read();
  } finally {
    gpu.maxBindingOverride = undefined;
  }
  const keptAt = [...chunked.keys()].filter((i) => chunked[i] !== 0);
  if (keptAt.length !== 1500 || keptAt[1499] !== 1499) {
    throw new Error(`kept ${keptAt.length} values, the last at ${keptAt.at(-1)}`);
  }
});

Deno.test(
  "per-row top-k through the prefilter's candidates: ties at the k-th value, negative raw values",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // Ten equal maxima, k = 5: the tie is broken among candidates, lowest indices kept.
    const x = randomArray(2 * 5000, 91, -1, 0.5);
    const tiedAt = [4900, 17, 2500, 3001, 120, 4999, 640, 2048, 1000, 77];
    for (const j of tiedAt) x[5000 + j] = 0.875;
    for (const method of methodsFor(5)) {
      const got = await topkPerRow(gpu.upload(x, [2, 5000]), 5, method).read();
      const want = referenceTopK(x, 5000, 5);
      const kept = [17, 77, 120, 640, 1000].map((j) => 5000 + j);
      if (!kept.every((i) => got[i] === 0.875)) throw new Error(`tie: wrong kept (${method})`);
      assertClose(got, want, { rtol: 0, atol: 0, what: `ties among candidates ${method}` });
    }
    // Rows of 4099 are read in quads from the buffer; the last quad's padding must not take the
    // next row's values into its slice maximum (here 100 against row 0's at most 0).
    const padded = Float32Array.from({ length: 2 * 4099 }, (_, i) => i < 4099 ? -i / 4099 : 100);
    const paddedGot = await topkPerRow(gpu.upload(padded, [2, 4099]), 1, "radix").read();
    assertClose(paddedGot, referenceTopK(padded, 4099, 1), {
      rtol: 0,
      atol: 0,
      what: "padded quads",
    });
    // Raw (unrectified) selection of negative values: kept values come back from their keys.
    const negative = randomArray(2 * 5000, 92, -3, -1);
    const rawWant = new Float32Array(negative.length);
    for (let r = 0; r < 2; r++) {
      const idx = Array.from({ length: 5000 }, (_, j) => r * 5000 + j);
      idx.sort((a, b) => negative[b] - negative[a] || a - b);
      for (const i of idx.slice(0, 7)) rawWant[i] = negative[i];
    }
    for (const method of methodsFor(7)) {
      const limit = gpu.upload(Float32Array.of(7));
      const raw = await topkPerRowRaw(gpu.upload(negative, [2, 5000]), 7, limit, method).read();
      assertClose(raw, rawWant, { rtol: 0, atol: 0, what: `raw negative ${method}` });
    }
  },
);

Deno.test(
  "per-row top-k past the prefilter: too many candidates, k over 1024, short rows",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // 5000 equal values: every element is a candidate (> 2048), so the passes walk the row.
    const tied = new Float32Array(2 * 5000).fill(0.5);
    tied[5000 + 4999] = 0.75;
    const want = new Float32Array(10000);
    want.fill(0.5, 0, 10);
    want.fill(0.5, 5000, 5009);
    want[9999] = 0.75;
    for (const method of methodsFor(10)) {
      const got = await topkPerRow(gpu.upload(tied, [2, 5000]), 10, method).read();
      assertClose(got, want, { rtol: 0, atol: 0, what: `tied rows ${method}` });
    }
    // k = 1500 > 1024 slice maxima: no prefilter.
    const x = randomArray(3 * 3000, 77, -1, 1);
    const big = await topkPerRow(gpu.upload(x, [3, 3000]), 1500).read();
    assertClose(big, referenceTopK(x, 3000, 1500), { rtol: 0, atol: 0, what: "k 1500" });
    // Rows shorter than 4096 skip the prefilter whatever k is.
    const short = await topkPerRow(gpu.upload(x, [3, 3000]), 40, "radix").read();
    assertClose(short, referenceTopK(x, 3000, 40), { rtol: 0, atol: 0, what: "short rows" });
  },
);

Deno.test(
  "selections fill the masks of their nonzeros: per row (radix staged, from buffers, in chunks; scan) and batch-wide",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // Masks start as garbage (all ones) and must be cleared. Mostly negative inputs make some
    // kept values ReLU to zero, which stay unmarked.
    const garbage = (n: number) => gpu.upload(new Uint32Array(n).fill(0xffffffff));
    const check = async (
      what: string,
      rows: number,
      cols: number,
      select: (t: Tensor, masks: NonzeroBits) => Tensor,
      bindingBytes?: number,
    ) => {
      const x = randomArray(rows * cols, rows + cols, -2, 1);
      const masks = {
        rowBits: garbage(rows * Math.ceil(cols / 32)),
        colBits: garbage(cols * Math.ceil(rows / 32)),
      };
      gpu.maxBindingOverride = bindingBytes;
      let out: Float32Array, rowBits: Float32Array, colBits: Float32Array;
      try {
        const t = select(gpu.upload(x, [rows, cols]), masks);
        [out, rowBits, colBits] = await gpu.readMany([t, masks.rowBits, masks.colBits]);
      } finally {
        gpu.maxBindingOverride = undefined;
      }
      const [wantRows, wantCols] = bitMasks(out, rows, cols, (v) => v !== 0);
      const words = (f: Float32Array) => new Uint32Array(f.buffer, f.byteOffset, f.length);
      deepStrictEqual(words(rowBits), wantRows, `${what}: row masks`);
      deepStrictEqual(words(colBits), wantCols, `${what}: column masks`);
      if (what !== "k 0" && !wantRows.some((w) => w !== 0)) throw new Error(`${what}: none kept`);
    };
    await check("radix staged", 17, 5000, (t, m) => topkPerRow(t, 64, "radix", m));
    await check("scan", 17, 5000, (t, m) => topkPerRow(t, 64, "scan", m));
    await check("radix, odd rows", 33, 4099, (t, m) => topkPerRow(t, 20, "radix", m));
    await check("radix over the row", 40, 300, (t, m) => topkPerRow(t, 250, "radix", m));
    await check("radix in chunks", 40, 300, (t, m) => topkPerRow(t, 100, "radix", m), 4096);
    await check("k 0", 3, 40, (t, m) => topkPerRow(t, 0, undefined, m));
    await check("batch staged", 32, 128, (t, m) => topkOverBatch(t, 208, m));
    await check("batch, odd size", 7, 3001, (t, m) => topkOverBatch(t, 500, m));
    await check("batch in chunks", 64, 64, (t, m) => topkOverBatch(t, 1500, m), 4096);
  },
);
