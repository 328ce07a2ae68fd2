import assert from "node:assert/strict";
import {
  dtypeSize,
  parseSafetensors,
  readSafetensors,
  SafetensorsError,
  serializeSafetensors,
  toFloat32,
  toFloat64,
  writeSafetensorsAtomic,
} from "../src/io/safetensors.ts";

const FIX = new URL("../fixtures/saelens/", import.meta.url);

/** Build a file from a raw header object (or string) and data bytes, bypassing the writer. */
function rawFile(header: unknown, data = new Uint8Array(0), lenOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(
    typeof header === "string" ? header : JSON.stringify(header),
  );
  const out = new Uint8Array(8 + json.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, lenOverride ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(data, 8 + json.byteLength);
  return out;
}

function assertBad(bytes: Uint8Array, ...parts: string[]) {
  assert.throws(() => parseSafetensors(bytes, "bad.safetensors"), (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${e}`);
    for (const p of ["bad.safetensors", "Re-create the file", ...parts]) {
      assert.ok(
        e.message.includes(p),
        `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(p)}`,
      );
    }
    return true;
  });
}

Deno.test("round-trip of several dtypes and shapes", () => {
  const f64 = new Float64Array([Math.PI]);
  const f32 = new Float32Array([1, -2.5, NaN, Infinity, 0, 7]);
  const i64 = new BigInt64Array([-3n, 1n << 40n]);
  const i32 = new Int32Array([-1, 2, 3]);
  const f16 = new Uint16Array([0x3c00, 0xc000, 0x3555]); // 1, -2, ~0.3333
  const bf16 = new Uint16Array([0x3f80, 0xc040]); // 1, -3
  const u8 = new Uint8Array([0, 255, 9]);
  const bool = new Uint8Array([1, 0]);
  const bytes = serializeSafetensors([
    { name: "u8", dtype: "uint8", shape: [3], data: u8 },
    { name: "f32", dtype: "float32", shape: [2, 3], data: f32 },
    { name: "scalar", dtype: "float64", shape: [], data: f64 },
    { name: "empty", dtype: "float32", shape: [0, 4], data: new Float32Array(0) },
    { name: "i64", dtype: "int64", shape: [2], data: i64 },
    { name: "i32", dtype: "int32", shape: [3, 1], data: i32 },
    { name: "f16", dtype: "float16", shape: [3], data: f16 },
    { name: "bf16", dtype: "bfloat16", shape: [1, 2], data: bf16 },
    { name: "bool", dtype: "bool", shape: [2], data: bool },
  ], { note: "hi", "ünï": "çödé" });
  const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal((8 + headerLen) % 8, 0);
  const { metadata, tensors } = parseSafetensors(bytes);
  assert.deepEqual(metadata, { note: "hi", "ünï": "çödé" });
  assert.equal(tensors.size, 9);
  for (const t of tensors.values()) {
    // Every tensor is naturally aligned relative to the data section start.
    const dataStart = 8 + headerLen;
    assert.equal((t.data.byteOffset - dataStart) % dtypeSize(t.dtype), 0, t.name);
  }
  assert.deepEqual(tensors.get("scalar")!.shape, []);
  assert.deepEqual(Array.from(toFloat64(tensors.get("scalar")!)), [Math.PI]);
  assert.deepEqual(tensors.get("empty")!.shape, [0, 4]);
  assert.equal(toFloat32(tensors.get("empty")!).length, 0);
  assert.deepEqual(Array.from(toFloat32(tensors.get("f32")!)), Array.from(f32));
  assert.equal(tensors.get("f32")!.dtype, "float32");
  assert.deepEqual(Array.from(toFloat64(tensors.get("i64")!)), [-3, 2 ** 40]);
  assert.deepEqual(Array.from(toFloat32(tensors.get("i32")!)), [-1, 2, 3]);
  const h = toFloat32(tensors.get("f16")!);
  assert.deepEqual([h[0], h[1]], [1, -2]);
  assert.ok(Math.abs(h[2] - 1 / 3) < 1e-3);
  assert.deepEqual(Array.from(toFloat32(tensors.get("bf16")!)), [1, -3]);
  assert.deepEqual(Array.from(toFloat32(tensors.get("u8")!)), [0, 255, 9]);
  assert.deepEqual(Array.from(toFloat32(tensors.get("bool")!)), [1, 0]);
  assert.deepEqual(Array.from(tensors.get("u8")!.data), [0, 255, 9]);
  // Record input form and no metadata.
  const again = parseSafetensors(
    serializeSafetensors({ a: { dtype: "int32", shape: [1], data: new Int32Array([5]) } }),
  );
  assert.deepEqual(again.metadata, {});
  assert.deepEqual(Array.from(toFloat32(again.tensors.get("a")!)), [5]);
  // An empty file (no tensors) is still valid.
  assert.equal(parseSafetensors(serializeSafetensors([])).tensors.size, 0);
});

Deno.test("reads real SAELens fixtures", async () => {
  const a = await readSafetensors(new URL("topk-step-rescale.safetensors", FIX).pathname);
  const x = a.tensors.get("input.x")!;
  assert.equal(x.dtype, "float32");
  assert.deepEqual(x.shape, [32, 32]);
  assert.equal(toFloat32(x).length, 1024);
  for (const k of ["case", "kind", "saelens_version"]) assert.equal(typeof a.metadata[k], "string");
  assert.equal(a.metadata.case, "topk-step-rescale");
  const b = await readSafetensors(new URL("batchtopk-step.safetensors", FIX).pathname);
  const th = b.tensors.get("state.topk_threshold")!;
  assert.equal(th.dtype, "float64");
  assert.deepEqual(th.shape, []);
  assert.ok(Number.isFinite(toFloat64(th)[0]));
});

Deno.test("bad inputs raise SafetensorsError naming file and tensor", () => {
  const d8 = new Uint8Array(8);
  const ok = { dtype: "F32", shape: [2], data_offsets: [0, 8] };
  assertBad(new Uint8Array(5), "less than the 8-byte");
  assertBad(rawFile("{}", undefined, 0n), "header length is 0");
  assertBad(rawFile("{}", undefined, 200_000_000n), "exceeds");
  assertBad(rawFile("{}", undefined, 50n), "past end");
  assertBad(rawFile("{not json"), "not valid UTF-8 JSON");
  const badUtf8 = rawFile("{}  ");
  badUtf8[9] = 0xff;
  assertBad(badUtf8, "UTF-8");
  assertBad(rawFile("[1,2]"), "not an object");
  assertBad(rawFile({ __metadata__: "x" }), "__metadata__");
  assertBad(rawFile({ __metadata__: { a: 1 } }), "__metadata__", '"a"');
  assertBad(rawFile({ w: 3 }), '"w"', "must be an object");
  assertBad(rawFile({ w: { ...ok, dtype: "Q7" } }, d8), '"w"', "dtype", "Q7");
  assertBad(rawFile({ w: { shape: [2], data_offsets: [0, 8] } }, d8), '"w"', "dtype");
  assertBad(rawFile({ w: { ...ok, shape: [2.5] } }, d8), '"w"', "shape");
  assertBad(rawFile({ w: { ...ok, shape: [-2] } }, d8), '"w"', "shape");
  assertBad(rawFile({ w: { ...ok, shape: undefined } }, d8), '"w"', "shape");
  assertBad(rawFile({ w: { ...ok, data_offsets: [0] } }, d8), '"w"', "data_offsets");
  assertBad(rawFile({ w: { ...ok, data_offsets: [-1, 7] } }, d8), '"w"', "data_offsets");
  assertBad(rawFile({ w: { ...ok, data_offsets: [8, 0] } }, d8), '"w"', "begin <= end");
  assertBad(rawFile({ w: { ...ok, shape: [3] } }, d8), '"w"', "needs 12");
  assertBad(rawFile({ w: { ...ok, data_offsets: [4, 12] } }, d8), '"w"', "outside");
  assertBad(
    rawFile({ w: ok, v: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, d8),
    "overlaps",
    '"v"',
    '"w"',
  );
  assertBad(
    rawFile({
      w: { ...ok, shape: [1], data_offsets: [0, 4] },
      v: { dtype: "U8", shape: [2], data_offsets: [6, 8] },
    }, d8),
    '"v"',
    "hole",
  );
  assertBad(
    rawFile({ w: { ...ok, shape: [1], data_offsets: [0, 4] } }, d8),
    "trailing bytes",
    '"w"',
  );
});

Deno.test("readSafetensors names a missing path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const p = `${dir}/nope.safetensors`;
    await assert.rejects(readSafetensors(p), (e: unknown) => {
      assert.ok(e instanceof SafetensorsError);
      assert.ok(e.message.includes(p) && e.message.includes("not found"));
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serializer rejects bad tensors", () => {
  const bad = (t: Record<string, unknown>, ...parts: string[]) =>
    assert.throws(
      () => serializeSafetensors([t as never]),
      (e: unknown) => e instanceof SafetensorsError && parts.every((p) => e.message.includes(p)),
    );
  bad({ name: "d", dtype: "float8", shape: [1], data: new Uint8Array(1) }, '"d"', "float8");
  bad({ name: "s", dtype: "uint8", shape: [-1], data: new Uint8Array(0) }, '"s"', "shape");
  bad({ name: "__metadata__", dtype: "uint8", shape: [], data: new Uint8Array(1) }, "reserved");
  const t = { name: "x", dtype: "uint8" as const, shape: [1], data: new Uint8Array(1) };
  assert.throws(() => serializeSafetensors([t, t]), /duplicated/);
  assert.throws(() => serializeSafetensors([], { a: 1 as unknown as string }), /metadata "a"/);

  assert.throws(
    () =>
      serializeSafetensors([{
        name: "w",
        dtype: "float32",
        shape: [3],
        data: new Float32Array(2),
      }]),
    (e: unknown) =>
      e instanceof SafetensorsError && e.message.includes('"w"') && e.message.includes("12"),
  );
});

Deno.test("atomic writer: no temp files, pre-existing file intact on failure", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const p = `${dir}/out.safetensors`;
    await writeSafetensorsAtomic(p, {
      w: { dtype: "float32", shape: [2], data: new Float32Array([1, 2]) },
    }, { v: "1" });
    const before = await Deno.readFile(p);
    assert.deepEqual(Array.from(toFloat32((await readSafetensors(p)).tensors.get("w")!)), [1, 2]);
    await assert.rejects(
      writeSafetensorsAtomic(p, {
        w: { dtype: "float32", shape: [3], data: new Float32Array([1, 2]) },
      }),
      SafetensorsError,
    );
    assert.deepEqual(await Deno.readFile(p), before);
    // Failure after the temp file exists (rename onto a directory) must also clean up.
    await Deno.mkdir(`${dir}/adir`);
    await Deno.writeTextFile(`${dir}/adir/x`, "x");
    await assert.rejects(writeSafetensorsAtomic(`${dir}/adir`, []), SafetensorsError);
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names.sort(), ["adir", "out.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
