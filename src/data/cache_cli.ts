/**
 * `deno task cache --config RUN.json --out DIR [--tokens N] [--shard_rows N]`: SAELens's
 * `CacheActivationsRunner`. Runs the LM of the config's `data` section (`source: "model"` or
 * `"pretokenized"`) once and writes the hook point's activations for N tokens (whole LM batches)
 * to DIR as safetensors shards with a manifest (atomically: DIR appears only when complete).
 * Train on it with `data: { source: "cached", cached_activations_path: DIR, ... }`; with the same
 * `seed`, `n_batches_in_buffer` and `exclude_special_tokens` it serves the same batches as the
 * LM source did.
 *
 * Default N: enough for the config's whole run (training samples, evaluation batches, the
 * mixing buffer's slack), so the cached run never wraps around where the on-the-fly one would not.
 * @module
 */
import { parseArgs } from "node:util";
import { parseRunConfig } from "../config/run.ts";
import { cacheActivations } from "./cached_source.ts";
import { ModelActivationSource, PretokenizedActivationSource } from "./model_source.ts";

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      config: { type: "string" },
      out: { type: "string" },
      tokens: { type: "string" },
      shard_rows: { type: "string" },
    },
  });
  if (!values.config || !values.out) {
    throw new Error(
      "usage: deno task cache --config RUN.json --out DIR [--tokens N] [--shard_rows N]",
    );
  }
  const config = parseRunConfig(JSON.parse(await Deno.readTextFile(values.config)), values.config);
  const data = config.data;
  if (data.source !== "model" && data.source !== "pretokenized") {
    throw new Error(
      `${values.config}: data.source must be "model" or "pretokenized" to cache activations`,
    );
  }
  const dIn = config.sae.d_in as number;
  const source = data.source === "model"
    ? new ModelActivationSource(data, dIn)
    : new PretokenizedActivationSource(data, dIn);
  const batch = config.trainer.train_batch_size_samples;
  const needed = config.trainer.total_training_samples + (config.n_eval_batches + 2) * batch;
  const tokens = values.tokens !== undefined
    ? Number(values.tokens)
    : Math.ceil(needed * data.context_size / (data.context_size - 1)) + 2 * source.bufferRows;
  if (!Number.isInteger(tokens) || tokens <= 0) {
    throw new Error(`--tokens: expected a positive integer`);
  }
  const shardRows = values.shard_rows === undefined ? undefined : Number(values.shard_rows);
  const start = performance.now();
  let last = 0;
  const meta = await cacheActivations(source, values.out, tokens, {
    shardRows,
    onProgress: (rows) => {
      if (performance.now() - last > 2000) {
        last = performance.now();
        console.error(`cache: ${rows} / ${tokens} tokens`);
      }
    },
  });
  await source.close();
  const s = (performance.now() - start) / 1000;
  console.log(
    `${values.out}: ${meta.rows} activations of ${meta.hook_name} (d_in ${meta.d_in}) in ` +
      `${meta.shards} shard(s), ${Math.round(meta.rows / s)} tokens/s`,
  );
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`cache: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
