import assert from "node:assert/strict";
import { ARCHITECTURES } from "../src/config/sae.ts";
import { architectureNames, getArchitecture } from "../src/saes/registry.ts";

Deno.test("every SAELens v6 architecture the config accepts has an implementation, and only those plus standard_v5", () => {
  assert.deepEqual([...architectureNames()].sort(), [...ARCHITECTURES, "standard_v5"].sort());
});

Deno.test("an unknown architecture names the registered ones", () => {
  assert.throws(
    () => getArchitecture("resnet"),
    /unknown architecture "resnet"; registered: .*topk/,
  );
});
