/**
 * tokenizer.json support: Tokenizers.js against the ids and text Hugging Face tokenizers wrote for the
 * fixture's probes, incremental detokenization, the typed errors, and `mamba-edge tokenize`.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test, vi } from 'vitest';
import { InvalidOptionError, MambaError, ModelFormatError, UnsupportedModelError } from '../src/errors.js';
import { loadModel, loadTokenizer } from '../src/model.js';
import { ByteTokenizer, Detokenizer, HfTokenizer, loadTokenizersJs, type Tokenizer } from '../src/tokenizer.js';
import { FIXTURE_ROOT } from './helpers/fixtures.js';

// HfTokenizer is constructed directly below: load the library as tokenizerFromFiles does.
await loadTokenizersJs();

const DIR = fileURLToPath(new URL('./fixtures/hf-tokenizer/mamba-bpe-tiny/', import.meta.url));
const file = (name: string) => readFileSync(`${DIR}${name}`);
const expected = JSON.parse(file('expected.json').toString('utf8')) as {
  text: string;
  input_ids: number[];
  tokenizer_vocab: number;
  tokenization: { text: string; ids: number[]; decoded: string }[];
};
const tokenizerJson = JSON.parse(file('tokenizer.json').toString('utf8'));
const BYTE_MODEL = `${FIXTURE_ROOT}tiny-hf-f32`;

/** The fixture's files in memory, with some replaced; records which files the loader asked for. */
function files(over: Record<string, unknown> = {}) {
  const asked: string[] = [];
  const contents: Record<string, Uint8Array | string> = {};
  for (const name of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors']) contents[name] = file(name);
  for (const [name, v] of Object.entries(over)) {
    if (v === undefined) delete contents[name];
    else contents[name] = typeof v === 'string' || v instanceof Uint8Array ? v : JSON.stringify(v);
  }
  const source: Record<string, Uint8Array | string> = {};
  for (const name of Object.keys(contents)) {
    Object.defineProperty(source, name, {
      enumerable: true,
      get: () => {
        asked.push(name);
        return contents[name];
      },
    });
  }
  return { source: { files: source }, asked };
}

const codePoints = (s: string) => [...s];
const hasLoneSurrogate = (s: string) => /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);

/** Streams `ids` through a Detokenizer in the given chunk sizes; returns the chunks (flush last). */
function stream(tok: Tokenizer, ids: ArrayLike<number>, sizes: (i: number) => number) {
  const d = new Detokenizer(tok);
  const chunks: string[] = [];
  for (let i = 0; i < ids.length; ) {
    const n = Math.max(1, sizes(i));
    chunks.push(d.push(Array.from(ids).slice(i, i + n)));
    i += n;
  }
  chunks.push(d.flush());
  return chunks;
}

/** A small deterministic PRNG (mulberry32), so random chunkings are reproducible. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('tokenizer.json (Tokenizers.js) equals Hugging Face tokenizers', async () => {
  const model = await loadModel(DIR, { backend: 'js' });
  const tok = model.tokenizer;

  test('the model loads its tokenizer.json; eos from generation_config.json', () => {
    expect(tok.kind).toBe('hf');
    expect(tok.vocabSize).toBe(expected.tokenizer_vocab);
    expect(model.config.vocabSize).toBe(416);
    expect(tok.eosTokenIds).toEqual([0]);
    expect([...tok.specialTokens]).toEqual([
      ['<|endoftext|>', 0],
      ['<|padding|>', 1],
    ]);
  });

  test.each(expected.tokenization.map((p) => [JSON.stringify(p.text), p] as const))('probe %s: HF ids and HF text', (_, p) => {
    expect(Array.from(tok.encode(p.text))).toEqual(p.ids);
    expect(tok.encode(p.text)).toBeInstanceOf(Uint32Array);
    expect(tok.decode(p.ids)).toBe(p.decoded);
  });

  test('the special-token probe: <|endoftext|> in the text is its id; decode skips it unless asked not to', () => {
    const p = expected.tokenization.find((q) => q.text.startsWith('<|endoftext|>'))!;
    expect(p.ids[0]).toBe(0);
    expect(tok.decode(p.ids, { skipSpecialTokens: false })).toBe(p.text);
  });

  test("the fixture text's input_ids", () => {
    expect(Array.from(tok.encode(expected.text))).toEqual(expected.input_ids);
    expect(tok.decode(expected.input_ids)).toBe(expected.text);
  });

  test('loadTokenizer gives the same tokenizer without reading the weights', async () => {
    const { source, asked } = files();
    const t = await loadTokenizer(source);
    expect(Array.from(t.encode(expected.text))).toEqual(expected.input_ids);
    expect(asked).not.toContain('model.safetensors');
    expect(asked.sort()).toEqual(['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']);
  });

  test('ids of the vocabulary padding (413..415) decode to nothing; ids >= the model vocabulary are an InvalidOptionError', () => {
    expect(tok.decode([41, 413, 415, 70])).toBe(tok.decode([41, 70]));
    for (const bad of [[416], [41, -1], [1.5], [2 ** 32]]) {
      const e = (() => {
        try {
          tok.decode(bad);
        } catch (x) {
          return x;
        }
      })();
      expect(e).toBeInstanceOf(InvalidOptionError);
      expect((e as Error).message).toMatch(/not in the vocabulary \[0, 416\)/);
    }
    expect(() => new ByteTokenizer().decode([256])).toThrow(/token id 256 at index 0 is not in the vocabulary \[0, 256\)/);
    expect(() => tok.encode(42 as unknown as string)).toThrow(InvalidOptionError);
  });

  test('a byte-level model without tokenizer.json keeps bytes', async () => {
    const t = await loadTokenizer(BYTE_MODEL);
    expect(t.kind).toBe('byte');
    expect(Array.from(t.encode('é🦀'))).toEqual([...new TextEncoder().encode('é🦀')]);
    expect(t.decode([0xef, 0xbb, 0xbf, 0x41])).toBe('\ufeffA'); // a generated BOM is text
    expect(t.eosTokenIds).toEqual([0]); // config.json's
  });
});

describe('tokenizer.json from a URL', () => {
  test('read with its tokenizer_config.json and generation_config.json, and cached', async () => {
    const url = 'https://models.example/bpe/';
    const requested: string[] = [];
    const realFetch = globalThis.fetch;
    const dir = mkdtempSync(join(tmpdir(), 'mamba-edge-tokenizer-'));
    globalThis.fetch = (async (input: string | URL | Request) => {
      const name = String(input instanceof Request ? input.url : input).slice(url.length);
      requested.push(name);
      const files = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors'];
      return files.includes(name) ? new Response(file(name)) : new Response('not found', { status: 404 });
    }) as typeof fetch;
    try {
      const m = await loadModel(url, { backend: 'js', cacheDir: dir });
      expect(Array.from(m.tokenizer.encode(expected.text))).toEqual(expected.input_ids);
      m.dispose();
      expect(requested).toEqual(['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'model.safetensors']);
      // From the cache: no request at all.
      requested.length = 0;
      const t = await loadTokenizer(url, { cacheDir: dir });
      expect(Array.from(t.encode(expected.text))).toEqual(expected.input_ids);
      expect(requested).toEqual([]);
    } finally {
      globalThis.fetch = realFetch;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('incremental detokenization', async () => {
  const tok = await loadTokenizer(DIR);
  const emoji = expected.tokenization.find((p) => p.text.includes('🦀'))!;
  const cjk = expected.tokenization.find((p) => p.text.includes('日本語'))!;

  test('byte-level BPE tokens do split characters: decoding a prefix of the ids leaves U+FFFD', () => {
    const broken = (p: { ids: number[] }) => p.ids.filter((_, i) => tok.decode(p.ids.slice(0, i + 1)).endsWith('\ufffd')).length;
    expect(broken(emoji)).toBeGreaterThanOrEqual(10);
    expect(broken(cjk)).toBeGreaterThanOrEqual(3);
  });

  test.each([
    ['emoji with ZWJ', emoji],
    ['CJK', cjk],
  ])('%s, one id at a time: every chunk is whole characters, and they add up to decode(all)', (_, p) => {
    const chunks = stream(tok, p.ids, () => 1);
    let sofar = '';
    for (const c of chunks) {
      expect(c).not.toMatch(/\ufffd/);
      expect(hasLoneSurrogate(c)).toBe(false);
      sofar += c;
      // Whole code points of the final text, in order.
      expect(codePoints(p.decoded).slice(0, codePoints(sofar).length).join('')).toBe(sofar);
    }
    expect(sofar).toBe(tok.decode(p.ids));
    expect(sofar).toBe(p.decoded);
    // Characters come out as soon as they are complete: held back only while a character is unfinished.
    expect(chunks.filter((c) => c === '').length).toBeGreaterThan(0);
    expect(chunks.filter((c) => c !== '').length).toBeGreaterThanOrEqual(codePoints(p.decoded).length / 2);
  });

  test('every probe and the text, in random chunks: concatenation equals decode(all), no chunk has U+FFFD', () => {
    const random = rng(7);
    for (const ids of [...expected.tokenization.map((p) => p.ids), expected.input_ids]) {
      for (let trial = 0; trial < 20; trial++) {
        const chunks = stream(tok, ids, () => 1 + Math.floor(random() * 4));
        expect(chunks.join('')).toBe(tok.decode(ids));
        for (const c of chunks) expect(hasLoneSurrogate(c) || c.includes('\ufffd')).toBe(false);
      }
    }
  });

  test('special tokens are skipped as decode skips them, or kept on request', () => {
    const p = expected.tokenization.find((q) => q.text.startsWith('<|endoftext|>'))!;
    expect(stream(tok, p.ids, () => 1).join('')).toBe('text after special');
    const d = new Detokenizer(tok, { skipSpecialTokens: false });
    expect(p.ids.map((id) => d.push([id])).join('') + d.flush()).toBe(p.text);
  });

  test('a byte that never completes comes out as U+FFFD, as in decode; a bad id throws and changes nothing', () => {
    // "é" cut short, then "A": the lone lead byte is U+FFFD once it is certainly invalid.
    const ids = [...tok.encode('x'), ...tok.encode('é').slice(0, 1), ...tok.encode('A')];
    expect(tok.decode(ids)).toBe('x\ufffdA');
    expect(stream(tok, ids, () => 1).join('')).toBe('x\ufffdA');
    const cut = [...tok.encode('x'), ...tok.encode('é').slice(0, 1)];
    expect(stream(tok, cut, () => 1)).toEqual(['x', '', '\ufffd']); // the unfinished character at the end: flush
    const d = new Detokenizer(tok);
    expect(d.push(tok.encode('ab'))).toBe('ab');
    expect(() => d.push([66, 9999])).toThrow(InvalidOptionError);
    expect(d.push(tok.encode('c')) + d.flush()).toBe('c');
  });

  test('invalid bytes (a model generating broken UTF-8) still stream: only the last 3 U+FFFD wait for the end', () => {
    // A lone continuation byte: each one is its own U+FFFD, final at once.
    const cont = Array.from({ length: tok.vocabSize }, (_, id) => id).find((id) => tok.decode([id, id, id, id]) === '\ufffd'.repeat(4))!;
    expect(cont).toBeDefined();
    const ids = Array(10).fill(cont);
    const chunks = stream(tok, ids, () => 1);
    expect(chunks.join('')).toBe(tok.decode(ids));
    expect(chunks.slice(0, -1).join('')).toBe('\ufffd'.repeat(7)); // streamed before the end, not all at flush
  });

  test('a SentencePiece-style tokenizer (Metaspace, byte fallback, Strip): streamed text equals decode(all)', () => {
    // Llama-style: "▁" for spaces, characters outside the vocabulary as <0xXX> byte tokens, BOS added.
    const bytes = Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    const pieces = ['<unk>', '<s>', '</s>', ...bytes, '▁', ...'Helowrd', '▁H', 'll', '▁w', 'or'];
    const json = {
      version: '1.0',
      added_tokens: ['<unk>', '<s>', '</s>'].map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
      normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
      pre_tokenizer: null,
      post_processor: {
        type: 'TemplateProcessing',
        single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
        pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
        special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
      },
      decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
      model: { type: 'BPE', unk_token: '<unk>', fuse_unk: true, byte_fallback: true, vocab: Object.fromEntries(pieces.map((p, i) => [p, i])), merges: ['▁ H', 'l l', '▁ w', 'o r'] },
    };
    const sp = new HfTokenizer(JSON.stringify(json), { modelVocabSize: 512 });
    const text = 'Hello world 🦀 日本 Hello';
    const ids = sp.encode(text);
    expect(ids[0]).toBe(1); // BOS from the template
    expect(sp.decode(ids)).toBe(text);
    expect(Array.from(ids).filter((id) => id >= 3 && id < 259).length).toBe(4 + 3 + 3); // 🦀 日 本 as bytes
    const random = rng(11);
    for (let trial = 0; trial < 20; trial++) {
      const chunks = stream(sp, ids, trial === 0 ? () => 1 : () => 1 + Math.floor(random() * 3));
      expect(chunks.join('')).toBe(text);
      for (const c of chunks) expect(hasLoneSurrogate(c) || c.includes('\ufffd')).toBe(false);
    }
  });

  test('the byte tokenizer streams the same way (random UTF-8 and invalid bytes)', () => {
    const byte = new ByteTokenizer();
    const random = rng(3);
    for (let trial = 0; trial < 50; trial++) {
      const text = '日本語 🦀👩‍👩‍👧 naïve ✓';
      const ids = [...new TextEncoder().encode(text)];
      if (trial % 2) ids.splice(Math.floor(random() * ids.length), 0, 0x80 + Math.floor(random() * 0x40)); // a stray continuation byte
      const chunks = stream(byte, ids, () => 1 + Math.floor(random() * 3));
      expect(chunks.join('')).toBe(byte.decode(ids));
      for (const c of chunks) expect(hasLoneSurrogate(c)).toBe(false);
    }
  });
});

describe('bad tokenizer files are typed errors', () => {
  const withModel = (model: object) => ({ ...tokenizerJson, model: { ...tokenizerJson.model, ...model } });

  test('an unknown tokenizer model type is UnsupportedModelError, found before the weights are read', async () => {
    const { source, asked } = files({ 'tokenizer.json': withModel({ type: 'WordLevel' }) });
    const e = await loadModel(source, { backend: 'js' }).catch((x) => x);
    expect(e).toBeInstanceOf(UnsupportedModelError);
    expect(e.code).toBe('UNSUPPORTED_MODEL');
    expect(e.message).toMatch(/^tokenizer\.json: tokenizer model type "WordLevel" is not supported \(Tokenizers\.js runs BPE, WordPiece, Unigram\)/);
    expect(asked).not.toContain('model.safetensors');
  });

  test('a component Tokenizers.js does not implement is UnsupportedModelError', async () => {
    const e = await loadTokenizer(files({ 'tokenizer.json': { ...tokenizerJson, normalizer: { type: 'Fancy' } } }).source).catch((x) => x);
    expect(e).toBeInstanceOf(UnsupportedModelError);
    expect(e.message).toMatch(/tokenizer\.json: Unknown Normalizer type: Fancy/);
  });

  test('a tokenizer whose vocabulary exceeds the model is ModelFormatError naming both sizes', async () => {
    const big = { ...tokenizerJson, added_tokens: [...tokenizerJson.added_tokens, { id: 416, content: '<|extra|>', special: true }] };
    const { source, asked } = files({ 'tokenizer.json': big });
    const e = await loadModel(source, { backend: 'js' }).catch((x) => x);
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.file).toBe('tokenizer.json');
    expect(e.item).toBe('model.vocab');
    expect(e.message).toMatch(/ids up to 416, but the model's vocabulary \(config\.json vocab_size\) has 416 \(ids 0\.\.415\)/);
    expect(asked).not.toContain('model.safetensors');
    // The same through a vocabulary entry, and directly.
    const vocab = { ...tokenizerJson.model.vocab, zz: 1000 };
    expect(() => new HfTokenizer(JSON.stringify(withModel({ vocab })), { modelVocabSize: 416 })).toThrow(/ids up to 1000/);
    // 415 fits.
    expect(new HfTokenizer(JSON.stringify(withModel({ vocab: { ...tokenizerJson.model.vocab, zz: 415 } })), { modelVocabSize: 416 }).vocabSize).toBe(416);
  });

  test('malformed tokenizer files', async () => {
    const cases: [unknown, RegExp][] = [
      ['{"model": ', /tokenizer\.json: not valid JSON/],
      ['[]', /tokenizer\.json: top level must be a JSON object/],
      [{ ...tokenizerJson, model: null }, /tokenizer\.json \[model\]: must be an object/],
      [withModel({ vocab: { a: -1 } }), /tokenizer\.json \[model\.vocab\["a"\]\]: token id -1 is not a non-negative integer/],
      [withModel({ vocab: [1, 2] }), /\[model\.vocab\]: must be an object/],
      [{ ...tokenizerJson, added_tokens: [{ id: 'x', content: 'a' }] }, /\[added_tokens\[0\]\]: token id "x"/],
      [{ ...tokenizerJson, added_tokens: {} }, /\[added_tokens\]: must be a list/],
    ];
    for (const [json, message] of cases) {
      const e = await loadTokenizer(files({ 'tokenizer.json': json as object }).source).catch((x) => x);
      expect(e, String(message)).toBeInstanceOf(ModelFormatError);
      expect(e.message).toMatch(message);
    }
  });

  test('hostile values in every part of tokenizer.json: it works, or fails with a MambaError (never a bare Error)', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {}); // Tokenizers.js: "Unknown pattern type"
    const values = [null, 5, 'x', [], {}, { type: 'Split' }, { type: 'Split', pattern: { Regex: '(' } }, { type: 'BPE' }, true, -1, [1, 2], { type: 'Sequence', pretokenizers: 5 }];
    const paths = ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder', 'model.merges', 'model.vocab', 'model.unk_token', 'model.byte_fallback', 'added_tokens', 'model.continuing_subword_prefix', 'model.end_of_word_suffix'];
    const bare: string[] = [];
    let typed = 0;
    try {
      for (const path of paths) {
        for (const value of values) {
          const json = structuredClone(tokenizerJson);
          const keys = path.split('.');
          keys.slice(0, -1).reduce((o, k) => o[k], json)[keys.at(-1)!] = value;
          try {
            const t = new HfTokenizer(JSON.stringify(json), { modelVocabSize: 416 });
            t.decode(t.encode('Hello wörld 🦀 <|endoftext|>'));
            t.decode([5, 6, 7]);
          } catch (e) {
            if (e instanceof MambaError) typed++;
            else bare.push(`${path} = ${JSON.stringify(value)}: ${e}`);
          }
        }
      }
    } finally {
      warn.mockRestore();
    }
    expect(bare).toEqual([]);
    expect(typed).toBeGreaterThan(40);
  });

  test('eos_token_id: generation_config.json first, then config.json; a list; out of range is ModelFormatError', async () => {
    const config = JSON.parse(file('config.json').toString('utf8'));
    const eos = async (over: Record<string, unknown>) => (await loadTokenizer(files(over).source)).eosTokenIds;
    expect(await eos({ 'generation_config.json': { eos_token_id: [0, 1] } })).toEqual([0, 1]);
    expect(await eos({ 'generation_config.json': undefined, 'config.json': { ...config, eos_token_id: 7 } })).toEqual([7]);
    expect(await eos({ 'generation_config.json': {}, 'config.json': { ...config, eos_token_id: 7 } })).toEqual([7]);
    expect(await eos({ 'generation_config.json': {}, 'config.json': { ...config, eos_token_id: null } })).toEqual([]);
    const e = await loadTokenizer(files({ 'generation_config.json': { eos_token_id: 416 } }).source).catch((x) => x);
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.message).toBe("generation_config.json [eos_token_id]: token id 416 is outside the model's vocabulary [0, 416)");
  });
});

describe('mamba-edge tokenize', () => {
  const BIN = fileURLToPath(new URL('../bin/mamba-edge.js', import.meta.url));
  const run = (args: string[], input?: string) => spawnSync(process.execPath, [BIN, 'tokenize', ...args], { input, encoding: 'utf8', timeout: 60_000 });

  test('prints HF ids of --text or stdin as one JSON array on one line', () => {
    for (const p of expected.tokenization) {
      const r = run(['--model', DIR, '--text', p.text]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe(`${JSON.stringify(p.ids)}\n`);
    }
    const piped = run(['--model', DIR], expected.text);
    expect(piped.status, piped.stderr).toBe(0);
    expect(piped.stdout).toBe(`${JSON.stringify(expected.input_ids)}\n`);
  });

  test('a byte-level model prints the UTF-8 bytes; errors are one line, --help says what it does', () => {
    const r = run(['--model', BYTE_MODEL, '--text', 'hé']);
    expect(r.stdout).toBe('[104,195,169]\n');
    const bad = run(['--model', '/nonexistent/model', '--text', 'x']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^mamba-edge: \/nonexistent\/model: no such directory\n$/);
    const usage = run(['--backend', 'js', '--text', 'x']);
    expect(usage.status).toBe(2);
    const help = run(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/Prints the token ids of TEXT .* as one JSON array on one\nline/);
    const main = spawnSync(process.execPath, [BIN, '--help'], { encoding: 'utf8' });
    expect(main.stdout).toMatch(/tokenize {3}print the token ids of a text as one JSON array/);
  });
});
