import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import type { Logger } from '../../core/logger.js';
import { type Migration, schemaTooNew } from '../migrations.js';
import {
  CREATE_MIGRATIONS_TABLE,
  CURRENT_VERSION,
  createSchema,
  MIGRATION_LOCK,
  RECORD_MIGRATION,
  SCHEMA_EXISTS,
} from './queries.js';

/**
 * Per statement while migrating, in ms: waiting for another replica's migrations and
 * building an index on a large table both take far longer than a request may.
 */
const MIGRATION_STATEMENT_TIMEOUT_MS = 60_000;
const CLOSE_WAIT_MS = 1000;

/**
 * Brings the schema up to date on one dedicated connection holding a session advisory
 * lock, so replicas starting together apply each migration exactly once and none fails:
 * the others wait, then find the versions recorded. Closing the connection frees the lock,
 * also when the process dies half-way. Each migration commits together with its record.
 * Returns the schema version in force.
 */
export async function migrate(
  config: pg.ClientConfig,
  migrations: readonly Migration[],
  schema: string | undefined,
  logger: Logger,
): Promise<number> {
  const client = new pg.Client({
    ...config,
    statement_timeout: MIGRATION_STATEMENT_TIMEOUT_MS,
    query_timeout: MIGRATION_STATEMENT_TIMEOUT_MS,
  });
  // Without a listener an 'error' event kills the process; the failing query reports it.
  client.on('error', () => {});
  await client.connect();
  try {
    await client.query(MIGRATION_LOCK);
    if (schema !== undefined && (await client.query(SCHEMA_EXISTS, [schema])).rowCount === 0) {
      await client.query(createSchema(schema));
    }
    await client.query(CREATE_MIGRATIONS_TABLE);
    const found = Number((await client.query<{ version: number }>(CURRENT_VERSION)).rows[0]?.version ?? 0);
    if (found > migrations.length) {
      throw schemaTooNew(found, migrations.length);
    }
    for (const migration of migrations) {
      if (migration.version <= found) continue;
      await client.query('BEGIN');
      await client.query(migration.sql);
      await client.query(RECORD_MIGRATION, [migration.version, migration.name]);
      await client.query('COMMIT');
      logger.info({ version: migration.version, name: migration.name }, 'postgres schema migrated');
    }
    return Math.max(found, migrations.length);
  } finally {
    // Closing the session rolls back a failed migration and frees the advisory lock. The
    // wait is bounded: a graceful close of a connection that stopped answering never ends.
    await Promise.race([client.end().catch(() => {}), delay(CLOSE_WAIT_MS, undefined, { ref: false })]);
  }
}
