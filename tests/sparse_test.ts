/**
 * The sparse kernels (`kernels/sparse.wgsl` through `src/kernels/sparse.ts`) against plain
 * TypeScript references: compressing a selection into row and latent lists, decoding over the
 * row lists, and the latent-list backward (with matryoshka terms, decoder-norm rescaling and
 * accumulation into the caller's gradients). The kernels read d_in as vec4: every d_in is a multiple of 4.
 */
import type { Gpu } from "../src/gpu/device.ts";
import type { Tensor } from "../src/gpu/tensor.ts";
import { reduceCols } from "../src/kernels/reduce.ts";
import {
  compressRows,
  compressSelection,
  latentSums,
  type SparseActs,
  sparseBackward,
  sparseDecode,
  sparseDecodePrefixes,
  sparseFits,
  type SparseLists,
} from "../src/kernels/sparse.ts";
import { assertClose, gpuTest, randomArray, rng, testGpu } from "./helpers.ts";

/**
 * A [rows, cols] matrix with about `density` nonzeros of either sign (|v| in [0.1, 2)); every
 * row with r % 5 === 3 is left empty.
 */
function sparseMatrix(rows: number, cols: number, seed: number, density = 0.1): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const keep = next() < density;
      const magnitude = 0.1 + 1.9 * next();
      const sign = next() < 0.5 ? -1 : 1;
      if (keep && r % 5 !== 3) out[r * cols + c] = sign * magnitude;
    }
  }
  return out;
}

function countNonzeros(x: Float32Array): number {
  return x.reduce((n, v) => n + (v !== 0 ? 1 : 0), 0);
}

interface ReferenceLists {
  offsets: number[];
  index: number[];
  value: number[];
  owner: number[];
}

/** Row lists (axis "rows") or latent lists (axis "latents"), entries ascending in each list. */
function referenceLists(
  dense: Float32Array,
  rows: number,
  cols: number,
  axis: "rows" | "latents",
): ReferenceLists {
  const lists = axis === "rows" ? rows : cols;
  const len = axis === "rows" ? cols : rows;
  const out: ReferenceLists = { offsets: [0], index: [], value: [], owner: [] };
  for (let list = 0; list < lists; list++) {
    for (let m = 0; m < len; m++) {
      const v = axis === "rows" ? dense[list * cols + m] : dense[m * cols + list];
      if (v === 0) continue;
      out.index.push(m);
      out.value.push(v);
      out.owner.push(list);
    }
    out.offsets.push(out.index.length);
  }
  return out;
}

/** A u32 tensor's contents (read() hands back the raw 32-bit words as a Float32Array). */
function asU32(x: Float32Array): Uint32Array {
  return new Uint32Array(x.buffer, x.byteOffset, x.length);
}

function assertEqualArrays(got: ArrayLike<number>, expected: ArrayLike<number>, what: string) {
  if (got.length !== expected.length) {
    throw new Error(`${what}: length ${got.length} != expected ${expected.length}`);
  }
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(got[i], expected[i])) {
      throw new Error(`${what}[${i}]: got ${got[i]}, expected ${expected[i]}`);
    }
  }
}

/** Checks the offsets in full and the first min(total, capacity) entries of each list array. */
async function checkLists(
  gpu: Gpu,
  lists: SparseLists,
  expected: ReferenceLists,
  capacity: number,
  what: string,
) {
  const [offsets, index, value, owner] = await gpu.readMany([
    lists.offsets,
    lists.index,
    lists.value,
    lists.owner,
  ]);
  assertEqualArrays(asU32(offsets), expected.offsets, `${what} offsets`);
  const n = Math.min(expected.index.length, capacity);
  assertEqualArrays(asU32(index).subarray(0, n), expected.index.slice(0, n), `${what} index`);
  assertEqualArrays(value.subarray(0, n), expected.value.slice(0, n), `${what} value`);
  assertEqualArrays(asU32(owner).subarray(0, n), expected.owner.slice(0, n), `${what} owner`);
}

/** Asserts closeness with an absolute slack relative to the largest expected magnitude. */
function assertCloseScaled(got: Float32Array, expected: Float64Array, what: string, rtol = 1e-5) {
  const scale = expected.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  assertClose(got, expected, { rtol, atol: rtol * scale + 1e-7, what });
}

Deno.test(
  "compressSelection: row and latent lists of a selection's nonzeros",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const cases: [number, number, number, number][] = [
      // rows, d_sae, density, seed
      [1, 1, 1, 1],
      [1, 1, 0, 2], // no nonzero at all
      [7, 13, 0.2, 3],
      [33, 128, 0.1, 4],
      // 300 row lists and 1000 latent lists: the scan's 256 invocations own segments of 2 and 4.
      [300, 1000, 0.1, 5],
      // 256 row lists (one each) and 1023 latent lists (1020..1022 in the last segment): the
      // 256th invocation's segment is not empty, so the total must include it.
      [256, 1023, 0.02, 7],
      [2, 600, 0.05, 6],
    ];
    for (const [rows, dSae, density, seed] of cases) {
      const dense = sparseMatrix(rows, dSae, seed, density);
      if (rows === 1 && dSae === 1 && density === 1) dense[0] = -0.75;
      const nnz = countNonzeros(dense);
      const what = `${rows}x${dSae}`;
      for (const capacity of [nnz, nnz + 17]) {
        const acts = compressSelection(gpu.upload(dense, [rows, dSae]), capacity);
        if (acts.rows !== rows || acts.dSae !== dSae || acts.capacity !== Math.max(1, capacity)) {
          throw new Error(`${what}: acts describe ${acts.rows}x${acts.dSae} cap ${acts.capacity}`);
        }
        const byRow = referenceLists(dense, rows, dSae, "rows");
        const byLatent = referenceLists(dense, rows, dSae, "latents");
        await checkLists(gpu, acts.byRow, byRow, capacity, `${what} cap ${capacity} byRow`);
        await checkLists(
          gpu,
          acts.byLatent,
          byLatent,
          capacity,
          `${what} cap ${capacity} byLatent`,
        );
      }
    }
  },
);

Deno.test(
  "compressRows: the row lists alone, as compressSelection builds them",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    for (const [rows, dSae, density, seed] of [[1, 300, 0.2, 41], [33, 128, 0.1, 42]]) {
      const dense = sparseMatrix(rows, dSae, seed, density);
      const capacity = countNonzeros(dense);
      const lists = compressRows(gpu.upload(dense, [rows, dSae]), capacity);
      const byRow = referenceLists(dense, rows, dSae, "rows");
      await checkLists(gpu, lists, byRow, capacity, `${rows}x${dSae} rows only`);
    }
  },
);

Deno.test(
  "compressSelection: past the capacity, offsets still count every nonzero and the entries below it stay exact",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const [rows, dSae] = [20, 50];
    const dense = sparseMatrix(rows, dSae, 11, 0.3);
    const capacity = Math.floor(countNonzeros(dense) / 2);
    const acts = compressSelection(gpu.upload(dense, [rows, dSae]), capacity);
    const byRow = referenceLists(dense, rows, dSae, "rows");
    const byLatent = referenceLists(dense, rows, dSae, "latents");
    await checkLists(gpu, acts.byRow, byRow, capacity, "overflow byRow");
    await checkLists(gpu, acts.byLatent, byLatent, capacity, "overflow byLatent");
  },
);

Deno.test(
  "latentSums: column sums from the latent lists, bit for bit reduceCols",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    for (
      const [rows, dSae, density, seed] of [[300, 1000, 0.1, 21], [7, 13, 0.5, 22], [2, 5, 0, 23]]
    ) {
      const dense = gpu.upload(sparseMatrix(rows, dSae, seed, density), [rows, dSae]);
      const [got, want] = await gpu.readMany([
        latentSums(compressSelection(dense)),
        reduceCols(dense),
      ]);
      assertEqualArrays(got, want, `${rows}x${dSae} column sums`);
    }
  },
);

Deno.test(
  "sparseDecodePrefixes: several widths in one walk, bit for bit the separate decodes",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const [rows, dSae, dIn] = [9, 40, 300];
    const acts = compressSelection(gpu.upload(sparseMatrix(rows, dSae, 31, 0.3), [rows, dSae]));
    const wDec = gpu.upload(randomArray(dSae * dIn, 32, -1, 1), [dSae, dIn]);
    const norms = gpu.upload(randomArray(dSae, 33, 0.5, 2));
    // The full width first, then prefixes out of order, as Matryoshka passes them.
    const widths = [dSae, 25, 5];
    const together = await gpu.readMany(sparseDecodePrefixes(acts, wDec, { norms, widths }));
    const apart = await gpu.readMany(
      widths.map((width) => sparseDecode(acts, wDec, { norms, width })),
    );
    widths.forEach((w, t) => assertEqualArrays(together[t], apart[t], `width ${w}`));
  },
);

/** out[r, i] = sum over row r's nonzeros j < width of value / norm_j · W_dec[j, i]. */
function referenceDecode(
  dense: Float32Array,
  wDec: Float32Array,
  rows: number,
  dSae: number,
  dIn: number,
  norms: Float32Array | undefined,
  width: number,
): Float64Array {
  const out = new Float64Array(rows * dIn);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < Math.min(width, dSae); j++) {
      const v = dense[r * dSae + j];
      if (v === 0) continue;
      const coefficient = norms ? v / norms[j] : v;
      for (let i = 0; i < dIn; i++) out[r * dIn + i] += coefficient * wDec[j * dIn + i];
    }
  }
  return out;
}

Deno.test(
  "sparseDecode: row lists times W_dec, with norms and prefix widths",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const cases: [number, number, number][] = [
      // rows, d_sae, d_in (read as vec4: 1028 spans two of latent_backward's 256-vec4 slices;
      // decode's invocations take 8 vec4 each, 64 to a workgroup: 2312 needs two workgroups)
      [1, 1, 4],
      [4, 30, 1028],
      [3, 20, 2312],
      [9, 40, 300],
      [64, 1000, 300],
      [16, 200, 64],
    ];
    for (const [rows, dSae, dIn] of cases) {
      const dense = sparseMatrix(rows, dSae, rows + dSae, rows * dSae === 1 ? 1 : 0.1);
      const nnz = countNonzeros(dense);
      const wDecHost = randomArray(dSae * dIn, dSae * 3 + dIn, -1, 1);
      const normsHost = randomArray(dSae, dSae + 7, 0.5, 2);
      const wDec = gpu.upload(wDecHost, [dSae, dIn]);
      const norms = gpu.upload(normsHost, [dSae]);
      const acts = compressSelection(gpu.upload(dense, [rows, dSae]), nnz);
      for (const width of [undefined, Math.ceil(dSae / 3), 0]) {
        for (const withNorms of [false, true]) {
          const got = await sparseDecode(acts, wDec, {
            norms: withNorms ? norms : undefined,
            width,
          }).read();
          const expected = referenceDecode(
            dense,
            wDecHost,
            rows,
            dSae,
            dIn,
            withNorms ? normsHost : undefined,
            width ?? dSae,
          );
          assertCloseScaled(
            got,
            expected,
            `decode ${rows}x${dSae}x${dIn} width ${width} norms ${withNorms}`,
          );
        }
      }
    }
  },
);

interface BackwardHost {
  rows: number;
  dIn: number;
  dSae: number;
  dense: Float32Array;
  wDec: Float32Array;
  saeIn: Float32Array;
  dPre: Float32Array; // [terms · rows, d_in]
  widths: number[];
  norms?: Float32Array;
  linearPre: Float32Array;
}

interface Grads {
  dWDec: Float64Array;
  dWEnc: Float64Array;
  dBEnc: Float64Array;
  dNorms: Float64Array;
}

/** The latent-list backward, entry by entry, added onto `initial`. */
function referenceBackward(h: BackwardHost, initial: Grads): Grads {
  const { rows, dIn, dSae, dense, wDec, saeIn, dPre, widths, norms, linearPre } = h;
  const g: Grads = {
    dWDec: Float64Array.from(initial.dWDec),
    dWEnc: Float64Array.from(initial.dWEnc),
    dBEnc: Float64Array.from(initial.dBEnc),
    dNorms: Float64Array.from(initial.dNorms),
  };
  for (let b = 0; b < rows; b++) {
    for (let j = 0; j < dSae; j++) {
      const a = dense[b * dSae + j];
      if (a === 0) continue;
      const terms = widths.map((w, t) => [w, t]).filter(([w]) => j < w).map(([, t]) => t);
      let grad = 0;
      const dOut = new Float64Array(dIn);
      for (const t of terms) {
        for (let i = 0; i < dIn; i++) {
          const d = dPre[(t * rows + b) * dIn + i];
          grad += d * wDec[j * dIn + i];
          dOut[i] += d;
        }
      }
      let decoded = a;
      let dLinear = grad;
      if (norms) {
        const n = norms[j];
        const dActs = grad / n;
        g.dNorms[j] += dActs * linearPre[b * dSae + j] - dActs * a / n;
        decoded = a / n;
        dLinear = dActs * n;
      }
      for (let i = 0; i < dIn; i++) {
        g.dWDec[j * dIn + i] += decoded * dOut[i];
        g.dWEnc[i * dSae + j] += saeIn[b * dIn + i] * dLinear;
      }
      g.dBEnc[j] += dLinear;
    }
  }
  return g;
}

async function runBackward(
  gpu: Gpu,
  h: BackwardHost,
  initial: Grads,
  overwrite: boolean,
): Promise<Float32Array[]> {
  const acts: SparseActs = compressSelection(
    gpu.upload(h.dense, [h.rows, h.dSae]),
    countNonzeros(h.dense),
  );
  const outputs: Record<keyof Grads, Tensor> = {
    dWDec: gpu.upload(Float32Array.from(initial.dWDec), [h.dSae, h.dIn]),
    dWEnc: gpu.upload(Float32Array.from(initial.dWEnc), [h.dIn, h.dSae]),
    dBEnc: gpu.upload(Float32Array.from(initial.dBEnc), [h.dSae]),
    dNorms: gpu.upload(Float32Array.from(initial.dNorms), [h.dSae]),
  };
  sparseBackward(acts, {
    wDec: gpu.upload(h.wDec, [h.dSae, h.dIn]),
    saeIn: gpu.upload(h.saeIn, [h.rows, h.dIn]),
    dPre: h.widths.map((_, t) => {
      const size = h.rows * h.dIn;
      return gpu.upload(h.dPre.slice(t * size, (t + 1) * size), [h.rows, h.dIn]);
    }),
    widths: h.widths,
    norms: h.norms ? gpu.upload(h.norms, [h.dSae]) : undefined,
    linearPre: gpu.upload(h.linearPre, [h.rows, h.dSae]),
  }, { ...outputs, overwrite });
  return await gpu.readMany([outputs.dWDec, outputs.dWEnc, outputs.dBEnc, outputs.dNorms]);
}

Deno.test(
  "sparseBackward: W_dec, W_enc, b_enc and decoder-norm gradients over the latent lists",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const cases: {
      rows: number;
      dIn: number;
      dSae: number;
      widths: number[];
      norms: boolean;
      accumulate: boolean;
      /** dW_dec and dW_enc start as garbage and are stored, not added to (empty lists too). */
      overwrite?: boolean;
    }[] = [
      { rows: 1, dIn: 4, dSae: 1, widths: [1], norms: false, accumulate: false },
      { rows: 1, dIn: 4, dSae: 1, widths: [1], norms: true, accumulate: true },
      { rows: 6, dIn: 1028, dSae: 20, widths: [20, 7], norms: true, accumulate: true },
      { rows: 24, dIn: 300, dSae: 40, widths: [40], norms: false, accumulate: false },
      { rows: 24, dIn: 300, dSae: 40, widths: [40], norms: true, accumulate: false },
      { rows: 24, dIn: 300, dSae: 40, widths: [40, 5, 12], norms: false, accumulate: false },
      { rows: 24, dIn: 300, dSae: 40, widths: [40, 5, 12], norms: true, accumulate: true },
      { rows: 64, dIn: 48, dSae: 1000, widths: [1000, 5, 12], norms: true, accumulate: false },
      // Eight terms: widths past the first vec4 of the uniform block.
      {
        rows: 10,
        dIn: 20,
        dSae: 40,
        widths: [40, 5, 12, 30, 1, 0, 39, 17],
        norms: true,
        accumulate: false,
      },
      { rows: 33, dIn: 256, dSae: 97, widths: [97], norms: false, accumulate: true },
      // Most of the 40 latent lists are empty at 6 rows.
      { rows: 6, dIn: 300, dSae: 40, widths: [40], norms: true, accumulate: true, overwrite: true },
      {
        rows: 24,
        dIn: 48,
        dSae: 40,
        widths: [40],
        norms: false,
        accumulate: true,
        overwrite: true,
      },
    ];
    for (const [n, c] of cases.entries()) {
      const { rows, dIn, dSae, widths } = c;
      const seed = 100 * n;
      const dense = sparseMatrix(rows, dSae, seed + 1, rows * dSae === 1 ? 1 : 0.1);
      const h: BackwardHost = {
        rows,
        dIn,
        dSae,
        dense,
        wDec: randomArray(dSae * dIn, seed + 2, -1, 1),
        saeIn: randomArray(rows * dIn, seed + 3, -1, 1),
        dPre: randomArray(widths.length * rows * dIn, seed + 4, -1, 1),
        widths,
        norms: c.norms ? randomArray(dSae, seed + 5, 0.5, 2) : undefined,
        linearPre: randomArray(rows * dSae, seed + 6, -2, 2),
      };
      const initial: Grads = c.accumulate
        ? {
          dWDec: Float64Array.from(randomArray(dSae * dIn, seed + 7, -1, 1)),
          dWEnc: Float64Array.from(randomArray(dIn * dSae, seed + 8, -1, 1)),
          dBEnc: Float64Array.from(randomArray(dSae, seed + 9, -1, 1)),
          dNorms: Float64Array.from(randomArray(dSae, seed + 10, -1, 1)),
        }
        : {
          dWDec: new Float64Array(dSae * dIn),
          dWEnc: new Float64Array(dIn * dSae),
          dBEnc: new Float64Array(dSae),
          dNorms: new Float64Array(dSae),
        };
      const expected = referenceBackward(
        h,
        c.overwrite
          ? { ...initial, dWDec: new Float64Array(dSae * dIn), dWEnc: new Float64Array(dIn * dSae) }
          : initial,
      );
      const [dWDec, dWEnc, dBEnc, dNorms] = await runBackward(gpu, h, initial, !!c.overwrite);
      const what = `${rows}x${dIn}x${dSae} widths [${widths}] norms ${c.norms} ` +
        `accumulate ${c.accumulate} overwrite ${!!c.overwrite}`;
      assertCloseScaled(dWDec, expected.dWDec, `${what} dW_dec`);
      assertCloseScaled(dWEnc, expected.dWEnc, `${what} dW_enc`);
      assertCloseScaled(dBEnc, expected.dBEnc, `${what} db_enc`);
      if (c.norms) {
        assertCloseScaled(dNorms, expected.dNorms, `${what} d_norms`);
      } else {
        // Without rescaling the norm gradient is left as the caller passed it.
        assertEqualArrays(dNorms, Float32Array.from(initial.dNorms), `${what} d_norms`);
      }
    }
  },
);

Deno.test(
  "sparseBackward rejects zero or more than 8 decoder terms, and a gradient count unlike the widths",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const acts = compressSelection(gpu.upload(Float32Array.of(1, 0, 0, 2), [2, 2]), 2);
    const t = (shape: number[]) => gpu.zeros(shape);
    const cases = [[[], 0], [new Array(9).fill(2), 9], [[2], 2]] as const;
    for (const [widths, gradients] of cases) {
      let threw = false;
      try {
        sparseBackward(acts, {
          wDec: t([2, 3]),
          saeIn: t([2, 3]),
          dPre: Array.from({ length: gradients }, () => t([2, 3])),
          widths,
          linearPre: t([2, 2]),
        }, { dWDec: t([2, 3]), dWEnc: t([3, 2]), dBEnc: t([2]), dNorms: t([2]) });
      } catch {
        threw = true;
      }
      if (!threw) throw new Error(`${widths.length} widths, ${gradients} gradients were accepted`);
    }
  },
);

Deno.test("sparseFits: one storage binding per tensor, W_dec and the stacked terms in a texture", () => {
  const limits = { maxBindingBytes: 128 * 2 ** 20, maxTextureSide: 16384 };
  const shape = { rows: 1024, dIn: 768, dSae: 12288, terms: 1 };
  const fits = (change: Partial<typeof shape>) => sparseFits(limits, { ...shape, ...change });
  if (!fits({})) throw new Error("the reference shape should fit");
  const misfits: Partial<typeof shape>[] = [
    { dSae: 16383 }, // W_dec's rows exceed a texture side (with padding)
    { terms: 17 }, // 17 · 1024 stacked gradient rows
    { dIn: 770 }, // not whole texels
    { rows: 4096 }, // [4096, 12288] exceeds 128 MiB
  ];
  for (const change of misfits) {
    if (fits(change)) throw new Error(`should not fit: ${JSON.stringify(change)}`);
  }
  if (!fits({ terms: 3, rows: 4096, dSae: 4096 })) throw new Error("3 · 4096 rows fit");
});
