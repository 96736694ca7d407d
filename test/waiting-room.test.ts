import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { AUTHENTICATION_OFF } from '../src/core/auth.js';
import { systemClock } from '../src/core/clock.js';
import { ErrorCode, TrackerError } from '../src/core/errors.js';
import { type LockStore, WAITER_LEASE_MS } from '../src/core/lock-store.js';
import { createWaitingRoom } from '../src/core/waiting-room.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { createTestService } from './support/lock-service.js';
import { ManualClock } from './support/manual-clock.js';
import { tempDir } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

test('a wait that fails because the store is unreachable leaves the queue once it is back', async () => {
  const dir = tempDir();
  const path = join(dir.path, 'tracker.db');
  // A short busy timeout: a write blocked by another connection fails as STORE_UNAVAILABLE.
  const store = openSqliteLockStore({ path, clock: systemClock, busyTimeoutMs: 20 });
  const { service, close } = createTestService(store, { owner: 'replica-a', recheckMs: 50 });
  const caller = AUTHENTICATION_OFF;
  const blocker = new Database(path);
  try {
    const holder = await service.acquire({ caller, service: 'deploy', who: 'holder' });
    const waiting = service.acquire({ caller, service: 'deploy', who: 'waiter', waitSeconds: 30 });
    waiting.catch(() => {});
    await waitFor(async () => (await store.queue('deploy')).waiters.length === 1, {
      what: 'the waiter in line',
    });

    // The waiter's next look (a settle, a write) finds the file locked: its caller gets 503.
    blocker.exec('BEGIN IMMEDIATE');
    await assert.rejects(
      waiting,
      (error: unknown) => error instanceof TrackerError && error.code === ErrorCode.STORE_UNAVAILABLE,
    );
    blocker.exec('ROLLBACK');

    // Nobody waits for that request any more: it must not stay in line to be granted a lock
    // nobody knows of.
    await waitFor(async () => (await store.queue('deploy')).waiters.length === 0, {
      what: 'the failed wait to leave the queue',
    });
    await service.release({ caller, id: holder.lock.id });
    assert.deepEqual((await store.list({ page: 1, perPage: 10, service: 'deploy' })).locks, []);
    const [last] = await store.history({ service: 'deploy', limit: 1, before: undefined });
    assert.equal(last?.type, 'released', 'nobody was granted the lock after the holder left');
  } finally {
    close();
    blocker.close();
    await store.close();
    dir.remove();
  }
});

test('a waiter that missed its grant, whose lock then ended, answers LOCK_ENDED at its deadline, not a timeout', async () => {
  const store = openSqliteLockStore({ path: ':memory:', clock: systemClock });
  // The waiter's replica hears nothing of the store's changes (its notifications are lost,
  // as while a LISTEN connection reconnects), and looks again only at its deadline.
  let looks = 0;
  const deaf = new Proxy(store, {
    get(target, name) {
      const member: unknown = Reflect.get(target, name);
      if (name === 'onChange') return () => () => {};
      if (typeof member !== 'function') return member;
      if (name !== 'settle') return member.bind(target);
      return async (service: string) => {
        try {
          return await target.settle(service);
        } finally {
          looks++;
        }
      };
    },
  });
  const { service, close } = createTestService(deaf, { recheckMs: 60_000 });
  const caller = AUTHENTICATION_OFF;
  try {
    const holder = await service.acquire({ caller, service: 'deploy', who: 'holder' });
    const waiting = service.acquire({ caller, service: 'deploy', who: 'waiter', waitSeconds: 1 });
    waiting.catch(() => {});
    await waitFor(() => looks > 0, { what: "the waiter's first look (then it sleeps to its deadline)" });
    // The holder leaves: the waiter is granted its lock, unheard; an operator ends that lock.
    await store.release(holder.lock.id);
    const [granted] = await store.snapshot('deploy');
    assert.equal(granted?.who, 'waiter');
    await store.forceRelease(granted.id, 'stuck job');
    await assert.rejects(waiting, (error: unknown) => {
      assert.ok(error instanceof TrackerError);
      assert.equal(error.code, ErrorCode.LOCK_ENDED, error.message);
      assert.equal(error.details.lockId, granted.id);
      return true;
    });
  } finally {
    close();
    await store.close();
  }
});

test('a waiter dropped from the line (its replica seemed dead) and never granted answers WAIT_TIMEOUT, not LOCK_ENDED', async () => {
  // The store's clock and the waiter's deadlines move apart: the store first sees the waiter's
  // heartbeat run out, then the wait reaches its deadline.
  const storeClock = new ManualClock();
  const waiterClock = new ManualClock();
  const store = openSqliteLockStore({ path: ':memory:', clock: storeClock });
  const { service, close } = createTestService(store, { clock: waiterClock, recheckMs: 20 });
  const caller = AUTHENTICATION_OFF;
  try {
    const holder = await service.acquire({ caller, service: 'deploy', who: 'holder' });
    const waiting = service.acquire({ caller, service: 'deploy', who: 'waiter', waitSeconds: 10 });
    waiting.catch(() => {});
    await waitFor(async () => (await store.queue('deploy')).waiters.length === 1, {
      what: 'the waiter in line',
    });
    // Others come and go meanwhile: the look back through the history passes their events.
    for (let i = 0; i < 3; i++) {
      await assert.rejects(service.acquire({ caller, service: 'deploy', who: `other-${i}` }));
    }
    storeClock.advance(WAITER_LEASE_MS + 1000);
    await store.sweep(100);
    assert.equal((await store.queue('deploy')).waiters.length, 0, 'dropped as abandoned');
    waiterClock.advance(11_000);
    await assert.rejects(waiting, (error: unknown) => {
      assert.ok(error instanceof TrackerError);
      assert.equal(error.code, ErrorCode.WAIT_TIMEOUT, error.message);
      return true;
    });
    assert.equal((await store.get(holder.lock.id))?.who, 'holder');
  } finally {
    close();
    await store.close();
  }
});

/** `store` with a count of the reads a waiting request makes to learn whether it was granted. */
function countingLooks(store: LockStore) {
  const looks = { get: 0, settle: 0, byId: new Map<string, number>() };
  const counted = new Proxy(store, {
    get(target, name) {
      const member: unknown = Reflect.get(target, name);
      if (typeof member !== 'function') return member;
      if (name === 'granted') {
        return (id: string) => {
          looks.get++;
          looks.byId.set(id, (looks.byId.get(id) ?? 0) + 1);
          return target.granted(id);
        };
      }
      if (name === 'settle') {
        return (service: string | readonly string[]) => {
          looks.settle++;
          return target.settle(service);
        };
      }
      return member.bind(target);
    },
  });
  return { store: counted, looks, total: () => looks.get + looks.settle };
}

const LINE = 200;

test('a line of waiters drains with a few looks per grant, not a look by every waiter at every change', async () => {
  const sqlite = openSqliteLockStore({ path: ':memory:', clock: systemClock });
  const { store, total } = countingLooks(sqlite);
  // Every granted waiter releases at once: each grant is a change the whole line could hear.
  const { service, close } = createTestService(store, { recheckMs: 60_000 });
  const caller = AUTHENTICATION_OFF;
  try {
    const holder = await service.acquire({ caller, service: 'deploy', who: 'holder' });
    const granted: string[] = [];
    const waits = Array.from({ length: LINE }, (_, i) =>
      service
        .acquire({ caller, service: 'deploy', who: `waiter-${i}`, waitSeconds: 60 })
        .then(async ({ lock }) => {
          granted.push(lock.who);
          await service.release({ caller, id: lock.id });
        }),
    );
    await waitFor(async () => (await sqlite.queue('deploy')).waiters.length === LINE, {
      what: 'the whole line waiting',
    });
    const before = total();
    await service.release({ caller, id: holder.lock.id });
    await Promise.all(waits);
    assert.deepEqual(
      granted,
      Array.from({ length: LINE }, (_, i) => `waiter-${i}`),
      'granted in the order they came',
    );
    // Each grant: the first in line looks (get, settle), then the next one takes its turn to
    // look. Waking the whole line at each change would cost about LINE² / 2 looks.
    const looks = total() - before;
    assert.ok(looks <= 6 * LINE, `${looks} looks for ${LINE} grants`);
  } finally {
    close();
    await sqlite.close();
  }
});

test('waiters that all hang up leave with a few looks each, and the holder is untouched', async () => {
  const sqlite = openSqliteLockStore({ path: ':memory:', clock: systemClock });
  const { store, total } = countingLooks(sqlite);
  const { service, close } = createTestService(store, { recheckMs: 60_000 });
  const caller = AUTHENTICATION_OFF;
  try {
    const holder = await service.acquire({ caller, service: 'deploy', who: 'holder' });
    const gone = Array.from({ length: LINE }, () => new AbortController());
    const waits = gone.map((controller, i) =>
      service.acquire({
        caller,
        service: 'deploy',
        who: `waiter-${i}`,
        waitSeconds: 60,
        signal: controller.signal,
      }),
    );
    for (const wait of waits) wait.catch(() => {});
    await waitFor(async () => (await sqlite.queue('deploy')).waiters.length === LINE, {
      what: 'the whole line waiting',
    });
    const before = total();
    // One after the other, as connections close: each one leaving is a change to the service.
    for (const [i, controller] of gone.entries()) {
      controller.abort();
      await assert.rejects(waits[i] ?? Promise.resolve());
    }
    assert.deepEqual((await sqlite.queue('deploy')).waiters, []);
    assert.equal((await sqlite.get(holder.lock.id))?.who, 'holder');
    // Each one leaving is a change; only the first in line looks at it.
    const looks = total() - before;
    assert.ok(looks <= 4 * LINE, `${looks} looks for ${LINE} leaving`);
  } finally {
    close();
    await sqlite.close();
  }
});

test('a replica keeps at most --max-waiters requests waiting, over all services', async () => {
  const store = openSqliteLockStore({ path: ':memory:', clock: systemClock });
  const { service, close } = createTestService(store, { maxWaiters: 3 });
  const caller = AUTHENTICATION_OFF;
  try {
    for (const name of ['a', 'b']) await service.acquire({ caller, service: name, who: 'holder' });
    const first = new AbortController();
    const waits = [
      service.acquire({ caller, service: 'a', who: 'w1', waitSeconds: 60, signal: first.signal }),
      service.acquire({ caller, service: 'a', who: 'w2', waitSeconds: 60 }),
      service.acquire({ caller, service: 'b', who: 'w3', waitSeconds: 60 }),
    ];
    for (const wait of waits) wait.catch(() => {});
    await waitFor(async () => (await store.stats()).waiters === 3, { what: 'three waiting' });
    const refused = (error: unknown) => {
      assert.ok(error instanceof TrackerError);
      assert.equal(error.code, ErrorCode.QUEUE_FULL);
      assert.match(error.message, /--max-waiters/);
      return true;
    };
    await assert.rejects(service.acquire({ caller, service: 'a', who: 'w4', waitSeconds: 60 }), refused);
    // Nothing of the refused request was kept: not in line, and the place is not used up.
    assert.equal((await store.stats()).waiters, 3);
    // Without a place in line, a free service is still granted at once.
    const now = await service.acquire({ caller, service: 'c', who: 'now', waitSeconds: 60 });
    assert.equal(now.lock.who, 'now');
    // A place given back is taken again: this one waits (and times out).
    first.abort();
    await assert.rejects(waits[0] ?? Promise.resolve());
    await assert.rejects(
      service.acquire({ caller, service: 'c', who: 'w5', waitSeconds: 1 }),
      (error: unknown) => {
        assert.ok(error instanceof TrackerError);
        assert.equal(error.code, ErrorCode.WAIT_TIMEOUT, error.message);
        return true;
      },
    );
  } finally {
    close();
    await store.close();
  }
});

test('after its heartbeat lapsed, every waiting request of the replica looks again, not only the first', async () => {
  const store = openSqliteLockStore({ path: ':memory:', clock: systemClock });
  let failing = false;
  let failedBeats = 0;
  const { store: counted, looks } = countingLooks(
    new Proxy(store, {
      get(target, name) {
        if (name === 'heartbeat') {
          return async (owner: string) => {
            if (failing) {
              failedBeats++;
              throw new TrackerError(ErrorCode.STORE_UNAVAILABLE, 'unreachable');
            }
            await target.heartbeat(owner);
          };
        }
        const member: unknown = Reflect.get(target, name);
        return typeof member === 'function' ? member.bind(target) : member;
      },
    }),
  );
  const room = createWaitingRoom(counted, 'replica-a', {
    clock: systemClock,
    recheckMs: 60_000,
    heartbeatMs: 20,
  });
  try {
    const request = { service: 'deploy', who: 'x', ttlSeconds: null, owner: null };
    const holder = await store.acquire({ ...request, id: randomUUID() });
    assert.ok(holder.acquired);
    const queued = [];
    for (const who of ['first', 'second']) {
      const result = await store.acquire({ ...request, id: randomUUID(), who }, { owner: 'replica-a' });
      assert.ok(!result.acquired && result.waiter);
      queued.push({
        service: 'deploy',
        services: ['deploy'],
        priority: 0,
        group: false,
        id: result.waiter.lockId,
        ticket: result.waiter.ticket,
        holder: result.holder,
      });
    }
    const stop = new AbortController();
    const waits = queued.map((request) => {
      assert.ok(room.claim('within-limit'));
      return room.waitFor(request, 60_000, stop.signal);
    });
    for (const wait of waits) wait.catch(() => {});
    const second = queued[1]?.id ?? '';
    await waitFor(() => looks.byId.get(second) === 1, { what: "the second request's first look" });
    failing = true;
    const failedBefore = failedBeats;
    await waitFor(() => failedBeats >= failedBefore + 3, { what: 'three beats to fail' });
    assert.equal(looks.byId.get(second), 1, 'the second in line does not look while the first does');
    failing = false;
    await waitFor(() => (looks.byId.get(second) ?? 0) >= 2, {
      what: 'the second request to look again once the heartbeat is back',
    });
    stop.abort();
    await Promise.allSettled(waits);
  } finally {
    room.close();
    await store.close();
  }
});

test('when every waiter hangs up at once, other work is served between their leaving, not after it all', async () => {
  const store = openSqliteLockStore({ path: ':memory:', clock: systemClock });
  const { service, close } = createTestService(store, { recheckMs: 60_000 });
  const caller = AUTHENTICATION_OFF;
  try {
    await service.acquire({ caller, service: 'deploy', who: 'holder' });
    const gone = new AbortController();
    const waits = Array.from({ length: LINE }, (_, i) =>
      service.acquire({ caller, service: 'deploy', who: `w${i}`, waitSeconds: 60, signal: gone.signal }),
    );
    for (const wait of waits) wait.catch(() => {});
    await waitFor(async () => (await store.queue('deploy')).waiters.length === LINE, { what: 'the line' });
    gone.abort();
    // A few turns of the event loop (other requests' I/O is served in each): SQLite's calls
    // are synchronous, so without a turn each all 200 would have left before the first.
    for (let turn = 0; turn < 5; turn++) await new Promise((resolve) => setImmediate(resolve));
    const stillWaiting = (await store.stats()).waiters;
    assert.ok(stillWaiting > LINE / 2 && stillWaiting < LINE, `${stillWaiting} still in line after 5 turns`);
    await Promise.allSettled(waits);
    assert.equal((await store.stats()).waiters, 0);
  } finally {
    close();
    await store.close();
  }
});
