/**
 * The `data.source: "model"` activation source on the tiny GPT-2 fixture: SAELens's window
 * packing, special tokens dropped, each served row equal to the LM's activation for its token,
 * exact resume from a checkpoint position, and clear dataset/config errors.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError } from "../src/config/errors.ts";
import { parseRunConfig } from "../src/config/run.ts";
import { MixingBuffer } from "../src/data/mixing_buffer.ts";
import { ModelActivationSource, type ModelSourceConfig } from "../src/data/model_source.ts";
import { openSource } from "../src/data/sources.ts";
import { DatasetError, readTextDataset } from "../src/data/text.ts";
import {
  activationsStoreWindows,
  FIRST_WINDOW,
  TokenizedDocuments,
  windowAt,
  type WindowCursor,
} from "../src/data/windows.ts";
import { HookedLm, LmTokenizer } from "../src/lm/model.ts";
import { Rng } from "../src/util/rng.ts";
import { rng } from "./helpers.ts";

const lmTest = { sanitizeOps: false, sanitizeResources: false } as const;
const CORPUS = "fixtures/tiny-gpt2/corpus";

/** SAELens's concat_and_batch_sequences, transcribed as directly as possible (the reference). */
function saelensWindows(
  docs: number[][],
  ctx: number,
  bbt: number | null,
  bst: number | null,
  sep: number | null,
): number[][] {
  const out: number[][] = [];
  let batch: number[] | null = null;
  for (const tokens of docs) {
    let offset = 0;
    let isStart = true;
    while (tokens.length - offset > 0) {
      const prefix: number[] = [];
      let first = tokens[offset];
      if (isStart && bst !== null && first !== bst) {
        prefix.unshift(bst);
        first = bst;
      }
      if (batch === null) {
        if (bbt !== null && first !== bbt) {
          prefix.unshift(bbt);
          first = bbt;
        }
        const needed = Math.max(ctx - prefix.length, 0);
        batch = [...prefix.slice(0, ctx), ...tokens.slice(offset, offset + needed)];
        offset += needed;
      } else {
        if (sep !== null && first !== sep) prefix.unshift(sep);
        const needed = Math.max(ctx - batch.length - prefix.length, 0);
        const prefixNeeded = Math.max(ctx - batch.length, 0);
        batch = [
          ...batch,
          ...prefix.slice(0, prefixNeeded),
          ...tokens.slice(offset, offset + needed),
        ];
        offset += needed;
      }
      isStart = false;
      if (batch.length === ctx) {
        out.push(batch);
        batch = null;
      }
    }
  }
  return out;
}

Deno.test("windows: SAELens's concatenation, BOS/sequence/separator rules, epochs", () => {
  const next = rng(7);
  const settings: [number, number | null, number | null, number | null][] = [
    [8, 99, null, 99], // the ActivationsStore's prepend_bos
    [5, 99, null, 99],
    [7, null, null, null], // prepend_bos false
    [3, 99, null, 99], // separators alone fill windows
    [6, 99, 98, 97], // PretokenizeRunner with all three
    [4, null, 98, null],
    [2, 99, 98, 99],
  ];
  for (const [ctx, bbt, bst, sep] of settings) {
    // Random documents, some empty, some starting with a special token, some shorter than a window.
    const docs = Array.from({ length: 40 }, () => {
      const n = Math.floor(next() * 14);
      const d = Array.from({ length: n }, () => Math.floor(next() * 20));
      if (n > 0 && next() < 0.2) d[0] = next() < 0.5 ? 99 : 98;
      return d;
    });
    const expected = saelensWindows(docs, ctx, bbt, bst, sep);
    const tokenized = new TokenizedDocuments(docs.length, (i) => docs[i], 20);
    const opts = {
      contextSize: ctx,
      beginBatchToken: bbt,
      beginSequenceToken: bst,
      sequenceSeparatorToken: sep,
    };
    let c: WindowCursor = FIRST_WINDOW;
    const epochs: number[] = [];
    for (let round = 0; round < 2; round++) {
      for (const want of expected) {
        const win = new Int32Array(ctx);
        c = windowAt(tokenized, opts, c, win, (e) => epochs.push(e));
        assert.deepEqual(Array.from(win), want, `ctx ${ctx}, tokens ${bbt}/${bst}/${sep}`);
      }
    }
    assert.deepEqual(epochs, [1], "the second pass is epoch 1");
  }
  assert.throws(
    () =>
      windowAt(
        new TokenizedDocuments(1, () => [1, 2]),
        activationsStoreWindows(8, 0),
        FIRST_WINDOW,
        new Int32Array(8),
      ),
    /fewer tokens than one window of context_size 8/,
  );
});

Deno.test("mixing buffer: keeps half, serves max(1, n // 2b) batches, every row exactly once", () => {
  const buf = new MixingBuffer(1, 40, new Rng(3));
  let nextId = 0;
  const seen = new Set<number>();
  const add = (n: number) => {
    const ids = Array.from({ length: n }, () => nextId++);
    buf.add(ids, Float32Array.from(ids));
  };
  for (let round = 0; round < 6; round++) {
    while (!buf.full()) add(15);
    const before = buf.storedRows;
    buf.mix(8);
    assert.equal(buf.queuedRows, Math.max(1, Math.floor(before / 16)) * 8);
    assert.equal(buf.storedRows, before - buf.queuedRows);
    while (buf.queuedRows >= 8) {
      const rows = buf.take(8);
      assert.deepEqual(Array.from(rows), Array.from(buf.lastIds), "values travel with their ids");
      for (const r of rows) {
        assert.ok(!seen.has(r), `row ${r} served twice`);
        seen.add(r);
      }
    }
  }
});

function sourceConfig(extra: Partial<ModelSourceConfig> = {}): ModelSourceConfig {
  return {
    model_name: "fixtures/tiny-gpt2",
    hook_name: "blocks.0.hook_resid_post",
    dataset_path: CORPUS,
    context_size: 16,
    prepend_bos: true,
    store_batch_size_prompts: 4,
    n_batches_in_buffer: 4,
    exclude_special_tokens: true,
    seed: 5,
    threads: 1,
    ...extra,
  };
}

/** The window of every serial, recomputed independently of the source. */
async function windowsFor(cfg: ModelSourceConfig, count: number): Promise<Int32Array[]> {
  const tok = await LmTokenizer.load(cfg.model_name);
  const ds = await readTextDataset(cfg.dataset_path);
  const docs = new TokenizedDocuments(ds.documents.length, (i) => tok.encode(ds.documents[i].text));
  const out: Int32Array[] = [];
  let c: WindowCursor = FIRST_WINDOW;
  for (let i = 0; i < count; i++) {
    const w = new Int32Array(cfg.context_size);
    c = windowAt(
      docs,
      activationsStoreWindows(cfg.context_size, cfg.prepend_bos ? 50256 : null),
      c,
      w,
    );
    out.push(w);
  }
  return out;
}

Deno.test(
  "model source: served rows are the LM's activations of their tokens; BOS excluded",
  lmTest,
  async () => {
    const ctx = 16, d = 64, rows = 32;
    for (const exclude of [true, false]) {
      const cfg = sourceConfig({ exclude_special_tokens: exclude });
      const source = new ModelActivationSource(cfg, d);
      const windows = await windowsFor(cfg, 64);
      const lm = await HookedLm.load(cfg.model_name, { hookName: cfg.hook_name, threads: 1 });
      let bosRows = 0;
      for (let step = 0; step < 12; step++) {
        const batch = await source.nextBatch(rows);
        assert.equal(batch.length, rows * d);
        const ids = source.lastBatchIds;
        for (let r = 0; r < rows; r++) {
          const serial = Math.floor(ids[r] / ctx), pos = ids[r] % ctx;
          const token = windows[serial][pos];
          if (token === 50256) bosRows++;
          if (exclude) assert.notEqual(token, 50256, `row ${r} of step ${step} is a BOS token`);
          if (r < 3) {
            // The row equals the LM's activation at that token when the window runs alone.
            const alone = await lm.run(windows[serial], 1, ctx);
            const expected = alone.subarray(pos * d, (pos + 1) * d);
            for (let i = 0; i < d; i++) {
              assert.ok(
                Math.abs(batch[r * d + i] - expected[i]) <= 1e-5,
                `step ${step} row ${r} col ${i}`,
              );
            }
          }
        }
      }
      if (!exclude) {
        assert.ok(bosRows > 0, "with exclude_special_tokens false, BOS rows are served");
      }
      await lm.dispose();
      await source.close();
    }
  },
);

Deno.test(
  "model source: restore from a JSON position continues the stream exactly",
  lmTest,
  async () => {
    const rows = 48, steps = 40, stopAt = 17;
    // 16-token windows of 4 per LM batch: the corpus is ~119k tokens, so no epoch change here;
    // the small config below makes one (dataset = one short file).
    for (const extra of [{}, { dataset_path: join(CORPUS, "brown-ca01.txt"), context_size: 64 }]) {
      const cfg = sourceConfig(extra);
      const a = new ModelActivationSource(cfg, 64);
      const batches: Float32Array[] = [];
      let saved: unknown;
      for (let s = 0; s < steps; s++) {
        batches.push(await a.nextBatch(rows));
        if (s + 1 === stopAt) saved = JSON.parse(JSON.stringify(a.position()));
      }
      const b = new ModelActivationSource(cfg, 64);
      b.restore(saved);
      for (let s = stopAt; s < steps; s++) {
        const got = await b.nextBatch(rows);
        assert.ok(
          got.every((v, i) => v === batches[s][i]),
          `batch ${s} differs after resume (${JSON.stringify(extra)})`,
        );
      }
      // position() of a restored source before it is used is the restored position itself.
      const c = new ModelActivationSource(cfg, 64);
      c.restore(saved);
      assert.deepEqual(c.position(), saved);
      await a.close();
      await b.close();
    }
    // A position from another configuration is refused, naming the field.
    const a = new ModelActivationSource(sourceConfig(), 64);
    await a.nextBatch(rows);
    const pos = a.position();
    assert.throws(
      () => new ModelActivationSource(sourceConfig({ seed: 6 }), 64).restore(pos),
      /data\.seed was 5 in the checkpoint, 6 now/,
    );
    assert.throws(() => a.restore(12345), /not a model-source position/);
    await a.close();
  },
);

Deno.test("model source: dataset and size errors name the file and field", lmTest, async () => {
  const dir = await Deno.makeTempDir({ prefix: "lm-data-" });
  try {
    await Deno.writeTextFile(join(dir, "a.jsonl"), '{"text": "fine"}\n{"text": 3}\n');
    await assert.rejects(
      readTextDataset(join(dir, "a.jsonl")),
      (e: Error) =>
        e instanceof DatasetError && e.message.includes(`${join(dir, "a.jsonl")}:2`) &&
        /string "text" field/.test(e.message),
    );
    await Deno.writeTextFile(join(dir, "a.jsonl"), '{"text": "fine"}\n{not json\n');
    await assert.rejects(readTextDataset(dir), new RegExp(`a\\.jsonl:2: not valid JSON`));
    await Deno.writeFile(join(dir, "a.jsonl"), new Uint8Array([0x7b, 0xff, 0xfe]));
    await assert.rejects(readTextDataset(dir), /a\.jsonl: not valid UTF-8/);
    await assert.rejects(
      readTextDataset(join(dir, "missing.txt")),
      /missing\.txt: dataset_path not found/,
    );
    await Deno.remove(join(dir, "a.jsonl"));
    await assert.rejects(readTextDataset(dir), /has no \.txt or \.jsonl files/);
    await Deno.writeTextFile(join(dir, "b.jsonl"), '{"text": "one"}\n\n{"text": "two"}\n');
    const ds = await readTextDataset(dir);
    assert.deepEqual(ds.documents.map((x) => x.text), ["one", "two"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  // The SAE's d_in must be the hook's width.
  const wrong = new ModelActivationSource(sourceConfig(), 32);
  await assert.rejects(
    wrong.nextBatch(8),
    /sae\.d_in is 32 but blocks\.0\.hook_resid_post .* has width 64/,
  );
  // The buffer must hold a training batch.
  const small = new ModelActivationSource(sourceConfig({ n_batches_in_buffer: 1 }), 64);
  await assert.rejects(small.nextBatch(100), /must hold at least one training batch \(100 rows\)/);
  await small.close();
  // A dataset smaller than one window.
  const tiny = await Deno.makeTempFile({ suffix: ".txt" });
  await Deno.writeTextFile(tiny, "too short");
  const short = new ModelActivationSource(sourceConfig({ dataset_path: tiny }), 64);
  await assert.rejects(short.nextBatch(8), /fewer tokens than one window of context_size 16/);
  await short.close();
  await Deno.remove(tiny);
});

Deno.test("config: data.source model validates its fields and opens a model source", () => {
  const base = JSON.parse(Deno.readTextFileSync("examples/tiny-gpt2.json"));
  const config = parseRunConfig(base, "examples/tiny-gpt2.json");
  assert.equal(config.data.source, "model");
  assert.ok(openSource(config, 64) instanceof ModelActivationSource);
  const bad = (data: Record<string, unknown>, pattern: RegExp) =>
    assert.throws(
      () => parseRunConfig({ ...base, data: { ...base.data, ...data } }, "cfg.json"),
      (e: Error) => e instanceof ConfigError && pattern.test(e.message),
    );
  bad(
    { hook_name: "blocks.0.attn.hook_z" },
    /cfg\.json\.data\.hook_name.*blocks\.L\.hook_resid_pre/s,
  );
  bad({ context_size: 0 }, /data\.context_size.*positive integer/s);
  bad({ exclude_special_tokens: [-1] }, /data\.exclude_special_tokens/);
  bad({ modelname: "x" }, /modelname/);
});
