import {
  greedySteps,
  sampledSteps,
  type Backend,
  type BackendName,
  type DecodeBlock,
  type DeviceSampling,
  type StateData,
  type StateHandle,
} from './backend.js';
import type { MambaConfig } from './config.js';
import { DeviceLostError, DisposedError } from './errors.js';

export interface FallbackOptions {
  /**
   * Take a host copy of a state (`readState`) once this many tokens have gone through it since the
   * last copy; the tokens in between are mirrored and replayed on the secondary after a loss.
   * 0 = copy after every forward. Default 256: a GPU→host read of the whole state costs about as
   * much as a decode step, replaying ≤ 256 tokens on the CPU costs one prefill chunk or a few.
   */
  checkpointTokens?: number;
  /** Called once, when the primary fails and the secondary takes over. */
  onFallback?: (error: DeviceLostError, from: BackendName, to: BackendName) => void;
}

/**
 * Per-sequence bookkeeping. The state "as of the last successful call" is `checkpoint` (null = the
 * initial zero state) followed by the tokens in `since`, so it can be rebuilt on another backend.
 */
interface Entry {
  primary?: StateHandle;
  secondary?: StateHandle;
  checkpoint: StateData | null;
  since: Uint32Array[];
  sinceTokens: number;
  /** Rebuilding this state on the secondary (at most once). */
  migrating?: Promise<StateHandle>;
  /** Decode blocks issued on the primary and not yet handled. */
  inflight: number;
  /** Handling of this sequence's decode blocks, in the order they were issued. */
  tail: Promise<unknown>;
  /** The token picked after the last decode block (a `first` = null block starts there). */
  next?: number;
}

/**
 * A backend that survives the loss of its primary (the GPU): when the primary throws
 * `DeviceLostError` — device lost, or a GPU error mid-computation — the failed call is re-run on a
 * lazily created secondary (a CPU backend on the same config and weights), each sequence's state
 * rebuilt there from its last host copy. With greedy decoding the output equals an uninterrupted
 * run (up to the two backends' float differences).
 *
 * Costs while healthy: the mirrored tokens, plus one `readState` every `checkpointTokens` tokens.
 * The secondary needs the host weights, so the factory keeps them alive.
 */
export class FallbackBackend implements Backend {
  readonly config: MambaConfig;
  /** Set once the primary has failed: why. */
  failure: DeviceLostError | null = null;
  private readonly entries = new Map<number, Entry>();
  private nextId = 1;
  private secondaryBackend: Backend | null = null;
  private secondaryPromise: Promise<Backend> | null = null;
  private disposed = false;
  private readonly checkpointTokens: number;

  constructor(
    readonly primary: Backend,
    private readonly makeSecondary: () => Promise<Backend>,
    private readonly options: FallbackOptions = {},
  ) {
    this.config = primary.config;
    this.checkpointTokens = options.checkpointTokens ?? 256;
  }

  /** The backend doing the work now. */
  get active(): Backend {
    return this.failure && this.secondaryBackend ? this.secondaryBackend : this.primary;
  }

  get name(): BackendName {
    return this.active.name;
  }

  get description(): string {
    if (!this.failure) return this.primary.description;
    const now = this.secondaryBackend?.description ?? 'cpu (starting)';
    return `${now} (fell back from ${this.primary.description}: ${this.failure.message})`;
  }

  createState(): StateHandle {
    this.check();
    const entry: Entry = { checkpoint: null, since: [], sinceTokens: 0, inflight: 0, tail: Promise.resolve() };
    // After a failure new states start on the secondary (lazily, in `onSecondary`).
    if (!this.failure) entry.primary = this.primary.createState();
    const id = this.nextId++;
    this.entries.set(id, entry);
    return { id };
  }

  async forward(state: StateHandle, tokens: Uint32Array, want: 'all' | 'last'): Promise<Float32Array> {
    const e = this.entry(state);
    if (!this.failure) {
      try {
        const out = await this.primary.forward(e.primary!, tokens, want);
        await this.mirror(e, tokens);
        return out;
      } catch (err) {
        if (!(err instanceof DeviceLostError)) throw err;
        this.fail(err);
      }
    }
    // Re-run the failed (or a later) call from the last good copy: the primary may have advanced
    // its state part-way before failing, the copy has not.
    return (await this.secondary()).forward(await this.onSecondary(e), tokens, want);
  }

  /** Blocks overlap on the primary when it allows (see `decode`). */
  get decodeAhead(): boolean {
    return !this.failure && this.primary.decodeAhead === true;
  }

  /** Greedy blocks stay on the GPU while it lives; after a loss they run step by step on the CPU. */
  decodeGreedy(state: StateHandle, first: number | null, n: number): Promise<DecodeBlock> {
    return this.decode(state, first, (h) => this.primary.decodeGreedy?.(h, first, n), (f) => greedySteps(this, state, f, n));
  }

  /** Sampled blocks stay on the GPU while it lives; after a loss they are drawn on the CPU. */
  decodeSampled(state: StateHandle, first: number | null, n: number, s: DeviceSampling): Promise<DecodeBlock> {
    return this.decode(state, first, (h) => this.primary.decodeSampled?.(h, first, n, s), (f) => sampledSteps(this, state, f, n, s));
  }

  /**
   * One decode block: issued on the primary at once (so blocks of a sequence can overlap there), its
   * result handled after the sequence's earlier blocks. A block the primary fails is redone on the
   * host from the sequence's rebuilt state, and one that continues the previous block (`first` =
   * null) starts from that block's `next`, wherever it ran.
   */
  private decode(
    state: StateHandle,
    first: number | null,
    onPrimary: (h: StateHandle) => Promise<DecodeBlock> | undefined,
    onHost: (first: number) => Promise<DecodeBlock>,
  ): Promise<DecodeBlock> {
    const e = this.entry(state);
    const issued = this.failure ? undefined : onPrimary(e.primary!);
    if (issued) {
      e.inflight++;
      issued.catch(() => undefined); // handled in turn below
    }
    const result = e.tail.then(async (): Promise<DecodeBlock> => {
      if (issued) {
        let out: DecodeBlock | undefined;
        try {
          out = await issued;
        } catch (err) {
          if (!(err instanceof DeviceLostError)) throw err;
          this.fail(err);
        } finally {
          e.inflight--;
        }
        if (out) {
          e.next = out.next;
          await this.mirror(e, out.tokens);
          return out;
        }
      }
      const from = first ?? e.next;
      if (from === undefined) throw new RangeError('decode: first = null continues a previous block of this sequence, and there is none');
      const out = await onHost(from);
      e.next = out.next;
      return out;
    });
    e.tail = result.catch(() => undefined);
    return result;
  }

  async readState(state: StateHandle): Promise<StateData> {
    const e = this.entry(state);
    if (!this.failure) {
      try {
        return await this.primary.readState(e.primary!);
      } catch (err) {
        if (!(err instanceof DeviceLostError)) throw err;
        this.fail(err);
      }
    }
    return (await this.secondary()).readState(await this.onSecondary(e));
  }

  async writeState(state: StateHandle, data: StateData): Promise<void> {
    const e = this.entry(state);
    const copy = { conv: data.conv.slice(), ssm: data.ssm.slice() };
    if (!this.failure) {
      try {
        await this.primary.writeState(e.primary!, data);
        this.setCheckpoint(e, copy);
        return;
      } catch (err) {
        if (!(err instanceof DeviceLostError)) throw err;
        this.fail(err);
      }
    }
    const h = await this.onSecondary(e);
    await (await this.secondary()).writeState(h, copy);
  }

  releaseState(state: StateHandle): void {
    const e = this.entries.get(state.id);
    if (!e || this.disposed) return;
    this.entries.delete(state.id);
    if (e.primary && !this.failure) this.primary.releaseState(e.primary);
    if (e.secondary) this.secondaryBackend?.releaseState(e.secondary);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.entries.clear();
    try {
      this.primary.dispose();
    } catch {
      // a lost device may refuse to be destroyed twice
    }
    this.secondaryBackend?.dispose();
    // A secondary still starting is disposed when it arrives.
    void this.secondaryPromise?.then((b) => b !== this.secondaryBackend && b.dispose()).catch(() => undefined);
  }

  // ---- internals ---------------------------------------------------------------------------------

  private entry(state: StateHandle): Entry {
    this.check();
    const e = this.entries.get(state.id);
    if (!e) throw new Error(`unknown state ${state.id}`);
    return e;
  }

  private check(): void {
    if (this.disposed) throw new DisposedError('backend');
  }

  private setCheckpoint(e: Entry, data: StateData): void {
    e.checkpoint = data;
    e.since = [];
    e.sinceTokens = 0;
  }

  /** After a successful primary call: remember its tokens, and copy the state now and then. */
  private async mirror(e: Entry, tokens: Uint32Array): Promise<void> {
    e.since.push(tokens.slice());
    e.sinceTokens += tokens.length;
    // A later block already issued would be in the copy but not yet in `since`: copy once they are done.
    if (e.sinceTokens < this.checkpointTokens || e.inflight > 0) return;
    try {
      this.setCheckpoint(e, await this.primary.readState(e.primary!));
    } catch (err) {
      // The call itself succeeded; the mirrored tokens still describe the state.
      if (!(err instanceof DeviceLostError)) throw err;
      this.fail(err);
    }
  }

  private fail(err: DeviceLostError): void {
    if (this.failure) return;
    this.failure = err;
    try {
      this.primary.dispose(); // frees what is left of the GPU side
    } catch {
      // ignore: the device is gone anyway
    }
    void this.secondary().then(
      (b) => this.options.onFallback?.(err, this.primary.name, b.name),
      () => undefined, // reported by the call that awaits it
    );
  }

  private secondary(): Promise<Backend> {
    this.secondaryPromise ??= this.makeSecondary().then((b) => {
      if (this.disposed) b.dispose();
      else this.secondaryBackend = b;
      return b;
    });
    return this.secondaryPromise;
  }

  /** This sequence's handle on the secondary, rebuilt from checkpoint + mirrored tokens on first use. */
  private onSecondary(e: Entry): Promise<StateHandle> {
    if (e.secondary) return Promise.resolve(e.secondary);
    e.migrating ??= (async () => {
      const b = await this.secondary();
      const h = b.createState();
      if (e.checkpoint) await b.writeState(h, e.checkpoint);
      if (e.sinceTokens > 0) {
        const all = new Uint32Array(e.sinceTokens);
        let p = 0;
        for (const t of e.since) (all.set(t, p), (p += t.length));
        await b.forward(h, all, 'last');
      }
      e.secondary = h;
      e.primary = undefined;
      e.checkpoint = null;
      e.since = [];
      e.sinceTokens = 0;
      return h;
    })();
    return e.migrating;
  }
}
