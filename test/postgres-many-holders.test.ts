import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import type { AcquireRequest, Claim, Lock, LockMode } from '../src/core/lock.js';
import type { AcquireResult, KeyRefusal, LockStore } from '../src/core/lock-store.js';
import {
  openPostgresLockStore,
  type PostgresLockStore,
} from '../src/storage/postgres/postgres-lock-store.js';
import { recordingLogger } from './support/logger.js';
import { describePostgres } from './support/postgres.js';
import { waitFor } from './support/wait-for.js';

/**
 * The PostgreSQL store's side of issue 16: semaphores, shared mode, labels, groups and
 * priorities decided under row locks, across pools that stand for replicas.
 */

const OWNER = 'replica-test';
const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

const named = (service: string, mode: LockMode = 'exclusive', limit: number | null = null): Claim => ({
  service,
  label: null,
  mode,
  limit,
  quantity: 1,
});
const labelled = (label: string, quantity = 1, mode: LockMode = 'exclusive'): Claim => ({
  service: null,
  label,
  mode,
  limit: null,
  quantity,
});

/** A single acquire with claims (or a group when there are several). */
const ask = (
  claims: Claim[],
  who: string,
  options: { priority?: number; ttlSeconds?: number | null; group?: boolean } = {},
): AcquireRequest => ({
  id: randomUUID(),
  service: claims[0]?.service ?? claims[0]?.label ?? '',
  claims,
  group: options.group ?? (claims.length > 1 || claims.some((claim) => claim.quantity > 1)),
  priority: options.priority ?? 0,
  who,
  ttlSeconds: options.ttlSeconds ?? null,
});

function granted(result: AcquireResult | KeyRefusal): Lock[] {
  assert.ok(result.acquired, `expected a grant, got ${JSON.stringify(result)}`);
  return [...result.locks];
}

/** Waits (as a waiting room would, by polling) until the queued request holds its locks. */
async function waitGranted(
  store: LockStore,
  id: string,
  services: string[],
  timeoutMs = 20_000,
): Promise<Lock[]> {
  return waitFor(
    async () => {
      const locks = await store.granted(id);
      if (locks.length > 0) return locks;
      await store.heartbeat(OWNER);
      await store.settle(services);
      return null;
    },
    { what: `request ${id} to be granted`, timeoutMs, intervalMs: 5 },
  );
}

/** Per service, the most holders at once in the recorded history (events in id order). */
async function mostHolders(store: LockStore, services: string[]): Promise<Map<string, number>> {
  const most = new Map<string, number>();
  for (const service of services) {
    const events = (await store.history({ service, limit: 1000 })).reverse();
    let now = 0;
    let max = 0;
    for (const event of events) {
      if (event.type === 'acquired') now++;
      if (event.type === 'released' || event.type === 'expired' || event.type === 'force-released') now--;
      max = Math.max(max, now);
    }
    most.set(service, max);
  }
  return most;
}

await describePostgres('PostgreSQL store: many holders', (database) => {
  const quiet = recordingLogger().logger;
  // Timeouts well above the defaults (1.5 s): these tests check who is granted what, and on a
  // loaded machine 20 clients queueing for one row lock may wait longer than that.
  const open = (schema: string, poolSize = 5) =>
    openPostgresLockStore({
      connectionString: database().url,
      schema,
      logger: quiet,
      poolSize,
      statementTimeoutMs: 15_000,
      connectTimeoutMs: 15_000,
    });
  let store: PostgresLockStore;
  before(async () => {
    store = await open('holders');
  });
  after(async () => {
    await store.close();
  });

  test('a semaphore admits `limit` holders, each with its own id and a growing token; another limit is refused', async () => {
    const service = unique('pool');
    const locks: Lock[] = [];
    for (let i = 0; i < 3; i++)
      locks.push(...granted(await store.acquire(ask([named(service, 'exclusive', 3)], `w${i}`))));
    assert.deepEqual(
      locks.map((lock) => lock.limit),
      [3, 3, 3],
    );
    assert.ok(locks.every((lock, i) => i === 0 || lock.fencingToken > (locks[i - 1] as Lock).fencingToken));
    const full = await store.acquire(ask([named(service, 'exclusive', 3)], 'late'));
    assert.ok(!full.acquired && 'holders' in full);
    assert.equal(full.holder.id, locks[0]?.id, 'the oldest holder');
    assert.deepEqual(
      full.holders.map((lock) => lock.id),
      locks.map((lock) => lock.id),
    );
    const other = await store.acquire(ask([named(service, 'exclusive', 2)], 'other'), undefined, undefined);
    assert.deepEqual(other, { acquired: false, limitMismatch: { service, limit: 3 } });
    const plain = await store.acquire(
      { id: randomUUID(), service, who: 'plain', ttlSeconds: null },
      undefined,
      undefined,
    );
    assert.deepEqual(plain, { acquired: false, limitMismatch: { service, limit: 3 } });
    await store.release(locks[1]?.id ?? '');
    granted(await store.acquire(ask([named(service, 'exclusive', 3)], 'next')));
  });

  test('shared holders coexist; a waiting exclusive request is not overtaken by later shared ones', async () => {
    const service = unique('rw');
    const [reader] = granted(await store.acquire(ask([named(service, 'shared')], 'reader-1')));
    granted(await store.acquire(ask([named(service, 'shared')], 'reader-2')));
    const writer = ask([named(service)], 'writer');
    const queued = await store.acquire(writer, { owner: OWNER });
    assert.ok(!queued.acquired && queued.waiter, 'the writer waits');
    assert.equal(queued.holder.id, reader?.id);
    const late = ask([named(service, 'shared')], 'late-reader');
    const refused = await store.acquire(late, { owner: OWNER });
    assert.ok(!refused.acquired && refused.waiter, 'a later reader waits behind the writer');
    assert.equal(refused.waiter.position, 2);
    const queue = await store.queue(service);
    assert.deepEqual(
      queue.waiters.map((waiter) => [waiter.who, waiter.mode, waiter.position]),
      [
        ['writer', 'exclusive', 1],
        ['late-reader', 'shared', 2],
      ],
    );
    for (const holder of queue.holders) await store.release(holder.id);
    const [write] = await store.granted(writer.id);
    assert.equal(write?.who, 'writer', 'the writer is granted when the readers are gone');
    assert.deepEqual(await store.granted(late.id), []);
    await store.release(write?.id ?? '');
    assert.equal((await store.granted(late.id))[0]?.mode, 'shared');
  });

  test('labels: any free resource carrying it, least recently released first; NO_SUCH_LABEL; the resource on the lock', async () => {
    const label = unique('phone');
    for (const name of ['a', 'b']) {
      await store.putResource({
        name: `${label}-${name}`,
        labels: [label, 'android'],
        properties: { serial: name.toUpperCase() },
        capacity: 1,
        description: null,
      });
    }
    const [first] = granted(await store.acquire(ask([labelled(label)], 'job-1')));
    assert.equal(first?.service, `${label}-a`);
    assert.deepEqual(first?.resource, {
      name: `${label}-a`,
      labels: [label, 'android'],
      properties: { serial: 'A' },
    });
    const [second] = granted(await store.acquire(ask([labelled(label)], 'job-2')));
    assert.equal(second?.service, `${label}-b`);
    await store.release(second?.id ?? '');
    await store.release(first?.id ?? '');
    const [third] = granted(await store.acquire(ask([labelled(label)], 'job-3')));
    assert.equal(third?.service, `${label}-b`, 'b was released before a');
    const nothing = unique('nothing');
    assert.deepEqual(await store.acquire(ask([labelled(nothing)], 'x'), undefined, undefined), {
      acquired: false,
      noSuchLabel: nothing,
    });
  });

  test('a label waiter and a name waiter share one arrival order on a resource', async () => {
    const label = unique('gpu');
    const name = `${label}-0`;
    await store.putResource({ name, labels: [label], properties: {}, capacity: 1, description: null });
    const [holder] = granted(await store.acquire(ask([named(name)], 'holder')));
    const byLabel = ask([labelled(label)], 'by-label');
    const byName = ask([named(name)], 'by-name');
    assert.ok(!(await store.acquire(byLabel, { owner: OWNER })).acquired);
    assert.ok(!(await store.acquire(byName, { owner: OWNER })).acquired);
    const queue = await store.queue(name);
    assert.deepEqual(
      queue.waiters.map((waiter) => [waiter.who, waiter.label]),
      [
        ['by-label', label],
        ['by-name', null],
      ],
    );
    assert.equal(
      (await store.get(holder?.id ?? ''))?.waiters,
      1,
      'a lock counts the requests naming its service',
    );
    await store.release(holder?.id ?? '');
    assert.equal((await store.granted(byLabel.id))[0]?.service, name);
    assert.deepEqual(await store.granted(byName.id), []);
  });

  test('resources: put creates then replaces, get/list show holders and waiters, delete is refused while held', async () => {
    const name = unique('device');
    const label = unique('rack');
    const spec = { name, labels: [label], properties: { ip: '10.0.0.1' }, capacity: 2, description: 'a box' };
    const created = await store.putResource(spec);
    assert.equal(created.created, true);
    assert.deepEqual(created.resource, { ...spec, holders: [], waiters: [] });
    const replaced = await store.putResource({ ...spec, capacity: 1 });
    assert.equal(replaced.created, false);
    assert.equal(replaced.resource.capacity, 1);
    const [lock] = granted(
      await store.acquire({ id: randomUUID(), service: name, who: 'plain', ttlSeconds: null }),
    );
    assert.equal(lock?.limit, 1, "a plain acquire of a resource holds it under the resource's capacity");
    assert.deepEqual(
      (await store.listResources(label)).map((resource) => [resource.name, resource.holders.length]),
      [[name, 1]],
    );
    assert.equal(await store.deleteResource(name), 'in-use');
    // A new resource carrying the label lets a label waiter in at once.
    const waiting = ask([labelled(label)], 'waiting');
    assert.ok(!(await store.acquire(waiting, { owner: OWNER })).acquired);
    await store.putResource({ ...spec, name: `${name}-2` });
    assert.equal((await store.granted(waiting.id))[0]?.service, `${name}-2`);
    await store.release(lock?.id ?? '');
    assert.equal(await store.deleteResource(`${name}-2`), 'in-use');
    await store.release((await store.granted(waiting.id))[0]?.id ?? '');
    assert.equal(await store.deleteResource(`${name}-2`), 'deleted');
    assert.equal(await store.deleteResource(name), 'deleted');
    assert.equal(await store.deleteResource(name), 'missing');
    assert.equal(await store.getResource(name), null);
  });

  test('syncResources: file resources follow the file, API ones stay, held ones are kept', async () => {
    const prefix = unique('file');
    const spec = (name: string) => ({
      name: `${prefix}-${name}`,
      labels: [prefix],
      properties: {},
      capacity: 1,
      description: null,
    });
    await store.putResource(spec('api'));
    await store.syncResources([spec('one'), spec('two')]);
    const [held] = granted(
      await store.acquire({ id: randomUUID(), service: `${prefix}-two`, who: 'x', ttlSeconds: null }),
    );
    assert.deepEqual(await store.syncResources([spec('three')]), { kept: [`${prefix}-two`] });
    assert.deepEqual(
      (await store.listResources(prefix)).map((resource) => resource.name),
      [`${prefix}-api`, `${prefix}-three`, `${prefix}-two`],
    );
    await store.release(held?.id ?? '');
  });

  test('groups: all or nothing, one id, released and renewed together; a member can go alone', async () => {
    const [a, b] = [unique('a'), unique('b')];
    const [blocker] = granted(await store.acquire(ask([named(b)], 'blocker')));
    const group = ask([named(a), named(b)], 'group');
    const refused = await store.acquire(group);
    assert.ok(!refused.acquired);
    assert.equal(refused.holder.id, blocker?.id);
    assert.deepEqual(await store.snapshot(a), [], 'nothing of a refused group is held');
    const waiting = await store.acquire(group, { owner: OWNER });
    assert.ok(!waiting.acquired && waiting.waiter?.groupId === group.id);
    assert.deepEqual(await store.snapshot(a), [], 'nor while it waits');
    await store.release(blocker?.id ?? '');
    const locks = await store.granted(group.id);
    assert.deepEqual(locks.map((lock) => lock.service).sort(), [a, b].sort());
    assert.ok(locks.every((lock) => lock.groupId === group.id && lock.id !== group.id));
    const renewed = await store.renewGroup(group.id, 60);
    assert.deepEqual(
      renewed.locks.map((lock) => lock.ttlSeconds),
      [60, 60],
    );
    const denied = await store.releaseGroup(group.id, { key: 'someone-else', name: 'x' });
    assert.deepEqual(denied, { locks: [], denied: true }, "a lock taken without a token is no token's");
    await store.release(locks[0]?.id ?? '');
    const released = await store.releaseGroup(group.id);
    assert.equal(released.locks.length, 1);
    assert.deepEqual(await store.granted(group.id), []);
    const events = await store.history({ service: a, limit: 10 });
    assert.ok(events.some((event) => event.type === 'acquired' && event.groupId === group.id));
  });

  test('priority: a higher waiter is granted first, FIFO within a priority', async () => {
    const service = unique('prio');
    const [holder] = granted(await store.acquire(ask([named(service)], 'holder')));
    const low = ask([named(service)], 'low', { priority: -5 });
    const normal = ask([named(service)], 'normal');
    const high = ask([named(service)], 'high', { priority: 10 });
    for (const request of [low, normal, high])
      assert.ok(!(await store.acquire(request, { owner: OWNER })).acquired);
    assert.deepEqual(
      (await store.queue(service)).waiters.map((waiter) => [waiter.who, waiter.priority, waiter.position]),
      [
        ['high', 10, 1],
        ['normal', 0, 2],
        ['low', -5, 3],
      ],
    );
    let current = holder as Lock;
    for (const next of [high, normal, low]) {
      await store.release(current.id);
      const [lock] = await store.granted(next.id);
      assert.ok(lock, `${next.who} is next`);
      current = lock;
    }
  });

  test('idempotency: a group key names the group; a replay of a granted group returns its locks', async () => {
    const [a, b] = [unique('ka'), unique('kb')];
    const group = ask([named(a), named(b)], 'keyed');
    const key = { scope: '', key: unique('key'), fingerprint: 'f', attempt: randomUUID() };
    const first = granted(await store.acquire(group, undefined, key));
    const replay = await store.acquire({ ...group, id: randomUUID() }, undefined, {
      ...key,
      attempt: randomUUID(),
    });
    assert.ok(replay.acquired && replay.replayed);
    assert.deepEqual([...replay.locks].map((lock) => lock.id).sort(), first.map((lock) => lock.id).sort());
    await store.releaseGroup(group.id);
    const ended = await store.acquire({ ...group, id: randomUUID() }, undefined, {
      ...key,
      attempt: randomUUID(),
    });
    assert.deepEqual(ended, { acquired: false, ended: { lockId: group.id } });
  });

  test('100 concurrent acquires on limit 3 across 3 pools (replicas): exactly 3 winners', async () => {
    const replicas = [
      await open('semaphore_race'),
      await open('semaphore_race'),
      await open('semaphore_race'),
    ];
    try {
      const service = unique('limit3');
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          (replicas[i % 3] as PostgresLockStore).acquire(ask([named(service, 'exclusive', 3)], `racer-${i}`)),
        ),
      );
      const winners = results.flatMap((result) => (result.acquired ? result.locks : []));
      assert.equal(winners.length, 3);
      assert.equal(new Set(winners.map((lock) => lock.fencingToken)).size, 3);
      for (const result of results) {
        if (!result.acquired) assert.equal(result.holders.length, 3, 'a refusal names the 3 holders');
      }
      assert.equal((await (replicas[1] as PostgresLockStore).snapshot(service)).length, 3);
    } finally {
      for (const replica of replicas) await replica.close();
    }
  });

  test('20 clients looping over groups [x,y] and [y,x] with waits on 3 pools: all finish, never over capacity', async () => {
    const replicas = [await open('groups_loop'), await open('groups_loop'), await open('groups_loop')];
    try {
      const [x, y] = [unique('x'), unique('y')];
      const rounds = 5;
      let inside = { [x]: 0, [y]: 0 } as Record<string, number>;
      let worst = 0;
      await Promise.all(
        Array.from({ length: 20 }, async (_, client) => {
          const replica = replicas[client % 3] as PostgresLockStore;
          const order = client % 2 ? [y, x] : [x, y];
          for (let round = 0; round < rounds; round++) {
            const group = ask(
              order.map((service) => named(service)),
              `client-${client}`,
              { group: true, ttlSeconds: 30 },
            );
            const result = await replica.acquire(group, { owner: OWNER });
            const locks = result.acquired ? [...result.locks] : await waitGranted(replica, group.id, [x, y]);
            assert.equal(locks.length, 2);
            for (const service of [x, y]) inside[service] = (inside[service] ?? 0) + 1;
            worst = Math.max(worst, inside[x] ?? 0, inside[y] ?? 0);
            await new Promise((resolve) => setImmediate(resolve));
            for (const service of [x, y]) inside[service] = (inside[service] ?? 0) - 1;
            const released = await replica.releaseGroup(group.id);
            assert.equal(released.locks.length, 2);
          }
        }),
      );
      inside = {};
      assert.equal(worst, 1, 'never two holders of x or of y at once, as the clients saw it');
      const most = await mostHolders(replicas[0] as PostgresLockStore, [x, y]);
      assert.deepEqual([most.get(x), most.get(y)], [1, 1], 'nor in the recorded history');
      const acquired = (await (replicas[0] as PostgresLockStore).history({ service: x, limit: 1000 })).filter(
        (event) => event.type === 'acquired',
      );
      assert.equal(acquired.length, 20 * rounds);
    } finally {
      for (const replica of replicas) await replica.close();
    }
  });
});
