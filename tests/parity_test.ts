/**
 * Every fixture case of a kind this implementation checks must pass at the manifest tolerance
 * (one test per case). `deno task parity` runs all cases, unimplemented kinds included.
 */
import { implementedKinds, runCase } from "../parity/main.ts";
import type { Manifest } from "../parity/fixtures.ts";
import { gpuTest, testGpu } from "./helpers.ts";

const dir = "fixtures/saelens";
const manifest: Manifest = JSON.parse(Deno.readTextFileSync(`${dir}/manifest.json`));
const kinds = new Set(implementedKinds());

for (const c of manifest.cases.filter((c) => kinds.has(c.kind))) {
  Deno.test(`parity ${c.kind} ${c.id}`, gpuTest, async () => {
    const report = await runCase(testGpu, dir, c);
    if (!report.passed) throw new Error(`${c.id}: ${report.error}`);
  });
}
