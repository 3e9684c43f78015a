// Shared by the surfaces tests: headless Chromium (playwright-core + Debian's chromium) and the COOP/COEP server.
import { afterAll, beforeAll } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { startServer, type StartedServer } from '../scripts/serve.js';
import { NEEDS, requires } from './helpers/env.js';

export const CHROMIUM = '/usr/bin/chromium';

/** Why the browser tests of `file` (or `part` of it) cannot run here, or null when they can; says it in one line. */
export function browserSkipReason(file: string, part?: string): string | null {
  return requires(file, NEEDS.chromium, NEEDS.build, ...(part ? [{ part }] : []));
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
