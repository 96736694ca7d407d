/**
 * Every statement the SQLite store runs, in one place. Parameters are named (`@x`); `@now`
 * is always the store clock's reading for the operation, in unix ms (the same value the
 * history triggers read through tracker_now(), see migration 004).
 *
 * RETURNING statements must run with `.all()`, never `.get()`: `.get()` stops before
 * SQLITE_DONE, so an autocommit happens in sqlite3_reset, which skips the WAL
 * auto-checkpoint; the WAL then grows without bound (measured: 1.6 GB after a minute of load).
 */

/** A lock row as the statements return it. */
export interface LockRow {
  id: string;
  service: string;
  who: string;
  created_at: number;
  ttl_seconds: number | null;
  expires_at: number | null;
  fencing_token: number;
  owner: string | null;
  max_holders: number;
  mode: string;
  group_id: string | null;
  note: string | null;
  link: string | null;
  /** Live waiters of the service, where the statement counts them. */
  waiters?: number;
  /** The registered resource (JSON: labels, properties), where the statement reads it. */
  resource?: string | null;
}

export interface WaiterRow {
  ticket: number;
  service: string;
  who: string;
  ttl_seconds: number | null;
  lock_id: string;
  lock_owner: string | null;
  lock_owner_key: string | null;
  since: number;
  alive_until: number;
  priority: number;
  is_group: number;
  label: string | null;
  mode: string;
  note: string | null;
  link: string | null;
}

export interface ClaimRow {
  ticket: number;
  idx: number;
  service: string | null;
  label: string | null;
  mode: string;
  max_holders: number | null;
  quantity: number;
}

export interface ResourceRow {
  name: string;
  labels: string;
  properties: string;
  capacity: number;
  description: string | null;
  released_at: number;
  source: string;
}

export interface EventRow {
  id: number;
  at: number;
  type: string;
  lock_id: string;
  service: string;
  who: string;
  created_at: number;
  ttl_seconds: number | null;
  expires_at: number | null;
  fencing_token: number | null;
  waiters: number;
  owner: string | null;
  held_ms: number | null;
  reason: string | null;
  group_id: string | null;
  mode: string;
  max_holders: number | null;
  label: string | null;
  note: string | null;
  link: string | null;
  by_lock_id: string | null;
  by_who: string | null;
  by_owner: string | null;
}

export type Now = { now: number };

/** What an insert of a lock binds. */
export type InsertParams = {
  id: string;
  service: string;
  who: string;
  ttl: number | null;
  expires: number | null;
  owner: string | null;
  ownerKey: string | null;
  limit: number;
  mode: string;
  groupId: string | null;
  member: number;
  note: string | null;
  link: string | null;
} & Now;

/**
 * `@ownerKey` null: any owner (authentication off, or an admin); else only the lock of that
 * identity, or, for a lock recorded without one (before migration 007), of `@ownerName`.
 */
export type ByOwner = { id: string; ownerKey: string | null; ownerName: string | null } & Now;

/** `@service`/`@who` null: any. */
export type Filter = { service?: string; who?: string } & Now;

const COLUMNS =
  'id, service, who, created_at, ttl_seconds, expires_at, fencing_token, owner, max_holders, mode, group_id, note, link';

/**
 * A row is a held lock while it has no expiry or its expiry is still ahead. Expired rows may
 * linger; every read filters them out.
 */
const LIVE = '(expires_at IS NULL OR expires_at > @now)';

/**
 * The live waiters of the row's service (RETURNING cannot hold a subquery, so only reads
 * count them; writes count with COUNT_WAITERS).
 */
const WAITING = `(SELECT count(*) FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
    WHERE c.service = locks.service AND w.alive_until > @now) AS waiters,
  (SELECT json_object('labels', json(r.labels), 'properties', json(r.properties))
   FROM resources r WHERE r.name = locks.service) AS resource`;

const OWNED_BY = '(@ownerKey IS NULL OR owner_key = @ownerKey OR (owner_key IS NULL AND owner = @ownerName))';

export const DELETE_EXPIRED = 'DELETE FROM locks WHERE service = @service AND expires_at <= @now';

/**
 * A lock granted by the store's decision (core/grants.ts). The token is the service's last
 * one plus one; the locks_record_fencing_token trigger records it in `services`.
 */
export const INSERT = `INSERT INTO locks (${COLUMNS}, owner_key, member)
   SELECT @id, @service, @who, @now, @ttl, @expires,
          coalesce((SELECT last_token FROM services WHERE service = @service), 0) + 1, @owner,
          @limit, @mode, @groupId, @note, @link, @ownerKey, @member
   RETURNING ${COLUMNS}`;

/**
 * The plain case in one statement (autocommit: a write statement takes the file's write lock
 * before it reads): a service nobody holds (no row at all, not even an expired one), nobody
 * waits for by name, that is not a registered resource. Anything else goes through the
 * grant pass.
 */
export const INSERT_FREE = `INSERT INTO locks (${COLUMNS}, owner_key, member)
   SELECT @id, @service, @who, @now, @ttl, @expires,
          coalesce((SELECT last_token FROM services WHERE service = @service), 0) + 1, @owner,
          @limit, @mode, NULL, @note, @link, @ownerKey, 0
   WHERE NOT EXISTS (SELECT 1 FROM locks WHERE service = @service)
     AND NOT EXISTS (SELECT 1 FROM waiter_claims WHERE service = @service)
     AND NOT EXISTS (SELECT 1 FROM resources WHERE name = @service)
   RETURNING ${COLUMNS}`;

/** Whether a change to the service may let a waiter in (by name, or by a label it carries). */
export const MAY_GRANT = `SELECT EXISTS (SELECT 1 FROM waiter_claims WHERE service = @service)
    OR EXISTS (SELECT 1 FROM resources WHERE name = @service) AS may`;

/** The holders of a service, expired ones too (the pass deletes those, recording their expiry). */
export const HOLDERS = 'SELECT mode, max_holders, expires_at FROM locks WHERE service = @service';
export const HOLDER_LOCKS = `SELECT ${COLUMNS}, ${WAITING} FROM locks WHERE service = @service AND ${LIVE}
  ORDER BY created_at, id`;
export const RESOURCE = 'SELECT * FROM resources WHERE name = @name';
export const LABEL_MEMBERS = 'SELECT name FROM resource_labels WHERE label = @label ORDER BY name';
/** The requests with a claim naming the service (enough for a service that is not registered). */
export const NAMING = 'SELECT ticket FROM waiter_claims WHERE service = @service';
/** The requests with a claim on the service, by name or by one of its labels. */
export const TOUCHING = `SELECT DISTINCT c.ticket FROM waiter_claims c
  WHERE c.service = @service
     OR c.label IN (SELECT label FROM resource_labels WHERE name = @service)`;
export const WAITER = 'SELECT * FROM waiters WHERE ticket = @ticket';
export const CLAIMS = 'SELECT * FROM waiter_claims WHERE ticket = @ticket ORDER BY idx';
export const INSERT_CLAIM = `INSERT INTO waiter_claims (ticket, idx, service, label, mode, max_holders, quantity)
  VALUES (@ticket, @idx, @service, @label, @mode, @limit, @quantity)`;
export const GRANTED = `SELECT ${COLUMNS}, ${WAITING} FROM locks WHERE (id = @id OR group_id = @id) AND ${LIVE}
  ORDER BY member`;
export const GROUP_LOCKS = `SELECT ${COLUMNS}, owner_key FROM locks WHERE group_id = @id AND ${LIVE} ORDER BY member`;
export const REMOVE_ANY = `DELETE FROM locks WHERE id = @id RETURNING ${COLUMNS}`;
export const RENEW_ANY = `UPDATE locks
  SET ttl_seconds = coalesce(@ttl, ttl_seconds),
      expires_at = CASE WHEN coalesce(@ttl, ttl_seconds) IS NULL THEN NULL
                        ELSE @now + coalesce(@ttl, ttl_seconds) * 1000 END
  WHERE id = @id RETURNING id`;
export const UPSERT_RESOURCE = `INSERT INTO resources (name, labels, properties, capacity, description, source)
  VALUES (@name, @labels, @properties, @capacity, @description, @source)
  ON CONFLICT (name) DO UPDATE SET labels = excluded.labels, properties = excluded.properties,
    capacity = excluded.capacity, description = excluded.description, source = excluded.source`;
export const DELETE_RESOURCE = 'DELETE FROM resources WHERE name = @name';
export const SET_LIMIT = 'UPDATE locks SET max_holders = @limit WHERE service = @service';
export const DELETE_RESOURCE_LABELS = 'DELETE FROM resource_labels WHERE name = @name';
export const INSERT_RESOURCE_LABEL =
  'INSERT OR IGNORE INTO resource_labels (label, name) VALUES (@label, @name)';
export const ALL_RESOURCES = 'SELECT * FROM resources ORDER BY name';
export const RESOURCES_WITH_LABEL = `SELECT r.* FROM resources r JOIN resource_labels l ON l.name = r.name
  WHERE l.label = @label ORDER BY r.name`;
export const FILE_RESOURCES = "SELECT name FROM resources WHERE source = 'file'";
export const IS_HELD = `SELECT 1 AS held FROM locks WHERE service = @service AND ${LIVE} LIMIT 1`;

export const BY_ID = `SELECT ${COLUMNS}, ${WAITING} FROM locks WHERE id = @id AND ${LIVE}`;

/** Live requests waiting with the same first claim (what --max-waiters-per-service counts). */
export const COUNT_WAITERS =
  'SELECT count(*) AS n FROM waiters WHERE service = @service AND alive_until > @now';
export const DELETE_WAITER = 'DELETE FROM waiters WHERE ticket = @ticket RETURNING ticket';
export const INSERT_WAITER = `INSERT INTO waiters (service, who, ttl_seconds, lock_id, lock_owner, lock_owner_key, owner,
                     since, alive_until, priority, is_group, label, mode, note, link)
  VALUES (@service, @who, @ttl, @lockId, @lockOwner, @lockOwnerKey, @owner, @now, @aliveUntil,
          @priority, @isGroup, @label, @mode, @note, @link)
  RETURNING *`;
/** The live requests with a claim on the service (by name or one of its labels), in grant order. */
export const LIVE_WAITERS = `SELECT w.* FROM waiters w
  WHERE w.alive_until > @now AND w.ticket IN (${'SELECT c.ticket FROM waiter_claims c WHERE c.service = @service OR c.label IN (SELECT label FROM resource_labels WHERE name = @service)'})
  ORDER BY w.priority DESC, w.ticket`;
/** The live requests ahead of one in the line of its first claim. */
export const AHEAD_OF = `SELECT count(*) AS n FROM waiters
  WHERE service = @service AND alive_until > @now
    AND (priority > @priority OR (priority = @priority AND ticket < @ticket))`;
export const HEARTBEAT = 'UPDATE waiters SET alive_until = @aliveUntil WHERE owner = @owner';

export const REMOVE = `DELETE FROM locks WHERE id = @id AND ${LIVE} AND ${OWNED_BY} RETURNING ${COLUMNS}`;

/** A held lock's note (locks_event_noted records the change, migration 010). */
export const SET_NOTE = `UPDATE locks SET note = @note WHERE id = @id AND ${LIVE} AND ${OWNED_BY}
  RETURNING ${COLUMNS}`;

export const RENEW = `UPDATE locks
  SET ttl_seconds = coalesce(@ttl, ttl_seconds),
      expires_at = CASE WHEN coalesce(@ttl, ttl_seconds) IS NULL THEN NULL
                        ELSE @now + coalesce(@ttl, ttl_seconds) * 1000 END
  WHERE id = @id AND ${LIVE} AND ${OWNED_BY}
  RETURNING ${COLUMNS}`;

/**
 * A page of held locks and their count, for the filters given: one statement pair per
 * combination, so that `service` and `who` are index lookups in list order
 * (locks_service_created_at, locks_who_created_at, migration 009); an `@x IS NULL OR`
 * filter made every list a scan of the table. Binds only the parameters it names.
 */
export function listSql(filters: { service: boolean; who: boolean }): { page: string; count: string } {
  const where = [LIVE];
  if (filters.service) where.unshift('service = @service');
  if (filters.who) where.unshift('who = @who');
  const filter = where.join(' AND ');
  return {
    page: `SELECT ${COLUMNS}, ${WAITING} FROM locks WHERE ${filter}
  ORDER BY created_at, id LIMIT @limit OFFSET @offset`,
    count: `SELECT count(*) AS total FROM locks WHERE ${filter}`,
  };
}

export const PING = 'SELECT 1';
export const STATS = `SELECT (SELECT count(*) FROM locks WHERE ${LIVE}) AS locks,
  (SELECT count(*) FROM waiters WHERE alive_until > @now) AS waiters`;

export const SNAPSHOT = `SELECT ${COLUMNS}, ${WAITING} FROM locks
  WHERE (@service IS NULL OR service = @service) AND ${LIVE}
  ORDER BY created_at, id`;

/** A page of every held lock, in id order (the primary key). */
export const SNAPSHOT_PAGE = `SELECT ${COLUMNS}, ${WAITING} FROM locks
  WHERE id > @after AND ${LIVE} ORDER BY id LIMIT @limit`;
/** The same for one service: its lock, if its id is above `after`. */
export const SNAPSHOT_PAGE_OF_SERVICE = `SELECT ${COLUMNS}, ${WAITING} FROM locks
  WHERE service = @service AND id > @after AND ${LIVE} ORDER BY id LIMIT @limit`;

export const SWEEP_EXPIRED = `DELETE FROM locks WHERE id IN (
    SELECT id FROM locks WHERE expires_at <= @now ORDER BY expires_at LIMIT @limit)
  RETURNING ${COLUMNS}`;

/**
 * Waiters whose owner stopped its heartbeat: a grant skips them anyway; this drops those of
 * services nobody takes again (recorded as abandoned).
 */
export const DEAD_WAITERS = 'SELECT ticket FROM waiters WHERE alive_until <= @now LIMIT @limit';

export const EVENTS_AFTER = 'SELECT * FROM lock_events WHERE id > @after ORDER BY id LIMIT @limit';
export const LAST_EVENT_ID = "SELECT seq FROM sqlite_sequence WHERE name = 'lock_events'";
export const PRUNED_THROUGH = 'SELECT pruned_through FROM history_state';
export const PRUNE_EVENTS = `DELETE FROM lock_events WHERE id IN (
    SELECT id FROM lock_events WHERE at < @cutoff ORDER BY at LIMIT @limit)
  RETURNING id`;
export const RECORD_PRUNED = 'UPDATE history_state SET pruned_through = max(pruned_through, @through)';

/**
 * The history query for the filters given: one statement per combination, so that each
 * uses the index of its most selective filter (an `@x IS NULL OR` filter defeats the
 * planner). Binds only the parameters it names.
 */
export function historySql(filters: {
  service: boolean;
  who: boolean;
  since: boolean;
  until: boolean;
  before: boolean;
}): string {
  const where = ['true'];
  if (filters.service) where.push('service = @service');
  if (filters.who) where.push('who = @who');
  if (filters.since) where.push('at >= @since');
  if (filters.until) where.push('at < @until');
  if (filters.before) where.push('id < @before');
  return `SELECT * FROM lock_events WHERE ${where.join(' AND ')} ORDER BY id DESC LIMIT @limit`;
}

/** An idempotency key's row (migration 006). */
export interface KeyRow {
  scope: string;
  key: string;
  fingerprint: string;
  lock_id: string;
  service: string;
  attempt: string;
  granted: number;
  created_at: number;
}

export const KEY_BY_NAME = 'SELECT * FROM idempotency_keys WHERE scope = @scope AND key = @key';
export const INSERT_KEY = `INSERT INTO idempotency_keys (scope, key, fingerprint, lock_id, service, attempt, created_at)
  VALUES (@scope, @key, @fingerprint, @lockId, @service, @attempt, @now)`;
export const KEY_ATTEMPT =
  'UPDATE idempotency_keys SET attempt = @attempt WHERE scope = @scope AND key = @key';
/** Once granted under a key, a lock id is never granted again (see the acquire). */
export const KEY_GRANTED = 'UPDATE idempotency_keys SET granted = 1 WHERE lock_id = @lockId';

/** A retry of a waiting request takes its place in line: its process now keeps it alive. */
export const REJOIN = `UPDATE waiters SET owner = @owner, alive_until = @aliveUntil
  WHERE lock_id = @lockId RETURNING *`;

/**
 * Leaving, or releasing, on behalf of one attempt of a keyed request: not when a retry of it
 * has taken over (its key names another attempt).
 */
const STILL_MINE = (idColumn: string) =>
  `NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.lock_id = ${idColumn} AND k.attempt <> @attempt)`;
export const LEAVE_AS = `DELETE FROM waiters WHERE ticket = @ticket AND ${STILL_MINE('waiters.lock_id')}
  RETURNING ticket`;
export const REMOVE_AS = `DELETE FROM locks WHERE id = @id AND ${LIVE} AND ${OWNED_BY}
    AND ${STILL_MINE('coalesce(locks.group_id, locks.id)')}
  RETURNING ${COLUMNS}`;

/** Keys older than the retention whose lock is neither held nor waiting. */
export const PRUNE_KEYS = `DELETE FROM idempotency_keys WHERE rowid IN (
    SELECT k.rowid FROM idempotency_keys k
    WHERE k.created_at < @cutoff
      AND NOT EXISTS (SELECT 1 FROM locks WHERE locks.id = k.lock_id)
      AND NOT EXISTS (SELECT 1 FROM waiters WHERE waiters.lock_id = k.lock_id)
    LIMIT @limit)`;
