/**
 * The adapter self-check: before a model runs on a WebGPU adapter, a tiny built-in model goes
 * through every path the backend will run with those options — chunked prefill, the decode step
 * (fused or not), chained greedy blocks (including a `first = null` continuation) and chained
 * sampled blocks — and is compared with the plain-TS reference. An adapter that disagrees is
 * refused with `BackendUnavailableError('webgpu', 'self-check failed: <path> ...')`, so
 * `backend: 'auto'` moves on to wasm and an explicit `backend: 'webgpu'` says why.
 *
 * Why: a driver can compile valid WGSL into wrong code. Dawn's OpenGL ES backend over Mesa's
 * llvmpipe, for one, does not order workgroup memory at a barrier, and the fused step and the GPU
 * sampler gave wrong numbers there (step.wgsl `channel_sum`) — garbage text, no error anywhere.
 *
 * The verdict is cached per process for each adapter, weight format, kernel shape and shader text.
 */
import type { Backend, DecodeBlock, DeviceSampling, StateData, StateHandle } from '../backend.js';
import type { MambaConfig } from '../config.js';
import { BackendUnavailableError } from '../errors.js';
import { readModel } from '../loader.js';
import { argmax, rng } from '../sampler.js';
import { createReferenceBackend } from '../reference/backend.js';
import { syntheticModel, type SyntheticSpec } from '../synthetic.js';
import { isMamba2Layer, type ModelWeights } from '../weights.js';
import { selfCheckResults, type GpuContext, type SelfCheckResult } from './device.js';
import { storedWeights, type WebGPUKernelOptions } from './kernels.js';
import { hashShaders } from './wgsl.js';
import type { WebGPUBackend } from './backend.js';

/**
 * Largest |GPU − reference| allowed, relative to max |logit| of the rows compared. f32: the
 * conformance bound (measured errors are ~1e-6 on GPUs and llvmpipe). f16, q8, q4 weights: the
 * reference runs on the very values the GPU stores (rounded, or quantized and dequantized:
 * kernels.ts `storedWeights`), so only accumulation order differs; 1e-3 leaves headroom for long
 * rows without letting a broken kernel (errors ≥ 1e-2) through.
 */
export const SELF_CHECK_TOLERANCE = { f32: 1e-4, f16: 1e-3, q8: 1e-3, q4: 1e-3 } as const;

/** `paths`: those checked, in order, e.g. ['prefill', 'fused decode step', ...]; `failure` names the path. */
export type SelfCheckVerdict = SelfCheckResult;

/** What the real backend will run: the kernel options and the model shapes compiled into shaders. */
export interface SelfCheckTarget {
  kernels: WebGPUKernelOptions & { gemvLanes: number; flatGemm: boolean; tokenScan?: boolean };
  /** Fused decode step requested (it applies only where `fusedStep` allows, as in the backend). */
  fused: boolean;
  /** The model: N, K and R are compile-time constants of the scan/step shaders, D sets LANES. */
  model: MambaConfig;
}

/**
 * Test hook: `perturb(path, logits)` may change what the GPU returned for a path before it is
 * compared (a stand-in for a wrong kernel, on any adapter). Never set outside tests.
 */
export const selfCheckHooks: { perturb?: (path: string, out: Float32Array | Uint32Array) => void } = {};

const verdicts = new Map<string, Promise<SelfCheckVerdict>>();

/** Verdicts reached so far in this process. */
export function selfCheckVerdicts(): readonly SelfCheckVerdict[] {
  return selfCheckResults;
}

/**
 * Runs the self-check for `target` on `ctx` (once per process and key) and throws
 * `BackendUnavailableError` when the adapter disagrees with the reference.
 */
export async function selfCheck(
  ctx: GpuContext,
  shaders: Record<string, string>,
  target: SelfCheckTarget,
  makeBackend: (config: MambaConfig, weights: ModelWeights, chunk: number, fused: boolean) => WebGPUBackend,
): Promise<SelfCheckVerdict> {
  const { dState: N, dConv: K, dtRank: R } = target.model;
  const k = target.kernels;
  const key = [
    ctx.source,
    ctx.adapterName,
    k.dtype,
    k.shaderF16 ? 'shader-f16' : '',
    `lanes ${k.gemvLanes}`,
    k.flatGemm ? 'flat' : 'tiled',
    k.tokenScan ? 'token scan' : 'chunked scan',
    target.fused ? 'fused' : 'unfused',
    `N${N} K${K} R${R} D${target.model.mamba2 ? mamba2Width(target) : checkWidth(target)}`,
    // The architecture's own kernels: Mamba-2 (head size, groups, gate order) or Falcon-Mamba.
    target.model.mamba2 ? `mamba2 P${target.model.mamba2.headDim} G${target.model.mamba2.nGroups} ${target.model.mamba2.normBeforeGate}` : target.model.mixerRmsEps !== undefined ? 'falcon' : 'mamba1',
    hashShaders(shaders),
  ].join('|');
  let v = selfCheckHooks.perturb ? undefined : verdicts.get(key);
  if (!v) {
    v = run(ctx, target, key, makeBackend).then((r) => {
      selfCheckResults.push(r);
      return r;
    });
    // A perturbed run (tests) is never cached: the next load sees the adapter as it is.
    if (!selfCheckHooks.perturb) verdicts.set(key, v);
  }
  const verdict = await v;
  if (!verdict.ok) throw new BackendUnavailableError('webgpu', verdict.failure!);
  return verdict;
}

/**
 * Width of the check model: the decode GEMV gives a row LANES invocations by its length
 * (`rowLanes` in kernels.ts), so D is chosen to get the same LANES as the real model's D
 * (rows of (8·LANES, 16·LANES] values), at least 32.
 */
function checkWidth(t: SelfCheckTarget): number {
  const D = t.model.dModel;
  if (t.kernels.gemvLanes === 1 || D <= 16 * t.kernels.gemvLanes) return 32;
  let lanes = t.kernels.gemvLanes;
  while (lanes < 128 && lanes * 16 < D) lanes *= 2;
  return lanes * 8 + 8;
}

/**
 * Width of a Mamba-2 check model: a multiple of P·G (heads of P, whole groups of them) and of 4 (the
 * fused step's quads), as `checkWidth` where the real model gets several lanes a row, so that the
 * fused step's kernels are compiled with the real model's LANES; else the smallest such width.
 */
function mamba2Width(t: SelfCheckTarget): number {
  const { headDim: P, nGroups: G } = t.model.mamba2!;
  const PG = P * G;
  if (t.kernels.gemvLanes === 1 || t.model.dModel % 4) return PG;
  const m = PG % 4 === 0 ? PG : PG % 2 === 0 ? 2 * PG : 4 * PG; // lcm(P·G, 4)
  return m * Math.ceil(checkWidth(t) / m);
}

const PROMPT = 24; // tokens: chunks of 16 and 8
const CHUNK = 16;
const SEED = 0x5eed;

async function run(
  ctx: GpuContext,
  target: SelfCheckTarget,
  key: string,
  makeBackend: (config: MambaConfig, weights: ModelWeights, chunk: number, fused: boolean) => WebGPUBackend,
): Promise<SelfCheckVerdict> {
  const t0 = performance.now();
  const { dState: N, dConv: K, dtRank: R, mamba2: m2 } = target.model;
  const dtype = target.kernels.dtype;
  // The target's architecture, so that every kernel its model runs is checked: Mamba-2's SSD and
  // gated norm with its head size and groups (two heads a group), Falcon-Mamba's Δ/B/C norms.
  const arch: Partial<SyntheticSpec> = m2
    ? { hidden_size: mamba2Width(target), mamba2: { head_dim: m2.headDim, n_groups: m2.nGroups, norm_before_gate: m2.normBeforeGate } }
    : { hidden_size: checkWidth(target), time_step_rank: R, falcon: target.model.mixerRmsEps !== undefined };
  const files = syntheticModel({
    hidden_size: 0,
    ...arch,
    num_hidden_layers: 1,
    state_size: N,
    conv_kernel: K,
    vocab_size: 256,
    use_bias: true,
    tie_word_embeddings: false,
    seed: SEED,
  });
  const { config, weights } = await readModel({ files });
  stress(weights);
  // The GPU stores matrices in the weight format; the reference computes on the same values.
  const refWeights = storedWeights(weights, config, dtype);
  const ref = createReferenceBackend(config, refWeights);
  const gpu = makeBackend(config, weights, CHUNK, target.fused);
  const paths: string[] = [];
  const tol = SELF_CHECK_TOLERANCE[dtype];
  const fail = (path: string, what: string) => {
    throw new CheckFailure(`self-check failed: ${path} ${what} on ${ctx.adapterName}`);
  };
  try {
    const c = new Checker(tol, fail);
    // 1. Chunked prefill, every row of logits.
    const prompt = Uint32Array.from({ length: PROMPT }, (_, i) => (i * 37 + 11) & 255);
    const gs = gpu.createState();
    const cs = ref.createState();
    paths.push('prefill');
    c.close('prefill', await c.got('prefill', gpu.forward(gs, prompt, 'all')), await ref.forward(cs, prompt, 'all'));

    // 2. Decode steps (T = 1), as configured (fused or not).
    const step = gpu.fused ? 'fused decode step' : 'decode step';
    paths.push(step);
    let last: Float32Array = new Float32Array(0);
    for (const t of [7, 200, 65]) {
      last = await ref.forward(cs, Uint32Array.of(t), 'last');
      c.close(step, await c.got(step, gpu.forward(gs, Uint32Array.of(t), 'last')), last);
    }
    const forkG = await gpu.readState(gs);
    const forkC = await ref.readState(cs);
    const first = argmax(last);

    // 3. Chained greedy blocks, the second continuing the first on the GPU (first = null).
    const greedy = 'chained greedy decode';
    paths.push(greedy);
    const g1 = gpu.decodeGreedy(gs, first, 3);
    const g2 = gpu.decodeGreedy(gs, null, 2);
    let start = first;
    for (const b of await Promise.all([g1, g2])) {
      c.perturbBlock(greedy, b);
      if (b.tokens[0] !== start) fail(greedy, `continued with token ${b.tokens[0]}, not ${start}`);
      let logits = await ref.forward(cs, b.tokens.subarray(0, 1), 'last');
      for (let i = 1; i < b.tokens.length; i++) {
        c.greedyPick(greedy, logits, b.tokens[i]);
        logits = await ref.forward(cs, b.tokens.subarray(i, i + 1), 'last');
      }
      c.greedyPick(greedy, logits, b.next);
      c.close(greedy, b.logits, logits);
      start = b.next;
    }

    // 4. Chained sampled blocks (the vocabulary fits the on-GPU sampler). The GPU's random stream
    //    is its own, so each draw is replayed on the reference's logits fed the same tokens; then the
    //    logits after each block, and the same tokens again for the same seed.
    const sampled = 'sampled decode';
    if (target.model.vocabSize <= 256) paths.push(sampled);
    for (const [si, s] of (target.model.vocabSize <= 256 ? SAMPLINGS : []).entries()) {
      const fg = await fork(gpu, forkG);
      const fc = await fork(ref, forkC);
      const s1 = gpu.decodeSampled(fg, first, 3, s);
      const s2 = gpu.decodeSampled(fg, null, 2, s);
      const blocks = await Promise.all([s1, s2]);
      gpu.releaseState(fg);
      if (si === 0) {
        const again = await fork(gpu, forkG);
        const repeat = await gpu.decodeSampled(again, first, 3, s);
        gpu.releaseState(again);
        if (!sameTokens(blocks[0].tokens, repeat.tokens) || blocks[0].next !== repeat.next) fail(sampled, `is not reproducible for seed ${s.seed}`);
      }
      start = first;
      for (const b of blocks) {
        c.perturbBlock(sampled, b);
        if (b.tokens[0] !== start) fail(sampled, `continued with token ${b.tokens[0]}, not ${start}`);
        const draw = gpuDraws(s.seed); // every block reseeds its stream
        let logits = await ref.forward(fc, b.tokens.subarray(0, 1), 'last');
        for (let i = 0; i < b.tokens.length; i++) {
          const pick = i + 1 < b.tokens.length ? b.tokens[i + 1] : b.next;
          const why = c.samplePick(logits, pick, s, draw());
          if (why) fail(sampled, `drew token ${pick} ${why} (temperature ${s.temperature}, top-k ${s.topK}, top-p ${s.topP})`);
          if (i + 1 < b.tokens.length) logits = await ref.forward(fc, b.tokens.subarray(i + 1, i + 2), 'last');
        }
        c.close(sampled, b.logits, logits);
        start = b.next;
      }
      ref.releaseState(fc);
    }
    return { ok: true, adapter: ctx.adapterName, key, paths, ms: Math.round(performance.now() - t0) };
  } catch (e) {
    // A kernel the adapter rejects or a device lost under it refuses the adapter just the same.
    const failure = e instanceof CheckFailure ? e.message : `self-check failed: ${paths[paths.length - 1]} raised ${(e as Error).message} on ${ctx.adapterName}`;
    return { ok: false, adapter: ctx.adapterName, key, paths, failure, ms: Math.round(performance.now() - t0) };
  } finally {
    gpu.dispose();
    ref.dispose();
  }
}

class CheckFailure extends Error {}

/** Temperature alone, with top-p, with top-k: the filters the GPU sampler applies. */
const SAMPLINGS: DeviceSampling[] = [
  { temperature: 1.3, topK: 0, topP: 1, seed: 4242 },
  { temperature: 0.9, topK: 0, topP: 0.9, seed: 12345 },
  { temperature: 0.7, topK: 5, topP: 1, seed: 777 },
];

async function fork(b: Backend, data: StateData): Promise<StateHandle> {
  const s = b.createState();
  await b.writeState(s, data);
  return s;
}

function sameTokens(a: Uint32Array, b: Uint32Array): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}


/** The uniform draws of the GPU sampler for a block seeded with `seed`: the host's SplitMix32 in 24 bits (sample.wgsl `sample_feed`). */
function gpuDraws(seed: number): () => number {
  const next = rng(seed);
  return () => Math.floor(next() * 2 ** 24) / 2 ** 24;
}

/**
 * Makes every part of the layer matter to the logits. Under Mamba's initialisation (Δ in
 * [1e-3, 1e-1], a skip D ~ 1, the embedding dominating the residual) a scan step that got Δ wrong
 * for half its lanes — the OpenGL ES fault of step.wgsl's `channel_sum` — moved the logits by
 * 1.6e-6, far inside the tolerance; with Δ spread over softplus's curve (0.05 .. 3), states that
 * remember a few tokens, a small skip and the mixer outweighing the embedding, by 9.6e-4 (10x the
 * tolerance), while a correct adapter stays below 1e-6 (llvmpipe).
 */
function stress(w: ModelWeights): void {
  let s = SEED;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  for (const L of w.layers) {
    if (isMamba2Layer(L)) {
      for (let i = 0; i < L.dtBias.length; i++) L.dtBias[i] = -3 + 4 * rand();
      for (let i = 0; i < L.A.length; i++) L.A[i] = -0.1 - rand();
      for (let i = 0; i < L.D.length; i++) L.D[i] *= 0.1;
      for (let i = 0; i < L.outProj.length; i++) L.outProj[i] *= 3;
      continue;
    }
    for (let i = 0; i < L.dtProjB.length; i++) L.dtProjB[i] = -3 + 4 * rand();
    for (let i = 0; i < L.dtProjW.length; i++) L.dtProjW[i] *= 4;
    for (let i = 0; i < L.A.length; i++) L.A[i] = -0.1 - rand(); // memory of a few tokens in every state
    for (let i = 0; i < L.D.length; i++) L.D[i] *= 0.1; // the skip no longer hides the scan
    for (let i = 0; i < L.outProj.length; i++) L.outProj[i] *= 3;
  }
  for (let i = 0; i < w.embedding.length; i++) w.embedding[i] *= 0.02;
}

/** The comparisons, with the tolerance and the failure report. */
class Checker {
  /** max |logit| seen in the reference: the scale of the tolerance. */
  private scale = 0;
  constructor(
    private readonly tol: number,
    private readonly fail: (path: string, what: string) => never,
  ) {}

  async got(path: string, p: Promise<Float32Array>): Promise<Float32Array> {
    const out = await p;
    selfCheckHooks.perturb?.(path, out);
    return out;
  }

  perturbBlock(path: string, b: DecodeBlock): void {
    selfCheckHooks.perturb?.(path, b.logits);
    selfCheckHooks.perturb?.(`${path} tokens`, b.tokens);
  }

  /** The GPU's logits `got` equal the reference's `want` within the tolerance. */
  close(path: string, got: Float32Array, want: Float32Array): void {
    let d = 0;
    let m = 0;
    for (let i = 0; i < want.length; i++) {
      const g = got[i];
      if (!Number.isFinite(g)) this.fail(path, `gave a non-finite logit (${g})`);
      d = Math.max(d, Math.abs(g - want[i]));
      m = Math.max(m, Math.abs(want[i]));
    }
    this.scale = Math.max(this.scale, m);
    const rel = d / Math.max(m, 1e-6);
    if (got.length !== want.length || rel > this.tol) {
      this.fail(path, `off by ${rel.toExponential(1)} (tolerance ${this.tol.toExponential(0)})`);
    }
  }

  /** Largest |logit error| the tolerance allows. */
  private get delta(): number {
    return this.tol * this.scale;
  }

  /** `pick` is an argmax of `logits`, up to the tolerance (near-ties may go either way). */
  greedyPick(path: string, logits: Float32Array, pick: number): void {
    const best = argmax(logits);
    if (pick !== best && !(logits[pick] >= logits[best] - 2 * this.delta)) {
      this.fail(path, `picked token ${pick} (logit ${logits[pick].toFixed(4)}), the argmax is ${best} (${logits[best].toFixed(4)})`);
    }
  }

  /**
   * Replays sample.wgsl's draw on the reference's logits: candidates by logit (then index), top-k,
   * probabilities exp((l - max) / T), top-p on their running sums, then the first candidate whose
   * running sum passes `u` · kept mass. The GPU's logits differ by up to `delta`, which moves each
   * running sum by a factor within exp(±2·delta/T): a pick is accepted when `u` falls in its
   * interval widened by that much (and it is inside the widened top-k/top-p set). '' = accepted.
   */
  samplePick(logits: Float32Array, pick: number, s: DeviceSampling, u: number): string {
    const V = logits.length;
    const ids = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
    const K = s.topK === 0 ? V : Math.min(s.topK, V);
    const rank = ids.indexOf(pick);
    const slack = Math.expm1((2 * this.delta) / s.temperature) + 1e-6; // relative
    const cum: number[] = [];
    let acc = 0;
    for (let i = 0; i < K; i++) cum.push((acc += Math.exp((logits[ids[i]] - logits[ids[0]]) / s.temperature)));
    // top-k: a pick ranked at K or below must tie the K-th logit within the error
    if (rank >= K && !(logits[pick] >= logits[ids[K - 1]] - 2 * this.delta)) return `outside the top ${K}`;
    const r = Math.min(rank, K - 1);
    // top-p keeps the shortest prefix whose sum reaches topP of the total; sums within the error
    // of that goal may end it on the GPU one candidate earlier or later, which also rescales the draw.
    let [keepLo, keepHi] = [K, K];
    if (s.topP < 1) {
      const goal = s.topP * acc;
      keepLo = cum.findIndex((c) => c * (1 + slack) >= goal) + 1 || K;
      keepHi = cum.findIndex((c) => c * (1 - slack) >= goal) + 1 || K;
    }
    if (r >= keepHi) return `outside the top-p ${s.topP} set`;
    const margin = slack * acc;
    for (let keep = Math.max(keepLo, r + 1); keep <= keepHi; keep++) {
      const x = u * cum[keep - 1];
      if (x >= (r > 0 ? cum[r - 1] : 0) - margin && x < cum[r] + margin) return '';
    }
    const keep = s.topP < 1 ? cum.findIndex((c) => c >= s.topP * acc) + 1 || K : K;
    const want = ids[cum.findIndex((c) => c > u * cum[keep - 1])] ?? ids[keep - 1];
    // Candidates whose logits tie within the error may be ordered either way on the GPU.
    if (Math.abs(logits[pick] - logits[want]) <= 2 * this.delta) return '';
    return `where the draw ${u.toFixed(6)} gives token ${want}`;
  }
}
