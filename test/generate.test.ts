import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { decodeSnapshot, encodeSnapshot, InvalidOptionError, loadModel, MambaError, OutOfMemoryError, Utf8Stream, type Backend, type GenerationChunk, type Model } from '../src/index.js';
import { generateTokens, StopMatcher, type SequenceState } from '../src/generate.js';
import { syntheticModel } from '../src/synthetic.js';
import { rng, Sampler, resolveSampling } from '../src/sampler.js';
import { incompleteTail } from '../src/tokenizer.js';
import { FIXTURE_ROOT, loadFixtures } from './helpers/fixtures.js';
import { collect } from './helpers/stream.js';

const enc = (s: string) => new TextEncoder().encode(s);

describe('streaming UTF-8 decoder', () => {
  const text = 'aé€😀日本語 ✓\u{10FFFF}z';
  const bytes = enc(text);

  test('never splits a character, whatever the split points', () => {
    for (let i = 0; i <= bytes.length; i++) {
      for (let j = i; j <= bytes.length; j++) {
        const d = new Utf8Stream();
        const parts = [d.push(bytes.subarray(0, i)), d.push(bytes.subarray(i, j)), d.push(bytes.subarray(j)), d.flush()];
        for (const p of parts) expect(p.text).not.toContain('\uFFFD');
        for (const p of parts) expect(new TextDecoder().decode(p.bytes)).toBe(p.text);
        expect(parts.map((p) => p.text).join('')).toBe(text);
      }
    }
  });

  test('byte by byte', () => {
    const d = new Utf8Stream();
    let out = '';
    for (const b of bytes) out += d.push(Uint8Array.of(b)).text;
    expect(out + d.flush().text).toBe(text);
  });

  test('invalid sequences become U+FFFD as soon as they are certainly invalid', () => {
    const d = new Utf8Stream();
    expect(d.push(Uint8Array.of(0xe2, 0x82)).text).toBe(''); // could still become €
    expect(d.push(Uint8Array.of(0x41)).text).toBe('\uFFFDA'); // now certainly broken
    expect(d.push(Uint8Array.of(0xff)).text).toBe('\uFFFD'); // never valid
    expect(d.push(Uint8Array.of(0xed, 0xa0)).text).toBe('\uFFFD\uFFFD'); // surrogate range: invalid at once
    expect(d.push(Uint8Array.of(0xf0)).text).toBe('');
    expect(d.flush().text).toBe('\uFFFD'); // stream ended inside a character
    expect(incompleteTail(Uint8Array.of(0xf0, 0x9f, 0x98))).toBe(3);
    expect(incompleteTail(Uint8Array.of(0xf0, 0x8f))).toBe(0); // overlong: invalid
  });
});

describe('sampler', () => {
  const logits = Float32Array.from({ length: 256 }, (_, i) => Math.sin(i * 1.7) * 3);

  test('temperature 0 is argmax', () => {
    const s = new Sampler(resolveSampling({ temperature: 0 }));
    const best = logits.indexOf(Math.max(...logits));
    expect(s.sample(logits, [])).toBe(best);
  });

  test('same seed → same draws; different seed → different draws', () => {
    const draw = (seed: number) => {
      const s = new Sampler(resolveSampling({ temperature: 1, topP: 1, seed }));
      return Array.from({ length: 50 }, () => s.sample(logits, []));
    };
    expect(draw(7)).toEqual(draw(7));
    expect(draw(7)).not.toEqual(draw(8));
  });

  test('top-k and top-p restrict the candidates', () => {
    const order = [...logits.keys()].sort((a, b) => logits[b] - logits[a]);
    const k = new Sampler(resolveSampling({ temperature: 5, topK: 3, topP: 1, seed: 1 }));
    const seenK = new Set(Array.from({ length: 300 }, () => k.sample(logits, [])));
    expect([...seenK].every((t) => order.slice(0, 3).includes(t))).toBe(true);
    expect(seenK.size).toBe(3);
    const p = new Sampler(resolveSampling({ temperature: 1, topP: 1e-6, seed: 1 }));
    expect(new Set(Array.from({ length: 50 }, () => p.sample(logits, [])))).toEqual(new Set([order[0]]));
  });

  test('repetition penalty discourages recent tokens', () => {
    const l = new Float32Array(256);
    l[65] = 2;
    l[66] = 1.5;
    const s = new Sampler(resolveSampling({ temperature: 0, repetitionPenalty: 2 }));
    expect(s.sample(l, [])).toBe(65);
    expect(s.sample(l, [65])).toBe(66); // 2 / 2 = 1 < 1.5
  });

  test.each([
    [{ temperature: -1 }, 'temperature'],
    [{ temperature: NaN }, 'temperature'],
    [{ topK: 1.5 }, 'topK'],
    [{ topP: 0 }, 'topP'],
    [{ topP: 1.5 }, 'topP'],
    [{ repetitionPenalty: 0 }, 'repetitionPenalty'],
    [{ seed: -3 }, 'seed'],
  ])('rejects %o', (opts, option) => {
    expect(() => resolveSampling(opts)).toThrow(InvalidOptionError);
    expect(() => resolveSampling(opts)).toThrow(option);
  });
});

describe('stop strings are matched incrementally (linear in the output)', () => {
  /** The old rule, by brute force: the earliest complete stop string in the output, and what is held back. */
  function reference(out: Uint8Array, stops: Uint8Array[]): { at: number; emitted: number[] } {
    const emitted: number[] = [];
    let pending: number[] = [];
    for (let i = 0; i < out.length; i++) {
      pending.push(out[i]);
      const text = pending.join(',') + ',';
      let hit = -1;
      for (const st of stops) {
        const key = [...st].join(',') + ',';
        if (text.endsWith(',' + key) || text === key) hit = Math.max(hit, st.length);
      }
      if (hit > 0) return { at: i, emitted: [...emitted, ...pending.slice(0, pending.length - hit)] };
      let hold = 0;
      for (const st of stops) for (let len = 1; len < st.length && len <= pending.length; len++) if (pending.slice(-len).every((b, j) => b === st[j])) hold = Math.max(hold, len);
      emitted.push(...pending.slice(0, pending.length - hold));
      pending = pending.slice(pending.length - hold);
    }
    return { at: -1, emitted: [...emitted, ...pending] };
  }

  test('same result as the brute-force rule on random outputs and stop strings', () => {
    const random = rng(5);
    const pick = (n: number, alphabet: number) => Uint8Array.from({ length: n }, () => 97 + Math.floor(random() * alphabet));
    for (let trial = 0; trial < 300; trial++) {
      const alphabet = 1 + Math.floor(random() * 3);
      const stops = Array.from({ length: 1 + Math.floor(random() * 3) }, () => pick(1 + Math.floor(random() * 6), alphabet));
      const out = pick(60, alphabet);
      const m = new StopMatcher(stops);
      const emitted: number[] = [];
      let at = -1;
      for (let i = 0; i < out.length && at < 0; i++) {
        const r = m.push(out[i]);
        emitted.push(...r.emit);
        if (r.stopped) at = i;
      }
      if (at < 0) emitted.push(...m.rest());
      expect({ at, emitted }, `trial ${trial}`).toEqual(reference(out, stops));
    }
  });

  // 'a'×m 'b' 'a'×m against an output of only 'a': m bytes stay held back, and checking every
  // suffix length against the stop string fails only after m comparisons: ~m²/... a byte before.
  const nearMiss = (m: number) => 'a'.repeat(m) + 'b' + 'a'.repeat(m);

  test('40,000 bytes that keep almost matching 1,001-byte stop strings: at most 2 comparisons a byte', () => {
    const stops = [enc(nearMiss(500)), enc('a'.repeat(1000) + 'c')];
    const m = new StopMatcher(stops);
    let emitted = 0;
    for (let i = 0; i < 40_000; i++) emitted += m.push(97).emit.length;
    expect(emitted + m.rest().length).toBe(40_000);
    expect(m.comparisons).toBeLessThanOrEqual(2 * 40_000 * stops.length);
  });

  test('generation time with such a stop string stays within 1.5x of no stop string', async () => {
    // A model that always predicts 'a': the decode loop's own cost dominates, so the stop check shows.
    const V = 256;
    const logits = new Float32Array(V);
    logits[97] = 1;
    const backend = {
      name: 'js',
      description: 'always a',
      config: { vocabSize: V },
      createState: () => ({}),
      forward: async () => logits,
    } as unknown as Backend;
    const run = async (stop?: string[]) => {
      const seq = { handle: { id: 0 }, logits: null, history: new Uint8Array(0) } as unknown as SequenceState;
      // CPU time, not wall time: other processes on a loaded machine do not count.
      const t0 = process.cpuUsage();
      let bytes = 0;
      let last: GenerationChunk | undefined;
      for await (const c of generateTokens(backend, seq, 'x', { temperature: 0, maxTokens: 40_000, stop })) {
        bytes += c.bytes.length;
        last = c;
      }
      expect(bytes).toBe(40_000);
      expect(last!.stats!.finishReason).toBe('length');
      const t = process.cpuUsage(t0);
      return (t.user + t.system) / 1000;
    };
    // Best of 5, interleaved, so a slow phase of the machine affects both alike.
    let without = Infinity;
    let withStop = Infinity;
    for (let i = 0; i < 5; i++) {
      without = Math.min(without, await run());
      withStop = Math.min(withStop, await run(['a'.repeat(399) + 'b', 'a'.repeat(49) + 'c']));
    }
    // Before: ~3x slower: the 399 held-back bytes were searched for the short stop string at every token.
    console.log(`40,000 tokens: ${without.toFixed(0)} ms without a stop string, ${withStop.toFixed(0)} ms with stop strings it keeps almost producing`);
    expect(withStop / without).toBeLessThan(1.5);
  });
});

describe('generation API', () => {
  let model: Model;
  const [tiny] = loadFixtures().filter((f) => f.name === 'small-hf-f16-untied');
  beforeAll(async () => {
    model = await loadModel(`${FIXTURE_ROOT}small-hf-f16-untied`, { backend: 'js' });
  });
  afterAll(() => model.dispose());

  test('streams complete characters and reports stats', async () => {
    const r = await collect(model.generate('Hello', { maxTokens: 40, temperature: 1, seed: 3 }));
    expect(r.bytes.length).toBe(40);
    for (const c of r.chunks) expect(new TextDecoder().decode(c.bytes)).toBe(c.text);
    expect(r.stats).toMatchObject({ promptTokens: 5, generatedTokens: 40, finishReason: 'length', seed: 3 });
    expect(r.stats.decodeTokensPerSecond).toBeGreaterThan(0);
    expect(r.stats.prefillTokensPerSecond).toBeGreaterThan(0);
    expect(r.stats.timeToFirstTokenMs).toBeGreaterThan(0);
  });

  test('same seed → same bytes', async () => {
    const a = await collect(model.generate('abc', { maxTokens: 30, temperature: 0.9, seed: 11 }));
    const b = await collect(model.generate('abc', { maxTokens: 30, temperature: 0.9, seed: 11 }));
    const c = await collect(model.generate('abc', { maxTokens: 30, temperature: 0.9, seed: 12 }));
    expect(a.bytes).toEqual(b.bytes);
    expect(a.bytes).not.toEqual(c.bytes);
  });

  test('stop strings end generation without emitting the stop string, across token boundaries', async () => {
    const full = await collect(model.generate('Hello', { temperature: 0, maxTokens: 64 }));
    // The first two consecutive printable ASCII bytes of the greedy continuation make a 2-token stop string.
    const printable = (b: number) => b >= 0x20 && b < 0x7f;
    const at = [...full.bytes].findIndex((b, i) => i + 1 < full.bytes.length && printable(b) && printable(full.bytes[i + 1]));
    expect(at).toBeGreaterThanOrEqual(0);
    const stop = String.fromCharCode(full.bytes[at], full.bytes[at + 1]);
    const r = await collect(model.generate('Hello', { temperature: 0, maxTokens: 64, stop: ['\u0000never', stop] }));
    expect(r.stats.finishReason).toBe('stop');
    expect(r.bytes).toEqual(full.bytes.subarray(0, at));
    expect(r.stats.generatedTokens).toBe(at + 2);

    // A stop string that starts to match and then does not must release the held-back bytes.
    const partial = await collect(model.generate('Hello', { temperature: 0, maxTokens: 64, stop: [`${stop[0]}\u0001`] }));
    expect(partial.stats.finishReason).toBe('length');
    expect(partial.bytes).toEqual(full.bytes);
  });

  test('abort ends the stream within one token and the model stays usable', async () => {
    const ctrl = new AbortController();
    let n = 0;
    const chunks: GenerationChunk[] = [];
    for await (const c of model.generate('x', { maxTokens: 1000, temperature: 0, signal: ctrl.signal })) {
      chunks.push(c);
      n += c.bytes.length;
      if (n >= 5 && !ctrl.signal.aborted) ctrl.abort();
    }
    const stats = chunks.at(-1)!.stats!;
    expect(stats.finishReason).toBe('abort');
    expect(stats.generatedTokens).toBeLessThanOrEqual(n + 4); // at most the bytes held back for UTF-8 + one step
    expect(stats.generatedTokens).toBeLessThan(20);
    const again = await collect(model.generate(tiny.input, { temperature: 0, maxTokens: 48 }));
    expect(again.bytes).toEqual(tiny.greedy);
  });

  test('abort during a long prefill lands within one slice and leaves the session consistent', async () => {
    const s = model.createSession();
    const ctrl = new AbortController();
    const prompt = new Uint8Array(32 * 1024).fill(97);
    setTimeout(() => ctrl.abort(), 30);
    const r = await collect(s.generate(prompt, { signal: ctrl.signal, maxTokens: 5 }));
    expect(r.stats.finishReason).toBe('abort');
    expect(r.stats.promptTokens).toBeLessThan(prompt.length);
    // The session holds exactly the consumed prefix: continuing equals feeding that prefix from scratch.
    const cont = await collect(s.generate('b', { temperature: 0, maxTokens: 8 }));
    const ref = model.createSession();
    if (r.stats.promptTokens > 0) await ref.feed(prompt.subarray(0, r.stats.promptTokens));
    const expected = await collect(ref.generate('b', { temperature: 0, maxTokens: 8 }));
    expect(cont.bytes).toEqual(expected.bytes);
  });

  test('a timer can abort decoding (the loop yields to the event loop)', async () => {
    const r = await collect(model.generate('x', { maxTokens: 1e6, signal: AbortSignal.timeout(50) }));
    expect(r.stats.finishReason).toBe('abort');
  });

  test('already-aborted signal generates nothing', async () => {
    const r = await collect(model.generate('x', { signal: AbortSignal.abort() }));
    expect(r.stats).toMatchObject({ generatedTokens: 0, finishReason: 'abort' });
  });

  test('sessions continue; snapshot/restore and fork resume exactly', async () => {
    const one = model.createSession();
    const first = await collect(one.generate(tiny.input.subarray(0, 40), { temperature: 0, maxTokens: 10 }));
    const snap = await one.snapshot();
    const cont = await collect(one.generate(' more', { temperature: 0, maxTokens: 20 }));

    // Equals doing it in one pass from scratch.
    const whole = new Uint8Array([...tiny.input.subarray(0, 40), ...first.bytes, ...enc(' more')]);
    const direct = await collect(model.generate(whole, { temperature: 0, maxTokens: 20 }));
    expect(cont.bytes).toEqual(direct.bytes);

    // Restored into a fresh session (also after a structured clone, as across a worker or IndexedDB).
    const two = model.createSession();
    await two.restore(structuredClone(snap));
    expect((await collect(two.generate(' more', { temperature: 0, maxTokens: 20 }))).bytes).toEqual(cont.bytes);

    const three = model.createSession(decodeSnapshot(encodeSnapshot(snap)));
    const fork = await three.fork();
    expect((await collect(fork.generate(' more', { temperature: 0, maxTokens: 20 }))).bytes).toEqual(cont.bytes);
    expect((await collect(three.generate(' more', { temperature: 0, maxTokens: 20 }))).bytes).toEqual(cont.bytes);
    // A snapshot is small and constant-size: L·E·(K-1 + N) floats + logits, whatever the length of the conversation.
    const c = model.config;
    expect(snap.conv.length + snap.ssm.length).toBe(c.nLayer * c.dInner * (c.dConv - 1 + c.dState));
    for (const s of [one, two, three, fork]) s.dispose();
  });

  test('snapshot of another model, or corrupt snapshot bytes, are refused', async () => {
    const other = await loadModel(`${FIXTURE_ROOT}tiny-hf-f32`, { backend: 'js' });
    const snap = await other.createSession().snapshot();
    await expect(model.createSession().restore(snap)).rejects.toThrow(/snapshot is for model/);
    expect(() => model.createSession(snap)).toThrow(/snapshot is for model/);
    const bytes = encodeSnapshot(snap);
    expect(() => decodeSnapshot(bytes.subarray(0, bytes.length - 1))).toThrow(/length does not match/);
    other.dispose();
  });

  test('concurrent generate calls on one session are queued, never interleaved', async () => {
    const s = model.createSession();
    await s.feed('Once upon');
    const snap = await s.snapshot();
    const [a, b] = await Promise.all([
      collect(s.generate(' a', { temperature: 0, maxTokens: 8 })),
      collect(s.generate(' b', { temperature: 0, maxTokens: 8 })),
    ]);
    const ref = model.createSession();
    await ref.restore(snap);
    const a2 = await collect(ref.generate(' a', { temperature: 0, maxTokens: 8 }));
    const b2 = await collect(ref.generate(' b', { temperature: 0, maxTokens: 8 }));
    expect(a.bytes).toEqual(a2.bytes);
    expect(b.bytes).toEqual(b2.bytes);
  });

  test('impossible options are refused with a typed error', async () => {
    await expect(collect(model.generate('x', { maxTokens: -1 }))).rejects.toThrow(InvalidOptionError);
    await expect(collect(model.generate('x', { stop: [''] }))).rejects.toThrow(/stop/);
    await expect(collect(model.generate('', {}))).rejects.toThrow(/prompt/);
    await expect(loadModel(`${FIXTURE_ROOT}tiny-hf-f32`, { backend: 'cuda' as never })).rejects.toThrow(/backend/);
  });

  test('wrong argument types are InvalidOptionError naming the argument, never a TypeError', async () => {
    for (const prompt of [42, null, {}, [72, 105], new Uint16Array(2), undefined]) {
      const e = await collect(model.generate(prompt as never, { maxTokens: 1 })).catch((x) => x);
      expect(e, String(prompt)).toBeInstanceOf(InvalidOptionError);
      expect(e.option).toBe('prompt');
      const se = await collect(model.createSession().generate(prompt as never)).catch((x) => x);
      expect(se.option).toBe('prompt');
      await expect(model.createSession().feed(prompt as never)).rejects.toThrow(InvalidOptionError);
      await expect(model.logits(prompt as never)).rejects.toThrow(InvalidOptionError);
      await expect(model.bitsPerByte(prompt as never)).rejects.toThrow(InvalidOptionError);
    }
    for (const [opts, option] of [[null, 'options'], [[1], 'options'], [{ signal: {} }, 'signal'], [{ signal: 'x' }, 'signal']] as const) {
      const e = await collect(model.generate('x', opts as never)).catch((x) => x);
      expect(e).toBeInstanceOf(InvalidOptionError);
      expect(e.option).toBe(option);
    }
    await expect(model.bitsPerByte('xyz', {} as never)).rejects.toMatchObject({ option: 'signal' });
  });

  test('malformed snapshots are typed SNAPSHOT errors; NaN/Inf states are refused', async () => {
    const s = model.createSession();
    await s.feed('abc');
    const snap = await s.snapshot();
    const bad: Array<[unknown, RegExp]> = [
      [[], /not a mamba-edge snapshot/],
      [null, /not a mamba-edge snapshot/],
      [{ ...snap, conv: Array.from(snap.conv) }, /conv must be a Float32Array/],
      [{ ...snap, history: undefined }, /history must be a Uint8Array/],
      [{ ...snap, ssm: null }, /ssm must be a Float32Array/],
      [{ ...snap, logits: [1, 2] }, /logits must be a Float32Array or null/],
      [{ ...snap, ssm: snap.ssm.map((v, i) => (i === 7 ? NaN : v)) }, /ssm holds NaN or infinite/],
      [{ ...snap, conv: snap.conv.map((v, i) => (i === 0 ? Infinity : v)) }, /conv holds NaN or infinite/],
      [{ ...snap, logits: snap.logits!.map(() => -Infinity) }, /logits holds NaN or infinite/],
    ];
    for (const [value, message] of bad) {
      const e = await model.createSession().restore(value as never).catch((x) => x);
      expect(e, String(message)).toBeInstanceOf(MambaError);
      expect(e.code).toBe('SNAPSHOT');
      expect(e.message).toMatch(message);
      expect(() => model.createSession(value as never)).toThrow(message);
    }
    // Encoded bytes: a header that is JSON but not an object, non-bytes, NaN inside.
    const enc = (header: string) => {
      const h = new TextEncoder().encode(header);
      const out = new Uint8Array(8 + h.length);
      new DataView(out.buffer).setUint32(0, 0x5353454d, true);
      new DataView(out.buffer).setUint32(4, h.length, true);
      out.set(h, 8);
      return out;
    };
    for (const bytes of [enc('null'), enc('[1]'), enc('{"version":1,"model":"m","conv":"x"}'), null, 'abc']) {
      expect(() => decodeSnapshot(bytes as never)).toThrow(expect.objectContaining({ code: 'SNAPSHOT' }));
    }
    const nan = encodeSnapshot(snap);
    new DataView(nan.buffer).setFloat32(nan.length - snap.history.length - 4, NaN, true);
    expect(() => decodeSnapshot(nan)).toThrow(/NaN or infinite/);
    expect(() => encodeSnapshot({ ...snap, ssm: null } as never)).toThrow(/ssm must be a Float32Array/);
    s.dispose();
  });

  test('a snapshot from another model with the same shapes is refused', async () => {
    const spec = { hidden_size: 8, num_hidden_layers: 1, state_size: 4 };
    const [a, b] = await Promise.all([7, 8].map((seed) => loadModel({ files: syntheticModel({ ...spec, seed }) }, { backend: 'js' })));
    const a2 = await loadModel({ files: syntheticModel({ ...spec, seed: 7 }) }, { backend: 'js' });
    const sa = a.createSession();
    await sa.feed('hello');
    const snap = await sa.snapshot();
    expect(a.identity).not.toBe(b.identity);
    expect(a.identity.split(':W')[0]).toBe(b.identity.split(':W')[0]);
    await expect(b.createSession().restore(snap)).rejects.toThrow(/same shapes, different weights/);
    // The same weights loaded again (or on another backend / dtype) have the same identity.
    expect(a2.identity).toBe(a.identity);
    await a2.createSession().restore(decodeSnapshot(encodeSnapshot(snap)));
    for (const m of [a, b, a2]) m.dispose();
  });

  test('logits: positions, a memory bound checked before allocating, and a signal', async () => {
    const V = model.config.vocabSize;
    const all = await model.logits(tiny.input);
    const T = tiny.input.length;
    expect(await model.logits(tiny.input, { positions: 'last' })).toEqual(all.subarray((T - 1) * V));
    expect(await model.logits(tiny.input, { positions: { start: 3, end: 9 } })).toEqual(all.subarray(3 * V, 9 * V));
    expect(await model.logits(tiny.input, { positions: { start: 5 } })).toEqual(all.subarray(5 * V));
    expect(await model.logits(tiny.input, { maxMemoryBytes: T * V * 4 })).toEqual(all);
    for (const positions of ['first', { start: 2, end: 1 }, { start: 0, end: T + 1 }, { start: -1 }, { start: 1.5 }]) {
      await expect(model.logits(tiny.input, { positions } as never)).rejects.toMatchObject({ option: 'positions' });
    }
    await expect(model.logits(tiny.input, { maxMemoryBytes: T * V * 4 - 1 })).rejects.toThrow(OutOfMemoryError);

    // 10 MiB in: [T, V] would be 10.7 GB. Refused at once, before a float is allocated or computed.
    const big = new Uint8Array(10 * 2 ** 20).fill(97);
    const heap0 = process.memoryUsage().heapUsed;
    const t0 = performance.now();
    const e = await model.logits(big).catch((x) => x);
    expect(performance.now() - t0, 'ms to refuse').toBeLessThan(200);
    expect(e).toBeInstanceOf(OutOfMemoryError);
    expect(e.message).toMatch(/10485760 positions x 256 need 10737418240 bytes, more than maxMemoryBytes \(1073741824 bytes\)/);
    expect(process.memoryUsage().heapUsed - heap0).toBeLessThan(16 * 2 ** 20);
    // An abort lands between slices of the input (on a tiny model, so the slices are short).
    const small = await loadModel({ files: syntheticModel({ hidden_size: 8, num_hidden_layers: 1, state_size: 4, seed: 2 }) }, { backend: 'js' });
    const t1 = performance.now();
    await expect(small.logits(big, { positions: 'last', signal: AbortSignal.timeout(50) })).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(performance.now() - t1, 'ms until the abort landed').toBeLessThan(2_000);
    small.dispose();
  });

  test('bits per byte agrees with the fixture logits', async () => {
    let nats = 0;
    const V = tiny.vocab;
    for (let t = 0; t + 1 < tiny.input.length; t++) {
      const row = tiny.logits.subarray(t * V, (t + 1) * V);
      const max = Math.max(...row);
      const lse = Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0)) + max;
      nats += lse - row[tiny.input[t + 1]];
    }
    const expected = nats / (tiny.input.length - 1) / Math.LN2;
    expect(await model.bitsPerByte(tiny.input)).toBeCloseTo(expected, 4);
  });

  test('disposed model refuses work', async () => {
    const m = await loadModel(`${FIXTURE_ROOT}tiny-hf-f32`, { backend: 'js' });
    m.dispose();
    await expect(m.logits('abc')).rejects.toThrow(/disposed/);
  });
});
