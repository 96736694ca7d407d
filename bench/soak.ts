// `npm run soak -- --minutes N`: a bounded mixed workload over two Tracker replicas on one
// PostgreSQL database, with faults midway, then a report: operations (count, p50/p99
// latency), errors by kind, double grants (must be 0), locks lost, and memory per replica.
//
//   node --import tsx bench/soak.ts [--minutes 1] [--clients 32] [--services 20]
//                                   [--no-restart] [--keep-logs] [--json]
//
// Set-up: a fresh database tracker_bench_<hex> is created through TRACKER_SOAK_PG_URL
// (default postgres://postgres@127.0.0.1:5432/test) and dropped at the end, also on
// SIGINT/SIGTERM. Two replicas (`node dist/src/main.js --log-level warn`, ephemeral ports,
// logs in a temporary folder) reach PostgreSQL each through a TCP FaultProxy of its own.
//
// Workload: C clients loop until the time is up; each request goes to a random replica and
// each iteration to a random one of S services (fewer services than clients: contention).
// An iteration is one of: acquire without waiting, without TTL (20%) or with ttlSeconds
// 1-5 (28%), then hold, renewing at half the lease, and release; acquire with waitSeconds
// 1-3 (30%), then the same; acquire ttlSeconds 1-3 and leave it to expire, never renewed
// nor released (12%); GET /queue or /history (10%). Every `who` is unique, so a request
// whose outcome is unknown (503, timeout, connection error) can be found again: a janitor
// lists its locks by `who` for 90 s and releases them (a lock without TTL would otherwise
// block its service for good).
//
// Faults: at 1/3 of the run, replica 1's proxy black-holes its connections for 5 s, then
// cuts them and forwards again; at 2/3, PostgreSQL itself is restarted (`pg_ctlcluster
// --skip-systemctl-redirect <version> main restart`, when the database is local and that
// command exists; otherwise, or with --no-restart, both proxies refuse and cut every
// connection for 5 s instead). Requests sent from a fault's start until 10 s after both
// replicas answered /readyz again count as "during faults", the rest as "calm".
//
// Double grants. A client certainly holds a lock on a correct server over [A, E), where A
// is when the 201 arrived (the lock committed before the answer) and E the earlier of:
//   - when its release was first sent (no earlier can the server have released it);
//   - the lease's lower bound: the latest of (sent + ttl - 50 ms) over the acquire and every
//     confirmed renewal (the server starts the lease no earlier than it receives the
//     request), or expiresAt (whole seconds, truncated) - 100 ms mapped from the wall clock;
//     none without TTL.
// All of these are read from one clock (performance.now() of this process; the 50/100 ms
// cover its drift against PostgreSQL's wall clock on the same machine). A correct server
// never has two locks of one service at once, so two such intervals of one service never
// overlap: every overlap is counted as a double grant; and of two disjoint intervals, the
// later one's lock was granted after the earlier one's ended, so its fencing token must be
// larger. Intervals that end before they start (a waiter granted so late that the bound is
// already past) assert nothing and are skipped.
// The server's own record is checked too: every service's history, read in full (paged
// with `before`), in event-id order (the store's serialization order for a service, as all
// of a service's changes write the same row), must alternate acquired → (renewed)* → end,
// with strictly increasing fencing tokens; every 201 must be there with the same token.
// The store's timestamps are also compared (acquired `at` against the previous lock's
// release time or expiresAt), but an overlap there is reported apart, not as a double
// grant: PostgreSQL's now() is the transaction's start, and an acquire transaction that
// began before a release committed, then waited for it, stamps its lock earlier.
//
// Locks lost. A renewal answered 404 LOCK_NOT_HELD, or a GET or first release attempt
// answered 404, sent at least 1 s before the lease bound (always, without TTL), is a lost
// lock; the history says why: expired at its lease end (the request reached the store
// late: a fault), or taken away early (a bug). A lock whose lease bound passed while its
// renewals kept failing is lost too ("lease ran out"). Deliberate expiries are not losses.
//
// Memory: VmRSS of each replica (/proc/<pid>/status) and the heap figures of its /metrics,
// at the end of the warm-up (10% of the run, at most 30 s) and when the workload stops,
// with the peak of the samples taken every 15 s.
//
// Exit code: 1 when a double grant or a fencing-token regression was found, 2 for bad
// options, 1 when the soak could not run; else 0.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { FaultProxy } from '../test/support/fault-proxy.js';
import { percentile } from './load.js';
import {
  type BenchDatabase,
  createBenchDatabase,
  DEFAULT_ADMIN_URL,
  describe,
  maskPassword,
} from './postgres.js';
import {
  type ClientCheck,
  checkClientIntervals,
  checkHistory,
  classifyLost,
  type HistoryCheck,
  type HistoryEvent,
  type LostCheck,
} from './soak/analysis.js';
import { OP_LABELS, OPS, Recorder } from './soak/record.js';
import { parseMetrics, type Replica, rssBytes, scanLog, startReplica } from './soak/replica.js';
import { API, Rest } from './soak/rest.js';
import { Client, Janitor, REQUEST_TIMEOUT_MS } from './soak/workload.js';

const REPLICAS = 2;
/** Faults: replica 1's black hole lasts this long; the fallback outage too. */
const FAULT_MS = 5_000;
/** Requests sent up to this long after the replicas are ready again still count as "during faults". */
const FAULT_GRACE_MS = 10_000;
const READY_TIMEOUT_MS = 60_000;
const RESTART_TIMEOUT_MS = 60_000;
const SAMPLE_EVERY_MS = 15_000;
const PROGRESS_EVERY_MS = 60_000;
/** How long clients may take to finish (a wait, a release's retries) once the time is up. */
const DRAIN_MS = 60_000;
const HISTORY_PAGE = 1000;
const MAX_HISTORY_PAGES = 10_000;
const METRICS = [
  'process_resident_memory_bytes',
  'nodejs_heap_size_used_bytes',
  'nodejs_heap_size_total_bytes',
  'nodejs_external_memory_bytes',
] as const;

interface Options {
  minutes: number;
  clients: number;
  services: number;
  restart: boolean;
  keepLogs: boolean;
  json: boolean;
}

function usage(): string {
  return [
    'usage: npm run soak -- [options]   (node --import tsx bench/soak.ts [options])',
    '  --minutes N     how long the workload runs (default 1)',
    '  --clients C     concurrent clients (default 32)',
    '  --services S    services they compete for (default 20)',
    '  --no-restart    do not restart PostgreSQL at 2/3: cut both replicas off through their proxies',
    "  --keep-logs     keep the replicas' log folder (kept anyway when a check fails)",
    '  --json          print the report as one JSON object',
    'environment:',
    `  TRACKER_SOAK_PG_URL  admin URL where the database is created and dropped (default ${DEFAULT_ADMIN_URL})`,
    'exit code: 1 when a double grant or a fencing-token regression was found, else 0',
  ].join('\n');
}

function fail(message: string): never {
  process.stderr.write(`soak: ${message}\n${usage()}\n`);
  process.exit(2);
}

function parseOptions(): Options {
  let values: ReturnType<typeof parseCli>['values'];
  try {
    values = parseCli().values;
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  }
  if (values.help) {
    process.stdout.write(`${usage()}\n`);
    process.exit(0);
  }
  const minutes = Number(values.minutes);
  if (!Number.isFinite(minutes) || minutes < 0.1 || minutes > 24 * 60) fail('--minutes wants 0.1 to 1440');
  const integer = (value: string, flag: string, max: number) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1 || n > max) fail(`${flag} wants an integer from 1 to ${max}`);
    return n;
  };
  return {
    minutes,
    clients: integer(values.clients, '--clients', 1000),
    services: integer(values.services, '--services', 10_000),
    restart: !values['no-restart'],
    keepLogs: values['keep-logs'],
    json: values.json,
  };
}

function parseCli() {
  return parseArgs({
    options: {
      minutes: { type: 'string', default: '1' },
      clients: { type: 'string', default: '32' },
      services: { type: 'string', default: '20' },
      'no-restart': { type: 'boolean', default: false },
      'keep-logs': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
}

/** The admin URL, validated: TRACKER_SOAK_PG_URL or the default. */
function adminUrl(): string {
  const fromEnv = process.env.TRACKER_SOAK_PG_URL;
  const url = fromEnv !== undefined && fromEnv !== '' ? fromEnv : DEFAULT_ADMIN_URL;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`TRACKER_SOAK_PG_URL is not a URL: ${maskPassword(url)}`);
  }
  if (!/^postgres(ql)?:$/.test(parsed.protocol)) {
    throw new Error(`TRACKER_SOAK_PG_URL must start with postgres://: ${maskPassword(url)}`);
  }
  return url;
}

async function serverVersion(url: string): Promise<string> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: 5_000,
    query_timeout: 5_000,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    const result = await client.query<{ server_version: string }>('SHOW server_version');
    return result.rows[0]?.server_version ?? 'unknown';
  } catch {
    return 'unknown';
  } finally {
    await Promise.race([client.end().catch(() => {}), delay(1_000)]);
  }
}

interface FaultWindow {
  label: string;
  start: number;
  /** When every replica answered /readyz again (or the fault ended, if they never did). */
  end: number;
  notes: string[];
}

interface MemorySample {
  at: number;
  rss: number | null;
  metrics: Record<string, number | null>;
}

interface ReplicaMemory {
  name: string;
  pid: number;
  start: MemorySample | null;
  end: MemorySample | null;
  peakRss: number | null;
  /** Every sample from the warm-up's on, for the trend. */
  samples: MemorySample[];
}

const t0 = performance.now();
/** Seconds since the soak started, for log lines. */
const clock = (at = performance.now()) => `+${((at - t0) / 1000).toFixed(1)} s`;

async function main(): Promise<void> {
  const options = parseOptions();
  const admin = adminUrl();
  const adminHost = new URL(admin);
  const pgHost = adminHost.hostname || '127.0.0.1';
  const pgPort = Number(adminHost.port || 5432);
  const log = (message: string) => process.stderr.write(`[${clock()}] ${message}\n`);
  const durationMs = options.minutes * 60_000;

  let database: BenchDatabase | undefined;
  const proxies: FaultProxy[] = [];
  const replicas: Replica[] = [];
  const rests: Rest[] = [];
  const logDir = mkdtempSync(path.join(os.tmpdir(), 'tracker-soak-'));
  let keepLogs = options.keepLogs;
  let stopping = false;
  let stopsDone: { name: string; status: number | string; ms: number }[] = [];

  let cleaning: Promise<void> | undefined;
  const cleanUp = () => {
    cleaning ??= (async () => {
      stopping = true;
      stopsDone = await Promise.all(
        replicas.map(async (replica) => ({ name: replica.name, ...(await replica.stop()) })),
      );
      for (const rest of rests) rest.close();
      await Promise.allSettled(proxies.map((proxy) => proxy.close()));
      if (database !== undefined) {
        await database.drop();
        log(`dropped the database ${database.name}`);
      }
      if (keepLogs) log(`replica logs kept in ${logDir}`);
      else rmSync(logDir, { recursive: true, force: true });
    })();
    return cleaning;
  };
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    log(`${signal}: stopping the replicas and dropping the database`);
    void cleanUp().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    database = await createBenchDatabase(admin);
    const version = await serverVersion(database.url);
    log(`PostgreSQL ${version}: database ${database.name} created through ${maskPassword(admin)}`);
    for (let i = 0; i < REPLICAS; i++) proxies.push(await FaultProxy.start(`postgres://${pgHost}:${pgPort}`));
    const created = database;
    const started = await Promise.allSettled(
      proxies.map((proxy, i) =>
        startReplica(`replica ${i + 1}`, proxy.url(created.url), path.join(logDir, `replica-${i + 1}.log`)),
      ),
    );
    for (const result of started) if (result.status === 'fulfilled') replicas.push(result.value);
    const failed = started.find((result) => result.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    if (interrupted) return;
    for (const replica of replicas) {
      rests.push(new Rest(replica.baseUrl, options.clients + 16));
      log(`${replica.name}: pid ${replica.pid}, ${replica.baseUrl}, log ${replica.logFile}`);
    }

    const recorder = new Recorder();
    const janitor = new Janitor(rests, recorder);
    const services = Array.from(
      { length: options.services },
      (_, i) => `soak-svc-${String(i).padStart(3, '0')}`,
    );
    const windows: FaultWindow[] = [];
    const memory: ReplicaMemory[] = replicas.map((replica) => ({
      name: replica.name,
      pid: replica.pid,
      start: null,
      end: null,
      peakRss: null,
      samples: [],
    }));

    const sample = async (replica: Replica, index: number): Promise<MemorySample> => {
      const metricsText = await fetchText(`${replica.baseUrl}/metrics`);
      const result = {
        at: performance.now(),
        rss: rssBytes(replica.pid),
        metrics: parseMetrics(metricsText, METRICS),
      };
      const entry = memory[index];
      if (entry !== undefined && result.rss !== null) {
        entry.peakRss = Math.max(entry.peakRss ?? 0, result.rss);
      }
      if (entry !== undefined && result.at >= warmupAt) entry.samples.push(result);
      return result;
    };
    const sampleAll = () => Promise.all(replicas.map((replica, i) => sample(replica, i)));

    const start = performance.now();
    const deadline = start + durationMs;
    const warmupAt = start + Math.min(30_000, durationMs * 0.1);
    log(
      `workload: ${options.clients} clients, ${options.services} services, ${options.minutes} min ` +
        `(until ${clock(deadline)}); faults at ${clock(start + durationMs / 3)} and ${clock(start + (2 * durationMs) / 3)}`,
    );

    const ctx = {
      replicas: rests,
      services,
      recorder,
      janitor,
      stopping: () => stopping || performance.now() >= deadline,
    };
    const janitorRun = janitor.run();
    const clients = Array.from({ length: options.clients }, (_, i) => new Client(i, ctx).run());

    // The conductor: warm-up sample, faults, periodic samples and progress, all on one timeline.
    const conductor = (async () => {
      const waitUntil = async (at: number) => {
        for (let i = 0; i < 100_000 && !stopping && performance.now() < at; i++) {
          await delay(Math.min(250, Math.max(1, at - performance.now())));
        }
      };
      const timeline = [
        {
          at: warmupAt,
          run: async () => {
            const samples = await sampleAll();
            samples.forEach((s, i) => {
              const entry = memory[i];
              if (entry !== undefined) entry.start = s;
            });
            log(`warm-up done: memory baseline taken (${samples.map((s) => mb(s.rss)).join(', ')} RSS)`);
          },
        },
        { at: start + durationMs / 3, run: () => cutReplica(0) },
        { at: start + (2 * durationMs) / 3, run: () => restartPostgres() },
      ];
      let nextSample = start + SAMPLE_EVERY_MS;
      let nextProgress = start + PROGRESS_EVERY_MS;
      for (let i = 0; i < 1_000_000 && !stopping && performance.now() < deadline; i++) {
        const now = performance.now();
        const due = timeline.find((item) => item.at <= now);
        if (due !== undefined) {
          timeline.splice(timeline.indexOf(due), 1);
          await due.run();
          continue;
        }
        if (now >= nextSample) {
          nextSample += SAMPLE_EVERY_MS;
          await sampleAll();
        }
        if (now >= nextProgress) {
          nextProgress += PROGRESS_EVERY_MS;
          const requests = [...recorder.ops.values()].reduce((sum, s) => sum + s.count, 0);
          log(
            `progress: ${requests} requests, ${recorder.errors.length} errors, ` +
              `${recorder.granted.size} locks granted, ${recorder.gone.length + recorder.ranOut.length} lost so far`,
          );
        }
        const next = Math.min(deadline, nextSample, nextProgress, ...timeline.map((item) => item.at));
        await waitUntil(next);
      }
    })();

    const waitReady = async (indexes: number[]): Promise<number> => {
      const started = performance.now();
      for (let i = 0; i < 10_000 && performance.now() - started < READY_TIMEOUT_MS; i++) {
        const answers = await Promise.all(
          indexes.map((index) => rests[index]?.request('GET', '/readyz', undefined, 2_000)),
        );
        if (answers.every((answer) => answer?.kind === 'reply' && answer.status === 200))
          return performance.now();
        await delay(200);
      }
      log(`replica(s) ${indexes.map((i) => i + 1).join(', ')} not ready after ${READY_TIMEOUT_MS / 1000} s`);
      return performance.now();
    };

    async function cutReplica(index: number): Promise<void> {
      const proxy = proxies[index];
      if (proxy === undefined) return;
      const window: FaultWindow = {
        label: `replica ${index + 1} cut off from PostgreSQL`,
        start: performance.now(),
        end: 0,
        notes: [],
      };
      windows.push(window);
      proxy.blackhole();
      log(
        `fault 1 starts: replica ${index + 1}'s connections to PostgreSQL black-holed for ${FAULT_MS / 1000} s`,
      );
      await delay(FAULT_MS);
      await proxy.restore();
      log('fault 1: connections cut, proxy forwarding again');
      window.end = await waitReady([index]);
      window.notes.push(
        `black hole ${FAULT_MS / 1000} s, then cut; ready again ${((window.end - window.start) / 1000).toFixed(1)} s after the start`,
      );
      log(`fault 1 ends: replica ${index + 1} ready again`);
    }

    async function restartPostgres(): Promise<void> {
      const window: FaultWindow = {
        label: 'PostgreSQL restarted',
        start: performance.now(),
        end: 0,
        notes: [],
      };
      windows.push(window);
      const all = replicas.map((_, i) => i);
      const command = restartCommand(options.restart, pgHost);
      if (typeof command !== 'string') {
        window.label = 'both replicas cut off from PostgreSQL (fallback)';
        log(
          `fault 2 starts: ${command.why}; instead, both proxies refuse and cut every connection for ${FAULT_MS / 1000} s`,
        );
        window.notes.push(`fallback: ${command.why}`);
        await Promise.all(proxies.map((proxy) => proxy.down()));
        await delay(FAULT_MS);
        await Promise.all(proxies.map((proxy) => proxy.restore()));
        log('fault 2: proxies forwarding again');
      } else {
        log(`fault 2 starts: ${command}`);
        const result = await runCommand(command, RESTART_TIMEOUT_MS);
        if (result.code !== 0) {
          window.label = 'both replicas cut off from PostgreSQL (fallback)';
          const why = `${command} failed (${result.code}): ${result.output.trim().split('\n').at(-1) ?? ''}`;
          log(`fault 2: ${why}; cutting both proxies for ${FAULT_MS / 1000} s instead`);
          window.notes.push(`fallback: ${why}`);
          await Promise.all(proxies.map((proxy) => proxy.down()));
          await delay(FAULT_MS);
          await Promise.all(proxies.map((proxy) => proxy.restore()));
        } else {
          const took = ((performance.now() - window.start) / 1000).toFixed(1);
          window.notes.push(`${command} took ${took} s`);
          log(`fault 2: PostgreSQL restarted (${took} s)`);
        }
      }
      window.end = await waitReady(all);
      window.notes.push(
        `replicas ready again ${((window.end - window.start) / 1000).toFixed(1)} s after the start`,
      );
      log('fault 2 ends: both replicas ready again');
    }

    await conductor;
    if (interrupted) return;
    log('time is up: clients release what they hold and stop');
    await Promise.race([Promise.all(clients), delay(DRAIN_MS)]);
    const finishedAt = performance.now();
    const endSamples = await sampleAll();
    endSamples.forEach((s, i) => {
      const entry = memory[i];
      if (entry !== undefined) entry.end = s;
    });
    // Leases left to expire on purpose end within seconds; let the sweeps record them.
    await delay(Math.min(10_000, Math.max(6_000, recorder.lastDeliberateEnd + 2_000 - performance.now())));
    janitor.stop();
    await Promise.race([janitorRun, delay(10_000)]);
    const leftovers = await cleanUpLocks(rests, services, recorder, log);
    await delay(1_500);
    if (interrupted) return;

    log(`reading the history of ${services.length} services`);
    const history = await readHistory(rests[0], services);
    const clientCheck = checkClientIntervals(recorder.intervals);
    const historyCheck = checkHistory(history, recorder.granted, recorder.attempts);
    const lostCheck = classifyLost(recorder.gone, recorder.ranOut, historyCheck.locksById);
    const logs = replicas.map((replica) => ({ name: replica.name, ...scanLog(replica.logFile) }));

    const doubleGrants = clientCheck.overlaps + historyCheck.doubleGrants;
    const tokenRegressions = clientCheck.tokenRegressions + historyCheck.tokenRegressions;
    if (doubleGrants > 0 || tokenRegressions > 0) keepLogs = true;
    await cleanUp();

    const report = buildReport({
      options,
      version,
      database: database.name,
      start,
      finishedAt,
      recorder,
      janitorOrphans: janitor.orphans,
      unresolved: janitor.unresolved,
      leftovers,
      windows,
      clientCheck,
      historyCheck,
      lostCheck,
      memory,
      logs,
      stops: stopsDone,
      logDir: keepLogs ? logDir : null,
    });
    process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
    if (doubleGrants > 0 || tokenRegressions > 0) process.exitCode = 1;
  } finally {
    await cleanUp();
  }
}

/** The restart command, or why there is none. */
function restartCommand(enabled: boolean, host: string): string | { why: string } {
  if (!enabled) return { why: '--no-restart' };
  if (!['127.0.0.1', 'localhost', '::1', '[::1]'].includes(host)) {
    return { why: `PostgreSQL at ${host} is not local` };
  }
  let versions: string[];
  try {
    versions = readdirSync('/etc/postgresql').filter((name) => existsSync(`/etc/postgresql/${name}/main`));
  } catch {
    return { why: 'no /etc/postgresql (not a Debian-style PostgreSQL)' };
  }
  if (versions.length !== 1)
    return { why: `expected one cluster in /etc/postgresql, found ${versions.length}` };
  const binary = ['/usr/bin/pg_ctlcluster', '/usr/sbin/pg_ctlcluster'].find((file) => existsSync(file));
  if (binary === undefined) return { why: 'pg_ctlcluster is not installed' };
  return `pg_ctlcluster --skip-systemctl-redirect ${versions[0]} main restart`;
}

function runCommand(command: string, timeoutMs: number): Promise<{ code: number | string; output: string }> {
  return new Promise((resolve) => {
    const [file = '', ...args] = command.split(' ');
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: 'spawn failed', output: error.message });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? 'unknown', output });
    });
  });
}

async function fetchText(url: string): Promise<string> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    return await response.text();
  } catch {
    return '';
  }
}

interface Leftovers {
  /** Locks still held once the clients stopped and the deliberate leases ran out, by what their request saw. */
  locks: Map<string, number>;
  /** Waiters still queued then. */
  waiters: number;
}

/**
 * Releases whatever is still held once the clients have stopped (the janitor's last pass),
 * and waits for queues to empty (a waiter whose request failed stays in line until its
 * replica stops heartbeating it, 15 s), a few rounds at most.
 */
async function cleanUpLocks(
  rests: readonly Rest[],
  services: readonly string[],
  recorder: Recorder,
  log: (message: string) => void,
): Promise<Leftovers> {
  const rest = rests[0];
  const leftovers: Leftovers = { locks: new Map(), waiters: 0 };
  if (rest === undefined) return leftovers;
  const seen = new Set<string>();
  for (let round = 0; round < 6; round++) {
    const list = await rest.request('GET', `${API}/locks/list?per_page=1000`, undefined, REQUEST_TIMEOUT_MS);
    const locks =
      list.kind === 'reply' && list.status === 200
        ? ((list.json as { locks?: { id: string; who: string }[] }).locks ?? [])
        : [];
    for (const lock of locks) {
      if (!seen.has(lock.id)) {
        seen.add(lock.id);
        const outcome = recorder.attempts.get(lock.who)?.outcome ?? 'no such request';
        leftovers.locks.set(outcome, (leftovers.locks.get(outcome) ?? 0) + 1);
      }
      await rest.request('DELETE', `${API}/lock/${lock.id}`, undefined, REQUEST_TIMEOUT_MS);
    }
    let waiters = 0;
    for (const service of services) {
      const queue = await rest.request('GET', `${API}/queue/${service}`, undefined, REQUEST_TIMEOUT_MS);
      if (queue.kind === 'reply' && queue.status === 200) {
        waiters += ((queue.json as { waiters?: unknown[] }).waiters ?? []).length;
      }
    }
    if (round === 0) leftovers.waiters = waiters;
    if (locks.length === 0 && waiters === 0 && list.kind === 'reply' && list.status === 200) break;
    log(`clean-up: ${locks.length} lock(s) released, ${waiters} waiter(s) still queued; again in 5 s`);
    await delay(5_000);
  }
  return leftovers;
}

async function readHistory(rest: Rest | undefined, services: readonly string[]) {
  const byService = new Map<string, HistoryEvent[]>();
  if (rest === undefined) return byService;
  for (const service of services) {
    const events: HistoryEvent[] = [];
    let before: number | null = null;
    for (let page = 0; page < MAX_HISTORY_PAGES; page++) {
      const query = `service=${encodeURIComponent(service)}&limit=${HISTORY_PAGE}${before === null ? '' : `&before=${before}`}`;
      let body: { events: HistoryEvent[]; nextBefore: number | null } | undefined;
      for (let attempt = 0; attempt < 5 && body === undefined; attempt++) {
        const answer = await rest.request('GET', `${API}/history?${query}`, undefined, 30_000);
        if (answer.kind === 'reply' && answer.status === 200) {
          body = answer.json as { events: HistoryEvent[]; nextBefore: number | null };
        } else await delay(1_000);
      }
      if (body === undefined) throw new Error(`cannot read the history of ${service}`);
      events.push(...body.events);
      if (body.nextBefore === null) break;
      before = body.nextBefore;
    }
    byService.set(service, events);
  }
  return byService;
}

// ---------------------------------------------------------------------------------------
// The report.

interface ReportInput {
  options: Options;
  version: string;
  database: string;
  start: number;
  finishedAt: number;
  recorder: Recorder;
  janitorOrphans: Janitor['orphans'];
  unresolved: number;
  leftovers: Leftovers;
  windows: FaultWindow[];
  clientCheck: ClientCheck;
  historyCheck: HistoryCheck;
  lostCheck: LostCheck;
  memory: ReplicaMemory[];
  logs: ({ name: string } & ReturnType<typeof scanLog>)[];
  stops: { name: string; status: number | string; ms: number }[];
  logDir: string | null;
}

function round(value: number, digits = 2): number | null {
  return Number.isFinite(value) ? Number(value.toFixed(digits)) : null;
}

function countBy<T>(items: readonly T[], key: (item: T) => string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const item of items) {
    const k = key(item);
    counts[k] = (counts[k] ?? 0) + 1;
  }
  return counts;
}

function buildReport(input: ReportInput) {
  const { recorder, windows, historyCheck, clientCheck, lostCheck } = input;
  /** Whether [from, to] meets a fault, counted from its start to FAULT_GRACE_MS after the replicas were ready again. */
  const inFault = (from: number, to = from) =>
    windows.some((w) => to >= w.start && from <= (w.end || w.start) + FAULT_GRACE_MS);
  const operations = OPS.map((op) => {
    const stats = recorder.ops.get(op);
    const sorted = Float64Array.from(stats?.latencies ?? []).sort();
    return {
      op,
      label: OP_LABELS[op],
      count: stats?.count ?? 0,
      ok: stats?.ok ?? 0,
      refused: stats?.refused ?? 0,
      notHeld: stats?.notHeld ?? 0,
      errors: stats?.errors ?? 0,
      p50Ms: round(percentile(sorted, 0.5)),
      p99Ms: round(percentile(sorted, 0.99)),
      maxMs: round(sorted.at(-1) ?? Number.NaN),
    };
  });
  const errorKinds = new Map<
    string,
    { total: number; duringFaults: number; calm: number; ops: Set<string> }
  >();
  for (const error of recorder.errors) {
    const entry = errorKinds.get(error.kind) ?? {
      total: 0,
      duringFaults: 0,
      calm: 0,
      ops: new Set<string>(),
    };
    entry.total++;
    if (inFault(error.at, error.doneAt)) entry.duringFaults++;
    else entry.calm++;
    entry.ops.add(error.op);
    errorKinds.set(error.kind, entry);
  }
  const lostGone = recorder.gone.length;
  const lostRanOut = recorder.ranOut.length;
  const calmLost =
    recorder.gone.filter((g) => !inFault(g.sentAt, g.doneAt)).length +
    recorder.ranOut.filter((r) => !inFault(r.since, r.leaseBound)).length;
  const memory = input.memory.map((m) => ({
    replica: m.name,
    pid: m.pid,
    rssStartBytes: m.start?.rss ?? null,
    rssEndBytes: m.end?.rss ?? null,
    rssGrowthBytes: m.start?.rss != null && m.end?.rss != null ? m.end.rss - m.start.rss : null,
    rssPeakBytes: m.peakRss,
    heapUsedStartBytes: m.start?.metrics.nodejs_heap_size_used_bytes ?? null,
    heapUsedEndBytes: m.end?.metrics.nodejs_heap_size_used_bytes ?? null,
    heapTotalStartBytes: m.start?.metrics.nodejs_heap_size_total_bytes ?? null,
    heapTotalEndBytes: m.end?.metrics.nodejs_heap_size_total_bytes ?? null,
    externalStartBytes: m.start?.metrics.nodejs_external_memory_bytes ?? null,
    externalEndBytes: m.end?.metrics.nodejs_external_memory_bytes ?? null,
    sampledOverSeconds: m.start && m.end ? round((m.end.at - m.start.at) / 1000, 1) : null,
    samples: m.samples.length,
    rssTrendMbPerMinute: trend(m.samples, (x) => x.rss),
    heapUsedTrendMbPerMinute: trend(m.samples, (x) => x.metrics.nodejs_heap_size_used_bytes ?? null),
  }));
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    postgres: input.version,
    database: input.database,
    minutes: input.options.minutes,
    clients: input.options.clients,
    services: input.options.services,
    replicas: REPLICAS,
    workloadSeconds: round((input.finishedAt - input.start) / 1000, 1),
    faults: windows.map((w) => ({
      label: w.label,
      startSeconds: round((w.start - input.start) / 1000, 1),
      readyAgainSeconds: round((w.end - input.start) / 1000, 1),
      notes: w.notes,
    })),
    requests: operations.reduce((sum, op) => sum + op.count, 0),
    operations,
    refused: Object.fromEntries(recorder.refusedByCode),
    calmErrorSamples: recorder.errors
      .filter((e) => !inFault(e.at, e.doneAt))
      .slice(0, 10)
      .map((e) => ({ atSeconds: round((e.at - input.start) / 1000, 1), op: e.op, kind: e.kind })),
    errors: [...errorKinds.entries()]
      .sort((a, b) => b[1].total - a[1].total)
      .map(([kind, e]) => ({
        kind,
        total: e.total,
        duringFaults: e.duringFaults,
        calm: e.calm,
        ops: [...e.ops],
      })),
    safety: {
      doubleGrants: clientCheck.overlaps + historyCheck.doubleGrants,
      doubleGrantsClientObserved: clientCheck.overlaps,
      doubleGrantsInHistory: historyCheck.doubleGrants,
      tokenRegressionsClientObserved: clientCheck.tokenRegressions,
      tokenRegressionsInHistory: historyCheck.tokenRegressions,
      intervalsChecked: clientCheck.intervals,
      historyEvents: historyCheck.events,
      historyLocks: historyCheck.locks,
      historyAnomalies: historyCheck.anomalies,
      historyClockOverlaps: historyCheck.clockOverlaps,
      historyClockOverlapMaxMs: round(historyCheck.clockOverlapMaxMs, 1),
      locksOpenAtEndOfHistory: historyCheck.openAtEnd,
      grantsMissingFromHistory: historyCheck.grantsMissing,
      tokenMismatches: historyCheck.tokenMismatches,
      answerMismatches: recorder.mismatches.length,
      examples: [...clientCheck.examples, ...historyCheck.examples, ...recorder.mismatches.slice(0, 3)],
    },
    locks: {
      granted: recorder.granted.size,
      deliberateExpiries: recorder.deliberateExpiries,
      lost: lostGone + lostRanOut,
      lostDuringFaults: lostGone + lostRanOut - calmLost,
      lostCalm: calmLost,
      lostByCause: Object.fromEntries(lostCheck.gone),
      leaseRanOutWhileRenewalsFailed: lostRanOut,
      leaseRanOutFate: Object.fromEntries(lostCheck.ranOut),
      lostSuspicious: lostCheck.suspicious,
      lostExamples: lostCheck.examples,
      lateNotHeld: recorder.lateNotHeld,
      retriedReleaseNotFound: recorder.retriedReleaseNotFound,
      releasesGivenUp: recorder.releasesGivenUp,
      unknownOutcomes: [...recorder.attempts.values()].filter((a) => a.outcome.startsWith('error')).length,
      grantsNoClientSaw: Object.fromEntries(historyCheck.phantomGrants),
      grantsNoClientSawLatestAfterSeconds: round(historyCheck.phantomLatestAfterMs / 1000, 1),
      grantsNoClientSawExamples: historyCheck.phantomExamples,
      orphansFoundByJanitor: countBy(input.janitorOrphans, (o) => `${o.op}: ${o.outcome}`),
      orphanLatestFoundAfterSeconds: round(
        Math.max(0, ...input.janitorOrphans.map((o) => o.foundAfterMs)) / 1000,
        1,
      ),
      unknownOutcomesUnresolvedAtEnd: input.unresolved,
      leftAtEnd: Object.fromEntries(input.leftovers.locks),
      waitersLeftAtEnd: input.leftovers.waiters,
    },
    memory,
    replicaLogs: input.logs,
    replicaStops: input.stops,
    logDir: input.logDir,
  };
}

/** Least-squares slope of a memory figure over the samples, in MB per minute; null with fewer than 4. */
function trend(
  samples: readonly MemorySample[],
  value: (sample: MemorySample) => number | null,
): number | null {
  const points = samples.flatMap((sample) => {
    const y = value(sample);
    return y === null ? [] : [{ x: sample.at / 60_000, y: y / 1024 / 1024 }];
  });
  if (points.length < 4) return null;
  const mx = points.reduce((sum, p) => sum + p.x, 0) / points.length;
  const my = points.reduce((sum, p) => sum + p.y, 0) / points.length;
  const sxx = points.reduce((sum, p) => sum + (p.x - mx) ** 2, 0);
  const sxy = points.reduce((sum, p) => sum + (p.x - mx) * (p.y - my), 0);
  return sxx === 0 ? null : round(sxy / sxx, 2);
}

type Report = ReturnType<typeof buildReport>;

function mb(bytes: number | null | undefined): string {
  return bytes === null || bytes === undefined ? '-' : `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function perMinute(value: number | null): string {
  return value === null ? '-' : `${value >= 0 ? '+' : ''}${value.toFixed(2)} MB/min`;
}

function table(header: string[], rows: string[][], leftColumns = 1): string {
  const widths = header.map((title, c) => Math.max(title.length, ...rows.map((row) => row[c]?.length ?? 0)));
  const line = (row: string[]) =>
    row
      .map((cell, c) => (c < leftColumns ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

function fixed(value: number | null, digits = 2): string {
  return value === null ? '-' : value.toFixed(digits);
}

function formatReport(r: Report): string {
  const out: string[] = [];
  out.push(
    `Tracker soak: ${r.minutes} min (${r.workloadSeconds} s of workload), ${r.clients} clients, ` +
      `${r.services} services, ${r.replicas} replicas on PostgreSQL ${r.postgres}; ` +
      `node ${r.node}, ${r.cpus} CPU(s) ${r.cpuModel}; ${r.date}`,
  );
  out.push('', 'faults');
  for (const f of r.faults) {
    out.push(`  +${fixed(f.startSeconds, 1)} s into the workload: ${f.label}; ${f.notes.join('; ')}`);
  }
  if (r.faults.length === 0) out.push('  none (the run ended first)');
  out.push('', `operations (${r.requests} requests; latency of the requests that got an HTTP answer)`);
  out.push(
    table(
      ['operation', 'count', 'ok', 'refused', 'not held', 'errors', 'p50 ms', 'p99 ms', 'max ms'],
      r.operations.map((o) => [
        o.label,
        String(o.count),
        String(o.ok),
        String(o.refused),
        String(o.notHeld),
        String(o.errors),
        fixed(o.p50Ms),
        fixed(o.p99Ms),
        fixed(o.maxMs),
      ]),
    ),
  );
  const refused = Object.entries(r.refused).map(([code, n]) => `${code} ${n}`);
  out.push('', `refused (not errors): ${refused.length > 0 ? refused.join(', ') : 'none'}`);
  out.push('', 'errors by kind');
  if (r.errors.length === 0) out.push('  none');
  else {
    out.push(
      table(
        ['kind', 'total', 'during faults', 'calm', 'requests'],
        r.errors.map((e) => [
          e.kind,
          String(e.total),
          String(e.duringFaults),
          String(e.calm),
          e.ops.join(', '),
        ]),
      ),
    );
  }
  if (r.calmErrorSamples.length > 0) {
    const samples = r.calmErrorSamples.map((e) => `+${fixed(e.atSeconds, 1)} s ${e.op} ${e.kind}`);
    out.push(`  calm errors, first ones: ${samples.join('; ')}`);
  }
  const s = r.safety;
  const l = r.locks;
  const entries = (record: Record<string, number>) =>
    Object.entries(record)
      .map(([k, n]) => `${n} ${k}`)
      .join('; ') || 'none';
  out.push('', 'safety');
  out.push(
    `  double grants: ${s.doubleGrants}${s.doubleGrants > 0 ? '  <-- FAILED' : ''} ` +
      `(client-observed ${s.doubleGrantsClientObserved} over ${s.intervalsChecked} held intervals; ` +
      `store's event order ${s.doubleGrantsInHistory} over ${s.historyLocks} locks, ${s.historyEvents} events)`,
  );
  out.push(
    `  fencing-token regressions: client-observed ${s.tokenRegressionsClientObserved}, history ${s.tokenRegressionsInHistory}; ` +
      `201 tokens differing from the history ${s.tokenMismatches}; 201s missing from the history ${s.grantsMissingFromHistory}`,
  );
  out.push(
    `  history: ${s.historyAnomalies} out-of-order events, ${s.locksOpenAtEndOfHistory} locks open at the end; ` +
      `store-clock overlaps ${s.historyClockOverlaps} (max ${fixed(s.historyClockOverlapMaxMs, 1)} ms; ordering intact)`,
  );
  for (const example of s.examples) out.push(`    e.g. ${example}`);
  out.push('', 'locks');
  out.push(`  granted (201): ${l.granted}; left to expire on purpose: ${l.deliberateExpiries}`);
  out.push(
    `  lost: ${l.lost} (during faults ${l.lostDuringFaults}, calm ${l.lostCalm}); ` +
      `404 in time: ${entries(l.lostByCause)}; lease ran out while renewals failed: ${l.leaseRanOutWhileRenewalsFailed} ` +
      `(${entries(l.leaseRanOutFate)})`,
  );
  if (l.lostSuspicious > 0)
    out.push(`  lost in a way a correct server never does: ${l.lostSuspicious}  <-- CHECK`);
  for (const example of l.lostExamples) out.push(`    e.g. ${example}`);
  out.push(
    `  404 sent too close to the lease end (expected): ${l.lateNotHeld}; release retry answered 404: ` +
      `${l.retriedReleaseNotFound}; releases given up: ${l.releasesGivenUp}`,
  );
  out.push(
    `  acquires with an unknown outcome: ${l.unknownOutcomes}; granted per the history although no client got the 201: ` +
      `${entries(l.grantsNoClientSaw)}`,
  );
  if (l.grantsNoClientSawLatestAfterSeconds !== null && l.grantsNoClientSawLatestAfterSeconds > 0) {
    out.push(
      `    granted up to ${l.grantsNoClientSawLatestAfterSeconds} s after the request's error answer, e.g.`,
    );
    for (const example of l.grantsNoClientSawExamples) out.push(`    ${example}`);
  }
  out.push(
    `  found by the janitor: ${entries(l.orphansFoundByJanitor)} (latest ${l.orphanLatestFoundAfterSeconds} s after the error); ` +
      `still watched when it stopped: ${l.unknownOutcomesUnresolvedAtEnd}; left at the end: ${entries(l.leftAtEnd)}; waiters left at the end: ${l.waitersLeftAtEnd}`,
  );
  out.push(
    '',
    'memory per replica (RSS from /proc, heap from /metrics; trend: least-squares slope of the samples taken every 15 s from the warm-up on)',
  );
  out.push(
    table(
      [
        'replica',
        'pid',
        'RSS start',
        'RSS end',
        'growth',
        'RSS peak',
        'RSS trend',
        'heap used start',
        'heap used end',
        'heap trend',
        'over',
      ],
      r.memory.map((m) => [
        m.replica,
        String(m.pid),
        mb(m.rssStartBytes),
        mb(m.rssEndBytes),
        m.rssGrowthBytes === null ? '-' : `${m.rssGrowthBytes >= 0 ? '+' : ''}${mb(m.rssGrowthBytes)}`,
        mb(m.rssPeakBytes),
        perMinute(m.rssTrendMbPerMinute),
        mb(m.heapUsedStartBytes),
        mb(m.heapUsedEndBytes),
        perMinute(m.heapUsedTrendMbPerMinute),
        m.sampledOverSeconds === null ? '-' : `${m.sampledOverSeconds} s`,
      ]),
    ),
  );
  out.push('', 'replicas');
  for (const log of r.replicaLogs) {
    const stop = r.replicaStops.find((s) => s.name === log.name);
    out.push(
      `  ${log.name}: ${log.error} error and ${log.warn} warn log lines; stopped with ${stop?.status ?? '?'} ` +
        `in ${stop ? stop.ms : '?'} ms (SIGTERM)`,
    );
    for (const top of log.top.slice(0, 4)) out.push(`    ${top.count} x ${top.level} ${top.msg}`);
  }
  if (r.logDir !== null) out.push(`  logs: ${r.logDir}`);
  out.push('');
  return `${out.join('\n')}\n`;
}

main().catch((err: unknown) => {
  process.stderr.write(`soak: ${err instanceof Error ? (err.stack ?? err.message) : describe(err)}\n`);
  process.exit(1);
});
