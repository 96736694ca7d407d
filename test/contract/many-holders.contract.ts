/**
 * The many-holders part of the LockStore contract (issue 16): semaphores, shared and
 * exclusive modes, priorities, labels, groups and the resource registry, each rule proved
 * on every store with the injected clock. Written from the rules in core/grants.ts's header
 * and the brief, not from a store: a failure here is a store bug until shown otherwise.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { AcquireRequest, Claim, Lock, LockMode, Waiter } from '../../src/core/lock.js';
import type { AcquireResult, KeyRefusal, LockStore } from '../../src/core/lock-store.js';
import type { StoreUnderTest } from './lock-store.contract.js';

const OWNER = 'replica-many';

/** One claim on a service by name. */
export function serviceClaim(
  service: string,
  options: { mode?: LockMode; limit?: number | null } = {},
): Claim {
  return {
    service,
    label: null,
    mode: options.mode ?? 'exclusive',
    limit: options.limit ?? null,
    quantity: 1,
  };
}

/** One claim on `quantity` resources carrying `label`. */
export function labelClaim(label: string, options: { mode?: LockMode; quantity?: number } = {}): Claim {
  return {
    service: null,
    label,
    mode: options.mode ?? 'exclusive',
    limit: null,
    quantity: options.quantity ?? 1,
  };
}

export interface RequestOptions {
  readonly who?: string;
  readonly ttlSeconds?: number | null;
  readonly priority?: number;
  readonly id?: string;
}

/** A single acquire of one claim (its lock gets the request's id). */
export function singleRequest(claim: Claim, options: RequestOptions = {}): AcquireRequest {
  return {
    id: options.id ?? randomUUID(),
    service: claim.service ?? claim.label ?? '',
    claims: [claim],
    priority: options.priority ?? 0,
    who: options.who ?? 'someone',
    ttlSeconds: options.ttlSeconds ?? null,
  };
}

/** A group acquire (its locks get new ids and the request's id as groupId). */
export function groupRequest(claims: readonly Claim[], options: RequestOptions = {}): AcquireRequest {
  const first = claims[0];
  return {
    id: options.id ?? randomUUID(),
    service: first?.service ?? first?.label ?? '',
    claims,
    group: true,
    priority: options.priority ?? 0,
    who: options.who ?? 'group',
    ttlSeconds: options.ttlSeconds ?? null,
  };
}

const ids = (locks: readonly Lock[]) => locks.map((lock) => lock.id);
const sortedIds = (locks: readonly Lock[]) => ids(locks).sort();

export function runManyHoldersContract(name: string, open: () => Promise<StoreUnderTest>): void {
  describe(`LockStore contract, many holders: ${name}`, () => {
    let subject: StoreUnderTest;
    let store: LockStore;
    const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

    before(async () => {
      subject = await open();
      store = subject.store;
    });
    after(async () => {
      await subject.cleanup();
    });

    /** Any acquire, with the refusals only a keyed acquire's type names (LIMIT_MISMATCH, NO_SUCH_LABEL). */
    const acquire = (request: AcquireRequest, wait = false): Promise<AcquireResult | KeyRefusal> =>
      store.acquire(request, wait ? { owner: OWNER } : undefined, undefined);

    const granted = async (request: AcquireRequest, wait = false): Promise<Lock[]> => {
      const result = await acquire(request, wait);
      assert.ok(result.acquired, `${request.who} should have been granted: ${describeResult(result)}`);
      return [...result.locks];
    };
    const grantedOne = async (request: AcquireRequest): Promise<Lock> => {
      const locks = await granted(request);
      assert.equal(locks.length, 1);
      const [lock] = locks;
      assert.ok(lock);
      return lock;
    };
    const refused = async (request: AcquireRequest, wait = false) => {
      const result = await acquire(request, wait);
      assert.ok(!result.acquired, `${request.who} should have been refused`);
      assert.ok('holders' in result, `${request.who}: a refusal with holders, got ${describeResult(result)}`);
      return result;
    };
    const queued = async (request: AcquireRequest): Promise<Waiter> => {
      const result = await refused(request, true);
      assert.ok(result.waiter, `${request.who} got a place in the queue`);
      return result.waiter;
    };
    /** Moves the clock a little, so that createdAt orders the locks taken around it. */
    const tick = () => subject.advance(1000).then(() => store.heartbeat(OWNER));
    const holdersOf = async (service: string) => [...(await store.queue(service)).holders];
    const waitersOf = async (service: string) =>
      (await store.queue(service)).waiters.map((waiter) => waiter.groupId ?? waiter.lockId);
    const put = (
      resource: string,
      spec: { labels?: string[]; capacity?: number; properties?: Record<string, string> } = {},
    ) =>
      store.putResource({
        name: resource,
        labels: spec.labels ?? [],
        properties: spec.properties ?? {},
        capacity: spec.capacity ?? 1,
        description: null,
      });

    describe('semaphores', () => {
      test('limit n admits n holders, each with its own id and a growing token; the n+1th is refused naming all', async () => {
        const service = unique('sem');
        const locks: Lock[] = [];
        for (let i = 0; i < 3; i++) {
          const request = singleRequest(serviceClaim(service, { limit: 3 }), { who: `holder-${i}` });
          const lock = await grantedOne(request);
          assert.equal(lock.id, request.id, 'a single acquire keeps its id');
          assert.equal(lock.service, service);
          assert.equal(lock.limit, 3);
          assert.equal(lock.mode, 'exclusive');
          assert.equal(lock.groupId, null);
          assert.equal(lock.resource, null);
          locks.push(lock);
          await tick();
        }
        const tokens = locks.map((lock) => lock.fencingToken);
        assert.deepEqual(
          tokens,
          [...tokens].sort((a, b) => a - b),
          'tokens grow in grant order',
        );
        assert.equal(new Set(tokens).size, 3, 'every holder has its own token');
        const fourth = await refused(singleRequest(serviceClaim(service, { limit: 3 }), { who: 'fourth' }));
        assert.equal(fourth.holder.id, locks[0]?.id, 'existing lock: the oldest holder');
        assert.deepEqual(ids(fourth.holders), ids(locks), 'holders: all of them, oldest first');
        assert.equal(fourth.waiter, null);
        const queue = await store.queue(service);
        assert.equal(queue.holder?.id, locks[0]?.id);
        assert.deepEqual(ids(queue.holders), ids(locks));
        // A freed slot is taken with a token above every earlier one.
        assert.equal((await store.release(locks[1]?.id ?? ''))?.id, locks[1]?.id);
        const next = await grantedOne(singleRequest(serviceClaim(service, { limit: 3 }), { who: 'next' }));
        assert.ok(next.fencingToken > Math.max(...tokens), 'tokens grow per service across holders');
        assert.equal((await holdersOf(service)).length, 3);
      });

      test('of 30 concurrent acquires on limit 3 exactly 3 win', async () => {
        const service = unique('sem-race');
        const results = await Promise.all(
          Array.from({ length: 30 }, (_, i) =>
            acquire(singleRequest(serviceClaim(service, { limit: 3 }), { who: `racer-${i}` })),
          ),
        );
        const winners = results.flatMap((result) => (result.acquired ? [result.lock] : []));
        assert.equal(winners.length, 3);
        assert.equal(new Set(winners.map((lock) => lock.fencingToken)).size, 3);
        for (const result of results) {
          if (!result.acquired) {
            assert.ok('holders' in result, describeResult(result));
            assert.deepEqual(sortedIds(result.holders), sortedIds(winners));
          }
        }
      });

      test('waiters on a full semaphore are granted one per freed slot, in arrival order', async () => {
        const service = unique('sem-wait');
        const claim = serviceClaim(service, { limit: 2 });
        const a = await grantedOne(singleRequest(claim, { who: 'a' }));
        const b = await grantedOne(singleRequest(claim, { who: 'b' }));
        const w1 = singleRequest(claim, { who: 'w1' });
        const w2 = singleRequest(claim, { who: 'w2' });
        const w3 = singleRequest(claim, { who: 'w3' });
        for (const request of [w1, w2, w3]) await queued(request);
        assert.deepEqual(await waitersOf(service), [w1.id, w2.id, w3.id]);
        await store.release(a.id);
        const first = await store.get(w1.id);
        assert.ok(first, 'w1 granted in the release');
        assert.equal(await store.get(w2.id), null, 'one slot, one grant');
        await store.release(b.id);
        const second = await store.get(w2.id);
        assert.ok(second);
        assert.ok(second.fencingToken > first.fencingToken);
        assert.ok(first.fencingToken > Math.max(a.fencingToken, b.fencingToken));
        assert.deepEqual(await waitersOf(service), [w3.id]);
      });
    });

    describe('LIMIT_MISMATCH', () => {
      test('a service held under one limit refuses another at once, never queueing it', async () => {
        const service = unique('mismatch');
        await grantedOne(singleRequest(serviceClaim(service, { limit: 2 })));
        for (const limit of [3, 1, null]) {
          const result = await acquire(
            singleRequest(serviceClaim(service, { limit }), { who: `limit-${limit}` }),
            true,
          );
          assert.deepEqual(
            result,
            { acquired: false, limitMismatch: { service, limit: 2 } },
            `limit ${limit} against a service held with limit 2`,
          );
        }
        assert.deepEqual(await waitersOf(service), [], 'a mismatch never waits');
        // A shared claim names no limit: it is simply held out by the exclusive holder.
        const shared = await refused(singleRequest(serviceClaim(service, { mode: 'shared' })));
        assert.equal(shared.holders.length, 1);
        // The same limit is fine.
        await grantedOne(singleRequest(serviceClaim(service, { limit: 2 })));
      });

      test('once free, a service takes any limit again', async () => {
        const service = unique('mismatch-free');
        const lock = await grantedOne(singleRequest(serviceClaim(service, { limit: 2 })));
        await store.release(lock.id);
        const next = await grantedOne(singleRequest(serviceClaim(service, { limit: 5 })));
        assert.equal(next.limit, 5);
      });

      test('a registered resource: its capacity is the limit; another named limit is refused even when free', async () => {
        const resource = unique('registered');
        await put(resource, { capacity: 2 });
        assert.deepEqual(await acquire(singleRequest(serviceClaim(resource, { limit: 3 })), true), {
          acquired: false,
          limitMismatch: { service: resource, limit: 2 },
        });
        const unnamed = await grantedOne(singleRequest(serviceClaim(resource)));
        assert.equal(unnamed.limit, 2, 'an unnamed limit is the capacity');
        const named = await grantedOne(singleRequest(serviceClaim(resource, { limit: 2 })));
        assert.equal(named.limit, 2);
        assert.ok(named.resource, 'a lock on a registered resource shows it');
        assert.equal(named.resource.name, resource);
        await refused(singleRequest(serviceClaim(resource)));
        assert.deepEqual(await waitersOf(resource), []);
      });

      test('a group with one mismatching claim takes nothing', async () => {
        const a = unique('ga');
        const b = unique('gb');
        await grantedOne(singleRequest(serviceClaim(b, { limit: 2 })));
        const result = await acquire(
          groupRequest([serviceClaim(a), serviceClaim(b, { limit: 3 })], { who: 'mismatched-group' }),
          true,
        );
        assert.deepEqual(result, { acquired: false, limitMismatch: { service: b, limit: 2 } });
        assert.deepEqual(await holdersOf(a), []);
        assert.deepEqual(await waitersOf(a), []);
        assert.deepEqual(await waitersOf(b), []);
      });
    });

    describe('shared and exclusive', () => {
      test('shared holders coexist, each with its own token; an exclusive one is refused naming them all', async () => {
        const service = unique('shared');
        const locks: Lock[] = [];
        for (let i = 0; i < 5; i++) {
          const lock = await grantedOne(
            singleRequest(serviceClaim(service, { mode: 'shared' }), { who: `r${i}` }),
          );
          assert.equal(lock.mode, 'shared');
          assert.equal(lock.limit, 1, "a shared lock shows its service's limit (1 unregistered)");
          locks.push(lock);
          await tick();
        }
        const tokens = locks.map((lock) => lock.fencingToken);
        assert.deepEqual(
          tokens,
          [...tokens].sort((a, b) => a - b),
        );
        assert.equal(new Set(tokens).size, 5);
        const writer = await refused(singleRequest(serviceClaim(service), { who: 'writer' }));
        assert.deepEqual(ids(writer.holders), ids(locks));
        assert.equal(writer.holder.id, locks[0]?.id);
        const wideWriter = await refused(
          singleRequest(serviceClaim(service, { limit: 10 }), { who: 'wide' }),
        );
        assert.equal(wideWriter.holders.length, 5, 'no limit lets an exclusive in beside shared holders');
      });

      test('an exclusive holder keeps shared ones out, and a shared holder exclusive ones', async () => {
        const service = unique('excl');
        const writer = await grantedOne(singleRequest(serviceClaim(service, { limit: 3 })));
        const reader = await refused(singleRequest(serviceClaim(service, { mode: 'shared' })));
        assert.deepEqual(ids(reader.holders), [writer.id]);
        await store.release(writer.id);
        const shared = await grantedOne(singleRequest(serviceClaim(service, { mode: 'shared' })));
        const excluded = await refused(singleRequest(serviceClaim(service, { limit: 3 })));
        assert.deepEqual(ids(excluded.holders), [shared.id]);
      });

      test('FIFO across modes: a waiting exclusive is not overtaken by later shared ones', async () => {
        const service = unique('fifo-modes');
        const shared = serviceClaim(service, { mode: 'shared' });
        const reader = await grantedOne(singleRequest(shared, { who: 'reader' }));
        const writer = singleRequest(serviceClaim(service), { who: 'writer' });
        await queued(writer);
        // Shared would fit beside the reader, but the writer came first.
        const late = singleRequest(shared, { who: 'late-reader' });
        await queued(late);
        const impatient = await refused(singleRequest(shared, { who: 'impatient' }));
        assert.equal(impatient.waiter, null);
        assert.deepEqual(await waitersOf(service), [writer.id, late.id]);
        assert.deepEqual(ids(await holdersOf(service)), [reader.id]);
        await store.release(reader.id);
        assert.ok(await store.get(writer.id), 'the writer goes next');
        assert.equal(await store.get(late.id), null);
        assert.deepEqual(await waitersOf(service), [late.id]);
      });

      test('consecutive shared waiters at the head are granted together in one release, up to the next exclusive', async () => {
        const service = unique('batch');
        const shared = serviceClaim(service, { mode: 'shared' });
        const writer = await grantedOne(singleRequest(serviceClaim(service), { who: 'writer' }));
        const r1 = singleRequest(shared, { who: 'r1' });
        const r2 = singleRequest(shared, { who: 'r2' });
        const r3 = singleRequest(shared, { who: 'r3' });
        const w2 = singleRequest(serviceClaim(service), { who: 'w2' });
        const r4 = singleRequest(shared, { who: 'r4' });
        for (const request of [r1, r2, r3, w2, r4]) await queued(request);
        const released = await store.release(writer.id);
        assert.equal(released?.id, writer.id);
        const holders = await holdersOf(service);
        assert.deepEqual(
          ids(holders).sort(),
          [r1.id, r2.id, r3.id].sort(),
          'the three readers at the head, at once',
        );
        const tokens = holders.map((lock) => lock.fencingToken);
        assert.equal(new Set(tokens).size, 3);
        assert.ok(Math.min(...tokens) > writer.fencingToken);
        assert.deepEqual(await waitersOf(service), [w2.id, r4.id], 'r4 stays behind w2');
        for (const request of [r1, r2]) await store.release(request.id);
        assert.equal(await store.get(w2.id), null, 'w2 waits for the last reader');
        await store.release(r3.id);
        assert.ok(await store.get(w2.id));
        assert.equal(await store.get(r4.id), null);
        await store.release(w2.id);
        assert.ok(await store.get(r4.id));
      });
    });

    describe('priority', () => {
      test('higher priority first, FIFO within a priority', async () => {
        const service = unique('prio');
        let current = (await grantedOne(singleRequest(serviceClaim(service), { who: 'holder' }))).id;
        const plan: [string, number][] = [
          ['low-1', 0],
          ['high-1', 5],
          ['high-2', 5],
          ['low-2', 0],
          ['mid', 1],
          ['negative', -3],
        ];
        const requests = new Map<string, AcquireRequest>();
        for (const [who, priority] of plan) {
          const request = singleRequest(serviceClaim(service), { who, priority });
          requests.set(who, request);
          const waiter = await queued(request);
          assert.equal(waiter.priority, priority);
        }
        const expected = ['high-1', 'high-2', 'mid', 'low-1', 'low-2', 'negative'];
        const queue = await store.queue(service);
        assert.deepEqual(
          queue.waiters.map((waiter) => [waiter.who, waiter.position]),
          expected.map((who, i) => [who, i + 1]),
        );
        for (const who of expected) {
          await store.release(current);
          const lock = await store.get(requests.get(who)?.id ?? '');
          assert.equal(lock?.who, who, `${who} is next`);
          current = lock.id;
        }
      });

      test('a high priority request arriving later goes ahead of lower waiters, not of the holder', async () => {
        const service = unique('prio-late');
        const holder = await grantedOne(singleRequest(serviceClaim(service)));
        const low = singleRequest(serviceClaim(service), { who: 'low' });
        await queued(low);
        const urgent = singleRequest(serviceClaim(service), { who: 'urgent', priority: 10 });
        const waiter = await queued(urgent);
        assert.equal(waiter.position, 1);
        await refused(singleRequest(serviceClaim(service), { who: 'urgent-no-wait', priority: 100 }));
        await store.release(holder.id);
        assert.ok(await store.get(urgent.id));
        assert.equal(await store.get(low.id), null);
      });
    });

    describe('labels', () => {
      test('a label acquire takes a free resource carrying it, the least recently released first', async () => {
        const label = unique('phone');
        const [a, b, c] = ['a', 'b', 'c'].map((suffix) => `${label}-${suffix}`) as [string, string, string];
        for (const resource of [c, a, b]) {
          await put(resource, { labels: [label], properties: { serial: `S-${resource}` } });
        }
        // Never released: by name.
        const first = await grantedOne(singleRequest(labelClaim(label), { who: 'first' }));
        assert.equal(first.service, a);
        assert.deepEqual(first.resource, { name: a, labels: [label], properties: { serial: `S-${a}` } });
        assert.equal((await grantedOne(singleRequest(labelClaim(label)))).service, b);
        const third = await grantedOne(singleRequest(labelClaim(label)));
        assert.equal(third.service, c);
        const holding = await holdersOf(b);
        // Released in the order c, a, b, at distinct instants.
        await store.release(third.id);
        await tick();
        await store.release(first.id);
        await tick();
        await store.release(holding[0]?.id ?? '');
        await tick();
        const order: string[] = [];
        for (let i = 0; i < 3; i++) order.push((await grantedOne(singleRequest(labelClaim(label)))).service);
        assert.deepEqual(order, [c, a, b], 'least recently released first');
        const none = await refused(singleRequest(labelClaim(label), { who: 'none-left' }));
        assert.equal(none.holders.length, 3, 'a refused label acquire names every holder of the label');
      });

      test('a label nobody carries is NO_SUCH_LABEL, also when asked to wait', async () => {
        const label = unique('ghost');
        assert.deepEqual(await acquire(singleRequest(labelClaim(label)), true), {
          acquired: false,
          noSuchLabel: label,
        });
        assert.deepEqual(await acquire(groupRequest([serviceClaim(unique('x')), labelClaim(label)]), true), {
          acquired: false,
          noSuchLabel: label,
        });
      });

      test('a label waiter and name waiters share one arrival order', async () => {
        const label = unique('pool');
        const [r1, r2] = [`${label}-1`, `${label}-2`] as const;
        for (const resource of [r1, r2]) await put(resource, { labels: [label] });
        const h1 = await grantedOne(singleRequest(serviceClaim(r1), { who: 'h1' }));
        const h2 = await grantedOne(singleRequest(serviceClaim(r2), { who: 'h2' }));
        const byLabel = singleRequest(labelClaim(label), { who: 'by-label' });
        const byName = singleRequest(serviceClaim(r1), { who: 'by-name' });
        const waiter = await queued(byLabel);
        assert.equal(waiter.label, label);
        await queued(byName);
        assert.deepEqual(await waitersOf(r1), [byLabel.id, byName.id], 'r1 could go to either, label first');
        assert.deepEqual(await waitersOf(r2), [byLabel.id]);
        // r1 frees first: the label waiter came first, so it takes r1.
        await store.release(h1.id);
        const got = await store.get(byLabel.id);
        assert.equal(got?.service, r1);
        assert.equal(await store.get(byName.id), null);
        assert.deepEqual(await waitersOf(r2), [], 'granted: no longer waiting for r2');
        // r2 frees: nobody waits for it by name or label.
        await store.release(h2.id);
        assert.deepEqual(await holdersOf(r2), []);
        await store.release(byLabel.id);
        assert.equal((await store.get(byName.id))?.service, r1);
      });

      test('a name waiter that came first keeps its resource from a later label waiter', async () => {
        const label = unique('pool2');
        const [r1, r2] = [`${label}-1`, `${label}-2`] as const;
        for (const resource of [r1, r2]) await put(resource, { labels: [label] });
        const h1 = await grantedOne(singleRequest(serviceClaim(r1)));
        const h2 = await grantedOne(singleRequest(serviceClaim(r2)));
        const byName = singleRequest(serviceClaim(r1), { who: 'by-name' });
        const byLabel = singleRequest(labelClaim(label), { who: 'by-label' });
        await queued(byName);
        await queued(byLabel);
        await store.release(h1.id);
        assert.equal((await store.get(byName.id))?.service, r1, 'r1 goes to the earlier name waiter');
        assert.equal(await store.get(byLabel.id), null);
        await store.release(h2.id);
        assert.equal((await store.get(byLabel.id))?.service, r2, 'r2 then goes to the label waiter');
      });

      test('a shared label acquire shares a resource with other shared holders', async () => {
        const label = unique('shared-pool');
        const resource = `${label}-only`;
        await put(resource, { labels: [label], capacity: 2 });
        const a = await grantedOne(singleRequest(labelClaim(label, { mode: 'shared' })));
        const b = await grantedOne(singleRequest(labelClaim(label, { mode: 'shared' })));
        assert.deepEqual([a.service, b.service], [resource, resource]);
        assert.equal(a.limit, 2, 'a shared lock shows the capacity');
        await refused(singleRequest(labelClaim(label)));
      });
    });

    describe('groups', () => {
      test('a group takes every claim at once, each lock with its own id and the group id', async () => {
        const [a, b] = [unique('ga'), unique('gb')];
        const request = groupRequest([serviceClaim(a), serviceClaim(b, { mode: 'shared' })], {
          ttlSeconds: 30,
        });
        const locks = await granted(request);
        assert.deepEqual(
          locks.map((lock) => [lock.service, lock.mode, lock.groupId]),
          [
            [a, 'exclusive', request.id],
            [b, 'shared', request.id],
          ],
        );
        assert.equal(new Set(ids(locks)).size, 2);
        assert.ok(!ids(locks).includes(request.id), 'members get ids of their own');
        assert.deepEqual(sortedIds(await store.granted(request.id)), sortedIds(locks));
        for (const lock of locks) assert.deepEqual(await store.get(lock.id), lock);
      });

      test('all or nothing: a group that cannot get one claim holds none, not even while it waits', async () => {
        const [a, b] = [unique('aon-a'), unique('aon-b')];
        const blocker = await grantedOne(singleRequest(serviceClaim(b), { who: 'blocker' }));
        const request = groupRequest([serviceClaim(a), serviceClaim(b)], { who: 'group' });
        const refusal = await refused(request);
        assert.deepEqual(ids(refusal.holders), [blocker.id], 'it names what it could not get');
        assert.deepEqual(await holdersOf(a), []);
        const waiting = groupRequest([serviceClaim(a), serviceClaim(b)], { who: 'waiting-group' });
        const waiter = await queued(waiting);
        assert.equal(waiter.groupId, waiting.id);
        assert.deepEqual(await holdersOf(a), [], 'nothing held while waiting');
        assert.deepEqual(await store.granted(waiting.id), []);
        assert.deepEqual(await waitersOf(b), [waiting.id]);
        await store.release(blocker.id);
        const locks = await store.granted(waiting.id);
        assert.deepEqual(
          locks.map((lock) => lock.service).sort(),
          [a, b].sort(),
          'granted whole, in the release',
        );
      });

      test('[a,b] and [b,a] never deadlock: each is granted whole, in turn', async () => {
        const [a, b] = [unique('dl-a'), unique('dl-b')];
        const holder = await grantedOne(singleRequest(serviceClaim(a), { who: 'holder' }));
        const ab = groupRequest([serviceClaim(a), serviceClaim(b)], { who: 'ab' });
        const ba = groupRequest([serviceClaim(b), serviceClaim(a)], { who: 'ba' });
        await queued(ab);
        await queued(ba);
        assert.deepEqual(await holdersOf(b), [], 'b is free: nobody holds a part');
        await store.release(holder.id);
        assert.equal((await store.granted(ab.id)).length, 2, 'ab first');
        assert.deepEqual(await store.granted(ba.id), []);
        const released = await store.releaseGroup(ab.id);
        assert.equal(released.denied, false);
        assert.equal(released.locks.length, 2);
        const second = await store.granted(ba.id);
        assert.deepEqual(second.map((lock) => lock.service).sort(), [a, b].sort());
        const tokens = new Map(released.locks.map((lock) => [lock.service, lock.fencingToken]));
        for (const lock of second) assert.ok(lock.fencingToken > (tokens.get(lock.service) ?? 0));
      });

      test('a waiting group does not block what it could take now', async () => {
        const [a, b] = [unique('nb-a'), unique('nb-b')];
        const holder = await grantedOne(singleRequest(serviceClaim(b)));
        const group = groupRequest([serviceClaim(a), serviceClaim(b)]);
        await queued(group);
        // a is free and the group does not wait for it: a later single request takes it.
        const single = await grantedOne(singleRequest(serviceClaim(a), { who: 'single' }));
        await store.release(holder.id);
        assert.deepEqual(
          await store.granted(group.id),
          [],
          'a is held now: the group keeps waiting, holding nothing',
        );
        assert.deepEqual(await holdersOf(b), []);
        await store.release(single.id);
        assert.equal((await store.granted(group.id)).length, 2);
      });

      test('release and renew a group as one; a member can be released by its own id', async () => {
        const [a, b, c] = [unique('m-a'), unique('m-b'), unique('m-c')];
        const request = groupRequest([serviceClaim(a), serviceClaim(b), serviceClaim(c)], { ttlSeconds: 10 });
        const locks = await granted(request);
        await subject.advance(5_000);
        const renewed = await store.renewGroup(request.id, 60);
        assert.equal(renewed.denied, false);
        assert.deepEqual(sortedIds(renewed.locks), sortedIds(locks));
        for (const lock of renewed.locks) {
          assert.equal(lock.ttlSeconds, 60);
          const created = locks.find((l) => l.id === lock.id);
          assert.equal(lock.expiresAt?.getTime(), (created?.createdAt.getTime() ?? 0) + 5_000 + 60_000);
        }
        const [first, ...rest] = locks;
        assert.ok(first);
        // A member released early by its own id.
        const waiter = singleRequest(serviceClaim(first.service), { who: 'next-on-a' });
        await queued(waiter);
        assert.equal((await store.release(first.id))?.id, first.id);
        assert.ok(await store.get(waiter.id), 'its service goes to its waiter');
        assert.deepEqual(sortedIds(await store.granted(request.id)), sortedIds(rest));
        // The others go with the group.
        const released = await store.releaseGroup(request.id);
        assert.deepEqual(sortedIds(released.locks), sortedIds(rest));
        assert.deepEqual(await store.granted(request.id), []);
        assert.deepEqual(await store.releaseGroup(request.id), { locks: [], denied: false });
        assert.deepEqual(await store.renewGroup(request.id, 60), { locks: [], denied: false });
        assert.deepEqual(await store.releaseGroup(randomUUID()), { locks: [], denied: false });
      });

      test("a group's owner: release and renew of another's group are denied and change nothing", async () => {
        const [a, b] = [unique('o-a'), unique('o-b')];
        const request = {
          ...groupRequest([serviceClaim(a), serviceClaim(b)], { ttlSeconds: 30 }),
          owner: 'ci',
          ownerKey: 'sha256:ci',
        };
        const locks = await granted(request);
        const other = { key: 'sha256:other', name: 'ci' };
        const deniedRenew = await store.renewGroup(request.id, 90, other);
        assert.equal(deniedRenew.denied, true);
        const deniedRelease = await store.releaseGroup(request.id, other);
        assert.equal(deniedRelease.denied, true);
        assert.deepEqual(sortedIds(await store.granted(request.id)), sortedIds(locks));
        for (const lock of await store.granted(request.id)) assert.equal(lock.ttlSeconds, 30);
        const mine = await store.releaseGroup(request.id, { key: 'sha256:ci', name: 'ci' });
        assert.equal(mine.denied, false);
        assert.equal(mine.locks.length, 2);
      });

      test('a group with a label claim takes distinct resources of the label', async () => {
        const label = unique('rack');
        const members = ['1', '2', '3'].map((suffix) => `${label}-${suffix}`);
        for (const member of members) await put(member, { labels: [label] });
        const other = unique('g-other');
        const request = groupRequest([labelClaim(label, { quantity: 2 }), serviceClaim(other)]);
        const locks = await granted(request);
        const taken = locks.filter((lock) => lock.service !== other).map((lock) => lock.service);
        assert.deepEqual(taken.sort(), members.slice(0, 2), 'two distinct members, by name (never released)');
        // One member left: a quantity-2 request takes nothing.
        const tooMany = groupRequest([labelClaim(label, { quantity: 2 })]);
        await refused(tooMany);
        assert.deepEqual(await holdersOf(members[2] ?? ''), []);
      });

      test('a group waiter that leaves holds nothing, and does not block those behind it', async () => {
        const [a, b] = [unique('leave-a'), unique('leave-b')];
        const holder = await grantedOne(singleRequest(serviceClaim(b), { who: 'holder' }));
        const group = groupRequest([serviceClaim(a), serviceClaim(b)], { who: 'leaver' });
        const waiter = await queued(group);
        const behind = singleRequest(serviceClaim(b), { who: 'behind' });
        await queued(behind);
        assert.equal(await store.leave(waiter.ticket), true);
        assert.equal(await store.leave(waiter.ticket), false);
        await store.release(holder.id);
        assert.deepEqual(await store.granted(group.id), [], 'a group that left is never granted');
        assert.deepEqual(await holdersOf(a), []);
        assert.ok(await store.get(behind.id), 'the one behind it got b');
      });
    });

    describe('edge cases the model found', () => {
      test('a refusal names the holders of what the request could not get, not of what it could', async () => {
        const [s, t] = [unique('room'), unique('full')];
        await grantedOne(singleRequest(serviceClaim(s, { limit: 2 }), { who: 'has-room' }));
        const full = await grantedOne(singleRequest(serviceClaim(t), { who: 'in-the-way' }));
        const refusal = await refused(groupRequest([serviceClaim(s, { limit: 2 }), serviceClaim(t)]));
        assert.deepEqual(ids(refusal.holders), [full.id], 's has room: only the holder of t is in the way');
      });

      test('a group naming a resource and a label carrying it gets both while another member is free', async () => {
        const label = unique('both');
        const [r0, r1] = [`${label}-0`, `${label}-1`];
        for (const resource of [r0, r1]) await put(resource, { labels: [label] });
        const request = groupRequest([labelClaim(label), serviceClaim(r0)]);
        const result = await acquire(request);
        assert.ok(result.acquired, `r1 for the label and r0 by name satisfy it: ${describeResult(result)}`);
        assert.deepEqual(result.locks.map((lock) => lock.service).sort(), [r0, r1]);
      });

      test('a label that loses every member keeps its waiters waiting, holding nothing', async () => {
        const label = unique('vanishing');
        const member = `${label}-only`;
        const other = unique('other');
        await put(member, { labels: [label] });
        await grantedOne(singleRequest(serviceClaim(member)));
        const group = groupRequest([labelClaim(label), serviceClaim(other)], { who: 'group' });
        await queued(group);
        await put(member, { labels: [] });
        await store.settle([other, member]);
        assert.deepEqual(await store.granted(group.id), [], 'never granted with its label claim unfilled');
        assert.deepEqual(await holdersOf(other), []);
      });

      test('a freed resource goes to the waiting group it completes, before any newcomer', async () => {
        const label = unique('chain');
        const [r0, r1, r2, s0] = [`${label}-r0`, `${label}-r1`, `${label}-r2`, `${label}-s0`];
        await put(r0);
        await put(r1, { labels: [label] });
        await put(r2, { labels: [label], capacity: 2 });
        const first = await granted(groupRequest([serviceClaim(r0), serviceClaim(s0)], { who: 'g0' }));
        // g1 waits for s0 only (r1 by name and r2 by label are free); g2 waits for r0 only.
        await queued(groupRequest([serviceClaim(s0), serviceClaim(r1), labelClaim(label)], { who: 'g1' }));
        const g2 = groupRequest([serviceClaim(r0), serviceClaim(r1)], { who: 'g2' });
        await queued(g2);
        await store.release(first.find((lock) => lock.service === r0)?.id ?? '');
        assert.deepEqual(
          (await store.granted(g2.id)).map((lock) => lock.service).sort(),
          [r0, r1],
          'r0 and r1 are free and g1 does not wait for them: g2 is granted in the release',
        );
        const newcomer = await acquire(singleRequest(serviceClaim(r0), { who: 'newcomer' }));
        assert.equal(newcomer.acquired, false, 'a newcomer never overtakes g2');
      });
    });

    describe('resource registry', () => {
      test('put creates then replaces; get and list by label show it, by name', async () => {
        const label = unique('reg');
        const [x, y] = [`${label}-y`, `${label}-x`];
        const created = await put(x, {
          labels: [label, 'other'],
          properties: { os: 'android' },
          capacity: 2,
        });
        assert.equal(created.created, true);
        const {
          name: createdName,
          labels,
          properties,
          capacity,
          description,
          holders,
          waiters,
        } = created.resource;
        assert.deepEqual(
          { name: createdName, labels, properties, capacity, description, holders, waiters },
          {
            name: x,
            labels: [label, 'other'],
            properties: { os: 'android' },
            capacity: 2,
            description: null,
            holders: [],
            waiters: [],
          },
        );
        const replaced = await store.putResource({
          name: x,
          labels: [label],
          properties: { os: 'ios' },
          capacity: 3,
          description: 'a phone',
        });
        assert.equal(replaced.created, false);
        assert.equal(replaced.resource.capacity, 3);
        assert.deepEqual(replaced.resource.labels, [label]);
        assert.equal(replaced.resource.description, 'a phone');
        await put(y, { labels: [label] });
        assert.deepEqual(
          (await store.listResources(label)).map((resource) => resource.name),
          [x, y].sort(),
        );
        assert.ok((await store.listResources()).some((resource) => resource.name === x));
        assert.deepEqual(await store.listResources(unique('no-label')), []);
        assert.equal((await store.getResource(x))?.properties.os, 'ios');
        assert.equal(await store.getResource(unique('missing')), null);
      });

      test('get shows holders and waiters; delete is refused while held', async () => {
        const resource = unique('held-resource');
        await put(resource);
        const lock = await grantedOne(singleRequest(serviceClaim(resource)));
        const waiter = singleRequest(serviceClaim(resource), { who: 'waiting' });
        await queued(waiter);
        const read = await store.getResource(resource);
        assert.deepEqual(ids(read?.holders ?? []), [lock.id]);
        assert.deepEqual(
          read?.waiters.map((w) => w.lockId),
          [waiter.id],
        );
        assert.equal(await store.deleteResource(resource), 'in-use');
        assert.ok(await store.getResource(resource), 'still registered');
        await store.release(lock.id);
        await store.release(waiter.id);
        assert.equal(await store.deleteResource(resource), 'deleted');
        assert.equal(await store.deleteResource(resource), 'missing');
        assert.equal(await store.getResource(resource), null);
      });

      test('a larger capacity grants waiters at once', async () => {
        const resource = unique('grow');
        await put(resource, { capacity: 1 });
        const holder = await grantedOne(singleRequest(serviceClaim(resource)));
        const w1 = singleRequest(serviceClaim(resource), { who: 'w1' });
        const w2 = singleRequest(serviceClaim(resource), { who: 'w2' });
        await queued(w1);
        await queued(w2);
        await put(resource, { capacity: 2 });
        assert.ok(await store.get(w1.id), 'the second slot goes to the first waiter, in the put');
        assert.equal(await store.get(w2.id), null);
        const holders = await holdersOf(resource);
        assert.deepEqual(ids(holders).sort(), [holder.id, w1.id].sort());
        await put(resource, { capacity: 3 });
        assert.ok(await store.get(w2.id));
        assert.equal((await store.get(w2.id))?.limit, 3);
      });

      test('a new member of a label grants a label waiter', async () => {
        const label = unique('growing-pool');
        const first = `${label}-1`;
        await put(first, { labels: [label] });
        await grantedOne(singleRequest(labelClaim(label)));
        const waiter = singleRequest(labelClaim(label), { who: 'label-waiter' });
        await queued(waiter);
        const second = `${label}-2`;
        await put(second, { labels: [label] });
        assert.equal((await store.get(waiter.id))?.service, second);
      });
    });

    describe('history', () => {
      test('events carry the group, mode, limit and label', async () => {
        const [a, b] = [unique('h-a'), unique('h-b')];
        const request = groupRequest([serviceClaim(a, { limit: 2 }), serviceClaim(b, { mode: 'shared' })]);
        const locks = await granted(request);
        const [onA] = await store.history({ service: a, limit: 10 });
        assert.deepEqual(onA && [onA.type, onA.lockId, onA.groupId, onA.mode, onA.limit, onA.label], [
          'acquired',
          locks.find((lock) => lock.service === a)?.id,
          request.id,
          'exclusive',
          2,
          null,
        ]);
        const [onB] = await store.history({ service: b, limit: 10 });
        assert.deepEqual(onB && [onB.type, onB.groupId, onB.mode, onB.limit], [
          'acquired',
          request.id,
          'shared',
          1,
        ]);
        await store.releaseGroup(request.id);
        const [releasedA] = await store.history({ service: a, limit: 10 });
        assert.deepEqual(releasedA && [releasedA.type, releasedA.groupId], ['released', request.id]);

        const label = unique('h-label');
        const resource = `${label}-1`;
        await put(resource, { labels: [label] });
        const holder = await grantedOne(singleRequest(serviceClaim(resource)));
        const waiter = singleRequest(labelClaim(label), { who: 'label-waiter' });
        await queued(waiter);
        const [queuedEvent] = await store.history({ service: label, limit: 10 });
        assert.deepEqual(
          queuedEvent && [
            queuedEvent.type,
            queuedEvent.lockId,
            queuedEvent.label,
            queuedEvent.limit,
            queuedEvent.service,
          ],
          ['queued', waiter.id, label, null, label],
        );
        await store.release(holder.id);
        const [dequeued] = await store.history({ service: label, limit: 10 });
        assert.deepEqual(dequeued && [dequeued.type, dequeued.reason, dequeued.label], [
          'dequeued',
          'granted',
          label,
        ]);
        const [acquiredEvent] = await store.history({ service: resource, limit: 10 });
        assert.deepEqual(acquiredEvent && [acquiredEvent.type, acquiredEvent.lockId, acquiredEvent.who], [
          'acquired',
          waiter.id,
          'label-waiter',
        ]);
      });
    });

    describe('expiry', () => {
      test('expired holders of a semaphore let waiters in, one per slot', async () => {
        const service = unique('sem-expiry');
        const claim = serviceClaim(service, { limit: 2 });
        const short = await grantedOne(singleRequest(claim, { ttlSeconds: 5 }));
        await grantedOne(singleRequest(claim, { ttlSeconds: 60 }));
        const w1 = singleRequest(claim, { who: 'w1' });
        const w2 = singleRequest(claim, { who: 'w2' });
        await queued(w1);
        await queued(w2);
        await subject.advance(5_000);
        await store.heartbeat(OWNER);
        await store.settle(service);
        assert.equal(await store.get(short.id), null);
        const got = await store.get(w1.id);
        assert.ok(got);
        assert.ok(got.fencingToken > short.fencingToken);
        assert.equal(await store.get(w2.id), null);
        assert.equal((await holdersOf(service)).length, 2);
      });

      test('expired shared holders let a waiting exclusive in', async () => {
        const service = unique('shared-expiry');
        const shared = serviceClaim(service, { mode: 'shared' });
        await grantedOne(singleRequest(shared, { ttlSeconds: 3 }));
        await grantedOne(singleRequest(shared, { ttlSeconds: 4 }));
        const writer = singleRequest(serviceClaim(service), { who: 'writer' });
        await queued(writer);
        await subject.advance(3_000);
        await store.heartbeat(OWNER);
        await store.settle(service);
        assert.equal(await store.get(writer.id), null, 'one reader left');
        await subject.advance(1_000);
        await store.heartbeat(OWNER);
        await store.settle(service);
        assert.ok(await store.get(writer.id));
      });

      test('a waiting group is granted when the last of its blockers expires', async () => {
        const [a, b] = [unique('ge-a'), unique('ge-b')];
        await grantedOne(singleRequest(serviceClaim(a), { ttlSeconds: 2 }));
        await grantedOne(singleRequest(serviceClaim(b), { ttlSeconds: 4 }));
        const group = groupRequest([serviceClaim(a), serviceClaim(b)]);
        await queued(group);
        await subject.advance(2_000);
        await store.heartbeat(OWNER);
        await store.settle([a, b]);
        assert.deepEqual(await store.granted(group.id), []);
        assert.deepEqual(await holdersOf(a), [], 'a expired and the group does not take part of it');
        await subject.advance(2_000);
        await store.heartbeat(OWNER);
        await store.settle([a, b]);
        assert.equal((await store.granted(group.id)).length, 2);
      });
    });
  });
}

/** A result in a failure message. */
export function describeResult(result: AcquireResult | KeyRefusal): string {
  if (result.acquired) return `granted ${result.locks.map((lock) => lock.service).join(', ')}`;
  if ('holders' in result)
    return `refused, held by ${result.holders.map((lock) => `${lock.who}@${lock.service}`).join(', ')}${result.waiter ? ', queued' : ''}`;
  return `refused: ${JSON.stringify(result)}`;
}
