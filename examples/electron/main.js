// Electron main process. Two engines are offered to the window:
//  - this process: mamba-edge's Node build (engine.mjs, in a worker thread), reached through preload.js (IPC);
//  - the renderer itself: the browser bundle in a Web Worker (renderer/renderer.js), WebGPU or WASM threads.
// The window is served from an app:// scheme rather than file:// so that it can send COOP/COEP headers
// (cross-origin isolation → SharedArrayBuffer → multi-threaded WASM) and load ES module workers.
const { app, BrowserWindow, ipcMain, net, protocol } = require('electron');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

// The repository root (in your app: the folder holding your page and node_modules/mamba-edge).
const ROOT = path.resolve(__dirname, '..', '..');
const PAGE = 'app://bundle/examples/electron/renderer/index.html';

protocol.registerSchemesAsPrivileged([
  { scheme: 'app', privileges: { standard: true, secure: true, supportFetchAPI: true, stream: true, codeCache: true } },
]);

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json', '.wasm': 'application/wasm', '.css': 'text/css' };

async function serveApp(request) {
  const { pathname } = new URL(request.url);
  const file = path.normalize(path.join(ROOT, decodeURIComponent(pathname)));
  if (!file.startsWith(ROOT + path.sep)) return new Response('forbidden', { status: 403 });
  let res;
  try {
    res = await net.fetch(pathToFileURL(file).href);
  } catch {
    return new Response('not found', { status: 404 }); // e.g. the model the page looks for is not trained yet
  }
  const headers = new Headers(res.headers);
  headers.set('Content-Type', TYPES[path.extname(file)] ?? 'application/octet-stream');
  headers.set('Cross-Origin-Opener-Policy', 'same-origin');
  headers.set('Cross-Origin-Embedder-Policy', 'require-corp');
  headers.set('Cross-Origin-Resource-Policy', 'same-origin');
  return new Response(res.body, { status: res.status, headers });
}

// One engine for the app, loaded on first use (the window shows before the model is read).
let engine;
const getEngine = () => (engine ??= import('./engine.mjs').then((m) => m.createEngine()));
const running = new Map(); // request id → AbortController

ipcMain.handle('mamba:info', async () => (await getEngine()).info);
ipcMain.handle('mamba:generate', async (event, id, prompt, options) => {
  const e = await getEngine();
  const controller = new AbortController();
  running.set(id, controller);
  try {
    // Chunks go to the window as they come; the invoke resolves with the stats.
    return await e.generate(prompt, { ...options, signal: controller.signal }, (text) => event.sender.send('mamba:chunk', id, text));
  } finally {
    running.delete(id);
  }
});
ipcMain.on('mamba:abort', (_event, id) => running.get(id)?.abort());

app.whenReady().then(() => {
  protocol.handle('app', serveApp);
  const win = new BrowserWindow({
    width: 960,
    height: 760,
    webPreferences: { preload: path.join(__dirname, 'preload.js'), contextIsolation: true, sandbox: true, nodeIntegration: false },
  });
  win.loadURL(PAGE);
});

app.on('window-all-closed', async () => {
  if (engine) (await engine).dispose();
  app.quit();
});
