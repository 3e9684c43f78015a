/**
 * Models on the Hugging Face Hub: `loadModel('org/name@revision')` reads
 * `${endpoint}/{org}/{name}/resolve/{revision}/{file}`, and in Node and Deno keeps the files in the
 * standard Hugging Face cache (the layout of Python's `huggingface_hub`, `file_download.py`):
 *
 *   <cache>/models--{org}--{name}/refs/{revision}            the commit the revision resolved to
 *   <cache>/models--{org}--{name}/blobs/{etag}               file contents, named by ETag
 *   <cache>/models--{org}--{name}/snapshots/{commit}/{file}  -> ../../blobs/{etag} (a copy where symlinks fail)
 *   <cache>/models--{org}--{name}/.no_exist/{commit}/{file}  empty: the commit has no such (optional) file
 *
 * so a model that Python downloaded loads here with no network, and the other way round.
 *
 * Offline first: a file is read from `snapshots/` whenever the revision resolves to a commit without
 * the network (a 40-hex revision, or `refs/{revision}`), and a remembered absence is trusted; only a
 * file that is not cached is asked for. So a cached model makes no request at all, and a branch
 * (`main`) stays at the commit it first resolved to until its ref is deleted or a commit is asked for.
 * Once one file resolved the revision, every other file is fetched at that commit, so the files of a
 * model always come from one commit even when the branch moves meanwhile.
 *
 * Every id, revision, commit, ETag and file name is checked against a strict pattern before it is
 * joined into a path, and every path is checked to stay inside the cache directory: the server and
 * the caller's string are untrusted (see SECURITY.md, "The Hugging Face cache").
 *
 * Not `@huggingface/hub`: its `downloadFileToCacheDir` asks the Hub API (`paths-info`) before every
 * file, even a cached one, writes no `refs/` and no `.no_exist/`, and neither resumes nor locks;
 * that would break "a cached model loads with no network" and the download guarantees of fetch.ts.
 */
import { localPathExists, readLocalBytes } from './assets.js';
import { DirCache, sleep } from './cache.js';
import { DEFAULT_MODEL_PATH } from './defaults.js';
import { FetchError, InvalidOptionError, MambaError, ModelFormatError, ModelNotFoundError } from './errors.js';
import { fetchModelFile, fetchModelFileInto, redactUrl, sha256Hex, type FetchOptions } from './fetch.js';

/** Options for Hub ids (`org/name[@revision]` sources); ignored for other sources. */
export interface HubOptions {
  /**
   * The Hub to read from. Default: `$HF_ENDPOINT` (Node, Deno), else `https://huggingface.co`.
   * A mirror may have a path (`https://mirror.example/hf`).
   */
  hubEndpoint?: string;
  /**
   * Access token for private or gated models, sent as `Authorization: Bearer` to the endpoint's
   * origin only, never to the host a download is redirected to. Default (Node, Deno): `$HF_TOKEN`,
   * but only while `hubEndpoint` is not given either, so that a token from the environment never
   * goes to an endpoint chosen in code. `''` sends none.
   */
  hubToken?: string;
}

/** A parsed `org/name[@revision]`. */
export interface HubId {
  /** `org/name` */
  repo: string;
  org: string;
  name: string;
  /** `main` unless given: a branch, a tag or a 40-hex commit. */
  revision: string;
}

export const DEFAULT_HUB_ENDPOINT = 'https://huggingface.co';

const COMMIT = /^[0-9a-f]{40}$/;
/** Hub ETags: a git blob sha1 (small files) or the sha256 of an LFS file (`X-Linked-Etag`). */
const ETAG = /^[0-9a-f]{40}$|^[0-9a-f]{64}$/;
/** huggingface_hub's repo-id rule, per part: no `..`, no `--` (the cache folder joins parts with it). */
const REPO_PART = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$/;
/** A file of the model: one path segment, no leading dot. */
const FILE_NAME = /^[A-Za-z0-9_][\w.-]{0,254}$/;
/** One segment of a revision (`main`, `v1.0`, `refs/pr/1`): no leading dot, so never `.` or `..`. */
const REVISION_PART = /^[A-Za-z0-9_][\w.+-]*$/;
/** HEAD requests: same-origin redirects (renamed repos) followed at most this often. */
const MAX_HUB_REDIRECTS = 5;

const bad = (source: string, why: string) => new InvalidOptionError('source', `${JSON.stringify(source.slice(0, 200))} is not a Hugging Face Hub id (org/name[@revision]): ${why}`);

/**
 * Whether a string source is meant as a Hub id: `org/name` or `org/name@revision`, exactly one `/`
 * before any `@`, no scheme or `:` at all, no backslash, not starting with `./`, `/` or `~`, and
 * not ending with `/` (a directory). The loader also requires that no local path of that name
 * exists; `./org/name` always means the path. The bundled model's path in the package
 * (`models/mambabyte-fortunes`) stays a path, so its old README usage keeps its clear error.
 */
export function looksLikeHubId(s: string): boolean {
  if (/^(\.\/|\/|~)/.test(s) || /[:\\]/.test(s) || s.endsWith('/')) return false;
  const at = s.indexOf('@');
  const repo = at < 0 ? s : s.slice(0, at);
  if (repo.split('/').length !== 2) return false;
  return repo !== DEFAULT_MODEL_PATH.replace(/\/$/, '');
}

/** Parses `org/name[@revision]` strictly; anything else is an `InvalidOptionError` for `source`. */
export function parseHubId(source: string): HubId {
  if (typeof source !== 'string') throw new InvalidOptionError('source', 'a Hub id must be a string');
  const at = source.indexOf('@');
  const repo = at < 0 ? source : source.slice(0, at);
  const revision = at < 0 ? 'main' : source.slice(at + 1);
  const parts = repo.split('/');
  if (parts.length !== 2) throw bad(source, 'it needs exactly one "/" between organisation and name');
  for (const [what, p] of [['organisation', parts[0]], ['name', parts[1]]] as const) {
    if (!REPO_PART.test(p) || p.includes('..') || p.includes('--')) {
      throw bad(source, `the ${what} ${JSON.stringify(p.slice(0, 100))} must be 1 to 96 of A-Z a-z 0-9 . _ -, start and end with a letter or digit, and contain no ".." or "--"`);
    }
  }
  checkRevision(source, revision);
  return { repo, org: parts[0], name: parts[1], revision };
}

function checkRevision(source: string, revision: string): void {
  const why =
    revision === ''
      ? 'the revision after "@" is empty'
      : revision.length > 255
        ? 'the revision is longer than 255 characters'
        : !revision.split('/').every((p) => REVISION_PART.test(p))
          ? `the revision ${JSON.stringify(revision.slice(0, 100))} must be "/"-separated parts of A-Z a-z 0-9 . _ + -, none empty and none starting with "."`
          : undefined;
  if (why) throw bad(source, why);
}

/**
 * The Hub id a source names, or undefined for any other source. A Hub-shaped string that names an
 * existing local path is that path; one that is not a valid id is an `InvalidOptionError`.
 */
export async function hubIdOf(source: unknown): Promise<HubId | undefined> {
  if (typeof source !== 'string' || !looksLikeHubId(source)) return undefined;
  if (await localPathExists(source)) return undefined;
  return parseHubId(source);
}

/** Checks the Hub options once, so a typo fails before any request. */
export function checkHubOptions(o: HubOptions): void {
  if (o.hubEndpoint !== undefined) hubEndpoint(o.hubEndpoint, 'hubEndpoint');
  if (o.hubToken !== undefined && (typeof o.hubToken !== 'string' || !/^[\x21-\x7e]*$/.test(o.hubToken))) {
    throw new InvalidOptionError('hubToken', 'must be a string of printable ASCII without spaces');
  }
}

/** The endpoint as a base without a trailing `/`; a bad one is an `InvalidOptionError` naming where it came from. */
function hubEndpoint(value: string, from: string): string {
  let u: URL | undefined;
  try {
    u = new URL(value);
  } catch {
    // reported below
  }
  if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:') || u.username || u.password || u.search || u.hash) {
    throw new InvalidOptionError(from, `must be an http(s) URL without credentials, query or fragment, got ${JSON.stringify(redactUrl(String(value)).slice(0, 200))}`);
  }
  return u.href.replace(/\/+$/, '');
}

/** An environment variable in Node or Deno; undefined in browsers, when unset or empty, or not permitted (Deno). */
function env(name: string): string | undefined {
  try {
    const v = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];
    return typeof v === 'string' && v !== '' ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Node, or Deno with its Node compatibility: a file system, `process`. Browsers use the Cache API instead. */
function hasFileSystem(): boolean {
  return Boolean((globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node);
}

/** The Hugging Face hub cache directory: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
export async function hubCacheDir(): Promise<string> {
  const { join } = await import('node:path');
  const { homedir } = await import('node:os');
  const home = (p: string) => (p === '~' || p.startsWith('~/') ? join(homedir(), p.slice(1)) : p);
  const hub = env('HF_HUB_CACHE');
  if (hub) return home(hub);
  const hfHome = env('HF_HOME') ?? join(env('XDG_CACHE_HOME') ?? join(homedir(), '.cache'), 'huggingface');
  return join(home(hfHome), 'hub');
}

/** The loader's `Reader`: `bound.maxBytes` caps what a download may deliver. */
type Reader = (name: string, required: boolean, bound: { maxBytes: number }) => Promise<Uint8Array | undefined>;

/** What a HEAD of `resolve/{rev}/{file}` said. */
type Head =
  | { commit: string; etag: string; lfs: boolean }
  | { absent: true; commit?: string }
  /** The repository or revision does not exist (or is private): `X-Error-Code` said so. */
  | { missing: string };

/**
 * A reader of the model files of `id` (the loader's `Reader`). Nothing is requested or written
 * until the first file is read.
 */
export function hubReader(id: HubId, opts: FetchOptions & HubOptions): Reader {
  checkHubOptions(opts);
  const endpoint = opts.hubEndpoint !== undefined ? hubEndpoint(opts.hubEndpoint, 'hubEndpoint') : hubEndpoint(env('HF_ENDPOINT') ?? DEFAULT_HUB_ENDPOINT, 'HF_ENDPOINT');
  const token = opts.hubToken ?? (opts.hubEndpoint === undefined ? env('HF_TOKEN') : undefined);
  const auth: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const where = `${id.repo}@${id.revision} on ${endpoint}`;
  const fileUrl = (rev: string, name: string) =>
    `${endpoint}/${id.org}/${id.name}/resolve/${encodeURIComponent(rev)}/${encodeURIComponent(name)}`;
  // The caller's headers (fetchInit) plus the token; fetch.ts sends them to the endpoint's origin only.
  const withAuth = (o: FetchOptions): FetchOptions => {
    const headers = new Headers(o.fetchInit?.headers);
    for (const [k, v] of Object.entries(auth)) if (!headers.has(k)) headers.set(k, v);
    return { ...o, fetchInit: { ...o.fetchInit, headers } };
  };
  const notFound = (what: string) =>
    new ModelNotFoundError(
      id.repo,
      `${what}: repository or revision not found on the Hub (${where}), or it has no config.json; check the organisation, ` +
        `name and revision${token ? '' : ', or for a private or gated model set HF_TOKEN'} (no local directory of that name exists either)`,
    );

  if (!hasFileSystem() || opts.cache === false) {
    // Browsers: the Cache API keyed by URL (on unless cache: false); Node with cache: false: memory only.
    const fetchOpts = withAuth({ ...opts, cacheDir: undefined, cache: hasFileSystem() ? false : opts.cache !== false });
    return async (name, required, { maxBytes }) => {
      checkFileName(name);
      try {
        return await fetchModelFile(fileUrl(id.revision, name), name, { ...fetchOpts, maxBytes }, !required);
      } catch (e) {
        if (required && name === 'config.json' && e instanceof FetchError && (e.status === 404 || e.status === 401)) throw notFound(`HTTP ${e.status} for config.json`);
        throw e;
      }
    };
  }

  let repo: HubRepoCache | undefined;
  let commit = COMMIT.test(id.revision) ? id.revision : undefined;
  return async (name, required, { maxBytes }) => {
    checkFileName(name);
    const cacheRoot = opts.cacheDir ?? (await hubCacheDir());
    repo ??= await HubRepoCache.open(cacheRoot, id);
    commit ??= await repo.readRef(id.revision);
    if (commit) {
      const cached = await repo.readSnapshot(commit, name);
      if (cached) {
        await checkCachedHash(name, cached.bytes, opts.sha256?.[name], cached.path);
        opts.onProgress?.({ file: name, loaded: cached.bytes.byteLength, total: cached.bytes.byteLength });
        return cached.bytes;
      }
      if (!required && (await repo.knownAbsent(commit, name))) return undefined;
    }

    const head = await headFile(fileUrl(commit ?? id.revision, name), name, auth, opts, !commit);
    if ('missing' in head) throw notFound(head.missing);
    if ('absent' in head) {
      const at = head.commit ?? commit;
      if (required) {
        if (name === 'config.json') throw notFound('HTTP 404 for config.json');
        throw new FetchError(fileUrl(at ?? id.revision, name), `HTTP 404; ${name} is required`, 404);
      }
      if (at) await repo.markAbsent(at, name);
      return undefined;
    }
    if (!commit) {
      commit = head.commit;
      if (id.revision !== commit) await repo.writeRef(id.revision, commit);
    } else if (head.commit !== commit) {
      throw new FetchError(fileUrl(commit, name), `the server answered for commit ${head.commit}, not the requested ${commit}`);
    }

    const url = fileUrl(commit, name);
    // An LFS file's ETag is its sha256: check the download against it, and a pinned digest against it before downloading.
    const pinned = opts.sha256?.[name]?.toLowerCase();
    const lfsSha = head.lfs && head.etag.length === 64 ? head.etag : undefined;
    if (pinned && lfsSha && pinned !== lfsSha) {
      throw new FetchError(url, `sha256 mismatch for ${name}: expected ${pinned}, the Hub says the file's sha256 is ${lfsSha} (wrong digest, or the file changed at this revision)`);
    }
    const expected = pinned ?? lfsSha;
    const bytes = await fetchModelFileInto(await repo.blobs(), head.etag, url, name, withAuth({ ...opts, maxBytes, sha256: expected ? { [name]: expected } : undefined }));
    await repo.link(commit, name, head.etag);
    return bytes;
  };
}

function checkFileName(name: string): void {
  // The loader's names (config.json, shard names it validated); this module joins them into paths itself.
  if (!FILE_NAME.test(name)) throw new ModelFormatError(name, 'not a file name this loader reads from the Hub');
}

async function checkCachedHash(name: string, bytes: Uint8Array, expected: string | undefined, path: string): Promise<void> {
  if (!expected) return;
  const actual = await sha256Hex(bytes);
  if (actual !== expected.toLowerCase()) {
    throw new ModelFormatError(name, `sha256 mismatch: expected ${expected.toLowerCase()}, got ${actual} (the cached copy ${path}; delete it to download the file again)`);
  }
}

/**
 * HEAD `url` without following a redirect to another origin (the Hub answers 302 to its CDN for
 * LFS files, and that answer carries the metadata): the commit, the ETag, whether it is LFS, or that
 * the file is absent. Network failures, 408, 429 and 5xx are retried like downloads are.
 */
async function headFile(url: string, name: string, auth: Record<string, string>, opts: FetchOptions, byRevision: boolean): Promise<Head> {
  const retries = opts.retries ?? 4;
  const stallMs = opts.stallTimeoutMs ?? 30_000;
  const origin = new URL(url).origin;
  for (let attempt = 0; ; attempt++) {
    let res: Response | undefined;
    let failure: string;
    let status: number | undefined;
    let current = url;
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort(opts.signal!.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => ctrl.abort(new Error('stalled')), stallMs);
    try {
      for (let hop = 0; ; hop++) {
        res = await fetch(current, {
          method: 'HEAD',
          headers: { ...auth, 'accept-encoding': 'identity' },
          redirect: 'manual',
          signal: ctrl.signal,
          credentials: 'omit',
        });
        const location = res.headers.get('location');
        // Follow a redirect within the endpoint's origin (a renamed repository) unless it is the file's own redirect.
        if (res.status >= 300 && res.status < 400 && location && !res.headers.get('x-linked-etag') && hop < MAX_HUB_REDIRECTS) {
          const next = new URL(location, current);
          if (next.origin === origin) {
            current = next.href;
            continue;
          }
        }
        break;
      }
      status = res.status;
      const code = res.headers.get('x-error-code') ?? '';
      const message = (res.headers.get('x-error-message') ?? '').replace(/[^\x20-\x7e]/g, '').slice(0, 200);
      const commitHeader = res.headers.get('x-repo-commit') ?? undefined;
      if ((status === 404 || status === 401 || status === 403) && /^(RepositoryNotFound|RevisionNotFound)$/.test(code)) {
        return { missing: `HTTP ${status} ${code}${message ? ` "${message}"` : ''}` };
      }
      if (status === 404 || status === 410) return { absent: true, commit: commitHeader && COMMIT.test(commitHeader) ? commitHeader : undefined };
      if (status === 200 || (status >= 300 && status < 400)) return metadata(url, name, res, byRevision);
      const retryable = status === 408 || status === 429 || status >= 500;
      const why = `HTTP ${status}${message ? ` (${message})` : ''}${status === 401 || status === 403 ? '; a private or gated model needs HF_TOKEN (or hubToken) with access to it' : ''}`;
      if (!retryable || attempt >= retries) throw new FetchError(url, why, status);
      failure = why;
    } catch (e) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      if (e instanceof MambaError) throw e;
      failure = `connection failed (${(e as Error).message}${(e as { cause?: { code?: string } }).cause?.code ? `: ${(e as { cause: { code: string } }).cause.code}` : ''})`;
      if (attempt >= retries) throw new FetchError(url, `${failure} (after ${attempt + 1} attempts)`, status);
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    }
    await sleep(Math.min((opts.retryDelayMs ?? 500) * 2 ** attempt, 30_000), opts.signal);
  }
}

/** The metadata of a found file; a server that is not a Hub (no commit, an unusable ETag) is an error. */
function metadata(url: string, name: string, res: Response, byRevision: boolean): Head {
  const commit = res.headers.get('x-repo-commit') ?? '';
  if (!COMMIT.test(commit)) {
    if (!byRevision && commit === '') {
      // Asked by commit: the URL says which one (some mirrors drop the header).
      const asked = decodeURIComponent(url.split('/resolve/')[1].split('/')[0]);
      if (COMMIT.test(asked)) return metadataWith(url, name, res, asked);
    }
    throw new FetchError(url, `the server sent ${commit ? `an invalid X-Repo-Commit ${JSON.stringify(commit.slice(0, 80))}` : 'no X-Repo-Commit header'} for ${name}: is ${new URL(url).origin} a Hugging Face Hub endpoint?`);
  }
  return metadataWith(url, name, res, commit);
}

function metadataWith(url: string, name: string, res: Response, commit: string): Head {
  const linked = res.headers.get('x-linked-etag');
  const raw = (linked ?? res.headers.get('etag') ?? '').replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
  if (!ETAG.test(raw)) {
    throw new FetchError(url, `the server sent ${raw ? `an ETag ${JSON.stringify(raw.slice(0, 80))} that is not a Hub file hash (40 or 64 hex digits)` : 'no ETag'} for ${name}`);
  }
  return { commit, etag: raw, lfs: linked !== null };
}

type Fs = typeof import('node:fs/promises');
type Path = typeof import('node:path');

/** One repository's folder in the Hugging Face cache; every path it builds is checked to stay inside `root`. */
class HubRepoCache {
  private store: DirCache | undefined;
  private constructor(
    private readonly root: string,
    private readonly dir: string,
    private readonly fs: Fs,
    private readonly path: Path,
  ) {}

  static async open(root: string, id: HubId): Promise<HubRepoCache> {
    const fs = await import('node:fs/promises');
    const path = await import('node:path');
    const abs = path.resolve(root);
    return new HubRepoCache(abs, path.join(abs, `models--${id.org}--${id.name}`), fs, path);
  }

  /** `<repo>/<parts>`, refusing anything that would leave the cache root (the parts were validated; this is the backstop). */
  private at(...parts: string[]): string {
    const p = this.path.resolve(this.dir, ...parts);
    if (!p.startsWith(this.dir + this.path.sep)) throw new MambaError('CACHE', `Hugging Face cache ${this.root}: refusing the path ${p} outside ${this.dir}`);
    return p;
  }

  private async io<T>(what: string, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      if (e instanceof MambaError) throw e;
      throw new MambaError('CACHE', `Hugging Face cache ${this.root}: cannot ${what} (${(e as Error).message})`, { cause: e });
    }
  }

  async blobs(): Promise<DirCache> {
    const dir = this.at('blobs');
    // Keys are ETags that matched ETAG: file names without separators or dots.
    this.store ??= await DirCache.open(dir, (etag) => {
      if (!ETAG.test(etag)) throw new MambaError('CACHE', `refusing blob name ${JSON.stringify(etag.slice(0, 80))}`);
      return etag;
    });
    return this.store;
  }

  /** The commit `refs/{revision}` holds, if any (a malformed ref is ignored: the network decides). */
  async readRef(revision: string): Promise<string | undefined> {
    const text = await this.fs.readFile(this.at('refs', ...revision.split('/')), 'utf8').catch(() => undefined);
    const commit = text?.trim();
    return commit && COMMIT.test(commit) ? commit : undefined;
  }

  async writeRef(revision: string, commit: string): Promise<void> {
    const p = this.at('refs', ...revision.split('/'));
    await this.io(`write ${p}`, () => this.publish(p, commit));
  }

  async readSnapshot(commit: string, name: string): Promise<{ bytes: Uint8Array; path: string } | undefined> {
    const p = this.at('snapshots', commit, name);
    try {
      return { bytes: await readLocalBytes(p), path: p };
    } catch (e) {
      const code = (e as { code?: string }).code;
      // A dangling link (its blob deleted by hand) counts as not cached: the file is fetched again.
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw new MambaError('CACHE', `Hugging Face cache ${this.root}: cannot read ${p} (${(e as Error).message})`, { cause: e });
    }
  }

  async knownAbsent(commit: string, name: string): Promise<boolean> {
    return localPathExists(this.at('.no_exist', commit, name));
  }

  async markAbsent(commit: string, name: string): Promise<void> {
    const p = this.at('.no_exist', commit, name);
    await this.io(`write ${p}`, () => this.publish(p, ''));
  }

  /** `snapshots/{commit}/{name}` -> `../../blobs/{etag}`, or a copy where symlinks are not allowed. */
  async link(commit: string, name: string, etag: string): Promise<void> {
    const blob = this.at('blobs', etag);
    const p = this.at('snapshots', commit, name);
    // A file that failed the format checks was returned to the loader (which reports it) but never published.
    if (!(await localPathExists(blob))) return;
    await this.io(`link ${p}`, async () => {
      await this.fs.mkdir(this.path.dirname(p), { recursive: true });
      const tmp = `${p}.${process.pid}-${Math.random().toString(36).slice(2, 10)}.tmp`;
      try {
        await this.fs.symlink(this.path.relative(this.path.dirname(p), blob), tmp);
      } catch {
        await this.fs.copyFile(blob, tmp);
      }
      try {
        await this.fs.rename(tmp, p);
      } catch (e) {
        await this.fs.rm(tmp, { force: true }).catch(() => {});
        throw e;
      }
    });
  }

  /** Writes a small file atomically (a file of this process's own name, renamed into place). */
  private async publish(p: string, text: string): Promise<void> {
    await this.fs.mkdir(this.path.dirname(p), { recursive: true });
    const tmp = `${p}.${process.pid}-${Math.random().toString(36).slice(2, 10)}.tmp`;
    try {
      await this.fs.writeFile(tmp, text);
      await this.fs.rename(tmp, p);
    } catch (e) {
      await this.fs.rm(tmp, { force: true }).catch(() => {});
      throw e;
    }
  }
}
