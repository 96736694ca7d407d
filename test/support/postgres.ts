import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { waitFor, within } from './wait-for.js';

/**
 * The PostgreSQL the tests use: the machine's own (trust auth), or TRACKER_TEST_PG_URL.
 * Tests never touch this database's tables; each test file creates a database of its own.
 */
export const ADMIN_URL = process.env.TRACKER_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** A connected raw client, for arranging and inspecting what a store cannot show. End it. */
export async function connect(url: string, timeoutMs = 2000): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs });
  // An unhandled 'error' event would kill the test process; the failing query reports it.
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** Runs `work` on a fresh raw client and ends it. */
export async function withClient<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await connect(url);
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** Why PostgreSQL cannot be used, or null when it answers within a second. */
async function unreachableReason(): Promise<string | null> {
  const client = new pg.Client({
    connectionString: ADMIN_URL,
    connectionTimeoutMillis: 1000,
    query_timeout: 1000,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return null;
  } catch (error) {
    return `PostgreSQL is not reachable at ${redact(ADMIN_URL)} (${(error as Error).message || String(error)}); set TRACKER_TEST_PG_URL`;
  } finally {
    // Bounded: a graceful close of a server that stopped answering never completes.
    await within(client.end(), { what: 'the probe connection to close', timeoutMs: 1000 }).catch(() => {});
  }
}

export async function pgAvailable(): Promise<boolean> {
  return (await unreachableReason()) === null;
}

export interface TestDatabase {
  readonly name: string;
  /** ADMIN_URL with this database's name. */
  readonly url: string;
  /** Drops it, disconnecting whoever is still connected. */
  drop(): Promise<void>;
}

/** Creates an empty database named `tracker_test_<random>`. */
export async function withTestDatabase(): Promise<TestDatabase> {
  const name = `tracker_test_${randomBytes(6).toString('hex')}`;
  await withClient(ADMIN_URL, (client) => client.query(`CREATE DATABASE ${name}`));
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.href,
    drop: async () => {
      await withClient(ADMIN_URL, (client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

/**
 * A describe block whose tests share a fresh database, dropped afterwards, after checking
 * that every connection to it was closed. When PostgreSQL is not reachable the block is
 * skipped with one line saying why, except under CI=true, where that is a failing test.
 */
export async function describePostgres(
  name: string,
  fn: (database: () => TestDatabase) => void,
): Promise<void> {
  const reason = await unreachableReason();
  if (reason !== null && process.env.CI === 'true') {
    describe(name, () => {
      test('PostgreSQL is reachable (required when CI=true)', () => assert.fail(reason));
    });
    return;
  }
  if (reason !== null) {
    describe(name, { skip: reason }, () => {});
    return;
  }
  describe(name, () => {
    let database: TestDatabase | undefined;
    before(async () => {
      database = await withTestDatabase();
    });
    fn(() => {
      if (!database) throw new Error('the test database exists only while its tests run');
      return database;
    });
    // Registered after the block's own hooks, so it runs after their `after`s have closed
    // whatever they opened.
    after(async () => {
      if (!database) return;
      try {
        await assertNoConnectionsLeft(database.name);
      } finally {
        await database.drop();
      }
    });
  });
}

/** Fails when sessions on `database` outlive the tests, i.e. a store or client was not closed. */
async function assertNoConnectionsLeft(database: string): Promise<void> {
  let left: { application_name: string; state: string | null }[] = [];
  // A closed client's backend exits a moment after the socket closes: wait, briefly.
  try {
    await waitFor(
      async () => {
        left = await withClient(ADMIN_URL, async (client) => {
          const result = await client.query<{ application_name: string; state: string | null }>(
            'SELECT application_name, state FROM pg_stat_activity WHERE datname = $1',
            [database],
          );
          return result.rows;
        });
        return left.length === 0;
      },
      { what: `the connections to ${database} to close`, timeoutMs: 2000, intervalMs: 50 },
    );
  } catch (error) {
    assert.fail(
      `connections to ${database} left open: ${JSON.stringify(left)} (${(error as Error).message})`,
    );
  }
}

/** The database clock of one store schema, moved by a test. */
export interface TestClock {
  /** Moves the store's clock (its tracker_now()) forward by `ms`; the process clock is untouched. */
  advance(ms: number): Promise<void>;
  /** Ends the clock's connection; the schema keeps the clock where it is. */
  close(): Promise<void>;
}

/**
 * Makes the store clock of `schema` movable (and, `frozen`, standing still between moves,
 * like the embedded store's manual clock; `now` then reads it): creates a one-row `test_clock` table there
 * (test-only, no migration creates it) and replaces that schema's tracker_now() by
 * now() + the offset in it. Stores and replicas on the schema keep calling tracker_now()
 * and agree on the moved clock; other schemas keep the real one. Call it after a store has
 * migrated the schema (the migration creates the real function), before the first lock.
 * `schema` is a plain lower-case identifier chosen by the test.
 */
export async function installTestClock(
  url: string,
  schema: string,
  options: { frozen?: boolean } = {},
): Promise<TestClock & { now?: () => Date }> {
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`not a plain identifier: ${schema}`);
  const client = await connect(url);
  // A frozen clock stands still at this instant (whole ms) and moves only with advance().
  let frozenAt = Math.floor(Date.now());
  try {
    await client.query(
      `CREATE TABLE ${schema}.test_clock (advanced_by interval NOT NULL, frozen_at timestamptz NULL)`,
    );
    await client.query(`INSERT INTO ${schema}.test_clock VALUES (interval '0', $1)`, [
      options.frozen ? new Date(frozenAt) : null,
    ]);
    // Same signature, volatility and schema as migration 002's, so every query of the
    // store resolves to this one. The table is schema-qualified: the function runs with
    // the caller's search_path.
    await client.query(
      `CREATE OR REPLACE FUNCTION ${schema}.tracker_now() RETURNS timestamptz
         LANGUAGE sql STABLE PARALLEL SAFE
         AS 'SELECT coalesce(frozen_at, now() + advanced_by) FROM ${schema}.test_clock'`,
    );
  } catch (error) {
    await client.end();
    throw error;
  }
  return {
    advance: async (ms) => {
      frozenAt += ms;
      await client.query(
        `UPDATE ${schema}.test_clock SET advanced_by = advanced_by + $1::int8 * interval '1 millisecond',
           frozen_at = frozen_at + $1::int8 * interval '1 millisecond'`,
        [ms],
      );
    },
    close: () => client.end(),
    ...(options.frozen ? { now: () => new Date(frozenAt) } : {}),
  };
}

/** A TCP port nothing listens on (it was free a moment ago). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** `url` pointing at 127.0.0.1:`port` instead. */
export function withPort(url: string, port: number): string {
  const changed = new URL(url);
  changed.hostname = '127.0.0.1';
  changed.port = String(port);
  return changed.href;
}

function redact(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.href;
}

export { FaultProxy } from './fault-proxy.js';
