/**
 * Every statement the PostgreSQL store runs, in one place. Reads, renewals, heartbeats and
 * leaving the queue are single statements in autocommit (READ COMMITTED gives each one
 * snapshot). Everything that may hand a service to a waiter (acquire, release, settle) is
 * an explicit transaction on one pooled connection that first locks the service's
 * `services` row (LOCK_SERVICE): those transactions run one at a time per service, across
 * replicas, and each of their later statements takes a new snapshot, so it sees everything
 * the previous holder of that row lock committed.
 */

import type { HistoryQuery } from '../../core/lock.js';

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
  owner: string | null;
  /** Live waiters of the service. */
  waiters: number;
}

// created_at and expires_at keep microseconds; the ms values are computed by the database
// so that the JS Dates are exact and depend neither on the session TimeZone nor on global
// pg type parsers. expires_at - created_at is a whole number of seconds at acquire, so the
// two truncations keep expiresAt = createdAt + ttl exactly.
const LOCK_ROW_COLUMNS = `id, service, who, floor(extract(epoch FROM created_at) * 1000)::int8 AS created_ms,
  ttl_seconds, floor(extract(epoch FROM expires_at) * 1000)::int8 AS expires_ms, fencing_token, owner`;

/** A waiter that is still in line: its replica's heartbeat has not run out. */
const WAITING = 'alive_until > tracker_now()';

/**
 * The lock columns and the count of its service's live waiters, for a query over `locks`
 * (also in RETURNING, where `locks` is the written row). `extra` narrows the count.
 */
const lockColumns = (extra = '') => `${LOCK_ROW_COLUMNS},
  (SELECT count(*)::int FROM waiters
   WHERE waiters.service = locks.service AND waiters.${WAITING} ${extra}) AS waiters`;

const LOCK_COLUMNS = lockColumns();

/**
 * A row that is still a lock by the store's clock. Every query filters with it: an expired
 * row is gone for every purpose whether or not anything has deleted it yet. tracker_now()
 * is the one clock of the store (migration 002): the database's now(), replaced in tests.
 */
const LIVE = '(expires_at IS NULL OR expires_at > tracker_now())';

/**
 * $1 id, $2 service, $3 who, $4 ttl seconds or null, $5 owner (token name) or null, $6 owner
 * key (identity) or null. Runs inside the acquire transaction,
 * after LOCK_SERVICE and after the queue's head (if any) was granted, so a service with
 * live waiters is held by then and this statement only refuses. Nothing is read and then
 * written by the application. In order:
 *
 * 1. `token` bumps the service's fencing counter (or starts it at 1), unless this
 *    statement's snapshot shows a live holder: such an acquire is refused below and
 *    consumes no token. An acquire that saw the service free or expired does consume one, even if it
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
    -- A free service with live waiters is theirs: the acquire transaction grants it first.
    AND NOT EXISTS (SELECT FROM waiters WHERE service = $2::text AND ${WAITING})
  ON CONFLICT (service) DO UPDATE SET last_token = services.last_token + 1
  RETURNING last_token
),
taken AS (
  INSERT INTO locks (id, service, who, created_at, ttl_seconds, expires_at, fencing_token, owner, owner_key)
  SELECT $1::uuid, $2::text, $3::text, tracker_now(), $4::int,
         tracker_now() + $4::int * interval '1 second', last_token, $5::text, $6::text
  FROM token
  ON CONFLICT (service) DO UPDATE SET
    id = excluded.id,
    who = excluded.who,
    created_at = excluded.created_at,
    ttl_seconds = excluded.ttl_seconds,
    expires_at = excluded.expires_at,
    fencing_token = excluded.fencing_token,
    owner = excluded.owner,
    owner_key = excluded.owner_key
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
 * $2 owner key, or null for any owner (authentication off, or an admin); $3 the token name,
 * which only a lock recorded without a key (before migration 007) is matched by.
 */
const OWNED_BY = `($2::text IS NULL OR owner_key = $2::text OR (owner_key IS NULL AND owner = $3::text))`;

/**
 * $1 id, $2 owner key or null, $3 owner name or null. Returns the row only to the one caller whose DELETE removed it. An expired row is
 * not released (it is no lock); it stays until an acquire or a settle takes its service
 * over. Runs in the release transaction after LOCK_SERVICE; the count of waiters is the
 * one before the head is granted.
 */
export const RELEASE = `DELETE FROM locks WHERE id = $1 AND ${LIVE} AND ${OWNED_BY} RETURNING ${LOCK_COLUMNS}`;

/**
 * $1 id, $2 owner key or null, $3 owner name or null. The release of a lock nobody waits for, in one statement: no transaction, no
 * NOTIFY (nobody listens for this service). Returns no row when the lock is not held or has
 * live waiters; the release transaction (which grants the next) handles both. A waiter that
 * joins while this runs is not seen by its snapshot: the service is then free with a waiter,
 * which its own replica's re-check (or the next acquire, which grants waiters first) settles.
 */
export const RELEASE_ALONE = `
DELETE FROM locks WHERE id = $1 AND ${LIVE} AND ${OWNED_BY}
  AND NOT EXISTS (SELECT FROM waiters WHERE waiters.service = locks.service AND waiters.${WAITING})
RETURNING ${LOCK_COLUMNS}`;

/** $1 id. The service of a live lock, to lock its services row before releasing. */
export const SERVICE_OF = `SELECT service FROM locks WHERE id = $1 AND ${LIVE}`;

/**
 * $1 service. Takes the service's row lock until commit: every transaction that may grant
 * the service, on any replica, starts with it, so they run one at a time per service. A
 * lock, not a write (no new row version per call). A service never taken has no row yet,
 * hence no waiters and nothing to grant; its first ACQUIRE creates the row, and the unique
 * constraints decide between concurrent first takers.
 */
export const LOCK_SERVICE = 'SELECT FROM services WHERE service = $1 FOR NO KEY UPDATE';

/** $1 service. Whether it has a live holder, any lock row (live or not), live waiters. */
export const SERVICE_STATE = `
SELECT EXISTS (SELECT FROM locks WHERE service = $1 AND ${LIVE}) AS held,
       EXISTS (SELECT FROM locks WHERE service = $1) AS occupied,
       EXISTS (SELECT FROM waiters WHERE service = $1 AND ${WAITING}) AS queued`;

export interface ServiceStateRow {
  held: boolean;
  occupied: boolean;
  queued: boolean;
}

/**
 * $1 service. Before a grant, under LOCK_SERVICE: deletes an expired holder's row (a live
 * one is kept: DELETE re-checks expiry on the newest row version, so a renewal that
 * committed meanwhile wins) and the waiters whose replica stopped its heartbeat.
 */
export const CLEAR_DEAD = `
WITH expired AS (DELETE FROM locks WHERE service = $1 AND expires_at <= tracker_now()),
     dead AS (DELETE FROM waiters WHERE service = $1 AND NOT (${WAITING}))
SELECT`;

/**
 * $1 service. The oldest live waiter, locked: a concurrent `leave` of it makes the lock
 * skip to the next (READ COMMITTED re-checks locked rows), a heartbeat just waits for us.
 */
export const QUEUE_HEAD = `
SELECT ticket FROM waiters WHERE service = $1 AND ${WAITING}
ORDER BY ticket LIMIT 1 FOR UPDATE`;

/**
 * $1 service, $2 ticket (QUEUE_HEAD's, locked by this transaction). Grants the waiter:
 * deletes its row, bumps the fencing counter (its row is locked by LOCK_SERVICE), inserts
 * the lock under the request's id with the lease counted from now. Under LOCK_SERVICE with
 * no live holder and the expired row cleared, the INSERT cannot conflict. The waiters count
 * leaves out the granted one, whose deletion this statement's snapshot does not show.
 */
export const GRANT = `
WITH granted AS (
  DELETE FROM waiters WHERE ticket = $2 AND service = $1
  RETURNING lock_id, service, who, ttl_seconds, lock_owner, lock_owner_key
),
token AS (
  UPDATE services SET last_token = last_token + 1
  WHERE service = $1 AND EXISTS (SELECT FROM granted)
  RETURNING last_token
),
-- A lock granted under an idempotency key is never granted under it again.
keyed AS (
  UPDATE idempotency_keys SET granted = true WHERE lock_id = (SELECT lock_id FROM granted)
)
INSERT INTO locks (id, service, who, created_at, ttl_seconds, expires_at, fencing_token, owner, owner_key)
SELECT granted.lock_id, granted.service, granted.who, tracker_now(), granted.ttl_seconds,
       tracker_now() + granted.ttl_seconds * interval '1 second', token.last_token, granted.lock_owner,
       granted.lock_owner_key
FROM granted, token
RETURNING ${lockColumns('AND waiters.ticket <> $2')}`;

/** The channel every replica LISTENs on; the payload is the service that changed. */
export const CHANGES_CHANNEL = 'tracker_lock_changes';

/** $1 service. Delivered to every listener when the transaction commits, never before. */
export const NOTIFY = `SELECT pg_notify('${CHANGES_CHANNEL}', $1)`;

/**
 * $1 service, $2 who, $3 ttl seconds or null, $4 lock id, $5 owner (the replica), $6 waiter
 * lease in ms, $7 the request's owner (token name) or null, $8 most live waiters allowed or
 * null, $9 the request's owner key or null. Joins the queue; runs in the acquire transaction under LOCK_SERVICE, so the ticket
 * (from the sequence) is the arrival order, every other live waiter of the service is older,
 * and the count that enforces $8 cannot change before the insert. No row: the queue is full.
 */
export const ENQUEUE = `
WITH joined AS (
  INSERT INTO waiters (service, who, ttl_seconds, lock_id, owner, since, alive_until, lock_owner, lock_owner_key)
  SELECT $1, $2, $3::int, $4::uuid, $5, tracker_now(), tracker_now() + $6::int8 * interval '1 millisecond', $7::text,
         $9::text
  WHERE $8::int IS NULL
     OR (SELECT count(*) FROM waiters WHERE service = $1 AND ${WAITING}) < $8::int
  RETURNING ticket, service, who, since, lock_id
)
SELECT joined.ticket, joined.service, joined.who, joined.lock_id,
       floor(extract(epoch FROM joined.since) * 1000)::int8 AS since_ms,
       1 + (SELECT count(*)::int FROM waiters
            WHERE waiters.service = joined.service AND waiters.${WAITING}
              AND waiters.ticket < joined.ticket) AS position
FROM joined`;

export interface WaiterRow {
  /** bigint, as a string (or a number inside JSON). */
  ticket: string | number;
  lock_id: string;
  service: string;
  who: string;
  since_ms: string | number;
  position: number;
}

/**
 * $1 ticket. Leaves the queue; announces the service (the queue behind it moved up) in
 * the same autocommit statement, delivered on commit. No row: already granted or dropped.
 */
export const LEAVE = `
WITH gone AS (DELETE FROM waiters WHERE ticket = $1 RETURNING service)
SELECT service, pg_notify('${CHANGES_CHANNEL}', service) FROM gone`;

/**
 * $1 owner, $2 lease in ms. Keeps that replica's waiters in line. It never waits for a row
 * lock (SKIP LOCKED): a waiter row locked by someone else is being granted, dropped or
 * taken out of the queue, and needs no heartbeat; and a heartbeat that waited while holding
 * other waiters' rows could deadlock with a grant (which locks dead waiters, then the head).
 */
export const HEARTBEAT = `
UPDATE waiters SET alive_until = tracker_now() + $2::int8 * interval '1 millisecond'
WHERE ticket IN (SELECT ticket FROM waiters WHERE owner = $1 FOR UPDATE SKIP LOCKED)`;

/**
 * $1 service. The live holder (JSON or null) and the live waiters in ticket order (JSON
 * array), from one snapshot and one clock reading.
 */
export const QUEUE = `
SELECT
  (SELECT row_to_json(holder) FROM (
     SELECT ${LOCK_COLUMNS} FROM locks WHERE service = $1 AND ${LIVE}) AS holder) AS holder,
  (SELECT coalesce(json_agg(line ORDER BY line.ticket), '[]'::json) FROM (
     SELECT ticket, lock_id, service, who, floor(extract(epoch FROM since) * 1000)::int8 AS since_ms
     FROM waiters WHERE service = $1 AND ${WAITING}) AS line) AS waiters`;

export interface QueueRow {
  holder: JsonLockRow | null;
  waiters: Omit<WaiterRow, 'position'>[];
}

/** LockRow as row_to_json gives it: int8 columns arrive as JSON numbers. */
export type JsonLockRow = Omit<LockRow, 'created_ms' | 'expires_ms' | 'fencing_token'> & {
  created_ms: number;
  expires_ms: number | null;
  fencing_token: number;
};

/**
 * $1 id, $2 ttl seconds or null (keep the lock's own), $3 owner key or null (any), $4 owner
 * name (see OWNED_BY). The lease restarts at tracker_now();
 * a lock without TTL renewed with null keeps both NULLs (NULL arithmetic). Only a live row
 * matches, and a concurrent takeover changes the row's id (the UPDATE re-checks `id` on the
 * newest version after waiting), so an expired or replaced lock is never brought back.
 */
export const RENEW = `
UPDATE locks SET
  ttl_seconds = coalesce($2::int, ttl_seconds),
  expires_at = tracker_now() + coalesce($2::int, ttl_seconds) * interval '1 second'
WHERE id = $1 AND ${LIVE}
  AND ($3::text IS NULL OR owner_key = $3::text OR (owner_key IS NULL AND owner = $4::text))
RETURNING ${LOCK_COLUMNS}`;

const LIST_FILTER = `($1::text IS NULL OR service = $1) AND ($2::text IS NULL OR who = $2) AND ${LIVE}`;

/**
 * $1 service or null, $2 who or null, $3 limit, $4 offset. The total and the page come
 * from one statement, hence one snapshot and one clock reading. Always one row at least:
 * past the last page the lock columns are null and only `total` is set.
 */
export const LIST = `
SELECT matching.total, page.id, page.service, page.who, page.created_ms,
       page.ttl_seconds, page.expires_ms, page.fencing_token, page.owner, page.waiters
FROM (SELECT count(*) AS total FROM locks WHERE ${LIST_FILTER}) AS matching
LEFT JOIN LATERAL (
  SELECT created_at, ${LOCK_COLUMNS} FROM locks
  WHERE ${LIST_FILTER}
  ORDER BY created_at, id
  LIMIT $3 OFFSET $4
) AS page ON true
ORDER BY page.created_at, page.id`;

export type ListRow = { total: string } & (LockRow | { [K in keyof LockRow]: null });

/**
 * $1 id. Run after SERVICE_OF and LOCK_SERVICE in the force-release transaction: tells the
 * history trigger (migration 004) that the DELETE that follows (RELEASE) is a force release,
 * with $2 as its reason (NULL: none). Both settings end with the transaction.
 */
export const MARK_FORCE_RELEASE = `
SELECT set_config('tracker.release', 'force-released', true), set_config('tracker.reason', coalesce($1, ''), true)`;

/** Clears MARK_FORCE_RELEASE before the grant that follows in the same transaction. */
export const UNMARK_FORCE_RELEASE = `
SELECT set_config('tracker.release', '', true), set_config('tracker.reason', '', true)`;

/**
 * $1 limit. Deletes expired locks, oldest expiry first, skipping rows another transaction
 * has locked (a replica sweeping at the same time, a grant clearing its service): every
 * expired row is deleted, and its expiry recorded, once. DELETE re-checks expiry on the
 * newest row version, so a renewal that committed meanwhile wins. Counts the live waiters
 * of each service so the caller knows where to grant.
 */
export const SWEEP = `
DELETE FROM locks WHERE id IN (
  SELECT id FROM locks WHERE expires_at <= tracker_now()
  ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
AND expires_at <= tracker_now()
RETURNING ${LOCK_COLUMNS}`;

/**
 * $1 limit. Deletes waiters whose replica stopped its heartbeat (recorded as abandoned),
 * which a grant would skip anyway; without this, those of a service nobody takes again
 * would stay forever. Rows someone else has locked are left to them.
 */
export const SWEEP_WAITERS = `
DELETE FROM waiters WHERE ticket IN (
  SELECT ticket FROM waiters WHERE NOT (${WAITING}) LIMIT $1 FOR UPDATE SKIP LOCKED)
AND NOT (${WAITING})`;

/** $1 service or null. Every held lock, from one snapshot, oldest first. */
export const SNAPSHOT = `
SELECT ${LOCK_COLUMNS} FROM locks WHERE ($1::text IS NULL OR service = $1) AND ${LIVE}
ORDER BY created_at, id`;

/**
 * $1 service or null, $2 the id to start after (a UUID), $3 the page size: held locks in id
 * order (the primary key).
 */
export const SNAPSHOT_PAGE = `
SELECT ${LOCK_COLUMNS} FROM locks WHERE ($1::text IS NULL OR service = $1) AND id > $2::uuid AND ${LIVE}
ORDER BY id LIMIT $3`;

/** An event row, with instants as unix ms computed by the database (as for locks). */
const EVENT_COLUMNS = `id, floor(extract(epoch FROM at) * 1000)::int8 AS at_ms, type, lock_id, service, who,
  floor(extract(epoch FROM created_at) * 1000)::int8 AS created_ms, ttl_seconds,
  floor(extract(epoch FROM expires_at) * 1000)::int8 AS expires_ms, fencing_token, waiters, owner, held_ms, reason`;

export interface EventRow {
  /** bigint columns arrive as strings. */
  id: string;
  at_ms: string;
  type: string;
  lock_id: string;
  service: string;
  who: string;
  created_ms: string;
  ttl_seconds: number | null;
  expires_ms: string | null;
  fencing_token: string | null;
  waiters: number;
  owner: string | null;
  held_ms: string | null;
  reason: string | null;
}

/**
 * $1 after, $2 limit. Events above an id, oldest first, with this statement's snapshot
 * xmin: every transaction id below it has ended. Always one row; without events the event
 * columns are null.
 *
 * Ids come from a sequence at insert time and transactions commit in any order, so an id
 * below one seen here may still commit: a gap. Whoever holds a missing id took it before
 * this snapshot (a larger id had committed by then), and already had a transaction id
 * when it did (the triggers run after the lock or waiter row is written). So once every
 * transaction id handed out before the gap was seen has ended (NEXT_XID then, compared
 * with a later xmin), the gap is final: the event committed, and is visible, or never will.
 * (The snapshot's own xmax is no such bound: it is one past the newest *completed* id,
 * and a transaction that started after that completion may hold the missing id.)
 */
export const EVENTS_AFTER = `
SELECT bounds.xmin, page.*
FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8 AS xmin) AS bounds
LEFT JOIN LATERAL (
  SELECT ${EVENT_COLUMNS} FROM lock_events WHERE id > $1 ORDER BY id LIMIT $2
) AS page ON true
ORDER BY page.id`;

/**
 * A transaction id above every one handed out so far: its own, which this autocommit
 * statement takes and ends at once (an id is cheap; this runs only when a gap shows up).
 */
export const NEXT_XID = 'SELECT pg_current_xact_id()::text::int8 AS xid';

export type EventsAfterRow = { xmin: string } & (EventRow | { [K in keyof EventRow]: null });

/** The newest event id visible now or, with none left, the pruning watermark. */
export const EVENT_CURSOR = `
SELECT coalesce((SELECT max(id) FROM lock_events), (SELECT pruned_through FROM history_state)) AS last`;

/** The oldest transaction still running (see EVENTS_AFTER). */
export const SNAPSHOT_XMIN = 'SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8 AS xmin';

/**
 * Newest first, filtered: each filter present adds its condition, so the planner can use
 * the index of the most selective one (an "$n IS NULL OR" filter would defeat it). The
 * statement and its values, numbered as the conditions are added; the limit comes last.
 */
export function historyQuery(query: HistoryQuery): { text: string; values: unknown[] } {
  const where: string[] = [];
  const values: unknown[] = [];
  const add = (condition: (n: number) => string, value: unknown) => {
    if (value === undefined) return;
    values.push(value);
    where.push(condition(values.length));
  };
  add((n) => `service = $${n}`, query.service);
  add((n) => `who = $${n}`, query.who);
  add((n) => `at >= to_timestamp($${n}::int8 / 1000.0)`, query.since?.getTime());
  add((n) => `at < to_timestamp($${n}::int8 / 1000.0)`, query.until?.getTime());
  add((n) => `id < $${n}`, query.before);
  values.push(query.limit);
  const text = `SELECT ${EVENT_COLUMNS} FROM lock_events
WHERE ${where.length > 0 ? where.join(' AND ') : 'true'}
ORDER BY id DESC LIMIT $${values.length}`;
  return { text, values };
}

export const HISTORY_FLOOR = 'SELECT pruned_through FROM history_state';

/**
 * $1 retention in ms, $2 limit. Deletes the oldest events recorded before the retention
 * window and raises the watermark to the highest id deleted, in one statement. Replicas
 * pruning at once skip each other's rows.
 */
export const PRUNE = `
WITH gone AS (
  DELETE FROM lock_events WHERE id IN (
    SELECT id FROM lock_events WHERE at < tracker_now() - $1::int8 * interval '1 millisecond'
    ORDER BY at LIMIT $2 FOR UPDATE SKIP LOCKED)
  RETURNING id
),
mark AS (
  UPDATE history_state SET pruned_through = greatest(pruned_through, (SELECT max(id) FROM gone))
  WHERE EXISTS (SELECT FROM gone)
)
SELECT count(*)::int AS pruned FROM gone`;

export const STATS = `
SELECT (SELECT count(*)::int FROM locks WHERE ${LIVE}) AS locks,
       (SELECT count(*)::int FROM waiters WHERE ${WAITING}) AS waiters`;

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

/**
 * Idempotency keys (migration 006). $1 scope, $2 key, $3 fingerprint, $4 lock id, $5 service,
 * $6 attempt. Claims the key for a first request; no row: the key exists already (a
 * concurrent first request with the same key waits here for the other to commit).
 */
export const CLAIM_KEY = `
INSERT INTO idempotency_keys (scope, key, fingerprint, lock_id, service, attempt, created_at)
VALUES ($1, $2, $3, $4::uuid, $5, $6, tracker_now())
ON CONFLICT (scope, key) DO NOTHING
RETURNING lock_id`;

/** $1 scope, $2 key, $3 attempt. An existing key, locked, now answering to this attempt. */
export const TAKE_KEY = `
UPDATE idempotency_keys SET attempt = $3 WHERE scope = $1 AND key = $2
RETURNING fingerprint, lock_id, granted`;

export interface KeyRow {
  fingerprint: string;
  lock_id: string;
  granted: boolean;
}

/** $1 lock id. A lock granted under a key (a keyed acquire that took the service at once). */
export const KEY_GRANTED = 'UPDATE idempotency_keys SET granted = true WHERE lock_id = $1';

/**
 * $1 lock id, $2 owner (the replica), $3 lease in ms. A retry of a waiting request takes its
 * place in line: its replica now keeps it alive.
 */
export const REJOIN = `
UPDATE waiters SET owner = $2, alive_until = tracker_now() + $3::int8 * interval '1 millisecond'
WHERE lock_id = $1
RETURNING ticket, lock_id, service, who, floor(extract(epoch FROM since) * 1000)::int8 AS since_ms,
  1 + (SELECT count(*)::int FROM waiters w
       WHERE w.service = waiters.service AND w.${WAITING} AND w.ticket < waiters.ticket) AS position`;

/**
 * On behalf of one attempt of a keyed request ($n attempt): not when a retry of it has taken
 * over (its key names another attempt).
 */
const stillMine = (idColumn: string, n: number) =>
  `NOT EXISTS (SELECT FROM idempotency_keys k WHERE k.lock_id = ${idColumn} AND k.attempt <> $${n})`;

/** $1 ticket, $2 attempt. LEAVE, for one attempt of a keyed request. */
export const LEAVE_AS = `
WITH gone AS (DELETE FROM waiters WHERE ticket = $1 AND ${stillMine('waiters.lock_id', 2)} RETURNING service)
SELECT service, pg_notify('${CHANGES_CHANNEL}', service) FROM gone`;

/** $1 id, $2 owner key or null, $3 owner name or null, $4 attempt. RELEASE, for one attempt of a keyed request. */
export const RELEASE_AS = `DELETE FROM locks WHERE id = $1 AND ${LIVE} AND ${OWNED_BY}
  AND ${stillMine('locks.id', 4)} RETURNING ${LOCK_COLUMNS}`;

/**
 * $1 retention in ms, $2 limit. Keys older than the retention whose lock is neither held
 * nor waiting; concurrent prunes on other replicas skip each other's rows.
 */
export const PRUNE_KEYS = `
WITH doomed AS (
  SELECT scope, key FROM idempotency_keys k
  WHERE k.created_at < tracker_now() - $1::int8 * interval '1 millisecond'
    AND NOT EXISTS (SELECT FROM locks WHERE locks.id = k.lock_id)
    AND NOT EXISTS (SELECT FROM waiters WHERE waiters.lock_id = k.lock_id)
  LIMIT $2 FOR UPDATE SKIP LOCKED
), deleted AS (
  DELETE FROM idempotency_keys k USING doomed WHERE k.scope = doomed.scope AND k.key = doomed.key RETURNING 1
)
SELECT count(*)::int AS pruned FROM deleted`;
