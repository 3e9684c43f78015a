// Browser bundles of mamba-edge, built from the tsc output in dist/ (run `npm run build:ts` first;
// `npm run build` does both). The Node (and Deno) build is the tsc output itself: dist/src/index.js.
//
//   dist/browser/mamba-edge.js          the library as one ESM file (+ mamba-edge.d.ts)
//   dist/browser/workers/<name>.js      each engine worker entry (workers/engine-*), one self-contained file each
//
// Why the bundles look the way they do:
// - The engine finds its packaged files through `assetUrl()`/`readAsset()` (src/assets.ts). In the bundles that
//   module is replaced: WGSL shaders and the .wasm kernels (small: ~14 KB) are inlined, and the wasm compute
//   thread (workers/wasm-thread.js, plain JS) is inlined and started from a blob: URL. So nothing the engine needs
//   is fetched by a computed path, and an app bundler (Vite, webpack) that copies our files around cannot break it.
// - Engine workers are too big to inline twice; they are emitted as files and referenced with the literal
//   `new URL('./workers/x.js', import.meta.url)` pattern, which Vite and webpack recognise and copy. Each worker
//   file is self-contained (its own inlined assets), so it works wherever the bundler puts it.
// - Node-only dynamic imports (`node:fs/promises`, `node:worker_threads`, the `webgpu` Dawn package) sit behind
//   runtime checks in the sources; here they are replaced by rejected promises so that app bundlers never try to
//   resolve them.
// - Other files (the default model in models/) resolve against the package root (dist/browser/../../), which is
//   right when the package is served as static files; bundled apps pass a model URL explicitly.
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = dirname(fileURLToPath(import.meta.url));
const DIST = join(ROOT, 'dist');
const OUT = join(DIST, 'browser');

const read = (p) => readFileSync(join(ROOT, p));
const list = (dir, ext) => (existsSync(join(ROOT, dir)) ? readdirSync(join(ROOT, dir)).filter((f) => f.endsWith(ext)).sort() : []);

/** Engine worker entries (workers/engine-worker*.ts, compiled by tsc to dist/workers/), by file name. */
function engineWorkers() {
  const found = new Map();
  for (const f of list('dist/workers', '.js')) if (/^engine-worker.*\.js$/.test(f)) found.set(f, join(DIST, 'workers', f));
  return found;
}

/** Packaged files inlined into every bundle, keyed by their path relative to the package root. */
function inlinedAssets() {
  const text = {};
  const binary = {};
  const scripts = {};
  for (const f of list('shaders', '.wgsl')) text[`shaders/${f}`] = read(`shaders/${f}`).toString('utf8');
  for (const f of list('build', '.wasm')) binary[`build/${f}`] = read(`build/${f}`).toString('base64');
  // Worker scripts without imports: started from blob: URLs, so they need no file of their own.
  for (const f of list('workers', '.js')) {
    const src = read(`workers/${f}`).toString('utf8');
    if (/^\s*import\s[^(]/m.test(src)) throw new Error(`workers/${f} has static imports: it cannot be inlined as a blob worker`);
    scripts[`workers/${f}`] = src;
  }
  return { text, binary, scripts };
}

/**
 * The replacement for dist/src/assets.js. It re-exports the original (so new exports there keep working)
 * and overrides the three functions that locate files. `outDir` is where this bundle's file lands, for the
 * relative URLs of emitted files.
 */
function assetsModule(originalId, outDir) {
  const { text, binary, scripts } = inlinedAssets();
  const files = [...engineWorkers().keys()].flatMap((f) => {
    let rel = relative(outDir, join(OUT, 'workers', f)).split('\\').join('/');
    if (!rel.startsWith('.')) rel = `./${rel}`;
    // A literal `new URL('./…', import.meta.url)`: the pattern app bundlers rewrite. The sources ask for
    // either path (src/runtime.ts uses the compiled one).
    const url = `() => new URL(${JSON.stringify(rel)}, import.meta.url),`;
    return [`  ${JSON.stringify(`workers/${f}`)}: ${url}`, `  ${JSON.stringify(`dist/workers/${f}`)}: ${url}`];
  });
  const toRoot = relative(outDir, ROOT).split('\\').join('/') + '/';
  return `
export * from ${JSON.stringify(originalId)};
const TEXT = ${JSON.stringify(text)};
const BINARY = ${JSON.stringify(binary)};
const SCRIPTS = ${JSON.stringify(scripts)};
const FILES = {
${files.join('\n')}
};
/** The package root (where models/ lives) when the package is served as static files. */
export const PACKAGE_ROOT = new URL(${JSON.stringify(toRoot)}, import.meta.url);
const blobUrls = {};
export function assetUrl(relative) {
  if (relative in SCRIPTS) {
    blobUrls[relative] ??= URL.createObjectURL(new Blob([SCRIPTS[relative]], { type: 'text/javascript' }));
    return new URL(blobUrls[relative]);
  }
  if (relative in FILES) return FILES[relative]();
  return new URL(relative, PACKAGE_ROOT);
}
export async function readAsset(relative) {
  if (relative in BINARY) {
    const s = atob(BINARY[relative]);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  if (relative in TEXT) return new TextEncoder().encode(TEXT[relative]);
  if (relative in SCRIPTS) return new TextEncoder().encode(SCRIPTS[relative]);
  const url = assetUrl(relative);
  const res = await fetch(url);
  if (!res.ok) throw new Error(\`cannot load \${url.href}: HTTP \${res.status}\`);
  return new Uint8Array(await res.arrayBuffer());
}
export async function readAssetText(relative) {
  if (relative in TEXT) return TEXT[relative];
  return new TextDecoder().decode(await readAsset(relative));
}
`;
}

/** Swaps dist/src/assets.js for the browser version above. */
function browserAssets(outDir) {
  const ASSETS = join(DIST, 'src', 'assets.js');
  const VIRTUAL = '\0mamba-edge:assets';
  return {
    name: 'mamba-edge-browser-assets',
    async resolveId(source, importer, opts) {
      if (source === VIRTUAL || source === ASSETS) return source;
      if (!importer || importer === VIRTUAL || !source.startsWith('.')) return null;
      const target = resolve(dirname(importer), source);
      return target === ASSETS ? VIRTUAL : null;
    },
    load(id) {
      if (id === VIRTUAL) return assetsModule(ASSETS, outDir);
      return null;
    },
  };
}

/**
 * Replaces every dynamic import whose target is not a relative path (node:*, 'webgpu', computed names) with a
 * rejected promise. The sources only reach those imports in Node; in a browser bundle they would make app
 * bundlers fail ("cannot resolve node:fs/promises") or warn. The one exception is comlink, which the engine
 * worker imports by a computed name (so that a page can point it elsewhere): in the bundles it is bundled, and
 * a computed import of 'comlink' returns that copy.
 */
function guardNodeImports() {
  return {
    name: 'mamba-edge-guard-node-imports',
    transform(code) {
      if (!code.includes('import(')) return null;
      const edits = [];
      let computed = false;
      const walk = (node) => {
        if (!node || typeof node.type !== 'string') return;
        if (node.type === 'ImportExpression') {
          const s = node.source;
          const literal = s.type === 'Literal' && typeof s.value === 'string';
          if (!(literal && s.value.startsWith('.'))) {
            const what = literal ? s.value : code.slice(s.start, s.end);
            const msg = `mamba-edge (browser build): import(${what}) is only available in Node`;
            let text = `Promise.reject(new Error(${JSON.stringify(msg)}))`;
            if (literal && s.value === 'comlink') text = 'Promise.resolve(__mambaEdgeComlink)';
            else if (!literal && code.includes('comlink')) {
              computed = true;
              text = `((s) => s === 'comlink' ? Promise.resolve(__mambaEdgeComlink) : Promise.reject(new Error(${JSON.stringify(msg + ': ')} + s)))(${code.slice(s.start, s.end)})`;
            }
            edits.push([node.start, node.end, text]);
            return;
          }
        }
        for (const key of Object.keys(node)) {
          const v = node[key];
          if (Array.isArray(v)) v.forEach(walk);
          else if (v && typeof v === 'object') walk(v);
        }
      };
      walk(this.parse(code));
      if (edits.length === 0) return null;
      let out = code;
      for (const [start, end, text] of edits.sort((a, b) => b[0] - a[0])) out = out.slice(0, start) + text + out.slice(end);
      if (computed || out.includes('__mambaEdgeComlink')) out = `import * as __mambaEdgeComlink from 'comlink';\n${out}`;
      return { code: out, map: null };
    },
  };
}

/** Bundles the runtime dependencies instead of leaving bare specifiers browsers cannot resolve. */
function resolveDependencies() {
  const files = {
    comlink: join(ROOT, 'node_modules', 'comlink', 'dist', 'esm', 'comlink.mjs'),
    // Tokenizers.js (tokenizer.json support): its ESM build, minified (37 KB instead of 99 KB).
    '@huggingface/tokenizers': join(ROOT, 'node_modules', '@huggingface', 'tokenizers', 'dist', 'tokenizers.min.mjs'),
  };
  return { name: 'mamba-edge-dependencies', resolveId: (id) => (Object.hasOwn(files, id) ? files[id] : null) };
}

/** The bundle's entry: the public API plus what a browser page needs directly (probe, workers). */
function browserEntry() {
  const ENTRY = '\0mamba-edge:browser-entry';
  // [module in dist/src, its export list or '*']
  const parts = [['index.js', '*'], ['defaults.js', 'DEFAULT_MODEL_PATH, defaultModelSource']];
  if (existsSync(join(DIST, 'src', 'probe.js'))) parts.push(['probe.js', 'probe, probeDevice']);
  const runtime = join(DIST, 'src', 'runtime.js');
  if (existsSync(runtime) && /export\s+(async\s+)?function\s+loadModelInWorker\b/.test(readFileSync(runtime, 'utf8'))) {
    parts.push(['runtime.js', 'loadModelInWorker']);
  }
  // Type-only names the declaration file adds (when the module declares them).
  const TYPE_EXPORTS = {};
  for (const [file, names] of [['probe.js', ['ProbeReport', 'ProbeOptions']], ['runtime.js', ['WorkerModel', 'WorkerSession', 'WorkerLoadOptions']]]) {
    const dts = join(DIST, 'src', file.replace(/\.js$/, '.d.ts'));
    const text = existsSync(dts) ? readFileSync(dts, 'utf8') : '';
    TYPE_EXPORTS[file] = names.filter((n) => new RegExp(`export (declare )?(interface|class|type) ${n}\\b`).test(text));
  }
  // Explicit exports shadow `export *`, so this stays valid if index.js starts exporting the same names.
  const reexports = (dir, types) =>
    parts
      .map(([file, names]) => {
        const from = JSON.stringify(`${dir}/${file}`);
        if (names === '*') return `export * from ${from};`;
        const typeNames = types ? (TYPE_EXPORTS[file] ?? []).map((t) => `, type ${t}`).join('') : '';
        return `export { ${names}${typeNames} } from ${from};`;
      })
      .join('\n') + '\n';
  const code = reexports(join(DIST, 'src').split('\\').join('/'), false);
  return {
    ENTRY,
    plugin: {
      name: 'mamba-edge-browser-entry',
      resolveId: (id) => (id === ENTRY ? ENTRY : null),
      load: (id) => (id === ENTRY ? code : null),
      generateBundle() {
        // Types: the tsc declarations, re-exported with the same shape as the entry.
        this.emitFile({ type: 'asset', fileName: 'mamba-edge.d.ts', source: reexports('../src', true) });
      },
    },
  };
}

function onwarn(warning, warn) {
  // An unresolved static import would reach the browser as a bare specifier: fail the build instead.
  if (warning.code === 'UNRESOLVED_IMPORT') throw new Error(`browser bundle: ${warning.message}`);
  // `this` at the top level of tsc output (downlevelled helpers) is harmless.
  if (warning.code === 'THIS_IS_UNDEFINED') return;
  // The transforms above drop tsc's source maps; the bundle's map points into dist/ instead of src/.
  if (warning.code === 'SOURCEMAP_BROKEN') return;
  warn(warning);
}

function bundle(input, file, plugins) {
  return {
    input,
    plugins: [...plugins, resolveDependencies(), browserAssets(dirname(file)), guardNodeImports()],
    onwarn,
    output: {
      file,
      format: 'es',
      // One file per entry: the wasm/webgpu backends are dynamic imports in the sources.
      inlineDynamicImports: true,
      sourcemap: true,
    },
  };
}

if (!existsSync(join(DIST, 'src', 'index.js'))) throw new Error('dist/src/index.js is missing: run `npm run build:ts` first');

// Start clean: files of worker entries that no longer exist must not linger.
rmSync(OUT, { recursive: true, force: true });
const entry = browserEntry();
export default [
  bundle(entry.ENTRY, join(OUT, 'mamba-edge.js'), [entry.plugin]),
  ...[...engineWorkers()].map(([name, path]) => bundle(path, join(OUT, 'workers', basename(name)), [])),
];
