// The peers of `npm run bench`: the load generators that are not Node (wrk, pgbench,
// redis-benchmark), each run as a child process, and what their output says. run.ts pairs
// each Tracker figure with its peer's, measured in the same round by the same generator.
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { type Driver, type LoadResult, restDriver, runLoad } from './load.js';
import { REPO_ROOT } from './targets.js';

const WRK_SCRIPT = path.join(REPO_ROOT, 'bench', 'wrk', 'acquire-release.lua');
/** Time a generator may take beyond its own duration before it is killed. */
const GRACE_MS = 30_000;

/** One measured run of a load generator, in the units the Targets table compares. */
export interface PeerRun {
  /** Requests per second (REST: acquires + releases; pgbench, Redis, gRPC: 2 per pair). */
  requestsPerSec: number;
  /** Acquire + release pairs per second. */
  pairsPerSec: number;
  /** Latency of one request (wrk, redis-benchmark) or one pair (pgbench: its average). */
  p50Ms: number;
  p99Ms: number;
  /** Failed requests: socket errors, timeouts, unexpected statuses, aborted clients. */
  errors: number;
  /** What the generator said beyond the figures (e.g. how pairs/s was computed). */
  note?: string;
}

interface Output {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command (no shell) and collects its output; kills it after timeoutMs. */
function run(command: string, args: string[], timeoutMs: number, env?: NodeJS.ProcessEnv): Promise<Output> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-4_000);
    });
    const killer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(killer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(killer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Whether `command` can be run at all (on PATH, executable). */
export function available(command: string, versionFlag = '--version'): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(command, [versionFlag], { timeout: 5_000 }, (err) => {
      // wrk --version prints its version and exits 1: only "not found" counts as missing.
      resolve(err === null || (err as NodeJS.ErrnoException).code !== 'ENOENT');
    });
  });
}

// ---------------------------------------------------------------------------------------
// wrk: REST, acquire a fresh service name / release the id it got (bench/wrk/acquire-release.lua).

interface WrkJson {
  requests: number;
  durationUs: number;
  connectErrors: number;
  readErrors: number;
  writeErrors: number;
  statusErrors: number;
  timeouts: number;
  acquired: number;
  released: number;
  unexpected: number;
  p50Us: number;
  p99Us: number;
}

async function wrkOnce(url: string, connections: number, seconds: number, tag: string): Promise<WrkJson> {
  const args = [
    '-t1',
    `-c${connections}`,
    `-d${seconds}s`,
    '--timeout',
    '10s',
    '-s',
    WRK_SCRIPT,
    url,
    '--',
    tag,
  ];
  const output = await run('wrk', args, seconds * 1000 + GRACE_MS);
  const line = output.stdout.split('\n').find((text) => text.startsWith('WRK_JSON '));
  if (output.code !== 0 || line === undefined) {
    throw new Error(`wrk ${args.join(' ')} failed (code ${output.code}): ${output.stderr || output.stdout}`);
  }
  return JSON.parse(line.slice('WRK_JSON '.length)) as WrkJson;
}

/**
 * wrk -t1 -c<connections> against one server, or against several replicas at once (one wrk
 * per replica, the connections split between them, the figures added up; p50 is their mean,
 * p99 their worst). Whole seconds: wrk takes no fractions.
 */
export async function runWrk(
  urls: readonly string[],
  options: { connections: number; seconds: number; warmupSeconds: number; tag: string },
): Promise<PeerRun> {
  const seconds = Math.max(1, Math.round(options.seconds));
  const share = (index: number) =>
    Math.floor(options.connections / urls.length) + (index < options.connections % urls.length ? 1 : 0);
  if (options.warmupSeconds > 0) {
    const warm = Math.max(1, Math.round(options.warmupSeconds));
    await Promise.all(
      urls.map((url, index) => wrkOnce(url, share(index), warm, `${options.tag}-warm-${index}`)),
    );
  }
  const results = await Promise.all(
    urls.map((url, index) => wrkOnce(url, share(index), seconds, `${options.tag}-${index}`)),
  );
  let requestsPerSec = 0;
  let errors = 0;
  let answered = 0;
  for (const result of results) {
    requestsPerSec += result.requests / (result.durationUs / 1e6);
    errors +=
      result.connectErrors +
      result.readErrors +
      result.writeErrors +
      result.timeouts +
      result.statusErrors +
      result.unexpected;
    answered += result.acquired + result.released;
  }
  const p50Ms = results.reduce((sum, result) => sum + result.p50Us, 0) / results.length / 1000;
  const p99Ms = Math.max(...results.map((result) => result.p99Us)) / 1000;
  return {
    requestsPerSec,
    pairsPerSec: requestsPerSec / 2,
    p50Ms,
    p99Ms,
    errors: answered === 0 ? Math.max(errors, 1) : errors,
  };
}

/** A run of the Node generator (bench/load.ts) as a peer run: a pair is two requests. */
export function fromLoad(result: LoadResult): PeerRun {
  const errors = result.errors;
  return {
    requestsPerSec: result.pairsPerSec * 2,
    pairsPerSec: result.pairsPerSec,
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    errors,
    ...(errors > 0 ? { note: result.errorSamples.join(' | ') } : {}),
  };
}

/** How long a peer run lasts, at what concurrency, under which tag. */
export interface RunOptions {
  connections: number;
  seconds: number;
  warmupSeconds: number;
  tag: string;
}

/** One run of the Node generator on `driver` (one client per connection), which it closes. */
export async function driveLoad(driver: Driver, options: RunOptions): Promise<PeerRun> {
  try {
    return fromLoad(
      await runLoad(driver, {
        clients: options.connections,
        warmupMs: options.warmupSeconds * 1000,
        measureMs: options.seconds * 1000,
        runId: options.tag,
      }),
    );
  } finally {
    driver.close();
  }
}

/**
 * The REST workload of a deploy script against one server or its replicas: wrk when it is
 * installed (`hasWrk`, from `available('wrk')`), else the Node generator.
 */
export function measureRest(urls: readonly string[], hasWrk: boolean, options: RunOptions): Promise<PeerRun> {
  if (hasWrk) return runWrk(urls, options);
  return driveLoad(restDriver(urls, options.connections), options);
}

/** What measureRest runs, for the report (with wrk's duration when `seconds` is given). */
export function restGenerator(hasWrk: boolean, connections: number, seconds?: number): string {
  const duration = seconds === undefined ? '' : ` -d${Math.max(1, Math.round(seconds))}s`;
  return hasWrk
    ? `wrk -t1 -c${connections}${duration} (bench/wrk/acquire-release.lua)`
    : `Node generator bench/load.ts, ${connections} clients (wrk is not installed: apt-get install wrk)`;
}

// ---------------------------------------------------------------------------------------
// pgbench: the same two statements as a lock pair, one autocommit transaction each.

const PGBENCH_TABLE = 'bench_locks';
/**
 * A scratch table shaped like a held lock (id, unique service, who, time), in the bench's
 * own database; pgbench inserts a fresh service name and deletes it by the id it got back.
 */
const PGBENCH_DDL = `CREATE TABLE IF NOT EXISTS ${PGBENCH_TABLE} (
  id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  service    text        NOT NULL UNIQUE,
  who        text        NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
)`;
const PGBENCH_SCRIPT = [
  '\\set i :i + 1',
  `INSERT INTO ${PGBENCH_TABLE} (service, who) VALUES (:tag::text || '-' || :client_id::text || '-' || :i::text, 'pgbench') ON CONFLICT (service) DO NOTHING RETURNING id \\gset`,
  `DELETE FROM ${PGBENCH_TABLE} WHERE id = :id;`,
  '',
].join('\n');

/** The pgbench script, for the README and the JSON report. */
export const PGBENCH_SQL = PGBENCH_SCRIPT;

export interface Pgbench {
  run(options: { clients: number; seconds: number; warmupSeconds: number; tag: string }): Promise<PeerRun>;
  close(): Promise<void>;
}

/** Creates the scratch table in the database of `url` and a script file for pgbench. */
export async function preparePgbench(url: string): Promise<Pgbench> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  client.on('error', () => {});
  await client.connect();
  try {
    await client.query(PGBENCH_DDL);
  } finally {
    await client.end().catch(() => {});
  }
  const dir = await mkdtemp(path.join(tmpdir(), 'tracker-bench-pgbench-'));
  const script = path.join(dir, 'pair.sql');
  await writeFile(script, PGBENCH_SCRIPT);
  const parsed = new URL(url);
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (parsed.password !== '') env.PGPASSWORD = decodeURIComponent(parsed.password);
  const connection = [
    '-h',
    parsed.hostname,
    '-p',
    parsed.port || '5432',
    '-U',
    decodeURIComponent(parsed.username || 'postgres'),
  ];
  const database = decodeURIComponent(parsed.pathname.slice(1));

  const once = async (clients: number, seconds: number, tag: string) => {
    const args = [
      ...connection,
      '-n',
      '-M',
      'prepared',
      `-c${clients}`,
      '-j1',
      `-T${seconds}`,
      '-D',
      'i=0',
      '-D',
      `tag=${tag}`,
      '-f',
      script,
      database,
    ];
    let output = await run('pgbench', args, seconds * 1000 + GRACE_MS, env);
    // A shared server's connection slots may be taken for a moment (max_connections):
    // try again twice, 2 s apart, before calling it a failure.
    for (let attempt = 1; attempt < 3 && /too many clients/.test(output.stderr); attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      output = await run('pgbench', args, seconds * 1000 + GRACE_MS, env);
    }
    const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(output.stdout);
    if (tps?.[1] === undefined) {
      throw new Error(`pgbench failed (code ${output.code}): ${output.stderr || output.stdout}`);
    }
    const latency = /latency average = ([\d.]+) ms/.exec(output.stdout);
    const failed = /number of failed transactions: (\d+)/.exec(output.stdout);
    // pgbench exits 2 when a client aborted (e.g. a statement failed): count it.
    const aborted = output.code === 0 ? 0 : 1;
    return {
      pairsPerSec: Number(tps[1]),
      latencyMs: latency?.[1] === undefined ? Number.NaN : Number(latency[1]),
      errors: Number(failed?.[1] ?? 0) + aborted,
    };
  };

  return {
    async run({ clients, seconds, warmupSeconds, tag }) {
      if (warmupSeconds > 0) await once(clients, Math.max(1, Math.round(warmupSeconds)), `${tag}w`);
      const result = await once(clients, Math.max(1, Math.round(seconds)), tag);
      return {
        requestsPerSec: result.pairsPerSec * 2,
        pairsPerSec: result.pairsPerSec,
        p50Ms: result.latencyMs,
        p99Ms: Number.NaN,
        errors: result.errors,
        note: 'p50 column: pgbench latency average of a pair',
      };
    },
    async close() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------
// Redis: SET key v NX PX 60000, then DEL key.

const REDIS_KEYSPACE = 10_000_000;

interface RedisCsv {
  rps: number;
  p50Ms: number;
  p99Ms: number;
}

async function redisOnce(
  host: string,
  port: number,
  clients: number,
  requests: number,
  command: string[],
): Promise<RedisCsv> {
  const args = [
    '-h',
    host,
    '-p',
    String(port),
    '-c',
    String(clients),
    '-n',
    String(requests),
    '-r',
    String(REDIS_KEYSPACE),
    '--csv',
    ...command,
  ];
  const output = await run('redis-benchmark', args, 120_000);
  const row = output.stdout
    .trim()
    .split('\n')
    .filter((line) => line.startsWith('"') && !line.startsWith('"test"'))
    .at(-1);
  const cells = row?.split('","').map((cell) => cell.replaceAll('"', ''));
  const rps = Number(cells?.[1]);
  if (output.code !== 0 || cells === undefined || !Number.isFinite(rps) || rps <= 0) {
    throw new Error(`redis-benchmark failed (code ${output.code}): ${output.stderr || output.stdout}`);
  }
  return { rps, p50Ms: Number(cells[4]), p99Ms: Number(cells[6]) };
}

/**
 * redis-benchmark runs one command per invocation, so a pair is measured as its two halves
 * at the same concurrency, one after the other: `SET tracker-bench:<key> v NX PX 60000`,
 * then `DEL tracker-bench:<key>`, keys drawn at random from 10 million (__rand_int__), and
 * pairs/s = 1 / (1/SETs per s + 1/DELs per s): the time of a SET plus the time of a DEL.
 * The DELs mostly find no key (a missing key is a little cheaper to delete than a present
 * one), which flatters Redis slightly: the Tracker ÷ Redis ratio errs low. The keys the
 * SETs create expire after 60 s. Request counts are sized from a short first run so that
 * each half lasts about `seconds`.
 */
export function prepareRedis(host: string, port: number) {
  const SET = ['SET', 'tracker-bench:__rand_int__', 'v', 'NX', 'PX', '60000'];
  const DEL = ['DEL', 'tracker-bench:__rand_int__'];
  let calibrated: { set: number; del: number } | undefined;
  return {
    async run({ clients, seconds }: { clients: number; seconds: number }): Promise<PeerRun> {
      if (calibrated === undefined) {
        const set = await redisOnce(host, port, clients, 20_000, SET);
        const del = await redisOnce(host, port, clients, 20_000, DEL);
        calibrated = { set: set.rps, del: del.rps };
      }
      const size = (rps: number) => Math.max(10_000, Math.round(rps * seconds));
      const set = await redisOnce(host, port, clients, size(calibrated.set), SET);
      const del = await redisOnce(host, port, clients, size(calibrated.del), DEL);
      calibrated = { set: set.rps, del: del.rps };
      const pairsPerSec = 1 / (1 / set.rps + 1 / del.rps);
      return {
        requestsPerSec: pairsPerSec * 2,
        pairsPerSec,
        p50Ms: set.p50Ms,
        p99Ms: set.p99Ms,
        errors: 0,
        note: `SET NX PX ${set.rps.toFixed(0)}/s, DEL ${del.rps.toFixed(0)}/s; pairs/s = 1/(1/SET + 1/DEL); latency: the SET's`,
      };
    },
  };
}

/**
 * Whether something accepts TCP connections at host:port within 2 s (redis-benchmark retries
 * forever against a port nobody listens on, so the bench asks first).
 */
export function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2_000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** host and port of TRACKER_BENCH_REDIS (redis://host:port), default 127.0.0.1:6379. */
export function redisAddress(env: NodeJS.ProcessEnv = process.env): { host: string; port: number } {
  const raw = env.TRACKER_BENCH_REDIS;
  if (raw === undefined || raw === '') return { host: '127.0.0.1', port: 6379 };
  const url = new URL(raw);
  return { host: url.hostname, port: Number(url.port || 6379) };
}
