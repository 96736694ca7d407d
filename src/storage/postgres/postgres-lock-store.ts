import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { storeUnavailable } from '../../core/errors.js';
import {
  type AcquireRequest,
  type HistoryQuery,
  isLockId,
  type ListRequest,
  type Lock,
  type LockEventRecord,
  type LockEventType,
  type LockPage,
  type Queue,
  type Waiter,
} from '../../core/lock.js';
import {
  type AcquireResult,
  type IdempotencyKey,
  type KeyRefusal,
  type LockStore,
  type OwnerMatch,
  type QueueRequest,
  WAITER_LEASE_MS,
} from '../../core/lock-store.js';
import type { Logger } from '../../core/logger.js';
import { readMigrations } from '../migrations.js';
import { ChangeFeed } from './change-feed.js';
import { isUnavailable } from './is-unavailable.js';
import { migrate } from './migrate.js';
import {
  ACQUIRE,
  type AcquireRow,
  CLAIM_KEY,
  CLEAR_DEAD,
  ENQUEUE,
  EVENT_CURSOR,
  EVENTS_AFTER,
  type EventRow,
  type EventsAfterRow,
  GET,
  GRANT,
  HEARTBEAT,
  HISTORY_FLOOR,
  historyQuery,
  type JsonLockRow,
  KEY_GRANTED,
  type KeyRow,
  LEAVE,
  LEAVE_AS,
  LIST,
  type ListRow,
  LOCK_SERVICE,
  type LockRow,
  MARK_FORCE_RELEASE,
  NEXT_XID,
  NOTIFY,
  PING,
  PRUNE,
  PRUNE_KEYS,
  QUEUE,
  QUEUE_HEAD,
  type QueueRow,
  REJOIN,
  RELEASE,
  RELEASE_ALONE,
  RELEASE_AS,
  RENEW,
  SERVICE_OF,
  SERVICE_STATE,
  type ServiceStateRow,
  SNAPSHOT,
  SNAPSHOT_PAGE,
  SNAPSHOT_XMIN,
  STATS,
  SWEEP,
  SWEEP_WAITERS,
  TAKE_KEY,
  UNMARK_FORCE_RELEASE,
  type WaiterRow,
} from './queries.js';

export interface PostgresStoreOptions {
  /**
   * `postgres://` or `postgresql://` URL. Its query parameters are node-postgres's:
   * `sslmode`, `application_name`, `options` and the like are honoured.
   */
  readonly connectionString: string;
  /** Most connections the pool opens (default 10). */
  readonly poolSize?: number;
  /** Longest wait for a new connection to the server, in ms (default 1500). */
  readonly connectTimeoutMs?: number;
  /**
   * Longest a request waits for a pooled connection while all are busy, in ms (default
   * 10,000): a burst (a thousand requests joining one queue at once) waits its turn instead
   * of failing, while an unreachable server still fails within the connect timeout.
   */
  readonly poolTimeoutMs?: number;
  /**
   * Longest a statement may run, in ms (default 1500): the server cancels it
   * (`statement_timeout`), and the client gives up shortly after if the server stays
   * silent (`query_timeout`). Also the `idle_in_transaction_session_timeout`.
   */
  readonly statementTimeoutMs?: number;
  /**
   * Schema holding Tracker's tables, created if missing (default: none set, so the
   * server's search_path, usually `public`). A lower-case SQL identifier; tests use one
   * each for isolation.
   */
  readonly schema?: string;
  /** Pool and LISTEN connection errors (warn), migrations applied (info), acquire retries (debug). */
  readonly logger: Logger;
}

const MIGRATIONS = new URL('./migrations/', import.meta.url);
const CONNECTION_URL = /^postgres(ql)?:\/\//;
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Margin of the client-side query_timeout over statement_timeout, in ms: the server's own
 * cancel should win and keep the connection; the client timer catches a silent network.
 */
const QUERY_TIMEOUT_MARGIN_MS = 250;

/**
 * Default connect and statement timeout: with the margin above, a request answers 503
 * within 2 s when the database is unreachable or stalled.
 */
export const DEFAULT_TIMEOUT_MS = 1500;
const DEFAULT_POOL_TIMEOUT_MS = 10_000;

/**
 * An acquire runs again when the holder it conflicted with is newer than its snapshot
 * (see ACQUIRE). A run that returns nothing changed no lock (at most it consumed a fencing
 * token, which leaves a harmless gap), so running again or giving up is safe; giving up
 * takes a service changing hands this many times during one acquire.
 */
const ACQUIRE_ATTEMPTS = 5;

/**
 * How long a gap in the event ids may hold the tail up (see EVENTS_AFTER). A gap is final
 * as soon as every transaction running when it was seen has ended, which for Tracker's own
 * transactions (a few statements, each bounded by the statement timeout) takes
 * milliseconds. But "the oldest running transaction" is cluster-wide: an unrelated long
 * transaction, in any database of the server, would hold every gap open. After this long
 * the tail goes past the gap; an event committing even later stays in the history but is
 * not streamed (and is logged when met).
 */
const GAP_TIMEOUT_MS = 5000;

/**
 * The shared store: any number of Tracker replicas on one PostgreSQL database. The
 * database decides everything: the unique constraint picks the winner, its clock
 * (tracker_now(), see migration 002) stamps createdAt and decides expiry, its services
 * table hands out fencing tokens. Migrations run before the pool opens its first connection.
 */
/**
 * Opens the shared store: migrates the schema (under an advisory lock, so replicas starting
 * together apply each migration once), then opens the pool.
 */
export async function openPostgresLockStore(options: PostgresStoreOptions): Promise<PostgresLockStore> {
  const config = clientConfig(options);
  const schemaVersion = await guard(() =>
    migrate(config, readMigrations(MIGRATIONS), options.schema, options.logger),
  );
  return new PostgresLockStore(config, schemaVersion, options);
}

/**
 * The shared store: any number of Tracker replicas on one PostgreSQL database. The
 * database decides everything: the unique constraint picks the winner, its clock
 * (tracker_now(), see migration 002) stamps createdAt and decides expiry, its services
 * table hands out fencing tokens.
 */
export class PostgresLockStore implements LockStore {
  /** The schema version in force once the store opened (the highest migration applied). */
  readonly schemaVersion: number;
  readonly #pool: pg.Pool;
  readonly #changes: ChangeFeed;
  readonly #logger: Logger;
  /**
   * Gaps met in the event ids, by first missing id: a transaction id above every one handed
   * out when the gap was seen (NEXT_XID), and when it was seen.
   */
  readonly #gaps = new Map<number, { bound: bigint; since: number }>();

  constructor(config: pg.ClientConfig, schemaVersion: number, options: PostgresStoreOptions) {
    this.schemaVersion = schemaVersion;
    const logger = options.logger;
    this.#logger = logger;
    // pg's Pool waits for a free connection as long as a new one may take to connect (one
    // connectionTimeoutMillis for both): the pool gets the longer wait, each new connection
    // (a Client of its own class) keeps the connect timeout.
    const connectTimeoutMs = config.connectionTimeoutMillis;
    class Client extends pg.Client {
      constructor(clientConfig?: pg.ClientConfig) {
        super({ ...clientConfig, connectionTimeoutMillis: connectTimeoutMs });
      }
    }
    const pool = new pg.Pool({
      ...config,
      Client,
      connectionTimeoutMillis: options.poolTimeoutMs ?? DEFAULT_POOL_TIMEOUT_MS,
      max: options.poolSize ?? 10,
    });
    this.#pool = pool;
    // A connection that fails (server restart, network cut) emits 'error' on its client, and
    // the pool re-emits it for idle ones; an unhandled 'error' kills the process. Each client
    // gets a listener of its own when it connects, so one checked out for a transaction is
    // covered too (its query rejects as well); the pool's copy is then redundant.
    pool.on('error', () => {});

    // Backend pids of the pool's connections: their NOTIFYs are this process's own changes,
    // already emitted locally after commit (see ChangeFeed).
    const own = new Set<number>();
    const pidOf = (client: pg.ClientBase) => (client as unknown as { processID: number | null }).processID;
    pool.on('connect', (client) => {
      client.on('error', (error) => logger.warn({ err: error }, 'postgres connection lost'));
      const pid = pidOf(client);
      if (pid !== null) own.add(pid);
    });
    pool.on('remove', (client) => {
      const pid = pidOf(client);
      if (pid !== null) own.delete(pid);
    });
    this.#changes = new ChangeFeed(config, own, logger);
  }

  async #query<Row extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<Row[]> {
    return (await this.#pool.query<Row>(text, values)).rows;
  }

  /**
   * Runs `work` in one transaction on one pooled connection and returns its result after
   * COMMIT. On any failure the connection is discarded, not returned to the pool: closing
   * it rolls back on the server and frees every row lock, and a connection whose query
   * timed out on the client is in no state to be reused.
   */
  async #transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      client.release();
      return result;
    } catch (error) {
      client.release(error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
  }

  /**
   * Under LOCK_SERVICE: if nobody holds the service (an expired row is deleted first),
   * grants it to its oldest live waiter (dead ones are deleted on the way) and returns
   * that lock; otherwise null.
   */
  async #grantNext(client: pg.PoolClient, service: string): Promise<Lock | null> {
    await client.query(CLEAR_DEAD, [service]);
    const state = (await rowsOf<ServiceStateRow>(client, SERVICE_STATE, [service]))[0];
    if (!state || state.held || !state.queued) return null;
    const head = (await rowsOf<{ ticket: string }>(client, QUEUE_HEAD, [service]))[0];
    if (!head) return null;
    const granted = (await rowsOf<LockRow>(client, GRANT, [service, head.ticket]))[0];
    if (!granted) throw new Error(`waiter ${head.ticket} of ${service} vanished while locked`);
    await client.query(NOTIFY, [service]);
    return toLock(granted);
  }

  acquire(request: AcquireRequest, queue?: QueueRequest): Promise<AcquireResult>;
  acquire(
    request: AcquireRequest,
    queue: QueueRequest | undefined,
    key: IdempotencyKey | undefined,
  ): Promise<AcquireResult | KeyRefusal>;
  acquire(
    request: AcquireRequest,
    queue?: QueueRequest,
    key?: IdempotencyKey,
  ): Promise<AcquireResult | KeyRefusal> {
    return guard(() => (key ? this.#acquireKeyed(request, queue, key) : this.#acquire(request, queue)));
  }

  async #acquire(request: AcquireRequest, queue: QueueRequest | undefined): Promise<AcquireResult> {
    const { id, service, who, ttlSeconds } = request;
    const owner = request.owner ?? null;
    const ownerKey = request.ownerKey ?? null;
    // The usual cases are one statement, no transaction: a free service nobody waits for is
    // taken, a held one refused when the request does not ask to wait. Anything else (a
    // queue to join, waiters to grant first, a holder that committed after the snapshot)
    // goes through the transaction below.
    const first = (
      await this.#query<AcquireRow>(ACQUIRE, [id, service, who, ttlSeconds, owner, ownerKey])
    )[0];
    if (first?.acquired) return { acquired: true, lock: toLock(first) };
    if (first && !queue) return { acquired: false, holder: toLock(first), waiter: null };
    if (!first)
      this.#logger.debug({ service, attempt: 0 }, 'acquire conflicted with a holder it cannot see; retrying');
    const { result, changed } = await this.#transaction((client) => this.#acquireIn(client, request, queue));
    if (changed) this.#changes.emit(service);
    return result;
  }

  /**
   * The acquire transaction's work, on `client` inside a transaction: under the service's
   * row lock, grants a free service to its queue first, then inserts, takes over or queues.
   */
  async #acquireIn(
    client: pg.PoolClient,
    request: AcquireRequest,
    queue: QueueRequest | undefined,
  ): Promise<{ result: AcquireResult; changed: boolean }> {
    const { id, service, who, ttlSeconds } = request;
    const owner = request.owner ?? null;
    const ownerKey = request.ownerKey ?? null;
    let changed = false;
    await client.query(LOCK_SERVICE, [service]);
    const state = (await rowsOf<ServiceStateRow>(client, SERVICE_STATE, [service]))[0];
    // A free service with live waiters goes to the oldest of them first: a newcomer
    // never overtakes the queue (it is then refused below, the waiter being the holder).
    if (state && !state.held && state.queued && (await this.#grantNext(client, service))) changed = true;
    for (let attempt = 1; attempt <= ACQUIRE_ATTEMPTS; attempt++) {
      const row = (
        await rowsOf<AcquireRow>(client, ACQUIRE, [id, service, who, ttlSeconds, owner, ownerKey])
      )[0];
      if (row?.acquired) {
        // Taking over an expired holder's row: no live waiter is queued (they would have
        // been granted first), so nobody on another replica needs telling.
        if (state?.occupied) changed = true;
        return { result: { acquired: true, lock: toLock(row) }, changed };
      }
      if (row) {
        const holder = toLock(row);
        if (!queue) return { result: { acquired: false, holder, waiter: null }, changed };
        const joined = (
          await rowsOf<WaiterRow>(client, ENQUEUE, [
            service,
            who,
            ttlSeconds,
            id,
            queue.owner,
            WAITER_LEASE_MS,
            owner,
            queue.maxWaiters ?? null,
            ownerKey,
          ])
        )[0];
        if (!joined) return { result: { acquired: false, holder, waiter: null, queueFull: true }, changed };
        return {
          result: {
            acquired: false,
            holder: { ...holder, waiters: holder.waiters + 1 },
            waiter: toWaiter(joined),
          },
          changed,
        };
      }
      this.#logger.debug({ service, attempt }, 'acquire conflicted with a holder it cannot see; retrying');
    }
    throw storeUnavailable(
      new Error(`service ${service} changed hands ${ACQUIRE_ATTEMPTS} times during one acquire`),
    );
  }

  /** An acquire with an idempotency key, in one transaction (see IdempotencyKey). */
  async #acquireKeyed(
    request: AcquireRequest,
    queue: QueueRequest | undefined,
    key: IdempotencyKey,
  ): Promise<AcquireResult | KeyRefusal> {
    const { service } = request;
    const { result, changed } = await this.#transaction(
      async (
        client,
      ): Promise<{
        result: AcquireResult | KeyRefusal;
        changed: boolean;
      }> => {
        const claimed = await rowsOf(client, CLAIM_KEY, [
          key.scope,
          key.key,
          key.fingerprint,
          request.id,
          service,
          key.attempt,
        ]);
        if (claimed.length > 0) {
          const fresh = await this.#acquireIn(client, request, queue);
          if (fresh.result.acquired) await client.query(KEY_GRANTED, [request.id]);
          return fresh;
        }
        const row = (await rowsOf<KeyRow>(client, TAKE_KEY, [key.scope, key.key, key.attempt]))[0];
        if (!row) throw new Error(`idempotency key ${key.key} vanished while claimed`);
        if (row.fingerprint !== key.fingerprint)
          return { result: { acquired: false as const, keyReused: true as const }, changed: false };
        const id = row.lock_id;
        await client.query(LOCK_SERVICE, [service]);
        const held = (await rowsOf<LockRow>(client, GET, [id]))[0];
        if (held)
          return { result: { acquired: true as const, lock: toLock(held), replayed: true }, changed: false };
        const waiter = queue
          ? (await rowsOf<WaiterRow>(client, REJOIN, [id, queue.owner, WAITER_LEASE_MS]))[0]
          : undefined;
        if (waiter) {
          // Still in line: the retry waits in the same place (granted first if its turn came).
          const granted = await this.#grantNext(client, service);
          if (granted?.id === id)
            return { result: { acquired: true as const, lock: granted, replayed: true }, changed: true };
          const holder = (await rowsOf<QueueRow>(client, QUEUE, [service]))[0]?.holder;
          if (!holder) throw new Error(`waiter ${waiter.ticket} of ${service} waits for nobody`);
          return {
            result: {
              acquired: false as const,
              holder: toLock(holder),
              waiter: toWaiter(waiter),
              replayed: true,
            },
            changed: granted !== null,
          };
        }
        if (row.granted)
          return { result: { acquired: false as const, ended: { lockId: id } }, changed: false };
        // The earlier request got nothing (refused, or it left the queue): a new acquire under its id.
        const anew = await this.#acquireIn(client, { ...request, id }, queue);
        if (anew.result.acquired) await client.query(KEY_GRANTED, [id]);
        return anew;
      },
    );
    if (changed) this.#changes.emit(service);
    return result;
  }

  async release(id: string, owner?: OwnerMatch, attempt?: string): Promise<Lock | null> {
    return isLockId(id) ? guard(() => this.#release(id, owner, attempt)) : null;
  }

  async #release(
    id: string,
    owner: OwnerMatch | undefined,
    attempt: string | undefined,
  ): Promise<Lock | null> {
    const byOwner = [owner?.key ?? null, owner?.name ?? null];
    // The usual case, a lock nobody waits for, is one statement (a release on behalf of one
    // attempt of a keyed request, rare, always takes the transaction).
    const alone =
      attempt === undefined ? (await this.#query<LockRow>(RELEASE_ALONE, [id, ...byOwner]))[0] : undefined;
    if (alone) {
      this.#changes.emit(alone.service);
      return toLock(alone);
    }
    const released = await this.#transaction(async (client) => {
      const found = (await rowsOf<{ service: string }>(client, SERVICE_OF, [id]))[0];
      if (!found) return null;
      await client.query(LOCK_SERVICE, [found.service]);
      // Under the row lock: null when a concurrent release or takeover got there first (or
      // the lock is another owner's, or a retry's).
      const row = (
        await rowsOf<LockRow>(
          client,
          attempt === undefined ? RELEASE : RELEASE_AS,
          attempt === undefined ? [id, ...byOwner] : [id, ...byOwner, attempt],
        )
      )[0];
      if (!row) return null;
      // Only a grant is news to another replica: with no live waiter nobody listens for this
      // service. NOTIFY is not free either: PostgreSQL serializes the commits of all
      // transactions that notify (measured: 4x fewer lock pairs per second with one on
      // every release).
      await this.#grantNext(client, row.service);
      return toLock(row);
    });
    if (released) this.#changes.emit(released.service);
    return released;
  }

  settle(service: string): Promise<Lock | null> {
    return guard(() => this.#settle(service));
  }

  async #settle(service: string): Promise<Lock | null> {
    // Cheap first look, outside any transaction: the usual answer is "nothing to do".
    const state = (await this.#query<ServiceStateRow>(SERVICE_STATE, [service]))[0];
    if (!state || state.held || !state.queued) return null;
    const granted = await this.#transaction(async (client) => {
      await client.query(LOCK_SERVICE, [service]);
      return this.#grantNext(client, service);
    });
    if (granted) this.#changes.emit(service);
    return granted;
  }

  leave(ticket: number, attempt?: string): Promise<boolean> {
    return guard(async () => {
      if (!Number.isSafeInteger(ticket) || ticket <= 0) return false;
      const gone = (
        await this.#query<{ service: string }>(
          attempt === undefined ? LEAVE : LEAVE_AS,
          attempt === undefined ? [ticket] : [ticket, attempt],
        )
      )[0];
      if (!gone) return false;
      this.#changes.emit(gone.service);
      return true;
    });
  }

  async forceRelease(id: string, reason: string | null): Promise<Lock | null> {
    if (!isLockId(id)) return null;
    return guard(async () => {
      const released = await this.#transaction(async (client) => {
        const found = (await rowsOf<{ service: string }>(client, SERVICE_OF, [id]))[0];
        if (!found) return null;
        await client.query(LOCK_SERVICE, [found.service]);
        await client.query(MARK_FORCE_RELEASE, [reason]);
        const row = (await rowsOf<LockRow>(client, RELEASE, [id, null, null]))[0];
        if (!row) return null;
        await client.query(UNMARK_FORCE_RELEASE);
        await this.#grantNext(client, row.service);
        return toLock(row);
      });
      if (released) this.#changes.emit(released.service);
      return released;
    });
  }

  sweep(limit: number): Promise<{ expired: Lock[]; granted: Lock[] }> {
    return guard(async () => {
      const expired = (await this.#query<LockRow>(SWEEP, [limit])).map(toLock);
      await this.#query(SWEEP_WAITERS, [limit]);
      const granted: Lock[] = [];
      // The sweep took no service lock: each service with waiters is granted the usual way.
      for (const service of new Set(expired.filter((lock) => lock.waiters > 0).map((lock) => lock.service))) {
        const lock = await this.#settle(service);
        if (lock) granted.push(lock);
      }
      return { expired, granted };
    });
  }

  async #nextXid(): Promise<bigint> {
    const row = (await this.#query<{ xid: string }>(NEXT_XID))[0];
    if (!row) throw new Error('NEXT_XID returned no row');
    return BigInt(row.xid);
  }

  readEvents(after: number, limit: number, settledThrough = after): Promise<LockEventRecord[]> {
    return guard(async () => {
      const rows = await this.#query<EventsAfterRow>(EVENTS_AFTER, [after, limit]);
      const bounds = rows[0];
      if (!bounds) throw new Error('EVENTS_AFTER returned no row');
      const xmin = BigInt(bounds.xmin);
      const gaps = this.#gaps;
      const events: LockEventRecord[] = [];
      const fresh: number[] = [];
      let expected = after + 1;
      let blocked = false;
      for (const row of rows) {
        if (row.id === null) break;
        const id = Number(row.id);
        const start = Math.max(expected, settledThrough + 1);
        if (id > start) {
          // Every gap in this page is noted now, so that gaps behind a blocking one age too.
          const gap = gaps.get(start);
          if (!gap) {
            fresh.push(start);
            blocked = true;
          } else if (!blocked && xmin < gap.bound) {
            if (Date.now() - gap.since < GAP_TIMEOUT_MS) blocked = true;
            else
              this.#logger.warn(
                { from: start, to: id - 1 },
                'event ids skipped after waiting for their transactions',
              );
          }
        }
        expected = id + 1;
        if (!blocked) events.push(toEvent(row));
      }
      if (fresh.length > 0) {
        const bound = await this.#nextXid();
        for (const start of fresh) gaps.set(start, { bound, since: Date.now() });
      }
      const through = events.at(-1)?.id ?? after;
      for (const start of gaps.keys()) if (start <= through) gaps.delete(start);
      return events;
    });
  }

  eventCursor(): Promise<number> {
    return guard(async () => {
      const row = (await this.#query<{ last: string }>(EVENT_CURSOR))[0];
      if (!row) throw new Error('EVENT_CURSOR returned no row');
      // Ids below `last` may belong to transactions still running: wait for every transaction
      // id handed out until now to end, so that whatever they record is visible to any read
      // that starts after this.
      const bound = await this.#nextXid();
      const deadline = Date.now() + GAP_TIMEOUT_MS;
      while (Date.now() < deadline) {
        const now = (await this.#query<{ xmin: string }>(SNAPSHOT_XMIN))[0];
        if (now && BigInt(now.xmin) >= bound) break;
        await delay(10);
      }
      return Number(row.last);
    });
  }

  queue(service: string): Promise<Queue> {
    return guard(async () => {
      const row = (await this.#query<QueueRow>(QUEUE, [service]))[0];
      return {
        service,
        holder: row?.holder ? toLock(row.holder) : null,
        waiters: (row?.waiters ?? []).map((waiter, index) => toWaiter({ ...waiter, position: index + 1 })),
      };
    });
  }

  heartbeat(owner: string): Promise<void> {
    return guard(async () => void (await this.#query(HEARTBEAT, [owner, WAITER_LEASE_MS])));
  }

  onChange(listener: (service: string) => void): () => void {
    return this.#changes.subscribe(listener);
  }

  /** A non-UUID cannot be a lock id; asking PostgreSQL would fail the uuid cast. */
  async get(id: string): Promise<Lock | null> {
    return isLockId(id) ? guard(async () => nullable(await this.#query<LockRow>(GET, [id]))) : null;
  }

  async renew(id: string, ttlSeconds: number | null, owner?: OwnerMatch): Promise<Lock | null> {
    if (!isLockId(id)) return null;
    return guard(async () =>
      nullable(await this.#query<LockRow>(RENEW, [id, ttlSeconds, owner?.key ?? null, owner?.name ?? null])),
    );
  }

  list(request: ListRequest): Promise<LockPage> {
    return guard(async () => {
      const offset = (request.page - 1) * request.perPage;
      const rows = await this.#query<ListRow>(LIST, [
        request.service ?? null,
        request.who ?? null,
        request.perPage,
        offset,
      ]);
      const locks: Lock[] = [];
      for (const row of rows) if (row.id !== null) locks.push(toLock(row));
      return { locks, total: Number(rows[0]?.total ?? 0) };
    });
  }

  snapshotPage({
    service,
    after,
    limit,
  }: {
    service?: string | undefined;
    after: string;
    limit: number;
  }): Promise<Lock[]> {
    // Ids are UUIDs: '' (from the start) is the smallest one.
    const from = after === '' ? '00000000-0000-0000-0000-000000000000' : after;
    return guard(async () =>
      (await this.#query<LockRow>(SNAPSHOT_PAGE, [service ?? null, from, limit])).map(toLock),
    );
  }

  snapshot(service?: string): Promise<Lock[]> {
    return guard(async () => (await this.#query<LockRow>(SNAPSHOT, [service ?? null])).map(toLock));
  }

  history(filter: HistoryQuery): Promise<LockEventRecord[]> {
    return guard(async () => {
      const { text, values } = historyQuery(filter);
      return (await this.#query<EventRow>(text, values)).map(toEvent);
    });
  }

  historyFloor(): Promise<number> {
    return guard(async () =>
      Number((await this.#query<{ pruned_through: string }>(HISTORY_FLOOR))[0]?.pruned_through ?? 0),
    );
  }

  pruneHistory(retentionMs: number, limit: number): Promise<number> {
    return guard(
      async () => (await this.#query<{ pruned: number }>(PRUNE, [retentionMs, limit]))[0]?.pruned ?? 0,
    );
  }

  pruneIdempotencyKeys(retentionMs: number, limit: number): Promise<number> {
    return guard(
      async () => (await this.#query<{ pruned: number }>(PRUNE_KEYS, [retentionMs, limit]))[0]?.pruned ?? 0,
    );
  }

  stats(): Promise<{ locks: number; waiters: number }> {
    return guard(
      async () =>
        (await this.#query<{ locks: number; waiters: number }>(STATS))[0] ?? { locks: 0, waiters: 0 },
    );
  }

  ping(): Promise<void> {
    return guard(async () => void (await this.#query(PING)));
  }

  async close(): Promise<void> {
    await this.#changes.close();
    await this.#pool.end();
  }
}

async function rowsOf<Row extends pg.QueryResultRow>(
  client: pg.PoolClient,
  text: string,
  values: unknown[],
): Promise<Row[]> {
  return (await client.query<Row>(text, values)).rows;
}

function clientConfig(options: PostgresStoreOptions): pg.ClientConfig {
  const { connectionString, schema } = options;
  if (!CONNECTION_URL.test(connectionString)) {
    throw new Error('the PostgreSQL connection string must start with postgres:// or postgresql://');
  }
  if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
    throw new Error(`schema must be a lower-case SQL identifier, got ${JSON.stringify(schema)}`);
  }
  // node-postgres lets the URL's parameters override the config, so ours would be lost.
  if (schema !== undefined && new URL(connectionString).searchParams.has('options')) {
    throw new Error('set the schema either in the URL (options=-c search_path=...) or as `schema`, not both');
  }
  const statementTimeoutMs = options.statementTimeoutMs ?? DEFAULT_TIMEOUT_MS;
  return {
    connectionString,
    connectionTimeoutMillis: options.connectTimeoutMs ?? DEFAULT_TIMEOUT_MS,
    statement_timeout: statementTimeoutMs,
    query_timeout: statementTimeoutMs + QUERY_TIMEOUT_MARGIN_MS,
    idle_in_transaction_session_timeout: statementTimeoutMs,
    // Notices a peer that vanished without closing the connection (a cut, a crashed host).
    keepAlive: true,
    fallback_application_name: 'tracker',
    ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
  };
}

function toLock(row: LockRow | JsonLockRow): Lock {
  return {
    id: row.id,
    service: row.service,
    who: row.who,
    createdAt: new Date(Number(row.created_ms)),
    ttlSeconds: row.ttl_seconds,
    expiresAt: row.expires_ms === null ? null : new Date(Number(row.expires_ms)),
    fencingToken: safeInteger(row.fencing_token, 'fencing token'),
    waiters: Number(row.waiters),
    owner: row.owner,
  };
}

function toEvent(row: EventRow): LockEventRecord {
  return {
    id: safeInteger(row.id, 'event id'),
    type: row.type as LockEventType,
    at: new Date(Number(row.at_ms)),
    lockId: row.lock_id,
    service: row.service,
    who: row.who,
    createdAt: new Date(Number(row.created_ms)),
    ttlSeconds: row.ttl_seconds,
    expiresAt: row.expires_ms === null ? null : new Date(Number(row.expires_ms)),
    fencingToken: row.fencing_token === null ? null : safeInteger(row.fencing_token, 'fencing token'),
    waiters: row.waiters,
    owner: row.owner,
    heldMs: row.held_ms === null ? null : Number(row.held_ms),
    reason: row.reason,
  };
}

function toWaiter(row: WaiterRow): Waiter {
  return {
    ticket: safeInteger(row.ticket, 'ticket'),
    lockId: row.lock_id,
    service: row.service,
    who: row.who,
    since: new Date(Number(row.since_ms)),
    position: Number(row.position),
  };
}

/**
 * A bigint column arrives as a string (a number inside JSON); tokens and tickets stay far
 * below 2^53 (one per acquire).
 */
function safeInteger(value: string | number, what: string): number {
  const integer = Number(value);
  if (!Number.isSafeInteger(integer)) throw new Error(`${what} ${value} is beyond 2^53`);
  return integer;
}

function nullable(rows: LockRow[]): Lock | null {
  const row = rows[0];
  return row ? toLock(row) : null;
}

/** Database unreachable or too slow → STORE_UNAVAILABLE; anything else is a bug, rethrown. */
async function guard<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (isUnavailable(error)) throw storeUnavailable(error);
    throw error;
  }
}
