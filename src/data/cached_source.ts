/**
 * Activation caching (SAELens's `CacheActivationsRunner` + `use_cached_activations`):
 * `cacheActivations` runs an LM source's batches once, in order, and writes every token's
 * activation and token id to shards (`shards.ts`: `activations` [rows, d_in] float32,
 * `token_ids` [rows] int32, a manifest naming model, hook point, dtype, token count);
 * `data.source: "cached"` (`CachedActivationSource`) streams them back through the same mixing
 * buffer, so hyper-parameter sweeps reuse one pass of the model.
 *
 * Row r of the cache is token r of the LM stream (window serial × context_size + position), and
 * the cached source groups rows into batches of `store_batch_size_prompts` windows exactly as
 * the LM source did, so with the same seed and buffer settings it serves the very same batches
 * as training on the fly (tested).
 * @module
 */
import {
  BufferedActivationSource,
  type Cursor,
  excludedTokenSet,
  type LmBatch,
} from "./buffered_source.ts";
import type { ModelActivationSource, PretokenizedActivationSource } from "./model_source.ts";
import {
  readManifest,
  ShardError,
  ShardReader,
  type ShardTensorSpec,
  ShardWriter,
} from "./shards.ts";

export const ACTIVATIONS_FORMAT = "webgpu-sae-activations";

export interface CachedSourceConfig {
  /** The cache directory (`deno task cache --out`). */
  cached_activations_path: string;
  /** When given, must equal the cache's hook point. */
  hook_name?: string;
  /** Windows per batch (default: the cache's, which matches the run that wrote it). */
  store_batch_size_prompts?: number;
  n_batches_in_buffer: number;
  /** true: the special tokens recorded in the cache; false: none; a list: those token ids. */
  exclude_special_tokens: boolean | number[];
  seed: number;
}

function specs(dIn: number): ShardTensorSpec[] {
  return [
    { name: "activations", dtype: "float32", rowShape: [dIn] },
    { name: "token_ids", dtype: "int32", rowShape: [] },
  ];
}

/** Opens a cache directory, checking its manifest and (lazily) each shard, named on failure. */
export async function openActivationCache(
  dir: string,
): Promise<{ reader: ShardReader; meta: CacheMeta }> {
  const manifest = await readManifest(
    dir,
    ACTIVATIONS_FORMAT,
    "activation cache (deno task cache)",
  );
  const meta = manifest as unknown as CacheMeta;
  for (const k of ["d_in", "context_size", "store_batch_size_prompts"] as const) {
    if (!Number.isInteger(meta[k]) || meta[k] <= 0) {
      throw new ShardError(`${dir}/manifest.json: bad ${k} ${JSON.stringify(meta[k])}`);
    }
  }
  if (meta.dtype !== "float32") {
    throw new ShardError(`${dir}/manifest.json: dtype ${meta.dtype} is not supported`);
  }
  if (manifest.rows % meta.context_size !== 0) {
    throw new ShardError(
      `${dir}/manifest.json: ${manifest.rows} rows is not a whole number of windows`,
    );
  }
  const reader = new ShardReader(dir, manifest, specs(meta.d_in), (path, tensors) => {
    const acts = tensors.get("activations")!;
    const v = new Float32Array(acts.data.slice().buffer);
    for (let i = 0; i < v.length; i++) {
      if (!Number.isFinite(v[i])) {
        throw new ShardError(
          `shard ${path} is corrupt: activation ${v[i]} at row ${
            Math.floor(i / meta.d_in)
          }, column ${i % meta.d_in}`,
        );
      }
    }
  });
  return { reader, meta };
}

/** What the manifest records besides the shard list. */
export interface CacheMeta {
  model_name: string;
  hook_name: string;
  d_in: number;
  dtype: "float32";
  context_size: number;
  store_batch_size_prompts: number;
  prepend_bos: boolean | null;
  dataset_path: string;
  source: string;
  special_token_ids: number[];
  /** Tokens (rows) cached, special tokens included. */
  tokens: number;
}

/** Activations streamed from a cache written by `deno task cache`. */
export class CachedActivationSource extends BufferedActivationSource {
  private reader?: ShardReader;
  private meta?: CacheMeta;
  private exclude = new Set<number>();

  constructor(
    readonly cfg: CachedSourceConfig,
    dIn: number,
    contextSize: number,
    storeBatch: number,
  ) {
    super("cached", {
      context_size: contextSize,
      store_batch_size_prompts: storeBatch,
      n_batches_in_buffer: cfg.n_batches_in_buffer,
      seed: cfg.seed,
    }, dIn);
  }

  /**
   * The batch geometry (context_size, store_batch_size_prompts) comes from the manifest, read
   * here synchronously; everything else is checked when the source is first used.
   */
  static fromConfig(cfg: CachedSourceConfig, dIn: number): CachedActivationSource {
    const path = `${cfg.cached_activations_path}/manifest.json`;
    let meta: Partial<CacheMeta>;
    try {
      meta = JSON.parse(Deno.readTextFileSync(path));
    } catch (e) {
      throw new ShardError(
        e instanceof Deno.errors.NotFound
          ? `${path}: missing; data.cached_activations_path must be a directory written by deno task cache`
          : `${path}: cannot read (${(e as Error).message})`,
      );
    }
    const ctx = meta.context_size,
      S = cfg.store_batch_size_prompts ?? meta.store_batch_size_prompts;
    if (!Number.isInteger(ctx) || !Number.isInteger(S) || ctx! <= 0 || S! <= 0) {
      throw new ShardError(
        `${path}: needs positive integer context_size and store_batch_size_prompts`,
      );
    }
    return new CachedActivationSource(cfg, dIn, ctx!, S!);
  }

  private attach(reader: ShardReader, meta: CacheMeta): void {
    const path = this.cfg.cached_activations_path;
    if (meta.d_in !== this.dIn) {
      throw new Error(
        `sae.d_in is ${this.dIn} but the activations in ${path} have width ${meta.d_in}`,
      );
    }
    if (this.cfg.hook_name !== undefined && this.cfg.hook_name !== meta.hook_name) {
      throw new Error(`${path} caches ${meta.hook_name}, not data.hook_name ${this.cfg.hook_name}`);
    }
    this.reader = reader;
    this.meta = meta;
    this.exclude = excludedTokenSet(this.cfg.exclude_special_tokens, meta.special_token_ids ?? []);
  }

  protected async open(): Promise<void> {
    const { reader, meta } = await openActivationCache(this.cfg.cached_activations_path);
    if (meta.context_size !== this.bufferConfig.context_size) {
      throw new Error(
        `${this.cfg.cached_activations_path}: context_size changed while the run was open`,
      );
    }
    this.attach(reader, meta);
  }

  /** Cursor: [epoch, window]. */
  protected firstCursor(): Cursor {
    return [0, 0];
  }

  async computeBatch(start: Cursor): Promise<LmBatch> {
    const { context_size: ctx, store_batch_size_prompts: S } = this.bufferConfig, d = this.dIn;
    const windows = this.reader!.rows / ctx;
    const tokens = new Int32Array(S * ctx), acts = new Float32Array(S * ctx * d);
    let [epoch, w] = start;
    let done = 0;
    while (done < S) {
      const n = Math.min(S - done, windows - w);
      await this.reader!.readRows("token_ids", w * ctx, n * ctx, tokens.subarray(done * ctx));
      await this.reader!.readRows("activations", w * ctx, n * ctx, acts.subarray(done * ctx * d));
      done += n;
      w += n;
      if (w >= windows) {
        epoch++;
        w = 0;
      }
    }
    return { tokens, acts, next: [epoch, w] };
  }

  protected excludedTokens(): ReadonlySet<number> {
    return this.exclude;
  }

  protected fingerprint(): Record<string, unknown> {
    return {
      cached_activations_path: this.cfg.cached_activations_path,
      store_batch_size_prompts: this.bufferConfig.store_batch_size_prompts,
      n_batches_in_buffer: this.cfg.n_batches_in_buffer,
      exclude_special_tokens: this.cfg.exclude_special_tokens,
      seed: this.cfg.seed,
    };
  }

  protected describeData(): string {
    return this.cfg.cached_activations_path;
  }

  protected async release(): Promise<void> {}

  /** The cache's manifest fields (after loading). */
  get cacheMeta(): CacheMeta | undefined {
    return this.meta;
  }
}

/**
 * Runs `source`'s LM batches in order from the start and writes at least `tokens` rows
 * (whole batches) to a new cache directory `outDir`. Returns the manifest.
 */
export async function cacheActivations(
  source: ModelActivationSource | PretokenizedActivationSource,
  outDir: string,
  tokens: number,
  options: { shardRows?: number; onProgress?: (rows: number) => void } = {},
): Promise<CacheMeta & { rows: number; shards: number }> {
  await source.load();
  const cfg = source.cfg;
  const ctx = cfg.context_size, S = cfg.store_batch_size_prompts;
  const perBatch = S * ctx;
  const batches = Math.max(1, Math.ceil(tokens / perBatch));
  // Shards of whole batches, about 64 MiB of activations each by default.
  const shardBatches = Math.max(
    1,
    Math.floor((options.shardRows ?? (1 << 24) / source.dIn) / perBatch),
  );
  const writer = new ShardWriter(
    outDir,
    ACTIVATIONS_FORMAT,
    "activations",
    specs(source.dIn),
    shardBatches * perBatch,
  );
  await writer.begin();
  try {
    let cursor: Cursor = source.kind === "model" ? [0, 0, 0, 0] : [0, 0];
    for (let b = 0; b < batches; b++) {
      const batch = await source.computeBatch(cursor);
      await writer.add(perBatch, [batch.acts, batch.tokens]);
      cursor = batch.next;
      options.onProgress?.((b + 1) * perBatch);
    }
    const meta: CacheMeta = {
      model_name: cfg.model_name,
      hook_name: cfg.hook_name,
      d_in: source.dIn,
      dtype: "float32",
      context_size: ctx,
      store_batch_size_prompts: S,
      prepend_bos: "prepend_bos" in cfg ? (cfg as { prepend_bos: boolean }).prepend_bos : null,
      dataset_path: cfg.dataset_path,
      source: source.kind,
      special_token_ids: [...source.specialTokenIds],
      tokens: batches * perBatch,
    };
    const manifest = await writer.finish({ ...meta });
    return { ...meta, rows: manifest.rows, shards: manifest.shards.length };
  } catch (e) {
    await writer.abort();
    throw e;
  }
}
