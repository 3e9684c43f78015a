/**
 * Where downloaded model files are kept between runs, keyed by (credential-free) URL.
 *
 * Two stores behind one interface: the Cache API (browsers, Deno) and a directory (Node). Both
 * publish an entry atomically, only after the caller verified it, and remember files the server
 * does not have (404 of an optional file) so a cached model loads with the network down.
 *
 * The directory store is safe under concurrent processes without trusting its lock for
 * correctness: every process downloads into a file of its own name and publishes it with one
 * atomic rename, so a reader sees no entry or a whole verified one. The per-entry lock only keeps
 * processes from downloading the same file at once (the others wait, then read the entry), and it
 * owns the resumable partial (`<entry>.part` + `.part.json`) that an interrupted run leaves behind.
 */
import { InvalidOptionError, MambaError } from './errors.js';

/** A cache lookup: the bytes, a remembered absence, or nothing known. */
export type CacheEntry = { bytes: Uint8Array } | { absent: true } | undefined;

/** What the bytes of a partial download belong to. */
export interface PartialMeta {
  url: string;
  /** Strong ETag or Last-Modified of the response the bytes came from (for If-Range). */
  validator?: string;
  /** Full file size, when the server said. */
  total?: number;
}

/** The right to download one entry; `release` always, however the download ended. */
export interface CacheWriter {
  /** A partial download left by an earlier run, now owned by this writer. */
  takePartial(): Promise<{ bytes: Uint8Array; meta: PartialMeta } | undefined>;
  /** Starts a new partial (drops any bytes held so far). */
  startPartial(meta: PartialMeta): Promise<void>;
  /** Appends to the partial started or taken. */
  appendPartial(chunk: Uint8Array): Promise<void>;
  discardPartial(): Promise<void>;
  /** Atomically makes `bytes` (verified by the caller) the entry, and drops the partial. */
  publish(bytes: Uint8Array): Promise<void>;
  /** Leaves an unfinished partial for the next run and lets other processes in. */
  release(): Promise<void>;
}

export interface ModelCache {
  get(key: string): Promise<CacheEntry>;
  /** Publishes `bytes` (already verified) as the entry for `key`. */
  put(key: string, bytes: Uint8Array): Promise<void>;
  /** Remembers that the server has no such file (a 404 of an optional file). */
  markAbsent(key: string): Promise<void>;
  /** Drops the entry (or the absence) for `key`. */
  evict(key: string): Promise<void>;
  /**
   * Waits until this caller may download `key`. Resolves with `undefined` instead when another
   * process published the entry while we waited (read it with `get`).
   */
  lock(key: string, signal?: AbortSignal): Promise<CacheWriter | undefined>;
  /** Where the entry for `key` lives, for messages. */
  where(key: string): string;
}

/** Cache API bucket name (browsers, Deno). */
const CACHE_NAME = 'mamba-edge';
/** Header that marks a Cache API response as a remembered absence. */
const ABSENT_HEADER = 'x-mamba-edge-absent';

/**
 * The store for these options: undefined when caching is off; a directory when `cacheDir` is
 * given or there is no Cache API (Node: `~/.cache/mamba-edge`).
 */
export async function openModelCache(o: { cache?: boolean; cacheDir?: string }): Promise<ModelCache | undefined> {
  if (!o.cache && o.cacheDir === undefined) return undefined;
  const g = globalThis as { caches?: CacheStorage; process?: { versions?: { node?: string } } };
  if (o.cacheDir === undefined && g.caches) return new ApiCache(await g.caches.open(CACHE_NAME));
  if (!g.process?.versions?.node) throw new InvalidOptionError('cache', 'no Cache API here and no file system: pass cache: false');
  const os = await import('node:os');
  const path = await import('node:path');
  return DirCache.open(o.cacheDir ?? path.join(os.homedir(), '.cache', 'mamba-edge'));
}

/** Browsers and Deno: whole files only; `put` is atomic per entry. Partials resume within a session. */
class ApiCache implements ModelCache {
  constructor(private readonly cache: Cache) {}
  async get(key: string): Promise<CacheEntry> {
    const res = await this.cache.match(key);
    if (!res) return undefined;
    if (res.headers.get(ABSENT_HEADER)) return { absent: true };
    return { bytes: new Uint8Array(await res.arrayBuffer()) };
  }
  async put(key: string, bytes: Uint8Array) {
    await this.cache.put(key, new Response(bytes as Uint8Array<ArrayBuffer>, { headers: { 'content-length': String(bytes.byteLength) } }));
  }
  async markAbsent(key: string) {
    await this.cache.put(key, new Response('', { headers: { [ABSENT_HEADER]: '1' } }));
  }
  async evict(key: string) {
    await this.cache.delete(key);
  }
  async lock(key: string): Promise<CacheWriter> {
    const noop = async () => {};
    return {
      takePartial: async () => undefined,
      startPartial: noop,
      appendPartial: noop,
      discardPartial: noop,
      publish: (bytes) => this.put(key, bytes),
      release: noop,
    };
  }
  where(key: string) {
    return `Cache API entry ${key} (cache "${CACHE_NAME}")`;
  }
}

type Fs = typeof import('node:fs/promises');

/** How long a lock may go without its holder's heartbeat before another process takes it over. */
const LOCK_STALE_MS = 10_000;
const LOCK_HEARTBEAT_MS = 2_000;
const LOCK_POLL_MS = 50;

/**
 * Node: `<dir>/<sha256(key)[0:32]>-<file name>`. Beside an entry, while it is being written or
 * after an interrupted run: `.lock` (holder's pid, host, token), `.part` + `.part.json` (an
 * unfinished download and what it belongs to), `.<pid>-<token>.part` (the holder's own copy while
 * it downloads) and `.absent` (the server has no such file).
 */
export class DirCache implements ModelCache {
  private constructor(
    readonly dir: string,
    private readonly fs: Fs,
    private readonly join: (...p: string[]) => string,
    private readonly hash: (s: string) => string,
    private readonly host: string,
    private readonly entryName?: (key: string) => string,
  ) {}

  /**
   * `entryName` names an entry's file instead of the URL hash: the Hub cache keys its blobs by the
   * ETag the caller validated (`blobs/<etag>`), so a key must already be a safe file name there.
   */
  static async open(dir: string, entryName?: (key: string) => string): Promise<DirCache> {
    const fs = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { createHash } = await import('node:crypto');
    const { hostname } = await import('node:os');
    return new DirCache(dir, fs, join, (s) => createHash('sha256').update(s).digest('hex').slice(0, 32), hostname(), entryName);
  }

  where(key: string): string {
    if (this.entryName) return this.join(this.dir, this.entryName(key));
    let name = '';
    try {
      name = decodeURIComponent(new URL(key).pathname.split('/').pop() ?? '');
    } catch {
      // not a URL or a bad escape: the hash alone names it
    }
    return this.join(this.dir, `${this.hash(key)}-${name.replace(/[^\w.-]/g, '_').slice(-80) || 'file'}`);
  }

  private async io<T>(what: string, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      if (e instanceof MambaError) throw e;
      throw new MambaError('CACHE', `model cache ${this.dir}: cannot ${what} (${(e as Error).message})`, { cause: e });
    }
  }

  async get(key: string): Promise<CacheEntry> {
    const p = this.where(key);
    return this.io(`read ${p}`, async () => {
      try {
        const buf = await this.fs.readFile(p);
        return { bytes: new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) };
      } catch (e) {
        if ((e as { code?: string }).code !== 'ENOENT') throw e;
      }
      return (await exists(this.fs, `${p}.absent`)) ? { absent: true } : undefined;
    });
  }

  async put(key: string, bytes: Uint8Array) {
    const w = await this.lock(key);
    if (!w) return; // another process published it meanwhile
    try {
      await w.publish(bytes);
    } finally {
      await w.release();
    }
  }

  async markAbsent(key: string) {
    const p = this.where(key);
    await this.io(`write ${p}.absent`, async () => {
      await this.fs.mkdir(this.dir, { recursive: true });
      await this.publishFile(`${p}.absent`, new Uint8Array(0));
    });
  }

  async evict(key: string) {
    const p = this.where(key);
    await this.io(`remove ${p}`, async () => {
      await this.fs.rm(p, { force: true });
      await this.fs.rm(`${p}.absent`, { force: true });
    });
  }

  /** Writes a file of this process's own name, then renames it into place (atomic on one file system). */
  private async publishFile(path: string, bytes: Uint8Array, from?: string) {
    const tmp = from ?? `${path}.${process.pid}-${token()}.tmp`;
    try {
      if (!from) await this.fs.writeFile(tmp, bytes);
      await this.fs.rename(tmp, path);
    } catch (e) {
      await this.fs.rm(tmp, { force: true }).catch(() => {});
      throw e;
    }
  }

  async lock(key: string, signal?: AbortSignal): Promise<CacheWriter | undefined> {
    const p = this.where(key);
    const lockPath = `${p}.lock`;
    const mine = JSON.stringify({ pid: process.pid, host: this.host, token: token() });
    await this.io(`create ${this.dir}`, () => this.fs.mkdir(this.dir, { recursive: true }));
    for (;;) {
      signal?.throwIfAborted();
      try {
        await this.fs.writeFile(lockPath, mine, { flag: 'wx' });
        break;
      } catch (e) {
        if ((e as { code?: string }).code !== 'EEXIST') throw this.wrap(`lock ${lockPath}`, e);
      }
      if (await exists(this.fs, p)) return undefined; // the holder finished while we looked
      if (await this.isStale(lockPath)) {
        // Move it aside under a name of our own, so that two processes that both saw it stale do
        // not both delete the lock one of them has just taken (a lost race only costs a download).
        const aside = `${lockPath}.${process.pid}-${token()}.stale`;
        await this.fs.rename(lockPath, aside).then(() => this.fs.rm(aside, { force: true }), () => {});
        continue;
      }
      await sleep(LOCK_POLL_MS, signal);
    }
    return new DirWriter(this, p, lockPath, mine, this.fs);
  }

  /** A lock is stale when its holder on this host is gone, or its heartbeat stopped. */
  private async isStale(lockPath: string): Promise<boolean> {
    const st = await this.fs.stat(lockPath).catch(() => undefined);
    if (!st) return false; // released meanwhile: try again at once
    if (Date.now() - st.mtimeMs > LOCK_STALE_MS) return true;
    // Unreadable: created but not yet filled in by its holder; the heartbeat rule above covers a crash there.
    const holder = await this.fs
      .readFile(lockPath, 'utf8')
      .then((t) => JSON.parse(t) as { pid?: unknown; host?: unknown })
      .catch(() => ({}) as { pid?: unknown; host?: unknown });
    return holder.host === this.host && typeof holder.pid === 'number' && !isAlive(holder.pid);
  }

  wrap(what: string, e: unknown): MambaError {
    return new MambaError('CACHE', `model cache ${this.dir}: cannot ${what} (${(e as Error).message})`, { cause: e });
  }

  /** @internal */
  async publishOwned(path: string, bytes: Uint8Array, partial: string | undefined) {
    await this.io(`write ${path}`, async () => {
      // The partial holds exactly these bytes when the download streamed into it; else write them.
      const size = partial ? (await this.fs.stat(partial).catch(() => undefined))?.size : undefined;
      await this.publishFile(path, bytes, size === bytes.byteLength ? partial : undefined);
      await this.fs.rm(`${path}.absent`, { force: true });
    });
  }
}

/** One process's hold on an entry: its own partial file (`<entry>.<pid>-<token>.part`), the lock heartbeat. */
class DirWriter implements CacheWriter {
  private readonly own: string;
  private handle: import('node:fs/promises').FileHandle | undefined;
  private meta: PartialMeta | undefined;
  private readonly beat: ReturnType<typeof setInterval>;
  private published = false;

  constructor(
    private readonly cache: DirCache,
    private readonly path: string,
    private readonly lockPath: string,
    private readonly mine: string,
    private readonly fs: Fs,
  ) {
    this.own = `${path}.${process.pid}-${token()}.part`;
    this.beat = setInterval(() => {
      const now = new Date();
      this.fs.utimes(lockPath, now, now).catch(() => {});
    }, LOCK_HEARTBEAT_MS);
    (this.beat as { unref?: () => void }).unref?.();
  }

  private io<T>(what: string, f: () => Promise<T>): Promise<T> {
    return f().catch((e) => {
      throw this.cache.wrap(what, e);
    });
  }

  /**
   * Adopts the partial parked by an earlier holder (`<entry>.part`), else one left by a process
   * that died mid-download; removes the other leftovers of dead processes. Adoption is a rename,
   * so from then on only this process knows the file's name.
   */
  async takePartial() {
    const { fs, path, own } = this;
    const slash = Math.max(path.lastIndexOf('/'), path.lastIndexOf('\\'));
    const dir = path.slice(0, slash + 1);
    const base = path.slice(slash + 1);
    const names = await fs.readdir(dir).catch(() => [] as string[]);
    const dead: string[] = [];
    for (const n of names) {
      const m = n.startsWith(`${base}.`) ? /^(\d+)-[a-z0-9]+\.(part|tmp)$/.exec(n.slice(base.length + 1)) : null;
      if (m && `${dir}${n}` !== own && !isAlive(Number(m[1]))) dead.push(`${dir}${n}`);
    }
    let found: { bytes: Uint8Array; meta: PartialMeta } | undefined;
    for (const c of [`${path}.part`, ...dead.filter((d) => d.endsWith('.part'))]) {
      if (found) break;
      const meta = await fs
        .readFile(`${c}.json`, 'utf8')
        .then((t) => JSON.parse(t) as PartialMeta)
        .catch(() => undefined);
      const taken = await fs.rename(c, own).then(
        () => true,
        () => false,
      );
      await fs.rm(`${c}.json`, { force: true }).catch(() => {});
      if (!taken) continue;
      const buf = await fs.readFile(own).catch(() => undefined);
      if (meta && typeof meta.url === 'string' && buf && buf.byteLength > 0 && (meta.total === undefined || buf.byteLength <= meta.total)) {
        this.meta = meta;
        await fs.writeFile(`${own}.json`, JSON.stringify(meta)).catch(() => {});
        found = { bytes: new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), meta };
      } else {
        await fs.rm(own, { force: true }).catch(() => {});
      }
    }
    for (const d of dead) {
      await fs.rm(d, { force: true }).catch(() => {});
      await fs.rm(`${d}.json`, { force: true }).catch(() => {});
    }
    return found;
  }

  async startPartial(meta: PartialMeta) {
    await this.close();
    this.meta = meta;
    await this.io(`write ${this.own}`, async () => {
      // The meta first: a process killed mid-download leaves a partial that the next run can resume.
      await this.fs.writeFile(`${this.own}.json`, JSON.stringify(meta));
      this.handle = await this.fs.open(this.own, 'w');
    });
  }

  async appendPartial(chunk: Uint8Array) {
    if (!this.meta) return;
    this.handle ??= await this.io(`write ${this.own}`, () => this.fs.open(this.own, 'a'));
    await this.io(`write ${this.own}`, () => this.handle!.write(chunk));
  }

  async discardPartial() {
    await this.close();
    this.meta = undefined;
    await this.dropOwn();
  }

  async publish(bytes: Uint8Array) {
    await this.close();
    await this.cache.publishOwned(this.path, bytes, this.meta ? this.own : undefined);
    this.published = true;
    this.meta = undefined;
    await this.dropOwn();
  }

  async release() {
    clearInterval(this.beat);
    await this.close();
    const { fs, path, own } = this;
    if (!this.published && this.meta && (await exists(fs, own))) {
      // Park the unfinished download where the next holder of the lock looks first.
      await fs.rename(`${own}.json`, `${path}.part.json`).catch(() => {});
      await fs.rename(own, `${path}.part`).catch(() => {});
    }
    await this.dropOwn();
    // Only our own lock: if a process took it over as stale, it is theirs now.
    const held = await fs.readFile(this.lockPath, 'utf8').catch(() => undefined);
    if (held === this.mine) await fs.rm(this.lockPath, { force: true }).catch(() => {});
  }

  private async dropOwn() {
    await this.fs.rm(this.own, { force: true }).catch(() => {});
    await this.fs.rm(`${this.own}.json`, { force: true }).catch(() => {});
  }

  private async close() {
    const h = this.handle;
    this.handle = undefined;
    await h?.close().catch(() => {});
  }
}

/** Whether a process of this host is running (ours is). */
function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === 'EPERM';
  }
}

function token(): string {
  return Math.random().toString(36).slice(2, 10);
}

async function exists(fs: Fs, p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
