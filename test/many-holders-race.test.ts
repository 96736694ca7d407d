/**
 * Races of the many-holders rules (issue 16, point 11), on both stores:
 * - 100 concurrent acquires on `limit: 3` → exactly 3 winners, on a SQLite file shared by 3
 *   store instances and on PostgreSQL across 3 store instances (3 replicas);
 * - 20 clients looping over the groups [x,y] and [y,x] with waits, through lock services
 *   on several store instances → all finish, never over capacity (checked as they go and
 *   from the store's recorded history);
 * - a waiting group whose client hangs up (its abort signal) holds nothing afterwards, also
 *   when the hang-up and the grant happen at the same instant; and over real HTTP, a waiting
 *   `POST /locks` whose socket is destroyed.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AUTHENTICATION_OFF } from '../src/core/auth.js';
import { systemClock } from '../src/core/clock.js';
import { ErrorCode, TrackerError } from '../src/core/errors.js';
import type { Lock, LockEventRecord } from '../src/core/lock.js';
import type { LockStore } from '../src/core/lock-store.js';
import { openPostgresLockStore } from '../src/storage/postgres/postgres-lock-store.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { serviceClaim, singleRequest } from './contract/many-holders.contract.js';
import { createTestService, type TestService } from './support/lock-service.js';
import { recordingLogger } from './support/logger.js';
import { describePostgres } from './support/postgres.js';
import { API, call } from './support/rest.js';
import { type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';
import { waitFor, within } from './support/wait-for.js';

const caller = AUTHENTICATION_OFF;
const RACERS = 100;
const LIMIT = 3;
const ROUNDS = 5;
const CLIENTS = 20;
const LOOPS = 4;
/** The groups' services admit this many exclusive holders each. */
const GROUP_LIMIT = 2;

/** Three store instances on one store (a file, a database), and lock services over them. */
interface Replicas {
  readonly stores: readonly LockStore[];
  /** Lock services over the stores, one per store. */
  readonly services: readonly TestService[];
}

function runRaces(name: string, openReplicas: () => Promise<Replicas & { close(): Promise<void> }>) {
  describe(`many holders, races: ${name}`, () => {
    let replicas: Replicas & { close(): Promise<void> };
    before(async () => {
      replicas = await openReplicas();
    });
    after(async () => {
      await replicas?.close();
    });

    test(`${RACERS} concurrent acquires on limit ${LIMIT} across 3 instances: exactly ${LIMIT} winners`, {
      timeout: 60_000,
    }, async () => {
      const { stores } = replicas;
      const maxToken = { value: 0 };
      for (let round = 0; round < ROUNDS; round++) {
        const service = `sem-race-${round}-${randomUUID().slice(0, 8)}`;
        const results = await Promise.all(
          Array.from({ length: RACERS }, (_, i) =>
            (stores[i % stores.length] as LockStore).acquire(
              singleRequest(serviceClaim(service, { limit: LIMIT }), { who: `racer-${i}` }),
            ),
          ),
        );
        const winners = results.flatMap((result) => (result.acquired ? [result.lock] : []));
        assert.equal(winners.length, LIMIT, `round ${round}: ${winners.length} winners`);
        const tokens = winners.map((lock) => lock.fencingToken);
        assert.equal(new Set(tokens).size, LIMIT, 'each winner has its own token');
        assert.ok(Math.min(...tokens) > maxToken.value, 'tokens grow per service');
        const winnerIds = winners.map((lock) => lock.id).sort();
        for (const result of results) {
          if (result.acquired) continue;
          assert.deepEqual(
            result.holders.map((lock) => lock.id).sort(),
            winnerIds,
            'a loser is told every holder',
          );
        }
        for (const store of stores) {
          assert.deepEqual(
            (await store.snapshot(service)).map((lock) => lock.id).sort(),
            winnerIds,
            'every instance sees the same holders',
          );
        }
        // Released through other instances than the ones that won; the service is empty again.
        for (const [i, lock] of winners.entries()) {
          assert.equal((await (stores[(i + 1) % stores.length] as LockStore).release(lock.id))?.id, lock.id);
        }
        assert.deepEqual(await (stores[0] as LockStore).snapshot(service), []);
      }
    });

    test(`${CLIENTS} clients looping over groups [x,y] and [y,x] with waits all finish, never over capacity`, {
      timeout: 120_000,
    }, async (t) => {
      const { services, stores } = replicas;
      const x = `group-x-${randomUUID().slice(0, 8)}`;
      const y = `group-y-${randomUUID().slice(0, 8)}`;
      const holding = new Map<string, number>([
        [x, 0],
        [y, 0],
      ]);
      let most = 0;
      let granted = 0;
      const client = async (index: number) => {
        const tested = services[index % services.length] as TestService;
        const order = index % 2 === 0 ? [x, y] : [y, x];
        for (let loop = 0; loop < LOOPS; loop++) {
          const { group } = await tested.service.acquireGroup({
            caller,
            who: `client-${index}-${loop}`,
            ttlSeconds: 120,
            waitSeconds: 60,
            locks: order.map((service) => ({ service, limit: GROUP_LIMIT })),
          });
          granted++;
          assert.deepEqual(group.locks.map((lock) => lock.service).sort(), [x, y].sort());
          for (const lock of group.locks) {
            const now = (holding.get(lock.service) ?? 0) + 1;
            holding.set(lock.service, now);
            most = Math.max(most, now);
            assert.ok(now <= GROUP_LIMIT, `${lock.service} held ${now} times at once`);
          }
          // Hold it across a turn of the event loop, so that others run meanwhile.
          await new Promise((resolve) => setImmediate(resolve));
          for (const lock of group.locks) holding.set(lock.service, (holding.get(lock.service) ?? 0) - 1);
          const released = await tested.service.releaseGroup({ caller, id: group.id });
          assert.equal(released.locks.length, 2);
        }
      };
      await within(Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i))), {
        what: `${CLIENTS} clients to finish ${LOOPS} loops each`,
        timeoutMs: 110_000,
      });
      assert.equal(granted, CLIENTS * LOOPS);
      const store = stores[0] as LockStore;
      assert.deepEqual(await store.snapshot(x), []);
      assert.deepEqual(await store.snapshot(y), []);
      assert.deepEqual((await store.queue(x)).waiters, []);
      // The recorded history, replayed in event order: never over the limit on either service.
      for (const service of [x, y]) {
        const events = await allEvents(store, service);
        const acquired = events.filter((event) => event.type === 'acquired');
        assert.equal(acquired.length, CLIENTS * LOOPS, `${service}: one acquired event per grant`);
        assert.ok(
          acquired.every((event) => event.groupId !== null && event.limit === GROUP_LIMIT),
          'every grant was a group member under the limit asked',
        );
        const held = new Set<string>();
        let peak = 0;
        for (const event of events) {
          if (event.type === 'acquired') held.add(event.lockId);
          if (event.type === 'released' || event.type === 'expired' || event.type === 'force-released') {
            held.delete(event.lockId);
          }
          peak = Math.max(peak, held.size);
          assert.ok(held.size <= GROUP_LIMIT, `${service}: ${held.size} holders after event ${event.id}`);
        }
        t.diagnostic(`${service}: at most ${peak} holders at once in the history`);
      }
      t.diagnostic(`at most ${most} holders at once seen by the clients`);
    });

    test('a waiting group whose client hangs up holds nothing afterwards', { timeout: 30_000 }, async () => {
      const { services, stores } = replicas;
      const store = stores[0] as LockStore;
      const tested = services[0] as TestService;
      const x = `hang-x-${randomUUID().slice(0, 8)}`;
      const y = `hang-y-${randomUUID().slice(0, 8)}`;
      const holder = await tested.service.acquire({ caller, service: y, who: 'holder' });
      const controller = new AbortController();
      const pending = tested.service.acquireGroup({
        caller,
        who: 'hangs-up',
        waitSeconds: 60,
        locks: [{ service: x }, { service: y }],
        signal: controller.signal,
      });
      pending.catch(() => {});
      const waiter = await waitFor(
        async () => (await store.queue(y)).waiters.find((candidate) => candidate.who === 'hangs-up'),
        { what: 'the group to wait' },
      );
      assert.ok(waiter.groupId, 'the waiter is a group');
      assert.deepEqual(await store.snapshot(x), [], 'nothing held while it waits');
      controller.abort();
      await assert.rejects(pending, isCode(ErrorCode.CANCELLED));
      await tested.service.release({ caller, id: holder.lock.id });
      await assertHoldsNothing(store, waiter.groupId, [x, y]);
    });

    test('a group whose client hangs up as it is granted holds nothing afterwards', {
      timeout: 60_000,
    }, async () => {
      const { services, stores } = replicas;
      const store = stores[0] as LockStore;
      for (let round = 0; round < 10; round++) {
        // The waiter on one instance, the release through another (another replica).
        const waiting = services[round % services.length] as TestService;
        const releasing = services[(round + 1) % services.length] as TestService;
        const x = `grant-hang-x-${round}-${randomUUID().slice(0, 8)}`;
        const y = `grant-hang-y-${round}-${randomUUID().slice(0, 8)}`;
        const holder = await releasing.service.acquire({ caller, service: x, who: 'holder' });
        const controller = new AbortController();
        const pending = waiting.service.acquireGroup({
          caller,
          who: 'hangs-up',
          waitSeconds: 60,
          locks: [{ service: x }, { service: y }],
          signal: controller.signal,
        });
        pending.catch(() => {});
        const waiter = await waitFor(
          async () => (await store.queue(x)).waiters.find((candidate) => candidate.who === 'hangs-up'),
          { what: 'the group to wait' },
        );
        assert.ok(waiter.groupId);
        // The release (and so the grant) and the hang-up in the same turn, in either order.
        const released = releasing.service.release({ caller, id: holder.lock.id });
        if (round % 2 === 0) controller.abort();
        else setImmediate(() => controller.abort());
        await released;
        // Either it never got the group, or it got it and gave it back.
        const settled = await pending.then(
          () => 'granted',
          (error: unknown) => (error instanceof TrackerError ? error.code : String(error)),
        );
        assert.ok(
          ['granted', ErrorCode.CANCELLED, ErrorCode.LOCK_ENDED].includes(settled),
          `round ${round}: the acquire ended with ${settled}`,
        );
        if (settled === 'granted') {
          // The abort came after the answer: the client got the group, and gives it back.
          await waiting.service.releaseGroup({ caller, id: waiter.groupId });
        }
        await assertHoldsNothing(store, waiter.groupId, [x, y]);
      }
    });
  });
}

/** Fails unless, within a few seconds, the group holds nothing, waits nowhere, and its services are free. */
async function assertHoldsNothing(store: LockStore, groupId: string, services: readonly string[]) {
  await waitFor(
    async () => {
      if ((await store.granted(groupId)).length > 0) return false;
      for (const service of services) {
        if ((await store.snapshot(service)).length > 0) return false;
        if ((await store.queue(service)).waiters.length > 0) return false;
      }
      return true;
    },
    { what: `group ${groupId} to hold nothing and its services to be free`, timeoutMs: 5000 },
  );
  const held = (await store.snapshot()).filter((lock: Lock) => lock.groupId === groupId);
  assert.deepEqual(held, []);
}

/** Every event of a service, oldest first (paged, bounded). */
async function allEvents(store: LockStore, service: string): Promise<LockEventRecord[]> {
  const events: LockEventRecord[] = [];
  let before: number | undefined;
  for (let page = 0; page < 100; page++) {
    const batch = await store.history({ service, limit: 1000, before });
    events.push(...batch);
    if (batch.length < 1000) break;
    before = batch[batch.length - 1]?.id;
  }
  return events.reverse();
}

function isCode(code: ErrorCode) {
  return (error: unknown) => error instanceof TrackerError && error.code === code;
}

runRaces('SQLite file shared by 3 instances', async () => {
  const dir = tempDir('tracker-many-race-');
  const path = join(dir.path, 'shared.db');
  const stores = Array.from({ length: 3 }, () => openSqliteLockStore({ path, clock: systemClock }));
  // Instances on one file hear of each other's changes only through the safety re-check.
  const services = stores.map((store) => createTestService(store, { recheckMs: 50 }));
  return {
    stores,
    services,
    close: async () => {
      for (const service of services) service.close();
      for (const store of stores) await store.close();
      dir.remove();
    },
  };
});

await describePostgres('PostgreSQL, 3 replicas', (database) => {
  runRaces('PostgreSQL, 3 store instances', async () => {
    const logger = recordingLogger().logger;
    const stores: LockStore[] = [];
    for (let i = 0; i < 3; i++) {
      stores.push(await openPostgresLockStore({ connectionString: database().url, schema: 'races', logger }));
    }
    const services = stores.map((store) => createTestService(store));
    return {
      stores,
      services,
      close: async () => {
        for (const service of services) service.close();
        for (const store of stores) await store.close();
      },
    };
  });
});

describe('many holders over HTTP: a waiting group whose socket is destroyed', () => {
  const dir = tempDir('tracker-many-http-');
  let server: ServerProcess | undefined;
  before(async () => {
    server = await startServerProcess({
      args: ['--http-port', '0', '--grpc-port', '0', '--database-url', `sqlite:${join(dir.path, 'http.db')}`],
    });
  });
  after(async () => {
    await server?.stop();
    dir.remove();
  });

  test('holds nothing afterwards, and its services go to the next in line', { timeout: 30_000 }, async () => {
    assert.ok(server);
    const base = server.baseUrl;
    const x = `http-x-${randomUUID().slice(0, 8)}`;
    const y = `http-y-${randomUUID().slice(0, 8)}`;
    const holder = await call(base, 'POST', `${API}/lock`, { service: y, who: 'holder' });
    assert.equal(holder.status, 201);
    const hangUp = new AbortController();
    const waiting = call(
      base,
      'POST',
      `${API}/locks`,
      { who: 'hangs-up', waitSeconds: 60, locks: [{ service: x }, { service: y }] },
      { signal: hangUp.signal },
    );
    waiting.catch(() => {});
    type QueueJson = { holders: unknown[]; waiters: { who: string; groupId: string | null }[] };
    const queueOf = async (service: string) =>
      (await call(base, 'GET', `${API}/queue/${encodeURIComponent(service)}`)).json as QueueJson;
    let answered: string | undefined;
    waiting.then(
      (reply) => {
        answered = `${reply.status} ${JSON.stringify(reply.json)}`;
      },
      () => {},
    );
    const waiter = await waitFor(
      async () => {
        if (answered !== undefined) assert.fail(`POST /locks answered instead of waiting: ${answered}`);
        return (await queueOf(y)).waiters.find((candidate) => candidate.who === 'hangs-up');
      },
      { what: 'the group to wait' },
    );
    assert.ok(waiter.groupId);
    assert.deepEqual((await queueOf(x)).holders, [], 'nothing held while it waits');
    // A plain waiter behind it, on y.
    const next = call(base, 'POST', `${API}/lock`, { service: y, who: 'next', waitSeconds: 30 });
    await waitFor(async () => (await queueOf(y)).waiters.length === 2, { what: 'the second waiter' });
    hangUp.abort();
    await assert.rejects(waiting);
    await waitFor(async () => (await queueOf(y)).waiters.length === 1, {
      what: 'the group to leave the line when its socket closed',
    });
    assert.equal((await call(base, 'DELETE', `${API}/lock/${holder.json.id}`)).status, 200);
    const granted = await next;
    assert.equal(granted.status, 201, 'y goes to the waiter behind the group');
    assert.equal((await call(base, 'GET', `${API}/locks/${waiter.groupId}`)).status, 404);
    const listed = await call(base, 'GET', `${API}/locks/list?service=${encodeURIComponent(x)}`);
    assert.equal(listed.json.total, 0, 'x is free');
  });
});
