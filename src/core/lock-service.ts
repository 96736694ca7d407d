import { type Caller, hasScope, mayUseService, requireScope, requireService } from './auth.js';
import {
  ErrorCode,
  invalidArgument,
  lockHeld,
  lockNotFound,
  lockNotHeld,
  permissionDenied,
  queueFull,
  TrackerError,
  tooManyLocks,
} from './errors.js';
import {
  CONTROL_CHARACTERS,
  DEFAULT_HISTORY_LIMIT,
  DEFAULT_PER_PAGE,
  isLockId,
  type Lock,
  type LockEventRecord,
  type LockPage,
  MAX_HISTORY_LIMIT,
  MAX_NAME_LENGTH,
  MAX_PER_PAGE,
  MAX_REASON_LENGTH,
  MAX_TTL_SECONDS,
  type Queue,
} from './lock.js';
import type { LockStore } from './lock-store.js';
import { createWaitingRoom } from './waiting-room.js';

/** Longest a request may wait in a queue. */
export const MAX_WAIT_SECONDS = 3600;

/** How an acquire waits; both optional. */
export interface WaitOptions {
  /** 0 (default): answer at once, as the guide does; up to MAX_WAIT_SECONDS. */
  readonly waitSeconds?: number | undefined;
  /** Aborts when the caller goes away: the request leaves the queue at once. */
  readonly signal?: AbortSignal | undefined;
  /** The caller's own deadline (epoch ms, e.g. a gRPC call's): it also bounds the wait. */
  readonly deadline?: number | undefined;
}

/** How an acquire that did not get the lock ended. */
export type Refusal = 'held' | 'timeout' | 'cancelled' | 'failed';

/**
 * Something this process did to a lock; logs and metrics subscribe to these. (The history
 * and watchers use the store's own record, which covers every process.)
 */
export type LockEvent =
  /** `ms`: how long the acquire took, a wait in the queue included; `waited`: it queued. */
  | { readonly type: 'acquired'; readonly lock: Lock; readonly ms: number; readonly waited: boolean }
  | {
      readonly type: 'refused';
      readonly service: string;
      readonly who: string;
      readonly reason: Refusal;
      readonly ms: number;
    }
  | { readonly type: 'released' | 'renewed' | 'expired'; readonly lock: Lock }
  | { readonly type: 'force-released'; readonly lock: Lock; readonly reason: string | null }
  /** A request joined the queue of a held service. */
  | { readonly type: 'queued'; readonly service: string; readonly who: string; readonly holder: Lock };

export interface LockServiceDeps {
  readonly store: LockStore;
  /** New lock ids; crypto.randomUUID in production. */
  readonly newId: () => string;
  /** Called after each committed change, synchronously; must not throw. */
  readonly onEvent?: (event: LockEvent) => void;
  /** TTL for acquires that give none (default: none, so such locks never expire). */
  readonly defaultTtlSeconds?: number | null;
  /** Longest TTL accepted on acquire and renew (default: MAX_TTL_SECONDS). */
  readonly maxTtlSeconds?: number | null;
  /** This process's name in the queue (a replica id); unique per process. */
  readonly owner: string;
  /** Safety re-check of a waiting request, in ms (default 1000). */
  readonly recheckMs?: number;
  /** Most live waiters one service's queue takes (default DEFAULT_MAX_WAITERS). */
  readonly maxWaitersPerService?: number;
  /** Most locks the store may hold (default DEFAULT_MAX_LOCKS); null: no limit. */
  readonly maxLocks?: number | null;
}

export const DEFAULT_MAX_WAITERS = 1000;
export const DEFAULT_MAX_LOCKS = 1_000_000;
/** How old the count of held locks that --max-locks is checked against may be, in ms. */
const LOCK_COUNT_MAX_AGE_MS = 1000;

/** Raw list parameters as a transport received them; undefined means "default". */
export interface ListParams {
  readonly page?: number | undefined;
  readonly perPage?: number | undefined;
  readonly service?: string | undefined;
  readonly who?: string | undefined;
}

/** Raw history parameters as a transport received them; undefined means "any". */
export interface HistoryParams {
  readonly service?: string | undefined;
  readonly who?: string | undefined;
  readonly since?: Date | undefined;
  readonly until?: Date | undefined;
  readonly before?: number | undefined;
  readonly limit?: number | undefined;
}

/** Locks one sweep expires at most; a sweep that hits it runs again at once. */
export const SWEEP_BATCH = 500;

export type LockService = ReturnType<typeof createLockService>;

/**
 * The lock rules, shared by every transport: input validation, and the mapping of store
 * results to domain errors. Atomicity lives in the store.
 */
export function createLockService({
  store,
  newId,
  onEvent,
  defaultTtlSeconds,
  maxTtlSeconds,
  owner,
  recheckMs,
  maxWaitersPerService = DEFAULT_MAX_WAITERS,
  maxLocks = DEFAULT_MAX_LOCKS,
}: LockServiceDeps) {
  const room = createWaitingRoom(store, owner, { recheckMs });
  // --max-locks is checked against a count of held locks at most a second old, plus this
  // process's acquires since: counting the store on every acquire would cost a scan each.
  // Several replicas acquiring in the same second may overshoot by what they took in it.
  let lockCount = { value: 0, at: Number.NEGATIVE_INFINITY };
  // One count at a time, shared by the acquires that arrive while it runs.
  let counting: Promise<void> | null = null;
  const checkLockLimit = async () => {
    if (maxLocks === null) return;
    if (performance.now() - lockCount.at > LOCK_COUNT_MAX_AGE_MS) {
      counting ??= store
        .stats()
        .then((stats) => {
          lockCount = { value: stats.locks, at: performance.now() };
        })
        .finally(() => {
          counting = null;
        });
      await counting;
    }
    if (lockCount.value >= maxLocks) throw tooManyLocks(maxLocks);
  };
  /**
   * The owner a release or renewal must match: the caller's token name, unless the caller
   * is an admin (or authentication is off). An admin limited to some services may still
   * only touch those: its lock is looked up first.
   */
  const ownerFilter = async (key: string, caller: Caller): Promise<string | undefined> => {
    requireScope(caller, 'lock:write');
    if (caller === null) return undefined;
    if (!hasScope(caller, 'lock:admin')) return caller.name;
    await requireAdminOver(key, caller);
    return undefined;
  };
  /** An admin limited to some services may act on their locks only: the lock is looked up. */
  const requireAdminOver = async (key: string, caller: Caller) => {
    if (!caller?.services) return;
    const lock = await store.get(key);
    if (lock) requireService(caller, 'lock:admin', lock.service);
  };
  /** After a refused owner-checked change: 403 if the lock exists (another owner's), else `missing`. */
  const refusedChange = async (key: string, owner: string | undefined, missing: () => TrackerError) => {
    if (owner !== undefined && (await store.get(key))) {
      return permissionDenied(
        'this lock was taken with another token; only that token or an admin may change it',
      );
    }
    return missing();
  };
  const maxTtl = maxTtlSeconds ?? MAX_TTL_SECONDS;
  const validateTtl = (ttlSeconds: number | undefined): void => {
    if (ttlSeconds === undefined) return;
    if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_TTL_SECONDS) {
      throw invalidArgument('ttlSeconds', `ttlSeconds must be an integer from 1 to ${MAX_TTL_SECONDS}`);
    }
    if (ttlSeconds > maxTtl) {
      throw invalidArgument('ttlSeconds', `ttlSeconds must be at most ${maxTtl} (the server's --max-ttl)`);
    }
  };

  return {
    /**
     * Takes the lock; `ttlSeconds` undefined means the server's default TTL (or none).
     * With `waitSeconds`, a held service queues the request until it is granted (FIFO),
     * the wait runs out (WAIT_TIMEOUT) or the signal aborts (CANCELLED).
     */
    async acquire(
      service: string,
      who: string,
      ttlSeconds?: number,
      wait: WaitOptions = {},
      caller: Caller = null,
    ): Promise<Lock> {
      validateName('service', service);
      validateName('who', who);
      requireService(caller, 'lock:write', service);
      validateTtl(ttlSeconds);
      const waitSeconds = wait.waitSeconds ?? 0;
      if (!Number.isSafeInteger(waitSeconds) || waitSeconds < 0 || waitSeconds > MAX_WAIT_SECONDS) {
        throw invalidArgument('waitSeconds', `waitSeconds must be an integer from 0 to ${MAX_WAIT_SECONDS}`);
      }
      const ttl = ttlSeconds ?? defaultTtlSeconds ?? null;
      const id = newId();
      const started = performance.now();
      const elapsed = () => performance.now() - started;
      let waited = false;
      try {
        await checkLockLimit();
        const result = await store.acquire(
          { id, service, who, ttlSeconds: ttl, owner: caller?.name ?? null },
          waitSeconds > 0 ? { owner, maxWaiters: maxWaitersPerService } : undefined,
        );
        let lock: Lock;
        if (result.acquired) lock = result.lock;
        else {
          if (result.queueFull) throw queueFull(maxWaitersPerService);
          if (!result.waiter) throw lockHeld(result.holder);
          waited = true;
          onEvent?.({ type: 'queued', service, who, holder: result.holder });
          lock = await room.waitFor(
            { service, id, ticket: result.waiter.ticket, holder: result.holder },
            Math.min(waitSeconds * 1000, (wait.deadline ?? Number.POSITIVE_INFINITY) - Date.now()),
            wait.signal,
          );
        }
        lockCount.value++;
        onEvent?.({ type: 'acquired', lock, ms: elapsed(), waited });
        return lock;
      } catch (error) {
        onEvent?.({ type: 'refused', service, who, reason: refusal(error), ms: elapsed() });
        throw error;
      }
    },

    /**
     * Releases a lock whoever holds it (an operator's action), recording the reason in the
     * history. The next waiter, if any, is granted the lock as on a release.
     */
    async forceRelease(id: string, reason?: string, caller: Caller = null): Promise<Lock> {
      if (reason !== undefined) validateText('reason', reason, MAX_REASON_LENGTH);
      requireScope(caller, 'lock:admin');
      const key = lockKey(id);
      if (key) await requireAdminOver(key, caller);
      const lock = key
        ? await store.forceRelease(key, reason === undefined || reason === '' ? null : reason)
        : null;
      if (!lock) throw lockNotFound();
      onEvent?.({ type: 'force-released', lock, reason: reason ?? null });
      return lock;
    },

    /** Expires what is due and drops abandoned waiters, in batches; returns how many expired. */
    async sweep(): Promise<number> {
      let total = 0;
      // Bounded: at most 20 batches a call; the next call goes on.
      for (let batch = 0; batch < 20; batch++) {
        const { expired } = await store.sweep(SWEEP_BATCH);
        for (const lock of expired) onEvent?.({ type: 'expired', lock });
        total += expired.length;
        if (expired.length < SWEEP_BATCH) break;
      }
      return total;
    },

    /**
     * The history, newest first, and where the next page starts (`nextBefore`, null after
     * the last). A token limited to some services sees only their events, so its pages may
     * come out short; paging goes on from the last event read.
     */
    async history(
      params: HistoryParams,
      caller: Caller = null,
    ): Promise<{ events: LockEventRecord[]; nextBefore: number | null }> {
      requireScope(caller, 'lock:read');
      if (params.service !== undefined) requireService(caller, 'lock:read', params.service);
      const limit = params.limit ?? DEFAULT_HISTORY_LIMIT;
      if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_HISTORY_LIMIT) {
        throw invalidArgument('limit', `limit must be an integer from 1 to ${MAX_HISTORY_LIMIT}`);
      }
      if (params.service !== undefined) validateName('service', params.service);
      if (params.who !== undefined) validateName('who', params.who);
      for (const field of ['since', 'until'] as const) {
        const at = params[field];
        if (at !== undefined && Number.isNaN(at.getTime())) {
          throw invalidArgument(field, `${field} must be an RFC 3339 timestamp`);
        }
      }
      if (params.before !== undefined && (!Number.isSafeInteger(params.before) || params.before < 1)) {
        throw invalidArgument('before', 'before must be a positive integer (an event id)');
      }
      const events = await store.history({ ...params, limit });
      return {
        events: caller?.services ? events.filter((event) => mayUseService(caller, event.service)) : events,
        // Another page may follow only when this one came back full.
        nextBefore: events.length === limit ? (events.at(-1)?.id ?? null) : null,
      };
    },

    /** Every held lock (of one service), from one snapshot. */
    async snapshot(service?: string): Promise<Lock[]> {
      if (service !== undefined) validateName('service', service);
      return store.snapshot(service);
    },

    /** Stops waiting: requests in line answer STORE_UNAVAILABLE and leave the queue. */
    close(): void {
      room.close();
    },

    /** The holder and the queue of a service. */
    async queue(service: string, caller: Caller = null): Promise<Queue> {
      validateName('service', service);
      requireService(caller, 'lock:read', service);
      return store.queue(service);
    },

    async get(id: string, caller: Caller = null): Promise<Lock> {
      requireScope(caller, 'lock:read');
      const key = lockKey(id);
      const lock = key ? await store.get(key) : null;
      if (!lock) throw lockNotFound();
      requireService(caller, 'lock:read', lock.service);
      return lock;
    },

    /** Releases a lock: the caller's own, or any for an admin (or without authentication). */
    async release(id: string, caller: Caller = null): Promise<Lock> {
      const key = lockKey(id);
      if (!key) {
        requireScope(caller, 'lock:write');
        throw lockNotFound();
      }
      const owner = await ownerFilter(key, caller);
      const lock = await store.release(key, owner);
      if (!lock) throw await refusedChange(key, owner, lockNotFound);
      onEvent?.({ type: 'released', lock });
      return lock;
    },

    /** Extends the lease; `ttlSeconds` undefined means the lock's own TTL. */
    async renew(id: string, ttlSeconds?: number, caller: Caller = null): Promise<Lock> {
      validateTtl(ttlSeconds);
      const key = lockKey(id);
      if (!key) {
        requireScope(caller, 'lock:write');
        throw lockNotHeld();
      }
      const owner = await ownerFilter(key, caller);
      const lock = await store.renew(key, ttlSeconds ?? null, owner);
      if (!lock) throw await refusedChange(key, owner, lockNotHeld);
      onEvent?.({ type: 'renewed', lock });
      return lock;
    },

    async list(
      params: ListParams,
      caller: Caller = null,
    ): Promise<LockPage & { page: number; perPage: number }> {
      requireScope(caller, 'lock:read');
      const page = params.page ?? 1;
      const perPage = params.perPage ?? DEFAULT_PER_PAGE;
      if (!Number.isSafeInteger(page) || page < 1) {
        throw invalidArgument('page', 'page must be a positive integer');
      }
      if (!Number.isSafeInteger(perPage) || perPage < 1 || perPage > MAX_PER_PAGE) {
        throw invalidArgument('per_page', `per_page must be an integer from 1 to ${MAX_PER_PAGE}`);
      }
      if (params.service !== undefined) validateName('service', params.service);
      if (params.who !== undefined) validateName('who', params.who);
      if (params.service !== undefined) requireService(caller, 'lock:read', params.service);
      if (caller?.services) {
        // Only the services this token may see: filtered from one snapshot, then paged.
        const visible = (await store.snapshot(params.service)).filter(
          (lock) =>
            mayUseService(caller, lock.service) && (params.who === undefined || lock.who === params.who),
        );
        return {
          locks: visible.slice((page - 1) * perPage, page * perPage),
          total: visible.length,
          page,
          perPage,
        };
      }
      const result = await store.list({ page, perPage, service: params.service, who: params.who });
      return { ...result, page, perPage };
    },
  };
}

/** The id as stores know it (lower case), or null when it cannot name any lock. */
function lockKey(id: string): string | null {
  const key = id.toLowerCase();
  return isLockId(key) ? key : null;
}

/** The rules for `service` and `who`: present, not blank, short, printable. */
export function validateName(field: 'service' | 'who', value: string): void {
  if (value.trim() === '') throw invalidArgument(field, `${field} must be a non-empty string`);
  validateText(field, value, MAX_NAME_LENGTH);
}

/** Free text: at most `max` characters, printable. */
function validateText(field: string, value: string, max: number): void {
  // Code points, not UTF-16 units, so that the limit means the same as in JSON Schema.
  if ([...value].length > max) {
    throw invalidArgument(field, `${field} must be at most ${max} characters`);
  }
  if (CONTROL_CHARACTERS.test(value)) {
    throw invalidArgument(field, `${field} must not contain control characters`);
  }
  // A lone surrogate (possible in JSON's \uD800 escapes) is not text: stores would write it
  // as invalid UTF-8 and read back something else, so two names could look alike.
  if (LONE_SURROGATE.test(value)) {
    throw invalidArgument(field, `${field} must be well-formed Unicode (no lone surrogates)`);
  }
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function refusal(error: unknown): Refusal {
  if (!(error instanceof TrackerError)) return 'failed';
  if (error.code === ErrorCode.LOCK_HELD) return 'held';
  if (error.code === ErrorCode.WAIT_TIMEOUT) return 'timeout';
  if (error.code === ErrorCode.CANCELLED) return 'cancelled';
  return 'failed';
}
