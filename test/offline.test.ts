/**
 * Offline by default: loading from a directory or from memory, generating, and the CLI `generate`
 * path never open a network connection. Every way out (fetch, sockets, http(s), tls, dns) is
 * replaced by a spy that throws, and each test asserts that none was called.
 */
import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, test, vi, type MockInstance } from 'vitest';
import { main } from '../src/cli.js';
import { defaultModelSource } from '../src/defaults.js';
import { loadModel, type Model } from '../src/index.js';
import { syntheticModel } from '../src/synthetic.js';
import { FIXTURE_ROOT } from './helpers/fixtures.js';

const tinyDir = `${FIXTURE_ROOT}tiny-hf-f32`;
const blocked = () => {
  throw new Error('network access in an offline test');
};

let spies: MockInstance[] = [];
const realFetch = globalThis.fetch;
let fetchSpy: ReturnType<typeof vi.fn>;

beforeAll(() => {
  fetchSpy = vi.fn(blocked);
  globalThis.fetch = fetchSpy as unknown as typeof fetch;
  spies = [
    vi.spyOn(net.Socket.prototype, 'connect').mockImplementation(blocked),
    vi.spyOn(net, 'connect').mockImplementation(blocked),
    vi.spyOn(net, 'createConnection').mockImplementation(blocked),
    vi.spyOn(tls, 'connect').mockImplementation(blocked),
    vi.spyOn(http, 'request').mockImplementation(blocked),
    vi.spyOn(http, 'get').mockImplementation(blocked),
    vi.spyOn(https, 'request').mockImplementation(blocked),
    vi.spyOn(https, 'get').mockImplementation(blocked),
    vi.spyOn(dns, 'lookup').mockImplementation(blocked),
    vi.spyOn(dns.promises, 'lookup').mockImplementation(blocked),
  ];
});

afterAll(() => {
  globalThis.fetch = realFetch;
  for (const s of spies) s.mockRestore();
});

/** After every test: not one attempt to reach the network. */
afterEach(() => {
  expect(fetchSpy).not.toHaveBeenCalled();
  for (const s of spies) expect(s, s.getMockName()).not.toHaveBeenCalled();
});

async function generateText(m: Model, prompt: string): Promise<string> {
  let text = '';
  for await (const chunk of m.generate(prompt, { maxTokens: 16, temperature: 0 })) text += chunk.text;
  return text;
}

describe('offline by default', () => {
  test('the spies work: fetch and sockets are blocked', async () => {
    expect(() => fetch('http://127.0.0.1:9/')).toThrow(/network access/);
    expect(() => new net.Socket().connect(9, '127.0.0.1')).toThrow(/network access/);
    fetchSpy.mockClear();
    for (const s of spies) s.mockClear();
  });

  test('loading from a directory (path and file: URL) and generating', async () => {
    const m = await loadModel(tinyDir, { backend: 'js' });
    const text = await generateText(m, 'Hello');
    m.dispose();
    const u = await loadModel(pathToFileURL(`${tinyDir}/`), { backend: 'js' });
    expect(await generateText(u, 'Hello')).toBe(text);
    u.dispose();
  });

  test('loading from memory and generating, in a session', async () => {
    const m = await loadModel({ files: syntheticModel({ hidden_size: 16, num_hidden_layers: 1 }) }, { backend: 'js' });
    const s = m.createSession();
    await s.feed('A system prompt. ');
    for await (const _ of s.generate('Go', { maxTokens: 8 })) void _;
    await m.bitsPerByte('offline evaluation');
    s.dispose();
    m.dispose();
  });

  test('the automatic backend choice (device probe included) stays offline', async () => {
    const m = await loadModel(tinyDir);
    expect((await generateText(m, 'Hi')).length).toBeGreaterThanOrEqual(0);
    m.dispose();
  });

  test('the CLI generate path', async () => {
    let out = '';
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out += typeof chunk === 'string' ? chunk : new TextDecoder().decode(chunk);
      return true;
    });
    try {
      const code = await main(['generate', '--model', tinyDir, '--prompt', 'Hello', '--echo', '--max-tokens', '12', '--temperature', '0']);
      expect(code).toBe(0);
    } finally {
      write.mockRestore();
    }
    expect(out.startsWith('Hello')).toBe(true);
    expect(out.length).toBeGreaterThan('Hello'.length);
  });

  test('a model cached from a URL loads with the network down (its missing shard index was remembered)', async () => {
    // Sharded: model.safetensors answers 404, which the cache must remember for the offline run.
    const single = syntheticModel({ hidden_size: 16, num_hidden_layers: 1, seed: 5 });
    const st = single['model.safetensors'];
    const header = JSON.parse(new TextDecoder().decode(st.subarray(8, 8 + Number(new DataView(st.buffer, st.byteOffset).getBigUint64(0, true)))));
    const shard = 'model-00001-of-00001.safetensors';
    const weightMap = Object.fromEntries(Object.keys(header).filter((k) => k !== '__metadata__').map((k) => [k, shard]));
    const files = {
      'config.json': single['config.json'],
      'model.safetensors.index.json': JSON.stringify({ metadata: {}, weight_map: weightMap }),
      [shard]: st,
    };
    const dir = mkdtempSync(join(tmpdir(), 'mamba-edge-offline-'));
    const url = 'https://models.example/tiny/';
    const requested: string[] = [];
    // First run: a server (in-process, no socket) with config.json and model.safetensors only (no tokenizer.json: bytes).
    globalThis.fetch = (async (input: string | URL | Request) => {
      const u = String(input instanceof Request ? input.url : input);
      requested.push(u.slice(url.length));
      const body = (files as Record<string, Uint8Array | string>)[u.slice(url.length)];
      return body === undefined ? new Response('not found', { status: 404 }) : new Response(body as BodyInit);
    }) as typeof fetch;
    try {
      const m = await loadModel(url, { backend: 'js', cacheDir: dir });
      const text = await generateText(m, 'Hello');
      m.dispose();
      expect(requested).toEqual(['config.json', 'tokenizer.json', 'model.safetensors', 'model.safetensors.index.json', shard]);
      // Second run: every way out is blocked (afterEach checks that none was tried).
      globalThis.fetch = fetchSpy as unknown as typeof fetch;
      const again = await loadModel(url, { backend: 'js', cacheDir: dir });
      expect(await generateText(again, 'Hello')).toBe(text);
      again.dispose();
      expect(readdirSync(dir).filter((f) => /\.(part|tmp|lock|json)$/.test(f) && !/-(config|model\.safetensors\.index)\.json$/.test(f))).toEqual([]);
    } finally {
      globalThis.fetch = fetchSpy as unknown as typeof fetch;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test.skipIf(!existsSync(`${defaultModelSource()}/config.json`))('the CLI with the bundled default model', async () => {
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      expect(await main(['generate', '--prompt', 'Q: ', '--max-tokens', '8', '--backend', 'js'])).toBe(0);
    } finally {
      write.mockRestore();
    }
  });
});
