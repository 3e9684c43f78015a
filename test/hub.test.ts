/**
 * Hugging Face Hub ids against a local server laid out like the Hub (`/{org}/{name}/resolve/{rev}/{file}`,
 * `X-Repo-Commit`, `ETag` / `X-Linked-Etag`, a 302 for LFS weights to a second server on another port),
 * and the standard Hugging Face cache layout on disk (refs, blobs, snapshot symlinks, .no_exist), both
 * the one this loader writes and one laid out by hand as Python's huggingface_hub does.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest';
import { main } from '../src/cli.js';
import { FetchError, InvalidOptionError, loadModel, loadModelInWorker, ModelNotFoundError, type LoadProgress } from '../src/index.js';
import { hubIdOf, parseHubId } from '../src/hub.js';
import { syntheticModel } from '../src/synthetic.js';
import { FIXTURE_ROOT, loadFixtures, maxAbsDiff } from './helpers/fixtures.js';

const fixture = loadFixtures().find((f) => f.name === 'tiny-hf-f32')!;
const TINY: Record<string, Buffer> = {
  'config.json': readFileSync(`${FIXTURE_ROOT}tiny-hf-f32/config.json`),
  'model.safetensors': readFileSync(`${FIXTURE_ROOT}tiny-hf-f32/model.safetensors`),
};

/** A sharded checkpoint (no model.safetensors): its 404 must be remembered as .no_exist. */
const SHARDED: Record<string, Buffer> = (() => {
  const m = syntheticModel({ hidden_size: 16, num_hidden_layers: 1, seed: 5 });
  const st = m['model.safetensors'];
  const header = JSON.parse(Buffer.from(st.subarray(8, 8 + Number(Buffer.from(st).readBigUInt64LE(0)))).toString());
  const shard = 'model-00001-of-00001.safetensors';
  const weightMap = Object.fromEntries(Object.keys(header).filter((k) => k !== '__metadata__').map((k) => [k, shard]));
  return {
    'config.json': Buffer.from(m['config.json']),
    'model.safetensors.index.json': Buffer.from(JSON.stringify({ metadata: {}, weight_map: weightMap })),
    [shard]: Buffer.from(st),
  };
})();

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** What the Hub sends as the ETag of a small (non-LFS) file: its git blob id. */
const gitBlobId = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const commitOf = (s: string) => createHash('sha1').update(s).digest('hex');

interface Repo {
  commit: string;
  refs: Record<string, string>;
  files: Record<string, Buffer>;
  /** Headers that replace the real ones, for a hostile server. */
  evil?: Record<string, string>;
}
const REPOS: Record<string, Repo> = {
  'test-org/tiny-mamba': { commit: commitOf('tiny'), refs: { main: commitOf('tiny'), 'refs/pr/1': commitOf('tiny') }, files: TINY },
  'test-org/sharded': { commit: commitOf('sharded'), refs: { main: commitOf('sharded') }, files: SHARDED },
  'evil-org/etag': { commit: commitOf('evil'), refs: { main: commitOf('evil') }, files: TINY, evil: { etag: '"../../../../escaped"' } },
  'evil-org/commit': { commit: commitOf('evil'), refs: { main: commitOf('evil') }, files: TINY, evil: { 'x-repo-commit': '../../../../escaped' } },
};
const isLfs = (name: string) => name.endsWith('.safetensors');

interface Hit {
  method: string;
  path: string;
  auth?: string;
  range?: string;
}
let hubHits: Hit[] = [];
let cdnHits: Hit[] = [];
/** Bytes after which the CDN drops the connection (once), to leave a partial download behind. */
let cdnCutAt: number | undefined;
/** Serve these bytes instead of the blob (a corrupted CDN). */
let cdnCorrupt = false;
let hub: Server;
let cdn: Server;
let hubUrl = '';
let cdnUrl = '';

function hubHandler(req: IncomingMessage, res: ServerResponse) {
  const path = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
  hubHits.push({ method: req.method!, path, auth: req.headers.authorization });
  const m = /^\/([^/]+\/[^/]+)\/resolve\/(.+)\/([^/]+)$/.exec(path);
  const repo = m && REPOS[m[1]];
  if (m?.[1].startsWith('plain-org/')) return res.writeHead(404).end(); // a mirror that says nothing more
  if (!m || !repo) return res.writeHead(404, { 'x-error-code': 'RepositoryNotFound', 'x-error-message': 'Repository not found' }).end();
  const [, , rev, name] = m;
  const commit = rev === repo.commit ? rev : repo.refs[rev];
  if (!commit) return res.writeHead(404, { 'x-error-code': 'RevisionNotFound', 'x-error-message': `Invalid rev id: ${rev}` }).end();
  const body = repo.files[name];
  if (!body) return res.writeHead(404, { 'x-error-code': 'EntryNotFound', 'x-repo-commit': commit }).end();
  const headers: Record<string, string> = { 'x-repo-commit': commit };
  if (isLfs(name)) {
    // As the Hub does for LFS files: a redirect to the CDN, the sha256 as X-Linked-Etag.
    Object.assign(headers, { 'x-linked-etag': `"${sha256(body)}"`, 'x-linked-size': String(body.length), etag: '"not-the-blob-name"', location: `${cdnUrl}/blobs/${sha256(body)}` });
    Object.assign(headers, repo.evil ?? {});
    return res.writeHead(302, headers).end();
  }
  Object.assign(headers, { etag: `"${gitBlobId(body)}"`, 'content-length': String(body.length) }, repo.evil ?? {});
  res.writeHead(200, headers);
  res.end(req.method === 'HEAD' ? undefined : body);
}

function cdnHandler(req: IncomingMessage, res: ServerResponse) {
  const path = new URL(req.url!, 'http://x').pathname;
  cdnHits.push({ method: req.method!, path, auth: req.headers.authorization, range: req.headers.range });
  const blob = Object.values(REPOS)
    .flatMap((r) => Object.values(r.files))
    .find((b) => `/blobs/${sha256(b)}` === path);
  if (!blob) return res.writeHead(404).end();
  const body = cdnCorrupt ? Buffer.from(blob).fill(7, 100, 200) : blob;
  const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
  const part = body.subarray(start);
  res.writeHead(start > 0 ? 206 : 200, {
    'content-length': String(part.length),
    etag: `"${sha256(blob)}"`,
    'accept-ranges': 'bytes',
    ...(start > 0 ? { 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` } : {}),
  });
  if (cdnCutAt !== undefined && start === 0) {
    res.write(part.subarray(0, cdnCutAt));
    cdnCutAt = undefined;
    setTimeout(() => res.socket?.destroy(), 30);
  } else {
    res.end(part);
  }
}

const listen = (s: Server) => new Promise<string>((r) => s.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(s.address() as AddressInfo).port}`)));

const ENV_KEYS = ['HF_ENDPOINT', 'HF_TOKEN', 'HF_HUB_CACHE', 'HF_HOME'] as const;
const savedEnv = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'mamba-edge-hub-'));
  dirs.push(d);
  return d;
};
const realFetch = globalThis.fetch;
/** Replaces fetch with one that fails every call; returns how many calls were tried. */
function blockNetwork(): () => number {
  const spy = vi.fn(() => {
    throw new Error('network access while offline');
  });
  globalThis.fetch = spy as unknown as typeof fetch;
  return () => spy.mock.calls.length;
}

beforeAll(async () => {
  hub = createServer(hubHandler);
  cdn = createServer(cdnHandler);
  hubUrl = await listen(hub);
  cdnUrl = await listen(cdn);
  for (const k of ENV_KEYS) delete process.env[k];
  process.env.HF_ENDPOINT = hubUrl;
});

afterEach(() => {
  globalThis.fetch = realFetch;
  hubHits = [];
  cdnHits = [];
  cdnCutAt = undefined;
  cdnCorrupt = false;
  process.env.HF_ENDPOINT = hubUrl;
  delete process.env.HF_TOKEN;
  delete process.env.HF_HUB_CACHE;
});

afterAll(async () => {
  for (const k of ENV_KEYS) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
  await Promise.all([hub, cdn].map((s) => new Promise((r) => s.close(r))));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const repoDir = (cache: string, repo: string) => join(cache, `models--${repo.replace('/', '--')}`);
/** Every path under `dir`, relative, sorted; links shown as `name -> target`. */
function tree(dir: string, prefix = ''): string[] {
  return readdirSync(join(dir, prefix))
    .sort()
    .flatMap((n) => {
      const rel = prefix ? `${prefix}/${n}` : n;
      const st = lstatSync(join(dir, rel));
      if (st.isSymbolicLink()) return [`${rel} -> ${readlinkSync(join(dir, rel))}`];
      return st.isDirectory() ? tree(dir, rel) : [rel];
    });
}

async function logitsOf(source: string, opts: Parameters<typeof loadModel>[1] = {}): Promise<Float32Array> {
  const m = await loadModel(source, { backend: 'js', ...opts });
  try {
    return await m.logits(fixture.input);
  } finally {
    m.dispose();
  }
}

describe('Hugging Face Hub ids', () => {
  test('download into the Hugging Face cache layout: refs, blobs by ETag, relative snapshot links; the token only to the Hub', async () => {
    const cache = tempDir();
    process.env.HF_HUB_CACHE = cache;
    process.env.HF_TOKEN = 'hf_secret_token';
    const progress: LoadProgress[] = [];
    const got = await logitsOf('test-org/tiny-mamba', { onProgress: (p) => progress.push(p) });
    // The same numbers as transformers computed for this checkpoint, and exactly what the local copy gives.
    expect(maxAbsDiff(got, fixture.logits) / fixture.maxAbsLogit).toBeLessThanOrEqual(1e-4);
    expect(got).toEqual(await logitsOf(fixture.dir));

    const { commit } = REPOS['test-org/tiny-mamba'];
    const weights = sha256(TINY['model.safetensors']);
    const config = gitBlobId(TINY['config.json']);
    expect(tree(repoDir(cache, 'test-org/tiny-mamba'))).toEqual([
      // The optional tokenizer.json the repository lacks, remembered as huggingface_hub does.
      `.no_exist/${commit}/tokenizer.json`,
      `blobs/${config}`,
      `blobs/${weights}`,
      'refs/main',
      `snapshots/${commit}/config.json -> ../../blobs/${config}`,
      `snapshots/${commit}/model.safetensors -> ../../blobs/${weights}`,
    ]);
    expect(readFileSync(join(repoDir(cache, 'test-org/tiny-mamba'), 'refs/main'), 'utf8')).toBe(commit);
    expect(readFileSync(join(repoDir(cache, 'test-org/tiny-mamba'), 'blobs', weights)).equals(TINY['model.safetensors'])).toBe(true);

    // The revision is resolved once; every file after the first is fetched at that commit.
    const base = '/test-org/tiny-mamba/resolve';
    expect(hubHits.map((h) => `${h.method} ${h.path}`)).toEqual([
      `HEAD ${base}/main/config.json`,
      `GET ${base}/${commit}/config.json`,
      `HEAD ${base}/${commit}/tokenizer.json`,
      `HEAD ${base}/${commit}/model.safetensors`,
      `GET ${base}/${commit}/model.safetensors`,
    ]);
    expect(hubHits.every((h) => h.auth === 'Bearer hf_secret_token')).toBe(true);
    // The weights came from the other origin, which never saw the token.
    expect(cdnHits).toEqual([{ method: 'GET', path: `/blobs/${weights}`, auth: undefined, range: undefined }]);
    const last = progress.filter((p) => p.file === 'model.safetensors').pop()!;
    expect(last).toEqual({ file: 'model.safetensors', loaded: TINY['model.safetensors'].length, total: TINY['model.safetensors'].length });

    // Second load: everything is cached, so not one request is even tried.
    const tried = blockNetwork();
    expect(await logitsOf('test-org/tiny-mamba')).toEqual(got);
    expect(tried()).toBe(0);
    globalThis.fetch = realFetch;
    expect(hubHits.length + cdnHits.length).toBe(5 + 1);
  });

  test('a sharded model: the 404 of model.safetensors is remembered in .no_exist, so it loads with no network', async () => {
    const cache = tempDir();
    const got = await logitsOf('test-org/sharded', { cacheDir: cache });
    const { commit } = REPOS['test-org/sharded'];
    const dir = repoDir(cache, 'test-org/sharded');
    expect(readFileSync(join(dir, '.no_exist', commit, 'model.safetensors'), 'utf8')).toBe('');
    expect(tree(dir).filter((p) => p.startsWith('snapshots/')).map((p) => p.split(' ')[0])).toEqual(
      ['config.json', 'model-00001-of-00001.safetensors', 'model.safetensors.index.json'].map((f) => `snapshots/${commit}/${f}`),
    );
    expect(hubHits.filter((h) => h.path.endsWith('/model.safetensors'))).toHaveLength(1); // one HEAD, answered 404
    const tried = blockNetwork();
    expect(await logitsOf('test-org/sharded', { cacheDir: cache })).toEqual(got);
    expect(tried()).toBe(0);
    globalThis.fetch = realFetch;

    // In a worker too (the source crosses as the id; the worker reads the same cache); still no request.
    hubHits = [];
    const w = await loadModelInWorker('test-org/sharded', { backend: 'js', cacheDir: cache });
    try {
      expect(await w.logits(fixture.input)).toEqual(got);
    } finally {
      w.dispose();
    }
    expect(hubHits).toEqual([]);
  });

  test('cache: false downloads into memory only: the Hugging Face cache stays empty', async () => {
    const cache = tempDir();
    process.env.HF_HUB_CACHE = cache;
    expect(await logitsOf('test-org/tiny-mamba', { cache: false })).toEqual(await logitsOf(fixture.dir));
    expect(readdirSync(cache)).toEqual([]);
    expect(cdnHits).toHaveLength(1);
  });

  test("a cache laid out by hand like Python's huggingface_hub loads with no server at all", async () => {
    const cache = tempDir();
    const commit = commitOf('python');
    const dir = repoDir(cache, 'py-org/tiny');
    mkdirSync(join(dir, 'blobs'), { recursive: true });
    mkdirSync(join(dir, 'snapshots', commit), { recursive: true });
    mkdirSync(join(dir, 'refs'));
    for (const [name, body] of Object.entries(TINY)) {
      const etag = isLfs(name) ? sha256(body) : gitBlobId(body);
      writeFileSync(join(dir, 'blobs', etag), body);
      symlinkSync(`../../blobs/${etag}`, join(dir, 'snapshots', commit, name));
    }
    writeFileSync(join(dir, 'refs', 'main'), commit);
    // huggingface_hub remembers the optional files a repository lacks: here its tokenizer.json.
    mkdirSync(join(dir, '.no_exist', commit), { recursive: true });
    writeFileSync(join(dir, '.no_exist', commit, 'tokenizer.json'), '');
    process.env.HF_ENDPOINT = 'http://127.0.0.1:9'; // nothing listens there; nothing may try
    process.env.HF_HUB_CACHE = cache;
    const tried = blockNetwork();
    const got = await logitsOf('py-org/tiny');
    expect(maxAbsDiff(got, fixture.logits) / fixture.maxAbsLogit).toBeLessThanOrEqual(1e-4);
    // By commit: no ref needed. Copies instead of links (huggingface_hub on Windows without symlinks).
    rmSync(join(dir, 'refs'), { recursive: true });
    expect(await logitsOf(`py-org/tiny@${commit}`)).toEqual(got);
    const other = commitOf('copies');
    mkdirSync(join(dir, 'snapshots', other));
    for (const [name, body] of Object.entries(TINY)) writeFileSync(join(dir, 'snapshots', other, name), body);
    mkdirSync(join(dir, '.no_exist', other), { recursive: true });
    writeFileSync(join(dir, '.no_exist', other, 'tokenizer.json'), '');
    expect(await logitsOf(`py-org/tiny@${other}`)).toEqual(got);
    // $HF_HOME/hub is the same cache when HF_HUB_CACHE is unset.
    const home = tempDir();
    mkdirSync(join(home, 'hub'));
    symlinkSync(dir, join(home, 'hub', 'models--py-org--tiny'));
    delete process.env.HF_HUB_CACHE;
    process.env.HF_HOME = home;
    try {
      expect(await logitsOf(`py-org/tiny@${commit}`)).toEqual(got);
    } finally {
      delete process.env.HF_HOME;
    }
    expect(tried()).toBe(0);
  });

  test('a repository or revision the Hub does not have: ModelNotFoundError after one request, nothing written', async () => {
    const cache = tempDir();
    const e = await loadModel('test-org/nope', { backend: 'js', cacheDir: cache }).catch((x) => x);
    expect(e).toBeInstanceOf(ModelNotFoundError);
    expect(e).toMatchObject({ code: 'MODEL_NOT_FOUND', path: 'test-org/nope' });
    expect(e.message).toMatch(/RepositoryNotFound.*repository or revision not found on the Hub \(test-org\/nope@main on http:\/\/127\.0\.0\.1:\d+\).*HF_TOKEN/);
    expect(hubHits).toHaveLength(1);
    const r = await loadModel('test-org/tiny-mamba@no-such-branch', { backend: 'js', cacheDir: cache }).catch((x) => x);
    expect(r).toBeInstanceOf(ModelNotFoundError);
    expect(r.message).toMatch(/RevisionNotFound.*test-org\/tiny-mamba@no-such-branch/);
    expect(hubHits).toHaveLength(2);
    const p = await loadModel('plain-org/x', { backend: 'js', cacheDir: cache }).catch((x) => x);
    expect(p).toBeInstanceOf(ModelNotFoundError);
    expect(p.message).toMatch(/^plain-org\/x: HTTP 404 for config.json: repository or revision not found on the Hub \(plain-org\/x@main on /);
    expect(hubHits).toHaveLength(3);
    expect(readdirSync(cache)).toEqual([]);
  });

  test('the token from the environment goes to the environment\'s endpoint only; hubToken goes to hubEndpoint', async () => {
    process.env.HF_TOKEN = 'hf_env_token';
    process.env.HF_ENDPOINT = 'http://127.0.0.1:9';
    await logitsOf('test-org/tiny-mamba', { hubEndpoint: hubUrl, cacheDir: tempDir() });
    expect(hubHits.length).toBe(5); // HEAD + GET config.json, HEAD tokenizer.json (absent), HEAD + GET model.safetensors
    expect(hubHits.every((h) => h.auth === undefined)).toBe(true);
    hubHits = [];
    await logitsOf('test-org/tiny-mamba', { hubEndpoint: hubUrl, hubToken: 'hf_given', cacheDir: tempDir() });
    expect(hubHits.map((h) => h.auth)).toEqual(Array(5).fill('Bearer hf_given'));
    expect(cdnHits.every((h) => h.auth === undefined)).toBe(true);
  });

  test('an interrupted weight download resumes from its partial blob; a corrupted one fails its LFS sha256 and is not kept', async () => {
    const cache = tempDir();
    const size = TINY['model.safetensors'].length;
    cdnCutAt = 100_000;
    const first = await loadModel('test-org/tiny-mamba', { backend: 'js', cacheDir: cache, retries: 0 }).catch((x) => x);
    expect(first).toBeInstanceOf(FetchError);
    const blobs = join(repoDir(cache, 'test-org/tiny-mamba'), 'blobs');
    const weights = sha256(TINY['model.safetensors']);
    expect(readFileSync(join(blobs, `${weights}.part`)).length).toBe(100_000);
    cdnHits = [];
    expect(await logitsOf('test-org/tiny-mamba', { cacheDir: cache })).toEqual(await logitsOf(fixture.dir));
    expect(cdnHits.map((h) => h.range)).toEqual(['bytes=100000-']);
    expect(readdirSync(blobs).sort()).toEqual([gitBlobId(TINY['config.json']), weights].sort());
    expect(readFileSync(join(blobs, weights)).length).toBe(size);

    const other = tempDir();
    cdnCorrupt = true;
    const bad = await loadModel('test-org/tiny-mamba', { backend: 'js', cacheDir: other, retries: 0 }).catch((x) => x);
    expect(bad).toBeInstanceOf(FetchError);
    expect(bad.message).toMatch(new RegExp(`sha256 mismatch for model.safetensors: expected ${weights}`));
    expect(existsSync(join(repoDir(other, 'test-org/tiny-mamba'), 'blobs', weights))).toBe(false);
    expect(existsSync(join(repoDir(other, 'test-org/tiny-mamba'), 'snapshots', REPOS['test-org/tiny-mamba'].commit, 'model.safetensors'))).toBe(false);
  });

  test('a pinned sha256 that differs from the Hub\'s LFS hash fails before the weights are downloaded', async () => {
    const e = await loadModel('test-org/tiny-mamba', { backend: 'js', cacheDir: tempDir(), sha256: { 'model.safetensors': 'ab'.repeat(32) } }).catch((x) => x);
    expect(e).toBeInstanceOf(FetchError);
    expect(e.message).toMatch(/the Hub says the file's sha256 is/);
    expect(cdnHits).toHaveLength(0);
  });

  test('hostile ids are refused before any request; a hostile server cannot name a path', async () => {
    const hostile = ['../x', 'a/b/../../c', 'org/name@../../x', 'org/name@refs/../../x', 'org/name@/abs', 'org/na--me', '.git/x', 'org/name@', `org/${'n'.repeat(97)}`];
    for (const id of hostile) expect(() => parseHubId(id), id).toThrow(InvalidOptionError);
    const cache = tempDir();
    const tried = blockNetwork();
    for (const id of hostile) {
      const e = await loadModel(id, { backend: 'js', cacheDir: cache }).catch((x) => x);
      // A Hub-shaped string is refused as an id; 'a/b/../../c' has more than one '/', so it is a (missing) path.
      expect(e, id).toBeInstanceOf(id === 'a/b/../../c' ? ModelNotFoundError : InvalidOptionError);
    }
    expect(tried()).toBe(0);
    expect(readdirSync(cache)).toEqual([]);
    globalThis.fetch = realFetch;

    for (const repo of ['evil-org/etag', 'evil-org/commit']) {
      const e = await loadModel(repo, { backend: 'js', cacheDir: cache }).catch((x) => x);
      expect(e, repo).toBeInstanceOf(FetchError);
      expect(e.message).toMatch(/is not a Hub file hash|invalid X-Repo-Commit/);
    }
    expect(existsSync(join(cache, 'escaped'))).toBe(false);
    expect(existsSync(join(tmpdir(), 'escaped'))).toBe(false);
    expect(tree(cache)).toEqual([]);
  });

  test('what is a Hub id: org/name[@rev] that is not a local path; ./org/name is a path', async () => {
    expect(await hubIdOf('test-org/tiny-mamba@refs/pr/1')).toEqual({ repo: 'test-org/tiny-mamba', org: 'test-org', name: 'tiny-mamba', revision: 'refs/pr/1' });
    expect(await hubIdOf('test/fixtures')).toBeUndefined(); // exists here (the working directory is the repository)
    for (const s of ['./test-org/tiny', '/abs/x', '~/x', 'a/b/c', 'C:\\x\\y', 'https://h/x', 'models/mambabyte-fortunes', 'org/name/']) {
      expect(await hubIdOf(s), s).toBeUndefined();
    }
    // The ref `refs/pr/1` is a path inside refs/.
    const cache = tempDir();
    await logitsOf('test-org/tiny-mamba@refs/pr/1', { cacheDir: cache });
    expect(readFileSync(join(repoDir(cache, 'test-org/tiny-mamba'), 'refs/refs/pr/1'), 'utf8')).toBe(REPOS['test-org/tiny-mamba'].commit);
    expect(hubHits[0].path).toBe('/test-org/tiny-mamba/resolve/refs/pr/1/config.json');
  });

  test('the CLI: --model org/name@rev with --cache-dir and HF_TOKEN', async () => {
    const cache = tempDir();
    const input = join(tempDir(), 'input.txt');
    writeFileSync(input, fixture.input);
    process.env.HF_TOKEN = 'hf_cli';
    let out = '';
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
    try {
      const { commit } = REPOS['test-org/tiny-mamba'];
      expect(await main(['eval', '--model', `test-org/tiny-mamba@${commit}`, '--input', input, '--backend', 'js', '--cache-dir', cache])).toBe(0);
    } finally {
      write.mockRestore();
    }
    const m = await loadModel(fixture.dir, { backend: 'js' });
    const bpb = await m.bitsPerByte(fixture.input);
    m.dispose();
    expect(out).toMatch(new RegExp(`bits_per_byte ${bpb.toFixed(6)}\\n$`));
    expect(hubHits.every((h) => h.auth === 'Bearer hf_cli')).toBe(true);
    expect(existsSync(join(repoDir(cache, 'test-org/tiny-mamba'), 'refs'))).toBe(false); // asked by commit: no ref to write
    expect(cdnHits).toHaveLength(1);

    // generate and logits from the now cached model: not one request.
    const tried = blockNetwork();
    const raw: Buffer[] = [];
    const write2 = vi.spyOn(process.stdout, 'write').mockImplementation((s) => (raw.push(Buffer.from(s as Uint8Array | string)), true));
    const logitsFile = join(tempDir(), 'logits.f32');
    try {
      const model = ['--model', `test-org/tiny-mamba@${REPOS['test-org/tiny-mamba'].commit}`, '--backend', 'js', '--cache-dir', cache];
      expect(await main(['generate', ...model, '--prompt', 'Hello', '--max-tokens', '8', '--temperature', '0', '--raw'])).toBe(0);
      expect(await main(['logits', ...model, '--input', input, '--out', logitsFile])).toBe(0);
    } finally {
      write2.mockRestore();
    }
    expect(tried()).toBe(0);
    const local = await loadModel(fixture.dir, { backend: 'js' });
    let greedy = new Uint8Array(0);
    for await (const c of local.generate('Hello', { maxTokens: 8, temperature: 0 })) greedy = Buffer.concat([greedy, c.bytes]);
    local.dispose();
    expect(greedy.length).toBe(8);
    expect(Buffer.concat(raw).equals(Buffer.from(greedy))).toBe(true);
    const f = readFileSync(logitsFile);
    expect(maxAbsDiff(new Float32Array(f.buffer, f.byteOffset, f.byteLength / 4), fixture.logits) / fixture.maxAbsLogit).toBeLessThanOrEqual(1e-4);
  });
});

