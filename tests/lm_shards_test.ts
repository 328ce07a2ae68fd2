/**
 * Pretokenized token shards and activation caches on the tiny GPT-2 fixture: shards round-trip,
 * the pretokenized and cached sources serve exactly what the on-the-fly model source serves
 * (so cached training gives the same SAE), and bad shards are reported by file name.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseRunConfig } from "../src/config/run.ts";
import {
  cacheActivations,
  CachedActivationSource,
  openActivationCache,
} from "../src/data/cached_source.ts";
import {
  ModelActivationSource,
  type ModelSourceConfig,
  openTokenShards,
  PretokenizedActivationSource,
} from "../src/data/model_source.ts";
import { pretokenize, PRETOKENIZE_DEFAULTS } from "../src/data/pretokenize.ts";
import { ShardError } from "../src/data/shards.ts";
import { readTextDataset } from "../src/data/text.ts";
import {
  activationsStoreWindows,
  FIRST_WINDOW,
  TokenizedDocuments,
  windowAt,
} from "../src/data/windows.ts";
import { LmTokenizer } from "../src/lm/model.ts";
import { runTraining } from "../src/train/run.ts";
import { gpuTest, testGpu } from "./helpers.ts";

const lmTest = { sanitizeOps: false, sanitizeResources: false } as const;
const MODEL = "fixtures/tiny-gpt2";
const CORPUS = "fixtures/tiny-gpt2/corpus";

const modelCfg = (extra: Partial<ModelSourceConfig> = {}): ModelSourceConfig => ({
  model_name: MODEL,
  hook_name: "blocks.1.hook_resid_post",
  dataset_path: CORPUS,
  context_size: 32,
  prepend_bos: true,
  store_batch_size_prompts: 4,
  n_batches_in_buffer: 4,
  exclude_special_tokens: true,
  seed: 2,
  threads: 1,
  ...extra,
});

async function sameBatches(
  a: { nextBatch(rows: number): Promise<Float32Array> },
  b: { nextBatch(rows: number): Promise<Float32Array> },
  rows: number,
  steps: number,
  what: string,
): Promise<void> {
  for (let s = 0; s < steps; s++) {
    const x = await a.nextBatch(rows), y = await b.nextBatch(rows);
    assert.ok(x.every((v, i) => v === y[i]), `${what}: batch ${s} differs`);
  }
}

Deno.test(
  "pretokenize: shards round-trip the SAELens windows; the pretokenized source matches the text source",
  lmTest,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "tok-" });
    const out = join(dir, "tokens");
    const manifest = await pretokenize({
      ...PRETOKENIZE_DEFAULTS,
      tokenizer_name: MODEL,
      dataset_path: CORPUS,
      save_path: out,
      context_size: 32,
      shuffle: false,
      shard_rows: 500,
    });
    assert.ok(manifest.shards.length > 1, "several shards");
    // The rows are exactly one epoch of the text source's windows.
    const tok = await LmTokenizer.load(MODEL);
    const ds = await readTextDataset(CORPUS);
    const docs = new TokenizedDocuments(
      ds.documents.length,
      (i) => tok.encode(ds.documents[i].text),
    );
    const { reader, contextSize } = await openTokenShards(out, tok.vocabSize);
    assert.equal(contextSize, 32);
    let c = FIRST_WINDOW;
    const row = new Int32Array(32), win = new Int32Array(32);
    for (let r = 0; r < reader.rows; r++) {
      c = windowAt(docs, activationsStoreWindows(32, 50256), c, win);
      await reader.readRows("input_ids", r, 1, row);
      assert.deepEqual(row, win, `row ${r}`);
    }
    assert.equal(c.epoch, 0);
    windowAt(docs, activationsStoreWindows(32, 50256), c, win, () => (c = { ...c, epoch: -1 }));
    assert.equal(
      c.epoch,
      -1,
      "the next window is in the next epoch: the shards hold the whole epoch",
    );
    // Unshuffled shards through the LM serve the same batches as the text itself.
    const text = new ModelActivationSource(modelCfg(), 64);
    const pre = new PretokenizedActivationSource({ ...modelCfg(), dataset_path: out }, 64);
    await sameBatches(text, pre, 64, 30, "pretokenized vs text");
    await text.close();
    await pre.close();
    // Shuffled: same rows, another order; re-running refuses to overwrite.
    const shuffled = await pretokenize({
      ...PRETOKENIZE_DEFAULTS,
      tokenizer_name: MODEL,
      dataset_path: CORPUS,
      save_path: join(dir, "shuffled"),
      context_size: 32,
    });
    assert.equal(shuffled.rows, manifest.rows);
    await assert.rejects(
      pretokenize({
        ...PRETOKENIZE_DEFAULTS,
        tokenizer_name: MODEL,
        dataset_path: CORPUS,
        save_path: out,
      }),
      /already exists/,
    );
    // Corrupt shards are named: truncated, a token id outside the vocabulary, missing.
    const shard = join(out, manifest.shards[1].file);
    const bytes = await Deno.readFile(shard);
    await Deno.writeFile(shard, bytes.subarray(0, bytes.length - 100));
    const reread = await openTokenShards(out, tok.vocabSize);
    await reread.reader.readRows("input_ids", 0, 1, row); // shard 0 is fine
    await assert.rejects(
      reread.reader.readRows("input_ids", 600, 1, row),
      (e: Error) =>
        e instanceof ShardError && e.message.includes("tokens-00001.safetensors") &&
        /corrupt/.test(e.message),
    );
    const bad = bytes.slice();
    new DataView(bad.buffer).setInt32(bad.length - 4, 99999, true);
    await Deno.writeFile(shard, bad);
    await assert.rejects(
      (await openTokenShards(out, tok.vocabSize)).reader.readRows("input_ids", 600, 1, row),
      /tokens-00001\.safetensors is corrupt: token id 99999/,
    );
    await Deno.remove(shard);
    await assert.rejects(
      (await openTokenShards(out, tok.vocabSize)).reader.readRows("input_ids", 600, 1, row),
      /tokens-00001\.safetensors: shard listed in manifest\.json is missing/,
    );
    await Deno.remove(join(out, "manifest.json"));
    await assert.rejects(
      openTokenShards(out),
      /manifest\.json: missing; .* is not a finished token-shard dataset/,
    );
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test(
  "cache: the cached source serves the model source's batches; corrupt shards are named",
  lmTest,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "cache-" });
    const out = join(dir, "acts");
    const writer = new ModelActivationSource(modelCfg(), 64);
    const meta = await cacheActivations(writer, out, 20000, { shardRows: 4096 });
    await writer.close();
    assert.ok(meta.shards > 1);
    assert.equal(meta.rows % (4 * 32), 0);
    const live = new ModelActivationSource(modelCfg(), 64);
    const cached = CachedActivationSource.fromConfig({
      cached_activations_path: out,
      n_batches_in_buffer: 4,
      exclude_special_tokens: true,
      seed: 2,
    }, 64);
    await sameBatches(live, cached, 64, 40, "cached vs model");
    // Resume inside the cache.
    const pos = JSON.parse(JSON.stringify(cached.position()));
    const again = CachedActivationSource.fromConfig({
      cached_activations_path: out,
      n_batches_in_buffer: 4,
      exclude_special_tokens: true,
      seed: 2,
    }, 64);
    again.restore(pos);
    await sameBatches(live, again, 64, 20, "restored cache vs model");
    await live.close();
    // Truncated shard, NaN in a shard, wrong width, missing manifest.
    const { reader } = await openActivationCache(out);
    const shard = join(out, reader.manifest.shards[1].file);
    const bytes = await Deno.readFile(shard);
    await Deno.writeFile(shard, bytes.subarray(0, 1000));
    const fresh = (await openActivationCache(out)).reader;
    await assert.rejects(
      fresh.readRows("activations", reader.manifest.shards[0].rows, 1, new Float32Array(64)),
      (e: Error) =>
        e instanceof ShardError && e.message.includes("activations-00001.safetensors") &&
        /corrupt/.test(e.message),
    );
    const nan = bytes.slice();
    // The first activation: header length + 8 bytes in (activations are laid out first).
    const headerLen = Number(new DataView(nan.buffer).getBigUint64(0, true));
    new DataView(nan.buffer).setFloat32(8 + headerLen, NaN, true);
    await Deno.writeFile(shard, nan);
    await assert.rejects(
      (await openActivationCache(out)).reader.readRows(
        "activations",
        reader.manifest.shards[0].rows,
        1,
        new Float32Array(64),
      ),
      /activations-00001\.safetensors is corrupt: activation NaN at row 0, column 0/,
    );
    const wide = CachedActivationSource.fromConfig({
      cached_activations_path: out,
      n_batches_in_buffer: 4,
      exclude_special_tokens: true,
      seed: 2,
    }, 32);
    await assert.rejects(
      wide.nextBatch(8),
      /sae\.d_in is 32 but the activations in .* have width 64/,
    );
    await Deno.remove(join(out, "manifest.json"));
    assert.throws(
      () =>
        CachedActivationSource.fromConfig({
          cached_activations_path: out,
          n_batches_in_buffer: 4,
          exclude_special_tokens: true,
          seed: 2,
        }, 64),
      /manifest\.json: missing; data\.cached_activations_path must be a directory written by deno task cache/,
    );
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test(
  "cache: training on cached activations gives the same SAE as training on the fly",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir({ prefix: "cache-train-" });
    const data = {
      source: "model",
      model_name: MODEL,
      hook_name: "blocks.1.hook_resid_post",
      dataset_path: CORPUS,
      context_size: 32,
      store_batch_size_prompts: 4,
      n_batches_in_buffer: 4,
      seed: 4,
      threads: 1,
    };
    const raw = {
      sae: { architecture: "batchtopk", d_in: 64, d_sae: 128, k: 8 },
      trainer: {
        lr: 1e-3,
        total_training_samples: 64 * 25,
        train_batch_size_samples: 64,
        lr_warm_up_steps: 3,
        dead_feature_window: 10,
        feature_sampling_window: 10,
        logger: { log_to_wandb: false },
      },
      data,
      seed: 3,
      log_every: 25,
      n_eval_batches: 2,
    };
    const live = await runTraining(gpu, parseRunConfig(raw), { outDir: join(dir, "live") });
    const writer = new ModelActivationSource(parseRunConfig(raw).data as ModelSourceConfig, 64);
    await cacheActivations(writer, join(dir, "acts"), 64 * 40);
    await writer.close();
    const cachedRaw = {
      ...raw,
      data: {
        source: "cached",
        cached_activations_path: join(dir, "acts"),
        n_batches_in_buffer: 4,
        seed: 4,
      },
    };
    const cached = await runTraining(gpu, parseRunConfig(cachedRaw), {
      outDir: join(dir, "cached"),
    });
    for (const [name, value] of Object.entries(live.params)) {
      assert.deepEqual(
        cached.params[name],
        value,
        `${name} differs between cached and on-the-fly training`,
      );
    }
    await Deno.remove(dir, { recursive: true });
  },
);
