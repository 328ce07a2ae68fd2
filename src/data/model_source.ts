/**
 * LM-backed activation sources (SAELens's `ActivationsStore` with a model):
 *
 * - `data.source: "model"` (`ModelActivationSource`): local text (`text.ts`) is tokenized and
 *   packed into `context_size` windows exactly as SAELens does for a text dataset
 *   (`windows.ts`);
 * - `data.source: "pretokenized"` (`PretokenizedActivationSource`): windows are the rows of
 *   token shards written by `deno task pretokenize` (sliced to `context_size`, as SAELens slices
 *   a pretokenized dataset).
 *
 * Both run the patched LM (`../lm/model.ts`) on `store_batch_size_prompts` windows at a time;
 * special-token rows are dropped and a mixing buffer shuffles what is served
 * (`buffered_source.ts`, which also explains the checkpoint positions).
 * @module
 */
import { createHash } from "node:crypto";
import { resolveModelDirectory } from "../lm/hub.ts";
import { HookedLm, LmTokenizer } from "../lm/model.ts";
import {
  BufferedActivationSource,
  type Cursor,
  excludedTokenSet,
  type LmBatch,
} from "./buffered_source.ts";
import { readManifest, ShardError, ShardReader } from "./shards.ts";
import { readTextDataset, type TextDataset } from "./text.ts";
import {
  activationsStoreWindows,
  TokenizedDocuments,
  windowAt,
  type WindowOptions,
} from "./windows.ts";

/** Fields both LM sources share (SAELens names). */
export interface LmSourceConfig {
  /** Local model directory (Hugging Face layout, onnx/model.onnx) or hub repo id (lm/hub.ts). */
  model_name: string;
  /** `blocks.L.hook_resid_pre|mid|post`. */
  hook_name: string;
  /** model: a .txt/.jsonl file or a directory of them; pretokenized: a token-shard directory. */
  dataset_path: string;
  context_size: number;
  /** Windows per LM forward pass. */
  store_batch_size_prompts: number;
  /** Mixing buffer: n_batches_in_buffer × store_batch_size_prompts × context_size rows. */
  n_batches_in_buffer: number;
  /** true: the tokenizer's special tokens; false: none; a list: those token ids. */
  exclude_special_tokens: boolean | number[];
  /** Seed of the mixing buffer's shuffles. */
  seed: number;
  /** onnxruntime intra-op threads (default: all cores). */
  threads?: number;
}

export interface ModelSourceConfig extends LmSourceConfig {
  /** BOS at the start of each window and between documents. */
  prepend_bos: boolean;
}

export type PretokenizedSourceConfig = LmSourceConfig;

/** SHA-256 of a tokenizer's vocabulary (token → id, sorted by id): equal vocabularies, equal hashes. */
export function vocabHash(tokenizer: LmTokenizer): string {
  return createHash("sha256").update(JSON.stringify(tokenizer.vocabEntries())).digest("hex");
}

/** Shared part: the tokenizer and the patched LM, loaded on first use. */
abstract class LmSource extends BufferedActivationSource {
  protected lm?: HookedLm;
  protected tokenizer?: LmTokenizer;
  private exclude = new Set<number>();

  protected constructor(kind: string, readonly cfg: LmSourceConfig, dIn: number) {
    super(kind, cfg, dIn);
  }

  /** The config fields a resumed position must match. */
  protected fingerprint(): Record<string, unknown> {
    const c = this.cfg;
    return {
      model_name: c.model_name,
      hook_name: c.hook_name,
      dataset_path: c.dataset_path,
      context_size: c.context_size,
      store_batch_size_prompts: c.store_batch_size_prompts,
      n_batches_in_buffer: c.n_batches_in_buffer,
      exclude_special_tokens: c.exclude_special_tokens,
      seed: c.seed,
    };
  }

  /** Loads the tokenizer and the model, checks the width. */
  protected async openLm(): Promise<LmTokenizer> {
    const cfg = this.cfg;
    const dir = await resolveModelDirectory(cfg.model_name);
    const tokenizer = await LmTokenizer.load(dir);
    const lm = await HookedLm.load(dir, { hookName: cfg.hook_name, threads: cfg.threads });
    if (lm.dModel !== this.dIn) {
      await lm.dispose();
      throw new Error(
        `sae.d_in is ${this.dIn} but ${cfg.hook_name} of ${cfg.model_name} has width ${lm.dModel}; set d_in to ${lm.dModel}`,
      );
    }
    this.lm = lm;
    this.tokenizer = tokenizer;
    this.exclude = excludedTokenSet(cfg.exclude_special_tokens, tokenizer.specialTokenIds);
    return tokenizer;
  }

  /** The next S windows from `start` into `tokens`; returns the cursor after them. */
  protected abstract fillWindows(start: Cursor, tokens: Int32Array): Cursor;

  async computeBatch(start: Cursor): Promise<LmBatch> {
    const ctx = this.cfg.context_size, S = this.cfg.store_batch_size_prompts;
    const tokens = new Int32Array(S * ctx);
    const next = this.fillWindows(start, tokens);
    const acts = await this.lm!.run(tokens, S, ctx);
    return { tokens, acts, next };
  }

  protected excludedTokens(): ReadonlySet<number> {
    return this.exclude;
  }

  /** The special token ids of the model's tokenizer (after the source is loaded). */
  get specialTokenIds(): readonly number[] {
    return this.tokenizer?.specialTokenIds ?? [];
  }

  protected async release(): Promise<void> {
    await this.lm?.dispose();
  }

  protected describeData(): string {
    return this.cfg.dataset_path;
  }
}

/** Activations of a hook point of a local LM on local text, shuffled as SAELens does. */
export class ModelActivationSource extends LmSource {
  private docs?: TokenizedDocuments;
  private windowOpts?: WindowOptions;
  dataset?: TextDataset;

  constructor(override readonly cfg: ModelSourceConfig, dIn: number) {
    super("model", cfg, dIn);
  }

  protected async open(): Promise<void> {
    const tokenizer = await this.openLm();
    if (this.cfg.prepend_bos && tokenizer.bosTokenId === null) {
      throw new Error(
        `${this.cfg.model_name}: prepend_bos is true but the tokenizer has no BOS token`,
      );
    }
    const dataset = await readTextDataset(this.cfg.dataset_path);
    this.dataset = dataset;
    this.docs = new TokenizedDocuments(
      dataset.documents.length,
      (i) => tokenizer.encode(dataset.documents[i].text),
    );
    this.windowOpts = activationsStoreWindows(
      this.cfg.context_size,
      this.cfg.prepend_bos ? tokenizer.bosTokenId : null,
    );
  }

  /** Cursor: [epoch, document, offset, document started (0/1)]. */
  protected firstCursor(): Cursor {
    return [0, 0, 0, 0];
  }

  protected fillWindows(start: Cursor, tokens: Int32Array): Cursor {
    const ctx = this.cfg.context_size, S = this.cfg.store_batch_size_prompts;
    let c = { epoch: start[0], doc: start[1], offset: start[2], started: start[3] === 1 };
    for (let w = 0; w < S; w++) {
      c = {
        started: false,
        ...windowAt(this.docs!, this.windowOpts!, c, tokens.subarray(w * ctx, (w + 1) * ctx)),
      };
    }
    return [c.epoch, c.doc, c.offset, c.started ? 1 : 0];
  }

  protected override fingerprint(): Record<string, unknown> {
    return { ...super.fingerprint(), prepend_bos: this.cfg.prepend_bos };
  }
}

/** The token-shard format `deno task pretokenize` writes. */
export const TOKENS_FORMAT = "webgpu-sae-tokens";

/** Opens a token-shard directory: manifest, reader (validating ids against `vocabSize`). */
export async function openTokenShards(
  dir: string,
  vocabSize?: number,
): Promise<{ reader: ShardReader; contextSize: number }> {
  const manifest = await readManifest(
    dir,
    TOKENS_FORMAT,
    "token-shard dataset (deno task pretokenize)",
  );
  const contextSize = manifest.context_size;
  if (typeof contextSize !== "number" || !Number.isInteger(contextSize) || contextSize <= 0) {
    throw new ShardError(`${dir}/manifest.json: bad context_size ${JSON.stringify(contextSize)}`);
  }
  const reader = new ShardReader(dir, manifest, [{
    name: "input_ids",
    dtype: "int32",
    rowShape: [contextSize],
  }], (
    path,
    tensors,
  ) => {
    if (vocabSize === undefined) return;
    const t = tensors.get("input_ids")!;
    const ids = new Int32Array(t.data.slice().buffer);
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] < 0 || ids[i] >= vocabSize) {
        throw new ShardError(
          `shard ${path} is corrupt: token id ${
            ids[i]
          } at ${i} is outside the vocabulary (${vocabSize})`,
        );
      }
    }
  });
  return { reader, contextSize };
}

/** Activations of a hook point on pretokenized windows (rows of token shards, in order). */
export class PretokenizedActivationSource extends LmSource {
  private reader?: ShardReader;
  private rowTokens?: Int32Array;

  constructor(cfg: PretokenizedSourceConfig, dIn: number) {
    super("pretokenized", cfg, dIn);
  }

  protected async open(): Promise<void> {
    const tokenizer = await this.openLm();
    const { reader, contextSize } = await openTokenShards(
      this.cfg.dataset_path,
      tokenizer.vocabSize,
    );
    const manifest = reader.manifest;
    if (contextSize < this.cfg.context_size) {
      throw new Error(
        `${this.cfg.dataset_path}: the shards have context_size ${contextSize}, less than data.context_size ${this.cfg.context_size}`,
      );
    }
    if (contextSize > this.cfg.context_size) {
      console.warn(
        `pretokenized source: ${this.cfg.dataset_path} has context_size ${contextSize}; using the first ${this.cfg.context_size} tokens of each row (as SAELens does)`,
      );
    }
    if (
      typeof manifest.tokenizer_vocab_sha256 === "string" &&
      manifest.tokenizer_vocab_sha256 !== vocabHash(tokenizer)
    ) {
      throw new Error(
        `${this.cfg.dataset_path}: tokenized with ${manifest.tokenizer_name}, whose vocabulary differs from ${this.cfg.model_name}'s`,
      );
    }
    this.reader = reader;
    this.rowTokens = new Int32Array(contextSize);
  }

  /** Cursor: [epoch, row]. */
  protected firstCursor(): Cursor {
    return [0, 0];
  }

  protected fillWindows(): Cursor {
    throw new Error("unreachable: pretokenized batches are read asynchronously");
  }

  override async computeBatch(start: Cursor): Promise<LmBatch> {
    const ctx = this.cfg.context_size, S = this.cfg.store_batch_size_prompts;
    const tokens = new Int32Array(S * ctx);
    let [epoch, row] = start;
    for (let w = 0; w < S; w++) {
      await this.reader!.readRows("input_ids", row, 1, this.rowTokens!);
      tokens.set(this.rowTokens!.subarray(0, ctx), w * ctx);
      if (++row >= this.reader!.rows) {
        epoch++;
        row = 0;
      }
    }
    const acts = await this.lm!.run(tokens, S, ctx);
    return { tokens, acts, next: [epoch, row] };
  }
}
