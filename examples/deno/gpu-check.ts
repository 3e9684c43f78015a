// Runs the WebGPU backend under Deno (navigator.gpu: wgpu over Vulkan, e.g. Mesa lavapipe) on the
// test fixtures and checks the logits against the float64 reference.
//
//   npx deno run -A --unstable-sloppy-imports examples/deno/gpu-check.ts [--steps N] [--dtypes f32,f16,q8,q4] [fixture-dir ...]
//
// Prints one JSON line per fixture and dtype; exits 1 when a format misses its tolerance (f32: 1e-4·max|logit|), 2 when
// there is no adapter. --steps: bytes decoded one at a time after the prefill check (default 16).
// (--unstable-sloppy-imports lets Deno resolve the sources' `.js` specifiers to the `.ts` files, so no
// build step is needed.)
import { parseJsonText } from '../../src/config.ts';
import { BackendUnavailableError } from '../../src/errors.ts';
import { loadModel } from '../../src/model.ts';

// Every fixture of every family (hf-mamba, hf-mamba2, hf-falcon-mamba, hf-tokenizer, ...).
const root = new URL('../../test/fixtures/', import.meta.url);
const subdirs = (u: URL) => [...Deno.readDirSync(u)].filter((e) => e.isDirectory).map((e) => new URL(`${e.name}/`, u));
const args = [...Deno.args];
const at = args.indexOf('--steps');
const steps = at >= 0 ? Number(args.splice(at, 2)[1]) : 16;
const dt = args.indexOf('--dtypes');
const DTYPES = ['f32', 'f16', 'q8', 'q4'] as const;
const dtypes = dt >= 0 ? (args.splice(dt, 2)[1].split(',') as (typeof DTYPES)[number][]) : DTYPES;
if (dtypes.some((d) => !DTYPES.includes(d))) throw new RangeError(`--dtypes takes ${DTYPES.join(',')}`);
if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`--steps must be a positive integer`);
const dirs = args.length
  ? args
  : subdirs(root)
      .filter((u) => u.pathname.split('/').at(-2)!.startsWith('hf-'))
      .flatMap(subdirs)
      .map((u) => u.pathname)
      .filter((d) => {
        const e = parseJsonText(Deno.readTextFileSync(`${d}/expected.json`)) as { input_bytes?: unknown; input_ids?: unknown };
        return Array.isArray(e.input_bytes) || Array.isArray(e.input_ids);
      })
      .sort();
// Allowed max|Δ|/max|logit| per weight format, as in test/conformance.test.ts (q8 / q4: mostly the
// rounding of these tiny random-weight fixtures' weights, not the kernels).
const TOLERANCE = { f32: 1e-4, f16: 2e-2, q8: 5e-2, q4: 4e-1 } as const;

let failed = false;
for (const dir of dirs) {
  const exp = parseJsonText(await Deno.readTextFile(`${dir}/expected.json`)) as Record<string, any>;
  const raw = await Deno.readFile(`${dir}/${exp.logits_file ?? 'logits.f32'}`);
  const ref = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  // Token ids: the bytes of a byte-level fixture, or the tokenizer's ids.
  const ids = Uint32Array.from((exp.input_ids ?? exp.input_bytes) as number[]);
  const V = exp.logits_shape[1] as number;
  for (const dtype of dtypes) {
    let model;
    try {
      model = await loadModel(dir, { backend: 'webgpu', dtype });
    } catch (e) {
      if (e instanceof BackendUnavailableError) {
        console.log(JSON.stringify({ fixture: dir, dtype, unavailable: e.message }));
        Deno.exit(2);
      }
      throw e;
    }
    const t0 = performance.now();
    const got = await model.logits(ids);
    const prefillMs = performance.now() - t0;
    // token-by-token decode over the first `steps` tokens
    const b = model.backend;
    const s = b.createState();
    const t1 = performance.now();
    const n = Math.min(steps, ids.length);
    const dec = new Float32Array(n * V);
    for (let t = 0; t < n; t++) dec.set(await b.forward(s, ids.subarray(t, t + 1), 'last'), t * V);
    const stepMs = (performance.now() - t1) / n;
    const rel = (a: Float32Array, r: Float32Array) => {
      let d = 0;
      let m = 0;
      for (let i = 0; i < r.length; i++) {
        d = Math.max(d, Math.abs(a[i] - r[i]));
        m = Math.max(m, Math.abs(r[i]));
      }
      return d / m;
    };
    const prefill = rel(got, ref);
    const decode = rel(dec, ref.subarray(0, n * V));
    const ok = prefill <= TOLERANCE[dtype] && decode <= TOLERANCE[dtype];
    failed ||= !ok;
    console.log(
      JSON.stringify({
        fixture: dir.split('/').filter(Boolean).pop(),
        dtype,
        backend: b.description,
        prefillRel: prefill,
        decodeRel: decode,
        prefillMs: Math.round(prefillMs),
        stepMs: Math.round(stepMs * 10) / 10,
        ok,
      }),
    );
    model.dispose();
  }
}
Deno.exit(failed ? 1 : 0);
