/**
 * `deno task pretokenize`: SAELens's `PretokenizeRunner` for local text. Tokenizes a .txt/.jsonl
 * dataset, packs it into `context_size` rows with SAELens's `concat_and_batch_sequences`
 * (`begin_batch_token`, `begin_sequence_token`, `sequence_separator_token`: "bos", "eos",
 * "sep", a token id, or "none"), optionally shuffles the rows (seeded), and writes token shards
 * (`input_ids` [rows, context_size] int32) with a manifest, atomically. Training reads them with
 * `data.source: "pretokenized"`.
 *
 *   deno task pretokenize --tokenizer_name DIR --dataset_path PATH --save_path DIR
 *     [--context_size 128] [--shuffle true] [--seed 0] [--begin_batch_token bos]
 *     [--begin_sequence_token none] [--sequence_separator_token bos] [--shard_rows 65536]
 * @module
 */
import { parseArgs } from "node:util";
import { resolveModelDirectory } from "../lm/hub.ts";
import { LmTokenizer } from "../lm/model.ts";
import { Rng } from "../util/rng.ts";
import { TOKENS_FORMAT, vocabHash } from "./model_source.ts";
import { type ShardManifest, ShardWriter } from "./shards.ts";
import { readTextDataset } from "./text.ts";
import { FIRST_WINDOW, TokenizedDocuments, windowAt, type WindowCursor } from "./windows.ts";

/** A special token setting: "bos" | "eos" | "sep", a token id, or null (none). */
export type SpecialTokenSetting = "bos" | "eos" | "sep" | number | null;

export interface PretokenizeConfig {
  /** Model (or tokenizer) directory with tokenizer.json and tokenizer_config.json. */
  tokenizer_name: string;
  dataset_path: string;
  save_path: string;
  context_size: number;
  shuffle: boolean;
  seed: number;
  begin_batch_token: SpecialTokenSetting;
  begin_sequence_token: SpecialTokenSetting;
  sequence_separator_token: SpecialTokenSetting;
  /** Rows per shard. */
  shard_rows: number;
}

/** SAELens's PretokenizeRunnerConfig defaults. */
export const PRETOKENIZE_DEFAULTS = {
  context_size: 128,
  shuffle: true,
  seed: 0,
  begin_batch_token: "bos",
  begin_sequence_token: null,
  sequence_separator_token: "bos",
  shard_rows: 65536,
} as const;

function resolveToken(
  tok: LmTokenizer,
  setting: SpecialTokenSetting,
  field: string,
): number | null {
  if (setting === null || typeof setting === "number") return setting;
  const id = tok.namedTokenId(setting);
  if (id === null) throw new Error(`${field}: the tokenizer has no ${setting} token`);
  return id;
}

/** Tokenizes, packs, shuffles and writes the shards; returns the manifest. */
export async function pretokenize(cfg: PretokenizeConfig): Promise<ShardManifest> {
  const tok = await LmTokenizer.load(await resolveModelDirectory(cfg.tokenizer_name));
  const opts = {
    contextSize: cfg.context_size,
    beginBatchToken: resolveToken(tok, cfg.begin_batch_token, "begin_batch_token"),
    beginSequenceToken: resolveToken(tok, cfg.begin_sequence_token, "begin_sequence_token"),
    sequenceSeparatorToken: resolveToken(
      tok,
      cfg.sequence_separator_token,
      "sequence_separator_token",
    ),
  };
  const dataset = await readTextDataset(cfg.dataset_path);
  const docs = new TokenizedDocuments(
    dataset.documents.length,
    (i) => tok.encode(dataset.documents[i].text),
    0,
  );
  // One epoch of windows: stop at the first window of epoch 1.
  const rows: Int32Array[] = [];
  let c: WindowCursor = FIRST_WINDOW;
  for (;;) {
    const w = new Int32Array(cfg.context_size);
    let wrapped = false;
    c = windowAt(docs, opts, c, w, () => (wrapped = true));
    if (wrapped) break;
    rows.push(w);
  }
  if (cfg.shuffle) {
    const rng = new Rng(cfg.seed);
    for (let i = rows.length - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      [rows[i], rows[j]] = [rows[j], rows[i]];
    }
  }
  const writer = new ShardWriter(cfg.save_path, TOKENS_FORMAT, "tokens", [
    { name: "input_ids", dtype: "int32", rowShape: [cfg.context_size] },
  ], cfg.shard_rows);
  await writer.begin();
  try {
    for (const r of rows) await writer.add(1, [r]);
    return await writer.finish({
      tokenizer_name: cfg.tokenizer_name,
      tokenizer_vocab_sha256: vocabHash(tok),
      original_dataset: cfg.dataset_path,
      context_size: cfg.context_size,
      shuffled: cfg.shuffle,
      seed: cfg.shuffle ? cfg.seed : null,
      begin_batch_token: cfg.begin_batch_token,
      begin_sequence_token: cfg.begin_sequence_token,
      sequence_separator_token: cfg.sequence_separator_token,
      documents: dataset.documents.length,
    });
  } catch (e) {
    await writer.abort();
    throw e;
  }
}

function parseToken(
  value: string | undefined,
  fallback: SpecialTokenSetting,
  flag: string,
): SpecialTokenSetting {
  if (value === undefined) return fallback;
  if (value === "none") return null;
  if (value === "bos" || value === "eos" || value === "sep") return value;
  if (/^\d+$/.test(value)) return Number(value);
  throw new Error(`--${flag}: expected bos, eos, sep, none or a token id, got "${value}"`);
}

function parseCount(value: string | undefined, fallback: number, flag: string, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    throw new Error(`--${flag}: expected an integer >= ${min}, got "${value}"`);
  }
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: Object.fromEntries(
      [
        "tokenizer_name",
        "dataset_path",
        "save_path",
        "context_size",
        "shuffle",
        "seed",
        "begin_batch_token",
        "begin_sequence_token",
        "sequence_separator_token",
        "shard_rows",
      ].map((k) => [k, { type: "string" as const }]),
    ),
  });
  const need = ["tokenizer_name", "dataset_path", "save_path"].filter((k) => !values[k]);
  if (need.length > 0) {
    throw new Error(
      `missing ${
        need.map((k) => `--${k}`).join(", ")
      }\nusage: deno task pretokenize --tokenizer_name DIR --dataset_path PATH --save_path DIR ` +
        "[--context_size 128] [--shuffle true|false] [--seed 0] [--begin_batch_token bos] [--begin_sequence_token none] " +
        "[--sequence_separator_token bos] [--shard_rows 65536]",
    );
  }
  if (values.shuffle !== undefined && !["true", "false"].includes(values.shuffle as string)) {
    throw new Error(`--shuffle: expected true or false, got "${values.shuffle}"`);
  }
  const d = PRETOKENIZE_DEFAULTS;
  const cfg: PretokenizeConfig = {
    tokenizer_name: values.tokenizer_name as string,
    dataset_path: values.dataset_path as string,
    save_path: values.save_path as string,
    context_size: parseCount(values.context_size as string, d.context_size, "context_size"),
    shuffle: values.shuffle === undefined ? d.shuffle : values.shuffle === "true",
    seed: parseCount(values.seed as string, d.seed, "seed", 0),
    begin_batch_token: parseToken(
      values.begin_batch_token as string,
      d.begin_batch_token,
      "begin_batch_token",
    ),
    begin_sequence_token: parseToken(
      values.begin_sequence_token as string,
      d.begin_sequence_token,
      "begin_sequence_token",
    ),
    sequence_separator_token: parseToken(
      values.sequence_separator_token as string,
      d.sequence_separator_token,
      "sequence_separator_token",
    ),
    shard_rows: parseCount(values.shard_rows as string, d.shard_rows, "shard_rows"),
  };
  const start = performance.now();
  const m = await pretokenize(cfg);
  const s = (performance.now() - start) / 1000;
  console.log(
    `${cfg.save_path}: ${m.rows} rows of ${cfg.context_size} tokens in ${m.shards.length} shard(s) ` +
      `(${Math.round(m.rows * cfg.context_size / s)} tokens/s)`,
  );
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`pretokenize: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
