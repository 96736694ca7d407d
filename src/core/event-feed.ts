import type { Lock, LockEventRecord } from './lock.js';
import type { LockStore } from './lock-store.js';

/** What a watcher receives: first a snapshot, then every event after it, in id order. */
export type FeedMessage =
  /** Every held lock (of the watched service); events after `eventId` follow. */
  | { readonly kind: 'snapshot'; readonly eventId: number; readonly locks: readonly Lock[] }
  | { readonly kind: 'event'; readonly event: LockEventRecord };

export interface WatchRequest {
  /** Only this service's locks and events. */
  readonly service?: string | undefined;
  /**
   * Resume after this event id (SSE's Last-Event-ID): the events after it follow, without a
   * snapshot. When they are no longer all retained, a snapshot is sent instead.
   */
  readonly after?: number | undefined;
  /** Only services this accepts (a token limited to some services); undefined: all. */
  readonly allow?: ((service: string) => boolean) | undefined;
}

export interface EventFeedOptions {
  readonly store: LockStore;
  /** How often the tail reads new events while anyone watches, in ms (default 250). */
  readonly pollMs?: number;
  /** Recent events kept in memory for watchers that resume (default 10,000). */
  readonly bufferSize?: number;
  /** A failed read of the history (the tail retries at the next poll). */
  readonly onError?: (error: unknown) => void;
}

/** Pages of 1000 events at most per read; a resume replays at most this many pages from the store. */
const PAGE = 1000;
const MAX_REPLAY_PAGES = 100;

interface Watcher {
  readonly service: string | undefined;
  readonly allow: ((service: string) => boolean) | undefined;
  readonly send: (message: FeedMessage) => void;
  /** Receives the tail's events once its snapshot or replay is sent. */
  live: boolean;
}

/**
 * One tail of the store's history per process, shared by every watcher (SSE and gRPC
 * streams, the dashboard). The tail reads the events after its cursor every `pollMs` and
 * whenever this process changed something (`kick`), so a change made through any replica
 * reaches every watcher on every replica; `readEvents` guarantees the tail never skips an
 * event that commits late. It runs only while someone watches.
 *
 * A new watcher gets a snapshot of the held locks read after the tail's cursor, then the
 * events after that cursor: the snapshot may already show some of them, so clients apply
 * events as idempotent upserts and deletes. A watcher that resumes after an event id gets
 * the events after it from memory or the store, with no snapshot, as long as the history
 * still holds them all.
 */
export function createEventFeed({ store, pollMs = 250, bufferSize = 10_000, onError }: EventFeedOptions) {
  const watchers = new Set<Watcher>();
  /** Every event with an id in (bufferStart, cursor], ascending. */
  let buffer: LockEventRecord[] = [];
  let bufferStart = 0;
  let cursor = 0;
  let started: Promise<void> | null = null;
  let timer: ReturnType<typeof setInterval> | null = null;
  let reading: Promise<void> | null = null;
  let again = false;
  let closed = false;

  const matches = (watcher: Watcher, service: string) =>
    (watcher.service === undefined || watcher.service === service) && (watcher.allow?.(service) ?? true);

  const deliver = (watcher: Watcher, event: LockEventRecord) => {
    if (matches(watcher, event.service)) watcher.send({ kind: 'event', event });
  };

  /** Reads what is new, once at a time; a call while reading makes that read go round again. */
  const tail = (): Promise<void> => {
    if (reading) {
      again = true;
      return reading;
    }
    reading = (async () => {
      do {
        again = false;
        // Bounded per round: a backlog larger than this is read on the next rounds.
        for (let page = 0; page < 20 && started; page++) {
          const events = await store.readEvents(cursor, PAGE, cursor);
          for (const event of events) {
            buffer.push(event);
            for (const watcher of watchers) if (watcher.live) deliver(watcher, event);
          }
          cursor = events.at(-1)?.id ?? cursor;
          if (buffer.length > bufferSize) {
            const drop = buffer.length - bufferSize;
            bufferStart = buffer[drop - 1]?.id ?? bufferStart;
            buffer = buffer.slice(drop);
          }
          if (events.length < PAGE) break;
        }
      } while (again && started);
    })()
      .catch((error: unknown) => onError?.(error))
      .finally(() => {
        reading = null;
      });
    return reading;
  };

  /** Counts starts and stops, so that a start outlived by a stop does nothing. */
  let generation = 0;
  const start = (): Promise<void> => {
    if (started) return started;
    const mine = ++generation;
    const starting: Promise<void> = (async () => {
      const at = await store.eventCursor();
      // Stopped meanwhile (the last watcher left): nothing to start.
      if (generation !== mine) return;
      cursor = at;
      bufferStart = at;
      buffer = [];
      timer = setInterval(() => void tail(), pollMs);
      timer.unref?.();
    })().catch((error: unknown) => {
      if (started === starting) started = null;
      throw error;
    });
    started = starting;
    return starting;
  };

  /** With nobody watching, the tail stops; the next watcher starts it from a fresh cursor. */
  const stopIfIdle = () => {
    if (watchers.size > 0 || !started) return;
    if (timer) clearInterval(timer);
    timer = null;
    started = null;
    generation++;
    buffer = [];
  };

  /**
   * Events in (after, cursor] from the buffer, and the watcher goes live in the same
   * synchronous step, so that no event falls between the two; false when the buffer no
   * longer reaches back that far.
   */
  const replayBuffer = (watcher: Watcher, after: number): boolean => {
    if (after < bufferStart) return false;
    for (const event of buffer) if (event.id > after) deliver(watcher, event);
    watcher.live = true;
    return true;
  };

  /** Events in (after, cursor] from the store and then the buffer; false when too many. */
  const replayStore = async (watcher: Watcher, after: number): Promise<boolean> => {
    let position = after;
    for (let page = 0; page < MAX_REPLAY_PAGES; page++) {
      if (replayBuffer(watcher, position)) return true;
      // Ids up to bufferStart are final: the tail went past them.
      const events = await store.readEvents(position, PAGE, bufferStart);
      for (const event of events) if (event.id <= bufferStart) deliver(watcher, event);
      position = Math.min(events.at(-1)?.id ?? bufferStart, bufferStart);
      if (events.length === 0) position = bufferStart;
    }
    return false;
  };

  const sendSnapshot = async (watcher: Watcher): Promise<void> => {
    // Bounded: a snapshot read outrun by more than a buffer's worth of events is read again.
    for (let attempt = 0; attempt < 5; attempt++) {
      const at = cursor;
      const locks = (await store.snapshot(watcher.service)).filter((lock) => matches(watcher, lock.service));
      if (at < bufferStart) continue;
      watcher.send({ kind: 'snapshot', eventId: at, locks });
      replayBuffer(watcher, at);
      return;
    }
    throw new Error('the history moves faster than a snapshot can be read');
  };

  return {
    /**
     * Starts sending to `send`: a snapshot (or a resume), then every event. Resolves once
     * the watcher is live; returns the function that stops it. Rejects (STORE_UNAVAILABLE)
     * when the store cannot be read; nothing was sent then.
     */
    async watch(request: WatchRequest, send: (message: FeedMessage) => void): Promise<() => void> {
      if (closed) throw new Error('the event feed is closed');
      const watcher: Watcher = { service: request.service, allow: request.allow, send, live: false };
      watchers.add(watcher);
      const stop = () => {
        watchers.delete(watcher);
        stopIfIdle();
      };
      try {
        await start();
        await tail();
        const after = request.after;
        const resumed =
          after !== undefined &&
          after <= cursor &&
          after >= (await store.historyFloor()) &&
          (replayBuffer(watcher, after) || (await replayStore(watcher, after)));
        if (!resumed) await sendSnapshot(watcher);
        return stop;
      } catch (error) {
        stop();
        throw error;
      }
    },

    /** This process changed something: read the news now rather than at the next poll. */
    kick(): void {
      if (started && watchers.size > 0) void tail();
    },

    /** How many watchers are connected. */
    get watchers(): number {
      return watchers.size;
    },

    /** Stops the tail; watchers get nothing more (their transports close them). */
    close(): void {
      closed = true;
      watchers.clear();
      stopIfIdle();
    },
  };
}

export type EventFeed = ReturnType<typeof createEventFeed>;
