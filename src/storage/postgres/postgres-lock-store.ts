import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { storeUnavailable } from '../../core/errors.js';
import { decide, decideGrants, everGrantable, type Grant, limitMismatch } from '../../core/grants.js';
import {
  type AcquireRequest,
  type Claim,
  claimsOf,
  type HistoryQuery,
  isLockId,
  type ListRequest,
  type Lock,
  type LockEventRecord,
  type LockEventType,
  type LockMode,
  type LockPage,
  type Queue,
  type Resource,
  type ResourceSpec,
  stolenByOf,
  type Waiter,
} from '../../core/lock.js';
import {
  type AcquireResult,
  type IdempotencyKey,
  type KeyRefusal,
  type LockStore,
  type OwnerMatch,
  type QueueRequest,
  type StealRequest,
  WAITER_LEASE_MS,
} from '../../core/lock-store.js';
import type { Logger } from '../../core/logger.js';
import type { WebhookStore } from '../../core/webhooks.js';
import { readMigrations } from '../migrations.js';
import { ChangeFeed } from './change-feed.js';
import { GrantState, NEW_TICKET, WAITERS_PER_READ } from './grant-state.js';
import { isUnavailable } from './is-unavailable.js';
import { migrate } from './migrate.js';
import {
  BATCH,
  type BatchResult,
  type BatchRow,
  CLAIM_KEY,
  DEADLOCK_DETECTED,
  DELETE_RESOURCE,
  ENQUEUE,
  EVENT_CURSOR,
  EVENTS_AFTER,
  type EventRow,
  type EventsAfterRow,
  EXPIRED_SERVICES,
  FILE_RESOURCES_BUT,
  GET,
  GET_RESOURCE,
  GRANT,
  GRANT_STATE,
  GRANTED,
  GROUP_SERVICES,
  type GrantRow,
  type GroupChangeRow,
  HEARTBEAT,
  HISTORY_FLOOR,
  HOLDERS,
  historyQuery,
  type KeyRow,
  LABEL_MEMBERS,
  LEAVE,
  LEAVE_AS,
  LEAVE_PLAIN,
  LIST,
  LIST_RESOURCES,
  type ListRow,
  LOCK_NOT_AVAILABLE,
  LOCK_SERVICES,
  type LockRow,
  MARK_FORCE_RELEASE,
  MARK_STEAL,
  NEXT_XID,
  NOTIFY,
  PEEK_STATE,
  PING,
  type PlainRow,
  PRUNE,
  PRUNE_KEYS,
  PUT_RESOURCE,
  QUEUES,
  type QueueRow,
  REJOIN,
  RELEASE,
  RELEASE_AS,
  RELEASE_GROUP,
  RELEASE_PLAIN,
  RENEW,
  RENEW_GROUP,
  RESOURCE_LABELS,
  type ResourceRow,
  SERVICE_OF,
  SET_NOTE,
  SNAPSHOT,
  SNAPSHOT_PAGE,
  SNAPSHOT_XMIN,
  STATS,
  type StateRow,
  SWEEP_WAITERS,
  TAKE_KEY,
  UNMARK_FORCE_RELEASE,
  UNMARK_STEAL,
  type WaiterRow,
} from './queries.js';
import { postgresWebhooks } from './webhooks.js';

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
  /**
   * `synchronous_commit` for the store's sessions (default: none set, so the database's
   * own). `off` answers before the commit's WAL record is flushed: a database crash may lose
   * the last commits (never corrupt them); an opt-in trade, never the default.
   */
  readonly synchronousCommit?: 'on' | 'off' | 'local' | 'remote_write' | 'remote_apply';
  /**
   * Most batches of plain acquires and releases in flight at once (default
   * DEFAULT_BATCHES, at most poolSize - 1 so that one connection stays for everything else).
   * Ops asked while every batch is in flight wait and go together in the next one.
   */
  readonly batchConcurrency?: number;
  /** Most ops in one batch (default DEFAULT_BATCH_SIZE). */
  readonly batchSize?: number;
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
 * Batches in flight at once, by default. Measured on 2 cores (one process, 16 and 64
 * callers each alternating acquire and release): 2 keeps one batch running while another
 * commits, 1.4 to 2.6 times the pairs/s of 1; 3 gave no more (smaller batches, more
 * round trips).
 */
export const DEFAULT_BATCHES = 2;
/**
 * Most ops in one batch, by default: each op is a subtransaction, and PostgreSQL keeps up to
 * 64 of them per transaction in shared memory (beyond that, every snapshot taken meanwhile
 * gets slower), so a cap of 64 never overflows that cache.
 */
export const DEFAULT_BATCH_SIZE = 64;

/** SQLSTATEs an op of a batch may meet that its full, retried path would not: a deadlock, a row lock refused, a serialisation failure. */
const RETRY_ALONE = new Set(['40P01', '55P03', '40001']);

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
 * database decides everything: every transaction that may change who holds a service
 * first locks the service's `services` row (the rules in core/grants.ts then decide on
 * what it reads, and nothing can add a holder meanwhile), its clock (tracker_now(), see
 * migration 002) stamps createdAt and decides expiry, its services table hands out fencing
 * tokens.
 *
 * Every change that may let a waiter in (a release, an expiry, a waiter leaving, a settle,
 * a resource put) runs a grant pass (#grantPass) in the same transaction; the guide's
 * acquire and release, and a waiter leaving a held service, take one round trip when
 * nothing needs deciding (migration 008's tracker_acquire_plain, tracker_release_plain,
 * tracker_leave_plain).
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
  /** Plain acquires and releases waiting for a batch (see #batched). */
  #pending: BatchOp[] = [];
  #inFlight = 0;
  #flushScheduled = false;
  readonly #maxInFlight: number;
  readonly #batchSize: number;

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
    const poolSize = options.poolSize ?? 10;
    this.#maxInFlight = Math.max(1, Math.min(options.batchConcurrency ?? DEFAULT_BATCHES, poolSize - 1));
    this.#batchSize = Math.max(1, options.batchSize ?? DEFAULT_BATCH_SIZE);
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

  /** One statement in autocommit on a pooled connection; `name` makes it a prepared statement. */
  /** The webhooks (webhooks.ts): one guarded statement each, through the pool. */
  readonly webhooks: WebhookStore = postgresWebhooks(
    (text: string, values: unknown[]) => guard(() => this.#query(text, values)) as Promise<never[]>,
  );

  async #query<Row extends pg.QueryResultRow>(
    text: string,
    values: unknown[] = [],
    name?: string,
  ): Promise<Row[]> {
    return (await this.#pool.query<Row>(name === undefined ? { text, values } : { name, text, values })).rows;
  }

  /** Tells this process's subscribers at once (other processes hear the NOTIFY on commit). */
  #emit(services: Iterable<string>): void {
    for (const service of new Set(services)) this.#changes.emit(service);
  }

  /**
   * Answers a plain acquire or release from a batch: ops asked in the same event-loop turn,
   * and those asked while #maxInFlight batches are in flight, go to the database together as
   * one call of tracker_batch (migration 009), in one transaction. A lone op is sent at the
   * end of its turn (setImmediate), never held back waiting for company. A call that fails
   * fails each of its ops with STORE_UNAVAILABLE (nothing of it committed).
   */
  #batched(op: BatchInput): Promise<BatchResult> {
    return new Promise<BatchResult>((resolve, reject) => {
      this.#pending.push({ ...op, resolve, reject });
      this.#scheduleFlush();
    });
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#inFlight >= this.#maxInFlight || this.#pending.length === 0) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      while (this.#inFlight < this.#maxInFlight && this.#pending.length > 0) {
        // Spread over the free slots, so that batches overlap (one commits while another runs).
        const free = this.#maxInFlight - this.#inFlight;
        const size = Math.min(this.#batchSize, Math.ceil(this.#pending.length / free));
        const batch = this.#pending.splice(0, size);
        this.#inFlight++;
        void this.#send(batch).finally(() => {
          this.#inFlight--;
          this.#scheduleFlush();
        });
      }
    });
  }

  async #send(batch: readonly BatchOp[]): Promise<void> {
    let results: BatchResult[];
    try {
      const rows = await this.#query<BatchRow>(
        BATCH.text,
        [
          batch.map((op) => op.kind),
          batch.map((op) => op.id),
          batch.map((op) => (op.kind === 'acquire' ? op.service : null)),
          batch.map((op) => (op.kind === 'acquire' ? op.who : null)),
          batch.map((op) => (op.kind === 'acquire' ? op.ttlSeconds : null)),
          batch.map((op) => op.owner),
          batch.map((op) => op.ownerKey),
          batch.map((op) => (op.kind === 'acquire' ? op.wait : null)),
          batch.map((op) => (op.kind === 'release' ? op.attempt : null)),
        ],
        BATCH.name,
      );
      results = rows[0]?.results ?? [];
      if (results.length !== batch.length)
        throw new Error(`the batch answered ${results.length} results for ${batch.length} ops`);
    } catch (error) {
      // guard() makes an outage STORE_UNAVAILABLE; anything else failing the call is one too.
      const failure = isUnavailable(error) ? error : storeUnavailable(error);
      for (const op of batch) op.reject(failure);
      return;
    }
    for (const [index, op] of batch.entries()) op.resolve(results[index] as BatchResult);
  }

  /**
   * Runs `work` in one transaction on one pooled connection, after locking the `services`
   * rows of `names` (created when missing) in name order, and returns its result after
   * COMMIT. When `work` finds it needs more rows and one of them is locked (NeedMore), the
   * transaction rolls back and starts again with the larger set locked from the start; on
   * the last attempt `work` locks nothing more and decides with what it has. On any other
   * failure the connection is discarded, not returned to the pool: closing it rolls back on
   * the server and frees every row lock, and a connection whose query timed out on the
   * client is in no state to be reused.
   */
  async #locked<T>(names: Iterable<string>, work: (tx: Locked) => Promise<T>): Promise<T> {
    let set = sortedUnique(names);
    const client = await this.#pool.connect();
    let result: T;
    try {
      for (let attempt = 1; ; attempt++) {
        await client.query('BEGIN');
        await client.query(LOCK_SERVICES, [set, false]);
        try {
          result = await work({ client, locked: new Set(set), canExpand: attempt < LOCK_ATTEMPTS });
          await client.query('COMMIT');
          break;
        } catch (error) {
          const more = error instanceof NeedMore ? error.names : isDeadlock(error) ? [] : null;
          if (more === null || attempt >= LOCK_ATTEMPTS) throw error;
          await client.query('ROLLBACK');
          this.#logger.debug(
            { services: more, attempt },
            'grant pass needs more services locked; starting again',
          );
          set = sortedUnique([...set, ...more]);
        }
      }
    } catch (error) {
      client.release(error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
    client.release();
    return result;
  }

  /**
   * Reads the grant state of `names` into `state`: in a transaction that holds their rows
   * (`write`: expired holders and dead waiters are deleted first), or, without `write`, a
   * plain look that changes and locks nothing. Returns the expired locks it deleted.
   */
  async #readState(
    on: pg.PoolClient | null,
    state: GrantState,
    names: readonly string[],
    labels: readonly string[],
    write: boolean,
  ): Promise<Lock[]> {
    const cutoff = state.cutoff;
    const values = [names, labels, cutoff?.priority ?? null, cutoff?.ticket ?? null, WAITERS_PER_READ];
    const text = write ? GRANT_STATE : PEEK_STATE;
    const rows = on ? await rowsOf<StateRow>(on, text, values) : await this.#query<StateRow>(text, values);
    const json = rows[0]?.state;
    if (!json) throw new Error('the grant state query returned no row');
    state.merge(names, json);
    return json.expired.map(toLock);
  }

  /**
   * Reads what the waiters read so far (and `claims`) also use, level by level: in a
   * transaction (`tx`), after locking those rows without waiting (NeedMore when one is
   * locked or missing); without, as a plain look. Stops after EXPAND_LEVELS levels, or when
   * the transaction may lock no more: the waiters whose resources were not all read are
   * then not granted by this pass (see GrantState.pending).
   */
  async #readAround(
    tx: Locked | null,
    state: GrantState,
    claims: readonly Claim[],
    expired: Lock[],
  ): Promise<void> {
    for (let level = 0; level < EXPAND_LEVELS; level++) {
      const missing = state.missing(claims);
      if (missing.names.length === 0 && missing.labels.length === 0) return;
      if (tx && missing.names.length > 0) {
        if (!tx.canExpand) return;
        let ok = false;
        try {
          ok =
            (await rowsOf<{ ok: boolean }>(tx.client, LOCK_SERVICES, [missing.names, true]))[0]?.ok ?? false;
        } catch (error) {
          if (errorCode(error) === LOCK_NOT_AVAILABLE) throw new NeedMore(missing.names);
          throw error;
        }
        if (!ok) throw new NeedMore(missing.names);
        for (const name of missing.names) tx.locked.add(name);
      }
      expired.push(
        ...(await this.#readState(tx?.client ?? null, state, missing.names, missing.labels, tx !== null)),
      );
    }
  }

  /**
   * The grant pass, inside a #locked transaction: reads the state of every service locked
   * (and of what their waiters also use), asks decideGrants who is granted what, in grant
   * order, together with `request` (the acquire being made now, if any: after every waiter
   * of its priority), and writes the grants. Refuses `request` without a decision for a
   * label nothing carries or a limit its service is not held under (KeyRefusal).
   */
  async #grantPass(tx: Locked, request: NewRequest | null): Promise<PassResult> {
    const state = new GrantState();
    const claims = request?.claims ?? [];
    const labels = [...new Set(claims.flatMap((claim) => (claim.label === null ? [] : [claim.label])))];
    const expired = await this.#readState(tx.client, state, [...tx.locked].sort(), labels, true);
    await this.#readAround(tx, state, claims, expired);
    const granted = new Map<string, Lock[]>();
    const changed = new Set<string>();
    const waitingFor = new Map<string, readonly string[]>();
    const result = { state, granted, expired, changed, waitingFor };
    if (request) {
      for (const claim of claims) {
        if (claim.label !== null && (state.members.get(claim.label)?.length ?? 0) === 0) {
          return { ...result, refusal: { acquired: false, noSuchLabel: claim.label } };
        }
        if (claim.service === null || !state.read.has(claim.service)) continue;
        const limit = limitMismatch(state.view(claim.service), claim);
        if (limit !== null) {
          return {
            ...result,
            refusal: { acquired: false, limitMismatch: { service: claim.service, limit } },
          };
        }
      }
      // Claims that could not be granted together even on an idle store never will be.
      if (state.covers(claims) && !everGrantable(state.views(), claims)) {
        return { ...result, refusal: { acquired: false, unsatisfiable: true } };
      }
    }
    let waitersGranted = false;
    for (let round = 0; round < GRANT_ROUNDS; round++) {
      const pending = state.pending();
      if (request && !granted.has(request.id)) {
        const place = { priority: request.priority, ticket: NEW_TICKET };
        pending.push({
          key: request.id,
          ...place,
          claims,
          grantable: state.covers(claims) && state.inLine(place) && !state.impossible(claims),
        });
      }
      const decision = decide(state.views(), pending);
      for (const [key, names] of decision.waitingFor) waitingFor.set(key, names);
      const grants = decision.grants;
      if (grants.length === 0) break;
      const byKey = new Map([...state.waiters.values()].map((waiter) => [waiter.lockId, waiter]));
      const payload = grants.map((grant) => {
        const picks = grant.picks.map(({ service, mode, limit }) => ({ service, mode, limit }));
        const waiter = byKey.get(grant.key);
        if (waiter || !request) return { ticket: waiter?.ticket ?? null, picks };
        const { group, who, ttlSeconds, owner, ownerKey, note, link } = request.request;
        const single = { id: request.id, group: group === true, who, ttl: ttlSeconds };
        const about = { note: note ?? null, link: link ?? null };
        return {
          ticket: null,
          ...single,
          owner: owner ?? null,
          owner_key: ownerKey ?? null,
          ...about,
          picks,
        };
      });
      const written = (await rowsOf<GrantRow>(tx.client, GRANT, [JSON.stringify(payload)]))[0]?.result;
      if (!written) throw new Error('the grant statement returned no row');
      written.locks.forEach((locks, index) => {
        const grant = grants[index] as Grant;
        granted.set(grant.key, locks.map(toLock));
        for (const pick of grant.picks) {
          state.hold(pick.service, { mode: pick.mode, limit: pick.limit });
          changed.add(pick.service);
        }
        const waiter = byKey.get(grant.key);
        if (waiter) {
          state.waiters.delete(waiter.ticket);
          changed.add(waiter.service);
          waitersGranted = true;
        }
      });
      if (!written.vanished) break;
      // That waiter left while we decided: decide again without it (the grants written stand).
      const gone = byKey.get(grants[written.locks.length]?.key ?? '');
      if (gone) state.waiters.delete(gone.ticket);
    }
    // Only a grant to a waiter is news to another replica (its waiting room): NOTIFY is not
    // free either, PostgreSQL serializes the commits of the transactions that notify.
    if (waitersGranted) await tx.client.query(NOTIFY, [[...changed]]);
    return result;
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

  async #acquire(
    request: AcquireRequest,
    queue: QueueRequest | undefined,
  ): Promise<AcquireResult | KeyRefusal> {
    const claims = checkedClaims(request);
    if (request.claims === undefined && request.group !== true && !request.note && !request.link) {
      // The guide's acquire: one round trip when nothing needs deciding (see ACQUIRE_PLAIN).
      // Batched with the others pending (see #batched).
      const { id, service, who, ttlSeconds } = request;
      const plain = opResult(
        await this.#batched({
          kind: 'acquire',
          id,
          service,
          who,
          ttlSeconds,
          owner: request.owner ?? null,
          ownerKey: request.ownerKey ?? null,
          wait: queue !== undefined,
        }),
      );
      const locks = (plain?.locks ?? []).map(toLock);
      const [first] = locks;
      if (plain?.outcome === 'acquired' && first) return { acquired: true, lock: first, locks };
      if (plain?.outcome === 'refused' && first)
        return { acquired: false, holder: first, holders: locks, waiter: null };
    }
    const names = await this.#namesOf(claims);
    const { result, changed } = await this.#locked(names, (tx) =>
      this.#acquireIn(tx, request, claims, queue),
    );
    this.#emit(changed);
    return result;
  }

  /** The services to lock first for `claims`: those they name and the members of their labels. */
  async #namesOf(claims: readonly Claim[]): Promise<string[]> {
    const names = claims.flatMap((claim) => (claim.service === null ? [] : [claim.service]));
    const labels = [...new Set(claims.flatMap((claim) => (claim.label === null ? [] : [claim.label])))];
    if (labels.length > 0) {
      for (const row of await this.#query<{ names: string[] }>(LABEL_MEMBERS, [labels]))
        names.push(...row.names);
    }
    return names;
  }

  /**
   * The acquire transaction's work, inside #locked: a grant pass with the request; when it
   * is not granted, it joins the queue (if asked) and the answer names the holders.
   */
  async #acquireIn(
    tx: Locked,
    request: AcquireRequest,
    claims: readonly Claim[],
    queue: QueueRequest | undefined,
  ): Promise<{ result: AcquireResult | KeyRefusal; changed: Set<string> }> {
    const priority = request.priority ?? 0;
    const pass = await this.#grantPass(tx, { id: request.id, request, claims, priority });
    const { changed } = pass;
    if (pass.refusal) return { result: pass.refusal, changed };
    const mine = pass.granted.get(request.id);
    const [lock] = mine ?? [];
    if (mine && lock) return { result: { acquired: true, lock, locks: mine }, changed };
    const holders = await this.#holdersOf(tx.client, pass, request.id);
    const [holder] = holders;
    // Nobody holds anything in its way: what keeps it out waits for resources deleted since.
    if (!holder) return { result: { acquired: false, unsatisfiable: true }, changed };
    if (!queue) return { result: { acquired: false, holder, holders, waiter: null }, changed };
    const [first] = claims;
    const label = first?.service === null ? first.label : null;
    const joined = (
      await rowsOf<WaiterRow>(tx.client, ENQUEUE, [
        first?.service ?? first?.label ?? request.service,
        request.who,
        request.ttlSeconds,
        request.id,
        queue.owner,
        WAITER_LEASE_MS,
        request.owner ?? null,
        queue.maxWaiters ?? null,
        request.ownerKey ?? null,
        priority,
        request.group === true,
        label,
        first?.mode ?? 'exclusive',
        claims.map((c) => c.service),
        claims.map((c) => c.label),
        claims.map((c) => c.mode),
        claims.map((c) => c.limit),
        claims.map((c) => c.quantity),
        request.note ?? null,
        request.link ?? null,
      ])
    )[0];
    if (!joined)
      return { result: { acquired: false, holder, holders, waiter: null, queueFull: true }, changed };
    const mode = first?.mode ?? 'exclusive';
    const waiter = toWaiter({ ...joined, priority, mode, label, is_group: request.group === true });
    return { result: { acquired: false, holder, holders, waiter }, changed };
  }

  /**
   * The live holders a refusal names, oldest first: those of what the request waits for;
   * when those are free (an earlier waiter waits for them), those of every service the pass
   * read, among them what that waiter waits for.
   */
  async #holdersOf(client: pg.PoolClient, pass: PassResult, key: string): Promise<Lock[]> {
    for (const names of [pass.waitingFor.get(key) ?? [], [...pass.state.read]]) {
      if (names.length === 0) continue;
      const rows = await rowsOf<{ lock: LockRow }>(client, HOLDERS, [sortedUnique(names)]);
      if (rows.length > 0) return rows.map((row) => toLock(row.lock));
    }
    return [];
  }

  /** An acquire with an idempotency key, in one transaction (see IdempotencyKey). */
  async #acquireKeyed(
    request: AcquireRequest,
    queue: QueueRequest | undefined,
    key: IdempotencyKey,
  ): Promise<AcquireResult | KeyRefusal> {
    const claims = checkedClaims(request);
    const names = await this.#namesOf(claims);
    const { result, changed } = await this.#locked(
      names,
      async (tx): Promise<{ result: AcquireResult | KeyRefusal; changed: Set<string> }> => {
        const { client } = tx;
        const claimed = await rowsOf(client, CLAIM_KEY, [
          key.scope,
          key.key,
          key.fingerprint,
          request.id,
          request.service,
          key.attempt,
        ]);
        if (claimed.length > 0) return this.#acquireIn(tx, request, claims, queue);
        const row = (await rowsOf<KeyRow>(client, TAKE_KEY, [key.scope, key.key, key.attempt]))[0];
        if (!row) throw new Error(`idempotency key ${key.key} vanished while claimed`);
        if (row.fingerprint !== key.fingerprint)
          return { result: { acquired: false, keyReused: true }, changed: new Set() };
        const id = row.lock_id;
        const held = (await rowsOf<{ lock: LockRow }>(client, GRANTED, [id])).map((r) => toLock(r.lock));
        const [first] = held;
        if (first)
          return { result: { acquired: true, lock: first, locks: held, replayed: true }, changed: new Set() };
        const rejoined = queue
          ? (await rowsOf<WaiterRow>(client, REJOIN, [id, queue.owner, WAITER_LEASE_MS]))[0]
          : undefined;
        if (rejoined) {
          // Still in line: the retry waits in the same place (granted first if its turn came).
          const pass = await this.#grantPass(tx, null);
          const mine = pass.granted.get(id);
          const [lock] = mine ?? [];
          if (mine && lock)
            return { result: { acquired: true, lock, locks: mine, replayed: true }, changed: pass.changed };
          const holders = await this.#holdersOf(client, pass, id);
          const [holder] = holders;
          if (!holder) {
            // What it waits for was deleted since: it can never be granted.
            await client.query(LEAVE, [rejoined.ticket]);
            return { result: { acquired: false, unsatisfiable: true }, changed: pass.changed };
          }
          const waiter = toWaiter(rejoined);
          return {
            result: { acquired: false, holder, holders, waiter, replayed: true },
            changed: pass.changed,
          };
        }
        if (row.granted) return { result: { acquired: false, ended: { lockId: id } }, changed: new Set() };
        // The earlier request got nothing (refused, or it left the queue): a new acquire under its id.
        return this.#acquireIn(tx, { ...request, id }, claims, queue);
      },
    );
    this.#emit(changed);
    return result;
  }

  async release(id: string, owner?: OwnerMatch, attempt?: string): Promise<Lock | null> {
    if (!isLockId(id)) return null;
    return guard(async () => {
      const byOwner = [owner?.key ?? null, owner?.name ?? null] as const;
      // The usual case, a lock nobody waits for, goes in a batch (see #batched, RELEASE_PLAIN).
      const plain = opResult(
        await this.#batched({
          kind: 'release',
          id,
          ownerKey: byOwner[0],
          owner: byOwner[1],
          attempt: attempt ?? null,
        }),
      );
      if (plain === null) {
        // It met a deadlock or a busy row inside its batch: the one-op path decides.
        const alone = (await this.#query<PlainRow>(RELEASE_PLAIN, [id, ...byOwner, attempt ?? null]))[0]
          ?.result;
        return this.#afterReleasePlain(alone, id, byOwner, attempt);
      }
      return this.#afterReleasePlain(plain, id, byOwner, attempt);
    });
  }

  /** What a plain release's answer means: the lock released, none, or a release in a grant pass. */
  #afterReleasePlain(
    plain: PlainRow['result'] | undefined,
    id: string,
    byOwner: readonly [string | null, string | null],
    attempt: string | undefined,
  ): Promise<Lock | null> | Lock | null {
    const released = plain?.locks?.[0];
    if (plain?.outcome === 'released' && released) {
      const lock = toLock(released);
      this.#emit([lock.service]);
      return lock;
    }
    if (plain?.outcome !== 'general' || plain.service === undefined) return null;
    return this.#releaseLocked(plain.service, id, byOwner, attempt, undefined);
  }

  /**
   * Releases a lock of `service` and grants what that frees, in one transaction; with
   * `force`, records a force release with its reason.
   */
  async #releaseLocked(
    service: string,
    id: string,
    byOwner: readonly [string | null, string | null],
    attempt: string | undefined,
    force: { reason: string | null } | undefined,
  ): Promise<Lock | null> {
    const { lock, changed } = await this.#locked([service], async (tx) => {
      if (force) await tx.client.query(MARK_FORCE_RELEASE, [force.reason]);
      const row = (
        await rowsOf<{ lock: LockRow }>(
          tx.client,
          attempt === undefined ? RELEASE : RELEASE_AS,
          attempt === undefined ? [id, ...byOwner] : [id, ...byOwner, attempt],
        )
      )[0];
      if (!row) return { lock: null, changed: new Set<string>() };
      if (force) await tx.client.query(UNMARK_FORCE_RELEASE);
      const pass = await this.#grantPass(tx, null);
      return { lock: toLock(row.lock), changed: new Set([service, ...pass.changed]) };
    });
    this.#emit(changed);
    return lock;
  }

  async forceRelease(id: string, reason: string | null): Promise<Lock | null> {
    if (!isLockId(id)) return null;
    return guard(async () => {
      const found = (await this.#query<{ service: string }>(SERVICE_OF, [id]))[0];
      if (!found) return null;
      return this.#releaseLocked(found.service, id, [null, null], undefined, { reason });
    });
  }

  async steal(
    id: string,
    request: StealRequest,
    reason: string,
  ): Promise<{ stolen: Lock; lock: Lock } | null> {
    if (!isLockId(id)) return null;
    return guard(async () => {
      const found = (await this.#query<{ service: string }>(SERVICE_OF, [id]))[0];
      if (!found) return null;
      const { result, changed } = await this.#locked([found.service], async (tx) => {
        await tx.client.query(MARK_STEAL, [reason, request.id, request.who, request.owner]);
        const row = (await rowsOf<{ lock: LockRow }>(tx.client, RELEASE, [id, null, null]))[0];
        if (!row) return { result: null, changed: new Set<string>() };
        await tx.client.query(UNMARK_STEAL);
        const stolen = toLock(row.lock);
        // In its place, ahead of the queue: the same slot (mode, limit), a new token. The
        // service's holders are as many as before, so nobody else can be let in: no grant pass.
        const grant = {
          ticket: null,
          id: request.id,
          group: false,
          who: request.who,
          ttl: request.ttlSeconds,
          owner: request.owner,
          owner_key: request.ownerKey,
          note: request.note,
          link: null,
          picks: [{ service: stolen.service, mode: stolen.mode, limit: stolen.limit }],
        };
        const written = (await rowsOf<GrantRow>(tx.client, GRANT, [JSON.stringify([grant])]))[0]?.result;
        const taken = written?.locks[0]?.[0];
        if (!taken) throw new Error(`the steal of ${id} wrote no lock`);
        return { result: { stolen, lock: toLock(taken) }, changed: new Set([stolen.service]) };
      });
      this.#emit(changed);
      return result;
    });
  }

  settle(service: string | readonly string[]): Promise<Lock | null> {
    const services = typeof service === 'string' ? [service] : [...service];
    return guard(() => this.#settle(services));
  }

  async #settle(services: readonly string[]): Promise<Lock | null> {
    if (services.length === 0) return null;
    // A first look, without locks or a transaction: the usual answer is "nothing to grant".
    // Only a hint: whatever changes the answer afterwards runs a grant pass of its own.
    const peek = new GrantState();
    await this.#readState(null, peek, [...new Set(services)].sort(), [], false);
    await this.#readAround(null, peek, [], []);
    if (decideGrants(peek.views(), peek.pending()).length === 0) return null;
    const { first, changed } = await this.#locked(services, async (tx) => {
      const pass = await this.#grantPass(tx, null);
      return { first: [...pass.granted.values()][0]?.[0] ?? null, changed: pass.changed };
    });
    this.#emit(changed);
    return first;
  }

  leave(ticket: number, attempt?: string): Promise<boolean> {
    return guard(async () => {
      if (!Number.isSafeInteger(ticket) || ticket <= 0) return false;
      const plain = (await this.#query<PlainRow>(LEAVE_PLAIN, [ticket, attempt ?? null]))[0]?.result;
      if (plain?.outcome === 'left') {
        this.#emit(plain.services ?? []);
        return true;
      }
      if (plain?.outcome !== 'general') return false;
      // It may have kept others out (an exclusive waiter before shared ones, a group): take
      // it out and grant what that lets in, in one transaction.
      const { left, changed } = await this.#locked(plain.services ?? [], async (tx) => {
        const gone = (
          await rowsOf<{ service: string }>(
            tx.client,
            attempt === undefined ? LEAVE : LEAVE_AS,
            attempt === undefined ? [ticket] : [ticket, attempt],
          )
        )[0];
        if (!gone) return { left: false, changed: new Set<string>() };
        const pass = await this.#grantPass(tx, null);
        // The line behind it moved up: its replicas' waiting rooms look again.
        await tx.client.query(NOTIFY, [[gone.service]]);
        return { left: true, changed: new Set([gone.service, ...pass.changed]) };
      });
      this.#emit(changed);
      return left;
    });
  }

  sweep(limit: number): Promise<{ expired: Lock[]; granted: Lock[] }> {
    return guard(async () => {
      const services = (await this.#query<{ service: string }>(EXPIRED_SERVICES, [limit])).map(
        (row) => row.service,
      );
      let expired: Lock[] = [];
      let granted: Lock[] = [];
      if (services.length > 0) {
        // The expired holders are deleted (and their expiry recorded, once, by whichever
        // replica gets there first) in a grant pass over their services.
        const pass = await this.#locked(services, (tx) => this.#grantPass(tx, null));
        expired = pass.expired;
        granted = [...pass.granted.values()].flat();
        this.#emit(pass.changed);
      }
      await this.#query(SWEEP_WAITERS, [limit]);
      return { expired, granted };
    });
  }

  granted(requestId: string): Promise<Lock[]> {
    if (!isLockId(requestId)) return Promise.resolve([]);
    return guard(async () =>
      (await this.#query<{ lock: LockRow }>(GRANTED, [requestId])).map((row) => toLock(row.lock)),
    );
  }

  releaseGroup(groupId: string, owner?: OwnerMatch): Promise<{ locks: Lock[]; denied: boolean }> {
    if (!isLockId(groupId)) return Promise.resolve({ locks: [], denied: false });
    return guard(async () => {
      const services = (await this.#query<{ service: string }>(GROUP_SERVICES, [groupId])).map(
        (row) => row.service,
      );
      if (services.length === 0) return { locks: [], denied: false };
      const { locks, denied, changed } = await this.#locked(services, async (tx) => {
        const row = (
          await rowsOf<GroupChangeRow>(tx.client, RELEASE_GROUP, [
            groupId,
            owner?.key ?? null,
            owner?.name ?? null,
          ])
        )[0];
        const released = (row?.locks ?? []).map(toLock);
        if (!row || row.denied || released.length === 0) {
          return { locks: [], denied: row?.denied ?? false, changed: new Set<string>() };
        }
        const pass = await this.#grantPass(tx, null);
        return { locks: released, denied: false, changed: new Set([...services, ...pass.changed]) };
      });
      this.#emit(changed);
      return { locks, denied };
    });
  }

  renewGroup(
    groupId: string,
    ttlSeconds: number | null,
    owner?: OwnerMatch,
  ): Promise<{ locks: Lock[]; denied: boolean }> {
    if (!isLockId(groupId)) return Promise.resolve({ locks: [], denied: false });
    return guard(async () => {
      const row = (
        await this.#query<GroupChangeRow>(RENEW_GROUP, [
          groupId,
          ttlSeconds,
          owner?.key ?? null,
          owner?.name ?? null,
        ])
      )[0];
      return { locks: (row?.locks ?? []).map(toLock), denied: row?.denied ?? false };
    });
  }

  putResource(spec: ResourceSpec): Promise<{ resource: Resource; created: boolean }> {
    return guard(() => this.#putResource(spec, 'api'));
  }

  /** Creates or replaces a resource and lets its waiters in, in one transaction. */
  async #putResource(
    spec: ResourceSpec,
    source: 'api' | 'file',
  ): Promise<{ resource: Resource; created: boolean }> {
    const { created, changed } = await this.#locked([spec.name], async (tx) => {
      const row = (
        await rowsOf<{ created: boolean }>(tx.client, PUT_RESOURCE, [
          spec.name,
          JSON.stringify(spec.labels),
          JSON.stringify(spec.properties),
          spec.capacity,
          spec.description,
          source,
        ])
      )[0];
      const pass = await this.#grantPass(tx, null);
      return { created: row?.created ?? false, changed: pass.changed };
    });
    this.#emit(changed);
    const resource = (await this.#resources([spec]))[0];
    if (!resource) throw new Error(`resource ${spec.name} vanished after it was written`);
    return { resource, created };
  }

  deleteResource(name: string): Promise<'deleted' | 'missing' | 'in-use'> {
    return guard(async () => {
      const found = (await this.#query<{ labels: string[] }>(RESOURCE_LABELS, [name]))[0];
      if (!found) return 'missing';
      // Its label waiters may now be kept out of the label's other members, or no longer
      // keep others out of them: the pass covers those too.
      const names = [name, ...(await this.#namesOf(found.labels.map(labelClaim)))];
      const { outcome, changed } = await this.#locked(names, async (tx) => {
        const gone = await rowsOf(tx.client, DELETE_RESOURCE, [name]);
        if (gone.length === 0) {
          const exists = (await rowsOf(tx.client, RESOURCE_LABELS, [name])).length > 0;
          return { outcome: exists ? ('in-use' as const) : ('missing' as const), changed: new Set<string>() };
        }
        const pass = await this.#grantPass(tx, null);
        return { outcome: 'deleted' as const, changed: pass.changed };
      });
      this.#emit(changed);
      return outcome;
    });
  }

  getResource(name: string): Promise<Resource | null> {
    return guard(async () => {
      const row = (await this.#query<ResourceRow>(GET_RESOURCE, [name]))[0];
      return row ? ((await this.#resources([toSpec(row)]))[0] ?? null) : null;
    });
  }

  listResources(label?: string): Promise<Resource[]> {
    return guard(async () => {
      const rows = await this.#query<ResourceRow>(LIST_RESOURCES, [label ?? null]);
      return this.#resources(rows.map(toSpec));
    });
  }

  syncResources(specs: readonly ResourceSpec[]): Promise<{ kept: string[] }> {
    return guard(async () => {
      for (const spec of specs) await this.#putResource(spec, 'file');
      const kept: string[] = [];
      const stale = await this.#query<{ name: string }>(FILE_RESOURCES_BUT, [specs.map((spec) => spec.name)]);
      for (const { name } of stale) if ((await this.deleteResource(name)) === 'in-use') kept.push(name);
      return { kept };
    });
  }

  /** Registered resources with their holders and waiters (from one snapshot). */
  async #resources(specs: readonly ResourceSpec[]): Promise<Resource[]> {
    if (specs.length === 0) return [];
    const rows = await this.#query<QueueRow>(QUEUES, [specs.map((spec) => spec.name)]);
    const byName = new Map(rows.map((row) => [row.name, row]));
    return specs.map((spec) => {
      const row = byName.get(spec.name);
      return {
        ...spec,
        holders: (row?.holders ?? []).map(toLock),
        waiters: (row?.waiters ?? []).map((waiter, index) => toWaiter(waiter, index + 1)),
      };
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
      const row = (await this.#query<QueueRow>(QUEUES, [[service]]))[0];
      const holders = (row?.holders ?? []).map(toLock);
      return {
        service,
        holder: holders[0] ?? null,
        holders,
        waiters: (row?.waiters ?? []).map((waiter, index) => toWaiter(waiter, index + 1)),
      };
    });
  }

  heartbeat(owner: string): Promise<void> {
    return guard(async () => void (await this.#query(HEARTBEAT, [owner, WAITER_LEASE_MS])));
  }

  onChange(listener: (service: string) => void): () => void {
    return this.#changes.subscribe(listener);
  }

  onEvents(listener: () => void): () => void {
    return this.#changes.subscribeEvents(listener);
  }

  announceEvents(): void {
    this.#changes.announceEvents();
  }

  /** A non-UUID cannot be a lock id; asking PostgreSQL would fail the uuid cast. */
  async get(id: string): Promise<Lock | null> {
    return isLockId(id) ? guard(async () => nullable(await this.#query<{ lock: LockRow }>(GET, [id]))) : null;
  }

  async renew(id: string, ttlSeconds: number | null, owner?: OwnerMatch): Promise<Lock | null> {
    if (!isLockId(id)) return null;
    return guard(async () =>
      nullable(
        await this.#query<{ lock: LockRow }>(RENEW, [
          id,
          ttlSeconds,
          owner?.key ?? null,
          owner?.name ?? null,
        ]),
      ),
    );
  }

  async setNote(id: string, note: string | null, owner?: OwnerMatch): Promise<Lock | null> {
    if (!isLockId(id)) return null;
    return guard(async () =>
      nullable(
        await this.#query<{ lock: LockRow }>(SET_NOTE, [id, note, owner?.key ?? null, owner?.name ?? null]),
      ),
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
      for (const row of rows) if (row.lock !== null) locks.push(toLock(row.lock));
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
      (await this.#query<{ lock: LockRow }>(SNAPSHOT_PAGE, [service ?? null, from, limit])).map((row) =>
        toLock(row.lock),
      ),
    );
  }

  snapshot(service?: string): Promise<Lock[]> {
    return guard(async () =>
      (await this.#query<{ lock: LockRow }>(SNAPSHOT, [service ?? null])).map((row) => toLock(row.lock)),
    );
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

/** The connection settings of the store's sessions (exported for its tests). */
export function clientConfig(options: PostgresStoreOptions): pg.ClientConfig {
  const { connectionString, schema } = options;
  if (!CONNECTION_URL.test(connectionString)) {
    throw new Error('the PostgreSQL connection string must start with postgres:// or postgresql://');
  }
  if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
    throw new Error(`schema must be a lower-case SQL identifier, got ${JSON.stringify(schema)}`);
  }
  const settings = [
    ...(schema === undefined ? [] : [`-c search_path=${schema}`]),
    ...(options.synchronousCommit === undefined
      ? []
      : [`-c synchronous_commit=${options.synchronousCommit}`]),
  ];
  // node-postgres lets the URL's parameters override the config, so ours would be lost.
  if (settings.length > 0 && new URL(connectionString).searchParams.has('options')) {
    throw new Error(
      'set the schema and synchronous_commit either in the URL (options=-c ...) or as options, not both',
    );
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
    ...(settings.length === 0 ? {} : { options: settings.join(' ') }),
  };
}

/** A grant pass that needs more `services` rows locked than its transaction could take. */
class NeedMore extends Error {
  constructor(readonly names: readonly string[]) {
    super(`more services to lock: ${names.join(', ')}`);
  }
}

/** A transaction of #locked: its connection, the services whose rows it holds. */
interface Locked {
  readonly client: pg.PoolClient;
  readonly locked: Set<string>;
  /** False on the last attempt: the pass decides with the rows it holds. */
  readonly canExpand: boolean;
}

/** The acquire being made now, in a grant pass. */
interface NewRequest {
  readonly id: string;
  readonly request: AcquireRequest;
  readonly claims: readonly Claim[];
  readonly priority: number;
}

interface PassResult {
  readonly state: GrantState;
  /** The locks granted, by request key (a waiter's lock id, or the new request's id), in grant order. */
  readonly granted: Map<string, Lock[]>;
  /** The expired locks the pass deleted (and recorded). */
  readonly expired: Lock[];
  /** Services to announce: those that changed hands, and the granted waiters' shown services. */
  readonly changed: Set<string>;
  /** For each request not granted, the resources of the claims it could not get. */
  readonly waitingFor: ReadonlyMap<string, readonly string[]>;
  /** The new request refused without a decision (a label nothing carries, another limit). */
  readonly refusal?: KeyRefusal;
}

/** How many times a grant transaction starts again with more rows locked (see #locked). */
const LOCK_ATTEMPTS = 5;
/** How many times a pass reads further what its waiters also use. */
const EXPAND_LEVELS = 8;
/** How many times a pass decides again after a waiter it granted had just left. */
const GRANT_ROUNDS = 5;

function sortedUnique(names: Iterable<string>): string[] {
  return [...new Set(names)].sort();
}

function errorCode(error: unknown): unknown {
  return typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
}

function isDeadlock(error: unknown): boolean {
  return errorCode(error) === DEADLOCK_DETECTED;
}

/** The claims of a request; a request that is not a group takes one lock. */
function checkedClaims(request: AcquireRequest): readonly Claim[] {
  const claims = claimsOf(request);
  if (request.group !== true && claims.reduce((sum, claim) => sum + claim.quantity, 0) !== 1) {
    throw new Error('a request that is not a group takes exactly one lock');
  }
  return claims;
}

/** A claim on one resource carrying `label` (to find its members). */
function labelClaim(label: string): Claim {
  return { service: null, label, mode: 'exclusive', limit: null, quantity: 1 };
}

function toSpec(row: ResourceRow): ResourceSpec {
  const { name, labels, properties, capacity, description } = row.resource;
  return { name, labels, properties, capacity, description };
}

function toLock(row: LockRow): Lock {
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
    limit: row.limit,
    mode: row.mode as LockMode,
    groupId: row.group_id,
    resource: row.resource,
    note: row.note ?? null,
    link: row.link ?? null,
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
    groupId: row.group_id,
    mode: row.mode as LockMode,
    limit: row.max_holders,
    label: row.label,
    note: row.note,
    link: row.link,
    stolenBy: stolenByOf(row.type, row.by_lock_id, row.by_who, row.by_owner),
  };
}

function toWaiter(row: WaiterRow, position = row.position ?? 1): Waiter {
  return {
    ticket: safeInteger(row.ticket, 'ticket'),
    lockId: row.lock_id,
    service: row.service,
    who: row.who,
    since: new Date(Number(row.since_ms)),
    position,
    priority: row.priority ?? 0,
    mode: (row.mode ?? 'exclusive') as LockMode,
    label: row.label ?? null,
    groupId: row.is_group ? row.lock_id : null,
    note: row.note ?? null,
    link: row.link ?? null,
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

function nullable(rows: { lock: LockRow }[]): Lock | null {
  const row = rows[0];
  return row ? toLock(row.lock) : null;
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

/** A plain acquire or release, as #batched takes it. */
type BatchInput =
  | {
      readonly kind: 'acquire';
      readonly id: string;
      readonly service: string;
      readonly who: string;
      readonly ttlSeconds: number | null;
      readonly owner: string | null;
      readonly ownerKey: string | null;
      readonly wait: boolean;
    }
  | {
      readonly kind: 'release';
      readonly id: string;
      readonly owner: string | null;
      readonly ownerKey: string | null;
      readonly attempt: string | null;
    };

type BatchOp = BatchInput & {
  readonly resolve: (result: BatchResult) => void;
  readonly reject: (error: unknown) => void;
};

/**
 * An op's answer from its batch, as its plain function's: null when it met a deadlock or a
 * busy row (the caller takes the path it would take alone); an error it met otherwise is
 * thrown as node-postgres would have (guard then maps it).
 */
function opResult(result: BatchResult): PlainRow['result'] | null {
  if (result.outcome !== 'error') return result;
  if (RETRY_ALONE.has(result.code)) return null;
  throw Object.assign(new Error(result.message), { code: result.code });
}
