/**
 * Fuzzes the loader with mutated, truncated and hand-crafted hostile model files. Every input must
 * either load or fail with a `MambaError` subclass whose message names the file at fault: never a
 * TypeError/RangeError, a crash or a hang, and within a time and memory bound per case. A new seed
 * every run, printed (replay with `FUZZ_SEED=<n> npx vitest run test/fuzz.test.ts`); small synthetic
 * models (hidden 8-16), so 10,000+ loads take seconds. Besides in-memory files, cases come from
 * directories (with FIFOs, symlinks in and out, sparse files, directories in place of files), from a
 * local HTTP server (with faults) and its cache, through a worker, and on the wasm backend.
 * FUZZ_VERBOSE=1 prints every error message.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { assetUrl } from '../src/assets.js';
import { activeEngineWorkers, loadModelInWorker } from '../src/runtime.js';
import {
  loadModel,
  MambaError,
  ModelFormatError,
  ModelNotFoundError,
  OutOfMemoryError,
  parseSafetensors,
  UnsupportedModelError,
} from '../src/index.js';
import { readModel } from '../src/loader.js';
import { syntheticModel, type SyntheticSpec } from '../src/synthetic.js';

type Files = Record<string, string | Uint8Array>;

/** A new seed each run unless FUZZ_SEED replays one; printed so any failure can be replayed. */
const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) >>> 0 : (Date.now() ^ (Math.random() * 2 ** 32)) >>> 0;
console.log(`fuzz seed ${SEED} (replay: FUZZ_SEED=${SEED} npx vitest run test/fuzz.test.ts)`);

/** mulberry32: tiny, fast, deterministic. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick };
}
type Rng = ReturnType<typeof rng>;

interface Base {
  name: string;
  config: Record<string, unknown>;
  st: Uint8Array;
  header: Record<string, any>;
  headerLen: number;
  data: Uint8Array;
}

function makeBase(name: string, spec: SyntheticSpec): Base {
  const files = syntheticModel(spec);
  const st = files['model.safetensors'];
  const headerLen = Number(new DataView(st.buffer, st.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(st.subarray(8, 8 + headerLen)));
  return { name, config: JSON.parse(files['config.json']), st, header, headerLen, data: st.subarray(8 + headerLen) };
}

const BASES = [
  makeBase('hf8', { hidden_size: 8, num_hidden_layers: 1, seed: 1 }),
  makeBase('hf16-bias-untied-f16', { hidden_size: 16, num_hidden_layers: 2, use_bias: true, tie_word_embeddings: false, dtype: 'F16', seed: 2 }),
  makeBase('ssm8-bf16', { hidden_size: 8, num_hidden_layers: 1, naming: 'mamba_ssm', dtype: 'BF16', seed: 3 }),
  makeBase('hf8-small', { hidden_size: 8, num_hidden_layers: 1, use_conv_bias: false, time_step_rank: 2, state_size: 4, conv_kernel: 2, seed: 4 }),
];

/** Safetensors bytes from raw header text (which may be anything) and a data section. */
function assemble(headerText: string, data: Uint8Array, lengthOverride?: bigint): Uint8Array {
  const head = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + head.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(head.length), true);
  out.set(head, 8);
  out.set(data, 8 + head.length);
  return out;
}

/** JSON text of `value` with every "__RAW__n" string replaced by raw JSON text (deep nesting, 1e400...). */
function withRaw(value: unknown, raws: string[]): string {
  return JSON.stringify(value).replace(/"__RAW__(\d+)"/g, (_, i) => raws[Number(i)]);
}

const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
/** Hostile JSON values, as raw text, for any field. */
const HOSTILE = [
  '-1', '0', '-0', '1', '2', '1.5', '-2.5', '1e9', '1e400', '-1e400', '4294967296', '1099511627776', '9007199254740993',
  '1e308', '"8"', '""', '"auto"', 'null', 'true', 'false', '[]', '[8]', '[[8]]', '{}', '{"a":1}', '{"__proto__":{"x":1}}',
  deep(5000), `"${'x'.repeat(100_000)}"`, '"\\u0000"', '"toString"', '"__proto__"', '"constructor"',
];
const HUGE_DIMS = [2 ** 40, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 26, 1e9];

function cloneHeader(b: Base): Record<string, any> {
  return JSON.parse(JSON.stringify(b.header));
}
const tensorNames = (h: Record<string, unknown>) => Object.keys(h).filter((k) => k !== '__metadata__');

// --- safetensors mutators -------------------------------------------------------------------

const stMutators: Array<(r: Rng, b: Base) => Uint8Array> = [
  // byte flips in the header JSON
  (r, b) => {
    const out = b.st.slice();
    for (let k = 1 + r.int(3); k > 0; k--) {
      const i = 8 + r.int(b.headerLen);
      out[i] = r.next() < 0.5 ? out[i] ^ (1 << r.int(8)) : r.pick([0x22, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x2d, 0x30, 0x39, 0x00, 0xff, 0x5c]);
    }
    return out;
  },
  // byte flips anywhere (mostly weights: loads, or non-finite values)
  (r, b) => {
    const out = b.st.slice();
    for (let k = 1 + r.int(8); k > 0; k--) out[r.int(out.length)] ^= 1 << r.int(8);
    return out;
  },
  // truncation
  (r, b) => b.st.slice(0, r.next() < 0.3 ? r.int(8 + b.headerLen + 16) : r.int(b.st.length)),
  // header length field
  (r, b) => {
    const out = b.st.slice();
    const choices = [0n, 1n, 2n, 7n, BigInt(b.headerLen - 1), BigInt(b.headerLen + 1), BigInt(b.headerLen + 8), BigInt(b.st.length),
      BigInt(b.st.length - 8), 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, 100n * 1024n * 1024n, BigInt(r.int(2 ** 30))];
    new DataView(out.buffer).setBigUint64(0, r.pick(choices), true);
    return out;
  },
  // shapes: huge, negative, float, string, nested, too many dims
  (r, b) => {
    const h = cloneHeader(b);
    const t = h[r.pick(tensorNames(h))];
    const raws: string[] = [];
    const v = r.next();
    if (v < 0.3) t.shape = [r.pick(HUGE_DIMS), r.pick(HUGE_DIMS)];
    else if (v < 0.4) t.shape = Array.from({ length: 9 + r.int(3) }, () => 1);
    else if (v < 0.5) t.shape = [...t.shape, r.pick([0, 1, 2])];
    else if (v < 0.6) t.shape = t.shape.map((d: number) => (r.next() < 0.5 ? d + r.pick([-1, 1]) : d));
    else {
      raws.push(r.pick(HOSTILE));
      if (r.next() < 0.5) t.shape = '__RAW__0';
      else t.shape[r.int(t.shape.length)] = '__RAW__0';
    }
    return assemble(withRaw(h, raws), b.data);
  },
  // dtypes
  (r, b) => {
    const h = cloneHeader(b);
    const t = h[r.pick(tensorNames(h))];
    const raws = [r.pick(HOSTILE)];
    t.dtype = r.next() < 0.5 ? r.pick(['F64', 'I8', 'U8', 'BOOL', 'F8_E4M3', 'I64', 'f32', 'F13', 'toString', '__proto__', 'hasOwnProperty', 'F16', 'BF16', 'F32']) : '__RAW__0';
    return assemble(withRaw(h, raws), b.data);
  },
  // data_offsets: overlapping, outside, reversed, wrong types
  (r, b) => {
    const h = cloneHeader(b);
    const names = tensorNames(h);
    const t = h[r.pick(names)];
    const [s, e] = t.data_offsets as [number, number];
    const raws = [r.pick(HOSTILE)];
    t.data_offsets = r.pick([
      h[r.pick(names)].data_offsets,
      [s + 4, e + 4],
      [s - 4, e - 4],
      [e, s],
      [s, e + b.data.length],
      [s + 2 ** 40, e + 2 ** 40],
      [s + 0.5, e + 0.5],
      [String(s), e],
      [s],
      [s, e, e],
      [-4, e - s - 4],
      '__RAW__0',
      [s, '__RAW__0'],
    ]);
    return assemble(withRaw(h, raws), b.data);
  },
  // entries deleted, renamed, replaced, added; hostile __metadata__
  (r, b) => {
    const h = cloneHeader(b);
    const names = tensorNames(h);
    const name = r.pick(names);
    const raws = [r.pick(HOSTILE)];
    const v = r.int(6);
    if (v === 0) delete h[name];
    else if (v === 1) {
      h[`${name}.x`] = h[name];
      delete h[name];
    } else if (v === 2) h[name] = '__RAW__0';
    else if (v === 3) h[r.pick(['extra', 'backbone.layers.7.norm.weight', 'lm_head.weight', '', '__proto__'])] = { dtype: 'F32', shape: [0], data_offsets: [0, 0] };
    else if (v === 4) h.__metadata__ = '__RAW__0';
    else h.__metadata__ = { format: '__RAW__0', deep: '__RAW__1' }, raws.push(deep(3000));
    return assemble(withRaw(h, raws), b.data);
  },
  // duplicate keys (top level or inside an entry)
  (r, b) => {
    const text = JSON.stringify(b.header);
    const name = r.pick(tensorNames(b.header));
    const other = b.header[r.pick(tensorNames(b.header))];
    const dup = r.next() < 0.7
      ? text.replace(/^\{/, `{${JSON.stringify(name)}:${JSON.stringify(other)},`)
      : text.replace(`${JSON.stringify(name)}:{`, `${JSON.stringify(name)}:{"dtype":"F64",`);
    return assemble(dup, b.data);
  },
  // non-finite weights and an A_log that overflows exp()
  (r, b) => {
    const out = b.st.slice();
    const parsed = parseSafetensors(out);
    const names = [...parsed.tensors.keys()];
    const t = parsed.tensors.get(r.pick(names))!;
    const dv = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const n = t.data.byteLength / (t.dtype === 'F32' ? 4 : 2);
    if (n === 0) return out;
    const i = r.int(n);
    const kind = r.int(4);
    if (t.dtype === 'F32') dv.setFloat32(4 * i, [NaN, Infinity, -Infinity, 100][kind], true);
    else if (t.dtype === 'F16') dv.setUint16(2 * i, [0x7e00, 0x7c00, 0xfc00, 0x7bff][kind], true);
    else dv.setUint16(2 * i, [0x7fc0, 0x7f80, 0xff80, 0x42c8 /* 100 */][kind], true);
    return out;
  },
  // the header replaced by junk / non-objects / deep nesting
  (r, b) => {
    const junk = r.pick(['', ' ', '[]', '[1,2]', 'null', '1', '"x"', 'true', '{', '{"a":}', deep(20_000), `{"a":${deep(20_000)}}`,
      '{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', '\u0000\u0000', '{}', '{"__metadata__":{}}']);
    return assemble(junk, b.data.subarray(0, r.int(64)));
  },
  // junk appended or inserted after the header
  (r, b) => {
    const extra = Uint8Array.from({ length: 1 + r.int(64) }, () => r.int(256));
    const out = new Uint8Array(b.st.length + extra.length);
    if (r.next() < 0.5) {
      out.set(b.st);
      out.set(extra, b.st.length);
    } else {
      out.set(b.st.subarray(0, 8 + b.headerLen));
      out.set(extra, 8 + b.headerLen);
      out.set(b.data, 8 + b.headerLen + extra.length);
    }
    return out;
  },
];

// --- config mutators ------------------------------------------------------------------------

const CONFIG_KEYS = ['hidden_size', 'num_hidden_layers', 'vocab_size', 'state_size', 'expand', 'intermediate_size', 'conv_kernel',
  'time_step_rank', 'use_bias', 'use_conv_bias', 'tie_word_embeddings', 'layer_norm_epsilon', 'hidden_act', 'model_type',
  'd_model', 'n_layer', 'ssm_cfg', 'pad_vocab_size_multiple', 'rms_norm', 'attn_layer_idx', 'norm_epsilon', 'tie_embeddings'];
const ABSURD = ['1e9', '65536', '65537', '4096', '1048576', '2097152', '4194304', '16777216', '1099511627776', '255', '128'];

const configMutators: Array<(r: Rng, b: Base) => string | Uint8Array> = [
  // a field with a hostile value
  (r, b) => withRaw({ ...b.config, [r.pick(CONFIG_KEYS)]: '__RAW__0' }, [r.pick(HOSTILE)]),
  // absurd or negative sizes
  (r, b) => withRaw({ ...b.config, [r.pick(CONFIG_KEYS.slice(0, 8))]: '__RAW__0' }, [r.pick([...ABSURD, '-1', '-8', '0'])]),
  // a field removed
  (r, b) => {
    const c = { ...b.config };
    delete c[r.pick(Object.keys(c))];
    return JSON.stringify(c);
  },
  // not an object at all
  (r) => r.pick(['', '[]', '[{}]', '1', '"config"', 'null', 'true', '{', '}', deep(30_000), `{"model_type":${deep(30_000)}}`, '\ufeff{}', 'NaN']),
  // byte flips in the JSON text
  (r, b) => {
    const bytes = new TextEncoder().encode(JSON.stringify(b.config));
    for (let k = 1 + r.int(3); k > 0; k--) bytes[r.int(bytes.length)] = r.next() < 0.5 ? r.int(256) : r.pick([0x22, 0x2c, 0x3a, 0x7d, 0x31, 0x2d]);
    return bytes;
  },
  // truncated
  (r, b) => {
    const t = JSON.stringify(b.config);
    return t.slice(0, r.int(t.length));
  },
  // nested ssm_cfg fields (mamba_ssm configs) with hostile values
  (r, b) => {
    const c = { d_model: 8, n_layer: 1, vocab_size: 256, pad_vocab_size_multiple: 1, ...(b.config.model_type ? {} : b.config) } as Record<string, any>;
    c.ssm_cfg = { ...(c.ssm_cfg ?? {}), [r.pick(['d_state', 'd_conv', 'expand', 'dt_rank', 'bias', 'conv_bias', 'layer'])]: '__RAW__0' };
    return withRaw(c, [r.pick([...HOSTILE, ...ABSURD])]);
  },
  // duplicate keys in config.json (the last one wins in JSON.parse: must still be validated)
  (r, b) => JSON.stringify(b.config).replace(/^\{/, `{"${r.pick(CONFIG_KEYS)}":${r.pick(HOSTILE)},`),
];

// --- whole-file-set mutators ----------------------------------------------------------------

function shardIndex(b: Base, map: (name: string, i: number) => unknown): string {
  return JSON.stringify({ metadata: {}, weight_map: Object.fromEntries(tensorNames(b.header).map((n, i) => [n, map(n, i)])) });
}

const fileMutators: Array<(r: Rng, b: Base) => Files> = [
  // a required file missing
  (r, b): Files => (r.next() < 0.5 ? { 'model.safetensors': b.st } : { 'config.json': JSON.stringify(b.config) }),
  // wrong JS types where bytes belong (callers in plain JS can pass anything)
  (r, b) => ({
    'config.json': JSON.stringify(b.config),
    'model.safetensors': r.pick([null, 42, {}, [], true, new Float32Array(4), new DataView(new ArrayBuffer(16))]) as unknown as Uint8Array,
  }),
  // hostile shard indexes: escaping names, wrong types, missing shards
  (r, b) => {
    const bad = r.pick(['../model.safetensors', '/etc/passwd', 'a/b.safetensors', '..', 'x.bin', 'model.safetensors\u0000.txt', '%2e%2e/x.safetensors', 42, null, ['a'], 'missing.safetensors', 'model.safetensors']);
    const index = r.next() < 0.8
      ? shardIndex(b, (_n, i) => (i === 0 ? bad : 'a.safetensors'))
      : r.pick(['{}', '[]', 'null', '{"weight_map":[]}', '{"weight_map":"x"}', '{', deep(10_000), '{"weight_map":{}}']);
    // No model.safetensors: the loader reads the index only when that file is absent.
    return { 'config.json': JSON.stringify(b.config), 'model.safetensors.index.json': index, 'a.safetensors': b.st };
  },
  // a tensor present in two shards
  (_r, b) => ({
    'config.json': JSON.stringify(b.config),
    'model.safetensors.index.json': shardIndex(b, (_n, i) => (i % 2 ? 'a.safetensors' : 'b.safetensors')),
    'a.safetensors': b.st,
    'b.safetensors': b.st,
  }),
  // the config of one base with the weights of another
  (r, b) => ({ 'config.json': JSON.stringify(r.pick(BASES).config), 'model.safetensors': b.st }),
];

/** One fuzz case: the files, built from the base by one (or two) mutators. */
function makeCase(r: Rng): Files {
  const b = r.pick(BASES);
  const v = r.next();
  if (v < 0.6) {
    const files: Files = { 'config.json': JSON.stringify(b.config), 'model.safetensors': r.pick(stMutators)(r, b) };
    if (r.next() < 0.1) files['config.json'] = r.pick(configMutators)(r, b);
    return files;
  }
  if (v < 0.9) return { 'config.json': r.pick(configMutators)(r, b), 'model.safetensors': b.st };
  return r.pick(fileMutators)(r, b);
}

const FILE_NAME = /config\.json|\.safetensors|index\.json/;

/** This process's peak RSS since it started (Linux VmHWM; elsewhere the current RSS), bytes. */
function peakRss(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.memoryUsage().rss;
}

/** Per case: no input may take longer than this (hang guard) ... */
const MAX_CASE_MS = 3000;
/** ... and a whole run may not raise the peak RSS by more than this (the models are a few kB; one sparse or endless file read would be GBs). */
const MAX_RUN_RSS_GROWTH = 256 * 2 ** 20;

interface Loaded {
  logits(text: string): Promise<Float32Array>;
  dispose(): void;
}
/** Loads one case's files some way; `mustFail` says why this case cannot load (a refused file). */
type Loader = (files: Files, r: Rng, i: number) => Promise<Loaded> | { mustFail: string; load: () => Promise<Loaded> };

/** Why an error breaks the promise (a MambaError whose message names the file, bounded), or undefined. */
function problemOf(e: unknown): string | undefined {
  const err = e as Error;
  const msg = typeof err?.message === 'string' ? err.message : '';
  if (!(e instanceof MambaError)) return `${err?.constructor?.name}: ${msg.slice(0, 200)}`;
  if (!FILE_NAME.test(msg)) return `message names no file: ${msg.slice(0, 200)}`;
  if (msg.length > 2000) return `message is ${msg.length} chars`;
  if (e instanceof ModelFormatError && !FILE_NAME.test(e.file)) return `.file is ${e.file}`;
  return undefined;
}

/** Runs `n` cases through `loader` and checks every outcome, the time of each and the memory of all. */
async function fuzzRun(label: string, n: number, loader: Loader, o: { only?: (f: Files) => boolean } = {}) {
  const r = rng(SEED ^ [...label].reduce((h, c) => Math.imul(h, 31) + c.charCodeAt(0), 7));
  const problems: string[] = [];
  const outcomes = new Map<string, number>();
  let slowest = 0;
  let loaded = 0;
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    let files = makeCase(r);
    while (o.only && !o.only(files)) files = makeCase(r);
    const t = performance.now();
    let mustFail: string | undefined;
    try {
      const started = loader(files, r, i);
      let m: Loaded;
      if ('mustFail' in started) {
        mustFail = started.mustFail;
        m = await started.load();
      } else m = await started;
      loaded++;
      // A model that loads must also run (values may be garbage; the call must not throw).
      if (loaded % 25 === 1) await m.logits('ab');
      m.dispose();
      outcomes.set('loaded', (outcomes.get('loaded') ?? 0) + 1);
      if (mustFail) problems.push(`${label} case ${i}: loaded, but ${mustFail}`);
    } catch (e) {
      const name = (e as Error)?.constructor?.name ?? typeof e;
      if (process.env.FUZZ_VERBOSE) console.log(`${label} case ${i}: ${(e as Error)?.message?.slice(0, 300)}`);
      outcomes.set(name, (outcomes.get(name) ?? 0) + 1);
      const p = problemOf(e);
      if (p) problems.push(`${label} case ${i}: ${p}`);
    }
    const ms = performance.now() - t;
    if (ms > MAX_CASE_MS) problems.push(`${label} case ${i}: took ${ms.toFixed(0)} ms`);
    slowest = Math.max(slowest, ms);
  }
  const growth = peakRss() - rss0;
  const seconds = (performance.now() - t0) / 1000;
  console.log(
    `fuzz ${label}: ${n} cases in ${seconds.toFixed(1)} s, slowest ${slowest.toFixed(0)} ms, peak RSS +${(growth / 2 ** 20).toFixed(0)} MiB, outcomes ${JSON.stringify(Object.fromEntries(outcomes))}`,
  );
  expect(problems.slice(0, 10), `seed ${SEED}: ${problems.length} problems; outcomes ${JSON.stringify([...outcomes])}`).toEqual([]);
  expect(growth, `seed ${SEED}: peak RSS growth over the run`).toBeLessThan(MAX_RUN_RSS_GROWTH);
  return { loaded, outcomes };
}

const plain = (f: Files) => Object.values(f).every((v) => typeof v === 'string' || v instanceof Uint8Array);
const fuzzRoot = mkdtempSync(join(tmpdir(), 'mamba-edge-fuzz-'));
afterAll(() => rmSync(fuzzRoot, { recursive: true, force: true }));
const workerBuilt = existsSync(fileURLToPath(assetUrl('dist/workers/engine-worker.js')));

/** Directory-level hostility, applied to one file of a case written to disk. */
const DIR_MUTATIONS = ['none', 'fifo', 'symlink-out', 'symlink-in', 'sparse', 'dir', 'dangling', 'dev-zero'] as const;

/** Writes a case to a directory and applies one mutation; says when the case can no longer load. */
function writeDir(r: Rng, files: Files, i: number): { dir: string; mutation: string; mustFail?: string } {
  const dir = join(fuzzRoot, `d${i}`);
  mkdirSync(dir);
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  const mutation = r.pick(DIR_MUTATIONS);
  const name = r.pick(['config.json', 'config.json', 'model.safetensors', ...Object.keys(files)]);
  const target = join(dir, name);
  const had = existsSync(target);
  // config.json is always read first: a refused config.json means the load must fail.
  const refused = name === 'config.json' ? `${mutation} config.json` : undefined;
  switch (mutation) {
    case 'fifo':
      rmSync(target, { force: true });
      execFileSync('mkfifo', [target]);
      return { dir, mutation, mustFail: refused };
    case 'symlink-out': {
      // Valid content, but outside the directory.
      const outside = join(fuzzRoot, `outside-${i}`);
      if (had) renameSync(target, outside);
      else writeFileSync(outside, '{}');
      symlinkSync(outside, target);
      return { dir, mutation, mustFail: refused };
    }
    case 'symlink-in':
      if (had) {
        renameSync(target, `${target}.real`);
        symlinkSync(`${name}.real`, target);
      }
      return { dir, mutation };
    case 'sparse':
      // 1.5 GB of holes after the real bytes: bigger than any bound these configs allow.
      if (!had) writeFileSync(target, '');
      truncateSync(target, 1.5e9);
      return { dir, mutation, mustFail: name === 'config.json' || name === 'model.safetensors' ? `sparse ${name}` : undefined };
    case 'dir':
      rmSync(target, { force: true });
      mkdirSync(target);
      return { dir, mutation, mustFail: refused };
    case 'dangling':
      rmSync(target, { force: true });
      symlinkSync(join(dir, 'nowhere'), target);
      return { dir, mutation, mustFail: refused };
    case 'dev-zero':
      rmSync(target, { force: true });
      symlinkSync('/dev/zero', target);
      return { dir, mutation, mustFail: refused };
    default:
      return { dir, mutation };
  }
}

/** Runs both loads; the second's result, after checking that both load or both fail with the same error class. */
async function sameOutcome(reference: () => Promise<Loaded>, load: () => Promise<Loaded>): Promise<Loaded> {
  const settle = (p: Promise<Loaded>) => p.then((m) => ({ m, e: undefined as unknown }), (e: unknown) => ({ m: undefined, e }));
  const want = await settle(reference());
  want.m?.dispose();
  const got = await settle(load());
  // A directory without config.json is ModelNotFoundError; files in memory say "config.json: not found".
  const kind = (x: { e: unknown }) =>
    x.e === undefined ? 'loaded' : x.e instanceof ModelNotFoundError || /^config\.json: not found/.test((x.e as Error)?.message) ? 'no config.json' : (x.e as Error)?.constructor?.name;
  if (kind(want) !== kind(got)) {
    got.m?.dispose();
    throw new Error(`outcome ${kind(got)} differs from the in-memory ${kind(want)}: ${String((got.e ?? want.e) as Error)?.slice(0, 200)}`);
  }
  if (got.e !== undefined) throw got.e;
  return got.m!;
}

describe('loader fuzz', () => {
  test('12,000 hostile in-memory inputs: every one loads or fails with a MambaError naming the file', async () => {
    const { loaded } = await fuzzRun('in-memory', 12_000, (files) => loadModel({ files }, { backend: 'js' }));
    // Both sides are exercised: some mutations (weights bytes) load, most are refused.
    expect(loaded).toBeGreaterThan(100);
    expect(loaded).toBeLessThan(6000);
  });

  test('200 cases on the wasm backend', async () => {
    const { loaded } = await fuzzRun('wasm', 200, (files) => loadModel({ files }, { backend: 'wasm' }));
    expect(loaded).toBeGreaterThan(5);
  });

  test('300 cases from directories with FIFOs, symlinks in and out, sparse files and directories in place of files', async () => {
    const { outcomes } = await fuzzRun('directory', 300, (files, r, i) => {
      const { dir, mutation, mustFail } = writeDir(r, files, i);
      const load = () => loadModel(dir, { backend: 'js' });
      if (mustFail) return { mustFail, load };
      // Untouched, or reached through a symlink inside the directory: exactly the in-memory outcome.
      return mutation === 'none' || mutation === 'symlink-in' ? sameOutcome(() => loadModel({ files }, { backend: 'js' }), load) : load();
    }, { only: plain });
    expect(outcomes.get('ModelFormatError')).toBeGreaterThan(100);
  });

  describe('over HTTP', () => {
    let server: Server;
    let base = '';
    let current: Files = {};
    /** The fault served for `faulty` (one file of the case): 500, 404, a body shorter than its Content-Length, or no length. */
    let fault = { file: '', kind: 'none' };
    beforeAll(async () => {
      server = createServer((req, res) => {
        const name = decodeURIComponent(new URL(req.url!, 'http://x').pathname.split('/').pop()!);
        const f = Object.hasOwn(current, name) ? current[name] : undefined;
        if (f === undefined) return res.writeHead(404).end();
        const body = Buffer.from(typeof f === 'string' ? new TextEncoder().encode(f) : f);
        const kind = fault.file === name ? fault.kind : 'none';
        if (kind === '500') return res.writeHead(500).end();
        if (kind === '404') return res.writeHead(404).end();
        if (kind === 'short') {
          res.writeHead(200, { 'Content-Length': body.length + 10 });
          return res.write(body.subarray(0, body.length >> 1), () => res.socket?.destroy());
        }
        if (kind === 'no-length') return res.writeHead(200).end(body);
        res.writeHead(200, { 'Content-Length': body.length }).end(body);
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      base = `http://127.0.0.1:${(server.address() as { port: number }).port}/m/`;
    });
    afterAll(() => new Promise<void>((r) => server.close(() => r())));

    test('300 cases from a local HTTP server with faults, some through the cache (loaded twice: the copy must agree)', async () => {
      const net = { backend: 'js' as const, retries: 0, retryDelayMs: 0 };
      await fuzzRun('http', 300, async (files, r, i) => {
        current = files;
        const file = r.pick([...Object.keys(files), 'config.json']);
        fault = { file, kind: r.pick(['none', 'none', 'none', '500', '404', 'short', 'no-length']) };
        if (r.next() < 0.7) return loadModel(base, net);
        const cacheDir = join(fuzzRoot, `cache-${i}`);
        let first: unknown;
        try {
          (await loadModel(base, { ...net, cacheDir })).dispose();
        } catch (e) {
          first = e;
        }
        // From the cache (and the server for what was not cached): the same files, the same outcome class.
        fault = { file: '', kind: 'none' };
        try {
          const m = await loadModel(base, { ...net, cacheDir });
          if (first instanceof ModelFormatError || first instanceof UnsupportedModelError) throw new Error(`the cached copy loaded, the first load failed: ${(first as Error).message}`);
          return m;
        } catch (e) {
          if (first === undefined) throw new Error(`the first load succeeded, the cached copy failed: ${(e as Error).message}`);
          throw e;
        }
      }, { only: plain });
    });
  });

  test.skipIf(!workerBuilt)('20 cases through loadModelInWorker (in-memory and directories); no worker is left behind', async () => {
    await fuzzRun('worker', 20, (files, r, i) => {
      if (!plain(files) || r.next() < 0.5) return loadModelInWorker({ files }, { backend: 'js' }) as Promise<Loaded>;
      const { dir, mustFail } = writeDir(r, files, 10_000 + i);
      const load = () => loadModelInWorker(dir, { backend: 'js' }) as Promise<Loaded>;
      return mustFail ? { mustFail, load } : load();
    });
    for (let k = 0; k < 200 && activeEngineWorkers() > 0; k++) await new Promise((res) => setTimeout(res, 10));
    expect(activeEngineWorkers()).toBe(0);
  }, 120_000);
});

/** Regression tests for what the fuzzer found, and hand-crafted inputs it is unlikely to hit. */
describe('hostile inputs found or targeted by the fuzzer', () => {
  const b = BASES[0];
  const load = (files: Files) => loadModel({ files }, { backend: 'js' });
  const cfg = (edit: Record<string, unknown>) => JSON.stringify({ ...b.config, ...edit });

  test('JSON nested deeper than 128 levels is refused by the scan, anywhere, before JSON.parse builds it', async () => {
    await expect(load({ 'config.json': `{"model_type":"mamba","hidden_size":${deep(30_000)}}`, 'model.safetensors': b.st })).rejects.toThrow(
      /config\.json: is nested deeper than 128 levels \(at byte 163\)/,
    );
    // 128 levels are fine (and then wrong for the field).
    await expect(load({ 'config.json': `{"model_type":"mamba","hidden_size":${deep(127)}}`, 'model.safetensors': b.st })).rejects.toThrow(
      /config\.json \[hidden_size\]: expected an integer, got \[\[\[/,
    );
    const h = cloneHeader(b);
    h['backbone.norm_f.weight'].shape = '__RAW__0';
    await expect(load({ 'config.json': cfg({}), 'model.safetensors': assemble(withRaw(h, [deep(30_000)]), b.data) })).rejects.toThrow(
      /model\.safetensors: header is nested deeper than 128 levels/,
    );
    h['backbone.norm_f.weight'].shape = [8];
    h.__metadata__ = { x: '__RAW__0' };
    expect(() => parseSafetensors(assemble(withRaw(h, [deep(30_000)]), b.data))).toThrow(/header is nested deeper than 128 levels/);
  });

  test('a 100 kB string in a field is not copied into the message', async () => {
    const e = await load({ 'config.json': cfg({ hidden_size: 'x'.repeat(100_000) }), 'model.safetensors': b.st }).catch((x) => x);
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.message.length).toBeLessThan(300);
  });

  test('duplicate keys in the safetensors header are refused', async () => {
    const text = JSON.stringify(b.header).replace(/^\{/, `{"backbone.norm_f.weight":${JSON.stringify(b.header['backbone.layers.0.norm.weight'])},`);
    await expect(load({ 'config.json': cfg({}), 'model.safetensors': assemble(text, b.data) })).rejects.toThrow(
      /model\.safetensors \[backbone\.norm_f\.weight\]: key appears more than once/,
    );
    // The same key spelled with an escape is still the same key; braces inside names are not structure.
    const escaped = JSON.stringify(b.header).replace(/^\{/, '{"backbone.norm_f.weigh\\u0074":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a{[b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},');
    await expect(load({ 'config.json': cfg({}), 'model.safetensors': assemble(escaped, b.data) })).rejects.toThrow(/more than once/);
  });

  test('prototype names are not dtypes, and not in-memory files', async () => {
    for (const dtype of ['toString', '__proto__', 'constructor']) {
      const h = cloneHeader(b);
      h['backbone.norm_f.weight'].dtype = dtype;
      await expect(load({ 'config.json': cfg({}), 'model.safetensors': assemble(JSON.stringify(h), b.data) })).rejects.toThrow(
        new RegExp(`unknown dtype "${dtype}"`),
      );
    }
  });

  test('A_log large enough that -exp(A_log) overflows float32 is refused', async () => {
    const st = b.st.slice();
    const t = parseSafetensors(st).tensors.get('backbone.layers.0.mixer.A_log')!;
    new DataView(t.data.buffer, t.data.byteOffset).setFloat32(4 * 5, 100, true);
    await expect(load({ 'config.json': cfg({}), 'model.safetensors': st })).rejects.toThrow(
      /A_log\]: non-finite A = -exp\(A_log\) = -Infinity at element 5/,
    );
  });

  test('absurd sizes are refused from config.json alone, before any allocation', async () => {
    for (const [field, value] of [['hidden_size', 1e9], ['num_hidden_layers', 1e6], ['vocab_size', 2 ** 31], ['state_size', 1e7], ['intermediate_size', 2 ** 30]] as const) {
      await expect(load({ 'config.json': cfg({ [field]: value }), 'model.safetensors': b.st }), field).rejects.toThrow(
        new RegExp(`config\\.json \\[${field}\\]: value ${value} is out of range`),
      );
    }
    // Derived sizes too: mamba_ssm's expand * d_model.
    await expect(load({ 'config.json': JSON.stringify({ d_model: 65536, n_layer: 1, vocab_size: 256, ssm_cfg: { expand: 64 } }), 'model.safetensors': b.st })).rejects.toThrow(
      /inner width 4194304 .* out of range/,
    );
  });

  test('sizes inside the bounds but far beyond the file fail on shapes, before decoding anything', async () => {
    const before = process.memoryUsage().arrayBuffers;
    const t = performance.now();
    const files = {
      'config.json': cfg({ hidden_size: 65536, num_hidden_layers: 4096, vocab_size: 2 ** 21, intermediate_size: 2 ** 18, state_size: 4096 }),
      'model.safetensors': b.st,
    };
    // The file reader alone (no backend planned) meets the header and fails on its shapes.
    const e = await readModel({ files }).catch((x) => x);
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.message).toMatch(/embeddings\.weight\]: shape \[256, 8\] does not match the config, expected \[2097152, 65536\]/);
    // loadModel refuses earlier still, from config.json alone: no backend can hold such a model.
    const o = await load(files).catch((x) => x);
    expect(o).toBeInstanceOf(OutOfMemoryError);
    expect(o.message).toMatch(/the js backend cannot hold/);
    expect(performance.now() - t).toBeLessThan(1000);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 2 ** 20);
  });

  test('a vocabulary smaller than the 256 byte ids is unsupported', async () => {
    await expect(load({ 'config.json': cfg({ vocab_size: 200 }), 'model.safetensors': b.st })).rejects.toThrow(UnsupportedModelError);
    await expect(load({ 'config.json': cfg({ vocab_size: 200 }), 'model.safetensors': b.st })).rejects.toThrow(/config\.json: vocab_size 200 is too small/);
  });

  test('in-memory sources of the wrong shape are refused with typed errors', async () => {
    await expect(loadModel(null as never, { backend: 'js' })).rejects.toThrow(MambaError);
    await expect(loadModel({} as never, { backend: 'js' })).rejects.toThrow(/in-memory source must be/);
    await expect(loadModel(42 as never, { backend: 'js' })).rejects.toThrow(/must be a directory path/);
    await expect(load({ 'config.json': cfg({}), 'model.safetensors': 7 as never })).rejects.toThrow(/model\.safetensors: in-memory file must be/);
    // Inherited names are not files.
    const files = Object.create({ 'config.json': cfg({}) }) as Files;
    files['model.safetensors'] = b.st;
    await expect(load(files)).rejects.toThrow(/config\.json: not found/);
    // Any typed-array view of the bytes is accepted.
    const view = new DataView(b.st.buffer, b.st.byteOffset, b.st.byteLength);
    await expect(load({ 'config.json': cfg({}), 'model.safetensors': view as never })).resolves.toBeDefined();
  });

  test('a shard index that disagrees with the shards is refused', async () => {
    const names = tensorNames(b.header);
    // Every tensor is in a.safetensors, but the index puts one in another shard (which holds nothing else).
    const empty = assemble('{}', new Uint8Array(0));
    const index = JSON.stringify({ weight_map: Object.fromEntries(names.map((n, i) => [n, i === 0 ? 'other.safetensors' : 'a.safetensors'])) });
    await expect(load({ 'config.json': cfg({}), 'model.safetensors.index.json': index, 'a.safetensors': b.st, 'other.safetensors': empty })).rejects.toThrow(
      new RegExp(`a\\.safetensors \\[${names[0].replace(/\./g, '\\.')}\\]: tensor is listed under other\\.safetensors`),
    );
    await expect(load({ 'config.json': cfg({}), 'model.safetensors.index.json': '{"weight_map":{}}', 'a.safetensors': b.st })).rejects.toThrow(/weight_map lists no tensors/);
  });

  test('shard names that could leave the model directory are refused', async () => {
    for (const bad of ['../model.safetensors', '/etc/passwd.safetensors', 'sub/x.safetensors', '..\\x.safetensors']) {
      const index = shardIndex(b, () => bad);
      await expect(load({ 'config.json': cfg({}), 'model.safetensors.index.json': index }), bad).rejects.toThrow(/index\.json .*bad shard file name/);
    }
  });
});
