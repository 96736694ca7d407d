import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { Lock } from '../../src/core/lock.js';
import { type LockStore, WAITER_LEASE_MS } from '../../src/core/lock-store.js';
import { waitFor, within } from '../support/wait-for.js';

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

    const OWNER = 'replica-a';
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

    /** A lock taken by a token: its name (`owner`, shown) and its identity (`ownerKey`, matched). */
    const takeAs = async (
      service: string,
      name: string,
      key: string | null,
      ttlSeconds: number | null = null,
    ) => {
      const result = await store.acquire({
        id: randomUUID(),
        service,
        who: 'job',
        ttlSeconds,
        owner: name,
        ...(key === null ? {} : { ownerKey: key }),
      });
      assert.ok(result.acquired, `acquire of ${service} by ${name}`);
      return result.lock;
    };

    test('ownership: release and renew match the identity, not the name; without an owner, any', async () => {
      const lock = await takeAs(unique('owned'), 'ci', 'sha256:old');
      assert.equal(lock.owner, 'ci', 'the name is what a lock shows');
      const impostor = { key: 'sha256:new', name: 'ci' };
      assert.equal(await store.renew(lock.id, 60, impostor), null, 'same name, another identity');
      assert.equal(await store.release(lock.id, impostor), null);
      assert.deepEqual(await store.get(lock.id), lock, 'untouched');
      const renewed = await store.renew(lock.id, 60, { key: 'sha256:old', name: 'renamed' });
      assert.equal(renewed?.ttlSeconds, 60, 'the identity renews, whatever its name now');
      assert.equal((await store.release(lock.id, { key: 'sha256:old', name: 'ci' }))?.id, lock.id);
      const other = await takeAs(unique('owned'), 'ci', 'sha256:old');
      assert.equal((await store.release(other.id))?.id, other.id, 'no owner given: any lock (an admin)');
    });

    test('ownership: a lock recorded without an identity (older versions) is matched by its name', async () => {
      const legacy = await takeAs(unique('legacy'), 'ci', null);
      assert.equal(await store.renew(legacy.id, 60, { key: 'sha256:x', name: 'other' }), null);
      assert.equal(await store.release(legacy.id, { key: 'sha256:x', name: 'other' }), null);
      assert.equal((await store.renew(legacy.id, 60, { key: 'sha256:x', name: 'ci' }))?.ttlSeconds, 60);
      assert.equal((await store.release(legacy.id, { key: 'sha256:x', name: 'ci' }))?.id, legacy.id);
      const open = await take(unique('open'));
      assert.equal(open.owner, null);
      assert.equal(
        await store.release(open.id, { key: 'sha256:x', name: 'ci' }),
        null,
        "a lock taken without authentication is no token's",
      );
    });

    test('ownership: a takeover of an expired lock records the new identity', async () => {
      const service = unique('takeover');
      const old = await takeAs(service, 'ci', 'sha256:old', 5);
      await subject.advance(6_000);
      const next = await takeAs(service, 'ci', 'sha256:new', 60);
      assert.ok(next.fencingToken > old.fencingToken);
      assert.equal(await store.renew(next.id, 60, { key: 'sha256:old', name: 'ci' }), null);
      assert.equal(await store.release(next.id, { key: 'sha256:old', name: 'ci' }), null);
      assert.equal((await store.release(next.id, { key: 'sha256:new', name: 'ci' }))?.id, next.id);
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

    test('model-based: random acquire/wait/release/renew/expire/settle sequences match a simple model', async () => {
      type Op =
        | { kind: 'acquire'; service: number; ttl: number | null; wait: boolean }
        | { kind: 'release'; pick: number }
        | { kind: 'renew'; pick: number; ttl: number | null }
        | { kind: 'settle'; service: number }
        | { kind: 'advance'; seconds: number };
      const op: fc.Arbitrary<Op> = fc.oneof(
        fc.record({
          kind: fc.constant('acquire' as const),
          service: fc.integer({ min: 0, max: 2 }),
          ttl: fc.constantFrom(null, 1, 2, 3),
          wait: fc.boolean(),
        }),
        fc.record({ kind: fc.constant('release' as const), pick: fc.nat() }),
        fc.record({ kind: fc.constant('renew' as const), pick: fc.nat(), ttl: fc.constantFrom(null, 1, 2) }),
        fc.record({ kind: fc.constant('settle' as const), service: fc.integer({ min: 0, max: 2 }) }),
        fc.record({ kind: fc.constant('advance' as const), seconds: fc.integer({ min: 1, max: 2 }) }),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
          const run = unique('model');
          // The model: per service, the holder (expiry in model seconds), the queue in
          // arrival order, and the highest fencing token seen.
          let now = 0;
          type Held = { id: string; who: string; expires: number | null; ttl: number | null };
          const holders = new Map<string, Held>();
          const queues = new Map<string, Array<{ id: string; who: string; ttl: number | null }>>();
          const maxToken = new Map<string, number>();
          const ids: string[] = [];
          const live = (service: string) => {
            const holder = holders.get(service);
            return holder && (holder.expires === null || holder.expires > now) ? holder : undefined;
          };
          const grantHead = (service: string): Held | undefined => {
            const head = queues.get(service)?.shift();
            if (!head) return undefined;
            const held = { ...head, expires: head.ttl === null ? null : now + head.ttl };
            holders.set(service, held);
            return held;
          };
          const seeToken = (service: string, token: number, fresh: boolean) => {
            const max = maxToken.get(service) ?? 0;
            if (fresh) assert.ok(token > max, `token ${token} after ${max}: tokens strictly increase`);
            maxToken.set(service, Math.max(max, token));
          };
          for (const step of ops) {
            if (step.kind === 'advance') {
              now += step.seconds;
              await subject.advance(step.seconds * 1000);
              await store.heartbeat(OWNER);
            } else if (step.kind === 'acquire') {
              const service = `${run}-${step.service}`;
              const id = randomUUID();
              const who = `who-${ids.length}`;
              ids.push(id);
              const result = await store.acquire(
                { id, service, who, ttlSeconds: step.ttl },
                step.wait ? { owner: OWNER } : undefined,
              );
              // A free service goes to its oldest waiter before any newcomer.
              const holder = live(service) ?? grantHead(service);
              if (holder) {
                assert.ok(!result.acquired, 'at most one holder per service');
                assert.equal(result.holder.id, holder.id, 'the holder is the one the model expects');
                seeToken(service, result.holder.fencingToken, false);
                if (step.wait) {
                  const queue = queues.get(service) ?? [];
                  queue.push({ id, who, ttl: step.ttl });
                  queues.set(service, queue);
                  assert.equal(result.waiter?.position, queue.length, 'joins at the end of the line');
                } else {
                  assert.equal(result.waiter, null);
                }
              } else {
                assert.ok(result.acquired, 'a free service with nobody waiting is taken');
                seeToken(service, result.lock.fencingToken, true);
                holders.set(service, {
                  id,
                  who,
                  expires: step.ttl === null ? null : now + step.ttl,
                  ttl: step.ttl,
                });
              }
            } else if (step.kind === 'settle') {
              const service = `${run}-${step.service}`;
              const granted = await store.settle(service);
              const expected = live(service) ? undefined : grantHead(service);
              assert.equal(
                granted?.id ?? null,
                expected?.id ?? null,
                'settle grants the head of a free service',
              );
              if (granted) seeToken(service, granted.fencingToken, true);
            } else {
              const id = ids[step.pick % Math.max(ids.length, 1)] ?? randomUUID();
              const entry = [...holders.entries()].find(([service, h]) => h.id === id && live(service));
              if (step.kind === 'release') {
                const released = await store.release(id);
                assert.equal(released?.id ?? null, entry ? id : null);
                if (entry) {
                  holders.delete(entry[0]);
                  grantHead(entry[0]);
                }
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
            const queue = await store.queue(name);
            assert.equal(queue.holder?.id ?? null, live(name)?.id ?? null, 'the holder matches the model');
            assert.deepEqual(
              queue.waiters.map((waiter) => waiter.who),
              (queues.get(name) ?? []).map((waiter) => waiter.who),
              'the line matches the model, in arrival order',
            );
          }
        }),
        { numRuns: 40 },
      );
    });

    const enqueue = async (service: string, who: string, owner = OWNER) => {
      const id = randomUUID();
      const result = await store.acquire({ id, service, who, ttlSeconds: null }, { owner });
      assert.ok(!result.acquired, `${who} should have been queued`);
      assert.ok(result.waiter, `${who} got a place in the queue`);
      return { id, waiter: result.waiter, holder: result.holder };
    };
    /** onChange may be asynchronous (PostgreSQL's NOTIFY): wait for it, boundedly. */
    const changeSeen = (service: string): Promise<void> => {
      let stop = () => {};
      const seen = new Promise<void>((resolve) => {
        stop = store.onChange((changed) => {
          if (changed === service) resolve();
        });
      });
      return within(seen, { what: `onChange for ${service}`, timeoutMs: 5000 }).finally(() => stop());
    };

    test('queue: a refused acquire that asks to wait joins the queue in arrival order', async () => {
      const service = unique('queued');
      const holder = await take(service, 'holder');
      const first = await enqueue(service, 'first');
      const second = await enqueue(service, 'second');
      assert.deepEqual(first.holder.id, holder.id);
      assert.equal(first.waiter.position, 1);
      assert.equal(second.waiter.position, 2);
      assert.ok(second.waiter.ticket > first.waiter.ticket);
      assert.equal(first.waiter.who, 'first');
      assert.equal((await store.get(holder.id))?.waiters, 2);
      const queue = await store.queue(service);
      assert.equal(queue.holder?.id, holder.id);
      assert.deepEqual(
        queue.waiters.map((waiter) => [waiter.who, waiter.position]),
        [
          ['first', 1],
          ['second', 2],
        ],
      );
      const refused = await store.acquire({ id: randomUUID(), service, who: 'impatient', ttlSeconds: null });
      assert.ok(!refused.acquired && refused.waiter === null, 'without a QueueRequest nobody is queued');
      assert.equal((await store.queue(service)).waiters.length, 2);
    });

    test("queue: a granted waiter keeps its request's owner and identity", async () => {
      const service = unique('owned-wait');
      const holder = await take(service, 'holder');
      const id = randomUUID();
      const queued = await store.acquire(
        { id, service, who: 'waiter', ttlSeconds: null, owner: 'ci', ownerKey: 'sha256:waiter' },
        { owner: OWNER },
      );
      assert.ok(!queued.acquired && queued.waiter);
      await store.release(holder.id);
      const granted = await waitFor(async () => (await store.get(id)) ?? (await store.settle(service)), {
        what: 'the grant',
      });
      assert.equal(granted.owner, 'ci');
      assert.equal(await store.release(id, { key: 'sha256:other', name: 'ci' }), null);
      assert.equal((await store.release(id, { key: 'sha256:waiter', name: 'ci' }))?.id, id);
    });

    test('queue: a release grants the oldest waiter in the same step, under its request id', async () => {
      const service = unique('handoff');
      const holder = await take(service, 'holder', 30);
      const first = await enqueue(service, 'first');
      const second = await enqueue(service, 'second');
      const seen = changeSeen(service);
      await store.release(holder.id);
      await seen;
      const granted = await store.get(first.id);
      assert.ok(granted, 'the first waiter holds the lock');
      assert.equal(granted.who, 'first');
      assert.ok(granted.fencingToken > holder.fencingToken);
      assert.equal(granted.waiters, 1);
      assert.equal(await store.leave(first.waiter.ticket), false, 'a granted waiter is no longer waiting');
      const queue = await store.queue(service);
      assert.equal(queue.holder?.id, first.id);
      assert.deepEqual(
        queue.waiters.map((waiter) => [waiter.who, waiter.position]),
        [['second', 1]],
      );
      await store.release(first.id);
      assert.equal((await store.get(second.id))?.who, 'second');
      await store.release(second.id);
      assert.deepEqual(await store.queue(service), { service, holder: null, holders: [], waiters: [] });
    });

    test('queue: after the holder expires the oldest waiter is granted; newcomers never overtake', async () => {
      const service = unique('expiry-handoff');
      await take(service, 'crashed', 5);
      const first = await enqueue(service, 'first');
      await subject.advance(6_000);
      await store.heartbeat(OWNER);
      const newcomer = await store.acquire({ id: randomUUID(), service, who: 'newcomer', ttlSeconds: null });
      assert.ok(!newcomer.acquired);
      assert.equal(newcomer.holder.id, first.id, 'the waiter got it, not the newcomer');
      assert.equal((await store.get(first.id))?.who, 'first');
    });

    test('queue: settle grants a free service to its oldest waiter, once', async () => {
      const service = unique('settle');
      await take(service, 'crashed', 5);
      const first = await enqueue(service, 'first');
      assert.equal(await store.settle(service), null, 'nothing to settle while the holder is live');
      await subject.advance(5_000);
      await store.heartbeat(OWNER);
      const granted = await store.settle(service);
      assert.equal(granted?.id, first.id);
      assert.equal(await store.settle(service), null);
      assert.equal(await store.settle(unique('nobody')), null);
    });

    test('queue: a waiter that leaves is skipped; leaving twice is false', async () => {
      const service = unique('leaver');
      const holder = await take(service);
      const gone = await enqueue(service, 'gone');
      const stays = await enqueue(service, 'stays');
      assert.equal(await store.leave(gone.waiter.ticket), true);
      assert.equal(await store.leave(gone.waiter.ticket), false);
      assert.equal((await store.queue(service)).waiters[0]?.who, 'stays');
      await store.release(holder.id);
      assert.equal(await store.get(gone.id), null);
      assert.equal((await store.get(stays.id))?.who, 'stays');
    });

    test('queue: waiters of an owner that stopped its heartbeat are skipped', async () => {
      const service = unique('orphans');
      const holder = await take(service);
      const orphan = await enqueue(service, 'orphan', 'dead-replica');
      const alive = await enqueue(service, 'alive', 'live-replica');
      await subject.advance(WAITER_LEASE_MS - 5_000);
      await store.heartbeat('live-replica');
      await subject.advance(6_000);
      assert.deepEqual(
        (await store.queue(service)).waiters.map((waiter) => [waiter.who, waiter.position]),
        [['alive', 1]],
      );
      await store.release(holder.id);
      assert.equal(await store.get(orphan.id), null);
      assert.equal((await store.get(alive.id))?.who, 'alive');
    });

    test('queue: 20 concurrent waiters get distinct tickets and are granted in ticket order', async () => {
      const service = unique('fifo');
      let current = (await take(service, 'holder')).id;
      const queued = await Promise.all(Array.from({ length: 20 }, (_, i) => enqueue(service, `waiter-${i}`)));
      const byTicket = [...queued].sort((a, b) => a.waiter.ticket - b.waiter.ticket);
      assert.equal(new Set(queued.map((q) => q.waiter.ticket)).size, 20);
      assert.deepEqual(
        byTicket.map((q) => q.waiter.position),
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
      for (const next of byTicket) {
        await store.release(current);
        assert.equal((await store.get(next.id))?.who, next.waiter.who);
        current = next.id;
      }
      await store.release(current);
    });

    /** A service's history, oldest first, as [type, who, reason] (plus more when asked). */
    const historyOf = async (service: string) => (await store.history({ service, limit: 1000 })).reverse();
    const summary = async (service: string) =>
      (await historyOf(service)).map((event) => [event.type, event.who, event.reason] as const);

    test('history: acquire, renew and release are recorded with the lock, newest first', async () => {
      const service = unique('history');
      const lock = await take(service, 'ci-1', 60);
      await subject.advance(2_000);
      const renewed = await store.renew(lock.id, 120);
      await subject.advance(3_000);
      const refused = await store.acquire({ id: randomUUID(), service, who: 'refused', ttlSeconds: null });
      assert.equal(refused.acquired, false);
      await store.release(lock.id);
      const events = await store.history({ service, limit: 10 });
      assert.deepEqual(
        events.map((event) => event.type),
        ['released', 'renewed', 'acquired'],
        'newest first; a refused acquire records nothing',
      );
      const [released, renewal, acquired] = events;
      assert.ok(released && renewal && acquired);
      assert.ok(released.id > renewal.id && renewal.id > acquired.id);
      for (const event of events) {
        assert.equal(event.lockId, lock.id);
        assert.equal(event.service, service);
        assert.equal(event.who, 'ci-1');
        assert.equal(event.fencingToken, lock.fencingToken);
        assert.deepEqual(event.createdAt, lock.createdAt);
      }
      assert.deepEqual(acquired.at, lock.createdAt);
      assert.equal(acquired.ttlSeconds, 60);
      assert.deepEqual(renewal.expiresAt, renewed?.expiresAt);
      assert.equal(renewal.ttlSeconds, 120);
      assert.equal(acquired.heldMs, null);
      if (subject.now) assert.equal(released.heldMs, 5_000);
      else assert.ok(released.heldMs !== null && released.heldMs >= 5_000 && released.heldMs < 60_000);
      assert.equal(released.reason, null);
    });

    test('history: filters by service, who, time and id, and pages newest first', async () => {
      const service = unique('filtered');
      const other = unique('other');
      const first = await take(service, 'alice');
      await store.release(first.id);
      await subject.advance(10_000);
      const middle = (await historyOf(service)).at(-1)?.at;
      assert.ok(middle);
      const second = await take(service, 'bob');
      await take(other, 'alice');
      await store.release(second.id);
      const all = await store.history({ service, limit: 100 });
      assert.deepEqual(
        all.map((event) => [event.type, event.who]),
        [
          ['released', 'bob'],
          ['acquired', 'bob'],
          ['released', 'alice'],
          ['acquired', 'alice'],
        ],
      );
      const byWho = await store.history({ who: 'alice', limit: 100 });
      assert.ok(byWho.every((event) => event.who === 'alice'));
      assert.deepEqual(
        byWho.filter((event) => event.service === service || event.service === other).map((e) => e.service),
        [other, service, service],
      );
      assert.deepEqual(
        (await store.history({ service, who: 'bob', limit: 100 })).map((event) => event.type),
        ['released', 'acquired'],
      );
      const later = new Date(middle.getTime() + 1);
      assert.deepEqual(
        (await store.history({ service, since: later, limit: 100 })).map((event) => event.who),
        ['bob', 'bob'],
        'since is inclusive of later events only',
      );
      assert.deepEqual(
        (await store.history({ service, until: later, limit: 100 })).map((event) => event.who),
        ['alice', 'alice'],
      );
      const page1 = await store.history({ service, limit: 3 });
      const page2 = await store.history({ service, limit: 3, before: page1.at(-1)?.id });
      assert.deepEqual([...page1, ...page2], all);
    });

    test('history: an expiry is recorded by the sweep, held until expiresAt, and the next waiter is granted', async () => {
      const service = unique('swept');
      const lock = await take(service, 'crashed', 10);
      const waiter = await enqueue(service, 'patient');
      await subject.advance(9_000);
      const early = await store.sweep(1000);
      assert.ok(!early.expired.some((expired) => expired.id === lock.id), 'not expired yet');
      await store.heartbeat(OWNER);
      await subject.advance(6_000);
      const swept = await store.sweep(1000);
      assert.deepEqual(
        swept.expired.filter((expired) => expired.service === service).map((expired) => expired.id),
        [lock.id],
      );
      assert.deepEqual(
        swept.granted.filter((granted) => granted.service === service).map((granted) => granted.id),
        [waiter.id],
      );
      assert.equal((await store.get(waiter.id))?.who, 'patient');
      assert.deepEqual(await summary(service), [
        ['acquired', 'crashed', null],
        ['queued', 'patient', null],
        ['expired', 'crashed', null],
        ['dequeued', 'patient', 'granted'],
        ['acquired', 'patient', null],
      ]);
      const events = await historyOf(service);
      assert.equal(events.find((event) => event.type === 'expired')?.heldMs, 10_000);
      assert.equal(events.find((event) => event.type === 'queued')?.lockId, waiter.id);
      assert.equal(events.find((event) => event.type === 'queued')?.waiters, 1);
      assert.equal(events.find((event) => event.type === 'queued')?.fencingToken, null);
      assert.equal(events.at(-1)?.waiters, 0);
      assert.deepEqual(
        (await store.sweep(1000)).expired.filter((e) => e.service === service),
        [],
      );
    });

    test('history: taking over an expired lock records its expiry first', async () => {
      const service = unique('takeover');
      const lock = await take(service, 'gone', 5);
      await subject.advance(6_000);
      const next = await take(service, 'next');
      assert.deepEqual(await summary(service), [
        ['acquired', 'gone', null],
        ['expired', 'gone', null],
        ['acquired', 'next', null],
      ]);
      const expired = (await historyOf(service))[1];
      assert.equal(expired?.lockId, lock.id);
      assert.equal(expired?.heldMs, 5_000);
      assert.ok(next.fencingToken > lock.fencingToken);
    });

    test('force release: ends any holder, records the reason, grants the next waiter', async () => {
      const service = unique('forced');
      const lock = await take(service, 'stuck-job');
      const waiter = await enqueue(service, 'next-job');
      const forced = await store.forceRelease(lock.id, 'job hung for 3 hours <script>');
      assert.equal(forced?.id, lock.id);
      assert.equal(await store.get(lock.id), null);
      assert.equal((await store.get(waiter.id))?.who, 'next-job');
      assert.equal(await store.forceRelease(lock.id, 'again'), null);
      assert.equal(await store.forceRelease(randomUUID(), null), null);
      assert.equal(await store.forceRelease('not-a-uuid', null), null);
      assert.deepEqual(await summary(service), [
        ['acquired', 'stuck-job', null],
        ['queued', 'next-job', null],
        ['force-released', 'stuck-job', 'job hung for 3 hours <script>'],
        ['dequeued', 'next-job', 'granted'],
        ['acquired', 'next-job', null],
      ]);
      const bare = await take(unique('forced-bare'));
      await store.forceRelease(bare.id, null);
      const [, ended] = await historyOf(bare.service);
      assert.deepEqual([ended?.type, ended?.reason], ['force-released', null]);
      // The force release said so for itself only: a plain release after it is a release.
      await store.release(waiter.id);
      assert.deepEqual((await summary(service)).at(-1), ['released', 'next-job', null]);
    });

    test('history: waiters that leave are dequeued as left, those of a dead replica as abandoned', async () => {
      const service = unique('leaving');
      const holder = await take(service, 'holder');
      const leaver = await enqueue(service, 'leaver');
      await enqueue(service, 'orphan', 'dead-replica');
      await store.leave(leaver.waiter.ticket);
      await subject.advance(WAITER_LEASE_MS + 1_000);
      await store.release(holder.id);
      // A dead waiter is dropped by the next grant or, with nobody left to grant, the sweep.
      await store.sweep(1000);
      assert.deepEqual(await summary(service), [
        ['acquired', 'holder', null],
        ['queued', 'leaver', null],
        ['queued', 'orphan', null],
        ['dequeued', 'leaver', 'left'],
        ['released', 'holder', null],
        ['dequeued', 'orphan', 'abandoned'],
      ]);
      const waiters = (await historyOf(service)).map((event) => event.waiters);
      assert.deepEqual(waiters.slice(0, 4), [0, 1, 2, 1]);
    });

    test('events: a tail from the cursor gets every later event once, in id order', async () => {
      const service = unique('tail');
      const cursor = await store.eventCursor();
      assert.deepEqual(await store.readEvents(cursor, 100), []);
      const lock = await take(service, 'a');
      await store.release(lock.id);
      const seen = (await store.readEvents(cursor, 100)).filter((event) => event.service === service);
      assert.deepEqual(
        seen.map((event) => event.type),
        ['acquired', 'released'],
      );
      const last = seen.at(-1)?.id ?? cursor;
      assert.equal((await store.readEvents(last, 100)).filter((e) => e.service === service).length, 0);
      assert.ok((await store.eventCursor()) >= last);
      const [firstOnly] = await store.readEvents(cursor, 1);
      assert.ok(firstOnly && firstOnly.id <= (seen[0]?.id ?? 0));
    });

    test('events: a tail during concurrent changes misses none and repeats none', async () => {
      const service = unique('busy');
      const cursor = await store.eventCursor();
      const tailed: number[] = [];
      let done = false;
      /** Changes the writers have made so far. */
      let written = 0;
      const tail = (async () => {
        let after = cursor;
        // Bounded: 2000 reads at most; it stops once the writers finished and it caught up.
        for (let round = 0; round < 2000; round++) {
          const events = await store.readEvents(after, 50);
          for (const event of events) tailed.push(event.id);
          after = events.at(-1)?.id ?? after;
          if (events.length > 0) continue;
          if (done) {
            const final = await store.readEvents(after, 1000);
            if (final.length === 0) return;
            for (const event of final) tailed.push(event.id);
            after = final.at(-1)?.id ?? after;
          } else {
            // Caught up: read again once the writers have made another change.
            const seen = written;
            await waitFor(() => written > seen || done, { what: 'the writers to make another change' });
          }
        }
        assert.fail('the tail did not catch up within 2000 reads');
      })();
      await Promise.all(
        Array.from({ length: 8 }, async (_, worker) => {
          for (let round = 0; round < 15; round++) {
            const lock = await take(`${service}-${worker}`, `w${worker}`);
            written++;
            await store.release(lock.id);
            written++;
          }
        }),
      );
      done = true;
      await tail;
      const recorded = (await store.readEvents(cursor, 10_000)).map((event) => event.id);
      assert.deepEqual(
        tailed,
        [...tailed].sort((a, b) => a - b),
        'in id order',
      );
      assert.equal(new Set(tailed).size, tailed.length, 'no repeats');
      assert.deepEqual(tailed, recorded, 'every committed event, once');
      const ours = (await store.readEvents(cursor, 10_000)).filter((e) => e.service.startsWith(service));
      assert.equal(ours.length, 8 * 15 * 2);
    });

    const NOTE = 'deploying v2.3 — ask #release';
    const LINK = 'https://ci.example.com/acme/app/actions/runs/42';

    test('notes: an acquire keeps its note and link, and every read shows them', async () => {
      const service = unique('noted');
      const id = randomUUID();
      const taken = await store.acquire({ id, service, who: 'ci', ttlSeconds: 60, note: NOTE, link: LINK });
      assert.ok(taken.acquired);
      assert.equal(taken.lock.note, NOTE);
      assert.equal(taken.lock.link, LINK);
      assert.equal((await store.get(id))?.note, NOTE);
      const listed = await store.list({ page: 1, perPage: 10, service });
      assert.deepEqual(
        listed.locks.map((lock) => [lock.note, lock.link]),
        [[NOTE, LINK]],
      );
      assert.equal((await store.snapshot(service))[0]?.link, LINK);
      const refused = await store.acquire({ id: randomUUID(), service, who: 'other', ttlSeconds: null });
      assert.ok(!refused.acquired);
      assert.equal(refused.holder.note, NOTE, 'a refusal names the holder with its note');
      const plain = await take(unique('plain-note'));
      assert.equal(plain.note, null);
      assert.equal(plain.link, null);
    });

    test('notes: a waiter shows its note in the queue and carries it into its lock', async () => {
      const service = unique('noted-wait');
      const holder = await take(service);
      const id = randomUUID();
      const queued = await store.acquire(
        { id, service, who: 'waiter', ttlSeconds: null, note: 'next: migrate', link: LINK },
        { owner: OWNER },
      );
      assert.ok(!queued.acquired && queued.waiter);
      assert.equal(queued.waiter.note, 'next: migrate');
      const [waiting] = (await store.queue(service)).waiters;
      assert.deepEqual([waiting?.note, waiting?.link], ['next: migrate', LINK]);
      await store.release(holder.id);
      const granted = await waitFor(async () => (await store.get(id)) ?? (await store.settle(service)), {
        what: 'the grant',
      });
      assert.deepEqual([granted.note, granted.link], ['next: migrate', LINK]);
      const types = (await store.history({ service, limit: 10 })).map((event) => [event.type, event.note]);
      assert.deepEqual(types.slice(0, 3), [
        ['acquired', 'next: migrate'],
        ['dequeued', 'next: migrate'],
        ['released', null],
      ]);
    });

    test("notes: every lock of a group carries the request's note and link", async () => {
      const [a, b] = [unique('noted-group-a'), unique('noted-group-b')];
      const claim = (service: string) =>
        ({ service, label: null, mode: 'exclusive', limit: null, quantity: 1 }) as const;
      const id = randomUUID();
      const result = await store.acquire({
        id,
        service: a,
        claims: [claim(a), claim(b)],
        group: true,
        priority: 0,
        who: 'group',
        ttlSeconds: null,
        note: NOTE,
        link: LINK,
      });
      assert.ok(result.acquired);
      assert.deepEqual(
        result.locks.map((lock) => [lock.service, lock.note, lock.link]),
        [
          [a, NOTE, LINK],
          [b, NOTE, LINK],
        ],
      );
      assert.deepEqual(
        (await store.granted(id)).map((lock) => lock.note),
        [NOTE, NOTE],
      );
    });

    test('notes: setNote changes the note alone, records noted, and only for its holder', async () => {
      const service = unique('set-note');
      const id = randomUUID();
      const taken = await store.acquire({
        id,
        service,
        who: 'ci',
        ttlSeconds: 60,
        owner: 'ci',
        ownerKey: 'sha256:ci',
        note: 'first',
        link: LINK,
      });
      assert.ok(taken.acquired);
      await subject.advance(1_000);
      assert.equal(await store.setNote(id, 'stolen?', { key: 'sha256:other', name: 'ci' }), null);
      const noted = await store.setNote(id, 'second', { key: 'sha256:ci', name: 'ci' });
      assert.ok(noted);
      assert.equal(noted.note, 'second');
      assert.equal(noted.link, LINK, 'the link stays');
      assert.deepEqual(noted.expiresAt, taken.lock.expiresAt, 'the lease stays');
      assert.equal(noted.fencingToken, taken.lock.fencingToken);
      // The same note again changes nothing, and records nothing.
      assert.equal((await store.setNote(id, 'second'))?.note, 'second');
      assert.equal((await store.setNote(id, null))?.note, null);
      await store.release(id);
      assert.equal(await store.setNote(id, 'after'), null, 'a lock that is not held');
      assert.equal(await store.setNote(randomUUID(), 'unknown'), null);
      const events = await store.history({ service, limit: 10 });
      assert.deepEqual(
        events.map((event) => [event.type, event.note, event.link]),
        [
          ['released', null, LINK],
          ['noted', null, LINK],
          ['noted', 'second', LINK],
          ['acquired', 'first', LINK],
        ],
        'each event has the note as it was then',
      );
      const [, , second] = events;
      assert.equal(second?.fencingToken, taken.lock.fencingToken);
      assert.deepEqual(second?.expiresAt, taken.lock.expiresAt);
    });

    test('steal: ends the holder and grants the service to the thief ahead of the queue, in one step', async () => {
      const service = unique('steal');
      const holder = await store.acquire({
        id: randomUUID(),
        service,
        who: 'old',
        ttlSeconds: 60,
        owner: 'ci',
        ownerKey: 'sha256:ci',
        note: 'nightly',
      });
      assert.ok(holder.acquired);
      const waiterId = randomUUID();
      const queued = await store.acquire(
        { id: waiterId, service, who: 'patient', ttlSeconds: null },
        { owner: OWNER },
      );
      assert.ok(!queued.acquired && queued.waiter);
      const id = randomUUID();
      const request = {
        id,
        who: 'oncall',
        ttlSeconds: 30,
        owner: 'admin',
        ownerKey: 'sha256:admin',
        note: 'hotfix',
      };
      const result = await store.steal(holder.lock.id, request, 'prod is down');
      assert.ok(result);
      assert.equal(result.stolen.id, holder.lock.id);
      assert.equal(result.lock.id, id);
      assert.deepEqual(
        [result.lock.service, result.lock.who, result.lock.owner, result.lock.note, result.lock.ttlSeconds],
        [service, 'oncall', 'admin', 'hotfix', 30],
      );
      assert.ok(result.lock.fencingToken > holder.lock.fencingToken, 'a new, larger token');
      assert.equal(await store.get(holder.lock.id), null);
      assert.equal(
        await store.renew(holder.lock.id, null, { key: 'sha256:ci', name: 'ci' }),
        null,
        'the old holder lost it',
      );
      assert.equal(await store.release(holder.lock.id), null);
      const queue = await store.queue(service);
      assert.deepEqual(
        queue.holders.map((lock) => lock.id),
        [id],
      );
      assert.deepEqual(
        queue.waiters.map((waiter) => waiter.lockId),
        [waiterId],
        'the waiter still waits: the thief went ahead of it',
      );
      const events = await store.history({ service, limit: 10 });
      const [acquired, stolen] = events;
      assert.deepEqual(
        events.slice(0, 2).map((event) => event.type),
        ['acquired', 'stolen'],
      );
      assert.equal(stolen?.lockId, holder.lock.id);
      assert.equal(stolen?.who, 'old');
      assert.equal(stolen?.owner, 'ci');
      assert.equal(stolen?.reason, 'prod is down');
      assert.equal(stolen?.note, 'nightly');
      assert.deepEqual(stolen?.stolenBy, { lockId: id, who: 'oncall', owner: 'admin' });
      assert.equal(acquired?.lockId, id);
      assert.equal(acquired?.stolenBy, null);
      // Released, the thief's lock goes to the waiter as any lock would.
      await store.release(id);
      const granted = await waitFor(
        async () => (await store.get(waiterId)) ?? (await store.settle(service)),
        {
          what: 'the waiter granted',
        },
      );
      assert.equal(granted.who, 'patient');
    });

    test('steal: keeps the mode and limit of the lock it ends; nothing to steal is null', async () => {
      const service = unique('steal-shared');
      const claim = { service, label: null, mode: 'shared', limit: null, quantity: 1 } as const;
      const reader = await store.acquire({
        id: randomUUID(),
        service,
        claims: [claim],
        who: 'reader',
        ttlSeconds: null,
      });
      assert.ok(reader.acquired);
      const request = {
        id: randomUUID(),
        who: 'admin',
        ttlSeconds: null,
        owner: null,
        ownerKey: null,
        note: null,
      };
      const result = await store.steal(reader.lock.id, request, 'maintenance');
      assert.equal(result?.lock.mode, 'shared');
      assert.equal(result?.lock.limit, reader.lock.limit);
      assert.equal(
        await store.steal(reader.lock.id, { ...request, id: randomUUID() }, 'again'),
        null,
        'gone already',
      );
      assert.equal(await store.steal(randomUUID(), { ...request, id: randomUUID() }, 'unknown'), null);
      const expiring = await take(unique('steal-expired'), 'old', 1);
      await subject.advance(2_000);
      assert.equal(
        await store.steal(expiring.id, { ...request, id: randomUUID() }, 'too late'),
        null,
        'an expired lock',
      );
    });

    test('snapshot: every held lock, oldest first, or those of one service', async () => {
      const service = unique('snap');
      const a = await take(`${service}-a`);
      await subject.advance(1_000);
      const b = await take(`${service}-b`);
      const all = (await store.snapshot()).filter((lock) => lock.service.startsWith(service));
      assert.deepEqual(all, [a, b]);
      assert.deepEqual(await store.snapshot(`${service}-b`), [b]);
      assert.deepEqual(await store.snapshot(unique('none')), []);
    });

    test('snapshotPage: held locks a page at a time, in id order, each once however the others change', async () => {
      const service = unique('paged');
      const locks = [];
      for (let i = 0; i < 7; i++) locks.push(await take(`${service}-${i}`));
      const ours = (page: Lock[]) => page.filter((lock) => lock.service.startsWith(service));
      const seen: Lock[] = [];
      let after = '';
      for (let round = 0; round < 50; round++) {
        const page = await store.snapshotPage({ after, limit: 2 });
        assert.ok(page.length <= 2);
        seen.push(...ours(page));
        const last = page.at(-1);
        if (!last) break;
        assert.ok(
          page.every((lock, i) => i === 0 || (page[i - 1]?.id ?? '') < lock.id),
          'id order',
        );
        after = last.id;
        // Between pages, a lock not yet read goes and another comes: the others stay listed.
        if (round === 0) {
          const unread = locks.find((lock) => lock.id > after);
          if (unread) await store.release(unread.id);
          await take(`${service}-new`);
        }
      }
      const ids = seen.map((lock) => lock.id);
      assert.equal(new Set(ids).size, ids.length, 'no lock twice');
      const held = new Set(ours(await store.snapshot()).map((lock) => lock.id));
      for (const lock of locks)
        if (held.has(lock.id)) assert.ok(ids.includes(lock.id), 'every lock held throughout');
      const one = await store.snapshotPage({ service: `${service}-3`, after: '', limit: 10 });
      assert.deepEqual(
        one.map((lock) => lock.service),
        held.has(locks[3]?.id ?? '') ? [`${service}-3`] : [],
      );
      const third = locks[3]?.id ?? '';
      assert.deepEqual(await store.snapshotPage({ service: `${service}-3`, after: third, limit: 10 }), []);
    });

    test('history retention: old events are pruned oldest first and the floor rises', async () => {
      const service = unique('pruned');
      const old = await take(service, 'old');
      await store.release(old.id);
      const oldEvents = await historyOf(service);
      await subject.advance(60_000);
      const fresh = await take(service, 'fresh');
      assert.ok((await store.historyFloor()) < (oldEvents[0]?.id ?? 0));
      // Everything recorded 30 s ago or more goes; batches of 1000 at most, bounded rounds.
      for (let round = 0; round < 1000 && (await store.pruneHistory(30_000, 1000)) > 0; round++);
      assert.deepEqual(
        (await historyOf(service)).map((event) => [event.type, event.who]),
        [['acquired', 'fresh']],
      );
      assert.ok((await store.historyFloor()) >= (oldEvents.at(-1)?.id ?? Infinity));
      assert.equal(await store.pruneHistory(30_000, 1000), 0);
      assert.equal((await store.get(fresh.id))?.who, 'fresh', 'pruning touches the history only');
    });

    test('ping resolves while the store is open', async () => {
      await store.ping();
    });
  });
}
