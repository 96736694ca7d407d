/**
 * Every statement the PostgreSQL store runs, in one place. Each one is a single statement
 * in autocommit, so READ COMMITTED gives it one snapshot and no transaction is ever left
 * open on a pooled connection.
 */

/** A lock row as the store reads it. */
export interface LockRow {
  id: string;
  service: string;
  who: string;
  /** int8 arrives as a string; the instant truncated to whole milliseconds. */
  created_ms: string;
}

// created_at keeps microseconds; the ms value is computed by the database so that the
// JS Date is exact and does not depend on the session TimeZone or global pg type parsers.
const LOCK_COLUMNS = 'id, service, who, floor(extract(epoch FROM created_at) * 1000)::int8 AS created_ms';

/**
 * $1 id, $2 service, $3 who. Inserts, or returns the holder with acquired = false, in one
 * round trip. Returns NO row when the holder committed after this statement's snapshot
 * was taken: the INSERT sees it (it may even have waited for it) and does nothing, but
 * the SELECT reads the older snapshot. The caller then runs the statement again, which
 * finds the holder, or the service free if it was released meanwhile. now() is the
 * database's clock.
 */
export const ACQUIRE = `
WITH inserted AS (
  INSERT INTO locks (id, service, who, created_at) VALUES ($1, $2, $3, now())
  ON CONFLICT (service) DO NOTHING
  RETURNING ${LOCK_COLUMNS}
)
SELECT true AS acquired, * FROM inserted
UNION ALL
SELECT false AS acquired, ${LOCK_COLUMNS} FROM locks
WHERE service = $2 AND NOT EXISTS (SELECT FROM inserted)`;

export type AcquireRow = LockRow & { acquired: boolean };

/** $1 id. */
export const GET = `SELECT ${LOCK_COLUMNS} FROM locks WHERE id = $1`;

/** $1 id. Returns the row only to the one caller whose DELETE removed it. */
export const RELEASE = `DELETE FROM locks WHERE id = $1 RETURNING ${LOCK_COLUMNS}`;

const LIST_FILTER = '($1::text IS NULL OR service = $1) AND ($2::text IS NULL OR who = $2)';

/**
 * $1 service or null, $2 who or null, $3 limit, $4 offset. The total and the page come
 * from one statement, hence one snapshot. Always one row at least: past the last page the
 * lock columns are null and only `total` is set.
 */
export const LIST = `
SELECT matching.total, page.id, page.service, page.who, page.created_ms
FROM (SELECT count(*) AS total FROM locks WHERE ${LIST_FILTER}) AS matching
LEFT JOIN LATERAL (
  SELECT created_at, ${LOCK_COLUMNS} FROM locks
  WHERE ${LIST_FILTER}
  ORDER BY created_at, id
  LIMIT $3 OFFSET $4
) AS page ON true
ORDER BY page.created_at, page.id`;

export type ListRow = { total: string } & (LockRow | { [K in keyof LockRow]: null });

export const PING = 'SELECT 1';

// Migrations. The advisory lock key spells "tracker" in ASCII; it serialises migrators
// across every schema of the database, which costs nothing at start-up.
export const MIGRATION_LOCK = "SELECT pg_advisory_lock('32776859903812978'::int8)";

export const CREATE_MIGRATIONS_TABLE = `
CREATE TABLE IF NOT EXISTS schema_migrations (
  version    int         PRIMARY KEY,
  name       text        NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)`;

export const CURRENT_VERSION = 'SELECT coalesce(max(version), 0) AS version FROM schema_migrations';

/** $1 version, $2 name. */
export const RECORD_MIGRATION = 'INSERT INTO schema_migrations (version, name) VALUES ($1, $2)';

/** $1 schema. Asked first: CREATE SCHEMA needs the CREATE privilege even when it exists. */
export const SCHEMA_EXISTS = 'SELECT FROM pg_namespace WHERE nspname = $1';

/** The schema name is validated (lower-case identifier) before it is spliced in. */
export const createSchema = (schema: string) => `CREATE SCHEMA IF NOT EXISTS ${schema}`;
