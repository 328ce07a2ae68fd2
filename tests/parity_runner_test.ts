/**
 * The parity runner on other fixture directories: a perturbed copy of a SAELens case must fail
 * (the checks can fail), an unknown kind is a failure, and --json has the documented shape.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runParity } from "../parity/main.ts";
import { readSafetensors, serializeSafetensors, toFloat32 } from "../src/io/safetensors.ts";
import { gpuTest } from "./helpers.ts";

const source = "fixtures/saelens";

/** Writes a fixture dir with one copy of `id`, its tensor `tensor` multiplied by `factor`. */
async function perturbedCopy(
  id: string,
  tensor: string,
  factor: number,
  kind?: string,
): Promise<string> {
  const manifest = JSON.parse(await Deno.readTextFile(join(source, "manifest.json")));
  const c = manifest.cases.find((x: { id: string }) => x.id === id);
  const { tensors, metadata } = await readSafetensors(join(source, c.file));
  const out = [...tensors.values()].map((t) => {
    const data = t.dtype === "float32" ? toFloat32(t) : t.data;
    if (t.name === tensor) (data as Float32Array).forEach((v, i, a) => (a[i] = v * factor));
    return { name: t.name, dtype: t.dtype, shape: t.shape, data };
  });
  const dir = await Deno.makeTempDir();
  await Deno.writeFile(join(dir, c.file), serializeSafetensors(out, metadata));
  await Deno.writeTextFile(
    join(dir, "manifest.json"),
    JSON.stringify({ ...manifest, cases: [{ ...c, kind: kind ?? c.kind }] }),
  );
  return dir;
}

Deno.test(
  "a 1% change in one stored tensor fails its case; the unchanged copy passes",
  gpuTest,
  async () => {
    const [ok] = await runParity(await perturbedCopy("topk-step-rescale", "loss.total", 1));
    assert.equal(ok.passed, true, ok.error ?? "");
    const [bad] = await runParity(await perturbedCopy("topk-step-rescale", "grad.W_enc", 1.01));
    assert.equal(bad.passed, false);
    assert.match(bad.error!, /grad\.W_enc/);
  },
);

Deno.test("a kind the runner does not implement is a failure, never a skip", gpuTest, async () => {
  const [report] = await runParity(
    await perturbedCopy("schedule-cosine-plain", "trace.lr", 1, "telepathy"),
  );
  assert.equal(report.passed, false);
  assert.match(report.error!, /kind "telepathy" not implemented/);
});

Deno.test(
  "deno task parity --json writes the documented report and exits non-zero on failure",
  gpuTest,
  async () => {
    const dir = await perturbedCopy("schedule-cosine-plain", "trace.lr", 1.5);
    const json = join(dir, "report.json");
    const { code } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "parity/main.ts", "--fixtures", dir, "--json", json],
      stdout: "null",
      stderr: "null",
    }).output();
    assert.equal(code, 1);
    const report = JSON.parse(await Deno.readTextFile(json));
    const [c] = report.cases;
    assert.deepEqual(
      Object.keys(c).filter((k) =>
        ["id", "kind", "architecture", "passed", "compared", "worst"].includes(k)
      ).sort(),
      ["architecture", "compared", "id", "kind", "passed", "worst"],
    );
    assert.equal(c.passed, false);
    assert.ok(c.compared.includes("trace.lr"));
    assert.deepEqual(Object.keys(c.worst).sort(), ["abs", "rel", "tensor"]);
  },
);
