import assert from "node:assert/strict";
import { mergeBaselines, type TorchBaseline } from "../bench/baseline.ts";

const run = (arch: string, tokens: number): TorchBaseline => ({
  available: true,
  python: "/usr/bin/python3",
  torch_version: "1.13",
  results: [{ arch, batch: 8, d_in: 4, d_sae: 16, k: 2, tokens_per_s: tokens, ms_per_step: 1 }],
});

Deno.test("per-architecture baseline runs merge into one report, unavailable runs left out", () => {
  const skipped: TorchBaseline = { available: false, reason: "not implemented", results: [] };
  const merged = mergeBaselines([run("topk", 10), skipped, run("gated", 20)]);
  assert.equal(merged.available, true);
  assert.equal(merged.python, "/usr/bin/python3");
  assert.deepEqual(merged.results.map((r) => [r.arch, r.tokens_per_s]), [["topk", 10], [
    "gated",
    20,
  ]]);
  assert.deepEqual(mergeBaselines([skipped]), skipped);
  assert.equal(mergeBaselines([]).available, false);
});
