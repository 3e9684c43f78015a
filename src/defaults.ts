import { assetUrl } from './assets.js';
import { InvalidOptionError } from './errors.js';
import type { ModelSource } from './loader.js';

/** The model shipped with the package (trained by `training/`, see its model card), relative to the package root. */
export const DEFAULT_MODEL_PATH = 'models/mambabyte-fortunes/';

/**
 * Where the bundled model lives: a directory path in Node and Deno (inside the installed package,
 * whatever the caller's working directory), a URL beside the package in browsers.
 */
export function defaultModelSource(): string {
  const url = assetUrl(DEFAULT_MODEL_PATH);
  if (url.protocol !== 'file:') return url.href;
  // file:///C:/x has the pathname /C:/x, which Windows would read as \C:\x.
  return decodeURIComponent(url.pathname).replace(/^\/([A-Za-z]:\/)/, '$1');
}

/**
 * The source `loadModel()` / `loadModelInWorker()` read: the caller's, else the bundled model where
 * the package's files are on a local file system (Node, Deno). A browser has no such default: app
 * bundlers move or drop files, so a guessed URL beside the bundle would fail later and less clearly.
 */
export function resolveModelSource(source: ModelSource | undefined): ModelSource {
  if (source !== undefined) return source;
  const url = assetUrl(DEFAULT_MODEL_PATH);
  if (url.protocol === 'file:') return defaultModelSource();
  throw new InvalidOptionError(
    'source',
    `the bundled model is only found by default in Node and Deno; here pass the URL where you serve a model directory ` +
      `(e.g. a copy of the package's ${DEFAULT_MODEL_PATH}, ${url.href} if the package itself is served as static files)`,
  );
}
