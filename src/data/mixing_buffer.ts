/**
 * SAELens's activation mixing buffer (`sae_lens/training/mixing_buffer.py`): new activations are
 * appended to a storage buffer; once it holds at least `bufferSize` rows it is shuffled, the
 * first `max(1, n // (2·batch))` batches are served and the rest is kept, so every served batch
 * mixes old and new activations.
 *
 * Every row carries an id (its provenance, e.g. a global token index) so a source can describe
 * the buffer's exact contents in a checkpoint and rebuild it on resume.
 * @module
 */
import type { Rng } from "../util/rng.ts";

export class MixingBuffer {
  private storeIds: Float64Array;
  private storeActs: Float32Array;
  private stored = 0;
  private queueIds = new Float64Array(0);
  private queueActs = new Float32Array(0);
  private queueStart = 0;

  constructor(readonly dIn: number, readonly bufferSize: number, readonly rng: Rng) {
    this.storeIds = new Float64Array(0);
    this.storeActs = new Float32Array(0);
  }

  /** Rows waiting in the storage buffer (not yet served). */
  get storedRows(): number {
    return this.stored;
  }

  /** Rows shuffled and ready to serve. */
  get queuedRows(): number {
    return this.queueIds.length - this.queueStart;
  }

  private reserve(rows: number): void {
    if (rows <= this.storeIds.length) return;
    const cap = Math.max(rows, Math.ceil(this.storeIds.length * 1.5));
    const ids = new Float64Array(cap), acts = new Float32Array(cap * this.dIn);
    ids.set(this.storeIds.subarray(0, this.stored));
    acts.set(this.storeActs.subarray(0, this.stored * this.dIn));
    this.storeIds = ids;
    this.storeActs = acts;
  }

  /** Appends `ids.length` rows (acts: [rows, dIn] row-major). */
  add(ids: ArrayLike<number>, acts: Float32Array): void {
    const n = ids.length;
    if (acts.length !== n * this.dIn) {
      throw new Error(`MixingBuffer.add: ${acts.length} values for ${n} rows`);
    }
    this.reserve(this.stored + n);
    this.storeIds.set(ids, this.stored);
    this.storeActs.set(acts, this.stored * this.dIn);
    this.stored += n;
  }

  /** Whether the storage holds enough rows to mix (SAELens: `len >= buffer_size`). */
  full(): boolean {
    return this.stored >= this.bufferSize;
  }

  /** Shuffles the storage and moves `max(1, n // (2·batch))` batches of it to the serving queue. */
  mix(batch: number): void {
    const n = this.stored, d = this.dIn;
    // Fisher-Yates on a permutation, then one gather.
    const perm = new Uint32Array(n);
    for (let i = 0; i < n; i++) perm[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(this.rng.next() * (i + 1));
      const t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
    const serve = Math.min(n, Math.max(1, Math.floor(n / (2 * batch))) * batch);
    const remaining = this.queuedRows;
    const qIds = new Float64Array(remaining + serve),
      qActs = new Float32Array((remaining + serve) * d);
    qIds.set(this.queueIds.subarray(this.queueStart));
    qActs.set(this.queueActs.subarray(this.queueStart * d));
    const keepIds = new Float64Array(Math.max(this.storeIds.length, n - serve));
    const keepActs = new Float32Array(keepIds.length * d);
    for (let r = 0; r < n; r++) {
      const src = perm[r];
      if (r < serve) {
        qIds[remaining + r] = this.storeIds[src];
        qActs.set(this.storeActs.subarray(src * d, (src + 1) * d), (remaining + r) * d);
      } else {
        keepIds[r - serve] = this.storeIds[src];
        keepActs.set(this.storeActs.subarray(src * d, (src + 1) * d), (r - serve) * d);
      }
    }
    this.queueIds = qIds;
    this.queueActs = qActs;
    this.queueStart = 0;
    this.storeIds = keepIds;
    this.storeActs = keepActs;
    this.stored = n - serve;
  }

  /** Ids of the rows the last `take` returned. */
  lastIds: Float64Array = new Float64Array(0);

  /** The next `rows` served rows: [rows, dIn]. Throws when fewer are queued. */
  take(rows: number): Float32Array {
    if (this.queuedRows < rows) {
      throw new Error(`MixingBuffer.take: ${this.queuedRows} queued rows, ${rows} asked`);
    }
    const d = this.dIn;
    const out = this.queueActs.slice(this.queueStart * d, (this.queueStart + rows) * d);
    this.lastIds = this.queueIds.slice(this.queueStart, this.queueStart + rows);
    this.queueStart += rows;
    return out;
  }

  /** Ids of the stored rows and of the queued rows, in order. */
  snapshot(): { stored: Float64Array; queued: Float64Array } {
    return {
      stored: this.storeIds.slice(0, this.stored),
      queued: this.queueIds.slice(this.queueStart),
    };
  }

  /**
   * Replaces the contents with rows of the given ids; `fill(ids)` returns their activations,
   * [ids.length, dIn], in the same order.
   */
  async load(
    snapshot: { stored: Float64Array; queued: Float64Array },
    fill: (ids: Float64Array) => Promise<Float32Array>,
  ): Promise<void> {
    const all = new Float64Array(snapshot.stored.length + snapshot.queued.length);
    all.set(snapshot.stored);
    all.set(snapshot.queued, snapshot.stored.length);
    const acts = await fill(all);
    const d = this.dIn, s = snapshot.stored.length;
    this.storeIds = snapshot.stored.slice();
    this.storeActs = acts.slice(0, s * d);
    this.stored = s;
    this.queueIds = snapshot.queued.slice();
    this.queueActs = acts.slice(s * d);
    this.queueStart = 0;
  }
}

/** Float64Array <-> base64 (little-endian), for ids in JSON checkpoints. */
export function encodeIds(ids: Float64Array): string {
  const bytes = new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function decodeIds(text: string, what: string): Float64Array {
  let bin: string;
  try {
    bin = atob(text);
  } catch {
    throw new Error(`${what}: not base64`);
  }
  if (bin.length % 8 !== 0) {
    throw new Error(`${what}: ${bin.length} bytes is not a whole number of ids`);
  }
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float64Array(bytes.buffer);
}
