import type { Clock } from './clock.js';
import { cancelled, grantEnded, storeUnavailable, TrackerError, waitTimeout } from './errors.js';
import { compareRequests } from './grants.js';
import type { Lock } from './lock.js';
import { type LockStore, WAITER_LEASE_MS } from './lock-store.js';

/** How often, and how many times, a failed wait tries to leave the queue in the background. */
const ABANDON_RETRY_MS = 1000;
const ABANDON_ATTEMPTS = 300;

/** How far back (in events of its service) a timed-out wait looks for its own grant. */
const GRANT_LOOKBACK_PAGE = 200;
const GRANT_LOOKBACK_PAGES = 25;

/** A request that joined a service's queue. */
export interface QueuedRequest {
  /** Its first claim's service (or label): what a timeout reports. */
  readonly service: string;
  /** Every service it may be granted: its lines here, and what it settles. */
  readonly services: readonly string[];
  /** The id its lock gets when granted (a group's id). */
  readonly id: string;
  readonly ticket: number;
  readonly priority: number;
  /** A group: its locks have their own ids and `groupId` = id. */
  readonly group: boolean;
  /** The holder when it joined; reported on a timeout if the store no longer knows one. */
  readonly holder: Lock;
  /**
   * With an idempotency key: this request's attempt. A retry of it may take its place in
   * the queue; then this request neither leaves nor releases anything on its way out.
   */
  readonly attempt?: string | undefined;
}

export interface WaitingRoomOptions {
  /** Deadlines are measured on its monotonic time. */
  readonly clock: Clock;
  /**
   * Slow safety re-check while waiting, in ms: wake-ups come from the store's change
   * notifications; this only covers a notification lost (e.g. during a reconnect) or a
   * holder's expiry, which nothing announces.
   */
  readonly recheckMs?: number | undefined;
  /** How often the waiters' lease is renewed, in ms (default WAITER_LEASE_MS / 3). */
  readonly heartbeatMs?: number | undefined;
  /** Most requests this process lets wait at once (claim); undefined: no limit. */
  readonly maxWaiters?: number | undefined;
}

/**
 * This process's side of the wait queue: it sleeps until the store announces a change to
 * the service (or the safety re-check fires), then asks the store whether the request was
 * granted. The order itself lives in the store; nothing here decides who goes first.
 */
export function createWaitingRoom(store: LockStore, owner: string, options: WaitingRoomOptions) {
  const { clock } = options;
  const recheckMs = options.recheckMs ?? 1000;
  const maxWaiters = options.maxWaiters ?? Number.POSITIVE_INFINITY;
  const heartbeatMs = options.heartbeatMs ?? WAITER_LEASE_MS / 3;
  /** This process's waiting requests per service, in ticket order (the store's order). */
  const lines = new Map<string, Sleeper[]>();
  /** The same requests by the id their lock gets. */
  const byLockId = new Map<string, Sleeper>();
  const closing = new AbortController();
  let waiting = 0;
  let heartbeat: ReturnType<typeof setInterval> | undefined;
  let lastBeat = clock.monotonicMs();

  /** Wakes the first request of a service's line (and any retry sharing its ticket). */
  const wakeHead = (service: string) => {
    const line = lines.get(service);
    const head = line?.[0];
    if (!line || !head) return;
    for (const sleeper of line) {
      if (sleeper.ticket !== head.ticket) break;
      sleeper.wake();
    }
  };
  const wakeAll = () => {
    for (const line of lines.values()) for (const sleeper of line) sleeper.wake();
  };

  // Subscribed from the start, not when the first request waits: on PostgreSQL that opens
  // the LISTEN connection, and a release announced while it was still connecting would
  // only be noticed at the next re-check. A change wakes one request, whatever the line's
  // length: the store grants in ticket order, so only the first of ours can be next.
  store.onChange(wakeHead);

  // Heartbeats only while someone waits. When two beats in a row failed (the store could not
  // be reached, or this process stalled), some of ours may have been dropped from its queue, and the order this
  // process keeps may no longer be the store's: then every request looks again, once.
  const beat = () => {
    store.heartbeat(owner).then(
      () => {
        const now = clock.monotonicMs();
        const lapsed = now - lastBeat >= 2 * heartbeatMs;
        lastBeat = now;
        if (lapsed) wakeAll();
      },
      () => {
        // The store is unreachable: the waiters' lease runs on; the next beat may succeed.
      },
    );
  };
  const enter = () => {
    if (waiting++ > 0) return;
    lastBeat = clock.monotonicMs();
    heartbeat = setInterval(beat, heartbeatMs);
    heartbeat.unref?.();
  };
  const exit = () => {
    if (--waiting > 0) return;
    clearInterval(heartbeat);
  };

  /** Puts a request in the line of each service it may be granted, in the store's grant order. */
  const join = (queued: QueuedRequest): Sleeper => {
    const sleeper = new Sleeper(queued.ticket, queued.priority);
    for (const service of queued.services) {
      const line = lines.get(service) ?? [];
      lines.set(service, line);
      // Requests mostly join in order: search from the end.
      let at = line.length;
      while (at > 0 && compareRequests(line[at - 1] ?? sleeper, sleeper) > 0) at--;
      line.splice(at, 0, sleeper);
    }
    byLockId.set(queued.id, sleeper);
    return sleeper;
  };
  /** Takes a request out of its lines; where it was first, the next one takes its turn to look. */
  const part = (queued: QueuedRequest, sleeper: Sleeper) => {
    if (byLockId.get(queued.id) === sleeper) byLockId.delete(queued.id);
    for (const service of queued.services) {
      const line = lines.get(service);
      if (!line) continue;
      const at = line.indexOf(sleeper);
      if (at >= 0) line.splice(at, 1);
      if (line.length === 0) lines.delete(service);
      else if (at === 0) wakeHead(service);
    }
  };
  /** Whether it is first of this process's requests in one of its lines. */
  const isFirst = (queued: QueuedRequest, sleeper: Sleeper) =>
    queued.services.some((service) => lines.get(service)?.[0]?.ticket === sleeper.ticket);

  /**
   * Thousands of callers may go at once (a CI fleet cancelled). Each leaves in a turn of the
   * event loop of its own, one after the other, so that other requests are served between
   * them rather than after them all: the store's calls need not yield (SQLite's are
   * synchronous), and immediates queued together all run before the next poll for I/O.
   */
  let turns: Promise<void> = Promise.resolve();
  const nextTurn = (): Promise<void> => {
    turns = turns.then(() => new Promise<void>((resolve) => setImmediate(resolve)));
    return turns;
  };

  /** Hands back what the request was granted. */
  const handBack = async (queued: QueuedRequest) => {
    if (queued.group) await store.releaseGroup(queued.id);
    else await store.release(queued.id, undefined, queued.attempt);
  };
  /** Leaves the queue for good; a lock granted in the meantime is released (to the next). */
  const giveUp = async (queued: QueuedRequest) => {
    if (!(await store.leave(queued.ticket, queued.attempt))) await handBack(queued);
  };

  /**
   * A wait that failed (the store could not be reached) answered its caller with an error,
   * but its row may still be in the queue, kept alive by this process's heartbeat for its
   * other waiters, and could be granted a lock nobody knows of. Leave the queue (or release
   * the lock granted meanwhile) as soon as the store answers again: every second, for up to
   * ABANDON_ATTEMPTS seconds, in the background.
   */
  const abandon = (queued: QueuedRequest, attempt = 1) => {
    giveUp(queued).catch(() => {
      if (attempt >= ABANDON_ATTEMPTS) return;
      setTimeout(() => abandon(queued, attempt + 1), ABANDON_RETRY_MS).unref?.();
    });
  };

  return {
    owner,

    /** Requests of this process waiting now. */
    get size(): number {
      return waiting;
    },

    /**
     * Claims a place for one more waiting request: 'within-limit' only while fewer than the
     * process's --max-waiters wait (false otherwise), 'over-limit' always (a request already in
     * line, such as a retry's earlier attempt). A claim is given back by `waitFor`, or by
     * `unclaim` when the request did not queue after all.
     */
    claim(limit: 'within-limit' | 'over-limit'): boolean {
      if (limit === 'within-limit' && waiting >= maxWaiters) return false;
      enter();
      return true;
    },
    unclaim(): void {
      exit();
    },

    /** Sends every waiting request away (STORE_UNAVAILABLE, retry elsewhere): the process is stopping. */
    close(): void {
      closing.abort();
    },

    /**
     * Waits until the request is granted (resolves with its lock), `timeoutMs` passes
     * (rejects WAIT_TIMEOUT with the holder then) or `signal` aborts (leaves the queue at
     * once; rejects with the abort's reason when that is a TrackerError, e.g. the caller's
     * token was revoked, else CANCELLED). A lock granted to a request whose caller went away
     * is released again, so the next waiter gets it. The request must hold a `claim`, which
     * this gives back.
     *
     * Only the first of this process's requests in a service's line looks at the store when
     * the store announces a change (and at the safety re-check); the others sleep until their
     * turn or their deadline. So a grant, a release or a request leaving costs the same few
     * reads however long the line is.
     */
    async waitFor(
      queued: QueuedRequest,
      timeoutMs: number,
      callerGone?: AbortSignal,
    ): Promise<readonly Lock[]> {
      const deadline = clock.monotonicMs() + timeoutMs;
      const signal = callerGone ? AbortSignal.any([callerGone, closing.signal]) : closing.signal;
      const sleeper = join(queued);
      /** Why the wait was cut short: the process stopping, a reason its caller gave, or the caller gone. */
      const interrupted = () => {
        if (closing.signal.aborted) return storeUnavailable(new Error('shutting down'));
        return callerGone?.reason instanceof TrackerError ? callerGone.reason : cancelled();
      };
      // Whether the request is out of the queue for good (left, or its lock handed back).
      let settled = false;
      try {
        for (;;) {
          sleeper.poked = false;
          if (signal.aborted) {
            await nextTurn();
            await giveUp(queued);
            settled = true;
            throw interrupted();
          }
          let mine = await store.granted(queued.id);
          if (mine.length === 0) {
            const granted = await store.settle(queued.services);
            // The store granted another of ours (ours ahead of it were dropped): tell it.
            if (granted) byLockId.get(granted.groupId ?? granted.id)?.wake();
            if (granted?.id === queued.id || granted?.groupId === queued.id)
              mine = await store.granted(queued.id);
          }
          if (mine.length > 0) {
            settled = true;
            if (!signal.aborted) return mine;
            await handBack(queued);
            throw interrupted();
          }
          const remaining = deadline - clock.monotonicMs();
          if (remaining <= 0) {
            const left = await store.leave(queued.ticket, queued.attempt);
            settled = true;
            if (left) {
              const now = await store.queue(queued.services[0] ?? queued.service);
              throw waitTimeout(now.holder ?? queued.holder, now.holder ? now.holders : [queued.holder]);
            }
            // Granted between the last look and leaving: the wait succeeded after all...
            const locks = await store.granted(queued.id);
            if (locks.length > 0) return locks;
            // ...unless that lock already ended (a lost notification hid the grant until
            // the deadline, and the lease ran out or an operator force-released it): the
            // request was granted, so a timeout would be a lie.
            if (await wasGranted(store, queued)) throw grantEnded(queued.id);
            throw waitTimeout(queued.holder);
          }
          // The first in line re-checks now and then (a lost notification, an expiry that
          // nothing announces); the others wait to be woken, or for their deadline.
          const nap = isFirst(queued, sleeper) ? Math.min(remaining, recheckMs) : remaining;
          await sleeper.sleep(nap, signal);
        }
      } catch (error) {
        if (!settled) abandon(queued);
        throw error;
      } finally {
        part(queued, sleeper);
        exit();
      }
    },
  };
}

/** One waiting request's alarm: woken by a change, its timer or its caller leaving. */
class Sleeper {
  /** Woken since it last looked at the store: the next sleep returns at once. */
  poked = false;
  #resolve: (() => void) | null = null;

  constructor(
    readonly ticket: number,
    readonly priority: number,
  ) {}

  wake(): void {
    this.poked = true;
    this.#resolve?.();
  }

  /** Resolves after `ms`, when woken, or when `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void> {
    if (this.poked || signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.#resolve = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
      this.#resolve = done;
    });
  }
}

export type WaitingRoom = ReturnType<typeof createWaitingRoom>;

/**
 * Whether the request was granted its lock: the service's history, newest first, back to the
 * request's joining the queue (a wait lasts seconds, so a few pages at most).
 */
async function wasGranted(store: LockStore, queued: QueuedRequest): Promise<boolean> {
  let before: number | undefined;
  for (let page = 0; page < GRANT_LOOKBACK_PAGES; page++) {
    const events = await store.history({ service: queued.service, before, limit: GRANT_LOOKBACK_PAGE });
    for (const event of events) {
      if (event.lockId !== queued.id && event.groupId !== queued.id) continue;
      if (event.type === 'acquired') return true;
      if (event.type === 'queued') return false;
    }
    const oldest = events.at(-1);
    if (!oldest || events.length < GRANT_LOOKBACK_PAGE) return false;
    before = oldest.id;
  }
  return false;
}
