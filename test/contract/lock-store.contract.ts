import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { Lock } from '../../src/core/lock.js';
import type { LockStore } from '../../src/core/lock-store.js';

export interface StoreUnderTest {
  readonly store: LockStore;
  /** Moves the store's clock forward; stores on a database clock wait instead. */
  readonly advance: (ms: number) => Promise<void>;
  /** The store's current time, when the test controls it (for exact createdAt checks). */
  readonly now?: () => Date;
  readonly cleanup: () => Promise<void>;
}

/**
 * The LockStore contract: every store implementation runs exactly these tests. A store
 * that cannot support one skips it by name, visibly, in its own test file.
 */
export function runLockStoreContract(name: string, open: () => Promise<StoreUnderTest>): void {
  describe(`LockStore contract: ${name}`, () => {
    let subject: StoreUnderTest;
    let store: LockStore;
    // Each test uses its own service names, so tests never see each other's locks.
    const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

    before(async () => {
      subject = await open();
      store = subject.store;
    });
    after(async () => {
      await subject.cleanup();
    });

    test('acquire on a free service returns the new lock, stamped by the store clock', async () => {
      const id = randomUUID();
      const service = unique('deploy');
      const expected = subject.now?.();
      const result = await store.acquire(id, service, 'ci-pipeline-123');
      assert.equal(result.acquired, true);
      assert.ok(result.acquired);
      assert.equal(result.lock.id, id);
      assert.equal(result.lock.service, service);
      assert.equal(result.lock.who, 'ci-pipeline-123');
      assert.ok(result.lock.createdAt instanceof Date);
      if (expected) assert.equal(result.lock.createdAt.getTime(), expected.getTime());
      else assert.ok(Math.abs(result.lock.createdAt.getTime() - Date.now()) < 60_000);
    });

    test('acquire on a held service returns the holder and changes nothing', async () => {
      const service = unique('deploy');
      const first = await store.acquire(randomUUID(), service, 'first');
      assert.ok(first.acquired);
      const second = await store.acquire(randomUUID(), service, 'second');
      assert.equal(second.acquired, false);
      assert.ok(!second.acquired);
      assert.deepEqual(second.holder, first.lock);
      const page = await store.list({ page: 1, perPage: 10, service });
      assert.deepEqual(page.locks, [first.lock]);
    });

    test('different services are independent', async () => {
      const a = await store.acquire(randomUUID(), unique('a'), 'x');
      const b = await store.acquire(randomUUID(), unique('b'), 'x');
      assert.ok(a.acquired && b.acquired);
    });

    test('get returns the held lock, null for unknown or malformed ids', async () => {
      const result = await store.acquire(randomUUID(), unique('get'), 'who');
      assert.ok(result.acquired);
      assert.deepEqual(await store.get(result.lock.id), result.lock);
      assert.equal(await store.get(randomUUID()), null);
      assert.equal(await store.get('not-a-uuid'), null);
      assert.equal(await store.get(''), null);
    });

    test('release returns the lock once, then null; the service is free again', async () => {
      const service = unique('release');
      const result = await store.acquire(randomUUID(), service, 'who');
      assert.ok(result.acquired);
      assert.deepEqual(await store.release(result.lock.id), result.lock);
      assert.equal(await store.release(result.lock.id), null);
      assert.equal(await store.get(result.lock.id), null);
      assert.equal(await store.release(randomUUID()), null);
      const again = await store.acquire(randomUUID(), service, 'next');
      assert.ok(again.acquired);
      assert.notEqual(again.lock.id, result.lock.id);
    });

    test('list is oldest first, pages with a true total, and filters exactly', async () => {
      const who = unique('lister');
      const made: Lock[] = [];
      for (let i = 0; i < 5; i++) {
        const result = await store.acquire(randomUUID(), unique(`svc${i}`), who);
        assert.ok(result.acquired);
        made.push(result.lock);
        await subject.advance(1000);
      }
      const all = await store.list({ page: 1, perPage: 100, who });
      assert.equal(all.total, 5);
      assert.deepEqual(all.locks, made);
      const second = await store.list({ page: 2, perPage: 2, who });
      assert.equal(second.total, 5);
      assert.deepEqual(second.locks, made.slice(2, 4));
      const last = await store.list({ page: 3, perPage: 2, who });
      assert.deepEqual(last.locks, made.slice(4));
      const past = await store.list({ page: 9, perPage: 2, who });
      assert.deepEqual(past.locks, []);
      assert.equal(past.total, 5);
      const one = made[3] as Lock;
      const byService = await store.list({ page: 1, perPage: 100, service: one.service });
      assert.deepEqual(byService, { locks: [one], total: 1 });
      const both = await store.list({ page: 1, perPage: 100, service: one.service, who: 'someone-else' });
      assert.deepEqual(both, { locks: [], total: 0 });
    });

    test('locks created at the same instant are listed by id', async (t) => {
      const who = unique('tied');
      const ids = [randomUUID(), randomUUID(), randomUUID()];
      if (!subject.now) {
        t.skip('the store clock cannot be held still from a test');
        return;
      }
      for (const id of ids) assert.ok((await store.acquire(id, unique('tie'), who)).acquired);
      const page = await store.list({ page: 1, perPage: 10, who });
      assert.deepEqual(
        page.locks.map((lock) => lock.id),
        [...ids].sort(),
      );
    });

    test('names keep every Unicode character they were given', async () => {
      const service = `déploiement-🚀-${'ß'.repeat(200)}-${randomUUID().slice(0, 8)}`;
      const who = 'ユーザー "quoted" \\ back\\slash';
      const result = await store.acquire(randomUUID(), service, who);
      assert.ok(result.acquired);
      const read = await store.get(result.lock.id);
      assert.equal(read?.service, service);
      assert.equal(read?.who, who);
    });

    test('of many concurrent acquires for one service exactly one wins', async () => {
      const service = unique('race');
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) => store.acquire(randomUUID(), service, `racer-${i}`)),
      );
      const winners = results.filter((result) => result.acquired);
      assert.equal(winners.length, 1);
      const winner = winners[0];
      assert.ok(winner?.acquired);
      for (const result of results) {
        if (!result.acquired) assert.deepEqual(result.holder, winner.lock);
      }
    });

    test('ping resolves while the store is open', async () => {
      await store.ping();
    });
  });
}
