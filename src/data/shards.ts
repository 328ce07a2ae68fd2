/**
 * Sharded datasets on disk: a directory of safetensors shards and a `manifest.json` listing them
 * with their row counts and what they hold. Used for token shards (`deno task pretokenize`:
 * tensor `input_ids` [rows, context_size] int32) and activation shards (`deno task cache`:
 * `activations` [rows, d_in] float32 and `token_ids` [rows] int32).
 *
 * Writing is atomic twice over: each shard is written to a temporary file and renamed, and the
 * whole directory is built under a temporary name and renamed into place once the manifest is
 * written, so a reader never sees a partial dataset. Reading validates each shard against the
 * manifest when it is opened; a bad shard is reported by file name.
 * @module
 */
import { basename, join } from "node:path";
import { writeFileAtomic } from "../io/atomic.ts";
import {
  type DType,
  parseSafetensors,
  SafetensorsError,
  type TensorEntry,
  writeSafetensorsAtomic,
} from "../io/safetensors.ts";

/** A missing, incomplete or corrupt sharded dataset; the message names the file. */
export class ShardError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ShardError";
  }
}

export interface ShardEntry {
  file: string;
  rows: number;
}

export interface ShardManifest {
  format: string;
  version: 1;
  /** Rows in all shards. */
  rows: number;
  shards: ShardEntry[];
  [key: string]: unknown;
}

/** One tensor every shard holds: rows × `rowShape`. */
export interface ShardTensorSpec {
  name: string;
  dtype: DType;
  /** Shape of one row (e.g. [context_size], [d_in], []). */
  rowShape: number[];
}

/** Reads and checks `dir/manifest.json` (format, shard list, row counts). */
export async function readManifest(
  dir: string,
  format: string,
  what: string,
): Promise<ShardManifest> {
  const path = join(dir, "manifest.json");
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      const exists = await Deno.stat(dir).then(() => true, () => false);
      throw new ShardError(
        exists
          ? `${path}: missing; ${dir} is not a finished ${what} (the manifest is written last)`
          : `${dir}: ${what} directory not found`,
      );
    }
    throw new ShardError(`${path}: cannot read (${(e as Error).message})`);
  }
  let m: ShardManifest;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new ShardError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (m?.format !== format) {
    throw new ShardError(
      `${path}: format is ${JSON.stringify(m?.format)}, expected "${format}" (a ${what})`,
    );
  }
  if (m.version !== 1) {
    throw new ShardError(`${path}: unsupported version ${JSON.stringify(m.version)}`);
  }
  if (!Array.isArray(m.shards) || m.shards.length === 0) {
    throw new ShardError(`${path}: no shards listed`);
  }
  let rows = 0;
  for (const s of m.shards) {
    if (
      typeof s?.file !== "string" || basename(s.file) !== s.file || !Number.isSafeInteger(s.rows) ||
      s.rows <= 0
    ) {
      throw new ShardError(`${path}: bad shard entry ${JSON.stringify(s)}`);
    }
    rows += s.rows;
  }
  if (rows !== m.rows) {
    throw new ShardError(`${path}: shards hold ${rows} rows, manifest says ${m.rows}`);
  }
  return m;
}

/** Random access to the rows of a sharded dataset; shards are loaded and validated on demand. */
export class ShardReader {
  private readonly starts: number[] = [];
  private readonly cache = new Map<number, Map<string, TensorEntry>>();

  constructor(
    readonly dir: string,
    readonly manifest: ShardManifest,
    readonly specs: readonly ShardTensorSpec[],
    private readonly check?: (shard: string, tensors: Map<string, TensorEntry>) => void,
    private readonly cacheShards = 2,
  ) {
    let start = 0;
    for (const s of manifest.shards) {
      this.starts.push(start);
      start += s.rows;
    }
  }

  get rows(): number {
    return this.manifest.rows;
  }

  private async shard(i: number): Promise<Map<string, TensorEntry>> {
    const hit = this.cache.get(i);
    if (hit) return hit;
    const entry = this.manifest.shards[i];
    const path = join(this.dir, entry.file);
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (e) {
      throw new ShardError(
        e instanceof Deno.errors.NotFound
          ? `${path}: shard listed in manifest.json is missing`
          : `${path}: cannot read shard (${(e as Error).message})`,
      );
    }
    let tensors: Map<string, TensorEntry>;
    try {
      tensors = parseSafetensors(bytes, path).tensors;
    } catch (e) {
      if (e instanceof SafetensorsError) {
        throw new ShardError(`shard ${path} is corrupt: ${e.message}`);
      }
      throw e;
    }
    for (const spec of this.specs) {
      const t = tensors.get(spec.name);
      const shape = [entry.rows, ...spec.rowShape];
      if (!t) throw new ShardError(`shard ${path} is corrupt: no tensor "${spec.name}"`);
      if (t.dtype !== spec.dtype || JSON.stringify(t.shape) !== JSON.stringify(shape)) {
        throw new ShardError(
          `shard ${path} is corrupt: "${spec.name}" is ${t.dtype} [${t.shape}], expected ${spec.dtype} [${shape}]`,
        );
      }
    }
    this.check?.(path, tensors);
    this.cache.set(i, tensors);
    if (this.cache.size > this.cacheShards) this.cache.delete(this.cache.keys().next().value!);
    return tensors;
  }

  /** Elements per row of a tensor. */
  private rowSize(name: string): number {
    return this.specs.find((s) => s.name === name)!.rowShape.reduce((a, b) => a * b, 1);
  }

  /** Copies rows [start, start+count) of tensor `name` into `out` (typed array of its dtype). */
  async readRows<T extends Int32Array | Float32Array>(
    name: string,
    start: number,
    count: number,
    out: T,
  ): Promise<T> {
    const size = this.rowSize(name);
    let done = 0;
    while (done < count) {
      const row = start + done;
      let i = this.starts.length - 1;
      while (this.starts[i] > row) i--;
      const local = row - this.starts[i];
      const n = Math.min(count - done, this.manifest.shards[i].rows - local);
      const t = (await this.shard(i)).get(name)!;
      const bytesPerRow = size * out.BYTES_PER_ELEMENT;
      const src = t.data.slice(local * bytesPerRow, (local + n) * bytesPerRow); // aligned copy
      const view = out instanceof Int32Array
        ? new Int32Array(src.buffer)
        : new Float32Array(src.buffer);
      out.set(view, done * size);
      done += n;
    }
    return out;
  }
}

/** Writes shards of `shardRows` rows into a temporary directory, then publishes it. */
export class ShardWriter {
  private readonly temp: string;
  private readonly shards: ShardEntry[] = [];
  private pending: Record<string, ArrayBufferView[]> = {};
  private pendingRows = 0;
  private total = 0;
  private created = false;

  constructor(
    readonly dir: string,
    readonly format: string,
    readonly prefix: string,
    readonly specs: readonly ShardTensorSpec[],
    readonly shardRows: number,
  ) {
    this.temp = `${dir}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  }

  /** Refuses to overwrite an existing dataset. */
  async begin(): Promise<void> {
    if (await Deno.stat(this.dir).then(() => true, () => false)) {
      throw new ShardError(
        `${this.dir}: already exists; remove it or choose another output directory`,
      );
    }
    await Deno.mkdir(this.temp, { recursive: true });
    this.created = true;
  }

  /** Appends `rows` rows: one typed array per spec, in spec order. */
  async add(rows: number, data: ArrayBufferView[]): Promise<void> {
    this.specs.forEach((s, i) => (this.pending[s.name] ??= []).push(data[i]));
    this.pendingRows += rows;
    while (this.pendingRows >= this.shardRows) await this.flush(this.shardRows);
  }

  private async flush(rows: number): Promise<void> {
    const file = `${this.prefix}-${String(this.shards.length).padStart(5, "0")}.safetensors`;
    const tensors: Record<string, { dtype: DType; shape: number[]; data: ArrayBufferView }> = {};
    const rest: Record<string, ArrayBufferView[]> = {};
    for (const spec of this.specs) {
      const parts = this.pending[spec.name];
      const all = concatViews(parts);
      const bytesPerRow = all.byteLength / this.pendingRows;
      tensors[spec.name] = {
        dtype: spec.dtype,
        shape: [rows, ...spec.rowShape],
        data: all.subarray(0, rows * bytesPerRow),
      };
      rest[spec.name] = [all.slice(rows * bytesPerRow)];
    }
    await writeSafetensorsAtomic(join(this.temp, file), tensors);
    this.shards.push({ file, rows });
    this.total += rows;
    this.pending = rest;
    this.pendingRows -= rows;
  }

  /** Writes the last shard and the manifest (with `meta`), then renames the directory into place. */
  async finish(meta: Record<string, unknown>): Promise<ShardManifest> {
    if (this.pendingRows > 0) await this.flush(this.pendingRows);
    const manifest: ShardManifest = {
      format: this.format,
      version: 1,
      ...meta,
      rows: this.total,
      shards: this.shards,
    };
    await writeFileAtomic(
      join(this.temp, "manifest.json"),
      new TextEncoder().encode(JSON.stringify(manifest, null, 2) + "\n"),
    );
    await Deno.rename(this.temp, this.dir);
    this.created = false;
    return manifest;
  }

  /** Removes the temporary directory after a failure. */
  async abort(): Promise<void> {
    if (this.created) await Deno.remove(this.temp, { recursive: true }).catch(() => {});
    this.created = false;
  }
}

function concatViews(parts: ArrayBufferView[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.byteLength;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), o);
    o += p.byteLength;
  }
  return out;
}
