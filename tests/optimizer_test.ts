import assert from "node:assert/strict";
import { updateTopkThreshold } from "../src/kernels/batchtopk.ts";
import { rowLpNorms, rowLpNormsBackward } from "../src/kernels/lp_norm.ts";
import { Adam, applyClip, clipCoefficient } from "../src/train/optimizer.ts";
import { assertClose, gpuTest, randomArray, testGpu } from "./helpers.ts";

const f = Math.fround;

Deno.test(
  "Adam matches torch's single-tensor update over three steps (staged vec4 and scalar kernels)",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const [beta1, beta2, eps] = [0.9, 0.999, 1e-8];
    // 1000 values take the four-per-invocation kernel, 1001 the scalar one. 4·flatWidth + 1000
    // values stage as whole texture rows plus a partial row. With 1 KiB bindings, 1000 values
    // run in four pieces (256 values each, the last 232), each staged from its own offset.
    const cases = [
      { n: 1000 },
      { n: 1001 },
      { n: 4 * gpu.flatWidth + 1000 },
      { n: 1000, bindingBytes: 1024 },
    ];
    for (const { n, bindingBytes } of cases) {
      gpu.maxBindingOverride = bindingBytes;
      const p0 = randomArray(n, 1);
      const param = gpu.upload(p0);
      const adam = new Adam({ w: param }, { beta1, beta2 });
      const ref = { p: Float64Array.from(p0), m: new Float64Array(n), v: new Float64Array(n) };
      for (let t = 1; t <= 3; t++) {
        const g = randomArray(n, 10 + t);
        const lr = 1e-3 * t;
        adam.update({ w: gpu.upload(g) }, lr);
        const stepSize = lr / (1 - beta1 ** t), bc2 = Math.sqrt(1 - beta2 ** t);
        for (let i = 0; i < n; i++) {
          ref.m[i] = f(f(ref.m[i] * f(beta1)) + f(f(1 - beta1) * g[i]));
          ref.v[i] = f(f(ref.v[i] * f(beta2)) + f(f(f(1 - beta2) * g[i]) * g[i]));
          const denom = f(f(Math.sqrt(ref.v[i]) / f(bc2)) + f(eps));
          ref.p[i] = f(ref.p[i] - f(f(stepSize) * f(ref.m[i] / denom)));
        }
      }
      gpu.maxBindingOverride = undefined;
      const what = `n ${n}${bindingBytes ? `, ${bindingBytes}-byte bindings` : ""}`;
      assertClose(await param.read(), ref.p, { rtol: 1e-6, atol: 1e-9, what: `param ${what}` });
      assertClose(await adam.expAvg.w.read(), ref.m, { rtol: 1e-6, atol: 0, what: `m ${what}` });
      // 1 − β₂ must be f32(0.001), not f32(1 − f32(0.999)) (1.3e-5 off, which moves long runs).
      assertClose(await adam.expAvgSq.w.read(), ref.v, { rtol: 1e-6, atol: 0, what: `v ${what}` });
      assert.equal(adam.step, 3);
    }
  },
);

Deno.test(
  "global grad-norm clipping scales every gradient by min(1, max/(norm+1e-6))",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    for (const scale of [0.01, 5]) {
      const grads = [randomArray(37, 1), randomArray(1000, 2), randomArray(1, 3)].map((g) =>
        g.map((v) => v * scale)
      );
      const norm = Math.sqrt(grads.flatMap((g) => [...g]).reduce((a, v) => a + v * v, 0));
      const coef = Math.min(1, 1 / (norm + 1e-6));
      const tensors = grads.map((g) => gpu.upload(g));
      const clip = clipCoefficient(tensors, 1);
      applyClip(tensors, clip);
      const [gotNorm, gotCoef] = await clip.read();
      assertClose([gotNorm, gotCoef], [norm, coef], { rtol: 1e-5, atol: 0, what: "norm, scale" });
      for (let i = 0; i < grads.length; i++) {
        assertClose(await tensors[i].read(), grads[i].map((v) => v * coef), {
          rtol: 1e-5,
          atol: 1e-9,
          what: `grad ${i}`,
        });
      }
    }
  },
);

Deno.test(
  "row Lp norms and their gradient match the reference (p = 1, 2, 1.5; zero rows)",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const [rows, cols] = [9, 301];
    const v = randomArray(rows * cols, 4, -1, 1);
    v.fill(0, 2 * cols, 3 * cols); // an all-zero row: gradient 0, not NaN
    for (const p of [1, 2, 1.5]) {
      const norms = Array.from({ length: rows }, (_, r) => {
        let s = 0;
        for (let j = 0; j < cols; j++) s += Math.abs(v[r * cols + j]) ** p;
        return s ** (1 / p);
      });
      const t = gpu.upload(v, [rows, cols]);
      const gotNorms = rowLpNorms(t, p);
      assertClose(await gotNorms.read(), norms, { rtol: 1e-5, atol: 1e-6, what: `norms p=${p}` });
      const grad = Array.from(v, (x, i) => {
        const n = norms[Math.floor(i / cols)];
        if (p === 1) return 0.5 * Math.sign(x);
        return n > 0 ? (0.5 * Math.sign(x) * Math.abs(x) ** (p - 1)) / n ** (p - 1) : 0;
      });
      assertClose(await rowLpNormsBackward(t, gotNorms, p, 0.5).read(), grad, {
        rtol: 1e-4,
        atol: 1e-6,
        what: `grad p=${p}`,
      });
    }
  },
);

Deno.test(
  "BatchTopK threshold EMA uses the smallest positive activation; unchanged when none fire",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const acts = randomArray(5000, 8, -1, 1).map((v) => Math.max(v, 0));
    const min = Math.min(...acts.filter((v) => v > 0));
    const threshold = gpu.upload(Float32Array.of(0.3));
    updateTopkThreshold(gpu.upload(acts), threshold, 0.05);
    assertClose(await threshold.read(), [0.95 * 0.3 + 0.05 * min], { rtol: 1e-6, atol: 0 });
    updateTopkThreshold(gpu.zeros([100]), threshold, 0.05);
    assertClose(await threshold.read(), [0.95 * 0.3 + 0.05 * min], {
      rtol: 1e-6,
      atol: 0,
      what: "no positive acts",
    });
    // Past one workgroup's 16384 values: the smallest one sits in the third workgroup's range.
    const many = randomArray(40000, 9, 0.5, 1);
    many[35000] = 0.01;
    const t2 = gpu.upload(Float32Array.of(0.3));
    updateTopkThreshold(gpu.upload(many), t2, 0.05);
    assertClose(await t2.read(), [0.95 * 0.3 + 0.05 * f(0.01)], {
      rtol: 1e-6,
      atol: 0,
      what: "partial minima",
    });
  },
);

Deno.test(
  "Adam with the clip coefficient equals clipping in place, then Adam (bit for bit)",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const p0 = randomArray(777, 21), g0 = randomArray(777, 22, -40, 40);
    const fused = { p: gpu.upload(p0), g: gpu.upload(g0) };
    const inPlace = { p: gpu.upload(p0), g: gpu.upload(g0) };
    const adamFused = new Adam({ w: fused.p }, { beta1: 0.9, beta2: 0.999 });
    const adamInPlace = new Adam({ w: inPlace.p }, { beta1: 0.9, beta2: 0.999 });
    const clip = clipCoefficient([fused.g], 1);
    const [, scale] = await clip.read();
    if (!(scale < 1)) throw new Error(`the test needs clipping to happen (scale ${scale})`);
    adamFused.update({ w: fused.g }, 1e-2, clip);
    applyClip([inPlace.g], clipCoefficient([inPlace.g], 1));
    adamInPlace.update({ w: inPlace.g }, 1e-2);
    assertClose(await fused.p.read(), await inPlace.p.read(), { rtol: 0, atol: 0, what: "param" });
    assertClose(await adamFused.expAvgSq.w.read(), await adamInPlace.expAvgSq.w.read(), {
      rtol: 0,
      atol: 0,
      what: "exp_avg_sq",
    });
  },
);
