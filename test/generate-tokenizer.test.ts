/**
 * Generation, scoring and sessions with a tokenizer.json (the fixture's byte-level BPE): streamed text
 * is whole characters and adds up to decode(all ids), eos ends generation (also inside a device
 * block), stop strings match the detokenized text, and byte-level models keep their bytes.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, test } from 'vitest';
import type { Backend, StateHandle } from '../src/backend.js';
import { greedySteps } from '../src/backend.js';
import { InvalidOptionError, MambaError } from '../src/errors.js';
import { generateTokens, type GenerateOptions } from '../src/generate.js';
import { loadModel, loadTokenizer, type Model } from '../src/model.js';
import { loadModelInWorker } from '../src/runtime.js';
import { ByteTokenizer, type Tokenizer } from '../src/tokenizer.js';
import { loadFixtures, maxAbsDiff } from './helpers/fixtures.js';
import { collect } from './helpers/stream.js';

const DIR = fileURLToPath(new URL('./fixtures/hf-tokenizer/mamba-bpe-tiny/', import.meta.url));
const expected = JSON.parse(readFileSync(`${DIR}expected.json`, 'utf8')) as {
  text: string;
  input_ids: number[];
  greedy_new_ids: number[];
  greedy_new_text: string;
};
const EOS = 0; // <|endoftext|>: generation_config.json's eos_token_id
const V = 416;

/** Prompts whose byte-level BPE tokens end inside characters: emoji (with ZWJ and skin tone), CJK, combining marks. */
const TEXTS = ['Family: 👩‍👩‍👧‍👦 and 👍🏽!', '日本語のテキスト、漢字とかな。', 'e\u0301 ñ 🇯🇵 — “quotes” ✓'];

/**
 * A backend whose greedy continuation is `script`, token after token, whatever the prompt. Counts the
 * tokens each state was fed (`fed`), and offers the device-chained greedy decode when `chained`.
 */
function scripted(script: number[], chained = false) {
  const fed = new Map<number, number>();
  let next = 0;
  let generatedFed = 0;
  const backend: Backend = {
    name: 'js',
    config: { vocabSize: V } as Backend['config'],
    description: 'scripted',
    createState: () => {
      const h = { id: next++ };
      fed.set(h.id, -1); // the prompt's forward brings this to 0
      return h;
    },
    async forward(h: StateHandle, tokens: Uint32Array) {
      const id = (h as { id: number }).id;
      const n = fed.get(id)! < 0 ? 0 : fed.get(id)! + tokens.length;
      if (fed.get(id)! >= 0) generatedFed += tokens.length;
      fed.set(id, n);
      const logits = new Float32Array(V);
      logits[script[n] ?? 13] = 50;
      return logits;
    },
    readState: async () => ({ conv: new Float32Array(0), ssm: new Float32Array(0) }),
    writeState: async () => undefined,
    releaseState: () => undefined,
    dispose: () => undefined,
  };
  if (chained) backend.decodeGreedy = (h, first, n) => greedySteps(backend, h, first!, n);
  return { backend, generatedFed: () => generatedFed };
}

async function run(tok: Tokenizer, script: number[], options: GenerateOptions, { chained = false, ephemeral = true } = {}) {
  const { backend, generatedFed } = scripted(script, chained);
  const seq = { handle: backend.createState(), logits: null, history: new Uint32Array(0), ephemeral };
  const r = await collect(generateTokens(backend, seq, 'x', { temperature: 0, ...options }, tok));
  return { ...r, ids: r.chunks.flatMap((c) => [...c.tokens]), generatedFed: generatedFed() };
}

const hasBrokenText = (s: string) => s.includes('\uFFFD') || /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);

let tok: Tokenizer;
beforeAll(async () => {
  tok = await loadTokenizer(DIR);
});

describe('streamed text with a byte-level BPE tokenizer', () => {
  test.each(TEXTS)('%s: every chunk is whole characters; the chunks add up to decode(ids), at every length', async (text) => {
    const ids = Array.from(tok.encode(text));
    // The case this is about: some tokens alone are half a character.
    expect(ids.some((id) => tok.decode([id]).includes('\uFFFD'))).toBe(true);
    for (let n = 1; n <= ids.length; n++) {
      const r = await run(tok, ids, { maxTokens: n });
      expect(r.ids).toEqual(ids.slice(0, n));
      expect(r.text).toBe(tok.decode(ids.slice(0, n)));
      expect(r.stats.generatedTokens).toBe(n);
      expect(r.stats.finishReason).toBe('length');
      // Only the last chunk may end with U+FFFD: there generation ended inside a character, as decode() says.
      for (const c of r.chunks.slice(0, -1)) expect(hasBrokenText(c.text)).toBe(false);
      for (const c of r.chunks) expect(new TextDecoder().decode(c.bytes)).toBe(c.text);
    }
    const whole = await run(tok, ids, { maxTokens: ids.length });
    expect(whole.text).toBe(text);
    expect(whole.chunks.length).toBeGreaterThan(3); // streamed, not all at the end
  });

  test('a stop string matches the detokenized text, even one that ends inside a token', async () => {
    const text = '日本語のテキスト、漢字とかな。';
    const ids = Array.from(tok.encode(text));
    for (const [stop, before] of [['テキ', '日本語の'], ['字', '日本語のテキスト、漢'], ['。', '日本語のテキスト、漢字とかな']]) {
      const r = await run(tok, ids, { maxTokens: 100, stop: [stop] });
      expect(r.stats.finishReason).toBe('stop');
      expect(r.text).toBe(before);
    }
  });
});

describe('end of sequence', () => {
  const hi = () => Array.from(tok.encode('Hi there 👋'));

  test('stops at eos_token_id with finishReason "eos"; the eos id is generated but has no text', async () => {
    const script = [...hi(), EOS, ...Array.from(tok.encode(' more'))];
    const r = await run(tok, script, { maxTokens: 50 });
    expect(r.stats.finishReason).toBe('eos');
    expect(r.text).toBe('Hi there 👋');
    expect(r.ids).toEqual([...hi(), EOS]);
    expect(r.stats.generatedTokens).toBe(hi().length + 1);
  });

  test('ignoreEos: true generates past it', async () => {
    const script = [...hi(), EOS, ...Array.from(tok.encode(' more'))];
    const r = await run(tok, script, { maxTokens: script.length, ignoreEos: true });
    expect(r.stats.finishReason).toBe('length');
    expect(r.text).toBe('Hi there 👋 more');
    expect(r.ids).toEqual(script);
  });

  test('inside a device-decoded block: cut at eos (a one-off), or no block chaining at all (a session)', async () => {
    // Blocks of 4, 8, 16, ...: eos at generated position 9 falls inside the second block.
    const script = [...Array.from(tok.encode('abc def ghi')).slice(0, 9), EOS, 40, 41, 42, 43, 44, 45, 46, 47];
    expect(script.indexOf(EOS)).toBe(9);
    const oneOff = await run(tok, script, { maxTokens: 30 }, { chained: true });
    expect(oneOff.stats.finishReason).toBe('eos');
    expect(oneOff.ids).toEqual(script.slice(0, 10));
    expect(oneOff.text).toBe(tok.decode(script.slice(0, 9)));
    // A session's state must cover exactly what was generated (eos included), so it can continue.
    const session = await run(tok, script, { maxTokens: 30 }, { chained: true, ephemeral: false });
    expect(session.ids).toEqual(script.slice(0, 10));
    expect(session.generatedFed).toBe(10);
    // Without eos to stop at, a session does chain (the state runs a block ahead of nothing).
    const ignoring = await run(tok, script, { maxTokens: 12, ignoreEos: true }, { chained: true, ephemeral: false });
    expect(ignoring.ids).toEqual(script.slice(0, 12));
  });

  test('a byte-level model never stops at its config eos (0 is the NUL byte, text)', async () => {
    const bytes = new ByteTokenizer([0]);
    const script = [0x41, 0, 0x42];
    const r = await run(bytes, script, { maxTokens: 3 });
    expect(r.stats.finishReason).toBe('length');
    expect(r.text).toBe('A\0B');
    expect([...r.bytes]).toEqual(script);
    expect(r.ids).toEqual(script);
  });
});

describe('the fixture model end to end', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(DIR, { backend: 'js' });
  });

  test('generate(text) and generate(ids): the greedy ids and text transformers wrote', async () => {
    const n = expected.greedy_new_ids.length;
    for (const prompt of [expected.text, expected.input_ids, Uint32Array.from(expected.input_ids), new TextEncoder().encode(expected.text)]) {
      const r = await collect(model.generate(prompt, { temperature: 0, maxTokens: n }));
      expect(r.chunks.flatMap((c) => [...c.tokens])).toEqual(expected.greedy_new_ids);
      expect(r.text).toBe(expected.greedy_new_text);
      expect(r.stats.promptTokens).toBe(expected.input_ids.length);
    }
  });

  test('a session: feed(text) then generate equals generate(text); the prompt is tokenized', async () => {
    const s = model.createSession();
    await s.feed(expected.text);
    const r = await collect(s.generate([], { temperature: 0, maxTokens: 6 }));
    expect(r.chunks.flatMap((c) => [...c.tokens])).toEqual(expected.greedy_new_ids.slice(0, 6));
    const snap = await s.snapshot();
    expect(Array.from(snap.history.subarray(0, expected.input_ids.length))).toEqual(expected.input_ids);
    s.dispose();
  });

  test('logits(text) = logits(ids); the rows are tokens', async () => {
    const a = await model.logits(expected.text);
    const b = await model.logits(expected.input_ids);
    expect(a.length).toBe(expected.input_ids.length * V);
    expect(a).toEqual(b);
    expect(await model.logits(expected.text, { positions: 'last' })).toEqual(b.subarray(b.length - V));
  });

  test('bitsPerByte: total NLL in bits of tokens 1.. divided by the UTF-8 bytes of their text', async () => {
    const ids = expected.input_ids;
    const l = await model.logits(ids);
    let bits = 0;
    for (let t = 0; t + 1 < ids.length; t++) {
      const row = Array.from(l.subarray(t * V, (t + 1) * V));
      const max = Math.max(...row);
      const lse = Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0)) + max;
      bits += (lse - row[ids[t + 1]]) / Math.LN2;
    }
    const bytes = new TextEncoder().encode(expected.text).length - new TextEncoder().encode(tok.decode([ids[0]])).length;
    expect(tok.decode([ids[0]])).toBe('The');
    expect(await model.bitsPerByte(expected.text)).toBeCloseTo(bits / bytes, 6);
    expect(await model.bitsPerByte(ids)).toBeCloseTo(bits / bytes, 6);
    await expect(model.bitsPerByte('The')).rejects.toThrow(MambaError);
  });

  test('bad input: ids >= vocabulary, invalid UTF-8 bytes', async () => {
    for (const bad of [[5, V], Uint32Array.of(V + 10)]) {
      await expect(collect(model.generate(bad, { maxTokens: 1 }))).rejects.toThrow(InvalidOptionError);
      await expect(model.logits(bad)).rejects.toThrow(/token id \d+ at index \d is out of range: this model's vocabulary has 416 ids/);
      await expect(model.createSession().feed(bad)).rejects.toThrow(InvalidOptionError);
    }
    await expect(model.bitsPerByte(Uint8Array.of(0x41, 0xff, 0x42))).rejects.toThrow(/not valid UTF-8/);
    await expect(collect(model.generate('x', { ignoreEos: 'yes' as unknown as boolean }))).rejects.toThrow(InvalidOptionError);
  });
});

/** The built CLI (bin/mamba-edge.js → dist), as a user runs it. */
describe('mamba-edge CLI with a tokenizer.json', () => {
  const BIN = fileURLToPath(new URL('../bin/mamba-edge.js', import.meta.url));
  const cli = (args: string[], input?: string) => spawnSync(process.execPath, [BIN, ...args], { input, encoding: 'utf8', timeout: 60_000 });
  const MODEL = ['--model', DIR, '--backend', 'js'];
  const fx = loadFixtures().find((f) => f.tokenizer)!;
  const dir = mkdtempSync(join(tmpdir(), 'mamba-edge-tok-cli-'));
  const text = join(dir, 'text.txt');
  writeFileSync(text, expected.text);
  const readF32 = (path: string) => {
    const raw = readFileSync(path);
    return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  };

  test('generate: the prompt is tokenized, --max-tokens counts tokens, greedy text is transformers\'', () => {
    const r = cli(['generate', ...MODEL, '--temperature', '0', '--max-tokens', String(expected.greedy_new_ids.length), '--stats'], expected.text);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${expected.greedy_new_text}\n`);
    expect(r.stderr).toMatch(new RegExp(`prompt ${expected.input_ids.length} tokens at .* generated ${expected.greedy_new_ids.length} tokens at .*finish: length`));
  });

  test('logits --input FILE: one row per token, equal to transformers; --ids FILE.json gives the same', () => {
    const out = join(dir, 'a.f32');
    const r = cli(['logits', ...MODEL, '--input', text, '--out', out]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(`wrote ${expected.input_ids.length} x 416 float32 logits`);
    const a = readF32(out);
    expect(maxAbsDiff(a, fx.logits) / fx.maxAbsLogit).toBeLessThanOrEqual(1e-4);
    const ids = join(dir, 'ids.json');
    writeFileSync(ids, JSON.stringify(expected.input_ids));
    const out2 = join(dir, 'b.f32');
    expect(cli(['logits', ...MODEL, '--ids', ids, '--out', out2]).status).toBe(0);
    expect(readF32(out2)).toEqual(a);
  });

  test('logits --ids: bad ids and bad files are clear errors', () => {
    const ids = join(dir, 'bad.json');
    writeFileSync(ids, '[1, 2, 416]');
    let r = cli(['logits', ...MODEL, '--ids', ids, '--out', join(dir, 'x.f32')]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^mamba-edge logits: --ids: token id 416 at index 2 is out of range: this model's vocabulary has 416 ids \(0\.\.415\)\n/);
    writeFileSync(ids, '{"ids": [1]}');
    r = cli(['logits', ...MODEL, '--ids', ids, '--out', join(dir, 'x.f32')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/expected one JSON array of token ids/);
    r = cli(['logits', ...MODEL, '--ids', ids, '--input', text, '--out', join(dir, 'x.f32')]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/not both/);
  });

  test('eval: bits per UTF-8 byte, as the API computes it', async () => {
    const r = cli(['eval', ...MODEL, '--input', text]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(`bytes ${new TextEncoder().encode(expected.text).length}\ntokens ${expected.input_ids.length}\n`);
    const model = await loadModel(DIR, { backend: 'js' });
    const want = await model.bitsPerByte(expected.text);
    expect(Number(/bits_per_byte (\S+)/.exec(r.stdout)![1])).toBeCloseTo(want, 5);
  });

  test('--help says what counts', () => {
    expect(cli(['generate', '--help']).stdout).toMatch(/--max-tokens N +tokens to generate \(bytes, for a byte-level model\)/);
    expect(cli(['generate', '--help']).stdout).toMatch(/--ignore-eos/);
    expect(cli(['logits', '--help']).stdout).toMatch(/--ids FILE\.json +token ids to score instead/);
    expect(cli(['eval', '--help']).stdout).toMatch(/divided by\nthe UTF-8 bytes of their text/);
  });
});

describe('a worker model with a tokenizer.json (dist/workers)', () => {
  test('generate, logits, bitsPerByte and sessions tokenize in the worker, as in-process', async () => {
    const [w, local] = await Promise.all([loadModelInWorker(DIR, { backend: 'js' }), loadModel(DIR, { backend: 'js' })]);
    try {
      expect(w.hasTokenizer).toBe(true);
      const n = expected.greedy_new_ids.length;
      const got = await collect(w.generate(expected.text, { temperature: 0, maxTokens: n, ignoreEos: true }));
      expect(got.chunks.flatMap((c) => [...c.tokens])).toEqual(expected.greedy_new_ids);
      expect(got.text).toBe(expected.greedy_new_text);
      expect(await w.logits(expected.text)).toEqual(await local.logits(expected.input_ids));
      expect(await w.bitsPerByte(expected.text)).toBe(await local.bitsPerByte(expected.text));
      const s = w.createSession();
      await s.feed(expected.text);
      const cont = await collect(s.generate([], { temperature: 0, maxTokens: 3 }));
      expect(cont.chunks.flatMap((c) => [...c.tokens])).toEqual(expected.greedy_new_ids.slice(0, 3));
      // Ids are checked on the main thread; text that is not UTF-8, in the worker: both typed.
      expect(() => w.generate([V], {})).not.toThrow(); // generators start lazily
      await expect(collect(w.generate([V], {}))).rejects.toThrow(/token id 416 at index 0 is out of range/);
      await expect(w.logits(Uint8Array.of(0xff))).rejects.toThrow(InvalidOptionError);
      expect(w.pendingCalls).toBe(0);
    } finally {
      w.dispose();
      local.dispose();
    }
  });
});
