/**
 * The package as users get it: `npm pack`, then `npm install <tarball>` into a new project (no dev
 * dependencies, so nothing could build there), where the README's calls with no source load the
 * bundled model from inside node_modules — in Node (in-process and in a worker) and in Deno — and the
 * process exits by itself. Also the typed error for a model directory that is not there.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { DEFAULT_MODEL_PATH, defaultModelSource, loadModel, ModelFormatError, ModelNotFoundError } from '../src/index.js';

const ROOT = new URL('..', import.meta.url).pathname;
const DENO = join(ROOT, 'node_modules/.bin/deno');
const PROMPT = '%\nEl amor ';
const GREEDY = { maxTokens: 24, temperature: 0 };

/** npm run from `npm test` passes npm_* settings down; the user's install must not inherit them. */
const cleanEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));

function npm(args: string[], cwd: string): SpawnSyncReturns<string> {
  return spawnSync('npm', args, { cwd, encoding: 'utf8', env: cleanEnv(), timeout: 300_000, maxBuffer: 64 << 20 });
}

/** What the user's script does: the README's calls with no source, then the old README's relative path. */
const APP_SCRIPT = `
import { defaultModelSource, loadModel, loadModelInWorker } from 'mamba-edge';
const opts = ${JSON.stringify(GREEDY)};
async function text(model) {
  let t = '';
  for await (const c of model.generate(${JSON.stringify(PROMPT)}, opts)) t += c.text;
  return t;
}
const inProcess = await loadModel();
const a = { text: await text(inProcess), backend: inProcess.backend.name };
inProcess.dispose();
const worker = await loadModelInWorker();
const b = { text: await text(worker), backend: worker.backend.name };
worker.dispose();
const e = await loadModelInWorker('models/mambabyte-fortunes').catch((e) => e);
const resolved = import.meta.resolve('mamba-edge/models/mambabyte-fortunes/config.json');
// No process.exit: the process must end by itself (no live worker, no open handle).
console.log(JSON.stringify({ source: defaultModelSource(), resolved, inProcess: a, worker: b, notFound: { name: e.name, code: e.code, path: e.path, message: e.message } }));
`;

interface AppResult {
  source: string;
  resolved: string;
  inProcess: { text: string; backend: string };
  worker: { text: string; backend: string };
  notFound: { name: string; code: string; path: string; message: string };
}

describe('the packed tarball installed into a new project', () => {
  let tmp: string;
  let app: string;
  let install: SpawnSyncReturns<string>;
  let installSeconds: number;

  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'mamba-edge-pack-'));
    // prepack builds only what is stale (nothing after `pretest`): packing is a copy, not a build.
    const p0 = performance.now();
    const pack = npm(['pack', '--pack-destination', tmp, '--silent'], ROOT);
    expect(pack.status, pack.stderr).toBe(0);
    console.log(`npm pack: ${((performance.now() - p0) / 1000).toFixed(1)} s${/building/.test(pack.stderr) ? ' (built first: dist/ or build/ was stale)' : ''}`);
    const tarball = join(tmp, pack.stdout.trim().split('\n').pop()!);
    app = join(tmp, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    writeFileSync(join(app, 'run.mjs'), APP_SCRIPT);
    const t0 = performance.now();
    // --foreground-scripts: a lifecycle script that ran during the install shows as "> mamba-edge@… <event>".
    install = npm(['install', tarball, '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts'], app);
    installSeconds = (performance.now() - t0) / 1000;
  }, 600_000);

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test('installs without running a build: no lifecycle script, no build tools, dist/ and build/ from the tarball', () => {
    expect(install.status, install.stderr).toBe(0);
    console.log(`npm install <tarball>: ${installSeconds.toFixed(1)} s`);
    expect(install.stdout + install.stderr).not.toMatch(/> mamba-edge@[^\n]* (prepare|preinstall|install|postinstall)\b/);
    const pkgDir = join(app, 'node_modules/mamba-edge');
    const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
    for (const s of ['preinstall', 'install', 'postinstall', 'prepare']) expect(pkg.scripts?.[s], s).toBeUndefined();
    // Only the runtime dependencies (comlink, @huggingface/tokenizers) came along: no tsc, asc or rollup that a build would need.
    expect(readdirSync(join(app, 'node_modules')).filter((f) => !f.startsWith('.')).sort()).toEqual(['@huggingface', 'comlink', 'mamba-edge']);
    // What users need, and none of the repository's tests, training code, benches or AssemblyScript sources.
    expect(readdirSync(pkgDir).sort()).toEqual(['README.md', 'bin', 'build', 'dist', 'models', 'package.json', 'shaders', 'src', 'workers']);
    expect(readdirSync(join(pkgDir, 'dist')).sort()).toEqual(['browser', 'src', 'workers']);
    for (const f of ['build/mamba.wasm', 'build/mamba-relaxed.wasm', 'build/mamba-st.wasm', 'dist/src/index.js', 'dist/workers/engine-worker.js', 'dist/browser/mamba-edge.js']) {
      expect(existsSync(join(pkgDir, f)), f).toBe(true);
    }
    const weights = `${DEFAULT_MODEL_PATH}model.safetensors`;
    expect(statSync(join(pkgDir, weights)).size).toBe(statSync(join(ROOT, weights)).size);
  });

  test('Node: loadModel() and loadModelInWorker() with no source generate with the bundled model, and the process exits', async () => {
    expect(install.status, install.stderr).toBe(0);
    const t0 = performance.now();
    const r = spawnSync(process.execPath, ['run.mjs'], { cwd: app, encoding: 'utf8', env: cleanEnv(), timeout: 120_000 });
    const seconds = (performance.now() - t0) / 1000;
    // Killed by the timeout: signal SIGTERM, status null.
    expect(r.signal, `did not exit by itself within 120 s:\n${r.stderr}`).toBeNull();
    expect(r.status, r.stderr).toBe(0);
    console.log(`node run.mjs in the installed project: ${seconds.toFixed(1)} s`);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as AppResult;
    const pkgModel = join(app, 'node_modules/mamba-edge', DEFAULT_MODEL_PATH);
    expect(out.source).toBe(pkgModel);
    expect(out.resolved).toBe(pathToFileURL(join(pkgModel, 'config.json')).href);

    // The same greedy continuation as this checkout's model on the same backend.
    const ref = await loadModel(defaultModelSource(), { backend: out.inProcess.backend as 'wasm' });
    let expected = '';
    try {
      for await (const c of ref.generate(PROMPT, GREEDY)) expected += c.text;
    } finally {
      ref.dispose();
    }
    expect(new TextEncoder().encode(expected).length).toBe(GREEDY.maxTokens);
    expect(out.inProcess.text).toBe(expected);
    expect(out.worker.backend).toBe(out.inProcess.backend);
    expect(out.worker.text).toBe(expected);

    // The installed CLI (`npx mamba-edge generate`) defaults to the same model: prompt (--echo), continuation, newline.
    const cli = spawnSync(process.execPath, ['node_modules/mamba-edge/bin/mamba-edge.js', 'generate', '--echo', '--prompt', PROMPT, '--max-tokens', String(GREEDY.maxTokens), '--temperature', '0'], {
      cwd: app,
      encoding: 'utf8',
      env: cleanEnv(),
      timeout: 120_000,
    });
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stdout).toBe(`${PROMPT}${expected}\n`);

    // The old README's path, relative to the user's project: its own code, naming the path.
    expect(out.notFound).toMatchObject({ name: 'ModelNotFoundError', code: 'MODEL_NOT_FOUND', path: 'models/mambabyte-fortunes' });
    expect(out.notFound.message).toMatch(/no such directory, relative to the working directory; the bundled model needs no path/);
  });

  test.skipIf(!existsSync(DENO))('Deno: the installed package loads the bundled model with no source, in-process and in a worker', () => {
    expect(install.status, install.stderr).toBe(0);
    const env = { ...cleanEnv(), NO_COLOR: '1', XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? mkdtempSync(join(tmpdir(), 'xdg-')) };
    const r = spawnSync(DENO, ['run', '--allow-read', '--allow-env', '--allow-sys', 'run.mjs'], { cwd: app, encoding: 'utf8', env, timeout: 120_000 });
    expect(r.signal, `did not exit by itself within 120 s:\n${r.stderr}`).toBeNull();
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as AppResult;
    expect(out.source).toBe(join(app, 'node_modules/mamba-edge', DEFAULT_MODEL_PATH));
    expect(new TextEncoder().encode(out.inProcess.text).length).toBe(GREEDY.maxTokens);
    expect(out.worker.text).toBe(out.inProcess.text);
    expect(out.notFound).toMatchObject({ code: 'MODEL_NOT_FOUND', path: 'models/mambabyte-fortunes' });
  });
});

describe('a model directory that is not there', () => {
  test('a path that does not exist: ModelNotFoundError (MODEL_NOT_FOUND) naming it', async () => {
    const e = await loadModel('/nonexistent/model/dir', { backend: 'js' }).catch((e) => e);
    expect(e).toBeInstanceOf(ModelNotFoundError);
    expect(e.code).toBe('MODEL_NOT_FOUND');
    expect(e.path).toBe('/nonexistent/model/dir');
    expect(e.message).toBe('/nonexistent/model/dir: no such directory');
    // A file: URL names the directory it points at.
    const url = pathToFileURL('/nonexistent/model dir/');
    const e2 = await loadModel(url, { backend: 'js' }).catch((e) => e);
    expect(e2).toMatchObject({ code: 'MODEL_NOT_FOUND', path: '/nonexistent/model dir/' });
  });

  test('a directory without config.json: MODEL_NOT_FOUND too; a malformed one stays MODEL_FORMAT', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mamba-edge-empty-'));
    try {
      const e = await loadModel(dir, { backend: 'js' }).catch((e) => e);
      expect(e).toBeInstanceOf(ModelNotFoundError);
      expect(e.message).toBe(`${dir}: no config.json in this directory`);
      writeFileSync(join(dir, 'config.json'), '{ not json');
      const bad = await loadModel(dir, { backend: 'js' }).catch((e) => e);
      expect(bad).toBeInstanceOf(ModelFormatError);
      expect(bad.code).toBe('MODEL_FORMAT');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // In-memory files have no directory: a missing config.json there is a format problem.
    const mem = await loadModel({ files: {} }, { backend: 'js' }).catch((e) => e);
    expect(mem).toBeInstanceOf(ModelFormatError);
  });
});

describe('the default source', () => {
  test('loadModel() with no source (or undefined) reads the bundled model', async () => {
    const expected = JSON.parse(readFileSync(join(defaultModelSource(), 'config.json'), 'utf8'));
    for (const model of [await loadModel(), await loadModel(undefined, { backend: 'js' })]) {
      try {
        expect(model.config.nLayer).toBe(expected.num_hidden_layers);
        expect(model.config.dModel).toBe(expected.hidden_size);
      } finally {
        model.dispose();
      }
    }
  });

  test('where the package is not on a file system (a browser), no source is a typed error asking for a URL', async () => {
    vi.resetModules();
    vi.doMock('../src/assets.js', async (original) => ({
      ...(await original<typeof import('../src/assets.js')>()),
      assetUrl: (relative: string) => new URL(relative, 'https://example.com/app/node_modules/mamba-edge/'),
    }));
    try {
      const { resolveModelSource } = await import('../src/defaults.js');
      const errors = await import('../src/errors.js');
      let e: unknown;
      try {
        resolveModelSource(undefined);
      } catch (err) {
        e = err;
      }
      expect(e).toBeInstanceOf(errors.InvalidOptionError);
      expect(e).toMatchObject({ code: 'INVALID_OPTION', option: 'source' });
      expect((e as Error).message).toMatch(/pass the URL.*https:\/\/example\.com\/app\/node_modules\/mamba-edge\/models\/mambabyte-fortunes\//);
      expect(resolveModelSource('https://example.com/m/')).toBe('https://example.com/m/');
    } finally {
      vi.doUnmock('../src/assets.js');
      vi.resetModules();
    }
  });
});
