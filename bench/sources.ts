/**
 * Activation-source throughput (activations served per second, as the trainer consumes them) for
 * the `model`, `pretokenized` and `cached` sources on the committed tiny GPT-2 fixture. The
 * token shards and the activation cache are written to a temporary directory first.
 */
import { join } from "node:path";
import { CachedActivationSource } from "../src/data/cached_source.ts";
import { cacheActivations } from "../src/data/cached_source.ts";
import {
  ModelActivationSource,
  type ModelSourceConfig,
  PretokenizedActivationSource,
} from "../src/data/model_source.ts";
import { pretokenize, PRETOKENIZE_DEFAULTS } from "../src/data/pretokenize.ts";
import type { ActivationSource } from "../src/data/source.ts";

export interface SourceResult {
  source: "model" | "pretokenized" | "cached";
  tokens_per_s: number;
  batch: number;
}

const MODEL = "fixtures/tiny-gpt2";
const HOOK = "blocks.1.hook_resid_post";
const D_IN = 64;

/** Activations per second that `source` serves in batches of `batch` rows over ~`seconds`. */
async function timeSource(
  source: ActivationSource,
  batch: number,
  seconds: number,
): Promise<number> {
  await source.nextBatch(batch); // loads the model and fills the first buffer
  let rows = 0;
  const start = performance.now();
  while (performance.now() - start < seconds * 1000) {
    await source.nextBatch(batch);
    rows += batch;
  }
  return rows / ((performance.now() - start) / 1000);
}

export async function benchSources(
  { batch = 1024, seconds = 5 }: { batch?: number; seconds?: number } = {},
): Promise<SourceResult[]> {
  const dir = await Deno.makeTempDir({ prefix: "webgpu-sae-bench-" });
  const lm: ModelSourceConfig = {
    model_name: MODEL,
    hook_name: HOOK,
    dataset_path: join(MODEL, "corpus"),
    context_size: 128,
    prepend_bos: true,
    store_batch_size_prompts: 16,
    n_batches_in_buffer: 8,
    exclude_special_tokens: true,
    seed: 0,
  };
  const results: SourceResult[] = [];
  const run = async (
    name: SourceResult["source"],
    source: ActivationSource & { close?(): Promise<void> },
  ) => {
    results.push({ source: name, tokens_per_s: await timeSource(source, batch, seconds), batch });
    await source.close?.();
  };
  try {
    await run("model", new ModelActivationSource(lm, D_IN));
    const shards = join(dir, "tokens");
    await pretokenize({
      ...PRETOKENIZE_DEFAULTS,
      tokenizer_name: MODEL,
      dataset_path: lm.dataset_path,
      save_path: shards,
      context_size: lm.context_size,
    });
    await run(
      "pretokenized",
      new PretokenizedActivationSource({ ...lm, dataset_path: shards }, D_IN),
    );
    const cache = join(dir, "cache");
    const writer = new ModelActivationSource(lm, D_IN);
    await cacheActivations(writer, cache, 64 * 1024);
    await writer.close();
    await run(
      "cached",
      CachedActivationSource.fromConfig({
        cached_activations_path: cache,
        n_batches_in_buffer: lm.n_batches_in_buffer,
        exclude_special_tokens: true,
        seed: 0,
      }, D_IN),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return results;
}
