import { CONFIG_LIMITS, preview } from './config.js';
import { ModelFormatError } from './errors.js';
import { parseJsonBytes, parseJsonBytesAsync } from './json.js';
import { f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from './half.js';

/** Bytes per element of every safetensors dtype (so any valid file parses; the loader decides what it can use). */
const ITEM_SIZE: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
};

/**
 * Header bytes a file of `tensors` tensors may need: a real entry is ~100-150 bytes
 * (`"backbone.layers.63.mixer.out_proj.weight":{"dtype":"F32","shape":[2560,5120],"data_offsets":[…]}`),
 * plus room for `__metadata__`. The loader derives the tensor count from config.json, so a header
 * far larger than the config implies is refused from its 8-byte length, before it is read.
 */
export function maxHeaderBytesFor(tensors: number): number {
  return 64 * 1024 + 1024 * tensors;
}
/** The most tensors any config inside `CONFIG_LIMITS` implies (12 a layer, embedding, norm_f, lm_head). */
export const MAX_TENSORS = CONFIG_LIMITS.num_hidden_layers * 12 + 3;
/** The header bound when no config is known (~48 MiB): what the largest config allows. */
export const MAX_HEADER_BYTES = maxHeaderBytesFor(MAX_TENSORS);
/** Values + keys of one tensor entry: name, object, 3 keys, dtype, shape (<= 8 dims + array), 2 offsets + array. */
const ENTRIES_PER_TENSOR = 16;
/** Entries allowed for `__metadata__` on top of the tensors'. */
const METADATA_ENTRIES = 4096;
const MAX_DIMS = 8;

export interface SafetensorsLimits {
  /** Refuse a header longer than this (default `MAX_HEADER_BYTES`). */
  maxHeaderBytes?: number;
  /** Refuse a header listing more tensors than this (default `MAX_TENSORS`). */
  maxTensors?: number;
}

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
 * Checks the 8-byte header length of a file of `fileBytes` bytes whose first bytes are `head`, and
 * returns it. Runs on the first 8 bytes alone, so a reader can refuse a file before reading the rest.
 * The length is never quoted: for a file that is not safetensors it is just its first 8 bytes.
 */
export function checkHeaderLength(head: Uint8Array, fileBytes: number, file: string, maxHeaderBytes = MAX_HEADER_BYTES): number {
  if (fileBytes < 8 || head.byteLength < 8) throw new ModelFormatError(file, `file is ${fileBytes} bytes, too short for a safetensors header`);
  const headerLen = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
  if (headerLen < 2n) throw new ModelFormatError(file, 'header length is out of range (under 2 bytes): not a safetensors file?');
  if (headerLen > BigInt(maxHeaderBytes)) {
    throw new ModelFormatError(file, `header length is out of range: more than the ${maxHeaderBytes} bytes its tensors can need (not a safetensors file, or not for this config?)`);
  }
  if (8n + headerLen > BigInt(fileBytes)) {
    throw new ModelFormatError(file, `header length runs past the end of the file (${fileBytes} bytes): truncated?`);
  }
  return Number(headerLen);
}

function jsonLimits(l: SafetensorsLimits) {
  const tensors = l.maxTensors ?? MAX_TENSORS;
  // Keys per object: the tensors and __metadata__ at the top, or the metadata's own entries.
  return { maxEntries: ENTRIES_PER_TENSOR * tensors + METADATA_ENTRIES, maxKeys: Math.max(tensors + 1, METADATA_ENTRIES / 2), uniqueKeys: true };
}

/**
 * Parses a safetensors file and checks everything that can be checked without the model config:
 * header bounds, JSON (bounded: nesting, entries, unique keys), dtype, shape × item size = byte span,
 * spans tiling the data section.
 */
export function parseSafetensors(bytes: Uint8Array, file = 'model.safetensors', limits: SafetensorsLimits = {}): SafetensorsFile {
  const headerLen = checkHeaderLength(bytes, bytes.byteLength, file, limits.maxHeaderBytes);
  // JSON.parse keeps the last of duplicate keys; another reader may keep the first. The scan refuses
  // the ambiguity rather than run weights that differ from what other tools show for the same file.
  const header = parseJsonBytes(bytes.subarray(8, 8 + headerLen), file, jsonLimits(limits), 'header');
  return tensorsOf(bytes, headerLen, header, file, limits);
}

/** As `parseSafetensors`, but a long header scan yields to the event loop and stops on `signal`. */
export async function parseSafetensorsAsync(
  bytes: Uint8Array,
  file: string,
  limits: SafetensorsLimits & { signal?: AbortSignal } = {},
): Promise<SafetensorsFile> {
  const headerLen = checkHeaderLength(bytes, bytes.byteLength, file, limits.maxHeaderBytes);
  const header = await parseJsonBytesAsync(bytes.subarray(8, 8 + headerLen), file, jsonLimits(limits), 'header', limits.signal);
  return tensorsOf(bytes, headerLen, header, file, limits);
}

function tensorsOf(bytes: Uint8Array, headerLen: number, header: unknown, file: string, limits: SafetensorsLimits): SafetensorsFile {
  // ModelFormatError truncates the name: a hostile megabyte-long tensor name stays out of the message.
  const fail = (msg: string, item?: string): never => {
    throw new ModelFormatError(file, msg, item);
  };
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header must be a JSON object');
  const maxTensors = limits.maxTensors ?? MAX_TENSORS;
  const names = Object.keys(header as object);
  if (names.filter((k) => k !== '__metadata__').length > maxTensors) fail(`header lists more than the ${maxTensors} tensors expected`);

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

