import { randomUUID } from 'node:crypto';
import { systemClock } from '../../src/core/clock.js';
import { createEventFeed, type EventFeed } from '../../src/core/event-feed.js';
import {
  createLockService,
  DEFAULT_MAX_WAITERS,
  DEFAULT_MAX_WAITERS_TOTAL,
  type LockServiceDeps,
  type LockServiceRuntime,
} from '../../src/core/lock-service.js';
import type { LockStore } from '../../src/core/lock-store.js';

export interface TestService {
  readonly service: LockServiceRuntime;
  readonly feed: EventFeed;
  /** Stops waiting requests and the feed (the store stays open: the test owns it). */
  close(): void;
}

/**
 * A lock service over `store` with the server's defaults (no default TTL, the usual queue
 * limit, no lock limit, the system clock) and a feed of its own; `overrides` replace any of
 * them. `onEvent` is called as well as the feed's kick.
 */
export function createTestService(
  store: LockStore,
  overrides: Partial<Omit<LockServiceDeps, 'store' | 'feed'>> & { feed?: EventFeed } = {},
): TestService {
  const feed = overrides.feed ?? createEventFeed({ store });
  const { onEvent, ...rest } = overrides;
  const service = createLockService({
    clock: systemClock,
    newId: randomUUID,
    defaultTtlSeconds: null,
    maxTtlSeconds: null,
    owner: `test-${randomUUID().slice(0, 8)}`,
    maxWaitersPerService: DEFAULT_MAX_WAITERS,
    maxWaiters: DEFAULT_MAX_WAITERS_TOTAL,
    maxLocks: null,
    ...rest,
    store,
    feed,
    onEvent: (event) => {
      onEvent?.(event);
      feed.kick();
    },
  });
  return {
    service,
    feed,
    close() {
      service.close();
      feed.close();
    },
  };
}
