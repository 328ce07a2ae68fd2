import {
  binary,
  type BinaryOp,
  type Broadcast,
  unary,
  type UnaryOp,
} from "../src/kernels/elementwise.ts";
import {
  matVecInto,
  reduceAll,
  reduceCols,
  reduceRows,
  type RowReduction,
} from "../src/kernels/reduce.ts";
import { assertClose, gpuTest, randomArray, testGpu } from "./helpers.ts";

const f = Math.fround;
const alpha = f(0.3), beta = f(-1.7);

const binaryRef: Record<BinaryOp, (x: number, y: number) => number> = {
  add: (x, y) => f(x + y),
  sub: (x, y) => f(x - y),
  mul: (x, y) => f(x * y),
  div: (x, y) => f(x / y),
  axpby: (x, y) => f(f(alpha * x) + f(beta * y)),
  maskGreater: (x, y) => (y > alpha ? x : 0),
  mulScaled: (x, y) => f(f(x * y) * alpha),
  squaredDiff: (x, y) => f(f(x - y) * f(x - y)),
  scaledDiff: (x, y) => f(alpha * f(x - y)),
  maskGreaterOrNegInf: (x, y) => (y > alpha ? x : -Infinity),
  reluMaskGreater: (x, y) => (y > alpha ? Math.max(x, 0) : 0),
};

const unaryRef: Record<UnaryOp, (x: number) => number> = {
  relu: (x) => Math.max(x, 0),
  greater: (x) => (x > alpha ? 1 : 0),
  abs: Math.abs,
  square: (x) => f(x * x),
  sqrt: (x) => f(Math.sqrt(x)),
  exp: (x) => f(Math.exp(x)),
  affine: (x) => f(f(alpha * x) + beta),
  sign: Math.sign,
  reciprocal: (x) => f(1 / x),
  log: (x) => f(Math.log(x)),
  scaledMin: (x) => Math.min(f(alpha * x), beta),
};

// Odd shapes take the one-element path; shapes with cols % 4 == 0 the vec4 path.
for (const [rows, cols] of [[37, 53], [12, 64]]) {
  Deno.test(
    `binary ops match the reference for every broadcast (${rows}x${cols})`,
    gpuTest,
    async () => {
      const gpu = await testGpu();
      const a = randomArray(rows * cols, 11);
      const ta = gpu.upload(a, [rows, cols]);
      const bSizes: Record<Broadcast, number> = {
        full: rows * cols,
        perCol: cols,
        perRow: rows,
        scalar: 1,
      };
      for (const bcast of Object.keys(bSizes) as Broadcast[]) {
        const b = randomArray(bSizes[bcast], 12, 0.5, 2);
        const tb = gpu.upload(b);
        for (const op of Object.keys(binaryRef) as BinaryOp[]) {
          const got = await binary(op, ta, tb, bcast, { alpha, beta }).read();
          const ref = a.map((x, i) => {
            const j = bcast === "full"
              ? i
              : bcast === "perCol"
              ? i % cols
              : bcast === "perRow"
              ? Math.floor(i / cols)
              : 0;
            return binaryRef[op](x, b[j]);
          });
          assertClose(got, ref, { rtol: 2e-7, atol: 0, what: `${op}/${bcast}` });
        }
      }
    },
  );
}

Deno.test("unary ops match the reference", gpuTest, async () => {
  const gpu = await testGpu();
  for (const n of [1000, 999]) {
    const a = randomArray(n, 5, 0.05, 3);
    a[3] = -0.5;
    const ta = gpu.upload(a);
    for (const op of Object.keys(unaryRef) as UnaryOp[]) {
      if ((op === "sqrt" || op === "log")) continue;
      const got = await unary(op, ta, { alpha, beta }).read();
      assertClose(got, a.map(unaryRef[op]), { rtol: 2e-6, atol: 0, what: op });
    }
    const positive = gpu.upload(a.map(Math.abs));
    for (const op of ["sqrt", "log"] as const) {
      assertClose(await unary(op, positive).read(), a.map(Math.abs).map(unaryRef[op]), {
        rtol: 2e-6,
        atol: 1e-7,
        what: op,
      });
    }
  }
});

Deno.test("in-place elementwise writes into its input", gpuTest, async () => {
  const gpu = await testGpu();
  for (const n of [300, 301]) {
    const a = randomArray(n, 9);
    const t = gpu.upload(a);
    unary("relu", t, { out: t });
    assertClose(await t.read(), a.map((x) => Math.max(x, 0)), { rtol: 0, atol: 0 });
    const b = randomArray(n, 10);
    binary("sub", t, gpu.upload(b), "full", { out: t });
    assertClose(await t.read(), a.map((x, i) => f(Math.max(x, 0) - b[i])), { rtol: 0, atol: 0 });
  }
});

Deno.test(
  "staged elementwise ops in pieces: every broadcast, in place and accumulating, match the reference",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // [40, 68] with 1 KiB bindings runs in 256-value pieces that start mid-row (row and column
    // broadcasts index b from each piece's offset); [2, 2·flatWidth + 500] stages whole texture
    // rows plus a partial one.
    const cases = [
      { rows: 40, cols: 68, bindingBytes: 1024 },
      { rows: 2, cols: 2 * gpu.flatWidth + 500 },
    ];
    for (const { rows, cols, bindingBytes } of cases) {
      const n = rows * cols;
      const a = randomArray(n, 31), start = randomArray(n, 32);
      const bSizes: Record<Broadcast, number> = { full: n, perCol: cols, perRow: rows, scalar: 1 };
      gpu.maxBindingOverride = bindingBytes;
      try {
        for (const bcast of Object.keys(bSizes) as Broadcast[]) {
          const b = randomArray(bSizes[bcast], 33, 0.5, 2);
          const bAt = (i: number) =>
            b[
              bcast === "full"
                ? i
                : bcast === "perCol"
                ? i % cols
                : bcast === "perRow"
                ? Math.floor(i / cols)
                : 0
            ];
          const [ta, tb] = [gpu.upload(a, [rows, cols]), gpu.upload(b)];
          const what = `${bcast} ${rows}x${cols}`;
          const got = await binary("axpby", ta, tb, bcast, { alpha, beta }).read();
          const axpby = a.map((x, i) => binaryRef.axpby(x, bAt(i)));
          assertClose(got, axpby, { rtol: 0, atol: 0, what: `axpby ${what}` });
          const out = gpu.upload(start, [rows, cols]);
          binary("mul", ta, tb, bcast, { out, accumulate: true });
          const accumulated = start.map((s, i) => f(s + binaryRef.mul(a[i], bAt(i))));
          assertClose(await out.read(), accumulated, { rtol: 0, atol: 0, what: `+= ${what}` });
          binary("sub", ta, tb, bcast, { out: ta });
          const inPlace = a.map((x, i) => binaryRef.sub(x, bAt(i)));
          assertClose(await ta.read(), inPlace, { rtol: 0, atol: 0, what: `in place ${what}` });
        }
        const t = gpu.upload(a, [rows, cols]);
        assertClose(await unary("affine", t, { alpha, beta }).read(), a.map(unaryRef.affine), {
          rtol: 0,
          atol: 0,
          what: `unary ${rows}x${cols}`,
        });
        unary("relu", t, { out: t });
        assertClose(await t.read(), a.map(unaryRef.relu), { rtol: 0, atol: 0, what: "relu" });
      } finally {
        gpu.maxBindingOverride = undefined;
      }
    }
  },
);

Deno.test(
  "row, column and total reductions match the reference (odd sizes, > 1 workgroup)",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    for (const [r, c] of [[1, 1], [3, 700], [129, 5], [40, 1031]]) {
      const a = randomArray(r * c, r + c);
      const t = gpu.upload(a, [r, c]);
      const rowFns: Record<RowReduction, (x: number) => number> = {
        sum: (x) => x,
        sumSquares: (x) => x * x,
        sumAbs: Math.abs,
        countGreater: (x) => (x > alpha ? 1 : 0),
        sumAbsPow: (x) => Math.abs(x) ** 1.5,
      };
      for (const fn of Object.keys(rowFns) as RowReduction[]) {
        const p = fn === "sumAbsPow" ? 1.5 : alpha;
        const ref = Array.from({ length: r }, (_, i) => {
          let s = 0;
          for (let j = 0; j < c; j++) s += rowFns[fn](a[i * c + j]);
          return s;
        });
        assertClose(await reduceRows(t, fn, p).read(), ref, {
          rtol: 1e-5,
          atol: 1e-5,
          what: `${fn} ${r}x${c}`,
        });
        const total = ref.reduce((x, y) => x + y, 0);
        assertClose(await reduceAll(t, fn, p).read(), [total], {
          rtol: 1e-5,
          atol: 1e-4,
          what: `all ${fn}`,
        });
      }
      const colRef = Array.from({ length: c }, (_, j) => {
        let s = 0;
        for (let i = 0; i < r; i++) s += a[i * c + j];
        return s;
      });
      assertClose(await reduceCols(t).read(), colRef, {
        rtol: 1e-5,
        atol: 1e-5,
        what: `cols ${r}x${c}`,
      });
    }
  },
);

Deno.test(
  "row sums round in one fixed order: 256 strided partials, then a pairwise tree (short and long rows)",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // [300, 700] takes the one-invocation-per-row kernel from staging textures ([2100, 2048] in
    // two staged runs of rows), [300, 701] from the buffer; [40, 3000] the workgroup-per-row one
    // from staging textures ([1500, 3000] in two runs), [40, 3001] and [10, 3000] (too few
    // values to stage) from the buffer: all must give these exact bits, so switching kernels
    // never changes a result.
    const shapes = [
      [300, 700],
      [2100, 2048],
      [300, 701],
      [40, 3000],
      [1500, 3000],
      [40, 3001],
      [10, 3000],
    ];
    for (const [r, c] of shapes) {
      const a = randomArray(r * c, 7 * r + c);
      const want = Array.from({ length: r }, (_, i) => {
        const lanes = new Array(256).fill(0);
        for (let j = 0; j < c; j++) lanes[j % 256] = f(lanes[j % 256] + f(a[i * c + j] ** 2));
        for (let stride = 128; stride > 0; stride >>= 1) {
          for (let l = 0; l < stride; l++) lanes[l] = f(lanes[l] + lanes[l + stride]);
        }
        return lanes[0];
      });
      const got = await reduceRows(gpu.upload(a, [r, c]), "sumSquares").read();
      assertClose(got, want, { rtol: 0, atol: 0, what: `sumSquares ${r}x${c}` });
    }
  },
);

Deno.test(
  "column sums add rows in order: staged (also across two runs of rows) and from the buffer",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // [2100, 2048] reads two staged runs of rows (the second continues the running sums),
    // [300, 701] reads the buffer.
    for (const [r, c] of [[37, 700], [2100, 2048], [300, 701]]) {
      const a = randomArray(r * c, 5 * r + c);
      const want = new Float64Array(c);
      for (let j = 0; j < c; j++) {
        let s = 0;
        for (let i = 0; i < r; i++) s = f(s + a[i * c + j]);
        want[j] = s;
      }
      const got = await reduceCols(gpu.upload(a, [r, c])).read();
      assertClose(got, want, { rtol: 0, atol: 0, what: `cols ${r}x${c}` });
    }
  },
);

Deno.test(
  "a gated binary op runs only when the GPU-side value exceeds the limit",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const a = randomArray(40, 1), b = randomArray(8, 2);
    const value = gpu.upload(Float32Array.of(3));
    for (const [limit, open] of [[5, false], [2, true]] as const) {
      const out = gpu.upload(new Float32Array(40).fill(7), [5, 8]);
      binary("add", gpu.upload(a, [5, 8]), gpu.upload(b), "perCol", {
        out,
        gate: { value, limit },
      });
      const want = open ? a.map((x, i) => f(x + b[i % 8])) : new Float32Array(40).fill(7);
      assertClose(await out.read(), want, { rtol: 0, atol: 0, what: `limit ${limit}` });
    }
  },
);

Deno.test(
  "matVecInto adds alpha·(a·v) to beta·out in index order: staged, from buffers, in pieces",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // cols % 4 == 0 reads staging textures ([4000, 1100] needs two staged runs of rows), 1101
    // reads the buffer, also in chunks of rows; every path rounds like this sequential sum.
    for (const [rows, cols] of [[37, 1100], [4000, 1100], [37, 1101]]) {
      const a = randomArray(rows * cols, 31), v = randomArray(cols, 32);
      const out0 = randomArray(rows, 33);
      const want = Array.from({ length: rows }, (_, r) => {
        let dot = 0;
        for (let j = 0; j < cols; j++) dot = f(dot + f(a[r * cols + j] * v[j]));
        return f(f(-0.5 * dot) + f(2 * out0[r]));
      });
      for (const limit of [undefined, 4096 * 4]) {
        gpu.maxBindingOverride = limit;
        try {
          const out = gpu.upload(out0);
          matVecInto(gpu.upload(a, [rows, cols]), gpu.upload(v), out, -0.5, 2);
          const what = `[${rows}, ${cols}] limit ${limit}`;
          assertClose(await out.read(), want, { rtol: 0, atol: 0, what });
        } finally {
          gpu.maxBindingOverride = undefined;
        }
      }
    }
  },
);

Deno.test(
  "row and column broadcasts pick the right b past 2^26 elements (the kernel's f32 quotient estimate)",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // Staged rows are whole texels, so an element index n = 4m is at least 4 below the next
    // multiple of the width: f32(n) / f32(12288) rounds up to the next row only from n ≈ 2^26
    // on (row 5462), where the estimate needs its correction.
    const [rows, cols] = [5500, 12288];
    const zeros = gpu.zeros([rows, cols]);
    for (const bcast of ["perRow", "perCol"] as const) {
      const length = bcast === "perRow" ? rows : cols;
      const b = gpu.upload(Float32Array.from({ length }, (_, i) => i));
      const got = await binary("add", zeros, b, bcast).read();
      for (let i = 0; i < got.length; i++) {
        const want = bcast === "perRow" ? Math.floor(i / cols) : i % cols;
        if (got[i] !== want) throw new Error(`${bcast}[${i}]: got ${got[i]}, expected ${want}`);
      }
    }
  },
);
