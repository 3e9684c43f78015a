/**
 * Reads one file of a local model directory, refusing what a model file cannot be: anything that is
 * not a regular file (a FIFO would block a read forever, /dev/zero never ends), a path that resolves
 * outside the directory (a symlink to /etc/passwd), or a file larger than the caller allows. The size
 * and, optionally, the first bytes are checked before the rest is read; reading goes in slices that
 * stop on the signal.
 */
import { MambaError, ModelFormatError } from './errors.js';

export interface LocalReadOptions {
  /** Refuse a file larger than this, from its size, before reading. */
  maxBytes: number;
  /** Error for a file over `maxBytes` (default: a `ModelFormatError` naming the limit). */
  tooLarge?: (size: number) => Error;
  signal?: AbortSignal;
  /** Called with the first `headBytes` bytes and the file size before the rest is read; throws to refuse. */
  checkHead?: (head: Uint8Array, size: number) => void;
  headBytes?: number;
}

/** Read slice: the signal is checked between slices. */
const SLICE = 16 << 20;

/**
 * The bytes of `dir/name`, or undefined when it does not exist. `name` is a plain file name (the
 * loader restricts shard names); `dir` may itself be a symlink.
 */
export async function readLocalFile(dir: string, name: string, o: LocalReadOptions): Promise<Uint8Array | undefined> {
  const path = `${dir.replace(/\/+$/, '')}/${name}`;
  o.signal?.throwIfAborted();
  const deno = (globalThis as { Deno?: DenoFs }).Deno;
  try {
    return deno ? await readDeno(deno, dir, path, name, o) : await readNode(dir, path, name, o);
  } catch (e) {
    if (e instanceof MambaError || (e as Error)?.name === 'AbortError' || o.signal?.aborted) throw e;
    const code = (e as { code?: string }).code ?? (e as { name?: string }).name;
    if (code === 'ENOENT' || code === 'NotFound') return undefined;
    if (code === 'ENOTDIR' || code === 'EISDIR' || code === 'ELOOP') throw new ModelFormatError(name, `${path} is not a readable model file (${code})`);
    throw new MambaError('IO', `cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
}

function tooLarge(name: string, size: number, o: LocalReadOptions): Error {
  return o.tooLarge?.(size) ?? new ModelFormatError(name, `file is ${size} bytes, more than the ${o.maxBytes} this model can need`);
}

/**
 * Where the real path of a model file may lie: the real model directory, or, for a Hugging Face hub
 * cache snapshot (`models--x--y/snapshots/<rev>/`, whose files are symlinks to `../../blobs/<hash>`),
 * that repository's blobs directory.
 */
function allowedRoots(realDir: string, sep: string): string[] {
  const roots = [realDir];
  const parts = realDir.split(sep);
  if (parts.length >= 3 && parts[parts.length - 2] === 'snapshots') roots.push([...parts.slice(0, -2), 'blobs'].join(sep));
  return roots;
}

function inside(real: string, roots: string[], sep: string): boolean {
  return roots.some((r) => real.startsWith(r.endsWith(sep) ? r : r + sep));
}

function kindOf(st: { isDirectory(): boolean; isFIFO?(): boolean; isSymbolicLink(): boolean }): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO?.()) return 'a FIFO';
  return 'a device, socket or other special file';
}

async function readNode(dir: string, path: string, name: string, o: LocalReadOptions): Promise<Uint8Array> {
  const fs = await import('node:fs/promises');
  const { constants } = await import('node:fs');
  const { sep } = await import('node:path');
  // realpath first: ENOENT (no such file, or a dangling symlink) means "not there".
  const real = await fs.realpath(path);
  const realDir = await fs.realpath(dir);
  if (!inside(real, allowedRoots(realDir, sep), sep)) {
    throw new ModelFormatError(name, `${path} resolves outside the model directory (a symlink?): refused`);
  }
  const st = await fs.stat(real);
  // Never open a FIFO or device: opening a FIFO blocks until a writer comes, in a thread no signal reaches.
  if (!st.isFile()) throw new ModelFormatError(name, `${path} is ${kindOf(st)}, not a regular file: refused`);
  if (st.size > o.maxBytes) throw tooLarge(name, st.size, o);
  // O_NONBLOCK: should the path be swapped for a FIFO after the check, open still returns at once.
  const fh = await fs.open(real, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | (constants.O_NOFOLLOW ?? 0));
  try {
    const fst = await fh.stat();
    if (!fst.isFile() || fst.ino !== st.ino || fst.dev !== st.dev) throw new ModelFormatError(name, `${path} changed while being opened: refused`);
    const size = fst.size;
    if (size > o.maxBytes) throw tooLarge(name, size, o);
    const out = new Uint8Array(size);
    let got = 0;
    const readTo = async (end: number) => {
      while (got < end) {
        o.signal?.throwIfAborted();
        const { bytesRead } = await fh.read(out, got, Math.min(SLICE, end - got), got);
        if (bytesRead === 0) break; // the file shrank: hand back what is there
        got += bytesRead;
      }
    };
    if (o.checkHead) {
      await readTo(Math.min(o.headBytes ?? 8, size));
      o.checkHead(out.subarray(0, got), size);
    }
    await readTo(size);
    return out.subarray(0, got);
  } finally {
    await fh.close();
  }
}

interface DenoFs {
  realPath(p: string): Promise<string>;
  stat(p: string): Promise<{ isFile: boolean; isDirectory: boolean; isSymlink: boolean; size: number }>;
  readFile(p: string, o?: { signal?: AbortSignal }): Promise<Uint8Array>;
  build?: { os?: string };
}

async function readDeno(deno: DenoFs, dir: string, path: string, name: string, o: LocalReadOptions): Promise<Uint8Array> {
  const sep = deno.build?.os === 'windows' ? '\\' : '/';
  const real = await deno.realPath(path);
  const realDir = await deno.realPath(dir);
  if (!inside(real, allowedRoots(realDir, sep), sep)) {
    throw new ModelFormatError(name, `${path} resolves outside the model directory (a symlink?): refused`);
  }
  const st = await deno.stat(real);
  if (!st.isFile) throw new ModelFormatError(name, `${path} is ${st.isDirectory ? 'a directory' : 'a FIFO, device or other special file'}, not a regular file: refused`);
  if (st.size > o.maxBytes) throw tooLarge(name, st.size, o);
  const bytes = await deno.readFile(real, { signal: o.signal });
  if (bytes.byteLength > o.maxBytes) throw tooLarge(name, bytes.byteLength, o);
  o.checkHead?.(bytes.subarray(0, o.headBytes ?? 8), bytes.byteLength);
  return bytes;
}
