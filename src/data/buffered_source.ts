/**
 * What the `model`, `pretokenized` and `cached` sources share: activations arrive in "LM batches"
 * of `store_batch_size_prompts` windows of `context_size` tokens, special tokens are dropped
 * (SAELens's `exclude_special_tokens`), and a mixing buffer (`mixing_buffer.ts`) shuffles what
 * is served.
 *
 * Every row has an id: window serial × context_size + position, where window serials count
 * from 0 over the whole run (LM batch b holds serials b·S .. b·S+S−1). A subclass says where a
 * batch starts with a cursor (a short array of integers: for text, epoch/document/offset) and
 * computes a batch from its cursor, deterministically.
 *
 * Checkpoints: the position holds the next cursor, the shuffle generator's state, the ids of the
 * rows in the buffer and the start cursor of each LM batch they came from. `restore` recomputes
 * exactly those batches (same windows, same batch composition, so the same floats) and refills
 * the buffer: a resumed run gets the same batches as an uninterrupted one. For an LM source that
 * costs about a dozen buffer refills of LM time; for the cache, a few shard reads.
 * @module
 */
import { Rng } from "../util/rng.ts";
import { decodeIds, encodeIds, MixingBuffer } from "./mixing_buffer.ts";
import type { ActivationSource } from "./source.ts";

/** Where a batch starts; element 0 is the epoch. */
export type Cursor = readonly number[];

/** One LM batch: tokens [S·ctx], activations [S·ctx, d_in], and where the next batch starts. */
export interface LmBatch {
  tokens: Int32Array;
  acts: Float32Array;
  next: Cursor;
}

export interface BufferConfig {
  context_size: number;
  store_batch_size_prompts: number;
  n_batches_in_buffer: number;
  seed: number;
}

interface Position {
  kind: string;
  version: 1;
  config: Record<string, unknown>;
  /** Serial of the next window, and the cursor where it starts. */
  serial: number;
  cursor: number[];
  rng: number;
  /** Base64 Float64 ids of the stored and the queued rows. */
  stored: string;
  queued: string;
  /** Start cursor of each LM batch with rows in the buffer, by batch index. */
  batches: Record<string, number[]>;
  /** Rows per served batch (the buffer was mixed for it). */
  batch_rows: number;
}

const sameCursor = (a: Cursor, b: Cursor) => a.length === b.length && a.every((v, i) => v === b[i]);

export abstract class BufferedActivationSource implements ActivationSource {
  private buffer: MixingBuffer;
  private serial = 0;
  private cursor: Cursor;
  /** Start cursor of each LM batch whose rows may still be in the buffer. */
  private batchCursors = new Map<number, Cursor>();
  private pendingRestore?: Position;
  /** The batch after the last one consumed, computed ahead (onnxruntime runs off-thread). */
  private prefetched?: { start: Cursor; result: Promise<LmBatch> };
  private batchRows = 0;
  private ready?: Promise<void>;
  /** Batches computed, tokens in them, seconds spent computing them (throughput reporting). */
  readonly stats = { batches: 0, tokens: 0, seconds: 0 };

  protected constructor(
    /** "model", "pretokenized", "cached": positions of one kind do not restore into another. */
    readonly kind: string,
    readonly bufferConfig: BufferConfig,
    readonly dIn: number,
  ) {
    this.buffer = new MixingBuffer(
      dIn,
      this.bufferRows,
      new Rng(bufferConfig.seed * 2654435761 + 12345),
    );
    this.cursor = this.firstCursor();
  }

  /** Loads what the batches need (once; awaited before the first batch). */
  protected abstract open(): Promise<void>;
  /** The cursor of the first batch. */
  protected abstract firstCursor(): Cursor;
  /** The batch of `store_batch_size_prompts` windows starting at `start`. */
  protected abstract computeBatch(start: Cursor): Promise<LmBatch>;
  /** Token ids whose rows are dropped. */
  protected abstract excludedTokens(): ReadonlySet<number>;
  /** Configuration a checkpoint must match to be restored here. */
  protected abstract fingerprint(): Record<string, unknown>;
  /** What the data is called in messages (dataset path, cache directory). */
  protected abstract describeData(): string;
  /** Releases resources. */
  protected abstract release(): Promise<void>;

  /** Mixing buffer size in rows (before special tokens are dropped). */
  get bufferRows(): number {
    const c = this.bufferConfig;
    return c.n_batches_in_buffer * c.store_batch_size_prompts * c.context_size;
  }

  /** Ids (window serial × context_size + position) of the rows of the last batch served. */
  get lastBatchIds(): Float64Array {
    return this.buffer.lastIds;
  }

  /** Opens the data (once). */
  load(): Promise<void> {
    this.ready ??= this.open();
    return this.ready;
  }

  private batchOf(id: number): number {
    const { context_size: ctx, store_batch_size_prompts: S } = this.bufferConfig;
    return Math.floor(Math.floor(id / ctx) / S);
  }

  private liveBatches(): Set<number> {
    const snap = this.buffer.snapshot();
    const live = new Set<number>();
    for (const ids of [snap.stored, snap.queued]) {
      for (let i = 0; i < ids.length; i++) live.add(this.batchOf(ids[i]));
    }
    return live;
  }

  position(): Position {
    if (this.pendingRestore) return this.pendingRestore;
    const snap = this.buffer.snapshot();
    const batches: Record<string, number[]> = {};
    for (const b of [...this.liveBatches()].sort((x, y) => x - y)) {
      const c = this.batchCursors.get(b);
      if (!c) throw new Error(`${this.kind} source: no cursor for batch ${b} (internal error)`);
      batches[String(b)] = [...c];
    }
    return {
      kind: this.kind,
      version: 1,
      config: this.fingerprint(),
      serial: this.serial,
      cursor: [...this.cursor],
      rng: this.buffer.rng.state,
      stored: encodeIds(snap.stored),
      queued: encodeIds(snap.queued),
      batches,
      batch_rows: this.batchRows,
    };
  }

  restore(position: unknown): void {
    const p = position as Position | null;
    const bad = (why: string) =>
      new Error(`${this.kind} source: cannot restore checkpoint position (${why})`);
    if (typeof p !== "object" || p === null || p.kind !== this.kind || p.version !== 1) {
      throw bad(`not a ${this.kind}-source position: ${JSON.stringify(position)?.slice(0, 80)}`);
    }
    for (const [k, v] of Object.entries(this.fingerprint())) {
      if (JSON.stringify(p.config?.[k]) !== JSON.stringify(v)) {
        throw bad(
          `data.${k} was ${JSON.stringify(p.config?.[k])} in the checkpoint, ${
            JSON.stringify(v)
          } now`,
        );
      }
    }
    this.pendingRestore = p;
    this.prefetched = undefined;
  }

  private async applyRestore(p: Position): Promise<void> {
    const { context_size: ctx, store_batch_size_prompts: S } = this.bufferConfig;
    this.serial = p.serial;
    this.cursor = p.cursor;
    this.buffer.rng.state = p.rng;
    this.batchRows = p.batch_rows;
    this.batchCursors = new Map(Object.entries(p.batches).map(([b, c]) => [Number(b), c]));
    const snapshot = {
      stored: decodeIds(p.stored, "checkpoint position: stored"),
      queued: decodeIds(p.queued, "checkpoint position: queued"),
    };
    await this.buffer.load(snapshot, async (ids) => {
      // Group the rows by batch and recompute each batch as it was first computed.
      const byBatch = new Map<number, number[]>();
      for (let i = 0; i < ids.length; i++) {
        const b = this.batchOf(ids[i]);
        let list = byBatch.get(b);
        if (!list) byBatch.set(b, list = []);
        list.push(i);
      }
      const d = this.dIn, out = new Float32Array(ids.length * d);
      for (const [b, rows] of byBatch) {
        const start = this.batchCursors.get(b);
        if (!start) {
          throw new Error(`${this.kind} source: checkpoint position has no cursor for batch ${b}`);
        }
        const { acts } = await this.timedBatch(start);
        for (const i of rows) {
          const local = ids[i] - b * S * ctx;
          out.set(acts.subarray(local * d, (local + 1) * d), i * d);
        }
      }
      return out;
    });
  }

  private async timedBatch(start: Cursor): Promise<LmBatch> {
    const t0 = performance.now();
    const batch = await this.computeBatch(start);
    this.stats.seconds += (performance.now() - t0) / 1000;
    this.stats.batches++;
    this.stats.tokens += batch.tokens.length;
    return batch;
  }

  /** The batch at `start`: the prefetched one when it starts there. */
  private fetchBatch(start: Cursor): Promise<LmBatch> {
    const p = this.prefetched;
    this.prefetched = undefined;
    return p && sameCursor(p.start, start) ? p.result : this.timedBatch(start);
  }

  private prefetch(): void {
    if (this.prefetched) return;
    const start = this.cursor;
    const result = this.timedBatch(start);
    result.catch(() => {}); // reported when consumed
    this.prefetched = { start, result };
  }

  /** Computes the next batch and adds its non-excluded rows to the buffer. */
  private async refillOnce(): Promise<void> {
    const { context_size: ctx, store_batch_size_prompts: S } = this.bufferConfig, d = this.dIn;
    const b = Math.floor(this.serial / S);
    const start = this.cursor;
    const { tokens, acts, next } = await this.fetchBatch(start);
    if (next[0] !== start[0]) {
      console.warn(
        `${this.kind} source: all of ${this.describeData()} has been used; starting epoch ${
          next[0] + 1
        } (as SAELens does)`,
      );
    }
    this.batchCursors.set(b, start);
    this.cursor = next;
    this.prefetch();
    const base = this.serial * ctx;
    this.serial += S;
    const exclude = this.excludedTokens();
    const keep: number[] = [];
    for (let i = 0; i < tokens.length; i++) if (!exclude.has(tokens[i])) keep.push(i);
    const kept = new Float32Array(keep.length * d);
    for (let k = 0; k < keep.length; k++) {
      kept.set(acts.subarray(keep[k] * d, (keep[k] + 1) * d), k * d);
    }
    this.buffer.add(keep.map((i) => base + i), kept);
  }

  async nextBatch(rows: number): Promise<Float32Array> {
    await this.load();
    if (this.pendingRestore) {
      const p = this.pendingRestore;
      await this.applyRestore(p);
      this.pendingRestore = undefined;
    }
    if (this.bufferRows < rows) {
      throw new Error(
        `${this.kind} source: the mixing buffer (n_batches_in_buffer × store_batch_size_prompts × context_size = ${this.bufferRows} rows) ` +
          `must hold at least one training batch (${rows} rows); raise n_batches_in_buffer`,
      );
    }
    if (this.batchRows !== 0 && this.batchRows !== rows) {
      throw new Error(
        `${this.kind} source: batches of ${rows} rows after ${this.batchRows}; the batch size must not change`,
      );
    }
    this.batchRows = rows;
    while (this.buffer.queuedRows < rows) {
      while (!this.buffer.full()) await this.refillOnce();
      this.buffer.mix(rows);
      const live = this.liveBatches();
      for (const b of this.batchCursors.keys()) if (!live.has(b)) this.batchCursors.delete(b);
    }
    return this.buffer.take(rows);
  }

  /** Waits for any prefetch and releases resources. */
  async close(): Promise<void> {
    if (!this.ready) return;
    await this.ready.catch(() => {});
    await this.prefetched?.result.catch(() => {});
    this.prefetched = undefined;
    await this.release();
  }
}

/** The token ids `exclude_special_tokens` names. */
export function excludedTokenSet(
  setting: boolean | readonly number[],
  special: readonly number[],
): Set<number> {
  return new Set(setting === true ? special : setting === false ? [] : setting);
}
