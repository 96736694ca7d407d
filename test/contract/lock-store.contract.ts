import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
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
      const result = await store.acquire({ id, service, who: 'ci-pipeline-123', ttlSeconds: null });
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
      const first = await store.acquire({ id: randomUUID(), service, who: 'first', ttlSeconds: null });
      assert.ok(first.acquired);
      const second = await store.acquire({ id: randomUUID(), service, who: 'second', ttlSeconds: null });
      assert.equal(second.acquired, false);
      assert.ok(!second.acquired);
      assert.deepEqual(second.holder, first.lock);
      const page = await store.list({ page: 1, perPage: 10, service });
      assert.deepEqual(page.locks, [first.lock]);
    });

    test('different services are independent', async () => {
      const a = await store.acquire({ id: randomUUID(), service: unique('a'), who: 'x', ttlSeconds: null });
      const b = await store.acquire({ id: randomUUID(), service: unique('b'), who: 'x', ttlSeconds: null });
      assert.ok(a.acquired && b.acquired);
    });

    test('get returns the held lock, null for unknown or malformed ids', async () => {
      const result = await store.acquire({
        id: randomUUID(),
        service: unique('get'),
        who: 'who',
        ttlSeconds: null,
      });
      assert.ok(result.acquired);
      assert.deepEqual(await store.get(result.lock.id), result.lock);
      assert.equal(await store.get(randomUUID()), null);
      assert.equal(await store.get('not-a-uuid'), null);
      assert.equal(await store.get(''), null);
    });

    test('release returns the lock once, then null; the service is free again', async () => {
      const service = unique('release');
      const result = await store.acquire({ id: randomUUID(), service, who: 'who', ttlSeconds: null });
      assert.ok(result.acquired);
      assert.deepEqual(await store.release(result.lock.id), result.lock);
      assert.equal(await store.release(result.lock.id), null);
      assert.equal(await store.get(result.lock.id), null);
      assert.equal(await store.release(randomUUID()), null);
      const again = await store.acquire({ id: randomUUID(), service, who: 'next', ttlSeconds: null });
      assert.ok(again.acquired);
      assert.notEqual(again.lock.id, result.lock.id);
    });

    test('list is oldest first, pages with a true total, and filters exactly', async () => {
      const who = unique('lister');
      const made: Lock[] = [];
      for (let i = 0; i < 5; i++) {
        const result = await store.acquire({
          id: randomUUID(),
          service: unique(`svc${i}`),
          who,
          ttlSeconds: null,
        });
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
      for (const id of ids)
        assert.ok((await store.acquire({ id, service: unique('tie'), who, ttlSeconds: null })).acquired);
      const page = await store.list({ page: 1, perPage: 10, who });
      assert.deepEqual(
        page.locks.map((lock) => lock.id),
        [...ids].sort(),
      );
    });

    test('names keep every Unicode character they were given', async () => {
      const service = `déploiement-🚀-${'ß'.repeat(200)}-${randomUUID().slice(0, 8)}`;
      const who = 'ユーザー "quoted" \\ back\\slash';
      const result = await store.acquire({ id: randomUUID(), service, who, ttlSeconds: null });
      assert.ok(result.acquired);
      const read = await store.get(result.lock.id);
      assert.equal(read?.service, service);
      assert.equal(read?.who, who);
    });

    test('of many concurrent acquires for one service exactly one wins', async () => {
      const service = unique('race');
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          store.acquire({ id: randomUUID(), service, who: `racer-${i}`, ttlSeconds: null }),
        ),
      );
      const winners = results.filter((result) => result.acquired);
      assert.equal(winners.length, 1);
      const winner = winners[0];
      assert.ok(winner?.acquired);
      for (const result of results) {
        if (!result.acquired) assert.deepEqual(result.holder, winner.lock);
      }
    });

    const take = async (service: string, who = 'holder', ttlSeconds: number | null = null): Promise<Lock> => {
      const result = await store.acquire({ id: randomUUID(), service, who, ttlSeconds });
      assert.ok(result.acquired, `acquire of ${service} by ${who}`);
      return result.lock;
    };

    test('a lock without TTL has no expiry; a lock with one expires ttlSeconds after createdAt', async () => {
      const plain = await take(unique('plain'));
      assert.equal(plain.ttlSeconds, null);
      assert.equal(plain.expiresAt, null);
      const leased = await take(unique('leased'), 'holder', 30);
      assert.equal(leased.ttlSeconds, 30);
      assert.equal(leased.expiresAt?.getTime(), leased.createdAt.getTime() + 30_000);
      assert.deepEqual(await store.get(leased.id), leased);
    });

    test('an expired lock is gone for every purpose at once, and its service can be taken', async () => {
      const service = unique('expiring');
      const lock = await take(service, 'crashed-pipeline', 10);
      await subject.advance(9_000);
      assert.deepEqual(await store.get(lock.id), lock, 'still held just before expiry');
      const refused = await store.acquire({ id: randomUUID(), service, who: 'early', ttlSeconds: null });
      assert.equal(refused.acquired, false);
      await subject.advance(1_000);
      assert.equal(await store.get(lock.id), null);
      assert.deepEqual((await store.list({ page: 1, perPage: 10, service })).locks, []);
      assert.equal((await store.list({ page: 1, perPage: 10, service })).total, 0);
      assert.equal(await store.release(lock.id), null);
      assert.equal(await store.renew(lock.id, null), null);
      const next = await take(service, 'next-pipeline');
      assert.ok(next.fencingToken > lock.fencingToken);
      assert.deepEqual((await store.list({ page: 1, perPage: 10, service })).locks, [next]);
    });

    test('renewal extends the lease from now, with its own TTL or a new one', async () => {
      const service = unique('renewed');
      const lock = await take(service, 'long-job', 20);
      await subject.advance(15_000);
      const renewed = await store.renew(lock.id, null);
      assert.ok(renewed);
      assert.equal(renewed.ttlSeconds, 20);
      assert.ok(
        renewed.expiresAt &&
          lock.expiresAt &&
          renewed.expiresAt.getTime() >= lock.expiresAt.getTime() + 15_000,
      );
      const now = subject.now?.();
      if (now) assert.equal(renewed.expiresAt.getTime(), now.getTime() + 20_000);
      assert.equal(renewed.fencingToken, lock.fencingToken, 'renewal keeps the token');
      assert.equal(renewed.createdAt.getTime(), lock.createdAt.getTime());
      await subject.advance(15_000);
      assert.deepEqual(await store.get(lock.id), renewed, 'held past the first expiry');
      const longer = await store.renew(lock.id, 120);
      assert.equal(longer?.ttlSeconds, 120);
      assert.ok(longer?.expiresAt && longer.expiresAt.getTime() >= renewed.expiresAt.getTime() + 100_000);
      assert.deepEqual(await store.get(lock.id), longer);
    });

    test('renewing a lock without TTL keeps it as is, or gives it one', async () => {
      const lock = await take(unique('untimed'));
      assert.deepEqual(await store.renew(lock.id, null), lock);
      const leased = await store.renew(lock.id, 60);
      assert.equal(leased?.ttlSeconds, 60);
      assert.ok(leased?.expiresAt);
    });

    test('renewal never resurrects: not after release, expiry, or another holder', async () => {
      const service = unique('resurrect');
      const lock = await take(service, 'paused-holder', 5);
      await subject.advance(6_000);
      const next = await take(service, 'new-holder', 60);
      assert.equal(await store.renew(lock.id, 60), null);
      assert.deepEqual(await store.get(next.id), next, 'the new holder is untouched');
      assert.equal(await store.renew(randomUUID(), null), null);
      assert.equal(await store.renew('not-a-uuid', null), null);
      await store.release(next.id);
      assert.equal(await store.renew(next.id, null), null);
    });

    test('fencing tokens strictly increase per service across releases and expiries', async () => {
      const service = unique('fenced');
      const tokens: number[] = [];
      for (let round = 0; round < 4; round++) {
        const lock = await take(service, `holder-${round}`, round % 2 ? 1 : null);
        tokens.push(lock.fencingToken);
        if (round % 2) await subject.advance(1_000);
        else await store.release(lock.id);
      }
      for (let i = 1; i < tokens.length; i++) {
        assert.ok((tokens[i] as number) > (tokens[i - 1] as number), `tokens ${tokens}`);
      }
      for (const token of tokens) assert.ok(Number.isSafeInteger(token) && token > 0);
      const other = await take(unique('other-fenced'));
      assert.ok(other.fencingToken > 0, 'another service has its own counter');
    });

    test('a refused acquire does not consume the holder or change its token', async () => {
      const service = unique('refused');
      const lock = await take(service);
      const refused = await store.acquire({ id: randomUUID(), service, who: 'late', ttlSeconds: 5 });
      assert.ok(!refused.acquired);
      assert.deepEqual(refused.holder, lock);
      await store.release(lock.id);
      const next = await take(service);
      assert.ok(next.fencingToken > lock.fencingToken);
    });

    test('model-based: random acquire/release/renew/expire sequences match a simple model', async () => {
      type Op =
        | { kind: 'acquire'; service: number; ttl: number | null }
        | { kind: 'release'; pick: number }
        | { kind: 'renew'; pick: number; ttl: number | null }
        | { kind: 'advance'; seconds: number };
      const op: fc.Arbitrary<Op> = fc.oneof(
        fc.record({
          kind: fc.constant('acquire' as const),
          service: fc.integer({ min: 0, max: 2 }),
          ttl: fc.constantFrom(null, 1, 2, 3),
        }),
        fc.record({ kind: fc.constant('release' as const), pick: fc.nat() }),
        fc.record({ kind: fc.constant('renew' as const), pick: fc.nat(), ttl: fc.constantFrom(null, 1, 2) }),
        fc.record({ kind: fc.constant('advance' as const), seconds: fc.integer({ min: 1, max: 2 }) }),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (ops) => {
          const run = unique('model');
          // The model: the live holder of each service, expiry in model seconds, last token.
          let now = 0;
          const holders = new Map<string, { id: string; expires: number | null; ttl: number | null }>();
          const lastToken = new Map<string, number>();
          const ids: string[] = [];
          const live = (service: string) => {
            const holder = holders.get(service);
            return holder && (holder.expires === null || holder.expires > now) ? holder : undefined;
          };
          for (const step of ops) {
            if (step.kind === 'advance') {
              now += step.seconds;
              await subject.advance(step.seconds * 1000);
            } else if (step.kind === 'acquire') {
              const service = `${run}-${step.service}`;
              const id = randomUUID();
              ids.push(id);
              const result = await store.acquire({ id, service, who: 'model', ttlSeconds: step.ttl });
              const holder = live(service);
              if (holder) {
                assert.ok(!result.acquired, 'at most one holder per service');
                assert.equal(result.holder.id, holder.id);
              } else {
                assert.ok(result.acquired, 'a free or expired service is taken');
                assert.ok(
                  result.lock.fencingToken > (lastToken.get(service) ?? 0),
                  'tokens strictly increase',
                );
                lastToken.set(service, result.lock.fencingToken);
                holders.set(service, {
                  id,
                  expires: step.ttl === null ? null : now + step.ttl,
                  ttl: step.ttl,
                });
              }
            } else {
              const id = ids[step.pick % Math.max(ids.length, 1)] ?? randomUUID();
              const entry = [...holders.entries()].find(([service, h]) => h.id === id && live(service));
              if (step.kind === 'release') {
                const released = await store.release(id);
                assert.equal(released?.id ?? null, entry ? id : null);
                if (entry) holders.delete(entry[0]);
              } else {
                const renewed = await store.renew(id, step.ttl);
                assert.equal(renewed?.id ?? null, entry ? id : null, 'renewal never resurrects');
                if (entry) {
                  const ttl = step.ttl ?? entry[1].ttl;
                  entry[1].ttl = ttl;
                  entry[1].expires = ttl === null ? null : now + ttl;
                }
              }
            }
          }
          for (let service = 0; service < 3; service++) {
            const name = `${run}-${service}`;
            const listed = await store.list({ page: 1, perPage: 10, service: name });
            assert.deepEqual(
              listed.locks.map((lock) => lock.id),
              live(name) ? [live(name)?.id] : [],
            );
          }
        }),
        { numRuns: 40 },
      );
    });

    test('ping resolves while the store is open', async () => {
      await store.ping();
    });
  });
}
