/**
 * Throughput of the language-model activation source on the tiny GPT-2 fixture (CPU,
 * onnxruntime-node): raw LM forward passes with the graph pruned after the hook point and
 * unpruned (full model plus the hook output), then the whole source (tokenize, pack windows,
 * LM, drop special tokens, mixing buffer) as training consumes it.
 *
 *   deno run -A examples/model_source_throughput.ts [--hook blocks.1.hook_resid_post] [--seconds 5]
 */
import { parseArgs } from "node:util";
import { ModelActivationSource } from "../src/data/model_source.ts";
import { HookedLm } from "../src/lm/model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "fixtures/tiny-gpt2" },
    data: { type: "string", default: "fixtures/tiny-gpt2/corpus" },
    hook: { type: "string", default: "blocks.1.hook_resid_post" },
    seconds: { type: "string", default: "5" },
  },
});
const seconds = Number(values.seconds);

async function timed(work: () => Promise<number>): Promise<number> {
  await work(); // warm-up
  let tokens = 0;
  const start = performance.now();
  while (performance.now() - start < seconds * 1000) tokens += await work();
  return tokens / ((performance.now() - start) / 1000);
}

const ctx = 128;
for (const batch of [8, 32]) {
  const ids = Array.from({ length: batch * ctx }, (_, i) => (i * 7919) % 50000);
  for (const prune of [true, false]) {
    const lm = await HookedLm.load(values.model!, { hookName: values.hook!, prune });
    const rate = await timed(async () => (await lm.run(ids, batch, ctx), batch * ctx));
    console.log(
      `LM forward ${values.hook} ${prune ? "pruned  " : "unpruned"} batch ${batch}x${ctx}: ` +
        `${Math.round(rate)} tokens/s (graph nodes ${lm.nodeCount.after}/${lm.nodeCount.before})`,
    );
    await lm.dispose();
  }
}

for (const store of [8, 32]) {
  const source = new ModelActivationSource({
    model_name: values.model!,
    hook_name: values.hook!,
    dataset_path: values.data!,
    context_size: ctx,
    prepend_bos: true,
    store_batch_size_prompts: store,
    n_batches_in_buffer: 16,
    exclude_special_tokens: true,
    seed: 0,
  }, 64);
  await source.nextBatch(1024); // load + first buffer fill
  const rate = await timed(async () => (await source.nextBatch(1024), 1024));
  console.log(
    `model source (store_batch_size_prompts ${store}, context ${ctx}, batches of 1024): ` +
      `${Math.round(rate)} activations/s served; LM ${
        Math.round(source.stats.tokens / source.stats.seconds)
      } tokens/s while running`,
  );
  await source.close();
}
