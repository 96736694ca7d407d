import type { Clock } from './clock.js';
import { cancelled, grantEnded, storeUnavailable, TrackerError, waitTimeout } from './errors.js';
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
  readonly service: string;
  /** The id its lock gets when granted. */
  readonly id: string;
  readonly ticket: number;
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
}

/**
 * This process's side of the wait queue: it sleeps until the store announces a change to
 * the service (or the safety re-check fires), then asks the store whether the request was
 * granted. The order itself lives in the store; nothing here decides who goes first.
 */
export function createWaitingRoom(store: LockStore, owner: string, options: WaitingRoomOptions) {
  const { clock } = options;
  const recheckMs = options.recheckMs ?? 1000;
  const sleepers = new Map<string, Set<() => void>>();
  const closing = new AbortController();
  let waiting = 0;
  let heartbeat: ReturnType<typeof setInterval> | undefined;

  // Subscribed from the start, not when the first request waits: on PostgreSQL that opens
  // the LISTEN connection, and a release announced while it was still connecting would
  // only be noticed at the next re-check.
  store.onChange((service) => {
    for (const resume of sleepers.get(service) ?? []) resume();
  });

  // Heartbeats only while someone waits.
  const enter = () => {
    if (waiting++ > 0) return;
    heartbeat = setInterval(() => {
      store.heartbeat(owner).catch(() => {
        // The store is unreachable: the waiters' lease runs on; the next beat may succeed.
      });
    }, WAITER_LEASE_MS / 3);
    heartbeat.unref?.();
  };
  const exit = () => {
    if (--waiting > 0) return;
    clearInterval(heartbeat);
  };

  /** Resolves on a change to `service`, after `ms`, or when `signal` aborts. */
  const sleep = (service: string, ms: number, signal: AbortSignal | undefined) =>
    new Promise<void>((resolve) => {
      const set = sleepers.get(service) ?? new Set();
      sleepers.set(service, set);
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0) sleepers.delete(service);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });

  /** Leaves the queue for good; a lock granted in the meantime is released (to the next). */
  const giveUp = async (queued: QueuedRequest) => {
    if (!(await store.leave(queued.ticket, queued.attempt))) {
      await store.release(queued.id, undefined, queued.attempt);
    }
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

    /** Sends every waiting request away (STORE_UNAVAILABLE, retry elsewhere): the process is stopping. */
    close(): void {
      closing.abort();
    },

    /**
     * Waits until the request is granted (resolves with its lock), `timeoutMs` passes
     * (rejects WAIT_TIMEOUT with the holder then) or `signal` aborts (leaves the queue at
     * once; rejects with the abort's reason when that is a TrackerError, e.g. the caller's
     * token was revoked, else CANCELLED). A lock granted to a request whose caller went away
     * is released again, so the next waiter gets it.
     */
    async waitFor(queued: QueuedRequest, timeoutMs: number, callerGone?: AbortSignal): Promise<Lock> {
      const deadline = clock.monotonicMs() + timeoutMs;
      const signal = callerGone ? AbortSignal.any([callerGone, closing.signal]) : closing.signal;
      /** Why the wait was cut short: the process stopping, a reason its caller gave, or the caller gone. */
      const interrupted = () => {
        if (closing.signal.aborted) return storeUnavailable(new Error('shutting down'));
        return callerGone?.reason instanceof TrackerError ? callerGone.reason : cancelled();
      };
      // Whether the request is out of the queue for good (left, or its lock handed back).
      let settled = false;
      enter();
      try {
        for (;;) {
          if (signal.aborted) {
            await giveUp(queued);
            settled = true;
            throw interrupted();
          }
          const granted = (await store.get(queued.id)) ?? (await store.settle(queued.service));
          if (granted?.id === queued.id) {
            settled = true;
            if (!signal.aborted) return granted;
            await store.release(granted.id, undefined, queued.attempt);
            throw interrupted();
          }
          const remaining = deadline - clock.monotonicMs();
          if (remaining <= 0) {
            const left = await store.leave(queued.ticket, queued.attempt);
            settled = true;
            if (left) throw waitTimeout((await store.queue(queued.service)).holder ?? queued.holder);
            // Granted between the last look and leaving: the wait succeeded after all...
            const lock = await store.get(queued.id);
            if (lock) return lock;
            // ...unless that lock already ended (a lost notification hid the grant until
            // the deadline, and the lease ran out or an operator force-released it): the
            // request was granted, so a timeout would be a lie.
            if (await wasGranted(store, queued)) throw grantEnded(queued.id);
            throw waitTimeout(queued.holder);
          }
          await sleep(queued.service, Math.min(remaining, recheckMs), signal);
        }
      } catch (error) {
        if (!settled) abandon(queued);
        throw error;
      } finally {
        exit();
      }
    },
  };
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
      if (event.lockId !== queued.id) continue;
      if (event.type === 'acquired') return true;
      if (event.type === 'queued') return false;
    }
    const oldest = events.at(-1);
    if (!oldest || events.length < GRANT_LOOKBACK_PAGE) return false;
    before = oldest.id;
  }
  return false;
}
