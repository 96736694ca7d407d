import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import pg from 'pg';
import { ErrorCode, TrackerError } from '../src/core/errors.js';
import type { AcquireRequest, Lock } from '../src/core/lock.js';
import { readMigrations, SchemaTooNewError } from '../src/storage/migrations.js';
import { isUnavailable } from '../src/storage/postgres/is-unavailable.js';
import {
  clientConfig,
  openPostgresLockStore,
  type PostgresLockStore,
  type PostgresStoreOptions,
} from '../src/storage/postgres/postgres-lock-store.js';
import { SNAPSHOT_XMIN } from '../src/storage/postgres/queries.js';
import { runLockStoreContract, type StoreUnderTest } from './contract/lock-store.contract.js';
import { runManyHoldersContract } from './contract/many-holders.contract.js';
import { runWebhookStoreContract } from './contract/webhooks.contract.js';
import { recordingLogger } from './support/logger.js';
import {
  closedPort,
  connect,
  describePostgres,
  FaultProxy,
  installTestClock,
  withClient,
  withPort,
} from './support/postgres.js';
import { waitFor } from './support/wait-for.js';

/** An acquire of `service` for `who` under a fresh id. */
const request = (service: string, who: string, ttlSeconds: number | null = null): AcquireRequest => ({
  id: randomUUID(),
  service,
  who,
  ttlSeconds,
});

/** The store's migrations, as the store reads them. */
const MIGRATIONS = readMigrations(new URL('../src/storage/postgres/migrations/', import.meta.url));

const isStoreUnavailable = (error: unknown) =>
  error instanceof TrackerError && error.code === ErrorCode.STORE_UNAVAILABLE;

/** The "~2.5 s" the store promises for an unreachable or stuck database, with slack for a busy CI. */
const UNAVAILABLE_WITHIN_MS = 2250;

/** Runs `work`, expecting STORE_UNAVAILABLE within UNAVAILABLE_WITHIN_MS; returns the error and the time taken. */
async function expectUnavailable(work: () => Promise<unknown>): Promise<{ error: TrackerError; ms: number }> {
  const started = performance.now();
  const error = await work().then(
    (value) => assert.fail(`expected STORE_UNAVAILABLE, got ${JSON.stringify(value)}`),
    (error: unknown) => error,
  );
  const ms = performance.now() - started;
  assert.ok(isStoreUnavailable(error), `expected STORE_UNAVAILABLE, got ${String(error)}`);
  assert.ok(ms < UNAVAILABLE_WITHIN_MS, `took ${Math.round(ms)} ms`);
  return { error: error as TrackerError, ms };
}

describe('PostgreSQL error classification', () => {
  const cases: [string, unknown, boolean][] = [
    ['connection refused', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), true],
    ['connection reset', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), true],
    ['statement timeout', { code: '57014', message: 'canceling statement due to statement timeout' }, true],
    [
      'admin shutdown',
      { code: '57P01', message: 'terminating connection due to administrator command' },
      true,
    ],
    ['server starting', { code: '57P03', message: 'the database system is starting up' }, true],
    ['connection failure (class 08)', { code: '08006', message: 'connection failure' }, true],
    ['too many connections', { code: '53300', message: 'sorry, too many clients already' }, true],
    ['dropped connection', new Error('Connection terminated unexpectedly'), true],
    ['pool checkout timeout', new Error('timeout exceeded when trying to connect'), true],
    ['client-side query timeout', new Error('Query read timeout'), true],
    [
      'connect timeout, wrapped by the pool',
      new Error('Connection terminated due to connection timeout', { cause: new Error('timeout expired') }),
      true,
    ],
    ['a cause deeper down', new Error('outer', { cause: { code: 'ETIMEDOUT' } }), true],
    ['dual-stack connect', new AggregateError([{ code: 'ECONNREFUSED' }, { code: 'ECONNREFUSED' }]), true],
    ['unique violation', { code: '23505', message: 'duplicate key value' }, false],
    ['bad uuid', { code: '22P02', message: 'invalid input syntax for type uuid' }, false],
    ['missing table', { code: '42P01', message: 'relation "locks" does not exist' }, false],
    ['pool used after close', new Error('Cannot use a pool after calling end on the pool'), false],
    ['a plain bug', new TypeError("Cannot read properties of undefined (reading 'id')"), false],
    ['not an error', 'ECONNREFUSED', false],
    ['nothing', null, false],
  ];
  for (const [name, error, expected] of cases) {
    test(`${name} → ${expected ? 'STORE_UNAVAILABLE' : 'rethrown'}`, () => {
      assert.equal(isUnavailable(error), expected);
    });
  }
});

await describePostgres('PostgreSQL store', (database) => {
  const quiet = recordingLogger().logger;
  /** A store on the test database, its tables in `schema`. */
  const open = (schema: string, options: Partial<PostgresStoreOptions> = {}) =>
    openPostgresLockStore({ connectionString: database().url, schema, logger: quiet, ...options });

  // The store's clock is the database's, through tracker_now(): in the contract's schema it
  // stands still and moves only with advance(), as the embedded store's manual clock does, so
  // the TTL tests run without sleeping and locks can be stamped at one instant.
  /** The test database's URL with an application_name, to find a store's connections. */
  const named = (applicationName: string) => {
    const url = new URL(database().url);
    url.searchParams.set('application_name', applicationName);
    return url.href;
  };

  /** Backend pids of the LISTEN connections of one application to the test database. */
  const listenPids = async (applicationName: string): Promise<number[]> => {
    const { rows } = await withClient(database().url, (client) =>
      client.query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'
           AND application_name = $1`,
        [applicationName],
      ),
    );
    return rows.map((row) => row.pid);
  };

  /** A store on `schema` whose clock (tracker_now()) stands still until the test moves it. */
  const openFrozen = async (schema: string): Promise<StoreUnderTest> => {
    const store = await open(schema);
    const clock = await installTestClock(database().url, schema, { frozen: true }).catch(
      async (error: unknown) => {
        await store.close();
        throw error;
      },
    );
    return {
      store,
      now: clock.now,
      advance: (ms) => clock.advance(ms),
      cleanup: async () => {
        await clock.close();
        await store.close();
      },
    };
  };
  runLockStoreContract('postgres', () => openFrozen('contract'));
  runManyHoldersContract('postgres', () => openFrozen('many_holders'));
  runWebhookStoreContract('postgres', () => openFrozen('webhooks'));

  describe('PostgreSQL store specifics', () => {
    test('records each migration once, in its own schema; reopening applies nothing', async () => {
      const { entries, logger } = recordingLogger();
      const first = await open('migrated', { logger });
      assert.equal(first.schemaVersion, MIGRATIONS.length);
      await first.close();
      const second = await open('migrated', { logger });
      assert.equal(second.schemaVersion, MIGRATIONS.length);
      await second.close();
      const applied = MIGRATIONS.map(({ version, name }) => ({ version, name }));
      assert.deepEqual(applied.slice(0, 7), [
        { version: 1, name: 'create_locks' },
        { version: 2, name: 'leases_and_fencing' },
        { version: 3, name: 'wait_queue' },
        { version: 4, name: 'lock_events' },
        { version: 5, name: 'lock_owner' },
        { version: 6, name: 'idempotency_keys' },
        { version: 7, name: 'lock_owner_key' },
      ]);
      assert.deepEqual(
        entries.filter((entry) => entry.level === 'info').map((entry) => entry.details),
        applied,
      );
      await withClient(database().url, async (client) => {
        const versions = await client.query(
          'SELECT version, name FROM migrated.schema_migrations ORDER BY version',
        );
        assert.deepEqual(versions.rows, applied);
        const tables = await client.query(
          `SELECT table_schema, table_name FROM information_schema.tables
           WHERE table_name IN ('locks', 'schema_migrations', 'services', 'waiters')
             AND table_schema IN ('public', 'migrated')
           ORDER BY table_name`,
        );
        assert.deepEqual(tables.rows, [
          { table_schema: 'migrated', table_name: 'locks' },
          { table_schema: 'migrated', table_name: 'schema_migrations' },
          { table_schema: 'migrated', table_name: 'services' },
          { table_schema: 'migrated', table_name: 'waiters' },
        ]);
        const clocks = await client.query(
          `SELECT n.nspname AS schema, p.provolatile AS volatility FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE p.proname = 'tracker_now' AND n.nspname IN ('public', 'migrated')`,
        );
        assert.deepEqual(clocks.rows, [{ schema: 'migrated', volatility: 's' }]);
      });
    });

    test('ten stores opening at once on an empty schema all succeed and migrate once', async () => {
      const opened = await Promise.allSettled(
        Array.from({ length: 10 }, () => open('replicas', { poolSize: 2 })),
      );
      const stores = opened.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
      try {
        assert.deepEqual(
          opened.filter((result) => result.status === 'rejected'),
          [],
        );
        assert.deepEqual(
          stores.map((store) => store.schemaVersion),
          Array(10).fill(MIGRATIONS.length),
        );
        const versions = await withClient(database().url, (client) =>
          client.query(
            'SELECT version, count(*)::int AS times FROM replicas.schema_migrations GROUP BY version',
          ),
        );
        assert.deepEqual(
          [...versions.rows].sort((x, y) => x.version - y.version),
          MIGRATIONS.map(({ version }) => ({ version, times: 1 })),
        );
        const results = await Promise.all(
          stores.map((store, i) => store.acquire(request('shared', `replica-${i}`))),
        );
        assert.equal(results.filter((result) => result.acquired).length, 1);
      } finally {
        await Promise.all(stores.map((store) => store.close()));
      }
    });

    test('a schema newer than this binary is refused with a clear message and left untouched', async () => {
      await withClient(database().url, async (client) => {
        await client.query('CREATE SCHEMA future');
        await client.query(
          `CREATE TABLE future.schema_migrations (
             version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
        );
        await client.query(
          "INSERT INTO future.schema_migrations (version, name) VALUES (1, 'create_locks'), (99, 'from_the_future')",
        );
      });
      await assert.rejects(
        open('future'),
        (error: unknown) =>
          error instanceof SchemaTooNewError &&
          new RegExp(`version 99 but this Tracker knows only up to ${MIGRATIONS.length}`).test(error.message),
      );
      const versions = await withClient(database().url, (client) =>
        client.query('SELECT version FROM future.schema_migrations ORDER BY version'),
      );
      assert.deepEqual(versions.rows, [{ version: 1 }, { version: 99 }]);
    });

    test('two pools: of 50 concurrent acquires for one service exactly one wins', async () => {
      const a = await open('two_pools', { poolSize: 5 });
      const b = await open('two_pools', { poolSize: 5 });
      try {
        const service = `race-${randomUUID()}`;
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) => (i % 2 ? a : b).acquire(request(service, `racer-${i}`))),
        );
        const winners = results.flatMap((result) => (result.acquired ? [result.lock] : []));
        assert.equal(winners.length, 1);
        for (const result of results) if (!result.acquired) assert.deepEqual(result.holder, winners[0]);
        assert.deepEqual(await b.get(winners[0]?.id ?? ''), winners[0]);
      } finally {
        await a.close();
        await b.close();
      }
    });

    test('createdAt is the database clock, not the process clock', async (t) => {
      const store = await open('clock');
      const client = await connect(database().url);
      try {
        const dbNowMs = async () =>
          Number(
            (await client.query<{ ms: string }>('SELECT floor(extract(epoch FROM now()) * 1000)::int8 AS ms'))
              .rows[0]?.ms,
          );
        const before = await dbNowMs();
        // The process clock now says 1970: a store that read it would stamp 1970.
        t.mock.timers.enable({ apis: ['Date'], now: 0 });
        let result: Awaited<ReturnType<PostgresLockStore['acquire']>>;
        try {
          assert.equal(Date.now(), 0);
          result = await store.acquire(request('clock', 'me'));
        } finally {
          t.mock.timers.reset();
        }
        const after = await dbNowMs();
        assert.ok(result.acquired);
        const at = result.lock.createdAt.getTime();
        assert.ok(before <= at && at <= after, `${at} not within database time [${before}, ${after}]`);
      } finally {
        await client.end();
        await store.close();
      }
    });

    test('expiry is decided by the database clock: the process clock never matters', async (t) => {
      const store = await open('db_clock');
      const clock = await installTestClock(database().url, 'db_clock');
      try {
        const service = 'nightly-build';
        const taken = await store.acquire(request(service, 'crashed-job', 10));
        assert.ok(taken.acquired);
        const lock = taken.lock;
        assert.equal(lock.expiresAt?.getTime(), lock.createdAt.getTime() + 10_000);

        // The process clock says an hour later: a store that read it would call the lock expired.
        t.mock.timers.enable({ apis: ['Date'], now: Date.now() + 3_600_000 });
        try {
          assert.deepEqual(await store.get(lock.id), lock);
          const refused = await store.acquire(request(service, 'too-early', 10));
          assert.ok(!refused.acquired);
          assert.deepEqual(refused.holder, lock);
          assert.deepEqual((await store.list({ page: 1, perPage: 10, service })).locks, [lock]);
        } finally {
          t.mock.timers.reset();
        }

        // The database clock moves; the process clock is where it was.
        const processBefore = Date.now();
        await clock.advance(10_000);
        assert.ok(Date.now() - processBefore < 5_000, 'the test did not sleep');
        assert.equal(await store.get(lock.id), null);
        assert.equal(await store.renew(lock.id, 60), null);
        assert.equal(await store.release(lock.id), null);
        assert.deepEqual(await store.list({ page: 1, perPage: 10, service }), { locks: [], total: 0 });
        // The row is still there (nothing swept it), yet the service is free.
        const rows = await withClient(database().url, (client) =>
          client.query('SELECT id FROM db_clock.locks WHERE service = $1', [service]),
        );
        assert.deepEqual(rows.rows, [{ id: lock.id }]);
        const next = await store.acquire(request(service, 'next-job', 30));
        assert.ok(next.acquired);
        assert.ok(next.lock.fencingToken > lock.fencingToken);
        // Stamped by the moved clock: about 10 s ahead of the process's.
        const ahead = next.lock.createdAt.getTime() - Date.now();
        assert.ok(ahead > 9_000 && ahead < 11_000, `createdAt ${ahead} ms ahead of the process clock`);
        assert.equal(next.lock.expiresAt?.getTime(), next.lock.createdAt.getTime() + 30_000);
      } finally {
        await clock.close();
        await store.close();
      }
    });

    test('fencing tokens survive a restart and are shared by two replicas: they strictly increase', async () => {
      const service = 'fenced-deploy';
      const tokens: number[] = [];
      const cycle = async (store: PostgresLockStore, who: string) => {
        const result = await store.acquire(request(service, who));
        assert.ok(result.acquired, `${who} acquires`);
        tokens.push(result.lock.fencingToken);
        assert.ok(await store.release(result.lock.id));
      };
      const before = await open('fencing');
      for (let i = 0; i < 3; i++) await cycle(before, 'before-restart');
      await before.close();

      const a = await open('fencing', { poolSize: 2 });
      const b = await open('fencing', { poolSize: 2 });
      try {
        for (let i = 0; i < 10; i++) await cycle(i % 2 ? b : a, i % 2 ? 'replica-b' : 'replica-a');
        for (let i = 1; i < tokens.length; i++) {
          assert.ok((tokens[i] as number) > (tokens[i - 1] as number), `tokens ${tokens}`);
        }
        // Uncontended acquires consume exactly one token each.
        assert.deepEqual(
          tokens,
          Array.from({ length: 13 }, (_, i) => i + 1),
        );
        const counter = await withClient(database().url, (client) =>
          client.query('SELECT last_token::int AS last FROM fencing.services WHERE service = $1', [service]),
        );
        assert.deepEqual(counter.rows, [{ last: 13 }]);
      } finally {
        await a.close();
        await b.close();
      }
    });

    test('a refused acquire that sees the holder consumes no token and writes nothing', async () => {
      const store = await open('refusals');
      try {
        const held = await store.acquire(request('busy', 'holder', 60));
        assert.ok(held.acquired);
        for (let i = 0; i < 5; i++) {
          const refused = await store.acquire(request('busy', `late-${i}`, 60));
          assert.ok(!refused.acquired);
          assert.deepEqual(refused.holder, held.lock);
        }
        const counter = await withClient(database().url, (client) =>
          client.query("SELECT last_token::int AS last FROM refusals.services WHERE service = 'busy'"),
        );
        assert.deepEqual(counter.rows, [{ last: held.lock.fencingToken }]);
        await store.release(held.lock.id);
        const next = await store.acquire(request('busy', 'next'));
        assert.ok(next.acquired);
        assert.equal(next.lock.fencingToken, held.lock.fencingToken + 1);
      } finally {
        await store.close();
      }
    });

    test('an expired lock is taken over in one step: of 30 concurrent acquirers on two pools exactly one wins', async () => {
      const a = await open('takeover', { poolSize: 5 });
      const b = await open('takeover', { poolSize: 5 });
      const clock = await installTestClock(database().url, 'takeover');
      try {
        const service = 'expired-service';
        const first = await a.acquire(request(service, 'crashed', 5));
        assert.ok(first.acquired);
        let expired: Lock = first.lock;
        for (let round = 0; round < 3; round++) {
          await clock.advance(5_000);
          const results = await Promise.all(
            Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).acquire(request(service, `racer-${i}`, 5))),
          );
          const winners = results.flatMap((result) => (result.acquired ? [result.lock] : []));
          assert.equal(winners.length, 1, `round ${round}`);
          const winner = winners[0];
          assert.ok(winner);
          // Every loser is told the new holder, never the expired one.
          for (const result of results) if (!result.acquired) assert.deepEqual(result.holder, winner);
          assert.ok(winner.fencingToken > expired.fencingToken);
          assert.equal(await b.get(expired.id), null);
          assert.deepEqual(await b.get(winner.id), winner);
          // Taken over in place: still one row for the service.
          const rows = await withClient(database().url, (client) =>
            client.query('SELECT id FROM takeover.locks WHERE service = $1', [service]),
          );
          assert.deepEqual(rows.rows, [{ id: winner.id }]);
          expired = winner;
        }
      } finally {
        await clock.close();
        await a.close();
        await b.close();
      }
    });

    test('upgrading from schema version 1 keeps held locks, gives them token 1, and the counter goes on', async () => {
      const v1 = readFileSync(
        new URL('../src/storage/postgres/migrations/001_create_locks.sql', import.meta.url),
        'utf8',
      );
      const heldId = randomUUID();
      await withClient(database().url, async (client) => {
        await client.query('CREATE SCHEMA upgraded');
        await client.query('SET search_path = upgraded');
        await client.query(
          `CREATE TABLE schema_migrations (
             version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
        );
        await client.query(v1);
        await client.query("INSERT INTO schema_migrations (version, name) VALUES (1, 'create_locks')");
        await client.query("INSERT INTO locks (id, service, who) VALUES ($1, 'old-deploy', 'old-holder')", [
          heldId,
        ]);
      });
      const store = await open('upgraded');
      try {
        assert.equal(store.schemaVersion, MIGRATIONS.length);
        const held = await store.get(heldId);
        assert.ok(held);
        assert.equal(held.who, 'old-holder');
        assert.equal(held.ttlSeconds, null);
        assert.equal(held.expiresAt, null);
        assert.equal(held.fencingToken, 1);
        const refused = await store.acquire(request('old-deploy', 'new'));
        assert.ok(!refused.acquired);
        assert.deepEqual(refused.holder, held);
        await store.release(heldId);
        const next = await store.acquire(request('old-deploy', 'new'));
        assert.ok(next.acquired);
        assert.equal(next.lock.fencingToken, 2);
      } finally {
        await store.close();
      }
    });

    test('keeps microseconds in the database and returns them truncated to the millisecond', async () => {
      const store = await open('precision');
      try {
        const locks = [];
        for (let i = 0; i < 3; i++) {
          const result = await store.acquire(request(`precise-${i}`, 'me'));
          assert.ok(result.acquired);
          locks.push(result.lock);
        }
        const stored = await withClient(database().url, (client) =>
          client.query<{ id: string; at: string }>(
            `SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS at
             FROM precision.locks`,
          ),
        );
        const microseconds = new Map(stored.rows.map((row) => [row.id, row.at]));
        for (const lock of locks) {
          const at = microseconds.get(lock.id) ?? '';
          assert.equal(lock.createdAt.toISOString(), `${at.slice(0, -3)}Z`);
        }
        // Three stamps all on a whole millisecond would mean the microseconds were dropped.
        assert.ok(
          [...microseconds.values()].some((at) => !at.endsWith('000')),
          JSON.stringify(stored.rows),
        );
        // Ordered by the full microseconds, as a tie-break by id would only apply within one.
        const page = await store.list({ page: 1, perPage: 10 });
        assert.deepEqual(page.locks, locks);
      } finally {
        await store.close();
      }
    });

    test('the event tail waits for a transaction that took an event id before a later one committed', async () => {
      const { entries, logger } = recordingLogger();
      const store = await open('late_events', { connectionString: named('tracker_late_events'), logger });
      const slow = await connect(database().url);
      const fast = await connect(database().url);
      const observer = await connect(database().url);
      /** The store's SNAPSHOT_XMIN queries pg_stat_activity shows now, each as backend pid and start. */
      const xminQueries = async () =>
        (
          await observer.query<{ run: string }>(
            `SELECT pid || '@' || query_start::text AS run FROM pg_stat_activity
             WHERE application_name = 'tracker_late_events' AND query = $1`,
            [SNAPSHOT_XMIN],
          )
        ).rows.map((row) => row.run);
      const insert = (client: typeof slow, service: string) =>
        client.query('INSERT INTO late_events.locks (id, service, who) VALUES ($1, $2, $2)', [
          randomUUID(),
          service,
        ]);
      try {
        const cursor = await store.eventCursor();
        // `fast` gets its transaction id first; `slow` starts later, so its id is above every
        // id completed when the gap is first seen, yet it holds the smaller event id.
        await fast.query('BEGIN');
        await fast.query("INSERT INTO late_events.services VALUES ('unrelated', 0)");
        await slow.query('BEGIN');
        await insert(slow, 'slow');
        await insert(fast, 'fast');
        await fast.query('COMMIT');
        assert.deepEqual(await store.readEvents(cursor, 10), [], 'the later event waits for the earlier id');
        assert.deepEqual(
          await store.readEvents(cursor, 10),
          [],
          'still, the gap now known: its transaction has not ended',
        );
        // A new tail waits too: its cursor asks for the oldest running transaction again and
        // again (each run a new pid and start in pg_stat_activity) and does not settle.
        const before = new Set(await xminQueries());
        const cursorWhileOpen = store.eventCursor();
        let cursorSettled = false;
        void cursorWhileOpen.then(() => {
          cursorSettled = true;
        });
        const runs = new Set<string>();
        await waitFor(
          async () => {
            for (const run of await xminQueries()) if (!before.has(run)) runs.add(run);
            return cursorSettled || runs.size >= 3;
          },
          { what: 'the new cursor to look for the open transaction three times' },
        );
        assert.equal(cursorSettled, false, 'a new tail waits for the open transaction too');
        await slow.query('COMMIT');
        assert.deepEqual(
          (await store.readEvents(cursor, 10)).map((event) => event.service),
          ['slow', 'fast'],
        );
        const next = await cursorWhileOpen;
        assert.ok(next >= cursor + 1);

        // A transaction that rolls back leaves a gap for good: the tail goes past it once
        // that transaction has ended, and not before.
        const last = cursor + 2;
        await fast.query('BEGIN');
        await fast.query("INSERT INTO late_events.services VALUES ('unrelated-2', 0)");
        await slow.query('BEGIN');
        await insert(slow, 'rolled-back');
        await insert(fast, 'kept');
        await fast.query('COMMIT');
        assert.deepEqual(await store.readEvents(last, 10), []);
        await slow.query('ROLLBACK');
        // Once every transaction that was running when the gap was seen has ended: the
        // server's oldest running transaction is cluster-wide, so another test's (another
        // file's) may hold the tail up a moment longer.
        const passed = await waitFor(
          async () => {
            const events = await store.readEvents(last, 10);
            return events.length > 0 && events;
          },
          { what: 'the tail to go past the rolled-back gap' },
        );
        assert.deepEqual(
          passed.map((event) => event.service),
          ['kept'],
        );
        assert.deepEqual(
          entries.filter((entry) => entry.level === 'warn'),
          [],
          'went past because the transaction ended, not by giving up on it',
        );
      } finally {
        await observer.end();
        await slow.end();
        await fast.end();
        await store.close();
      }
    });

    test('an acquire blocked by an uncommitted holder returns that holder once it commits', async () => {
      const { entries, logger } = recordingLogger();
      const store = await open('contended', { logger });
      const blocker = await connect(database().url);
      try {
        const holderId = randomUUID();
        await blocker.query('BEGIN');
        // As every writer of a service does: its services row first (migration 008).
        await blocker.query("INSERT INTO contended.services VALUES ('deploy', 0) ON CONFLICT DO NOTHING");
        await blocker.query("SELECT FROM contended.services WHERE service = 'deploy' FOR NO KEY UPDATE");
        await blocker.query(
          "INSERT INTO contended.locks (id, service, who) VALUES ($1, 'deploy', 'blocker')",
          [holderId],
        );
        const pending = store.acquire(request('deploy', 'waiter'));
        pending.catch(() => {});
        await waitFor(() => waitingOnLock(database().url), {
          what: 'the acquire to wait on the uncommitted insert',
          intervalMs: 20,
        });
        await blocker.query('COMMIT');
        const result = await pending;
        assert.ok(!result.acquired);
        assert.equal(result.holder.id, holderId);
        assert.equal(result.holder.who, 'blocker');
        // It reads the holders after taking the service's row lock: no second look.
        assert.equal(entries.filter((entry) => entry.level === 'debug').length, 0);
      } finally {
        await blocker.end();
        await store.close();
      }
    });

    test('an acquire blocked by an uncommitted holder wins when that holder rolls back', async () => {
      const store = await open('rolled_back');
      const blocker = await connect(database().url);
      try {
        await blocker.query('BEGIN');
        // As every writer of a service does: its services row first (migration 008).
        await blocker.query("INSERT INTO rolled_back.services VALUES ('deploy', 0) ON CONFLICT DO NOTHING");
        await blocker.query("SELECT FROM rolled_back.services WHERE service = 'deploy' FOR NO KEY UPDATE");
        await blocker.query(
          "INSERT INTO rolled_back.locks (id, service, who) VALUES ($1, 'deploy', 'blocker')",
          [randomUUID()],
        );
        const pending = store.acquire(request('deploy', 'waiter'));
        pending.catch(() => {});
        await waitFor(() => waitingOnLock(database().url), {
          what: 'the acquire to wait on the uncommitted insert',
          intervalMs: 20,
        });
        await blocker.query('ROLLBACK');
        const result = await pending;
        assert.ok(result.acquired);
        assert.equal(result.lock.who, 'waiter');
      } finally {
        await blocker.end();
        await store.close();
      }
    });

    test('a statement blocked past statement_timeout is STORE_UNAVAILABLE; the store serves once freed', async (t) => {
      const store = await open('blocked');
      const blocker = await connect(database().url);
      try {
        assert.ok((await store.acquire(request('warm-up', 'me'))).acquired);
        await blocker.query('BEGIN');
        await blocker.query('LOCK TABLE blocked.locks IN ACCESS EXCLUSIVE MODE');
        // A write and a read, blocked side by side.
        const [{ error, ms }] = await Promise.all([
          expectUnavailable(() => store.acquire(request('deploy', 'me'))),
          expectUnavailable(() => store.list({ page: 1, perPage: 10 })),
        ]);
        assert.equal((error.cause as { code?: string }).code, '57014');
        assert.ok(ms >= 1400, `gave up after ${Math.round(ms)} ms, before the 1500 ms statement timeout`);
        t.diagnostic(`statement timeout surfaced after ${Math.round(ms)} ms`);
        await blocker.query('ROLLBACK');
        assert.ok((await store.acquire(request('deploy', 'me'))).acquired);
      } finally {
        await blocker.end();
        await store.close();
      }
    });

    test('opening on a port nothing listens on rejects STORE_UNAVAILABLE at once', async (t) => {
      const url = withPort(database().url, await closedPort());
      const { error, ms } = await expectUnavailable(() =>
        openPostgresLockStore({ connectionString: url, schema: 'nowhere', logger: quiet }),
      );
      assert.equal((error.cause as { code?: string }).code, 'ECONNREFUSED');
      t.diagnostic(`refused after ${Math.round(ms)} ms`);
    });

    test('a database that goes down: every call is STORE_UNAVAILABLE at once, the lost connection is logged, service resumes', async () => {
      const proxy = await FaultProxy.start(database().url);
      const { entries, logger } = recordingLogger();
      const store = await open('outage', { connectionString: proxy.url(database().url), logger });
      try {
        const held = await store.acquire(request('kept', 'me'));
        assert.ok(held.acquired);
        await proxy.down();
        // Nothing in flight: the pool hears of it as an 'error' on an idle connection.
        await waitFor(() => entries.some((entry) => entry.level === 'warn'), {
          what: 'the lost idle connection to be logged',
        });
        await expectUnavailable(() => store.acquire(request('deploy', 'me')));
        await expectUnavailable(() => store.get(held.lock.id));
        await expectUnavailable(() => store.release(held.lock.id));
        await expectUnavailable(() => store.renew(held.lock.id, 60));
        await expectUnavailable(() => store.list({ page: 1, perPage: 10 }));
        await expectUnavailable(() => store.ping());
        await proxy.forward();
        assert.deepEqual(await store.get(held.lock.id), held.lock);
        await store.ping();
      } finally {
        await store.close();
        await proxy.close();
      }
    });

    test('a database that stops answering: STORE_UNAVAILABLE within 2.5 s, by query then connect timeout', async (t) => {
      const proxy = await FaultProxy.start(database().url);
      const store = await open('silent', { connectionString: proxy.url(database().url) });
      try {
        assert.ok((await store.acquire(request('warm-up', 'me'))).acquired);
        proxy.blackhole();
        // The pooled connection sends and hears nothing back: the client's query_timeout.
        const stuck = await expectUnavailable(() => store.acquire(request('deploy', 'me')));
        assert.equal((stuck.error.cause as Error).message, 'Query read timeout');
        // That connection is discarded; a new one never completes its handshake.
        const handshake = await expectUnavailable(() => store.acquire(request('deploy', 'me')));
        t.diagnostic(
          `query timeout after ${Math.round(stuck.ms)} ms, connect timeout after ${Math.round(handshake.ms)} ms`,
        );
        await proxy.forward();
        assert.ok((await store.acquire(request('deploy', 'me'))).acquired);
      } finally {
        await proxy.close();
        await store.close();
      }
    });

    test('a burst larger than the pool waits for a connection (--database-pool-timeout), not for the connect timeout', async () => {
      // One connection and a 250 ms connect timeout (short, yet enough to connect on a loaded
      // machine): 200 acquires joining one queue at once take far longer than that, so most
      // would fail if the wait for the pool were the connect timeout, as pg's is.
      const store = await open('burst', { poolSize: 1, connectTimeoutMs: 250, poolTimeoutMs: 30_000 });
      try {
        assert.ok((await store.acquire(request('burst', 'holder'))).acquired);
        const results = await Promise.allSettled(
          Array.from({ length: 200 }, (_, i) => store.acquire(request('burst', `w${i}`), { owner: 'me' })),
        );
        const failed = results.filter((result) => result.status === 'rejected');
        assert.equal(
          failed.length,
          0,
          `failed: ${failed
            .map((f) => String(f.reason))
            .slice(0, 3)
            .join('; ')}`,
        );
        assert.equal((await store.queue('burst')).waiters.length, 200);
      } finally {
        await store.close();
      }
    });

    test('an idle connection the server terminates is logged and replaced, not fatal', async () => {
      const { entries, logger } = recordingLogger();
      const url = new URL(database().url);
      url.searchParams.set('application_name', 'tracker_terminated');
      const store = await open('terminated', { connectionString: url.href, logger });
      try {
        assert.ok((await store.acquire(request('before', 'me'))).acquired);
        const killed = await withClient(database().url, (client) =>
          client.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tracker_terminated'",
          ),
        );
        assert.equal(killed.rowCount, 1);
        await waitFor(() => entries.some((entry) => entry.level === 'warn'), {
          what: 'the terminated connection to be logged',
        });
        const warning = entries.find((entry) => entry.level === 'warn');
        assert.equal(
          ((warning?.details as { err?: unknown } | undefined)?.err as { code?: string } | undefined)?.code,
          '57P01',
        );
        assert.ok((await store.acquire(request('after', 'me'))).acquired);
      } finally {
        await store.close();
      }
    });

    test('wait queue: 20 waiters on two replicas are granted strictly in ticket order, through either', async () => {
      const a = await open('fifo_replicas', { poolSize: 5 });
      const b = await open('fifo_replicas', { poolSize: 5 });
      try {
        const service = `fifo-${randomUUID()}`;
        const holder = await a.acquire(request(service, 'holder'));
        assert.ok(holder.acquired);
        // Enqueued at once, alternately through A and B: the store's tickets decide the order.
        const queued = await Promise.all(
          Array.from({ length: 20 }, async (_, i) => {
            const store = i % 2 ? b : a;
            const wanted = request(service, `waiter-${i}`);
            const result = await store.acquire(wanted, { owner: i % 2 ? 'replica-b' : 'replica-a' });
            assert.ok(!result.acquired && result.waiter, `waiter-${i} was queued`);
            return { id: wanted.id, waiter: result.waiter };
          }),
        );
        const byTicket = [...queued].sort((x, y) => x.waiter.ticket - y.waiter.ticket);
        assert.equal(new Set(queued.map((q) => q.waiter.ticket)).size, 20);
        assert.deepEqual(
          byTicket.map((q) => q.waiter.position),
          Array.from({ length: 20 }, (_, i) => i + 1),
        );
        assert.deepEqual(
          (await b.queue(service)).waiters.map((waiter) => waiter.ticket),
          byTicket.map((q) => q.waiter.ticket),
        );
        let current = holder.lock;
        for (const [i, next] of byTicket.entries()) {
          const released = await (i % 2 ? b : a).release(current.id);
          assert.equal(released?.id, current.id);
          const granted = await (i % 2 ? a : b).get(next.id);
          assert.ok(granted, `${next.waiter.who} holds the lock after release ${i}`);
          assert.equal(granted.who, next.waiter.who);
          assert.ok(granted.fencingToken > current.fencingToken);
          assert.equal(granted.waiters, 19 - i);
          current = granted;
        }
        await a.release(current.id);
        assert.deepEqual(await b.queue(service), { service, holder: null, holders: [], waiters: [] });
      } finally {
        await a.close();
        await b.close();
      }
    });

    test('wait queue: a release on one replica reaches the onChange listeners of another through NOTIFY', async () => {
      const a = await open('notified', { connectionString: named('tracker_notify_a') });
      const b = await open('notified', { connectionString: named('tracker_notify_b') });
      try {
        const service = `notified-${randomUUID()}`;
        const heardByA: string[] = [];
        const heardByB: string[] = [];
        const stopA = a.onChange((changed) => heardByA.push(changed));
        const stopB = b.onChange((changed) => heardByB.push(changed));
        await waitFor(
          async () =>
            (await listenPids('tracker_notify_a')).length === 1 &&
            (await listenPids('tracker_notify_b')).length === 1,
          { what: 'both LISTEN connections to be up', intervalMs: 20 },
        );
        const held = await a.acquire(request(service, 'holder'));
        assert.ok(held.acquired);
        const waiter = request(service, 'waiter');
        assert.ok(!(await b.acquire(waiter, { owner: 'replica-b' })).acquired);
        const released = performance.now();
        await a.release(held.lock.id);
        await waitFor(() => heardByB.includes(service), {
          what: 'B to hear of the release',
          timeoutMs: 1000,
        });
        const ms = performance.now() - released;
        assert.ok(ms < 1000, `heard after ${Math.round(ms)} ms`);
        assert.equal((await b.get(waiter.id))?.who, 'waiter');
        // A heard its own change once: right after its commit, not again through NOTIFY.
        // Proof: a later change through B, which A hears through NOTIFY; notifications come
        // in commit order, so an echo of A's own would have come before it.
        const later = `notified-later-${randomUUID()}`;
        const laterHeld = await b.acquire(request(later, 'holder'));
        assert.ok(laterHeld.acquired);
        assert.ok(!(await a.acquire(request(later, 'waiter'), { owner: 'replica-a' })).acquired);
        await b.release(laterHeld.lock.id);
        await waitFor(() => heardByA.includes(later), { what: "A to hear of B's later grant" });
        assert.deepEqual(
          heardByA.filter((changed) => changed === service || changed === later),
          [service, later],
        );
        stopA();
        stopB();
      } finally {
        await a.close();
        await b.close();
      }
    });

    test('wait queue: the LISTEN connection comes back after the server terminates it', async () => {
      const { entries, logger } = recordingLogger();
      const a = await open('relisten', { connectionString: named('tracker_relisten_a') });
      const b = await open('relisten', { connectionString: named('tracker_relisten_b'), logger });
      try {
        const heard: string[] = [];
        b.onChange((changed) => heard.push(changed));
        await waitFor(async () => (await listenPids('tracker_relisten_b')).length === 1, {
          what: 'B to listen',
          intervalMs: 20,
        });
        const [before] = await listenPids('tracker_relisten_b');
        const killed = await withClient(database().url, (client) =>
          client.query('SELECT pg_terminate_backend($1)', [before]),
        );
        assert.equal(killed.rowCount, 1);
        await waitFor(() => entries.some((entry) => entry.level === 'warn' && /LISTEN/.test(entry.message)), {
          what: 'the lost LISTEN connection to be logged',
        });
        await waitFor(
          async () => {
            const pids = await listenPids('tracker_relisten_b');
            return pids.length === 1 && pids[0] !== before;
          },
          { what: 'B to listen again on a new connection', intervalMs: 20 },
        );
        // A release is news only when it grants someone: queue a waiter through B.
        const service = `relisten-${randomUUID()}`;
        const held = await a.acquire(request(service, 'holder'));
        assert.ok(held.acquired);
        const queued = await b.acquire(request(service, 'waiter'), { owner: 'replica-b' });
        assert.ok(!queued.acquired && queued.waiter);
        await a.release(held.lock.id);
        await waitFor(() => heard.includes(service), {
          what: 'B to hear of the grant again',
          timeoutMs: 1000,
        });
      } finally {
        await a.close();
        await b.close();
      }
    });

    test('wait queue: concurrent settles and releases on two replicas never grant twice', async () => {
      const a = await open('settle_race', { poolSize: 4 });
      const b = await open('settle_race', { poolSize: 4 });
      const clock = await installTestClock(database().url, 'settle_race');
      try {
        for (let round = 0; round < 20; round++) {
          const service = `settle-race-${round}-${randomUUID().slice(0, 8)}`;
          const holder = await a.acquire(request(service, 'holder', 5));
          assert.ok(holder.acquired);
          const first = request(service, 'first');
          const second = request(service, 'second');
          assert.ok(!(await a.acquire(first, { owner: 'replica-a' })).acquired);
          assert.ok(!(await b.acquire(second, { owner: 'replica-b' })).acquired);
          let outcomes: (Lock | null)[];
          if (round % 2 === 0) {
            // The holder expired: every replica's safety re-check settles at once.
            await clock.advance(5_000);
            outcomes = await Promise.all([
              a.settle(service),
              b.settle(service),
              a.settle(service),
              b.settle(service),
            ]);
          } else {
            // The holder releases while the other replica settles.
            outcomes = await Promise.all([
              a.release(holder.lock.id).then(() => null),
              b.settle(service),
              a.settle(service),
              b.settle(service),
            ]);
          }
          const settled = outcomes.filter((lock) => lock !== null);
          assert.ok(settled.length <= 1, `round ${round}: ${settled.length} grants`);
          if (round % 2 === 0) assert.equal(settled[0]?.id, first.id, `round ${round}`);
          const queue = await b.queue(service);
          assert.equal(queue.holder?.id, first.id, `round ${round}: the head waiter holds it`);
          assert.ok(queue.holder && queue.holder.fencingToken === holder.lock.fencingToken + 1);
          assert.deepEqual(
            queue.waiters.map((waiter) => [waiter.who, waiter.position]),
            [['second', 1]],
            `round ${round}`,
          );
          assert.equal(await a.get(second.id), null);
        }
      } finally {
        await clock.close();
        await a.close();
        await b.close();
      }
    });

    test("synchronous_commit is the database's own unless asked for (an opt-in), with the schema", async () => {
      const setting = async (options: Partial<PostgresStoreOptions>) => {
        const client = new pg.Client(
          clientConfig({ connectionString: database().url, logger: quiet, ...options }),
        );
        await client.connect();
        try {
          const commit = await client.query<{ synchronous_commit: string }>('SHOW synchronous_commit');
          const path = await client.query<{ search_path: string }>('SHOW search_path');
          return [commit.rows[0]?.synchronous_commit, path.rows[0]?.search_path];
        } finally {
          await client.end();
        }
      };
      const [databaseDefault] = await setting({});
      assert.equal(databaseDefault, 'on', "the test database's own setting");
      assert.deepEqual(await setting({ schema: 'relaxed' }), ['on', 'relaxed']);
      assert.deepEqual(await setting({ schema: 'relaxed', synchronousCommit: 'off' }), ['off', 'relaxed']);
      assert.deepEqual((await setting({ synchronousCommit: 'local' }))[0], 'local');
      // A store so opened works as any other.
      const store = await open(`relaxed_${randomUUID().slice(0, 8)}`, { synchronousCommit: 'off' });
      try {
        const result = await store.acquire({
          id: randomUUID(),
          service: 'relaxed',
          who: 'w',
          ttlSeconds: null,
        });
        assert.ok(result.acquired);
        assert.ok(await store.release(result.lock.id));
      } finally {
        await store.close();
      }
      await assert.rejects(
        open('both', {
          synchronousCommit: 'off',
          connectionString: `${database().url}?options=-c%20synchronous_commit%3Don`,
        }),
        /not both/,
      );
    });

    test('calls after close are errors, not STORE_UNAVAILABLE', async () => {
      const store = await open('closed');
      await store.close();
      await assert.rejects(store.ping(), (error: unknown) => !isStoreUnavailable(error));
    });

    test('refuses a connection string that is not postgres:// and a schema that is not an identifier', async () => {
      await assert.rejects(
        openPostgresLockStore({ connectionString: 'mysql://127.0.0.1/test', logger: quiet }),
        /must start with postgres:\/\/ or postgresql:\/\//,
      );
      await assert.rejects(open('Robert"); DROP TABLE locks;--'), /lower-case SQL identifier/);
      await assert.rejects(
        open('both', { connectionString: `${database().url}?options=-c%20search_path%3Dother` }),
        /not both/,
      );
    });
  });
});

/**
 * Whether a session of the database at `url` waits for a lock. Asked on a fresh connection:
 * inside a transaction pg_stat_activity keeps showing the same snapshot.
 */
async function waitingOnLock(url: string): Promise<boolean> {
  const { rows } = await withClient(url, (client) =>
    client.query(
      "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    ),
  );
  return rows.length > 0;
}
