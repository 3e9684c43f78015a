/**
 * What this machine offers the tests that need more than Node: system packages (Chromium, a Vulkan
 * driver, Mesa's OpenGL), Deno, a build, a hardware GPU; and the one way a test file skips when
 * something is absent: one line on stderr naming what to install.
 *
 * `.ci/run` installs every Debian package marked `ci` (and `npm install` + `npm test`'s pretest
 * provide Deno and the build), so under CI=true a missing `ci` need fails the file instead of
 * skipping it: CI never passes by silently running less.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { GpuContext } from '../../src/webgpu/device.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const at = (p: string) => `${ROOT}${p}`;

export interface Need {
  /** What to get, as the skip line says it: "Debian package chromium". */
  readonly what: string;
  /** How to get it: "apt-get install chromium". */
  readonly install: string;
  readonly present: boolean;
  /** Provided by `.ci/run` (its apt packages, `npm install`, the pretest build). */
  readonly ci: boolean;
}

const LIB_DIRS = [
  ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
  `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`,
  `/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`,
  '/usr/lib64',
  '/usr/lib',
  '/usr/local/lib',
];
const hasLib = (name: string) => LIB_DIRS.some((d) => existsSync(`${d}/${name}`));

/** Vulkan ICD manifests the loader reads (the variables replace the search, as in the loader). */
function vulkanIcds(): string[] {
  const set = process.env.VK_DRIVER_FILES ?? process.env.VK_ICD_FILENAMES;
  if (set) return set.split(':').filter(Boolean);
  return ['/usr/share/vulkan/icd.d', '/usr/local/share/vulkan/icd.d', '/etc/vulkan/icd.d'].flatMap((d) =>
    existsSync(d) ? readdirSync(d).map((f) => `${d}/${f}`) : [],
  );
}

/**
 * MAMBA_EDGE_TEST_HIDE=chromium,lavapipe: treat those needs as absent, to see what a fresh machine
 * runs (only the gating: Dawn and Deno still find whatever drivers are installed).
 */
const HIDDEN = new Set((process.env.MAMBA_EDGE_TEST_HIDE ?? '').split(',').filter(Boolean));
const need = (key: string, n: Need): Need => (HIDDEN.has(key) ? { ...n, present: false } : n);
const debian = (key: string, pkg: string, present: boolean, ci: boolean): Need =>
  need(key, { what: `Debian package ${pkg}`, install: `apt-get install ${pkg}`, present, ci });

export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
export const DENO = at('node_modules/.bin/deno');

export const NEEDS = {
  /** Headless Chromium for the browser, bench page, Electron renderer and Chromium worker tests. */
  chromium: debian('chromium', 'chromium', existsSync('/usr/bin/chromium'), true),
  /** The Vulkan loader (mesa-vulkan-drivers depends on it; chromium does not, it ships its own copy). */
  vulkanLoader: debian('vulkanLoader', 'libvulkan1', hasLib('libvulkan.so.1'), true),
  /** Mesa's lavapipe: the Vulkan driver Deno's wgpu uses without a GPU (it also offers shader-f16). */
  lavapipe: debian('lavapipe', 'mesa-vulkan-drivers', vulkanIcds().some((f) => /lvp_icd/.test(f)), true),
  /** SwiftShader (shipped in chromium): the Vulkan driver Dawn in Node accepts without a GPU (after GLES). */
  swiftshader: debian('swiftshader', 'chromium', existsSync(SWIFTSHADER_ICD) || vulkanIcds().some((f) => /swiftshader/i.test(f)), true),
  /** Mesa's OpenGL ES (llvmpipe): Dawn's route in Node when there is no Vulkan driver it accepts. */
  mesaGL: debian('mesaGL', 'libegl-mesa0', hasLib('libEGL_mesa.so.0'), true),
  deno: need('deno', { what: 'the deno npm package', install: 'npm install', present: existsSync(DENO), ci: true }),
  build: need('build', {
    what: 'a build (dist/)',
    install: 'npm run build',
    present: ['dist/src/index.js', 'dist/src/runtime.js', 'dist/workers/engine-worker.js', 'dist/browser/mamba-edge.js'].every((p) => existsSync(at(p))),
    ci: true,
  }),
  /** A hardware GPU's device node. */
  gpu: need('gpu', {
    what: 'a hardware GPU (/dev/dri/renderD*, /dev/nvidia*)',
    install: 'a GPU and its driver',
    present: (existsSync('/dev/dri') && readdirSync('/dev/dri').some((f) => f.startsWith('renderD'))) || existsSync('/dev/nvidia0'),
    ci: false,
  }),
} as const;

const CI = process.env.CI === 'true' || process.env.CI === '1';

/** "test/foo.test.ts" (and the part of it, when only a part skips). */
function label(file: string, part?: string): string {
  const rel = relative(ROOT, file.startsWith('file:') ? fileURLToPath(file) : file);
  return part ? `${rel} (${part})` : rel;
}

/**
 * Says that `file` (or `part` of it) is skipped and why, as one line on stderr; the raw stream, so
 * the line is not wrapped in vitest's console block. `ci`: the reason is something CI provides, so
 * under CI=true this throws (the file fails) instead.
 */
export function skipLine(file: string, reason: string, opts: { part?: string; ci?: boolean } = {}): string {
  const line = `${label(file, opts.part)} skipped: ${reason}`;
  if (CI && opts.ci) throw new Error(`CI=true and ${line}: .ci/run provides this, so the test must run, not skip`);
  process.stderr.write(`${line}\n`);
  return line;
}

/**
 * The skip reason for `file` (or `part` of it) when one of `needs` is absent, else null; prints the
 * one line. Use as `describe.skipIf(requires(import.meta.url, NEEDS.chromium))(...)`.
 */
export function requires(file: string, ...args: (Need | { part: string })[]): string | null {
  const needs = args.filter((a): a is Need => 'present' in a);
  const part = args.find((a): a is { part: string } => 'part' in a)?.part;
  const absent = needs.filter((n, i) => !n.present && needs.findIndex((m) => m.what === n.what) === i);
  if (!absent.length) return null;
  const reason = `needs ${absent.map((n) => `${n.what} (${n.install})`).join(' and ')}`;
  return skipLine(file, reason, { part, ci: absent.some((n) => n.ci) });
}

/**
 * What gives Dawn in Node a WebGPU adapter without a GPU: Mesa's OpenGL ES over llvmpipe (its GLES
 * backend), else SwiftShader from chromium through the system's Vulkan loader.
 */
export const SOFTWARE_WEBGPU_FOR_DAWN =
  "needs Mesa's OpenGL ES (apt-get install libegl-mesa0 libgles2 libgl1-mesa-dri), or SwiftShader (apt-get install chromium mesa-vulkan-drivers), or a GPU driver";

/**
 * A WebGPU device from Dawn in Node, as the backend finds one (Vulkan, GLES, then SwiftShader), or
 * undefined after the one skip line. Under CI=true no adapter is a failure: CI installs Mesa.
 * `ctx.software` tells a test to use its small workloads.
 */
export async function nodeWebGPU(file: string, opts: { part?: string; f16?: boolean } = {}): Promise<GpuContext | undefined> {
  const { acquireDevice } = await import('../../src/webgpu/device.js');
  const { BackendUnavailableError } = await import('../../src/errors.js');
  try {
    return await acquireDevice(opts.f16 ?? false);
  } catch (e) {
    if (!(e instanceof BackendUnavailableError)) throw e;
    skipLine(file, `no WebGPU adapter for Dawn (${e.message}): ${SOFTWARE_WEBGPU_FOR_DAWN}`, { part: opts.part, ci: true });
    return undefined;
  }
}

// wgpu complains on stderr when XDG_RUNTIME_DIR is unset (harmless, but noisy).
let xdg: string | undefined;

/**
 * Runs Deno (the npm package's binary) in the repository root. `timeoutMs` stays below vitest's test
 * timeout: spawnSync blocks the event loop, so only its own timeout can end a hung run, and then
 * `stderr` says so instead of vitest reporting a bare timeout.
 */
export function denoRun(
  args: string[],
  opts: { input?: string; timeoutMs?: number } = {},
): { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number } {
  xdg ??= process.env.XDG_RUNTIME_DIR ?? mkdtempSync(join(tmpdir(), 'xdg-'));
  const timeout = opts.timeoutMs ?? 90_000;
  const t0 = performance.now();
  const r = spawnSync(DENO, args, {
    cwd: ROOT,
    encoding: 'utf8',
    input: opts.input,
    timeout,
    maxBuffer: 64 << 20,
    env: { ...process.env, XDG_RUNTIME_DIR: xdg, NO_COLOR: '1', DENO_NO_UPDATE_CHECK: '1' },
  });
  const killed = r.signal ? `\n[deno ${args.join(' ')}: killed by ${r.signal} after ${timeout} ms]` : '';
  return { code: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: `${r.stderr ?? ''}${killed}`, ms: performance.now() - t0 };
}
