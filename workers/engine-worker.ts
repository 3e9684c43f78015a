/**
 * Worker entry: exposes an `EngineHost` over comlink. Runs as a module Web Worker (browsers, Deno)
 * or a `worker_threads` worker (Node), always from the compiled `dist/workers/engine-worker.js`.
 *
 * comlink is imported dynamically: browsers do not apply the page's import map inside workers, so
 * the main thread passes comlink's resolved URL as `?comlink=<url>` (Node and Deno resolve 'comlink').
 */
import type { Snapshot } from '../src/model.js';
import { EngineHost } from './engine-host.js';
import { installErrorHandler, ownedBuffers, toWireError, type EngineApi } from './engine-protocol.js';

type ComlinkModule = typeof import('comlink');

const isNode = typeof process !== 'undefined' && !!process.versions?.node && !('Deno' in globalThis);

async function main(): Promise<void> {
  const here = (globalThis as { location?: { href: string } }).location?.href;
  const specifier = (here && new URL(here).searchParams.get('comlink')) || 'comlink';
  const Comlink = (await import(specifier)) as ComlinkModule;
  installErrorHandler(Comlink as never);

  const host = new EngineHost();
  // Results carrying large arrays are transferred, not copied.
  const api: EngineApi = {
    load: async (source, options, onProgress) => {
      try {
        return await host.load(source, options, onProgress);
      } finally {
        // Closes the proxy's MessagePort on both sides (an open port keeps a Node process alive).
        (onProgress as { [Comlink.releaseProxy]?: () => void } | undefined)?.[Comlink.releaseProxy]?.();
      }
    },
    probe: () => host.probe(),
    logits: async (input, options, opId) => {
      const out = await host.logits(input, options, opId);
      return Comlink.transfer(out, ownedBuffers(out));
    },
    bitsPerByte: (input, opId) => host.bitsPerByte(input, opId),
    createSession: (id, snapshot) => host.createSession(id, snapshot),
    feed: (id, text) => host.feed(id, text),
    snapshot: async (id) => {
      const s: Snapshot = await host.snapshot(id);
      return Comlink.transfer(s, ownedBuffers(s.conv, s.ssm, s.logits, s.history));
    },
    restore: (id, snapshot) => host.restore(id, snapshot),
    fork: (id, newId) => host.fork(id, newId),
    disposeSession: (id) => host.disposeSession(id),
    startGenerate: (streamId, sessionId, prompt, options) => host.startGenerate(streamId, sessionId, prompt, options),
    pull: (streamId) => host.pull(streamId),
    closeStream: (streamId) => host.closeStream(streamId),
    abort: (id) => host.abort(id),
    holding: () => host.holding(),
  };

  if (isNode) {
    // @ts-ignore -- comlink ships no typings for this subpath under NodeNext resolution
    const { default: nodeEndpoint } = await import('comlink/dist/esm/node-adapter.mjs');
    Comlink.expose(api, nodeEndpoint((await parentPort())!));
  } else {
    Comlink.expose(api);
  }
}

/** Node's link to the main thread (null outside worker_threads). */
async function parentPort() {
  return (await import('node:worker_threads')).parentPort;
}

/**
 * Tells the main thread we are listening (or why we never will). Needed because a browser drops
 * messages that arrive before a listener exists, and ours is installed after an async import.
 */
async function post(message: { type: 'mamba-edge:ready' } | { type: 'mamba-edge:failed'; error: unknown }): Promise<void> {
  if (isNode) (await parentPort())?.postMessage(message);
  else (globalThis as unknown as { postMessage(m: unknown): void }).postMessage(message);
}

main().then(
  () => post({ type: 'mamba-edge:ready' }),
  (e: unknown) => post({ type: 'mamba-edge:failed', error: toWireError(e) }),
);
