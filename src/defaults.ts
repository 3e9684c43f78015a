import { assetUrl } from './assets.js';

/** The model shipped with the package (trained by `training/`, see its model card). */
export const DEFAULT_MODEL_PATH = 'models/mambabyte-fortunes/';

/** Where the default model lives: a file path in Node/Deno, a URL beside the bundle in browsers. */
export function defaultModelSource(): string {
  const url = assetUrl(DEFAULT_MODEL_PATH);
  return url.protocol === 'file:' ? decodeURIComponent(url.pathname) : url.href;
}
