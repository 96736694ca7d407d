import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { ErrorCode, TrackerError } from '../src/core/errors.js';
import type { AcquireRequest } from '../src/core/lock.js';
import type { AcquireResult } from '../src/core/lock-store.js';
import {
  openPostgresLockStore,
  type PostgresLockStore,
  type PostgresStoreOptions,
} from '../src/storage/postgres/postgres-lock-store.js';
import { BATCH } from '../src/storage/postgres/queries.js';
import { recordingLogger } from './support/logger.js';
import { describePostgres, withClient } from './support/postgres.js';
import { waitFor } from './support/wait-for.js';

/**
 * Issue 17, point 4: the plain acquires and releases pending together in one process go to
 * PostgreSQL as one call of tracker_batch (migration 009), each answered with its own result.
 */

const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;
const request = (service: string, who: string): AcquireRequest => ({
  id: randomUUID(),
  service,
  who,
  ttlSeconds: null,
});

const isStoreUnavailable = (error: unknown) =>
  error instanceof TrackerError && error.code === ErrorCode.STORE_UNAVAILABLE;

/**
 * Counts the batch calls the pools of this process send (a wrapper over pg's Pool.query,
 * which the store's statements go through): how many, and how many ops each carried.
 */
function countBatches(): { sizes: number[]; restore: () => void } {
  const sizes: number[] = [];
  const original = pg.Pool.prototype.query;
  const counting = function (this: pg.Pool, ...args: unknown[]) {
    const [config] = args as [{ name?: string; values?: unknown[][] } | undefined];
    if (typeof config === 'object' && config?.name === BATCH.name)
      sizes.push(config.values?.[0]?.length ?? 0);
    return (original as (...a: unknown[]) => unknown).apply(this, args);
  };
  pg.Pool.prototype.query = counting as typeof pg.Pool.prototype.query;
  return {
    sizes,
    restore: () => {
      pg.Pool.prototype.query = original;
    },
  };
}

await describePostgres('PostgreSQL store: one round trip per batch', (database) => {
  const quiet = recordingLogger().logger;
  const open = (schema: string, options: Partial<PostgresStoreOptions> = {}) =>
    openPostgresLockStore({
      connectionString: database().url,
      schema,
      logger: quiet,
      statementTimeoutMs: 15_000,
      connectTimeoutMs: 15_000,
      // One batch in flight: the ops asked together in a test then go in one call (with
      // more, they are spread over the free slots).
      batchConcurrency: 1,
      ...options,
    });
  let store: PostgresLockStore;
  before(async () => {
    store = await open('batch');
  });
  after(async () => {
    await store.close();
  });

  test('two acquires of one service in one batch: one winner, the other refused naming it', async () => {
    const service = unique('contested');
    const counter = countBatches();
    let results: AcquireResult[];
    try {
      results = await Promise.all([
        store.acquire(request(service, 'a')),
        store.acquire(request(service, 'b')),
      ]);
    } finally {
      counter.restore();
    }
    assert.deepEqual(counter.sizes, [2], 'both acquires went in one call');
    const winners = results.filter((result) => result.acquired);
    assert.equal(winners.length, 1);
    const [first, second] = results;
    assert.ok(first?.acquired, 'the first asked wins');
    assert.ok(second && !second.acquired && 'holder' in second);
    assert.equal(second.holder.id, first.lock.id);
    const held = await store.queue(service);
    assert.deepEqual(
      held.holders.map((lock) => lock.who),
      ['a'],
    );
    assert.ok(await store.release(first.lock.id));
  });

  test('a failing op beside good ones fails alone; the others are answered and committed', async () => {
    await withClient(database().url, async (client) => {
      await client.query(`CREATE FUNCTION batch.refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.service LIKE 'refused-%' THEN RAISE EXCEPTION 'refused by the test'; END IF;
          RETURN NEW;
        END $$`);
      await client.query(
        'CREATE TRIGGER refuse_marked BEFORE INSERT ON batch.locks FOR EACH ROW EXECUTE FUNCTION batch.refuse_marked()',
      );
    });
    try {
      const [good1, bad, good2] = [unique('good'), unique('refused'), unique('good')];
      const counter = countBatches();
      let settled: PromiseSettledResult<AcquireResult>[];
      try {
        settled = await Promise.allSettled([
          store.acquire(request(good1, 'g1')),
          store.acquire(request(bad, 'x')),
          store.acquire(request(good2, 'g2')),
        ]);
      } finally {
        counter.restore();
      }
      assert.deepEqual(counter.sizes, [3]);
      const [one, two, three] = settled;
      assert.equal(two?.status, 'rejected');
      assert.match(String((two as PromiseRejectedResult).reason), /refused by the test/);
      assert.ok(!isStoreUnavailable((two as PromiseRejectedResult).reason), 'a bug, not an outage');
      for (const [outcome, service] of [
        [one, good1],
        [three, good2],
      ] as const) {
        assert.equal(outcome?.status, 'fulfilled');
        const result = (outcome as PromiseFulfilledResult<AcquireResult>).value;
        assert.ok(result.acquired);
        assert.equal((await store.get(result.lock.id))?.service, service, 'committed');
        const events = await store.history({ service, limit: 10 });
        assert.deepEqual(
          events.map((event) => event.type),
          ['acquired'],
        );
        assert.ok(await store.release(result.lock.id));
      }
      assert.equal((await store.queue(bad)).holders.length, 0);
      assert.deepEqual(await store.history({ service: bad, limit: 10 }), []);
    } finally {
      await withClient(database().url, (client) => client.query('DROP TRIGGER refuse_marked ON batch.locks'));
    }
  });

  for (const how of ['a statement timeout', 'its backend terminated'] as const) {
    test(`a batch whose call fails (${how}): every op rejects STORE_UNAVAILABLE, nothing is visible`, async () => {
      const schema = how === 'a statement timeout' ? 'batch_timeout' : 'batch_killed';
      const failing = await open(schema, {
        statementTimeoutMs: how === 'a statement timeout' ? 400 : 15_000,
      });
      try {
        // An insert into a marked service stalls the call (the sleep sits inside it).
        await withClient(database().url, async (client) => {
          await client.query(`CREATE FUNCTION ${schema}.stall_marked() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.service LIKE 'stall-%' THEN PERFORM pg_sleep(30); END IF;
              RETURN NEW;
            END $$`);
          await client.query(
            `CREATE TRIGGER stall_marked BEFORE INSERT ON ${schema}.locks FOR EACH ROW EXECUTE FUNCTION ${schema}.stall_marked()`,
          );
        });
        const kept = await failing.acquire(request(unique('kept'), 'k'));
        assert.ok(kept.acquired);
        const services = [unique('before'), unique('stall'), unique('after')];
        const counter = countBatches();
        let settled: PromiseSettledResult<unknown>[];
        try {
          const asked = [
            failing.acquire(request(services[0] as string, 'b')),
            failing.release(kept.lock.id),
            failing.acquire(request(services[1] as string, 's')),
            failing.acquire(request(services[2] as string, 'a')),
          ];
          const all = Promise.allSettled(asked);
          if (how === 'its backend terminated') {
            await withClient(database().url, async (client) => {
              await waitFor(
                async () => {
                  const rows = await client.query(
                    `SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event = 'PgSleep' AND query LIKE '%tracker_batch%'`,
                  );
                  return rows.rows.length > 0;
                },
                { what: 'the stalled batch to be terminated', timeoutMs: 10_000, intervalMs: 10 },
              );
            });
          }
          settled = await all;
        } finally {
          counter.restore();
        }
        assert.deepEqual(counter.sizes, [4], 'the four ops went in one call');
        for (const outcome of settled) {
          assert.equal(outcome.status, 'rejected');
          assert.ok(
            isStoreUnavailable((outcome as PromiseRejectedResult).reason),
            String((outcome as PromiseRejectedResult).reason),
          );
        }
        await withClient(database().url, (client) =>
          client.query(`DROP TRIGGER stall_marked ON ${schema}.locks`),
        );
        // Nothing of the batch committed: the acquired services have no lock and no event,
        // the released lock is still held.
        for (const service of services) {
          assert.equal((await failing.queue(service)).holders.length, 0);
          assert.deepEqual(await failing.history({ service, limit: 10 }), []);
        }
        assert.equal((await failing.get(kept.lock.id))?.id, kept.lock.id, 'the release was undone');
        // The store goes on: the next batch works.
        assert.ok(await failing.release(kept.lock.id));
        assert.ok((await failing.acquire(request(services[1] as string, 's'))).acquired);
      } finally {
        await failing.close();
      }
    });
  }

  test('ops asked together are one call: 32 acquires, then 32 releases, as PostgreSQL counts them', async () => {
    const schema = 'batch_count';
    // Function call counts (pg_stat_user_functions) for new sessions of this test's database.
    await withClient(database().url, (client) =>
      client.query(`ALTER DATABASE ${database().name} SET track_functions = 'pl'`),
    );
    const counted = await open(schema);
    const counter = countBatches();
    try {
      const results = await Promise.all(
        Array.from({ length: 32 }, (_, i) => counted.acquire(request(unique(`count${i}`), `w${i}`))),
      );
      const ids = results.map((result) => {
        assert.ok(result.acquired);
        return result.lock.id;
      });
      const released = await Promise.all(ids.map((id) => counted.release(id)));
      assert.ok(released.every((lock) => lock !== null));
    } finally {
      counter.restore();
      await counted.close();
    }
    assert.deepEqual(counter.sizes, [32, 32]);
    // A backend reports its counts when it exits: the pool's have just closed.
    const calls = await withClient(database().url, (client) =>
      waitFor(
        async () => {
          await client.query('SELECT pg_stat_clear_snapshot()');
          const rows = await client.query<{ funcname: string; calls: string }>(
            `SELECT funcname, calls FROM pg_stat_user_functions WHERE schemaname = $1
             AND funcname IN ('tracker_batch', 'tracker_acquire_plain', 'tracker_release_plain')`,
            [schema],
          );
          const byName = Object.fromEntries(rows.rows.map((row) => [row.funcname, Number(row.calls)]));
          return byName.tracker_release_plain === 32 ? byName : null;
        },
        { what: 'the function counts to be reported', timeoutMs: 15_000, intervalMs: 50 },
      ),
    );
    assert.deepEqual(calls, { tracker_batch: 2, tracker_acquire_plain: 32, tracker_release_plain: 32 });
  });
});
