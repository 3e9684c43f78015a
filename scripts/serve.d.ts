// Types for scripts/serve.js (plain JavaScript so that it runs without a build step).
import type { Server } from 'node:http';

export interface StartedServer {
  /** e.g. "http://127.0.0.1:41234/" */
  url: string;
  port: number;
  close(): Promise<void>;
  server: Server;
}

/** What the pages load from this repository; all that `startServer()` serves without `root`. */
export const PAGE_PATHS: string[];

export interface ServerOptions {
  /** Directory to serve, all of it (dot files excepted); default: this repository, PAGE_PATHS only. */
  root?: string;
  /** Relative paths (directories or files) to serve under the root; null = everything. */
  paths?: string[] | null;
  /** 0 = an ephemeral port; default 8080. */
  port?: number;
  /** Address to bind; default 127.0.0.1. The Host header must name it, a loopback name, or one of `allowedHosts`. */
  host?: string;
  /** More host names (no port) to answer for, e.g. a LAN name; others get 421. */
  allowedHosts?: string[];
  /** One stderr line per request. */
  log?: boolean;
}

export function startServer(options?: ServerOptions): Promise<StartedServer>;
