#!/usr/bin/env node
// A small static file server for the browser surfaces (bench page, browser and Electron examples).
// It sends the cross-origin isolation headers (COOP same-origin + COEP require-corp) that browsers need
// before they allow SharedArrayBuffer, i.e. the multi-threaded wasm backend. No dependencies: node:http only.
//
//   node scripts/serve.js [--root DIR] [--port N] [--host H] [--allow-host NAME]... [--path /bench/page/]
//
// Without --root it serves only what the pages load from this repository (PAGE_PATHS); with --root, all of DIR.
// Either way: no dot files (.git, .env), no path that leaves the root, no request whose Host header names
// another server (DNS rebinding: a page on evil.example resolved to 127.0.0.1), and no redirect off this origin.
// Used by `npm run bench:page` and by the tests (`startServer()` with port 0 = an ephemeral port).
import { createReadStream } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { networkInterfaces } from 'node:os';
import { extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const REPO_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));

/**
 * What the pages need from the repository: the browser bundle, the example pages (the Electron renderer also opens
 * in a browser), the bench page, the reports the
 * bench page imports, the bundled model and the test fixtures (models the tests and the bench page load).
 */
export const PAGE_PATHS = ['dist/browser', 'examples/browser', 'examples/electron/renderer', 'bench/page', 'bench/results', 'bench/schema.json', 'models', 'test/fixtures'];

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
  'X-Content-Type-Options': 'nosniff',
};

const LOOPBACK = ['127.0.0.1', 'localhost', '[::1]'];

/** `[v6]` for an IPv6 address, as it appears in a URL and a Host header. */
const bracket = (h) => (h.includes(':') && !h.startsWith('[') ? `[${h}]` : h).toLowerCase();

/** Host names (no port) a request may carry: loopback, the bound address, and every local address when bound to all. */
function hostNames(host, extra) {
  const names = new Set([...LOOPBACK, bracket(host), ...extra.map(bracket)]);
  if (host === '0.0.0.0' || host === '::') {
    for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) names.add(bracket(a.address.replace(/%.*$/, '')));
  }
  return names;
}

/**
 * The request path as a relative path under the root ('' for the root itself), or null when it must be refused:
 * each segment is decoded on its own, so an encoded `/` or `\\` (`%2F`, `%5C`) can never form a new segment,
 * and `.` and `..` are refused rather than resolved. Empty segments (`//`) are dropped, so a path built
 * from the result starts with exactly one slash: a redirect cannot become `//other.host/`.
 */
function relativePath(target) {
  const raw = target.split(/[?#]/, 1)[0];
  if (!raw.startsWith('/')) return null; // absolute-form (`GET http://host/`) or `*`
  const parts = [];
  for (const seg of raw.split('/')) {
    if (seg === '') continue;
    let part;
    try {
      part = decodeURIComponent(seg);
    } catch {
      return null;
    }
    if (part === '.' || part === '..' || /[\/\\\0]/.test(part)) return null;
    parts.push(part);
  }
  return parts.join('/');
}

/** Whether `rel` lies inside one of `paths` (or is one of them); everything when `paths` is null. */
function allowed(rel, paths) {
  return paths === null || paths.some((p) => rel === p || rel.startsWith(`${p}/`));
}

const INDEX = (paths) => `<!doctype html><meta charset="utf-8"><title>mamba-edge</title>
<ul>${paths.filter((p) => /^(bench\/page|examples\/browser)$/.test(p)).map((p) => `<li><a href="/${p}/">${p}/</a></li>`).join('')}</ul>\n`;

/**
 * Starts the server. Resolves to `{ url, port, close() }` once listening.
 * Without `root`, serves the repository's PAGE_PATHS only; with `root`, all of it (`paths` narrows either).
 * @param {{ root?: string, paths?: string[] | null, port?: number, host?: string, allowedHosts?: string[], log?: boolean }} [o]
 */
export function startServer({ root, paths, port = 8080, host = '127.0.0.1', allowedHosts = [], log = false } = {}) {
  const base = resolve(root ?? REPO_ROOT);
  const served = paths !== undefined ? paths : root === undefined ? PAGE_PATHS : null;
  let names;
  let actualPort;
  const realBase = realpath(base).catch(() => base);
  const server = createServer(async (req, res) => {
    const send = (status, body, headers = {}) => {
      res.writeHead(status, { ...COMMON, 'Content-Type': 'text/plain; charset=utf-8', ...headers });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    try {
      // Host check first: a rebinding page must learn nothing, not even which files exist.
      const m = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(req.headers.host ?? '');
      const hostOk = m && names.has(m[1].toLowerCase()) && (m[2] === undefined ? actualPort === 80 : Number(m[2]) === actualPort);
      if (!hostOk) return send(421, `misdirected request: this server answers for ${[...names][0]}:${actualPort} only\n`);
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n', { Allow: 'GET, HEAD' });
      const rel = relativePath(req.url ?? '/');
      if (rel === null) return send(403, 'forbidden\n');
      // Dot files (.git, .env) are never served, whatever the root.
      if (rel.split('/').some((p) => p.startsWith('.'))) return send(404, 'not found\n');
      if (rel === '' && served !== null) return send(200, INDEX(served), { 'Content-Type': 'text/html; charset=utf-8' });
      if (!allowed(rel, served)) return send(404, 'not found\n');
      let file = join(base, rel);
      let info = await stat(file).catch(() => null);
      if (info?.isDirectory()) {
        // Built from the checked segments: one leading slash, this origin.
        if (!req.url.split(/[?#]/, 1)[0].endsWith('/')) return send(301, '', { Location: `/${rel}${rel ? '/' : ''}` });
        file = join(file, 'index.html');
        info = await stat(file).catch(() => null);
      }
      if (!info?.isFile()) return send(404, 'not found\n');
      // A symbolic link inside the root must not lead outside it.
      const real = await realpath(file);
      const top = await realBase;
      if (real !== top && !real.startsWith(top + sep)) return send(404, 'not found\n');
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
      actualPort = server.address().port;
      names = hostNames(host, allowedHosts);
      resolvePromise({
        port: actualPort,
        url: `http://${bracket(host)}:${actualPort}/`,
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
      root: { type: 'string' },
      port: { type: 'string', default: process.env.PORT ?? '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      'allow-host': { type: 'string', multiple: true, default: [] },
      path: { type: 'string', default: '/' },
      log: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log('Usage: node scripts/serve.js [--root DIR] [--port N] [--host H] [--allow-host NAME]... [--path /page/] [--log]');
    console.log('Without --root: only what the pages need from this repository. --allow-host: another Host header to answer (e.g. a LAN name).');
    process.exit(0);
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`--port must be an integer in [0, 65535], got ${values.port}`);
    process.exit(2);
  }
  const { url } = await startServer({ root: values.root, port, host: values.host, allowedHosts: values['allow-host'], log: values.log });
  console.log(`serving ${values.root ?? `${PAGE_PATHS.join(', ')} from ${REPO_ROOT}`} with COOP/COEP (cross-origin isolated)`);
  console.log(new URL(values.path.replace(/^\/?/, ''), url).href);
}
