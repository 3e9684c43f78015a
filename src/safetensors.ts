import { preview } from './config.js';
import { ModelFormatError } from './errors.js';
import { f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from './half.js';

/** Bytes per element of every safetensors dtype (so any valid file parses; the loader decides what it can use). */
const ITEM_SIZE: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
};

/** 100 MiB: far above any real header, low enough that a hostile length cannot make us allocate gigabytes. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;
const MAX_DIMS = 8;

export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  /** Byte view of this tensor's data inside the file. */
  data: Uint8Array;
}

export interface SafetensorsFile {
  file: string;
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

/**
 * Parses a safetensors file and checks everything that can be checked without the model config:
 * header bounds, JSON, dtype, shape × item size = byte span, spans inside the data section, no overlaps.
 */
export function parseSafetensors(bytes: Uint8Array, file = 'model.safetensors'): SafetensorsFile {
  const fail = (msg: string, item?: string): never => {
    // Tensor names come from the file: keep a hostile megabyte-long name out of the message.
    throw new ModelFormatError(file, msg, item !== undefined && item.length > 200 ? `${item.slice(0, 200)}...` : item);
  };
  if (bytes.byteLength < 8) fail(`file is ${bytes.byteLength} bytes, too short for a safetensors header`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(dv.getBigUint64(0, true));
  if (headerLen < 2 || headerLen > MAX_HEADER_BYTES) fail(`header length ${headerLen} is out of range`);
  if (8 + headerLen > bytes.byteLength) {
    fail(`header length ${headerLen} runs past the end of the file (${bytes.byteLength} bytes): truncated?`);
  }
  let header: unknown;
  let text = '';
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLen));
    header = JSON.parse(text);
  } catch (e) {
    fail(`header is not valid UTF-8 JSON (${preview((e as Error).message, 120)})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header must be a JSON object');
  // JSON.parse keeps the last of duplicate keys; another reader may keep the first. Refuse the
  // ambiguity rather than run weights that differ from what other tools show for the same file.
  const dup = duplicateKey(text);
  if (dup !== undefined) fail('key appears more than once in the header', dup);

  const dataStart = 8 + headerLen;
  const dataLen = bytes.byteLength - dataStart;
  const tensors = new Map<string, TensorInfo>();
  const spans: Array<[number, number, string]> = [];
  let metadata: Record<string, string> = {};

  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail('__metadata__ must be an object');
      // Spec: string values. Others are tolerated but rendered safely (String() recurses on nested arrays).
      metadata = Object.fromEntries(Object.entries(entry as object).map(([k, v]) => [k, typeof v === 'string' ? v : preview(v, 1000)]));
      continue;
    }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail('entry must be an object', name);
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    // hasOwn, not `in`: "toString" or "__proto__" must not pass as a dtype.
    if (typeof dtype !== 'string' || !Object.hasOwn(ITEM_SIZE, dtype)) fail(`unknown dtype ${preview(dtype)}`, name);
    if (!Array.isArray(shape) || shape.length > MAX_DIMS) fail('shape must be an array of at most 8 dimensions', name);
    const dims = shape as unknown[];
    let count = 1;
    for (const d of dims) {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) fail(`bad dimension ${preview(d)} in shape`, name);
      count *= d as number;
      if (count > Number.MAX_SAFE_INTEGER / 8) fail('shape is absurdly large', name);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2) fail('data_offsets must be [begin, end]', name);
    const [begin, end] = offsets as unknown[];
    if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || (begin as number) < 0 || (end as number) < (begin as number)) {
      fail(`bad data_offsets ${preview(offsets)}`, name);
    }
    const b = begin as number;
    const e = end as number;
    if (e > dataLen) fail(`data_offsets end ${e} is past the data section (${dataLen} bytes): truncated?`, name);
    const expected = count * ITEM_SIZE[dtype as string];
    if (e - b !== expected) {
      fail(`${dtype as string}${JSON.stringify(dims)} needs ${expected} bytes but data_offsets span ${e - b}`, name);
    }
    spans.push([b, e, name]);
    tensors.set(name, {
      name,
      dtype: dtype as string,
      shape: dims as number[],
      data: bytes.subarray(dataStart + b, dataStart + e),
    });
  }
  // As the reference implementation (safetensors' `validate`): the tensors tile the data section
  // exactly, without overlaps, gaps or trailing bytes. A file that does not was not written by it, or
  // was damaged (a gap or tail can hide data that other tools would read differently).
  spans.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let at = 0;
  for (const [b, e, name] of spans) {
    if (b < at) fail(`data overlaps the tensor before it (bytes ${b}..${at})`, name);
    if (b > at) fail(`bytes ${at}..${b} of the data section before this tensor belong to no tensor`, name);
    at = e;
  }
  if (at !== dataLen) fail(`${dataLen - at} bytes after the last tensor belong to no tensor (data section ${dataLen} bytes)`);
  return { file, tensors, metadata };
}

/**
 * The first key that occurs twice in one object of a (valid) JSON text, at any depth, or undefined.
 * A linear scan: strings are skipped whole, so braces inside names do not count.
 */
function duplicateKey(text: string): string | undefined {
  const objects: Array<Set<string> | null> = []; // null: an array level
  const n = text.length;
  for (let i = 0; i < n; ) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      while (j < n && text.charCodeAt(j) !== 0x22) {
        if (text.charCodeAt(j) === 0x5c /* \ */) {
          escaped = true;
          j++;
        }
        j++;
      }
      const raw = text.slice(i, j + 1);
      i = j + 1;
      const keys = objects[objects.length - 1];
      if (!keys) continue;
      let k = i;
      while (k < n && (text[k] === ' ' || text[k] === '\n' || text[k] === '\r' || text[k] === '\t')) k++;
      if (text.charCodeAt(k) !== 0x3a /* : */) continue; // a value, not a key
      // Compare decoded keys: "a" and "\u0061" are the same name.
      const key = escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1);
      if (keys.has(key)) return key;
      keys.add(key);
      continue;
    }
    if (c === 0x7b /* { */) objects.push(new Set());
    else if (c === 0x5b /* [ */) objects.push(null);
    else if (c === 0x7d || c === 0x5d) objects.pop();
    i++;
  }
  return undefined;
}

// --- dtype decoding -------------------------------------------------------------------------

// All 65536 half values, so decoding a tensor is one table lookup per element.
const f16Table = Float32Array.from({ length: 65536 }, (_, h) => f16BitsToF32(h));

/** Decodes an F32 / F16 / BF16 tensor to float32 (copying, so the result is aligned and owned). */
export function toFloat32(t: TensorInfo, file: string): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const dv = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  switch (t.dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = f16Table[dv.getUint16(2 * i, true)];
      break;
    case 'BF16': {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = dv.getUint16(2 * i, true) << 16;
      break;
    }
    default:
      throw new ModelFormatError(file, `dtype ${t.dtype} is not supported (F32, F16, BF16)`, t.name);
  }
  return out;
}

/** Encodes float32 values as safetensors bytes (used by tests and tools that write checkpoints). */
export function encodeSafetensors(
  tensors: Record<string, { dtype: 'F32' | 'F16' | 'BF16'; shape: number[]; data: Float32Array }>,
  metadata: Record<string, string> = { format: 'pt' },
): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = encodeDtype(t.data, t.dtype);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    parts.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((json.length + 8) % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.byteLength), true);
  out.set(head, 8);
  let p = 8 + head.byteLength;
  for (const part of parts) {
    out.set(part, p);
    p += part.byteLength;
  }
  return out;
}

function encodeDtype(data: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(data.slice().buffer);
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = dtype === 'F16' ? f32ToF16Bits(data[i]) : f32ToBf16Bits(data[i]);
  return new Uint8Array(out.buffer);
}

