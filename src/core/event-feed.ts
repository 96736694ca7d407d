import type { Lock, LockEventRecord } from './lock.js';
import type { LockStore } from './lock-store.js';

/** What a watcher receives: first a snapshot, then every event after it, in id order. */
export type FeedMessage =
  /**
   * The held locks (of the watched service), a page at a time: the first page (`continued`
   * false) starts a new state, each next one adds to it, and the last (`more` false) is
   * followed by the events after `eventId`.
   */
  | {
      readonly kind: 'snapshot';
      readonly eventId: number;
      readonly locks: readonly Lock[];
      readonly continued: boolean;
      readonly more: boolean;
    }
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
  /**
   * Resolves when the stream has sent most of what it was given: a snapshot or a replay
   * sends its next page only then, so a slow reader never has more than a page waiting.
   */
  readonly drained?: (() => Promise<void>) | undefined;
}

export interface EventFeedOptions {
  readonly store: LockStore;
  /**
   * How often the tail reads new events while anyone watches, in ms (default 250). With a
   * store that announces news of its history (`onEvents`), this is only a safety net for a
   * notification lost while the store's channel reconnected, and can be long.
   */
  readonly pollMs?: number;
  /** Recent events kept in memory for watchers that resume (default 10,000). */
  readonly bufferSize?: number;
  /** A failed read of the history (the tail retries at the next poll). */
  readonly onError?: (error: unknown) => void;
  /**
   * Pages of events (PAGE each) a resume may replay (default 10); one further behind gets a
   * fresh snapshot, which costs no more than the held locks.
   */
  readonly replayPages?: number;
}

/** Events per read, and per page of a replay. */
const PAGE = 1000;
/** Locks per snapshot message: well under gRPC's default 4 MiB per message at the longest names. */
export const SNAPSHOT_PAGE = 500;
/** A snapshot outrun by the history (a very slow reader) is read again at most this often. */
const SNAPSHOT_ATTEMPTS = 3;

interface Watcher {
  readonly service: string | undefined;
  readonly allow: ((service: string) => boolean) | undefined;
  readonly send: (message: FeedMessage) => void;
  readonly drained: () => Promise<void>;
  /** Receives the tail's events once its snapshot or replay is sent. */
  live: boolean;
}

/**
 * One tail of the store's history per process, shared by every watcher (SSE and gRPC
 * streams, the dashboard). The tail reads the events after its cursor whenever this process
 * changed something (`kick`), whenever the store announces that any process recorded events
 * (`onEvents`: PostgreSQL's NOTIFY, so a change made through any replica reaches every
 * watcher on every replica at once), and every `pollMs` (the only way for a store that
 * announces nothing; a safety net otherwise). `readEvents` guarantees the tail never skips
 * an event that commits late. It runs only while someone watches.
 *
 * A new watcher gets a snapshot of the held locks read after the tail's cursor, then the
 * events after that cursor: the snapshot may already show some of them, so clients apply
 * events as idempotent upserts and deletes. A watcher that resumes after an event id gets
 * the events after it from memory or the store, with no snapshot, as long as the history
 * still holds them all.
 */
export function createEventFeed({
  store,
  pollMs = 250,
  bufferSize = 10_000,
  onError,
  replayPages = 10,
}: EventFeedOptions) {
  const watchers = new Set<Watcher>();
  /**
   * The same watchers by what they watch: each event goes to those of every service and to
   * those of its own, never through the whole crowd (a thousand dashboards, each on its own
   * service, cost an event two map reads, not a thousand checks).
   */
  const everything = new Set<Watcher>();
  const byService = new Map<string, Set<Watcher>>();
  const index = (watcher: Watcher, add: boolean) => {
    const service = watcher.service;
    if (service === undefined) {
      if (add) everything.add(watcher);
      else everything.delete(watcher);
      return;
    }
    let group = byService.get(service);
    if (add) {
      if (!group) {
        group = new Set();
        byService.set(service, group);
      }
      group.add(watcher);
    } else if (group) {
      group.delete(watcher);
      if (group.size === 0) byService.delete(service);
    }
  };
  /** Every event with an id in (bufferStart, cursor], ascending. */
  let buffer: LockEventRecord[] = [];
  let bufferStart = 0;
  let cursor = 0;
  let started: Promise<void> | null = null;
  let timer: ReturnType<typeof setInterval> | null = null;
  let unsubscribe: (() => void) | null = null;
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
            for (const watcher of everything) if (watcher.live) deliver(watcher, event);
            const named = byService.get(event.service);
            if (named) for (const watcher of named) if (watcher.live) deliver(watcher, event);
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
      // Read at once on news from the store: calls while a read runs fold into one more read.
      unsubscribe =
        store.onEvents?.(() => {
          if (started && watchers.size > 0) void tail();
        }) ?? null;
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
    unsubscribe?.();
    unsubscribe = null;
    started = null;
    generation++;
    buffer = [];
  };

  /** The position in the buffer of the first event with an id above `after`. */
  const bufferIndexAfter = (after: number): number => {
    let low = 0;
    let high = buffer.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((buffer[middle]?.id ?? 0) <= after) low = middle + 1;
      else high = middle;
    }
    return low;
  };

  /**
   * Sends the events after `after` (from the store while they are older than the buffer,
   * then from the buffer), a page at a time, each page once the stream has drained the
   * last. The last page from the buffer and going live happen in one synchronous step, so no
   * event falls between the two. False when that takes more than replayPages pages.
   */
  const catchUp = async (watcher: Watcher, after: number): Promise<boolean> => {
    let position = after;
    for (let page = 0; page < replayPages; page++) {
      if (page > 0) await watcher.drained();
      if (position >= bufferStart) {
        const from = bufferIndexAfter(position);
        const chunk = buffer.slice(from, from + PAGE);
        for (const event of chunk) deliver(watcher, event);
        if (from + PAGE >= buffer.length) {
          watcher.live = true;
          return true;
        }
        position = chunk.at(-1)?.id ?? position;
        continue;
      }
      // Ids up to bufferStart are final: the tail went past them.
      const events = await store.readEvents(position, PAGE, bufferStart);
      for (const event of events) if (event.id <= bufferStart) deliver(watcher, event);
      position = Math.min(events.at(-1)?.id ?? bufferStart, bufferStart);
      if (events.length === 0) position = bufferStart;
    }
    return false;
  };

  /**
   * The held locks a page at a time (each page once the stream has drained the last), then
   * the events since the snapshot began. Pages read at different moments may each show
   * changes that the events after `eventId` then repeat: clients apply events as upserts and
   * deletes, so the result is exact.
   */
  const sendSnapshot = async (watcher: Watcher): Promise<void> => {
    for (let attempt = 0; attempt < SNAPSHOT_ATTEMPTS; attempt++) {
      const at = cursor;
      let after = '';
      for (let page = 0; ; page++) {
        if (page > 0) await watcher.drained();
        const locks = await store.snapshotPage({ service: watcher.service, after, limit: SNAPSHOT_PAGE });
        const more = locks.length === SNAPSHOT_PAGE;
        watcher.send({
          kind: 'snapshot',
          eventId: at,
          locks: locks.filter((lock) => matches(watcher, lock.service)),
          continued: page > 0,
          more,
        });
        if (!more) break;
        after = locks.at(-1)?.id ?? after;
      }
      if (at >= (await store.historyFloor()) && (await catchUp(watcher, at))) return;
    }
    throw new Error('the history moves faster than this watcher reads a snapshot');
  };

  return {
    /**
     * Starts sending to `send`: a snapshot (or a resume), then every event. Resolves once
     * the watcher is live; returns the function that stops it. Rejects (STORE_UNAVAILABLE)
     * when the store cannot be read; nothing was sent then.
     */
    async watch(request: WatchRequest, send: (message: FeedMessage) => void): Promise<() => void> {
      if (closed) throw new Error('the event feed is closed');
      const watcher: Watcher = {
        service: request.service,
        allow: request.allow,
        send,
        drained: request.drained ?? (() => Promise.resolve()),
        live: false,
      };
      watchers.add(watcher);
      index(watcher, true);
      const stop = () => {
        watchers.delete(watcher);
        index(watcher, false);
        stopIfIdle();
      };
      try {
        await start();
        await tail();
        const after = request.after;
        // Ids grow by one per event (a few may be skipped): one further back than a replay
        // sends gets the snapshot at once, rather than pages of events and then a snapshot.
        const resumed =
          after !== undefined &&
          after <= cursor &&
          cursor - after <= replayPages * PAGE &&
          after >= (await store.historyFloor()) &&
          (await catchUp(watcher, after));
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
      everything.clear();
      byService.clear();
      stopIfIdle();
    },
  };
}

export type EventFeed = ReturnType<typeof createEventFeed>;
