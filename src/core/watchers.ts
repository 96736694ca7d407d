import { type TrackerError, tooManyWatchers, watcherTooSlow } from './errors.js';

/** What watch streams may hold, per process (both transports together). */
export interface WatchLimits {
  /** Most open watch streams. */
  readonly maxWatchers: number;
  /** Most open watch streams of one token (authentication on) or one client address (off). */
  readonly maxWatchersPerCaller: number;
  /** Bytes one stream may have written but not yet sent, past which it is dropped. */
  readonly maxBufferedBytes: number;
  /** Bytes all streams together may have waiting; past it, the one with most waiting is dropped. */
  readonly maxTotalBufferedBytes: number;
}

export const DEFAULT_WATCH_LIMITS: WatchLimits = {
  maxWatchers: 1000,
  maxWatchersPerCaller: 100,
  maxBufferedBytes: 4 * 1024 * 1024,
  maxTotalBufferedBytes: 64 * 1024 * 1024,
};

/**
 * A snapshot or replay sends its next page once its stream has less than this waiting
 * (never more than a quarter of the stream's limit), so a slow reader slows the sending down
 * instead of filling memory.
 */
const LOW_WATER_BYTES = 256 * 1024;

/** One open stream's share: what it has waiting, and how to drop it. */
export interface WatcherSlot {
  /** A message of `bytes` was written (not yet sent). May drop this stream, or the slowest. */
  queued(bytes: number): void;
  /** A message of `bytes` went out. */
  sent(bytes: number): void;
  /** Resolves once little is waiting (or the stream is dropped or closed). */
  drained(): Promise<void>;
  /** The stream ended: its place and its bytes are given back. Idempotent. */
  close(): void;
}

/**
 * The streams' bookkeeping, shared by SSE and gRPC: how many are open (in total and per
 * caller), and how much each has waiting in memory. A stream is opened with `drop`, which
 * ends it with the reason given (the transport sends the reason as its last message, so the
 * client sees why and resumes from its last event id).
 */
export function createWatcherRegistry(limits: WatchLimits) {
  const lowWater = Math.min(LOW_WATER_BYTES, Math.floor(limits.maxBufferedBytes / 4));
  const perCaller = new Map<string, number>();
  const open = new Set<Slot>();
  let total = 0;
  let dropped = 0;

  class Slot implements WatcherSlot {
    waiting = 0;
    #closed = false;
    #waiters: (() => void)[] = [];

    constructor(
      readonly caller: string,
      readonly drop: (reason: TrackerError) => void,
    ) {}

    queued(bytes: number): void {
      if (this.#closed) return;
      this.waiting += bytes;
      total += bytes;
      if (this.waiting > limits.maxBufferedBytes) {
        this.#dropFor(watcherTooSlow(this.waiting, `its limit of ${limits.maxBufferedBytes} bytes`));
        return;
      }
      if (total > limits.maxTotalBufferedBytes) {
        let slowest: Slot = this;
        for (const slot of open) if (slot.waiting > slowest.waiting) slowest = slot;
        slowest.#dropFor(
          watcherTooSlow(
            slowest.waiting,
            `the server's limit of ${limits.maxTotalBufferedBytes} bytes for all watchers`,
          ),
        );
      }
    }

    sent(bytes: number): void {
      const was = this.waiting;
      this.waiting = Math.max(0, this.waiting - bytes);
      total -= was - this.waiting;
      if (this.waiting <= lowWater) this.#wake();
    }

    drained(): Promise<void> {
      if (this.#closed || this.waiting <= lowWater) return Promise.resolve();
      return new Promise((resolve) => this.#waiters.push(resolve));
    }

    close(): void {
      if (this.#closed) return;
      this.#closed = true;
      open.delete(this);
      total -= this.waiting;
      this.waiting = 0;
      const left = (perCaller.get(this.caller) ?? 1) - 1;
      if (left === 0) perCaller.delete(this.caller);
      else perCaller.set(this.caller, left);
      this.#wake();
    }

    #dropFor(reason: TrackerError): void {
      dropped++;
      this.drop(reason);
      this.close();
    }

    #wake(): void {
      for (const resolve of this.#waiters.splice(0)) resolve();
    }
  }

  return {
    /**
     * Opens a stream for `caller` (a token's name or a client's address); throws
     * TOO_MANY_WATCHERS when the process or the caller has its most streams open.
     */
    open(caller: string, drop: (reason: TrackerError) => void): WatcherSlot {
      if (open.size >= limits.maxWatchers) throw tooManyWatchers('the server', limits.maxWatchers);
      const mine = perCaller.get(caller) ?? 0;
      if (mine >= limits.maxWatchersPerCaller)
        throw tooManyWatchers('this caller', limits.maxWatchersPerCaller);
      perCaller.set(caller, mine + 1);
      const slot = new Slot(caller, drop);
      open.add(slot);
      return slot;
    },
    /** Open streams. */
    get size(): number {
      return open.size;
    },
    /** Bytes waiting in all streams. */
    get bufferedBytes(): number {
      return total;
    },
    /** Streams dropped for being too slow, since the start. */
    get dropped(): number {
      return dropped;
    },
  };
}

export type WatcherRegistry = ReturnType<typeof createWatcherRegistry>;
