import { existsSync, fstatSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { defaultModelSource } from './defaults.js';
import { BackendUnavailableError, InvalidOptionError, MambaError } from './errors.js';
import { validateGenerateOptions, type GenerateOptions } from './generate.js';
import { loadModel, type LoadOptions, type Model } from './model.js';
import { resolveSampling } from './sampler.js';
import { checkBackendOptions } from './backends.js';

const MODEL_FLAGS = `  --model DIR|URL        model directory or URL (config.json + model.safetensors); default: the bundled model
  --backend B            auto | js | wasm | webgpu (default auto)
  --dtype D              weight format on the backend: f32 | f16 | q8 (default f32)
  --threads N            CPU threads for the wasm backend (default: all cores)
  --sha256 FILE=HEX      refuse the model unless FILE (e.g. model.safetensors) has this sha256 (repeatable)
  --cache                keep a downloaded model (--model URL) for next time, in ~/.cache/mamba-edge
  --cache-dir DIR        ... in DIR instead (implies --cache)`;

const USAGE: Record<string, string> = {
  main: `mamba-edge: run Mamba language models offline

Usage: mamba-edge <command> [options]

Commands:
  generate   stream a continuation of a prompt
  logits     write float32 logits [T, vocab] for every position of a file
  eval       bits per byte of a file under the model
  probe      print what this device can run (JSON)

Run 'mamba-edge <command> --help' for the options of a command.`,
  generate: `Usage: mamba-edge generate [options]

Streams generated text to stdout. The prompt is --prompt, or standard input when it is piped.

  --prompt TEXT          the prompt (default: stdin if piped, else a built-in prompt)
  --max-tokens N         bytes to generate (default 256)
  --temperature T        0 = greedy (default 0.8)
  --top-k K              keep the K most likely bytes; 0 = off (default 0)
  --top-p P              nucleus sampling threshold (default 0.95)
  --repetition-penalty R penalty > 1 for recently seen bytes (default 1)
  --seed S               random seed, for reproducible output
  --stop TEXT            stop when TEXT is generated (repeatable)
  --stats                print timing statistics to stderr
${MODEL_FLAGS}`,
  logits: `Usage: mamba-edge logits --input FILE --out FILE [options]

Writes float32 little-endian logits [T, vocab] for every byte position of FILE.

  --input FILE           raw bytes to score
  --out FILE             where to write the logits
${MODEL_FLAGS}`,
  eval: `Usage: mamba-edge eval --input FILE [options]

Prints the bits per byte of FILE under the model (last line: bits_per_byte <number>).

  --input FILE           text to score
${MODEL_FLAGS}`,
  probe: `Usage: mamba-edge probe

Prints a JSON report of this device's capabilities (WebGPU, WASM SIMD, threads, cores, memory).`,
};

const DEFAULT_PROMPT = 'The ';

class UsageError extends Error {}

const modelOptions: ParseArgsConfig['options'] = {
  model: { type: 'string' },
  backend: { type: 'string' },
  dtype: { type: 'string' },
  threads: { type: 'string' },
  sha256: { type: 'string', multiple: true },
  cache: { type: 'boolean' },
  'cache-dir': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

const OPTIONS: Record<string, ParseArgsConfig['options']> = {
  generate: {
    ...modelOptions,
    prompt: { type: 'string', short: 'p' },
    'max-tokens': { type: 'string', short: 'n' },
    temperature: { type: 'string', short: 't' },
    'top-k': { type: 'string' },
    'top-p': { type: 'string' },
    'repetition-penalty': { type: 'string' },
    seed: { type: 'string' },
    stop: { type: 'string', multiple: true },
    stats: { type: 'boolean' },
  },
  logits: { ...modelOptions, input: { type: 'string' }, out: { type: 'string' } },
  eval: { ...modelOptions, input: { type: 'string' } },
  probe: { help: { type: 'boolean', short: 'h' } },
};

function number(values: Record<string, unknown>, flag: string, integer = false): number | undefined {
  const v = values[flag];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (String(v).trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${flag} expects ${integer ? 'an integer' : 'a number'}, got '${v}'`);
  }
  return n;
}

function required(values: Record<string, unknown>, flag: string): string {
  const v = values[flag];
  if (typeof v !== 'string') throw new UsageError(`--${flag} is required`);
  return v;
}

async function openModel(values: Record<string, unknown>): Promise<Model> {
  const source = (values.model as string | undefined) ?? defaultModelSource();
  const options: LoadOptions = {
    backend: values.backend as LoadOptions['backend'],
    dtype: values.dtype as LoadOptions['dtype'],
    threads: number(values, 'threads', true),
    sha256: checksums(values.sha256 as string[] | undefined),
    cache: values.cache as boolean | undefined,
    cacheDir: values['cache-dir'] as string | undefined,
  };
  checkBackendOptions(options);
  if (values.model === undefined && !existsSync(source)) {
    throw new MambaError('NO_DEFAULT_MODEL', `the bundled model is missing at ${source}; pass --model DIR`);
  }
  return loadModel(source, options);
}

/** `--sha256 model.safetensors=9f86…` (repeatable) as the loader's `{ file: hex }`. */
function checksums(pairs: string[] | undefined): Record<string, string> | undefined {
  if (!pairs) return undefined;
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const m = /^([^=]+)=([0-9a-fA-F]{64})$/.exec(p);
    if (!m) throw new UsageError(`--sha256 takes FILE=HEX with 64 hex digits, got '${p}'`);
    out[m[1]] = m[2];
  }
  return out;
}

function readPrompt(values: Record<string, unknown>): string | Uint8Array {
  if (typeof values.prompt === 'string') return values.prompt;
  // Read stdin only when something is piped or redirected from a file (not a terminal, not /dev/null).
  // (Node child processes get socket pairs, shells get FIFOs.)
  try {
    const st = fstatSync(0);
    if (st.isFIFO() || st.isFile() || st.isSocket()) {
      const data = readFileSync(0);
      if (data.length > 0) return new Uint8Array(data);
    }
  } catch {
    // no usable stdin
  }
  return DEFAULT_PROMPT;
}

async function generate(values: Record<string, unknown>): Promise<void> {
  const ctrl = new AbortController();
  const options: GenerateOptions = {
    maxTokens: number(values, 'max-tokens', true),
    temperature: number(values, 'temperature'),
    topK: number(values, 'top-k', true),
    topP: number(values, 'top-p'),
    repetitionPenalty: number(values, 'repetition-penalty'),
    seed: number(values, 'seed', true),
    stop: values.stop as string[] | undefined,
    signal: ctrl.signal,
  };
  validateGenerateOptions(options);
  resolveSampling(options);
  const prompt = readPrompt(values);
  const model = await openModel(values);
  const onSigint = () => ctrl.abort();
  process.once('SIGINT', onSigint);
  try {
    // Echo a prompt the user did not type into the terminal themselves, so the output reads as one text.
    if (typeof prompt === 'string') process.stdout.write(prompt);
    for await (const chunk of model.generate(prompt, options)) {
      if (chunk.text) process.stdout.write(chunk.text);
      if (chunk.stats) {
        process.stdout.write('\n');
        if (values.stats) {
          const s = chunk.stats;
          process.stderr.write(
            `[${s.backend}] prompt ${s.promptTokens} B at ${s.prefillTokensPerSecond.toFixed(1)} B/s, ` +
              `generated ${s.generatedTokens} B at ${s.decodeTokensPerSecond.toFixed(1)} B/s, ` +
              `first byte after ${s.timeToFirstTokenMs.toFixed(1)} ms, finish: ${s.finishReason}, seed ${s.seed}\n`,
          );
        }
      }
    }
  } finally {
    process.off('SIGINT', onSigint);
    model.dispose();
  }
}

async function logits(values: Record<string, unknown>): Promise<void> {
  const input = readFileSync(required(values, 'input'));
  const out = required(values, 'out');
  const model = await openModel(values);
  try {
    const l = await model.logits(new Uint8Array(input));
    writeFileSync(out, new Uint8Array(l.buffer, l.byteOffset, l.byteLength));
    process.stderr.write(`wrote ${input.length} x ${model.config.vocabSize} float32 logits to ${out} (${model.backend.description})\n`);
  } finally {
    model.dispose();
  }
}

async function evaluate(values: Record<string, unknown>): Promise<void> {
  const input = readFileSync(required(values, 'input'));
  const model = await openModel(values);
  try {
    const t0 = performance.now();
    const bpb = await model.bitsPerByte(new Uint8Array(input));
    const s = (performance.now() - t0) / 1000;
    console.log(`bytes ${input.length}`);
    console.log(`backend ${model.backend.description}`);
    console.log(`seconds ${s.toFixed(2)}`);
    console.log(`bits_per_byte ${bpb.toFixed(6)}`);
  } finally {
    model.dispose();
  }
}

async function probeCommand(): Promise<void> {
  const { probe } = await import('./probe.js');
  console.log(JSON.stringify(await probe(), null, 2));
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    console.log(USAGE.main);
    return command ? 0 : 2;
  }
  const options = OPTIONS[command];
  if (!options) {
    console.error(`mamba-edge: unknown command '${command}'\n\n${USAGE.main}`);
    return 2;
  }
  try {
    let values: Record<string, unknown>;
    try {
      values = parseArgs({ args: rest, options, strict: true, allowPositionals: false }).values;
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    if (values.help) {
      console.log(USAGE[command]);
      return 0;
    }
    if (command === 'generate') await generate(values);
    else if (command === 'logits') await logits(values);
    else if (command === 'eval') await evaluate(values);
    else await probeCommand();
    return 0;
  } catch (e) {
    if (e instanceof UsageError || e instanceof InvalidOptionError) {
      console.error(`mamba-edge ${command}: ${e.message}\n\n${USAGE[command]}`);
      return 2;
    }
    if (e instanceof BackendUnavailableError || e instanceof MambaError) {
      console.error(`mamba-edge ${command}: ${e.message}`);
      return 1;
    }
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      console.error(`mamba-edge ${command}: ${(e as Error).message}`);
      return 1;
    }
    throw e;
  }
}
