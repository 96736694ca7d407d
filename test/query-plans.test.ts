import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { readMigrations } from '../src/storage/migrations.js';
import { openPostgresLockStore } from '../src/storage/postgres/postgres-lock-store.js';
import { LIST as PG_LIST } from '../src/storage/postgres/queries.js';
import { migrate } from '../src/storage/sqlite/migrate.js';
import { historySql, listSql } from '../src/storage/sqlite/queries.js';
import { recordingLogger } from './support/logger.js';
import { describePostgres, withClient } from './support/postgres.js';

// Cost as the work grows: the list and history queries of the SQLite store stay index
// lookups, whatever the table holds. Checked on the query plans (EXPLAIN QUERY PLAN), on an
// empty schema: SQLite plans from the schema alone while no ANALYZE statistics exist.

function schema(): Database.Database {
  const db = new Database(':memory:');
  db.function('tracker_now', () => Date.now());
  db.function('tracker_context', () => null);
  migrate(db, readMigrations(new URL('../src/storage/sqlite/migrations/', import.meta.url)));
  return db;
}

/** The plan's lines, joined; the statement's own parameters bound to sample values. */
function plan(db: Database.Database, text: string, values: Record<string, unknown>): string {
  const rows = db.prepare(`EXPLAIN QUERY PLAN ${text}`).all(values) as Array<{ detail: string }>;
  return rows.map((row) => row.detail).join('\n');
}

/** Only the parameters the statement names (better-sqlite3 refuses others). */
function bound(text: string, values: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(values).filter(([name]) => text.includes(`@${name}`)));
}

const sample = { service: 's', who: 'w', now: 0, limit: 20, offset: 0, since: 0, until: 1, before: 9 };

describe('SQLite query plans: list and history are index lookups', () => {
  const db = schema();

  test('GET /locks/list?service=…: the page and the count search locks_service_created_at', () => {
    const { page, count } = listSql({ service: true, who: false });
    const pagePlan = plan(db, page, bound(page, sample));
    assert.match(pagePlan, /SEARCH locks USING (COVERING )?INDEX locks_service_created_at \(service=\?\)/);
    assert.doesNotMatch(pagePlan, /SCAN locks|TEMP B-TREE FOR ORDER BY/, 'no scan, no sort');
    assert.match(
      plan(db, count, bound(count, sample)),
      /SEARCH locks USING (COVERING )?INDEX locks_service_created_at/,
    );
  });

  test('GET /locks/list?who=…: the page and the count search locks_who_created_at', () => {
    const { page, count } = listSql({ service: false, who: true });
    const pagePlan = plan(db, page, bound(page, sample));
    assert.match(pagePlan, /SEARCH locks USING (COVERING )?INDEX locks_who_created_at \(who=\?\)/);
    assert.doesNotMatch(pagePlan, /SCAN locks|TEMP B-TREE FOR ORDER BY/, 'no scan, no sort');
    assert.match(
      plan(db, count, bound(count, sample)),
      /SEARCH locks USING (COVERING )?INDEX locks_who_created_at/,
    );
  });

  test('history pages by service, by who, and since a time use an index', () => {
    const cases = [
      [{ service: true }, /lock_events_service_id \(service=\?/],
      [{ who: true }, /lock_events_who_id \(who=\?/],
      [{ service: true, before: true }, /lock_events_service_id \(service=\? AND (rowid|id)<\?\)/],
      [{ who: true, since: true }, /INDEX lock_events_(who_id|at)/],
      [{ before: true }, /USING INTEGER PRIMARY KEY \((rowid|id)<\?\)/],
    ] as const;
    for (const [given, index] of cases) {
      const text = historySql({
        service: false,
        who: false,
        since: false,
        until: false,
        before: false,
        ...given,
      });
      const found = plan(db, text, bound(text, sample));
      assert.match(found, index, `${JSON.stringify(given)}: ${found}`);
      assert.doesNotMatch(found, /SCAN lock_events$/m, `${JSON.stringify(given)}: no full scan`);
    }
  });

  test('a history page since a time walks the history newest first and stops at the page', () => {
    // Events are appended in time order: the newest rows match `at >= since` first, so the
    // walk down the primary key ends after one page; no sort of the matching rows.
    const text = historySql({ service: false, who: false, since: true, until: false, before: false });
    const found = plan(db, text, bound(text, sample));
    assert.doesNotMatch(found, /TEMP B-TREE FOR ORDER BY/, found);
  });
});

await describePostgres('PostgreSQL query plans: list by service and by who are index lookups', (database) => {
  test('GET /locks/list?service=… searches locks_service, ?who=… locks_who_created_at (no scan of locks)', async () => {
    const store = await openPostgresLockStore({
      connectionString: database().url,
      schema: 'plans',
      logger: recordingLogger().logger,
    });
    await store.close();
    await withClient(database().url, async (client) => {
      // An empty table: forbid the sequential scan so that the plan shows the index it can use.
      await client.query('SET search_path = plans; SET enable_seqscan = off');
      const explain = async (service: string | null, who: string | null) =>
        (await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${PG_LIST}`, [service, who, 20, 0])).rows
          .map((row) => row['QUERY PLAN'])
          .join('\n');
      const byService = await explain('s', null);
      assert.match(byService, /Index (Only )?Scan (using|on) locks_service\b/);
      assert.doesNotMatch(byService, /Seq Scan on locks/);
      const byWho = await explain(null, 'w');
      assert.match(byWho, /Index (Only )?Scan (using|on) locks_who_created_at\b/);
      assert.doesNotMatch(byWho, /Seq Scan on locks/);
    });
  });
});
