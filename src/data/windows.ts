/**
 * Token windows of `context_size` from a list of documents, exactly as SAELens's
 * `concat_and_batch_sequences` builds them. With the `ActivationsStore`'s settings for a text
 * dataset (`begin_batch_token_id = sequence_separator_token_id = bos if prepend_bos else None`,
 * `begin_sequence_token_id = None`):
 *
 * - a new window starts with BOS unless its first token already is BOS;
 * - documents are concatenated; when a document starts inside a window, BOS separates it from
 *   the previous one (unless it starts with BOS);
 * - empty documents are skipped; the partial window at the end of the dataset is dropped and the
 *   next epoch starts again from the first document.
 *
 * A window is a pure function of the cursor it starts at (epoch, document, token offset), so a
 * checkpoint stores cursors, not tokens.
 * @module
 */

/** Where a window starts: the epoch (0-based), the document, and the token offset in it. */
export interface WindowCursor {
  readonly epoch: number;
  readonly doc: number;
  readonly offset: number;
  /**
   * Whether the document at `offset` was already started (only differs from `offset > 0` when a
   * separator alone filled the previous window; matters for begin_sequence_token).
   */
  readonly started?: boolean;
}

/** The start of the data. */
export const FIRST_WINDOW: WindowCursor = { epoch: 0, doc: 0, offset: 0 };

/**
 * SAELens's three optional tokens (`PretokenizeRunnerConfig` names): `beginBatchToken` at
 * position 0 of each window, `beginSequenceToken` before each document, `sequenceSeparatorToken`
 * between documents in a window. Each is added only when the next token is not already it.
 */
export interface WindowOptions {
  readonly contextSize: number;
  readonly beginBatchToken: number | null;
  readonly beginSequenceToken?: number | null;
  readonly sequenceSeparatorToken: number | null;
}

/** The ActivationsStore's windows for a text dataset: BOS first and between documents. */
export function activationsStoreWindows(contextSize: number, bos: number | null): WindowOptions {
  return {
    contextSize,
    beginBatchToken: bos,
    beginSequenceToken: null,
    sequenceSeparatorToken: bos,
  };
}

/**
 * Documents by index, tokenized on demand. Tokenized documents are cached up to `cacheTokens`
 * tokens in all (least recently used first out), so a corpus that fits is tokenized once, not
 * once per epoch.
 */
export class TokenizedDocuments {
  private readonly cache = new Map<number, Int32Array>();
  private cachedTokens = 0;

  constructor(
    readonly count: number,
    private readonly tokenize: (doc: number) => ArrayLike<number>,
    private readonly cacheTokens = 1 << 24,
  ) {}

  tokens(doc: number): Int32Array {
    let t = this.cache.get(doc);
    if (t) {
      this.cache.delete(doc);
      this.cache.set(doc, t); // most recently used last
      return t;
    }
    t = Int32Array.from(this.tokenize(doc));
    this.cache.set(doc, t);
    this.cachedTokens += t.length;
    while (this.cachedTokens > this.cacheTokens && this.cache.size > 1) {
      const [oldest, toks] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      this.cachedTokens -= toks.length;
    }
    return t;
  }
}

/** The window starting at `c` within its epoch, and the next cursor; null at the epoch's end. */
function windowInEpoch(
  docs: TokenizedDocuments,
  opts: WindowOptions,
  c: WindowCursor,
  out: Int32Array,
): WindowCursor | null {
  // A transcription of sae_lens.tokenization_and_batching._add_tokens_to_batch.
  const ctx = opts.contextSize;
  const bbt = opts.beginBatchToken, bst = opts.beginSequenceToken ?? null;
  const sep = opts.sequenceSeparatorToken;
  let n = -1; // -1: no batch yet (SAELens's batch is None)
  let doc = c.doc, offset = c.offset, started = c.started ?? c.offset > 0;
  while (doc < docs.count) {
    const toks = docs.tokens(doc);
    if (toks.length - offset <= 0) {
      doc++;
      offset = 0;
      started = false;
      continue;
    }
    const prefix: number[] = [];
    let first = toks[offset];
    if (!started && bst !== null && first !== bst) {
      prefix.unshift(bst);
      first = bst;
    }
    let take: number;
    if (n < 0) {
      if (bbt !== null && first !== bbt) prefix.unshift(bbt);
      n = Math.min(prefix.length, ctx);
      out.set(prefix.slice(0, n));
      take = Math.min(Math.max(ctx - prefix.length, 0), toks.length - offset);
    } else {
      if (sep !== null && first !== sep) prefix.unshift(sep);
      const p = Math.min(prefix.length, ctx - n);
      out.set(prefix.slice(0, p), n);
      n += p;
      take = Math.min(Math.max(ctx - n, 0), toks.length - offset);
    }
    out.set(toks.subarray(offset, offset + take), n);
    n += take;
    offset += take;
    started = true;
    if (n === ctx) {
      if (toks.length - offset <= 0) {
        return { epoch: c.epoch, doc: doc + 1, offset: 0, started: false };
      }
      return { epoch: c.epoch, doc, offset, started: true };
    }
  }
  return null;
}

/**
 * Fills `out` (length context_size) with the window at `c` and returns the cursor after it; at
 * the end of the data the partial window is dropped and the next epoch starts over.
 */
export function windowAt(
  docs: TokenizedDocuments,
  opts: WindowOptions,
  c: WindowCursor,
  out: Int32Array,
  onEpoch?: (epoch: number) => void,
): WindowCursor {
  const next = windowInEpoch(docs, opts, c, out);
  if (next) return next;
  const restart = { epoch: c.epoch + 1, doc: 0, offset: 0, started: false };
  onEpoch?.(restart.epoch);
  const again = windowInEpoch(docs, opts, restart, out);
  if (!again) {
    throw new Error(
      `the dataset has fewer tokens than one window of context_size ${opts.contextSize}`,
    );
  }
  return again;
}
