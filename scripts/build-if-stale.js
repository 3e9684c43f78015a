#!/usr/bin/env node
// Runs `npm run build` unless its outputs are all present and newer than every build input.
//
//   node scripts/build-if-stale.js
//
// Used by `npm start` (a fresh clone has no dist/ or build/: installing no longer builds, see README) and by
// `prepack` (the tarball ships dist/ and build/; rebuilding them unchanged made `npm pack` take ~45 s).
// Like make: a file changed since the last build (or a checkout, which touches what it writes) rebuilds.
import { execSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** What `npm run build` reads (package.json is left out: editing scripts or the version changes no output). */
const INPUTS = ['src', 'workers', 'assembly', 'shaders', 'asconfig.json', 'tsconfig.json', 'tsconfig.build.json', 'rollup.config.js'];
/** One output of each build step (build:wasm, build:ts, build:bundle). */
const OUTPUTS = [
  'build/mamba.wasm',
  'build/mamba-relaxed.wasm',
  'build/mamba-st.wasm',
  'dist/src/index.js',
  'dist/workers/engine-worker.js',
  'dist/browser/mamba-edge.js',
];

function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** The newest modification time of a file or of any file under a directory. */
function newest(path) {
  const st = statSync(path, { throwIfNoEntry: false });
  if (!st) return 0;
  if (!st.isDirectory()) return st.mtimeMs;
  let t = st.mtimeMs; // a deleted file shows only as its directory's change
  for (const e of readdirSync(path)) t = Math.max(t, newest(join(path, e)));
  return t;
}

/** Why a build is needed, or undefined when the outputs are up to date. */
function staleReason() {
  const outs = OUTPUTS.map((f) => [f, mtime(join(ROOT, f))]);
  const missing = outs.find(([, t]) => t === undefined);
  if (missing) return `${missing[0]} is missing`;
  const oldest = Math.min(...outs.map(([, t]) => t));
  const changed = INPUTS.find((f) => newest(join(ROOT, f)) > oldest);
  return changed ? `${changed} changed since the last build` : undefined;
}

const reason = staleReason();
if (reason) {
  console.error(`mamba-edge: building (${reason})`);
  execSync('npm run build --silent', { cwd: ROOT, stdio: 'inherit' });
}
