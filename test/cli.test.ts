/** The `mamba-edge` command as a user runs it: the built package (npm test builds it first). */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { FIXTURE_ROOT, loadFixtures, maxAbsDiff } from './helpers/fixtures.js';

const BIN = new URL('../bin/mamba-edge.js', import.meta.url).pathname;
const run = (args: string[], input?: string) =>
  spawnSync(process.execPath, [BIN, ...args], { input, encoding: 'utf8', timeout: 60_000 });

const small = loadFixtures().find((f) => f.name === 'small-hf-f16-untied')!;
const dir = mkdtempSync(join(tmpdir(), 'mamba-edge-cli-'));

describe('mamba-edge CLI', () => {
  test('logits writes float32 [T, vocab] matching transformers', () => {
    const input = join(dir, 'input.bin');
    const out = join(dir, 'logits.f32');
    writeFileSync(input, small.input);
    const r = run(['logits', '--model', small.dir, '--input', input, '--out', out, '--backend', 'js']);
    expect(r.status, r.stderr).toBe(0);
    const raw = readFileSync(out);
    const logits = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    expect(maxAbsDiff(logits, small.logits) / small.maxAbsLogit).toBeLessThan(1e-4);
  });

  test('generate is greedy-exact with --temperature 0 and reads a piped prompt', () => {
    const r = run(['generate', '--model', small.dir, '--backend', 'js', '--temperature', '0', '--max-tokens', '48', '--stats'], new TextDecoder().decode(small.input));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/generated 48 B at [\d.]+ B\/s/);
    // stdout is the decoded continuation (invalid UTF-8 shows as U+FFFD), plus a final newline.
    expect(r.stdout).toBe(`${new TextDecoder().decode(small.greedy)}\n`);
  });

  test('--sha256 pins the model files: a mismatch is refused, a match runs', async () => {
    const { createHash } = await import('node:crypto');
    const file = join(small.dir, 'model.safetensors');
    const good = createHash('sha256').update(readFileSync(file)).digest('hex');
    const args = ['generate', '--model', small.dir, '--backend', 'js', '--prompt', 'Hi', '--max-tokens', '4'];
    const bad = run([...args, '--sha256', `model.safetensors=${'0'.repeat(64)}`]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/model\.safetensors.*sha256 mismatch/);
    expect(run([...args, '--sha256', `model.safetensors=${good}`]).status).toBe(0);
    const malformed = run([...args, '--sha256', 'model.safetensors=xyz']);
    expect(malformed.status).toBe(2);
    expect(malformed.stderr).toMatch(/--sha256 takes FILE=HEX/);
  });

  test('same --seed gives the same text', () => {
    const args = ['generate', '--model', `${FIXTURE_ROOT}tiny-hf-f32`, '--backend', 'js', '--prompt', 'Hi', '--max-tokens', '20', '--seed', '5', '--temperature', '1.5'];
    expect(run(args).stdout).toBe(run(args).stdout);
  });

  test('eval prints bits per byte on the last line', () => {
    const input = join(dir, 'eval.bin');
    writeFileSync(input, small.input);
    const r = run(['eval', '--model', small.dir, '--input', input, '--backend', 'js']);
    expect(r.status, r.stderr).toBe(0);
    const last = r.stdout.trim().split('\n').at(-1)!;
    expect(last).toMatch(/^bits_per_byte \d+\.\d+$/);
  });

  test.each([
    [['generate', '--bogus'], 2, /Unknown option '--bogus'/],
    [['generate', '--max-tokens'], 2, /argument missing/],
    [['generate', '--max-tokens', 'x'], 2, /--max-tokens expects an integer/],
    [['generate', '--top-p', '2'], 2, /topP/],
    [['frobnicate'], 2, /unknown command/],
    [['logits', '--model', FIXTURE_ROOT + 'tiny-hf-f32'], 2, /--input is required/],
    [['generate', '--model', '/does/not/exist', '--backend', 'js'], 1, /\/does\/not\/exist: no such directory/],
  ])('%j exits %i', (args, status, message) => {
    const r = run(args as string[]);
    expect(r.status).toBe(status);
    expect(r.stderr).toMatch(message);
  });

  test('--help for every command', () => {
    for (const cmd of ['generate', 'logits', 'eval', 'probe']) {
      const r = run([cmd, '--help']);
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`Usage: mamba-edge ${cmd}`));
    }
  });
});
