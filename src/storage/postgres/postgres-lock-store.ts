import pg from 'pg';
import { storeUnavailable } from '../../core/errors.js';
import { type AcquireRequest, isLockId, type Lock } from '../../core/lock.js';
import type { AcquireResult, LockStore } from '../../core/lock-store.js';
import { readMigrations } from '../migrations.js';
import { isUnavailable } from './is-unavailable.js';
import { migrate } from './migrate.js';
import {
  ACQUIRE,
  type AcquireRow,
  GET,
  LIST,
  type ListRow,
  type LockRow,
  PING,
  RELEASE,
  RENEW,
} from './queries.js';

type LogMethod = (details: object, message: string) => void;

/** What the store logs through; a pino or Fastify logger fits. */
export interface PostgresStoreLogger {
  readonly error: LogMethod;
  readonly warn: LogMethod;
  readonly info: LogMethod;
  readonly debug: LogMethod;
}

export interface PostgresStoreOptions {
  /**
   * `postgres://` or `postgresql://` URL. Its query parameters are node-postgres's:
   * `sslmode`, `application_name`, `options` and the like are honoured.
   */
  readonly connectionString: string;
  /** Most connections the pool opens (default 10). */
  readonly poolSize?: number;
  /** Longest wait for a connection, new or from a busy pool, in ms (default 1500). */
  readonly connectTimeoutMs?: number;
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
  /** Pool errors (warn), migrations applied (info), acquire retries (debug). */
  readonly logger: PostgresStoreLogger;
}

export type PostgresLockStore = LockStore & {
  /** The schema version in force once the store opened (the highest migration applied). */
  readonly schemaVersion: number;
};

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

/**
 * An acquire runs again when the holder it conflicted with is newer than its snapshot
 * (see ACQUIRE). A run that returns nothing changed no lock (at most it consumed a fencing
 * token, which leaves a harmless gap), so running again or giving up is safe; giving up
 * takes a service changing hands this many times during one acquire.
 */
const ACQUIRE_ATTEMPTS = 5;

/**
 * The shared store: any number of Tracker replicas on one PostgreSQL database. The
 * database decides everything: the unique constraint picks the winner, its clock
 * (tracker_now(), see migration 002) stamps createdAt and decides expiry, its services
 * table hands out fencing tokens. Migrations run before the pool opens its first connection.
 */
export async function openPostgresLockStore(options: PostgresStoreOptions): Promise<PostgresLockStore> {
  const { logger } = options;
  const config = clientConfig(options);
  const schemaVersion = await guard(() =>
    migrate(config, readMigrations(MIGRATIONS), options.schema, logger),
  );

  const pool = new pg.Pool({ ...config, max: options.poolSize ?? 10 });
  // An idle connection that fails (server restart, network cut) is dropped by the pool and
  // replaced on demand. Without this listener the 'error' event would kill the process.
  pool.on('error', (error) => logger.warn({ err: error }, 'postgres connection lost while idle'));

  const query = async <Row extends pg.QueryResultRow>(text: string, values: unknown[] = []) =>
    (await pool.query<Row>(text, values)).rows;

  async function acquire({ id, service, who, ttlSeconds }: AcquireRequest): Promise<AcquireResult> {
    for (let attempt = 1; attempt <= ACQUIRE_ATTEMPTS; attempt++) {
      const row = (await query<AcquireRow>(ACQUIRE, [id, service, who, ttlSeconds]))[0];
      if (row?.acquired) return { acquired: true, lock: toLock(row) };
      if (row) return { acquired: false, holder: toLock(row) };
      logger.debug({ service, attempt }, 'acquire conflicted with a holder it cannot see; retrying');
    }
    throw storeUnavailable(
      new Error(`service ${service} changed hands ${ACQUIRE_ATTEMPTS} times during one acquire`),
    );
  }

  return {
    schemaVersion,
    acquire: (request) => guard(() => acquire(request)),
    // A non-UUID cannot be a lock id; asking PostgreSQL would fail the uuid cast.
    get: async (id) => (isLockId(id) ? guard(async () => nullable(await query<LockRow>(GET, [id]))) : null),
    release: async (id) =>
      isLockId(id) ? guard(async () => nullable(await query<LockRow>(RELEASE, [id]))) : null,
    renew: async (id, ttlSeconds) =>
      isLockId(id) ? guard(async () => nullable(await query<LockRow>(RENEW, [id, ttlSeconds]))) : null,
    list: (request) =>
      guard(async () => {
        const offset = (request.page - 1) * request.perPage;
        const rows = await query<ListRow>(LIST, [
          request.service ?? null,
          request.who ?? null,
          request.perPage,
          offset,
        ]);
        const locks: Lock[] = [];
        for (const row of rows) if (row.id !== null) locks.push(toLock(row));
        return { locks, total: Number(rows[0]?.total ?? 0) };
      }),
    ping: () => guard(async () => void (await query(PING))),
    close: () => pool.end(),
  };
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

function toLock(row: LockRow): Lock {
  return {
    id: row.id,
    service: row.service,
    who: row.who,
    createdAt: new Date(Number(row.created_ms)),
    ttlSeconds: row.ttl_seconds,
    expiresAt: row.expires_ms === null ? null : new Date(Number(row.expires_ms)),
    fencingToken: fencingToken(row.fencing_token),
  };
}

/** A bigint column arrives as a string; tokens stay far below 2^53 (one per acquire). */
function fencingToken(value: string): number {
  const token = Number(value);
  if (!Number.isSafeInteger(token)) throw new Error(`fencing token ${value} is beyond 2^53`);
  return token;
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
