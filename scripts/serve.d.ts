// Types for scripts/serve.js (plain JavaScript so that it runs without a build step).
import type { Server } from 'node:http';

export interface StartedServer {
  /** e.g. "http://127.0.0.1:41234/" */
  url: string;
  port: number;
  close(): Promise<void>;
  server: Server;
}

export function startServer(options?: { root?: string; port?: number; host?: string; log?: boolean }): Promise<StartedServer>;
