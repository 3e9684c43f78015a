/**
 * The order of calls on one session (in-process `Session` and the main thread's `WorkerSession`).
 *
 * Rule: every call takes its place in the queue when it is made — `generate()` too, not at its
 * first pull — and calls run one at a time in that order. A generator holds the session from its
 * turn until it ends, but only while its consumer keeps pulling: when a later call is waiting and
 * the generator at the head is idle (suspended at a yield, or never pulled) after the consumer has
 * had the rest of the current event-loop turn to ask for the next chunk, the generator is ended
 * (`return()` on it, so its cleanup runs) and the waiting call proceeds. The ended generator's next
 * pull rejects with a `MambaError` of code `'PREEMPTED'`. So nothing waits forever on an abandoned
 * generator, and a `for await` loop whose body does not await (or two streams consumed
 * concurrently) keeps its place: such a consumer asks again within microtasks.
 */
import { MambaError } from './errors.js';
import { yieldToEventLoop } from './generate.js';

export function preemptedError(): MambaError {
  return new MambaError(
    'PREEMPTED',
    'this generation was ended by a later call on the same session, made while nothing was reading it (finish or break out of a stream before the next call)',
  );
}

export class SessionQueue {
  private readonly entries: Ticket[] = [];
  private scheduled = false;

  /** A place at the end of the queue. A generator's ticket is idle and not waiting until first pulled. */
  enter(generator = false): Ticket {
    const t = new Ticket(this, generator);
    this.entries.push(t);
    if (this.entries.length === 1) t.grant();
    return t;
  }

  /** @internal */
  remove(t: Ticket): void {
    const i = this.entries.indexOf(t);
    if (i < 0) return;
    this.entries.splice(i, 1);
    if (i === 0 && this.entries.length > 0) this.entries[0].grant();
    this.schedule();
  }

  /** @internal Something changed: look again once the event loop has turned. */
  schedule(): void {
    if (this.scheduled || this.entries.length < 2) return;
    this.scheduled = true;
    void yieldToEventLoop().then(() => this.check());
  }

  private async check(): Promise<void> {
    this.scheduled = false;
    const head = this.entries[0];
    if (head?.idle && this.entries.some((e, i) => i > 0 && e.wanting)) await head.preempt();
  }
}

/** One call's place in a `SessionQueue`. */
export class Ticket {
  /** A generator its consumer is not pulling: not started, or suspended at a yield. */
  idle: boolean;
  /** Waiting for (or holding) its turn. */
  wanting: boolean;
  granted = false;
  preempted = false;
  /** Ends the generator holding this ticket (set once it has started). */
  cleanup?: () => Promise<unknown>;
  private readonly turnPromise: Promise<void>;
  private resolve!: () => void;

  constructor(
    private readonly queue: SessionQueue,
    generator: boolean,
  ) {
    this.idle = generator;
    this.wanting = !generator;
    this.turnPromise = new Promise<void>((r) => (this.resolve = r));
  }

  /** @internal */
  grant(): void {
    this.granted = true;
    this.resolve();
  }

  /** Resolves when this call may run; rejects if it was ended before it started. */
  turn(): Promise<void> {
    if (this.preempted) return Promise.reject(preemptedError());
    this.idle = false;
    this.wanting = true;
    this.queue.schedule();
    return this.turnPromise;
  }

  /** The generator is about to yield: it holds the session without running. */
  suspend(): void {
    this.idle = true;
    this.queue.schedule();
  }

  /** The consumer pulled again. Throws if a later call ended this generator meanwhile. */
  resume(): void {
    this.idle = false;
    if (this.preempted) throw preemptedError();
  }

  /** @internal */
  async preempt(): Promise<void> {
    this.preempted = true;
    try {
      await this.cleanup?.();
    } catch {
      // the generator's own failure is not the waiting call's problem
    }
    this.queue.remove(this);
  }

  release(): void {
    this.queue.remove(this);
  }
}

/**
 * A generator that holds `ticket`'s turn while it runs: `validate` runs at the first pull (bad
 * arguments fail without waiting for the turn); `start`, once the turn is granted, makes the inner
 * generator; `check` runs at the turn and at every resumption (disposed session, ...).
 */
export async function* queuedGenerator<T>(
  ticket: Ticket,
  validate: () => void,
  check: () => void,
  start: () => AsyncGenerator<T> | Promise<AsyncGenerator<T>>,
): AsyncGenerator<T> {
  let inner: AsyncGenerator<T> | undefined;
  try {
    validate();
    await ticket.turn();
    check();
    inner = await start();
    const it = inner;
    ticket.cleanup = () => it.return(undefined);
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      ticket.suspend();
      yield r.value;
      ticket.resume();
      check();
    }
  } finally {
    ticket.idle = false;
    // Ends the inner generator when the consumer stopped early (break) or an error ended this one.
    await inner?.return(undefined);
    ticket.release();
  }
}
