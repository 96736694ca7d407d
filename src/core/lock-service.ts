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
} from './lock.js';
import type { LockStore } from './lock-store.js';

/** Something that happened to a lock; transports and logs subscribe to these. */
export interface LockEvent {
  readonly type: 'acquired' | 'released' | 'renewed';
  readonly lock: Lock;
}

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
}: LockServiceDeps) {
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
    /** Takes the lock; `ttlSeconds` undefined means the server's default TTL (or none). */
    async acquire(service: string, who: string, ttlSeconds?: number): Promise<Lock> {
      validateName('service', service);
      validateName('who', who);
      validateTtl(ttlSeconds);
      const ttl = ttlSeconds ?? defaultTtlSeconds ?? null;
      const result = await store.acquire({ id: newId(), service, who, ttlSeconds: ttl });
      if (!result.acquired) throw lockHeld(result.holder);
      onEvent?.({ type: 'acquired', lock: result.lock });
      return result.lock;
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
