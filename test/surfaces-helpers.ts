// Shared by the surfaces tests: headless Chromium (playwright-core + Debian's chromium) and the COOP/COEP server.
import { existsSync } from 'node:fs';
import { afterAll, beforeAll } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { startServer, type StartedServer } from '../scripts/serve.js';

export const CHROMIUM = '/usr/bin/chromium';
export const BUNDLE = new URL('../dist/browser/mamba-edge.js', import.meta.url);

/** Why browser tests cannot run here, or null when they can. */
export function browserSkipReason(): string | null {
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM}`;
  if (!existsSync(BUNDLE)) return 'dist/browser/mamba-edge.js is missing: run `npm run build`';
  return null;
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

/** What the pages need from the repository (scripts/serve.js's default), on 127.0.0.1 with an ephemeral port. */
export function serveRepo(): Promise<StartedServer> {
  return startServer({ port: 0 });
}

/** Starts the repository server and Chromium before a describe block's tests, and closes both after. */
export function useBrowserAndServer(): { readonly server: StartedServer; readonly browser: Browser } {
  const env = {} as { server: StartedServer; browser: Browser };
  beforeAll(async () => {
    [env.server, env.browser] = await Promise.all([serveRepo(), launchChromium()]);
  });
  afterAll(async () => {
    await env.browser?.close();
    await env.server?.close();
  });
  return env;
}
