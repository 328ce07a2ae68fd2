/**
 * Kernels on tensors larger than one storage binding: a tiny forced binding limit makes every
 * kernel split small, odd-sized tensors into chunks bound as buffer ranges. Results are checked
 * against plain-TS references, or (feature counters, JumpReLU backward) against the same kernel
 * run unchunked, which its own tests check against a reference.
 */
import { type Chunk, chunks } from "../src/gpu/chunks.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { updateTopkThreshold } from "../src/kernels/batchtopk.ts";
import { binary, type Broadcast, unary } from "../src/kernels/elementwise.ts";
import {
  type FeatureCounters,
  rowStatistics,
  updateFeatureCounters,
} from "../src/kernels/feature_stats.ts";
import { jumpReluBackward, jumpReluForward } from "../src/kernels/jumprelu.ts";
import { rowLpNormsBackward } from "../src/kernels/lp_norm.ts";
import { reduceAll, reduceCols, reduceRows } from "../src/kernels/reduce.ts";
import { topkOverBatch, topkPerRow, topkPerRowMasked } from "../src/kernels/topk.ts";
import { Adam, applyClip, clipCoefficient } from "../src/train/optimizer.ts";
import { assertClose, gpuTest, randomArray, rng, testGpu } from "./helpers.ts";

const f = Math.fround;
/** 4 KiB: 1024 values per binding. */
const SMALL = 4096;

/** Runs `body` with storage bindings limited to `bytes`, restoring the limit afterwards. */
async function withBindingLimit<T>(gpu: Gpu, bytes: number, body: () => Promise<T>): Promise<T> {
  gpu.maxBindingOverride = bytes;
  try {
    return await body();
  } finally {
    gpu.maxBindingOverride = undefined;
  }
}

Deno.test("chunks cover every unit once, fit a binding and start aligned", gpuTest, async () => {
  const gpu = await testGpu();
  const align = gpu.limits.minStorageBufferOffsetAlignment / 4;
  await withBindingLimit(gpu, SMALL, () => {
    const cases: [number, number, { multiple?: number; aligned?: boolean }][] = [
      [5141, 1, { multiple: 4, aligned: true }],
      [97, 53, {}],
      [300, 7, { multiple: 3 }],
      [4, 900, {}],
    ];
    for (const [units, unit, options] of cases) {
      const parts: Chunk[] = chunks(gpu, units, unit, options);
      let next = 0;
      for (const c of parts) {
        if (c.first !== next) throw new Error(`gap before unit ${c.first}`);
        if (c.base % align !== 0) throw new Error(`unaligned base ${c.base}`);
        if (c.base + c.shift !== c.first * unit) throw new Error("shift mismatch");
        if (4 * (c.shift + c.count * unit) > SMALL) throw new Error("chunk exceeds the binding");
        if (options.aligned && c.shift !== 0) throw new Error("aligned chunk with a shift");
        next += c.count;
      }
      if (next !== units || parts.length < 2) throw new Error(`bad split of ${units}x${unit}`);
    }
    return Promise.resolve();
  });
  if (chunks(gpu, 10, 10).length !== 1 || !chunks(gpu, 10, 10)[0].whole) {
    throw new Error("small tensors should be one whole chunk");
  }
});

// Odd shapes take the one-element path; cols % 4 == 0 the vec4 path.
for (const [rows, cols] of [[97, 53], [40, 68]]) {
  Deno.test(`chunked elementwise ops match the reference (${rows}x${cols})`, gpuTest, async () => {
    const gpu = await testGpu();
    const n = rows * cols;
    const a = randomArray(n, 1);
    const sizes: Record<Broadcast, number> = { full: n, perCol: cols, perRow: rows, scalar: 1 };
    const bIndex: Record<Broadcast, (i: number) => number> = {
      full: (i) => i,
      perCol: (i) => i % cols,
      perRow: (i) => Math.floor(i / cols),
      scalar: () => 0,
    };
    await withBindingLimit(gpu, SMALL, async () => {
      const ta = gpu.upload(a, [rows, cols]);
      for (const bcast of Object.keys(sizes) as Broadcast[]) {
        const b = randomArray(sizes[bcast], 2, 0.5, 2);
        const tb = gpu.upload(b);
        const want = a.map((x, i) => f(x * b[bIndex[bcast](i)]));
        assertClose(await binary("mul", ta, tb, bcast).read(), want, { what: `mul ${bcast}` });
        const wantAxpby = a.map((x, i) => f(f(0.5 * x) + f(-2 * b[bIndex[bcast](i)])));
        const got = await binary("axpby", ta, tb, bcast, { alpha: 0.5, beta: -2 }).read();
        assertClose(got, wantAxpby, { what: `axpby ${bcast}` });
        // In place.
        const t = gpu.upload(a, [rows, cols]);
        binary("sub", t, tb, bcast, { out: t });
        const wantSub = a.map((x, i) => f(x - b[bIndex[bcast](i)]));
        assertClose(await t.read(), wantSub, { what: `in-place sub ${bcast}` });
      }
      assertClose(await unary("abs", ta).read(), a.map(Math.abs), { what: "abs" });
      const t = gpu.upload(a, [rows, cols]);
      unary("affine", t, { out: t, alpha: 2, beta: 1 });
      assertClose(await t.read(), a.map((x) => f(f(2 * x) + 1)), { what: "in-place affine" });
    });
  });
}

Deno.test("chunked row, column and total reductions match the reference", gpuTest, async () => {
  const gpu = await testGpu();
  for (const [rows, cols] of [[97, 53], [9, 300], [40, 68]]) {
    const a = randomArray(rows * cols, 3);
    await withBindingLimit(gpu, SMALL, async () => {
      const t = gpu.upload(a, [rows, cols]);
      const rowSum = new Float64Array(rows), rowSq = new Float64Array(rows);
      const colSum = new Float64Array(cols);
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < cols; j++) {
          const x = a[r * cols + j];
          rowSum[r] += x;
          rowSq[r] += x * x;
          colSum[j] += x;
        }
      }
      const tol = { rtol: 1e-4, atol: 1e-4 };
      assertClose(await reduceRows(t).read(), rowSum, { ...tol, what: "row sums" });
      assertClose(await reduceRows(t, "sumSquares").read(), rowSq, { ...tol, what: "row sq" });
      assertClose(await reduceCols(t).read(), colSum, { ...tol, what: "col sums" });
      const total = rowSum.reduce((x, y) => x + y, 0);
      assertClose(await reduceAll(t).read(), [total], { rtol: 1e-4, atol: 1e-3, what: "total" });
    });
  }
});

/** Each segment's k largest values (ReLU'd unless `raw`), zeros elsewhere. */
function topkReference(values: Float32Array, segLen: number, k: number, raw = false) {
  const out = new Float32Array(values.length);
  for (let s = 0; s < values.length; s += segLen) {
    const seg = Array.from(values.subarray(s, s + segLen));
    const kth = [...seg].sort((x, y) => y - x)[k - 1];
    seg.forEach((v, j) => {
      if (v >= kth) out[s + j] = raw ? v : Math.max(v, 0);
    });
  }
  return out;
}

Deno.test("chunked per-row, masked and batch-wide top-k match the reference", gpuTest, async () => {
  const gpu = await testGpu();
  const [rows, cols, k] = [31, 203, 7];
  const values = randomArray(rows * cols, 4, -1, 1);
  await withBindingLimit(gpu, SMALL, async () => {
    const t = gpu.upload(values, [rows, cols]);
    for (const method of ["scan", "radix"] as const) {
      const got = await topkPerRow(t, k, method).read();
      assertClose(got, topkReference(values, cols, k), { what: `rows ${method}` });
    }
    const count = 5 * rows;
    const got = await topkOverBatch(t, count).read();
    assertClose(got, topkReference(values, values.length, count), { what: "batch" });
    // Masked: only even columns are candidates; k capped at 3 by a GPU value.
    const mask = Float32Array.from({ length: cols }, (_, j) => (j % 2 === 0 ? 1 : 0));
    const masked = values.map((v, i) => ((i % cols) % 2 === 0 ? v : -Infinity));
    const want = topkReference(masked, cols, 3, true).map((v) => (v === -Infinity ? 0 : v));
    const gotMasked = await topkPerRowMasked(
      t,
      gpu.upload(mask),
      k,
      gpu.upload(new Float32Array([3])),
    )
      .read();
    assertClose(gotMasked, want, { what: "masked rows" });
  });
});

Deno.test("chunked Adam and grad clipping match the reference", gpuTest, async () => {
  const gpu = await testGpu();
  const [rows, cols] = [37, 53];
  const p0 = randomArray(rows * cols, 5), g0 = randomArray(rows * cols, 6);
  const [beta1, beta2, eps, lr] = [0.9, 0.999, 1e-8, 0.01];
  await withBindingLimit(gpu, SMALL, async () => {
    const p = gpu.upload(p0, [rows, cols]);
    const g = gpu.upload(g0, [rows, cols]);
    const adam = new Adam({ w: p }, { beta1, beta2, eps });
    const clip = clipCoefficient([g], 1);
    applyClip([g], clip);
    const [norm, scale] = await clip.read();
    const wantNorm = Math.sqrt(g0.reduce((s, x) => s + x * x, 0));
    assertClose([norm, scale], [wantNorm, Math.min(1, 1 / (wantNorm + 1e-6))], {
      rtol: 1e-4,
      what: "clip",
    });
    const gClipped = g0.map((x) => f(x * scale));
    assertClose(await g.read(), gClipped, { what: "clipped grads" });
    adam.update({ w: g }, lr);
    const want = p0.map((x, i) => {
      const m = (1 - beta1) * gClipped[i], v = (1 - beta2) * gClipped[i] ** 2;
      return x - (lr / (1 - beta1)) * m / (Math.sqrt(v) / Math.sqrt(1 - beta2) + eps);
    });
    assertClose(await p.read(), want, { rtol: 1e-4, atol: 1e-6, what: "adam params" });
  });
});

Deno.test(
  "chunked Lp-norm backward and BatchTopK threshold match the reference",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const [rows, cols, p] = [37, 53, 1.5];
    const v = randomArray(rows * cols, 7);
    const norms = randomArray(rows, 8, 0.5, 2);
    await withBindingLimit(gpu, SMALL, async () => {
      const got = await rowLpNormsBackward(gpu.upload(v, [rows, cols]), gpu.upload(norms), p, 0.5)
        .read();
      const want = v.map((x, i) =>
        0.5 * Math.sign(x) * Math.abs(x) ** (p - 1) / norms[Math.floor(i / cols)] ** (p - 1)
      );
      assertClose(got, want, { rtol: 1e-4, atol: 1e-6, what: "lp backward" });
      const acts = v.map((x) => Math.max(x, 0));
      const threshold = gpu.upload(new Float32Array([0.5]));
      updateTopkThreshold(gpu.upload(acts), threshold, 0.1);
      const min = Math.min(...acts.filter((x) => x > 0));
      assertClose(await threshold.read(), [0.9 * 0.5 + 0.1 * min], { what: "threshold" });
      updateTopkThreshold(gpu.zeros([rows * cols]), threshold, 0.1);
      assertClose(await threshold.read(), [0.9 * 0.5 + 0.1 * min], { what: "unchanged threshold" });
    });
  },
);

Deno.test(
  "chunked feature counters and row statistics equal the unchunked kernels",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const [rows, dIn, dSae] = [29, 12, 75];
    const next = rng(9);
    const acts = Float32Array.from(
      { length: rows * dSae },
      (_, i) => i % dSae % 5 === 0 || next() < 0.8 ? 0 : next(),
    );
    const x = randomArray(rows * dIn, 10), out = randomArray(rows * dIn, 11);
    const xMean = randomArray(dIn, 12);
    const actFreq = Float32Array.from({ length: dSae }, () => Math.floor(next() * 9));
    const passes = Float32Array.from({ length: dSae }, () => Math.floor(next() * 6));
    const run = async (reset: boolean) => {
      const counters: FeatureCounters = {
        actFreqScores: gpu.upload(actFreq),
        passesSinceFired: gpu.upload(passes),
        deadMask: gpu.zeros([dSae]),
      };
      const a = gpu.upload(acts, [rows, dSae]);
      updateFeatureCounters({ featureActs: a }, counters, 3, reset);
      const stats = rowStatistics(
        gpu.upload(x, [rows, dIn]),
        gpu.upload(out, [rows, dIn]),
        gpu.upload(xMean),
        a,
      );
      return await gpu.readMany([
        counters.actFreqScores,
        counters.passesSinceFired,
        counters.deadMask,
        stats,
      ]);
    };
    for (const reset of [false, true]) {
      const want = await run(reset);
      const got = await withBindingLimit(gpu, 1024, () => run(reset));
      ["act_freq", "passes", "dead", "row stats"].forEach((what, i) =>
        assertClose(got[i], want[i], { rtol: 0, atol: 0, what: `${what} (reset ${reset})` })
      );
    }
  },
);

Deno.test(
  "chunked JumpReLU forward and backward equal the unchunked kernels",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const [rows, cols] = [37, 53];
    const h = randomArray(rows * cols, 13, -0.5, 1.5);
    const t = randomArray(cols, 14, 0.05, 0.6);
    const n = randomArray(cols, 15, 0.5, 2);
    const dead = Float32Array.from({ length: cols }, (_, j) => (j % 3 === 0 ? 1 : 0));
    const g = randomArray(rows * cols, 16);
    const dLogT = randomArray(cols, 17);
    for (const mode of ["step", "tanh"] as const) {
      const options = { bandwidth: 0.1, mode, l0Scale: 0.3, tanhScale: 2, preActScale: 0.2 };
      const run = async () => {
        const th = gpu.upload(h, [rows, cols]);
        const tt = gpu.upload(t);
        const forward = jumpReluForward(th, tt);
        const grad = gpu.upload(g, [rows, cols]);
        const dLog = gpu.upload(dLogT);
        const back = jumpReluBackward(th, tt, gpu.upload(n), gpu.upload(dead), grad, dLog, options);
        return await gpu.readMany([forward, grad, dLog, back.dNorms, back.l0Loss, back.preActLoss]);
      };
      const want = await run();
      const got = await withBindingLimit(gpu, SMALL, run);
      const what = ["forward", "dh", "d_log_t", "d_norms", "l0", "pre_act"];
      what.forEach((name, i) =>
        assertClose(got[i], want[i], { rtol: 1e-5, atol: 1e-6, what: `${name} (${mode})` })
      );
    }
  },
);
