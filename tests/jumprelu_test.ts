import {
  jumpReluBackward,
  jumpReluForward,
  jumpReluForwardWithSupport,
  type JumpReluLossOptions,
} from "../src/kernels/jumprelu.ts";
import { compressSelection } from "../src/kernels/sparse.ts";
import { assertClose, gpuTest, randomArray, rng, testGpu } from "./helpers.ts";

const f = Math.fround;
const rect = (z: number) => (z > -0.5 && z < 0.5 ? 1 : 0);

/** Pre-activations around the thresholds, a few far above (large tanh arguments) and exact ties. */
function inputs(rows: number, cols: number, seed: number) {
  const h = randomArray(rows * cols, seed, -0.4, 0.7);
  const t = randomArray(cols, seed + 1, 0.05, 0.4);
  for (let i = 0; i < h.length; i += 97) h[i] = 30;
  for (let i = 5; i < h.length; i += 89) h[i] = t[i % cols];
  const norms = randomArray(cols, seed + 2, 0.5, 1.5);
  const next = rng(seed + 3);
  const dead = Float32Array.from({ length: cols }, () => (next() < 0.4 ? 1 : 0));
  const g = randomArray(rows * cols, seed + 4, -0.05, 0.05);
  const dLogT = randomArray(cols, seed + 5);
  return { h, t, norms, dead, g, dLogT };
}

/** Plain-TypeScript JumpReLU losses and gradients, element by element (SAELens semantics). */
function reference(
  { h, t, norms, dead, g, dLogT }: ReturnType<typeof inputs>,
  rows: number,
  cols: number,
  o: JumpReluLossOptions,
) {
  const dh = new Float64Array(rows * cols);
  const dLog = Float64Array.from(dLogT);
  const dNorms = new Float64Array(cols);
  let l0 = 0, pre = 0;
  const bw = o.bandwidth, pc = o.preActScale ?? 0;
  for (let c = 0; c < cols; c++) {
    let dt = 0;
    for (let r = 0; r < rows; r++) {
      const i = r * cols + c, x = h[i], on = x > t[c];
      const fx = on ? x : 0;
      let gv = g[i];
      if (o.mode === "tanh") {
        const th = Math.tanh(o.tanhScale * fx * norms[c]);
        l0 += o.l0Scale * th;
        gv += o.l0Scale * o.tanhScale * norms[c] * (1 - th * th);
        dNorms[c] += o.l0Scale * o.tanhScale * fx * (1 - th * th);
      } else {
        l0 += o.l0Scale * (on ? 1 : 0);
        dt += -(1 / bw) * rect(f(f(x - t[c]) / bw)) * o.l0Scale;
      }
      dt += -(t[c] / bw) * rect(f(f(x - t[c]) / bw)) * gv;
      dh[i] = on ? gv : 0;
      if (o.preActScale !== null && t[c] - x > 0) {
        pre += pc * (t[c] - x) * dead[c] * norms[c];
        dh[i] -= pc * dead[c] * norms[c];
        dt += pc * dead[c] * norms[c];
        dNorms[c] += pc * (t[c] - x) * dead[c];
      }
    }
    dLog[c] += dt * t[c];
  }
  return { dh, dLog, dNorms, l0, pre };
}

Deno.test("jumpReluForward keeps h where h > t (strictly), per column", gpuTest, async () => {
  const gpu = await testGpu();
  // [1100, 4096] reads h in two staging runs, the second starting mid-row.
  for (const [rows, cols] of [[1, 1], [7, 300], [33, 129], [1100, 4096]]) {
    const { h, t } = inputs(rows, cols, rows + cols);
    const got = await jumpReluForward(gpu.upload(h, [rows, cols]), gpu.upload(t)).read();
    const ref = h.map((x, i) => (x > t[i % cols] ? x : 0));
    assertClose(got, ref, { rtol: 0, atol: 0, what: `forward ${rows}x${cols}` });
  }
});

Deno.test(
  "jumpReluForwardWithSupport also marks h > t and the threshold's bandwidth window, per column",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const bandwidth = 0.5;
    for (const [rows, cols] of [[1, 1], [7, 300], [33, 129], [1100, 4096]]) {
      const { h, t } = inputs(rows, cols, rows + cols + 1);
      const out = jumpReluForwardWithSupport(gpu.upload(h, [rows, cols]), gpu.upload(t), bandwidth);
      const [acts, support] = await gpu.readMany([out.acts, out.support]);
      const ref = h.map((x, i) => {
        const z = f(f(x - t[i % cols]) / bandwidth);
        return x > t[i % cols] || (z > -0.5 && z < 0.5) ? 1 : 0;
      });
      assertClose(support, ref, { rtol: 0, atol: 0, what: `support ${rows}x${cols}` });
      const kept = h.map((x, i) => (x > t[i % cols] ? x : 0));
      assertClose(acts, kept, { rtol: 0, atol: 0, what: `forward ${rows}x${cols}` });
    }
  },
);

for (const mode of ["step", "tanh"] as const) {
  for (const preAct of [null, 0.3]) {
    Deno.test(
      `jumpReluBackward matches the reference (${mode}, pre_act ${preAct})`,
      gpuTest,
      async () => {
        const gpu = await testGpu();
        for (const [rows, cols] of [[1, 3], [16, 64], [37, 300]]) {
          const data = inputs(rows, cols, rows * 31 + cols);
          const o: JumpReluLossOptions = {
            bandwidth: 0.2,
            mode,
            l0Scale: f(0.05 / rows),
            // small arguments exercise tanh's series branch
            tanhScale: rows === 16 ? 0.002 : 2.5,
            preActScale: preAct === null ? null : f(preAct / rows),
          };
          const grad = gpu.upload(data.g, [rows, cols]);
          const dLogT = gpu.upload(data.dLogT);
          const out = jumpReluBackward(
            gpu.upload(data.h, [rows, cols]),
            gpu.upload(data.t),
            gpu.upload(data.norms),
            gpu.upload(data.dead),
            grad,
            dLogT,
            o,
          );
          const [dh, dLog, dNorms, l0, pre] = await gpu.readMany([
            grad,
            dLogT,
            out.dNorms,
            out.l0Loss,
            out.preActLoss,
          ]);
          const ref = reference(data, rows, cols, o);
          const what = `${mode}/${preAct} ${rows}x${cols}`;
          assertClose(dh, ref.dh, { rtol: 1e-5, atol: 1e-8, what: `${what} dh` });
          assertClose(dLog, ref.dLog, { rtol: 1e-5, atol: 1e-6, what: `${what} dlog_t` });
          assertClose(dNorms, ref.dNorms, { rtol: 1e-5, atol: 1e-7, what: `${what} dnorms` });
          assertClose(l0, [ref.l0], { rtol: 1e-5, atol: 1e-7, what: `${what} l0` });
          assertClose(pre, [ref.pre], { rtol: 1e-5, atol: 1e-7, what: `${what} pre_act` });
        }
      },
    );
  }
}

for (const mode of ["step", "tanh"] as const) {
  Deno.test(
    `jumpReluBackward over the support's latent lists equals the dense walk bit for bit (${mode})`,
    gpuTest,
    async () => {
      const gpu = await testGpu();
      for (const [rows, cols] of [[1, 3], [16, 64], [37, 300]]) {
        const data = inputs(rows, cols, rows * 17 + cols);
        const o: JumpReluLossOptions = {
          bandwidth: 0.2,
          mode,
          l0Scale: f(0.05 / rows),
          tanhScale: 2.5,
          preActScale: null,
        };
        const h = gpu.upload(data.h, [rows, cols]);
        const t = gpu.upload(data.t);
        const { support } = jumpReluForwardWithSupport(h, t, o.bandwidth);
        // The sparse step's dL/df: the reconstruction's gradient on the support, zero elsewhere.
        const supportMask = await support.read();
        const g = data.g.map((v, i) => (supportMask[i] ? v : 0));
        const run = async (lists: boolean) => {
          const grad = gpu.upload(g, [rows, cols]);
          const dLogT = gpu.upload(data.dLogT);
          const byLatent = lists ? compressSelection(support).byLatent : undefined;
          const norms = gpu.upload(data.norms);
          const dead = gpu.upload(data.dead);
          const out = jumpReluBackward(h, t, norms, dead, grad, dLogT, o, byLatent);
          return await gpu.readMany([grad, dLogT, out.dNorms, out.l0Loss]);
        };
        const [dense, listed] = [await run(false), await run(true)];
        ["dh", "dlog_t", "dnorms", "l0"].forEach((name, k) =>
          assertClose(listed[k], dense[k], { rtol: 0, atol: 0, what: `${rows}x${cols} ${name}` })
        );
      }
    },
  );
}
