/**
 * The language-model hook path on the committed tiny GPT-2 fixture (fixtures/tiny-gpt2, random
 * weights, made by its make_fixture.sh): tokenizer ids equal an independent GPT-2 BPE
 * (gpt-3-encoder), the residual stream is found by graph structure, and the patched ONNX's
 * hook-point activations equal the torch reference; bad model files fail naming the file.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readSafetensors, type TensorEntry, toFloat32 } from "../src/io/safetensors.ts";
import { findResidualStream, hookNames, patchForHook } from "../src/lm/hook_points.ts";
import { HookedLm, LmTokenizer, ModelLoadError } from "../src/lm/model.ts";
import { OnnxError, parseOnnxModel, rewriteOnnxModel } from "../src/lm/onnx.ts";

const DIR = "fixtures/tiny-gpt2";
const ONNX = join(DIR, "onnx", "model.onnx");
/** onnxruntime keeps native handles and timers; the sanitizers would flag them. */
const lmTest = { sanitizeOps: false, sanitizeResources: false } as const;

const ref = await readSafetensors(join(DIR, "reference.safetensors"));
const texts: string[] = JSON.parse(ref.metadata.texts);
const tensor = (name: string): TensorEntry => {
  const t = ref.tensors.get(name);
  if (!t) throw new Error(`reference.safetensors has no ${name}`);
  return t;
};
const ids = (i: number) => Array.from(toFloat32(tensor(`text${i}.input_ids`)));

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

Deno.test(
  "tokenizer: GPT-2 BPE ids equal gpt-3-encoder's for every reference text",
  lmTest,
  async () => {
    const tok = await LmTokenizer.load(DIR);
    assert.equal(tok.bosTokenId, 50256);
    assert.deepEqual(tok.specialTokenIds, [50256]);
    assert.equal(tok.vocabSize, 50257);
    for (let i = 0; i < texts.length; i++) {
      assert.deepEqual([50256, ...tok.encode(texts[i])], ids(i), `text ${i}`);
    }
  },
);

Deno.test("onnx: an unedited rewrite reproduces the file byte for byte", () => {
  const bytes = Deno.readFileSync(ONNX);
  const model = parseOnnxModel(bytes, ONNX);
  assert.equal(model.graph.inputs.join(","), "input_ids,attention_mask");
  assert.equal(model.graph.outputs.join(","), "logits");
  const again = rewriteOnnxModel(model, { outputs: [], keepExistingOutputs: true });
  assert.equal(again.length, bytes.length);
  assert.ok(again.every((b, i) => b === bytes[i]));
});

Deno.test("onnx: the residual stream is found by structure: 2 adds per block, 5 values", () => {
  const model = parseOnnxModel(Deno.readFileSync(ONNX), ONNX);
  const stream = findResidualStream(model.graph, 2, ONNX);
  assert.equal(stream.addsPerBlock, 2);
  assert.equal(stream.values.length, 5);
  assert.deepEqual(hookNames(stream), [
    "blocks.0.hook_resid_pre",
    "blocks.0.hook_resid_mid",
    "blocks.0.hook_resid_post",
    "blocks.1.hook_resid_pre",
    "blocks.1.hook_resid_mid",
    "blocks.1.hook_resid_post",
  ]);
  // A wrong n_layer cannot be matched to the chain.
  assert.throws(() => findResidualStream(model.graph, 3, ONNX), /multiple of n_layer = 3/);
  // Pruning keeps only what the hook needs: block 0's output needs no block 1 and no LM head.
  const early = patchForHook(model, 2, "blocks.0.hook_resid_post", { dModel: 64 });
  const late = patchForHook(model, 2, "blocks.1.hook_resid_post", { dModel: 64 });
  assert.ok(early.nodeCount.after < late.nodeCount.after);
  assert.ok(late.nodeCount.after < late.nodeCount.before);
});

Deno.test("hook points of the patched ONNX equal the torch reference (1e-4)", lmTest, async () => {
  for (const layer of [0, 1]) {
    for (const kind of ["pre", "mid", "post"]) {
      const hookName = `blocks.${layer}.hook_resid_${kind}`;
      const lm = await HookedLm.load(DIR, { hookName, threads: 1 });
      for (let i = 0; i < texts.length; i++) {
        const seq = ids(i);
        const acts = await lm.run(seq, 1, seq.length);
        const diff = maxAbsDiff(acts, toFloat32(tensor(`text${i}.${hookName}`)));
        assert.ok(diff <= 1e-4, `${hookName}, text ${i}: max |diff| ${diff}`);
      }
      // Batched: texts 0 and 1 cut to 20 tokens, one forward pass; causal, so prefixes match.
      const T = 20, d = 64;
      const batch = [...ids(0).slice(0, T), ...ids(1).slice(0, T)];
      const acts = await lm.run(batch, 2, T);
      for (const i of [0, 1]) {
        const expected = toFloat32(tensor(`text${i}.${hookName}`)).subarray(0, T * d);
        const diff = maxAbsDiff(acts.subarray(i * T * d, (i + 1) * T * d), expected);
        assert.ok(diff <= 1e-4, `${hookName}, batched text ${i}: max |diff| ${diff}`);
      }
      await lm.dispose();
    }
  }
});

Deno.test("the unpruned patched model still gives the torch logits", lmTest, async () => {
  const { loadTransformers } = await import("../src/lm/model.ts");
  const t = await loadTransformers();
  const model = await t.AutoModelForCausalLM.from_pretrained(Deno.realPathSync(DIR), {
    local_files_only: true,
    dtype: "fp32",
  });
  const seq = ids(0);
  const out = await model({
    input_ids: new t.Tensor("int64", BigInt64Array.from(seq.map(BigInt)), [1, seq.length]),
    attention_mask: new t.Tensor("int64", new BigInt64Array(seq.length).fill(1n), [1, seq.length]),
  });
  const V = 50257;
  const last = (out.logits.data as Float32Array).subarray((seq.length - 1) * V);
  const diff = maxAbsDiff(last, toFloat32(tensor("text0.logits_last")));
  assert.ok(diff <= 1e-4, `logits: max |diff| ${diff}`);
  await model.dispose();
});

async function copyFixture(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "lm-test-" });
  await Deno.mkdir(join(dir, "onnx"));
  for (const f of ["config.json", "tokenizer.json", "tokenizer_config.json", "onnx/model.onnx"]) {
    await Deno.copyFile(join(DIR, f), join(dir, f));
  }
  return dir;
}

Deno.test("missing and corrupt model files give errors naming the file", lmTest, async () => {
  const hook = { hookName: "blocks.0.hook_resid_post" };
  await assert.rejects(
    HookedLm.load("fixtures/no-such-model", hook),
    (e: Error) =>
      e instanceof ModelLoadError && /no-such-model: model directory not found/.test(e.message),
  );
  const dir = await copyFixture();
  try {
    await Deno.remove(join(dir, "onnx", "model.onnx"));
    await assert.rejects(
      HookedLm.load(dir, hook),
      (e: Error) =>
        e instanceof ModelLoadError && e.message.includes(join(dir, "onnx", "model.onnx")),
    );
    // Truncated ONNX: the protobuf reader names the file and says it is corrupt.
    const bytes = Deno.readFileSync(ONNX);
    await Deno.writeFile(join(dir, "onnx", "model.onnx"), bytes.subarray(0, bytes.length >> 1));
    await assert.rejects(
      HookedLm.load(dir, hook),
      (e: Error) =>
        e instanceof OnnxError && e.message.includes("model.onnx") && /corrupt/.test(e.message),
    );
    await Deno.writeFile(
      join(dir, "onnx", "model.onnx"),
      new TextEncoder().encode("not a model at all"),
    );
    await assert.rejects(
      HookedLm.load(dir, hook),
      (e: Error) => e instanceof OnnxError && e.message.includes("model.onnx"),
    );
    await Deno.copyFile(ONNX, join(dir, "onnx", "model.onnx"));
    // config.json: invalid JSON, then no layer count.
    await Deno.writeTextFile(join(dir, "config.json"), "{ nope");
    await assert.rejects(HookedLm.load(dir, hook), /config\.json: not valid JSON/);
    await Deno.writeTextFile(
      join(dir, "config.json"),
      JSON.stringify({ model_type: "gpt2", n_embd: 64 }),
    );
    await assert.rejects(
      HookedLm.load(dir, hook),
      /config\.json: needs one of "n_layer", "num_hidden_layers"/,
    );
    await Deno.copyFile(join(DIR, "config.json"), join(dir, "config.json"));
    // Hook names: out of range, unsupported.
    await assert.rejects(
      HookedLm.load(dir, { hookName: "blocks.2.hook_resid_post" }),
      /has 2 blocks \(0\.\.1\)/,
    );
    await assert.rejects(
      HookedLm.load(dir, { hookName: "blocks.0.attn.hook_z" }),
      /is not supported/,
    );
    // Tokenizer file corrupt.
    await Deno.writeTextFile(join(dir, "tokenizer.json"), "{");
    await assert.rejects(LmTokenizer.load(dir), /tokenizer\.json: not valid JSON/);
    await Deno.remove(join(dir, "tokenizer.json"));
    await assert.rejects(LmTokenizer.load(dir), /tokenizer\.json: missing/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
