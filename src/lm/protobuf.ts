/**
 * A minimal protobuf wire-format reader/writer: enough to edit ONNX models without a protobuf
 * dependency. A message is read as its list of fields, each keeping its exact bytes, so fields
 * the caller does not touch are written back unchanged (initializer data is never copied while
 * reading: payloads are views into the source buffer).
 * @module
 */

/** Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 (3/4, groups, are refused). */
export type WireType = 0 | 1 | 2 | 5;

/** One field occurrence of a message. */
export interface Field {
  /** Field number. */
  readonly number: number;
  readonly wire: WireType;
  /** The whole field as it appears in the source: tag, length prefix and payload. */
  readonly raw: Uint8Array;
  /** Length-delimited payload (wire type 2); `undefined` otherwise. */
  readonly bytes?: Uint8Array;
  /** Value of a varint field (wire type 0), exact up to 2^53; larger values are rounded. */
  readonly varint?: number;
}

/** A malformed message; the text names what was being read and the byte offset. */
export class ProtobufError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtobufError";
  }
}

/** Reads the varint at `pos`; returns [value, next position]. */
export function readVarint(buf: Uint8Array, pos: number, what: string): [number, number] {
  let value = 0, scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) {
      throw new ProtobufError(`${what}: truncated varint at byte ${pos} (of ${buf.length})`);
    }
    const b = buf[pos++];
    value += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) {
      // A 10-byte varint is a negative int64 in two's complement.
      return [i === 9 && value >= 2 ** 63 ? value - 2 ** 64 : value, pos];
    }
    scale *= 128;
  }
  throw new ProtobufError(`${what}: varint longer than 10 bytes at byte ${pos}`);
}

/** Splits a message into its fields (in order). */
export function readFields(buf: Uint8Array, what: string): Field[] {
  const fields: Field[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const start = pos;
    let tag: number;
    [tag, pos] = readVarint(buf, pos, what);
    const number = Math.floor(tag / 8), wire = tag % 8;
    if (number === 0) throw new ProtobufError(`${what}: field number 0 at byte ${start}`);
    switch (wire) {
      case 0: {
        let varint: number;
        [varint, pos] = readVarint(buf, pos, what);
        fields.push({ number, wire, raw: buf.subarray(start, pos), varint });
        break;
      }
      case 1:
      case 5: {
        const size = wire === 1 ? 8 : 4;
        if (pos + size > buf.length) {
          throw new ProtobufError(
            `${what}: truncated fixed${size * 8} field ${number} at byte ${start}`,
          );
        }
        pos += size;
        fields.push({ number, wire, raw: buf.subarray(start, pos) });
        break;
      }
      case 2: {
        let len: number;
        [len, pos] = readVarint(buf, pos, what);
        if (len < 0 || pos + len > buf.length) {
          throw new ProtobufError(
            `${what}: field ${number} at byte ${start} claims ${len} bytes but only ${
              buf.length - pos
            } remain (truncated or not this kind of message)`,
          );
        }
        const bytes = buf.subarray(pos, pos + len);
        pos += len;
        fields.push({ number, wire, raw: buf.subarray(start, pos), bytes });
        break;
      }
      default:
        throw new ProtobufError(
          `${what}: unsupported wire type ${wire} (field ${number}) at byte ${start}`,
        );
    }
  }
  return fields;
}

const utf8 = new TextDecoder("utf-8", { fatal: false });
const utf8Encoder = new TextEncoder();

/** The UTF-8 string of a length-delimited field. */
export function fieldString(f: Field): string {
  return utf8.decode(f.bytes ?? new Uint8Array());
}

/** Every value of a repeated int field, packed or not. */
export function repeatedInts(fields: Field[], number: number, what: string): number[] {
  const out: number[] = [];
  for (const f of fields) {
    if (f.number !== number) continue;
    if (f.wire === 0) out.push(f.varint!);
    else if (f.wire === 2) {
      let pos = 0;
      const b = f.bytes!;
      while (pos < b.length) {
        let v: number;
        [v, pos] = readVarint(b, pos, what);
        out.push(v);
      }
    }
  }
  return out;
}

/** Encodes a non-negative integer as a varint. */
export function encodeVarint(value: number): Uint8Array {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new ProtobufError(`cannot encode ${value} as a varint`);
  }
  const out: number[] = [];
  while (value >= 128) {
    out.push((value % 128) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return Uint8Array.from(out);
}

/** A varint field. */
export function varintField(number: number, value: number): Uint8Array {
  return concatBytes([encodeVarint(number * 8), encodeVarint(value)]);
}

/** A length-delimited field holding `payload` (bytes, a string, or already-encoded parts). */
export function bytesField(
  number: number,
  payload: Uint8Array | string | Uint8Array[],
): Uint8Array {
  const body = typeof payload === "string"
    ? utf8Encoder.encode(payload)
    : Array.isArray(payload)
    ? concatBytes(payload)
    : payload;
  return concatBytes([encodeVarint(number * 8 + 2), encodeVarint(body.length), body]);
}

/** Concatenates byte arrays into one. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
