#!/usr/bin/env node
// A small static file server for the browser surfaces (bench page, browser and Electron examples).
// It sends the cross-origin isolation headers (COOP same-origin + COEP require-corp) that browsers need
// before they allow SharedArrayBuffer, i.e. the multi-threaded wasm backend. No dependencies: node:http only.
//
//   node scripts/serve.js [--root DIR] [--port N] [--host H] [--path /bench/page/]
//
// Used by `npm run bench:page` and by the tests (`startServer()` with port 0 = an ephemeral port).
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const REPO_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.wgsl': 'text/plain; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.ts': 'text/plain; charset=utf-8',
};

/** Headers on every response: cross-origin isolation, and no caching (benchmarks must see fresh builds). */
const COMMON = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Cache-Control': 'no-store',
};

/**
 * Starts the server. Resolves to `{ url, port, close() }` once listening.
 * @param {{ root?: string, port?: number, host?: string, log?: boolean }} [o]
 */
export function startServer({ root = REPO_ROOT, port = 8080, host = '127.0.0.1', log = false } = {}) {
  const base = resolve(root);
  const server = createServer(async (req, res) => {
    const send = (status, body, headers = {}) => {
      res.writeHead(status, { ...COMMON, 'Content-Type': 'text/plain; charset=utf-8', ...headers });
      res.end(body);
    };
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n', { Allow: 'GET, HEAD' });
      const pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      // normalize() collapses `..`; anything that still leaves the root is refused.
      let file = normalize(join(base, pathname));
      if (file !== base && !file.startsWith(base + sep)) return send(403, 'forbidden\n');
      let info = await stat(file).catch(() => null);
      if (info?.isDirectory()) {
        if (!pathname.endsWith('/')) return send(301, '', { Location: `${pathname}/` });
        file = join(file, 'index.html');
        info = await stat(file).catch(() => null);
      }
      if (!info?.isFile()) return send(404, `not found: ${pathname}\n`);
      const type = TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream';
      // A single byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`): lets the model loader resume a download.
      const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
      if (range && (range[1] || range[2])) {
        const start = range[1] ? Number(range[1]) : Math.max(0, info.size - Number(range[2]));
        const end = range[1] && range[2] ? Math.min(Number(range[2]), info.size - 1) : info.size - 1;
        if (start > end || start >= info.size) return send(416, 'range not satisfiable\n', { 'Content-Range': `bytes */${info.size}` });
        res.writeHead(206, { ...COMMON, 'Content-Type': type, 'Accept-Ranges': 'bytes', 'Content-Range': `bytes ${start}-${end}/${info.size}`, 'Content-Length': end - start + 1 });
        if (req.method === 'HEAD') return res.end();
        return createReadStream(file, { start, end }).pipe(res);
      }
      res.writeHead(200, {
        ...COMMON,
        'Content-Type': type,
        'Accept-Ranges': 'bytes',
        // Content-Length lets the model loader report download progress.
        'Content-Length': info.size,
      });
      if (req.method === 'HEAD') return res.end();
      createReadStream(file).pipe(res);
    } catch (e) {
      send(500, `${e?.message ?? e}\n`);
    } finally {
      if (log) console.error(`${req.method} ${req.url} ${res.statusCode}`);
    }
  });
  return new Promise((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const actual = server.address().port;
      resolvePromise({
        port: actual,
        url: `http://${host.includes(':') ? `[${host}]` : host}:${actual}/`,
        close: () => new Promise((r) => server.close(() => r())),
        server,
      });
    });
  });
}

const isMain = process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const { values } = parseArgs({
    options: {
      root: { type: 'string', default: REPO_ROOT },
      port: { type: 'string', default: process.env.PORT ?? '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      path: { type: 'string', default: '/' },
      log: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log('Usage: node scripts/serve.js [--root DIR] [--port N] [--host H] [--path /page/] [--log]');
    process.exit(0);
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`--port must be an integer in [0, 65535], got ${values.port}`);
    process.exit(2);
  }
  const { url } = await startServer({ root: values.root, port, host: values.host, log: values.log });
  console.log(`serving ${values.root} with COOP/COEP (cross-origin isolated)`);
  console.log(new URL(values.path.replace(/^\/?/, ''), url).href);
}
