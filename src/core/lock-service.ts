import { invalidArgument, lockHeld, lockNotFound, lockNotHeld } from './errors.js';
import {
  CONTROL_CHARACTERS,
  DEFAULT_PER_PAGE,
  isLockId,
  type Lock,
  type LockPage,
  MAX_NAME_LENGTH,
  MAX_PER_PAGE,
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

/** Something that happened to a lock; transports and logs subscribe to these. */
export type LockEvent =
  | { readonly type: 'acquired' | 'released' | 'renewed'; readonly lock: Lock }
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
}

/** Raw list parameters as a transport received them; undefined means "default". */
export interface ListParams {
  readonly page?: number | undefined;
  readonly perPage?: number | undefined;
  readonly service?: string | undefined;
  readonly who?: string | undefined;
}

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
}: LockServiceDeps) {
  const room = createWaitingRoom(store, owner, { recheckMs });
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
    async acquire(service: string, who: string, ttlSeconds?: number, wait: WaitOptions = {}): Promise<Lock> {
      validateName('service', service);
      validateName('who', who);
      validateTtl(ttlSeconds);
      const waitSeconds = wait.waitSeconds ?? 0;
      if (!Number.isSafeInteger(waitSeconds) || waitSeconds < 0 || waitSeconds > MAX_WAIT_SECONDS) {
        throw invalidArgument('waitSeconds', `waitSeconds must be an integer from 0 to ${MAX_WAIT_SECONDS}`);
      }
      const ttl = ttlSeconds ?? defaultTtlSeconds ?? null;
      const id = newId();
      const result = await store.acquire(
        { id, service, who, ttlSeconds: ttl },
        waitSeconds > 0 ? { owner } : undefined,
      );
      if (result.acquired) {
        onEvent?.({ type: 'acquired', lock: result.lock });
        return result.lock;
      }
      if (!result.waiter) throw lockHeld(result.holder);
      onEvent?.({ type: 'queued', service, who, holder: result.holder });
      const lock = await room.waitFor(
        { service, id, ticket: result.waiter.ticket, holder: result.holder },
        Math.min(waitSeconds * 1000, (wait.deadline ?? Number.POSITIVE_INFINITY) - Date.now()),
        wait.signal,
      );
      onEvent?.({ type: 'acquired', lock });
      return lock;
    },

    /** Stops waiting: requests in line answer STORE_UNAVAILABLE and leave the queue. */
    close(): void {
      room.close();
    },

    /** The holder and the queue of a service. */
    async queue(service: string): Promise<Queue> {
      validateName('service', service);
      return store.queue(service);
    },

    async get(id: string): Promise<Lock> {
      const key = lockKey(id);
      const lock = key ? await store.get(key) : null;
      if (!lock) throw lockNotFound();
      return lock;
    },

    async release(id: string): Promise<Lock> {
      const key = lockKey(id);
      const lock = key ? await store.release(key) : null;
      if (!lock) throw lockNotFound();
      onEvent?.({ type: 'released', lock });
      return lock;
    },

    /** Extends the lease; `ttlSeconds` undefined means the lock's own TTL. */
    async renew(id: string, ttlSeconds?: number): Promise<Lock> {
      validateTtl(ttlSeconds);
      const key = lockKey(id);
      const lock = key ? await store.renew(key, ttlSeconds ?? null) : null;
      if (!lock) throw lockNotHeld();
      onEvent?.({ type: 'renewed', lock });
      return lock;
    },

    async list(params: ListParams): Promise<LockPage & { page: number; perPage: number }> {
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
  // Code points, not UTF-16 units, so that the limit means the same as in JSON Schema.
  if ([...value].length > MAX_NAME_LENGTH) {
    throw invalidArgument(field, `${field} must be at most ${MAX_NAME_LENGTH} characters`);
  }
  if (CONTROL_CHARACTERS.test(value)) {
    throw invalidArgument(field, `${field} must not contain control characters`);
  }
}
