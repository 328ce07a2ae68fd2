// Own reader/writer: npm:safetensors (0.0.1) is a browser-oriented read-only parser without the validation we need.
/**
 * Safetensors read/write with strict header validation (mirrors the Rust `safetensors` crate:
 * no overlaps, no holes, data section fully covered). Assumes a little-endian host, as every
 * WebGPU-capable platform is.
 * @module
 */

/** Element type names; each maps 1:1 to a safetensors dtype code (F32, BF16, ...). */
import { writeFileAtomic } from "./atomic.ts";

export type DType =
  | "float32"
  | "float64"
  | "float16"
  | "bfloat16"
  | "int64"
  | "int32"
  | "int16"
  | "int8"
  | "uint8"
  | "bool";

/** One tensor: `data` is the raw little-endian bytes (a view into the source buffer when read). */
export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

/** Tensor to write; `data` may be any typed array / DataView holding the raw bytes. */
export interface TensorInput {
  dtype: DType;
  shape: number[];
  data: ArrayBufferView;
}

/** Every malformed-file / bad-input failure in this module; messages name file and tensor. */
export class SafetensorsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

const BF = new DataView(new ArrayBuffer(4)); // scratch for bf16 -> f32 bit widening
type Get = (dv: DataView, o: number) => number;
/** dtype -> [safetensors code, bytes per element, little-endian element reader]. */
const DTYPES: Record<DType, [string, number, Get]> = {
  float32: ["F32", 4, (dv, o) => dv.getFloat32(o, true)],
  float64: ["F64", 8, (dv, o) => dv.getFloat64(o, true)],
  float16: ["F16", 2, (dv, o) => f16ToF32(dv.getUint16(o, true))],
  bfloat16: [
    "BF16",
    2,
    (dv, o) => (BF.setUint32(0, dv.getUint16(o, true) << 16), BF.getFloat32(0)),
  ],
  int64: ["I64", 8, (dv, o) => Number(dv.getBigInt64(o, true))],
  int32: ["I32", 4, (dv, o) => dv.getInt32(o, true)],
  int16: ["I16", 2, (dv, o) => dv.getInt16(o, true)],
  int8: ["I8", 1, (dv, o) => dv.getInt8(o)],
  uint8: ["U8", 1, (dv, o) => dv.getUint8(o)],
  bool: ["BOOL", 1, (dv, o) => (dv.getUint8(o) ? 1 : 0)],
};
const BY_CODE = new Map(Object.entries(DTYPES).map(([d, [c]]) => [c, d as DType]));

/** Bytes per element of a dtype. */
export function dtypeSize(dtype: DType): number {
  return DTYPES[dtype][1];
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Same limit as the Rust crate: a larger header is almost certainly corruption, not data. */
const MAX_HEADER = 100_000_000;

const FIX = "Re-create the file with a conforming writer (safetensors save_file or this module).";
const UTF8 = new TextDecoder("utf-8", { fatal: true });
const UTF8_LEN = (s: string) => new TextEncoder().encode(s).byteLength;
const isUint = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Parse an in-memory safetensors file. Throws SafetensorsError on any structural problem. */
export function parseSafetensors(
  bytes: Uint8Array,
  fileName = "<buffer>",
): { metadata: Record<string, string>; tensors: Map<string, TensorEntry> } {
  const fail = (msg: string): never => {
    throw new SafetensorsError(`${fileName}: ${msg}. ${FIX}`);
  };
  if (bytes.byteLength < 8) {
    fail(`only ${bytes.byteLength} bytes, less than the 8-byte length prefix`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = dv.getBigUint64(0, true);
  if (n === 0n) fail("header length is 0; a valid file has at least a '{}' JSON header");
  if (n > BigInt(MAX_HEADER)) {
    fail(`header length ${n} exceeds ${MAX_HEADER} bytes`);
  }
  const hlen = Number(n);
  if (8 + hlen > bytes.byteLength) {
    fail(`header length ${hlen} runs past end of ${bytes.byteLength}-byte file`);
  }
  let header: unknown;
  try {
    header = JSON.parse(UTF8.decode(bytes.subarray(8, 8 + hlen)));
  } catch (e) {
    fail(`header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    fail("header JSON is not an object mapping tensor names to {dtype, shape, data_offsets}");
  }
  const data = bytes.subarray(8 + hlen);
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorEntry>();
  const ranges: Array<[number, number, string]> = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
        fail("__metadata__ must be an object of string values");
      }
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== "string") {
          fail(`__metadata__["${k}"] is ${typeof v}; metadata values must be strings`);
        }
        metadata[k] = v as string;
      }
      continue;
    }
    const t = `tensor "${name}"`;
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      fail(`${t}: entry must be an object {dtype, shape, data_offsets}`);
    }
    const { dtype, shape, data_offsets: offs } = raw as Record<string, unknown>;
    const dt = BY_CODE.get(dtype as string);
    if (typeof dtype !== "string" || !dt) {
      const codes = [...BY_CODE.keys()].join(", ");
      fail(`${t}: unknown or missing dtype ${JSON.stringify(dtype)}; supported: ${codes}`);
    }
    if (!Array.isArray(shape) || !shape.every(isUint)) {
      fail(`${t}: shape ${JSON.stringify(shape)} must be an array of non-negative integers`);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isUint) || offs[0] > offs[1]) {
      const o = JSON.stringify(offs);
      fail(`${t}: data_offsets ${o} must be two non-negative integers [begin, end], begin <= end`);
    }
    const size = dtypeSize(dt!);
    const [b, e] = offs as [number, number];
    const want = numel(shape as number[]) * size;
    if (e - b !== want) {
      const sh = JSON.stringify(shape);
      fail(`${t}: data_offsets span ${e - b} bytes but shape ${sh} x ${dtype} needs ${want}`);
    }
    if (e > data.byteLength) {
      fail(`${t}: data_offsets [${b}, ${e}] outside the ${data.byteLength}-byte data section`);
    }
    ranges.push([b, e, name]);
    tensors.set(name, { name, dtype: dt!, shape: shape as number[], data: data.subarray(b, e) });
  }
  // Rust crate rule: sorted ranges must tile the data section exactly (no overlaps, no holes).
  ranges.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let end = 0, prev = "";
  for (const [b, e, name] of ranges) {
    if (b < end) {
      fail(`tensor "${name}" overlaps tensor "${prev}" (starts at ${b}, "${prev}" ends at ${end})`);
    }
    if (b > end) {
      fail(`tensor "${name}" starts at ${b}, leaving a hole after byte ${end} of the data section`);
    }
    end = e;
    prev = name;
  }
  if (end !== data.byteLength) {
    const last = prev ? `tensor "${prev}"` : "the header";
    fail(`${data.byteLength - end} trailing bytes after ${last} belong to no tensor`);
  }
  return { metadata, tensors };
}

/** Read and parse a safetensors file; errors (including a missing file) name `path`. */
export async function readSafetensors(
  path: string,
): Promise<{ metadata: Record<string, string>; tensors: Map<string, TensorEntry> }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new SafetensorsError(`${path}: file not found; check the path`);
    }
    throw new SafetensorsError(`${path}: cannot read file (${(e as Error).message})`);
  }
  return parseSafetensors(bytes, path);
}

/** Decode any supported dtype into numbers (copying, so source alignment never matters). */
function decode<T extends Float32Array | Float64Array>(entry: TensorEntry, out: T): T {
  const dv = new DataView(entry.data.buffer, entry.data.byteOffset, entry.data.byteLength);
  const [, size, get] = DTYPES[entry.dtype];
  for (let i = 0; i < out.length; i++) out[i] = get(dv, i * size);
  return out;
}

/** Convert a tensor of any supported dtype to a fresh Float32Array. */
export function toFloat32(entry: TensorEntry): Float32Array {
  return decode(entry, new Float32Array(entry.data.byteLength / dtypeSize(entry.dtype)));
}

/** Convert a tensor of any supported dtype to a fresh Float64Array. */
export function toFloat64(entry: TensorEntry): Float64Array {
  return decode(entry, new Float64Array(entry.data.byteLength / dtypeSize(entry.dtype)));
}

/**
 * Serialize tensors (+ optional string metadata). The header is space-padded so data starts at a
 * multiple of 8. Tensors are laid out contiguously (holes are invalid) in a stable order by
 * descending element size, so every tensor is naturally aligned; same-size tensors keep input order.
 */
export function serializeSafetensors(
  tensors: Array<TensorInput & { name: string }> | Record<string, TensorInput>,
  metadata?: Record<string, string>,
): Uint8Array {
  const list = Array.isArray(tensors)
    ? tensors
    : Object.entries(tensors).map(([name, t]) => ({ name, ...t }));
  const seen = new Set<string>();
  const items = list.map((t) => {
    const fail = (msg: string): never => {
      throw new SafetensorsError(`serialize: tensor "${t.name}": ${msg}`);
    };
    if (t.name === "__metadata__" || seen.has(t.name)) fail("name is reserved or duplicated");
    seen.add(t.name);
    if (!Object.hasOwn(DTYPES, t.dtype)) fail(`unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every(isUint)) {
      fail(`shape ${JSON.stringify(t.shape)} must be non-negative integers`);
    }
    const want = numel(t.shape) * dtypeSize(t.dtype);
    if (t.data.byteLength !== want) {
      const sh = JSON.stringify(t.shape);
      fail(`data has ${t.data.byteLength} bytes but shape ${sh} x ${t.dtype} needs ${want}`);
    }
    return { ...t, bytes: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
  });
  for (const [k, v] of Object.entries(metadata ?? {})) {
    if (typeof v !== "string") {
      throw new SafetensorsError(`serialize: metadata "${k}" must be a string`);
    }
  }
  const ordered = items.map((t, i) => ({ t, i }))
    .sort((a, b) => dtypeSize(b.t.dtype) - dtypeSize(a.t.dtype) || a.i - b.i).map((x) => x.t);
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let off = 0;
  for (const t of ordered) {
    header[t.name] = {
      dtype: DTYPES[t.dtype][0],
      shape: t.shape,
      data_offsets: [off, off + t.bytes.byteLength],
    };
    off += t.bytes.byteLength;
  }
  // Pad with spaces (valid JSON whitespace) so the data section starts 8-byte aligned.
  const hs = JSON.stringify(header);
  const json = new TextEncoder().encode(hs + " ".repeat((8 - (UTF8_LEN(hs) % 8)) % 8));
  const out = new Uint8Array(8 + json.byteLength + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  let pos = 8 + json.byteLength;
  for (const t of ordered) {
    out.set(t.bytes, pos);
    pos += t.bytes.byteLength;
  }
  return out;
}

/**
 * Serialize, write to `${path}.tmp-<random>` in the same directory, fsync, then rename over `path`.
 * Serialization happens first, so a bad tensor never touches the disk; `path` is never half-written.
 */
export async function writeSafetensorsAtomic(
  path: string,
  tensors: Parameters<typeof serializeSafetensors>[0],
  metadata?: Record<string, string>,
): Promise<void> {
  const bytes = serializeSafetensors(tensors, metadata);
  try {
    await writeFileAtomic(path, bytes);
  } catch (e) {
    throw new SafetensorsError(`${path}: write failed (${(e as Error).message})`);
  }
}
