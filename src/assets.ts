/**
 * Locates files shipped beside the code (the .wasm build, WGSL shaders, the default model) both when
 * running from TypeScript sources (src/assets.ts) and from the compiled package (dist/src/assets.js).
 */
export const PACKAGE_ROOT = new URL(/\/dist\/src\/assets\.js$/.test(import.meta.url) ? '../../' : '../', import.meta.url);

export function assetUrl(relative: string): URL {
  return new URL(relative, PACKAGE_ROOT);
}

/** Reads a packaged file: the file system in Node and Deno, fetch in browsers. */
export async function readAsset(relative: string): Promise<Uint8Array> {
  const url = assetUrl(relative);
  if (url.protocol === 'file:') return readLocalBytes(url);
  const res = await fetch(url);
  if (!res.ok) throw new Error(`cannot load ${url.href}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** Reads a local file in Node or Deno (rejects with the runtime's own error, e.g. ENOENT / NotFound). */
export async function readLocalBytes(path: string | URL): Promise<Uint8Array> {
  const deno = (globalThis as { Deno?: { readFile(p: string | URL): Promise<Uint8Array> } }).Deno;
  if (deno) return deno.readFile(path);
  const fs = await import('node:fs/promises');
  const buf = await fs.readFile(path);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Whether a local path exists, in Node or Deno (false where there is no file system). */
export async function localPathExists(path: string): Promise<boolean> {
  const deno = (globalThis as { Deno?: { stat(p: string): Promise<unknown> } }).Deno;
  try {
    if (deno) await deno.stat(path);
    else await (await import('node:fs/promises')).stat(path);
    return true;
  } catch {
    return false;
  }
}

export async function readAssetText(relative: string): Promise<string> {
  return new TextDecoder().decode(await readAsset(relative));
}
