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
  ttl_seconds: number | null;
  /** As created_ms; null: the lock never expires. */
  expires_ms: string | null;
  /** bigint, as a string. */
  fencing_token: string;
}

// created_at and expires_at keep microseconds; the ms values are computed by the database
// so that the JS Dates are exact and depend neither on the session TimeZone nor on global
// pg type parsers. expires_at - created_at is a whole number of seconds at acquire, so the
// two truncations keep expiresAt = createdAt + ttl exactly.
const LOCK_COLUMNS = `id, service, who, floor(extract(epoch FROM created_at) * 1000)::int8 AS created_ms,
  ttl_seconds, floor(extract(epoch FROM expires_at) * 1000)::int8 AS expires_ms, fencing_token`;

/**
 * A row that is still a lock by the store's clock. Every query filters with it: an expired
 * row is gone for every purpose whether or not anything has deleted it yet. tracker_now()
 * is the one clock of the store (migration 002): the database's now(), replaced in tests.
 */
const LIVE = '(expires_at IS NULL OR expires_at > tracker_now())';

/**
 * $1 id, $2 service, $3 who, $4 ttl seconds or null. One statement, hence one transaction
 * and one round trip; nothing is read and then written by the application. In order:
 *
 * 1. `token` bumps the service's fencing counter (or starts it at 1), unless this
 *    statement's snapshot shows a live holder: such an acquire is refused below, writes
 *    nothing and consumes no token, so refusals stay cheap and do not queue behind each
 *    other. An acquire that saw the service free or expired does consume one, even if it
 *    then loses (to a holder newer than its snapshot): tokens may have gaps, they only ever
 *    grow. The upsert locks the services row until commit, which serialises the takers of
 *    one service, and it bumps the latest committed value (ON CONFLICT DO UPDATE under READ
 *    COMMITTED updates the newest row version, visible to our snapshot or not), so tokens
 *    strictly increase in the order the lock changes hands, across replicas and restarts.
 * 2. `taken` inserts the lock with that token, or takes over the service's row when it has
 *    expired: UNIQUE(service) decides, and DO UPDATE ... WHERE re-checks expiry on the
 *    newest committed row after waiting for any writer of it, so of concurrent acquirers
 *    of a free or expired service exactly one succeeds. A live holder is left untouched.
 * 3. Otherwise the live holder is read, for the 409 body; never an expired one.
 *
 * Returns NO row when the holder committed after this statement's snapshot was taken
 * (possibly while we waited for its row or the services row): the INSERT sees it and does
 * nothing, but step 3 reads the older snapshot, where the service looked free or expired.
 * The services row lock does not remove this case: the snapshot predates the wait. The
 * caller then runs the statement again, with a new snapshot that shows the holder, or the
 * service free if it was released meanwhile. A run that returns no row changed no lock.
 */
export const ACQUIRE = `
WITH token AS (
  INSERT INTO services (service, last_token)
  SELECT $2::text, 1 WHERE NOT EXISTS (SELECT FROM locks WHERE service = $2::text AND ${LIVE})
  ON CONFLICT (service) DO UPDATE SET last_token = services.last_token + 1
  RETURNING last_token
),
taken AS (
  INSERT INTO locks (id, service, who, created_at, ttl_seconds, expires_at, fencing_token)
  SELECT $1::uuid, $2::text, $3::text, tracker_now(), $4::int,
         tracker_now() + $4::int * interval '1 second', last_token
  FROM token
  ON CONFLICT (service) DO UPDATE SET
    id = excluded.id,
    who = excluded.who,
    created_at = excluded.created_at,
    ttl_seconds = excluded.ttl_seconds,
    expires_at = excluded.expires_at,
    fencing_token = excluded.fencing_token
  WHERE locks.expires_at <= tracker_now()
  RETURNING ${LOCK_COLUMNS}
)
SELECT true AS acquired, * FROM taken
UNION ALL
SELECT false AS acquired, ${LOCK_COLUMNS} FROM locks
WHERE service = $2::text AND ${LIVE} AND NOT EXISTS (SELECT FROM taken)`;

export type AcquireRow = LockRow & { acquired: boolean };

/** $1 id. */
export const GET = `SELECT ${LOCK_COLUMNS} FROM locks WHERE id = $1 AND ${LIVE}`;

/**
 * $1 id. Returns the row only to the one caller whose DELETE removed it. An expired row is
 * not released (it is no lock); it stays until an acquire takes its service over.
 */
export const RELEASE = `DELETE FROM locks WHERE id = $1 AND ${LIVE} RETURNING ${LOCK_COLUMNS}`;

/**
 * $1 id, $2 ttl seconds or null (keep the lock's own). The lease restarts at tracker_now();
 * a lock without TTL renewed with null keeps both NULLs (NULL arithmetic). Only a live row
 * matches, and a concurrent takeover changes the row's id (the UPDATE re-checks `id` on the
 * newest version after waiting), so an expired or replaced lock is never brought back.
 */
export const RENEW = `
UPDATE locks SET
  ttl_seconds = coalesce($2::int, ttl_seconds),
  expires_at = tracker_now() + coalesce($2::int, ttl_seconds) * interval '1 second'
WHERE id = $1 AND ${LIVE}
RETURNING ${LOCK_COLUMNS}`;

const LIST_FILTER = `($1::text IS NULL OR service = $1) AND ($2::text IS NULL OR who = $2) AND ${LIVE}`;

/**
 * $1 service or null, $2 who or null, $3 limit, $4 offset. The total and the page come
 * from one statement, hence one snapshot and one clock reading. Always one row at least:
 * past the last page the lock columns are null and only `total` is set.
 */
export const LIST = `
SELECT matching.total, page.id, page.service, page.who, page.created_ms,
       page.ttl_seconds, page.expires_ms, page.fencing_token
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
