/**
 * Every statement the PostgreSQL store runs, in one place (with the PL/pgSQL functions of
 * migration 008). Reads, renewals and heartbeats are single statements in autocommit (READ
 * COMMITTED gives each one snapshot). Everything that may hand a service to anyone
 * (acquire, release, leave, settle, sweep, a resource put or delete) first locks the
 * `services` row of every service involved (LOCK_SERVICES, or inside the one-round-trip
 * functions): those transactions run one at a time per service, across replicas, and each
 * of their later statements takes a new snapshot, so it sees everything the previous holder
 * of that row lock committed.
 */

import type { HistoryQuery } from '../../core/lock.js';

/**
 * A lock as the store reads it: tracker_lock_json (migration 008) builds it, the one
 * definition of its fields. Instants are unix ms truncated by the database; tokens and
 * counts arrive as JSON numbers.
 */
export interface LockRow {
  id: string;
  service: string;
  who: string;
  created_ms: number;
  ttl_seconds: number | null;
  /** null: the lock never expires. */
  expires_ms: number | null;
  fencing_token: number | string;
  owner: string | null;
  /** Live waiters touching the service (by name or by a label of its resource). */
  waiters: number;
  limit: number;
  mode: string;
  group_id: string | null;
  note: string | null;
  link: string | null;
  resource: { name: string; labels: string[]; properties: Record<string, string> } | null;
}

/** The lock of each row, as LockRow (in a statement over `locks`, or RETURNING). */
const LOCK = 'tracker_lock_json(locks) AS lock';

/** A waiter that is still in line: its replica's heartbeat has not run out. */
const WAITING = 'alive_until > tracker_now()';

/**
 * A row that is still a lock by the store's clock. Every query filters with it: an expired
 * row is gone for every purpose whether or not anything has deleted it yet. tracker_now()
 * is the one clock of the store (migration 002): the database's now(), replaced in tests.
 */
const LIVE = '(expires_at IS NULL OR expires_at > tracker_now())';

/**
 * $1 id, $2 service, $3 who, $4 ttl seconds or null, $5 owner (token name) or null, $6 owner
 * key or null, $7 whether the request may wait. The guide's acquire in one round trip when
 * the answer needs no decision (migration 008, tracker_acquire_plain): `acquired` or
 * `refused` with `locks`, else `general` (the caller runs the grant pass).
 */
export const ACQUIRE_PLAIN = 'SELECT tracker_acquire_plain($1::uuid, $2, $3, $4::int, $5, $6, $7) AS result';

/**
 * $1 id, $2 owner key or null, $3 owner name or null, $4 attempt or null. A release that can
 * let nobody in, in one round trip (tracker_release_plain): `released` with `locks`,
 * `missing`, or `general` with the `service` (the caller releases in a grant pass).
 */
export const RELEASE_PLAIN = 'SELECT tracker_release_plain($1::uuid, $2, $3, $4) AS result';

/** $1 ticket, $2 attempt or null. tracker_leave_plain: `left`, `missing` or `general` with `services`. */
export const LEAVE_PLAIN = 'SELECT tracker_leave_plain($1::int8, $2) AS result';

export interface PlainRow {
  result: {
    outcome: 'acquired' | 'refused' | 'released' | 'left' | 'missing' | 'general';
    locks?: LockRow[];
    service?: string;
    services?: string[] | null;
  };
}

/**
 * The plain acquires and releases pending together, as one call (migration 009,
 * tracker_batch), a prepared statement: $1 kinds ('acquire' | 'release'), $2 ids, $3
 * services, $4 whos, $5 ttls, $6 owner names, $7 owner keys, $8 whether each acquire may
 * wait, $9 attempts. One result per op, in order: PlainRow's, or `error`.
 */
export const BATCH = {
  name: 'tracker_batch_009',
  text: 'SELECT tracker_batch($1::text[], $2::uuid[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[], $8::boolean[], $9::text[]) AS results',
} as const;

export type BatchResult = PlainRow['result'] | { outcome: 'error'; code: string; message: string };

export interface BatchRow {
  results: BatchResult[];
}

/**
 * $1 service names (sorted, distinct), $2 nowait. Locks their `services` rows in name order
 * (tracker_lock_services): waiting and creating missing rows, or (nowait) neither: false
 * when one is missing, error 55P03 when one is locked.
 */
export const LOCK_SERVICES = 'SELECT tracker_lock_services($1::text[], $2) AS ok';

/** The error PostgreSQL raises when FOR UPDATE NOWAIT meets a locked row. */
export const LOCK_NOT_AVAILABLE = '55P03';
export const DEADLOCK_DETECTED = '40P01';

/**
 * $1 service names, $2 labels whose members to include, $3 and $4 the cut-off (priority,
 * ticket: only waiters before it) or nulls, $5 most waiters. What the grant rules need
 * (tracker_grant_state), after deleting expired holders and dead waiters.
 */
export const GRANT_STATE =
  'SELECT tracker_grant_state($1::text[], $2::text[], $3::int, $4::int8, $5::int) AS state';

/**
 * The same read without deleting anything, and without row locks: a first look whose
 * answer is only a hint (settle: is a grant possible at all?).
 */
export const PEEK_STATE = `
SELECT json_build_object(
  'expired', '[]'::json,
  'resources', (SELECT coalesce(json_agg(json_build_object(
                  'name', r.name, 'capacity', r.capacity, 'labels', r.labels,
                  'released_ms', coalesce(floor(extract(epoch FROM r.released_at) * 1000)::int8, 0))), '[]')
                FROM resources r WHERE r.name = ANY ($1::text[])),
  'holders', (SELECT coalesce(json_agg(json_build_object('service', l.service, 'mode', l.mode,
                                                         'limit', l.max_holders)), '[]')
              FROM locks l WHERE l.service = ANY ($1::text[]) AND ${LIVE}),
  'waiters', (SELECT coalesce(json_agg(json_build_object(
                'ticket', line.ticket, 'lock_id', line.lock_id, 'priority', line.priority, 'service', line.service,
                'claims', (SELECT json_agg(json_build_object('service', c.service, 'label', c.label,
                                                             'mode', c.mode, 'limit', c.max_holders,
                                                             'quantity', c.quantity) ORDER BY c.idx)
                           FROM waiter_claims c WHERE c.ticket = line.ticket))
                ORDER BY line.priority DESC, line.ticket), '[]')
              FROM (SELECT w.ticket, w.lock_id, w.priority, w.service FROM waiters w
                    WHERE w.${WAITING}
                      AND w.ticket IN (SELECT c.ticket FROM waiter_claims c WHERE c.service = ANY ($1::text[])
                                       UNION
                                       SELECT c.ticket FROM resource_labels rl JOIN waiter_claims c ON c.label = rl.label
                                       WHERE rl.name = ANY ($1::text[]))
                      AND ($3::int IS NULL OR w.priority > $3::int OR (w.priority = $3::int AND w.ticket < $4::int8))
                    ORDER BY w.priority DESC, w.ticket LIMIT $5::int) AS line),
  'members', (SELECT coalesce(json_object_agg(labels.label, (
                SELECT coalesce(json_agg(rl.name ORDER BY rl.name), '[]') FROM resource_labels rl
                WHERE rl.label = labels.label)), '{}')
              FROM (SELECT DISTINCT c.label FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
                    WHERE c.label IS NOT NULL AND w.${WAITING}
                      AND w.ticket IN (SELECT c2.ticket FROM waiter_claims c2 WHERE c2.service = ANY ($1::text[])
                                       UNION
                                       SELECT c2.ticket FROM resource_labels rl JOIN waiter_claims c2 ON c2.label = rl.label
                                       WHERE rl.name = ANY ($1::text[]))
                    UNION SELECT unnest($2::text[])) AS labels (label))) AS state`;

export interface StateRow {
  state: GrantStateJson;
}

export interface GrantStateJson {
  expired: LockRow[];
  resources: { name: string; capacity: number; labels: string[]; released_ms: number }[];
  holders: { service: string; mode: string; limit: number }[];
  waiters: {
    ticket: number;
    lock_id: string;
    priority: number;
    service: string;
    claims: {
      service: string | null;
      label: string | null;
      mode: string;
      limit: number | null;
      quantity: number;
    }[];
  }[];
  members: Record<string, string[]>;
}

/**
 * $1 the grants, as JSON (see tracker_grant): deletes the granted waiters, bumps the fencing
 * counters, inserts the locks, marks their idempotency keys granted. Returns the locks of
 * each grant done, and whether it stopped at a waiter that had left.
 */
export const GRANT = 'SELECT tracker_grant($1::json) AS result';

export interface GrantRow {
  result: { locks: LockRow[][]; vanished: boolean };
}

/** $1 labels. The resources carrying each, before any row lock (what to lock). */
export const LABEL_MEMBERS = `
SELECT label, array_agg(name ORDER BY name) AS names FROM resource_labels WHERE label = ANY ($1::text[])
GROUP BY label`;

/** $1 id. */
export const GET = `SELECT ${LOCK} FROM locks WHERE id = $1 AND ${LIVE}`;

/** $1 request id. Its lock, or its group's live locks, in the order of its claims. */
export const GRANTED = `
SELECT ${LOCK} FROM locks WHERE (id = $1 OR group_id = $1) AND ${LIVE} ORDER BY member`;

/**
 * $2 owner key, or null for any owner (authentication off, or an admin); $3 the token name,
 * which only a lock recorded without a key (before migration 007) is matched by.
 */
const OWNED_BY = `($2::text IS NULL OR owner_key = $2::text OR (owner_key IS NULL AND owner = $3::text))`;

/**
 * $1 id, $2 owner key or null, $3 owner name or null. Returns the row only to the one caller
 * whose DELETE removed it; runs under the service's row lock, in the transaction that then
 * grants what it frees. The count of waiters is the one before any is granted.
 */
export const RELEASE = `DELETE FROM locks WHERE id = $1 AND ${LIVE} AND ${OWNED_BY} RETURNING ${LOCK}`;

/** $1 id. The service of a live lock, to lock its services row before releasing. */
export const SERVICE_OF = `SELECT service FROM locks WHERE id = $1 AND ${LIVE}`;

/** $1 group id. The services of the group's live locks. */
export const GROUP_SERVICES = `SELECT DISTINCT service FROM locks WHERE group_id = $1 AND ${LIVE}`;

/**
 * $1 group id, $2 owner key or null, $3 owner name or null. Releases every live lock of the
 * group, or none when one of them is not that owner's (then `denied`).
 */
export const RELEASE_GROUP = `
WITH members AS (SELECT id, coalesce(${OWNED_BY}, false) AS mine FROM locks WHERE group_id = $1 AND ${LIVE}),
gone AS (
  DELETE FROM locks WHERE id IN (SELECT id FROM members) AND ${LIVE}
    AND NOT EXISTS (SELECT FROM members WHERE NOT mine)
  RETURNING member, ${LOCK}
)
SELECT EXISTS (SELECT FROM members WHERE NOT mine) AS denied,
       (SELECT coalesce(json_agg(lock ORDER BY member), '[]') FROM gone) AS locks`;

/**
 * $1 group id, $2 ttl seconds or null, $3 owner key or null, $4 owner name. RENEW for every
 * live lock of the group, or none when one of them is not that owner's.
 */
export const RENEW_GROUP = `
WITH members AS (
  SELECT id, coalesce($3::text IS NULL OR owner_key = $3::text OR (owner_key IS NULL AND owner = $4::text), false) AS mine
  FROM locks WHERE group_id = $1 AND ${LIVE}
),
renewed AS (
  UPDATE locks SET
    ttl_seconds = coalesce($2::int, ttl_seconds),
    expires_at = tracker_now() + coalesce($2::int, ttl_seconds) * interval '1 second'
  WHERE id IN (SELECT id FROM members) AND ${LIVE} AND NOT EXISTS (SELECT FROM members WHERE NOT mine)
  RETURNING member, ${LOCK}
)
SELECT EXISTS (SELECT FROM members WHERE NOT mine) AS denied,
       (SELECT coalesce(json_agg(lock ORDER BY member), '[]') FROM renewed) AS locks`;

export interface GroupChangeRow {
  denied: boolean;
  locks: LockRow[];
}

/** $1 service names. Their live holders, oldest first. */
export const HOLDERS = `SELECT ${LOCK} FROM locks WHERE service = ANY ($1::text[]) AND ${LIVE} ORDER BY created_at, id`;

/** The channel every replica LISTENs on; the payload is the service that changed. */
export const CHANGES_CHANNEL = 'tracker_lock_changes';

/**
 * The channel of news of the history: a replica that committed events NOTIFYs it (no
 * payload) on its LISTEN connection, outside the lock transactions (see ChangeFeed).
 */
export const EVENTS_CHANNEL = 'tracker_events';

/** $1 services. Delivered to every listener when the transaction commits, never before. */
export const NOTIFY = `SELECT pg_notify('${CHANGES_CHANNEL}', service) FROM unnest($1::text[]) AS service`;

/**
 * $1 service (shown), $2 who, $3 ttl seconds or null, $4 request id, $5 owner (the replica),
 * $6 waiter lease in ms, $7 the request's owner (token name) or null, $8 most live waiters
 * allowed or null, $9 the request's owner key or null, $10 priority, $11 is a group, $12
 * label (shown) or null, $13 mode (shown), then its claims as arrays: $14 services, $15
 * labels, $16 modes, $17 limits, $18 quantities; $19 note, $20 link or null. Joins the queue with its claims, in one
 * statement (the queued event counts it); runs in the acquire transaction under the row
 * locks of every resource its claims use, so the ticket (from the sequence) is its
 * arrival order. $8 and the position count the live waiters shown under the same service
 * (as on SQLite). No row: the queue is full.
 */
export const ENQUEUE = `
WITH joined AS (
  INSERT INTO waiters (service, who, ttl_seconds, lock_id, owner, since, alive_until, lock_owner, lock_owner_key,
                       priority, is_group, label, mode, note, link)
  SELECT $1, $2, $3::int, $4::uuid, $5, tracker_now(), tracker_now() + $6::int8 * interval '1 millisecond', $7::text,
         $9::text, $10::int, $11::boolean, $12::text, $13::text, $19::text, $20::text
  WHERE $8::int IS NULL OR (SELECT count(*) FROM waiters WHERE service = $1 AND ${WAITING}) < $8::int
  RETURNING ticket, service, who, since, lock_id, note, link
),
claims AS (
  INSERT INTO waiter_claims (ticket, idx, service, label, mode, max_holders, quantity)
  SELECT joined.ticket, claim.idx - 1, claim.service, claim.label, claim.mode, claim.max_holders, claim.quantity
  FROM joined, unnest($14::text[], $15::text[], $16::text[], $17::int[], $18::int[])
    WITH ORDINALITY AS claim (service, label, mode, max_holders, quantity, idx)
)
SELECT joined.ticket, joined.service, joined.who, joined.lock_id, joined.note, joined.link,
       floor(extract(epoch FROM joined.since) * 1000)::int8 AS since_ms,
       1 + (SELECT count(*)::int FROM waiters w
            WHERE w.service = joined.service AND w.${WAITING}
              AND (w.priority > $10::int OR (w.priority = $10::int AND w.ticket < joined.ticket))) AS position
FROM joined`;

export interface WaiterRow {
  /** bigint, as a string (or a number inside JSON). */
  ticket: string | number;
  lock_id: string;
  service: string;
  who: string;
  since_ms: string | number;
  priority?: number;
  mode?: string;
  label?: string | null;
  is_group?: boolean;
  note?: string | null;
  link?: string | null;
  /** Its place in the line of the service it shows (ENQUEUE, REJOIN). */
  position?: number;
}

/**
 * $1 ticket. Takes a waiter out of the queue, under the row locks of what it waits for (the
 * grant pass that follows may let others in). No row: already granted or dropped.
 */
export const LEAVE = 'DELETE FROM waiters WHERE ticket = $1 RETURNING service';

/**
 * $1 owner, $2 lease in ms. Keeps that replica's waiters in line. It never waits for a row
 * lock (SKIP LOCKED): a waiter row locked by someone else is being granted, dropped or
 * taken out of the queue, and needs no heartbeat; and a heartbeat that waited while holding
 * other waiters' rows could deadlock with a grant.
 */
export const HEARTBEAT = `
UPDATE waiters SET alive_until = tracker_now() + $2::int8 * interval '1 millisecond'
WHERE ticket IN (SELECT ticket FROM waiters WHERE owner = $1 FOR UPDATE SKIP LOCKED)`;

/** A live waiter as JSON, for a query over `waiters w` (WaiterRow). */
const WAITER_JSON = `json_build_object('ticket', w.ticket, 'lock_id', w.lock_id, 'service', w.service, 'who', w.who,
  'since_ms', floor(extract(epoch FROM w.since) * 1000)::int8, 'priority', w.priority, 'mode', w.mode,
  'label', w.label, 'is_group', w.is_group, 'note', w.note, 'link', w.link)`;

/**
 * $1 service names. For each, its live holders (oldest first) and the live waiters touching
 * it (by name, or by a label of its resource) in grant order, from one snapshot and one
 * clock reading.
 */
export const QUEUES = `
SELECT n.name,
  (SELECT coalesce(json_agg(tracker_lock_json(l) ORDER BY l.created_at, l.id), '[]')
   FROM locks l WHERE l.service = n.name AND (l.expires_at IS NULL OR l.expires_at > tracker_now())) AS holders,
  (SELECT coalesce(json_agg(${WAITER_JSON} ORDER BY w.priority DESC, w.ticket), '[]')
   FROM waiters w WHERE w.${WAITING} AND w.ticket IN (SELECT ticket FROM tracker_touching(n.name))) AS waiters
FROM unnest($1::text[]) AS n (name)`;

export interface QueueRow {
  name: string;
  holders: LockRow[];
  waiters: WaiterRow[];
}

/**
 * $1 id, $2 ttl seconds or null (keep the lock's own), $3 owner key or null (any), $4 owner
 * name (see OWNED_BY). The lease restarts at tracker_now(); a lock without TTL renewed with
 * null keeps both NULLs (NULL arithmetic). Only a live row matches, so an expired or
 * released lock is never brought back.
 */
/**
 * $1 id, $2 note or null, $3 owner key or null, $4 owner name or null. A held lock's note
 * (the locks_record_noted trigger records the change, migration 011).
 */
export const SET_NOTE = `
UPDATE locks SET note = $2::text
WHERE id = $1 AND ${LIVE}
  AND ($3::text IS NULL OR owner_key = $3::text OR (owner_key IS NULL AND owner = $4::text))
RETURNING ${LOCK}`;

export const RENEW = `
UPDATE locks SET
  ttl_seconds = coalesce($2::int, ttl_seconds),
  expires_at = tracker_now() + coalesce($2::int, ttl_seconds) * interval '1 second'
WHERE id = $1 AND ${LIVE}
  AND ($3::text IS NULL OR owner_key = $3::text OR (owner_key IS NULL AND owner = $4::text))
RETURNING ${LOCK}`;

const LIST_FILTER = `($1::text IS NULL OR service = $1) AND ($2::text IS NULL OR who = $2) AND ${LIVE}`;

/**
 * $1 service or null, $2 who or null, $3 limit, $4 offset. The total and the page come
 * from one statement, hence one snapshot and one clock reading. Always one row at least:
 * past the last page `lock` is null and only `total` is set.
 */
export const LIST = `
SELECT matching.total, page.lock
FROM (SELECT count(*) AS total FROM locks WHERE ${LIST_FILTER}) AS matching
LEFT JOIN LATERAL (
  SELECT created_at, id, ${LOCK} FROM locks
  WHERE ${LIST_FILTER}
  ORDER BY created_at, id
  LIMIT $3 OFFSET $4
) AS page ON true
ORDER BY page.created_at, page.id`;

export type ListRow = { total: string; lock: LockRow | null };

/**
 * $1 reason or null. Run under the lock's service's row lock in the force-release
 * transaction: tells the history trigger that the DELETE that follows (RELEASE) is a force
 * release, with $1 as its reason (NULL: none). Both settings end with the transaction.
 */
export const MARK_FORCE_RELEASE = `
SELECT set_config('tracker.release', 'force-released', true), set_config('tracker.reason', coalesce($1, ''), true)`;

/**
 * $1 reason, $2 new lock id, $3 its holder, $4 its token name or null. The delete that
 * follows, in the same transaction, records `stolen` with them (migration 011).
 */
export const MARK_STEAL = `
SELECT set_config('tracker.release', 'stolen', true), set_config('tracker.reason', $1, true),
       set_config('tracker.by_lock_id', $2, true), set_config('tracker.by_who', $3, true),
       set_config('tracker.by_owner', coalesce($4, ''), true)`;

/** Clears MARK_STEAL before the lock that takes the stolen one's place. */
export const UNMARK_STEAL = `
SELECT set_config('tracker.release', '', true), set_config('tracker.reason', '', true),
       set_config('tracker.by_lock_id', '', true), set_config('tracker.by_who', '', true),
       set_config('tracker.by_owner', '', true)`;

/** Clears MARK_FORCE_RELEASE before the grant that follows in the same transaction. */
export const UNMARK_FORCE_RELEASE = `
SELECT set_config('tracker.release', '', true), set_config('tracker.reason', '', true)`;

/**
 * $1 limit. The services of expired locks, oldest expiry first: the sweep deletes them (and
 * records each expiry once) in a grant pass over those services.
 */
export const EXPIRED_SERVICES = `
SELECT DISTINCT service FROM (
  SELECT service FROM locks WHERE expires_at <= tracker_now() ORDER BY expires_at LIMIT $1) AS expired`;

/**
 * $1 limit. Deletes waiters whose replica stopped its heartbeat (recorded as abandoned),
 * which every grant pass skips anyway; without this, those of a service nobody takes again
 * would stay forever. Rows someone else has locked are left to them.
 */
export const SWEEP_WAITERS = `
DELETE FROM waiters WHERE ticket IN (
  SELECT ticket FROM waiters WHERE NOT (${WAITING}) LIMIT $1 FOR UPDATE SKIP LOCKED)
AND NOT (${WAITING})`;

/** $1 service or null. Every held lock, from one snapshot, oldest first. */
export const SNAPSHOT = `
SELECT ${LOCK} FROM locks WHERE ($1::text IS NULL OR service = $1) AND ${LIVE}
ORDER BY created_at, id`;

/**
 * $1 service or null, $2 the id to start after (a UUID), $3 the page size: held locks in id
 * order (the primary key).
 */
export const SNAPSHOT_PAGE = `
SELECT ${LOCK} FROM locks WHERE ($1::text IS NULL OR service = $1) AND id > $2::uuid AND ${LIVE}
ORDER BY id LIMIT $3`;

/** Resources (registry rows) as JSON, for a query over `resources r`. */
const RESOURCE_JSON = `json_build_object('name', r.name, 'labels', r.labels, 'properties', r.properties,
  'capacity', r.capacity, 'description', r.description)`;

/** $1 name. */
export const GET_RESOURCE = `SELECT ${RESOURCE_JSON} AS resource FROM resources r WHERE r.name = $1`;

/** $1 label or null. Registered resources (carrying the label), by name. */
export const LIST_RESOURCES = `
SELECT ${RESOURCE_JSON} AS resource FROM resources r
WHERE $1::text IS NULL OR r.name IN (SELECT name FROM resource_labels WHERE label = $1)
ORDER BY r.name`;

export interface ResourceRow {
  resource: {
    name: string;
    labels: string[];
    properties: Record<string, string>;
    capacity: number;
    description: string | null;
  };
}

/**
 * $1 name, $2 labels (JSON array), $3 properties (JSON object), $4 capacity, $5 description,
 * $6 source. Creates or replaces a resource and its label index; `created` when it is new.
 * Runs under the resource's services row lock, then a grant pass lets its waiters in.
 */
export const PUT_RESOURCE = `
WITH put AS (
  INSERT INTO resources (name, labels, properties, capacity, description, source)
  VALUES ($1, $2::jsonb, $3::jsonb, $4::int, $5, $6)
  ON CONFLICT (name) DO UPDATE SET labels = excluded.labels, properties = excluded.properties,
    capacity = excluded.capacity, description = excluded.description, source = excluded.source
  RETURNING (xmax = 0) AS created
),
unlabelled AS (
  DELETE FROM resource_labels WHERE name = $1 AND NOT (label = ANY (ARRAY(SELECT jsonb_array_elements_text($2::jsonb))))
),
labelled AS (
  INSERT INTO resource_labels (label, name)
  SELECT DISTINCT label, $1 FROM jsonb_array_elements_text($2::jsonb) AS label
  ON CONFLICT DO NOTHING
),
-- Its locks show its limit: the new capacity (the history records no change).
limited AS (UPDATE locks SET max_holders = $4::int WHERE service = $1 AND max_holders <> $4::int)
SELECT created FROM put`;

/** $1 name. Deletes a resource unless it has a live holder (under its row lock). */
export const DELETE_RESOURCE = `
DELETE FROM resources WHERE name = $1
  AND NOT EXISTS (SELECT FROM locks WHERE service = $1 AND ${LIVE})
RETURNING labels`;

/** $1 name. Whether a resource exists, and the labels it carries. */
export const RESOURCE_LABELS = 'SELECT labels FROM resources WHERE name = $1';

/** $1 names. The file-declared resources not among them. */
export const FILE_RESOURCES_BUT = `
SELECT name FROM resources WHERE source = 'file' AND NOT (name = ANY ($1::text[])) ORDER BY name`;

/** An event row, with instants as unix ms computed by the database (as for locks). */
const EVENT_COLUMNS = `id, floor(extract(epoch FROM at) * 1000)::int8 AS at_ms, type, lock_id, service, who,
  floor(extract(epoch FROM created_at) * 1000)::int8 AS created_ms, ttl_seconds,
  floor(extract(epoch FROM expires_at) * 1000)::int8 AS expires_ms, fencing_token, waiters, owner, held_ms, reason,
  group_id, mode, CASE WHEN type IN ('queued', 'dequeued') THEN NULL ELSE coalesce(max_holders, 1) END AS max_holders,
  label, note, link, by_lock_id, by_who, by_owner`;

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
  group_id: string | null;
  mode: string;
  /** The lock's limit (1 for events recorded before migration 008); null for queued/dequeued. */
  max_holders: number | null;
  label: string | null;
  note: string | null;
  link: string | null;
  by_lock_id: string | null;
  by_who: string | null;
  by_owner: string | null;
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
RETURNING ticket, lock_id, service, who, floor(extract(epoch FROM since) * 1000)::int8 AS since_ms, priority, mode,
  label, is_group, note, link,
  1 + (SELECT count(*)::int FROM waiters w
       WHERE w.service = waiters.service AND w.${WAITING}
         AND (w.priority > waiters.priority OR (w.priority = waiters.priority AND w.ticket < waiters.ticket)))
    AS position`;

/**
 * On behalf of one attempt of a keyed request ($n attempt): not when a retry of it has taken
 * over (its key names another attempt).
 */
const stillMine = (idColumn: string, n: number) =>
  `NOT EXISTS (SELECT FROM idempotency_keys k WHERE k.lock_id = ${idColumn} AND k.attempt <> $${n})`;

/** $1 ticket, $2 attempt. LEAVE, for one attempt of a keyed request. */
export const LEAVE_AS = `DELETE FROM waiters WHERE ticket = $1 AND ${stillMine('waiters.lock_id', 2)} RETURNING service`;

/** $1 id, $2 owner key or null, $3 owner name or null, $4 attempt. RELEASE, for one attempt of a keyed request. */
export const RELEASE_AS = `DELETE FROM locks WHERE id = $1 AND ${LIVE} AND ${OWNED_BY}
  AND ${stillMine('locks.id', 4)} RETURNING ${LOCK}`;

/**
 * $1 retention in ms, $2 limit. Keys older than the retention whose lock is neither held
 * nor waiting; concurrent prunes on other replicas skip each other's rows.
 */
export const PRUNE_KEYS = `
WITH doomed AS (
  SELECT scope, key FROM idempotency_keys k
  WHERE k.created_at < tracker_now() - $1::int8 * interval '1 millisecond'
    AND NOT EXISTS (SELECT FROM locks WHERE locks.id = k.lock_id OR locks.group_id = k.lock_id)
    AND NOT EXISTS (SELECT FROM waiters WHERE waiters.lock_id = k.lock_id)
  LIMIT $2 FOR UPDATE SKIP LOCKED
), deleted AS (
  DELETE FROM idempotency_keys k USING doomed WHERE k.scope = doomed.scope AND k.key = doomed.key RETURNING 1
)
SELECT count(*)::int AS pruned FROM deleted`;
