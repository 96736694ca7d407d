// The PostgreSQL side of the bench: one fresh database per run, created through an admin
// connection (TRACKER_BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432/test) and
// dropped WITH (FORCE) at the end, whatever happened.
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export const DEFAULT_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/test';
/** Bounds on the admin connection: connecting, then each statement. */
const CONNECT_TIMEOUT_MS = 5_000;
const STATEMENT_TIMEOUT_MS = 30_000;

export interface BenchDatabase {
  /** e.g. tracker_bench_3f9a0c1d2e4b */
  name: string;
  /** The admin URL pointing at the new database (same user, host and parameters). */
  url: string;
  /** Drops the database WITH (FORCE); runs once however often it is called, never throws. */
  drop(): Promise<void>;
}

/** The admin URL of the environment, or the default. */
export function adminUrl(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.TRACKER_BENCH_PG_URL;
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : DEFAULT_ADMIN_URL;
}

/** `postgres://user:secret@host/db` → `postgres://user:***@host/db`, to print. */
export function maskPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password === '') return url;
    parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable URL)';
  }
}

/** Runs one statement on a short-lived admin connection; every step is time-bounded. */
async function runAdmin(url: string, sql: string): Promise<void> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    query_timeout: STATEMENT_TIMEOUT_MS,
    statement_timeout: STATEMENT_TIMEOUT_MS,
    application_name: 'tracker-bench',
  });
  // Without a listener an 'error' event (server gone mid-session) kills the process.
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query(sql);
  } finally {
    await Promise.race([client.end().catch(() => {}), sleep(1_000)]);
  }
}

/**
 * Creates `tracker_bench_<12 hex>` on the server of `admin`. Rejects (with the reason in
 * one line, password masked) when the server cannot be reached or refuses.
 */
export async function createBenchDatabase(admin: string): Promise<BenchDatabase> {
  let url: URL;
  try {
    url = new URL(admin);
  } catch {
    throw new Error(`TRACKER_BENCH_PG_URL is not a URL: ${maskPassword(admin)}`);
  }
  if (!/^postgres(ql)?:$/.test(url.protocol)) {
    throw new Error(`TRACKER_BENCH_PG_URL must start with postgres://: ${maskPassword(admin)}`);
  }
  const name = `tracker_bench_${randomBytes(6).toString('hex')}`;
  try {
    await runAdmin(admin, `CREATE DATABASE "${name}"`);
  } catch (err) {
    throw new Error(`cannot create a database through ${maskPassword(admin)}: ${describe(err)}`);
  }
  url.pathname = `/${name}`;
  let dropped: Promise<void> | undefined;
  const drop = () => {
    dropped ??= runAdmin(admin, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).catch((err: unknown) => {
      process.stderr.write(`bench: could not drop the database ${name}: ${describe(err)}\n`);
    });
    return dropped;
  };
  return { name, url: url.toString(), drop };
}

/** One line out of a pg / net error (ECONNREFUSED on a dual-stack host is an AggregateError). */
export function describe(err: unknown): string {
  if (err instanceof AggregateError && err.message === '') {
    return err.errors.map(describe).join('; ');
  }
  const error = err as { message?: unknown; code?: unknown } | undefined;
  const message = typeof error?.message === 'string' && error.message !== '' ? error.message : String(err);
  const code = typeof error?.code === 'string' && !message.includes(error.code) ? ` (${error.code})` : '';
  return `${message.split('\n')[0]}${code}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
