import assert from "node:assert/strict";
import { binary, unary } from "../src/kernels/elementwise.ts";
import { gpuTest, randomArray, testGpu } from "./helpers.ts";

Deno.test(
  "pass timing counts every timed dispatch per kernel, past one query set",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const a = gpu.upload(randomArray(4096, 1)), b = gpu.upload(randomArray(4096, 2));
    gpu.startPassTiming();
    // 2100 dispatches: more than one query set holds (2048 passes).
    for (let i = 0; i < 1050; i++) {
      unary("relu", a, { out: a });
      binary("add", a, b, "full", { out: a });
    }
    const times = await gpu.stopPassTiming();
    const byLabel = Object.fromEntries(times.map((t) => [t.label, t]));
    assert.equal(byLabel["unary:staged4"]?.calls, 1050);
    assert.equal(byLabel["binary:staged4"]?.calls, 1050);
    for (const t of times) assert.ok(t.ms >= 0 && Number.isFinite(t.ms), `${t.label}: ${t.ms} ms`);
    // Timing stopped: later dispatches are not counted.
    unary("relu", a, { out: a });
    assert.deepEqual(await gpu.stopPassTiming(), []);
  },
);
