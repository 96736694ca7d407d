// `npm run bench`: acquire+release throughput and latency of Tracker over REST and gRPC on
// SQLite, and over REST on PostgreSQL with one and two replicas, next to a bare node:http
// server answering the same REST calls (the "ceiling"); then a latency table: the contended
// hand-off (holder releases → next waiter's 201) on SQLite and across two PostgreSQL
// replicas, a bare PostgreSQL LISTEN/NOTIFY round trip, and an uncontended acquire with and
// without ttlSeconds.
//
// Then Tracker against its peers (bench/versus.ts: wrk on Tracker and on bare node:http,
// grpc-js on Tracker and on bare grpc-js, Tracker on PostgreSQL and pgbench, Redis),
// interleaved in rounds, and the Targets table of ratios. `--only big` (never in the
// default run) measures the cost of a big store (bench/big.ts).
//
//   node --import tsx bench/run.ts [--seconds 3] [--warmup 0.5] [--clients 1,16,64]
//                                  [--only ceiling,rest,grpc,pg-rest,pg-2x-rest,
//                                          handoff,notify,acquire-ttl,watch,
//                                          vs-http,vs-grpc,vs-pgbench,vs-redis,big]
//                                  [--connections 50] [--rounds 2] [--peer-seconds 5]
//                                  [--peer-warmup 3]
//                                  [--grpc-channels shared] [--json] [--out FILE]
//
// For each client count, the targets are measured one after the other (ceiling, rest,
// grpc, pg-rest, pg-2x-rest) so that, on a small machine shared by the generator and the
// servers, every target sees the same conditions. Servers are started once and stopped at
// the end. The PostgreSQL targets run on a fresh database, tracker_bench_<hex>, created
// through TRACKER_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test) and dropped
// WITH (FORCE) at the end; when that server cannot be reached, their rows are skipped.
// The exit code is 1 when any request failed.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { type BigReport, runBig } from './big.js';
import {
  type HandoffResult,
  type LatencyResult,
  measureAcquire,
  measureHandoff,
  measureNotify,
  measureWatch,
} from './latency.js';
import {
  type Driver,
  type GrpcChannels,
  grpcDriver,
  type LoadResult,
  MAX_PAIRS,
  restDriver,
  runLoad,
} from './load.js';
import { adminUrl, type BenchDatabase, createBenchDatabase, describe, maskPassword } from './postgres.js';
import { type RssReport, rssText, runRss } from './rss.js';
import {
  type Endpoints,
  REPO_ROOT,
  type StartContext,
  type Store,
  shared,
  startCeiling,
  startGrpcCeiling,
  startReplicas,
  startTracker,
  type Target,
} from './targets.js';
import {
  ratioLine,
  runVersus,
  type TargetRatio,
  VERSUS,
  VERSUS_SERVERS,
  type VersusReport,
} from './versus.js';

const tracker = shared(() => startTracker());

function postgresUrl(context: StartContext): string {
  if (context.postgresUrl === undefined) throw new Error('no PostgreSQL database for this target');
  return context.postgresUrl;
}

/**
 * In measurement order; the first one is the reference of the "vs ceiling" column, the
 * SQLite REST one ('rest') that of the "vs sqlite" column of the PostgreSQL rows.
 */
const TARGETS: Target[] = [
  { name: 'ceiling', protocol: 'rest', store: 'none', start: shared(() => startCeiling()) },
  { name: 'rest', protocol: 'rest', store: 'sqlite', start: tracker },
  { name: 'grpc', protocol: 'grpc', store: 'sqlite', start: tracker },
  {
    name: 'pg-rest',
    protocol: 'rest',
    store: 'postgres',
    start: shared(async (context) => startTracker({ databaseUrl: postgresUrl(context) })),
  },
  // Two Tracker processes with the same --database-url, each with its default pool of 10
  // connections; client i talks to replica i % 2 (with 1 client only the first one works).
  // On the 2-core bench machine the load generator, PostgreSQL and both replicas share the
  // same two cores, so this row shows what a second replica costs or gains on one small
  // host, not how two replicas on their own machines would scale: quote it as such.
  {
    name: 'pg-2x-rest',
    protocol: 'rest',
    store: 'postgres',
    start: shared(async (context) =>
      startReplicas(2, { databaseUrl: postgresUrl(context), name: 'pg tracker' }),
    ),
  },
];
/** Servers only the peer comparisons use (not measured by the client-count loop). */
const PEER_SERVERS: Target[] = [
  { name: 'grpc-ceiling', protocol: 'grpc', store: 'none', start: shared(() => startGrpcCeiling()) },
];
const BIG = 'big';
const RSS = 'rss';
const DEFAULT_OUT = path.join(REPO_ROOT, 'bench', 'results', 'latest.json');
const CEILING = 'ceiling';
/** The SQLite REST target, reference of the "vs sqlite" column. */
const SQLITE_REST = 'rest';
const PG_ONE = 'pg-rest';
const PG_TWO = 'pg-2x-rest';
const DEFAULT_CLIENTS = [1, 16, 64];

/** The latency measurements, by --only name, and the servers (TARGETS names) each one uses. */
const LATENCY: Record<string, string[]> = {
  handoff: [SQLITE_REST, PG_TWO],
  notify: [],
  'acquire-ttl': [SQLITE_REST, PG_ONE],
  watch: [SQLITE_REST, PG_TWO],
};
/** Watch delivery rounds per target, and their time budget. */
const WATCH_ROUNDS = 100;
const WATCH_BUDGET_MS = 30_000;
/** Hand-off rounds per target, and the time budget of those rounds. */
const HANDOFF_ROUNDS = 200;
const HANDOFF_BUDGET_MS = 20_000;
const NOTIFY_ROUNDS = 200;
const NOTIFY_BUDGET_MS = 20_000;
/** Measured seconds of each uncontended acquire row (after --warmup). */
const ACQUIRE_MS = 2_000;
const ACQUIRE_TTL_SECONDS = 60;

interface LatencyRow extends LatencyResult {
  /** handoff, notify, acquire-ttl or acquire-no-ttl. */
  measurement: string;
  label: string;
  /** The TARGETS name measured, or 'postgres' for the bare LISTEN/NOTIFY. */
  target: string;
  targetLabel: string;
}

interface Measurement extends LoadResult {
  target: string;
  protocol: string;
  store: Store;
  /** pairsPerSec / the ceiling's pairsPerSec at the same client count. */
  vsCeiling: number | null;
  /** PostgreSQL rows: pairsPerSec / the SQLite REST row's at the same client count. */
  vsSqlite: number | null;
}

function usage(): string {
  return [
    'usage: node --import tsx bench/run.ts [options]',
    '  --seconds S          measured seconds per target and client count (default 3)',
    '  --warmup S           warm-up seconds before each measurement (default 0.5)',
    `  --clients LIST       client counts (default ${DEFAULT_CLIENTS.join(',')})`,
    `  --only LIST          targets among ${TARGETS.map((t) => t.name).join(',')}`,
    `                       and latency rows among ${Object.keys(LATENCY).join(',')},`,
    `                       peer comparisons among ${VERSUS.join(',')} (default: all of these)`,
    `                       and ${BIG} (100,000 locks and 1,000,000 events; only when named)`,
    `                       and ${RSS} (RSS under steady load for --rss-minutes; only when named)`,
    '  --connections N      concurrency of the peer comparisons (default 50)',
    '  --rounds N           interleaved rounds of the peer comparisons and of big (default 2)',
    '  --peer-seconds S     measured seconds per peer run, whole seconds (default 5)',
    '  --peer-warmup S      warm-up seconds before each peer run (default 3: a fresh server needs',
    '                       about 2 s of load before its JIT settles; 1 s left p99 up to 7x p50)',
    '  --big-locks N        locks held in the big store (default 100000)',
    '  --big-events N       history events in the big store (default 1000000)',
    '  --big-watchers N     SSE watchers connected to a third server of big (default 1000)',
    '  --rss-minutes N      minutes of load of rss (default 10)',
    '  --grpc-channels M    shared (one channel for all clients, default) or per-client',
    '  --json               print the results as one JSON object instead of a table',
    '  --out FILE           also write that JSON to FILE (default bench/results/latest.json; - for none)',
    'environment:',
    `  TRACKER_BENCH_PG_URL admin URL where the PostgreSQL targets' database is created`,
    '                       and dropped (default postgres://postgres@127.0.0.1:5432/test)',
    '  TRACKER_BENCH_REDIS  redis://host:port of the Redis peer (default redis://127.0.0.1:6379)',
  ].join('\n');
}

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n${usage()}\n`);
  process.exit(2);
}

function parseSeconds(value: string, flag: string): number {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds < 0) fail(`${flag} wants a number of seconds`);
  return seconds;
}

function parseOptions() {
  let parsed: ReturnType<typeof parseCli>;
  try {
    parsed = parseCli();
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  }
  const { values } = parsed;
  if (values.help) {
    process.stdout.write(`${usage()}\n`);
    process.exit(0);
  }
  const seconds = parseSeconds(values.seconds, '--seconds');
  if (seconds === 0) fail('--seconds must be more than 0');
  const warmup = parseSeconds(values.warmup, '--warmup');
  const clients = values.clients.split(',').map((item) => {
    const n = Number(item.trim());
    if (!Number.isInteger(n) || n < 1) fail(`--clients: "${item}" is not a positive integer`);
    return n;
  });
  const only = values.only?.split(',').map((item) => item.trim());
  for (const name of only ?? []) {
    const known =
      TARGETS.some((target) => target.name === name) ||
      name in LATENCY ||
      (VERSUS as readonly string[]).includes(name) ||
      name === BIG ||
      name === RSS;
    if (!known) {
      fail(`--only: unknown target "${name}"`);
    }
  }
  const targets = TARGETS.filter((target) => only === undefined || only.includes(target.name));
  const latency = Object.keys(LATENCY).filter((name) => only === undefined || only.includes(name));
  const versus = VERSUS.filter((name) => only === undefined || only.includes(name));
  const big = only?.includes(BIG) ?? false;
  const rss = only?.includes(RSS) ?? false;
  const positive = (value: string, flag: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) fail(`${flag} wants a positive integer`);
    return n;
  };
  const connections = positive(values.connections, '--connections');
  const rounds = positive(values.rounds, '--rounds');
  const peerSeconds = positive(values['peer-seconds'], '--peer-seconds');
  const peerWarmup = positive(values['peer-warmup'], '--peer-warmup');
  const bigLocks = positive(values['big-locks'], '--big-locks');
  const bigEvents = positive(values['big-events'], '--big-events');
  const bigWatchers = positive(values['big-watchers'], '--big-watchers');
  const rssMinutes = positive(values['rss-minutes'], '--rss-minutes');
  const out = values.out === '-' ? undefined : path.resolve(values.out);
  const channelsFlag = values['grpc-channels'];
  const channels: GrpcChannels =
    channelsFlag === 'shared' || channelsFlag === 'per-client'
      ? channelsFlag
      : fail('--grpc-channels is shared or per-client');
  return {
    seconds,
    warmup,
    clients,
    targets,
    latency,
    versus,
    big,
    connections,
    rounds,
    peerSeconds,
    peerWarmup,
    bigLocks,
    bigEvents,
    bigWatchers,
    rss,
    rssMinutes,
    out,
    channels,
    json: values.json,
  };
}

function parseCli() {
  return parseArgs({
    options: {
      seconds: { type: 'string', default: '3' },
      warmup: { type: 'string', default: '0.5' },
      clients: { type: 'string', default: DEFAULT_CLIENTS.join(',') },
      only: { type: 'string' },
      'grpc-channels': { type: 'string', default: 'shared' },
      json: { type: 'boolean', default: false },
      connections: { type: 'string', default: '50' },
      rounds: { type: 'string', default: '2' },
      'peer-seconds': { type: 'string', default: '5' },
      'peer-warmup': { type: 'string', default: '3' },
      'big-locks': { type: 'string', default: '100000' },
      'big-events': { type: 'string', default: '1000000' },
      'big-watchers': { type: 'string', default: '1000' },
      'rss-minutes': { type: 'string', default: '10' },
      out: { type: 'string', default: DEFAULT_OUT },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
}

async function makeDriver(
  target: Target,
  endpoints: Endpoints,
  clients: number,
  channels: GrpcChannels,
): Promise<Driver> {
  if (target.protocol === 'rest') {
    if (endpoints.http === undefined) throw new Error(`${target.name} has no HTTP endpoint`);
    return restDriver(endpoints.httpReplicas ?? endpoints.http, clients);
  }
  if (endpoints.grpc === undefined) throw new Error(`${target.name} has no gRPC endpoint`);
  return grpcDriver(endpoints.grpc, clients, channels);
}

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

function fixed(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '-';
}

function ratio(value: number | null): string {
  return value === null ? '' : `${value.toFixed(2)}x`;
}

function table(measurements: Measurement[]): string {
  const header = ['transport', 'clients', 'pairs/s', 'p50 ms', 'p99 ms', 'errors', 'vs ceiling', 'vs sqlite'];
  const rows = measurements.map((m) => [
    m.target,
    String(m.clients),
    m.pairsPerSec.toFixed(0),
    fixed(m.p50Ms, 2),
    fixed(m.p99Ms, 2),
    m.errors > 0 ? `${m.errors} !` : '0',
    ratio(m.vsCeiling),
    ratio(m.vsSqlite),
  ]);
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column]?.length ?? 0)),
  );
  // Text columns to the left, numbers to the right.
  const format = (row: string[]) =>
    row
      .map((cell, column) => {
        const width = widths[column] ?? 0;
        return column === 0 ? cell.padEnd(width) : cell.padStart(width);
      })
      .join('  ')
      .trimEnd();
  return [format(header), ...rows.map(format)].join('\n');
}

function latencyTable(rows: LatencyRow[]): string {
  const header = ['latency', 'target', 'n', 'p50 ms', 'p99 ms', 'mean ms', 'max ms', 'errors'];
  const cells = rows.map((row) => [
    row.label,
    row.targetLabel,
    String(row.n),
    fixed(row.p50Ms, 2),
    fixed(row.p99Ms, 2),
    fixed(row.meanMs, 2),
    fixed(row.maxMs, 2),
    row.errors > 0 ? `${row.errors} !` : '0',
  ]);
  const widths = header.map((title, column) =>
    Math.max(title.length, ...cells.map((row) => row[column]?.length ?? 0)),
  );
  const format = (row: string[]) =>
    row
      .map((cell, column) => {
        const width = widths[column] ?? 0;
        return column < 2 ? cell.padEnd(width) : cell.padStart(width);
      })
      .join('  ')
      .trimEnd();
  return [format(header), ...cells.map(format)].join('\n');
}

/** The PostgreSQL hand-off next to the bare LISTEN/NOTIFY round trip it builds on. */
function latencySummary(rows: LatencyRow[]): string[] {
  const handoff = rows.find((row) => row.measurement === 'handoff' && row.target === PG_TWO);
  const notify = rows.find((row) => row.measurement === 'notify');
  if (handoff === undefined || notify === undefined || !(handoff.n > 0 && notify.n > 0)) return [];
  return [
    `PostgreSQL hand-off across 2 replicas: p50 ${fixed(handoff.p50Ms, 2)} ms = ` +
      `${(handoff.p50Ms / notify.p50Ms).toFixed(1)}x the bare LISTEN/NOTIFY round trip ` +
      `(p50 ${fixed(notify.p50Ms, 2)} ms)`,
  ];
}

function summary(measurements: Measurement[], postgresSkipped: string | null): string[] {
  const lines: string[] = [];
  const rest = measurements.filter((m) => m.target === SQLITE_REST && m.vsCeiling !== null);
  const best = rest.find((m) => m.clients === 64) ?? rest.at(-1);
  if (best !== undefined && best.vsCeiling !== null) {
    const ceiling = measurements.find((m) => m.target === CEILING && m.clients === best.clients);
    lines.push(
      `REST at ${best.clients} clients: ${best.pairsPerSec.toFixed(0)} pairs/s = ` +
        `${best.vsCeiling.toFixed(2)}x of the node:http ceiling ` +
        `(${ceiling?.pairsPerSec.toFixed(0)} pairs/s)`,
    );
  }
  if (postgresSkipped !== null) {
    lines.push(`PostgreSQL REST: skipped (${postgresSkipped})`);
    return lines;
  }
  const pg = measurements.filter((m) => m.target === PG_ONE || m.target === PG_TWO);
  const clients = pg.some((m) => m.clients === 64) ? 64 : pg.at(-1)?.clients;
  if (clients === undefined) return lines;
  const one = pg.find((m) => m.target === PG_ONE && m.clients === clients);
  const two = pg.find((m) => m.target === PG_TWO && m.clients === clients);
  const parts = [
    one === undefined ? undefined : describeRow(one),
    two === undefined ? undefined : `two replicas: ${describeRow(two)}`,
  ].filter((part) => part !== undefined);
  lines.push(`PostgreSQL REST at ${clients} clients: ${parts.join('; ')}`);
  return lines;
}

/** "X pairs/s = Y of the ceiling, Z of SQLite", without the ratios that are missing. */
function describeRow(m: Measurement): string {
  const ratios = [
    m.vsCeiling === null ? undefined : `${ratio(m.vsCeiling)} of the ceiling`,
    m.vsSqlite === null ? undefined : `${ratio(m.vsSqlite)} of SQLite`,
  ].filter((part) => part !== undefined);
  const pairs = `${m.pairsPerSec.toFixed(0)} pairs/s`;
  return ratios.length === 0 ? pairs : `${pairs} = ${ratios.join(', ')}`;
}

async function main(): Promise<void> {
  const options = parseOptions();
  let targets = options.targets;
  // The servers to start: the throughput targets and those the latency rows use.
  const needed = new Set([
    ...options.latency.flatMap((name) => LATENCY[name] ?? []),
    ...options.versus.flatMap((name) => VERSUS_SERVERS[name]),
  ]);
  let servers = [...TARGETS, ...PEER_SERVERS].filter(
    (target) => targets.includes(target) || needed.has(target.name),
  );
  // Promises, registered before they settle, so that a signal during a start still stops
  // the server (or drops the database) once it is up.
  const started = new Map<string, Promise<Endpoints>>();
  let database: Promise<BenchDatabase> | undefined;
  let postgresSkipped: string | null = null;
  const admin = adminUrl();

  let cleaning: Promise<void> | undefined;
  /** Stops every server, then drops the PostgreSQL database; runs once. */
  const cleanUp = () => {
    cleaning ??= (async () => {
      await Promise.allSettled(
        [...new Set(started.values())].map(async (endpoints) => (await endpoints).stop()),
      );
      const created = await database?.catch(() => undefined);
      if (created !== undefined) {
        await created.drop();
        log(`bench: dropped the database ${created.name}`);
      }
    })();
    return cleaning;
  };
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    log(`bench: ${signal}, stopping the servers`);
    void cleanUp().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const measurements: Measurement[] = [];
  const latencyRows: LatencyRow[] = [];
  let versusReport: VersusReport | undefined;
  let bigReport: BigReport | undefined;
  let rssReport: RssReport | undefined;
  const runTag = Date.now().toString(36);
  try {
    const context: StartContext = {};
    if (
      servers.some((target) => target.store === 'postgres') ||
      options.latency.includes('notify') ||
      options.versus.includes('vs-pgbench')
    ) {
      database = createBenchDatabase(admin);
      try {
        const created = await database;
        context.postgresUrl = created.url;
        log(`bench: PostgreSQL database ${created.name} created through ${maskPassword(admin)}`);
      } catch (err) {
        postgresSkipped = describe(err);
        const names = servers.filter((target) => target.store === 'postgres').map((target) => target.name);
        log(`bench: PostgreSQL rows (${[...names, 'notify'].join(', ')}) skipped: ${postgresSkipped}`);
        targets = targets.filter((target) => target.store !== 'postgres');
        servers = servers.filter((target) => target.store !== 'postgres');
      }
    }
    for (const target of servers) {
      // After a signal, cleanUp() has taken its list: start nothing it would miss.
      if (interrupted) return;
      log(`bench: starting ${target.name}`);
      const starting = target.start(context);
      started.set(target.name, starting);
      await starting;
    }
    for (const clients of options.clients) {
      for (const target of targets) {
        if (interrupted) return;
        const endpoints = await started.get(target.name);
        if (endpoints === undefined) throw new Error(`${target.name} was not started`);
        log(`bench: ${target.name} with ${clients} client(s)...`);
        const driver = await makeDriver(target, endpoints, clients, options.channels);
        let result: LoadResult;
        try {
          result = await runLoad(driver, {
            clients,
            warmupMs: options.warmup * 1000,
            measureMs: options.seconds * 1000,
            runId: `${runTag}-${target.name}-${clients}`,
          });
        } finally {
          driver.close();
        }
        const ceiling = measurements.find((m) => m.target === CEILING && m.clients === clients);
        const sqlite = measurements.find((m) => m.target === SQLITE_REST && m.clients === clients);
        measurements.push({
          target: target.name,
          protocol: target.protocol,
          store: target.store,
          ...result,
          vsCeiling:
            target.name !== CEILING && ceiling !== undefined && ceiling.pairsPerSec > 0
              ? result.pairsPerSec / ceiling.pairsPerSec
              : null,
          vsSqlite:
            target.store === 'postgres' && sqlite !== undefined && sqlite.pairsPerSec > 0
              ? result.pairsPerSec / sqlite.pairsPerSec
              : null,
        });
        if (result.errors > 0) {
          log(`bench:   ${result.errors} error(s), e.g. ${result.errorSamples.join(' | ')}`);
        }
      }
    }
    const measureLatency = async (
      row: Omit<LatencyRow, keyof LatencyResult>,
      measure: () => Promise<LatencyResult>,
    ) => {
      if (interrupted) return;
      log(`bench: ${row.label} on ${row.targetLabel}...`);
      const result = await measure();
      latencyRows.push({ ...row, ...result });
      if (result.errors > 0) {
        log(`bench:   ${result.errors} error(s), e.g. ${result.errorSamples.join(' | ')}`);
      }
    };
    const replicaUrls = async (name: string): Promise<string[] | undefined> => {
      const endpoints = await started.get(name);
      if (endpoints?.http === undefined) return undefined;
      return endpoints.httpReplicas ?? [endpoints.http];
    };
    if (options.latency.includes('handoff')) {
      const handoffTargets: [string, string][] = [
        [SQLITE_REST, 'sqlite'],
        [PG_TWO, 'pg, 2 replicas'],
      ];
      for (const [name, targetLabel] of handoffTargets) {
        const urls = await replicaUrls(name);
        const [holderUrl, waiterUrl = holderUrl] = urls ?? [];
        if (holderUrl === undefined || waiterUrl === undefined) continue;
        const label = 'hand-off (release → next waiter)';
        let parts: HandoffResult | undefined;
        await measureLatency({ measurement: 'handoff', label, target: name, targetLabel }, async () => {
          parts = await measureHandoff({
            holderUrl,
            waiterUrl,
            rounds: HANDOFF_ROUNDS,
            budgetMs: HANDOFF_BUDGET_MS,
            runId: `${runTag}-${name}`,
          });
          return parts.whole;
        });
        if (parts !== undefined) {
          const row = { target: name, targetLabel };
          latencyRows.push(
            { ...row, measurement: 'handoff-release', label: '  = the release answered', ...parts.release },
            { ...row, measurement: 'handoff-after', label: '  + then the waiter', ...parts.afterRelease },
          );
        }
      }
    }
    if (options.latency.includes('watch')) {
      const watchTargets: [string, string][] = [
        [SQLITE_REST, 'sqlite'],
        [PG_TWO, 'pg, 2 replicas'],
      ];
      for (const [name, targetLabel] of watchTargets) {
        const urls = await replicaUrls(name);
        const [writerUrl, watcherUrl = writerUrl] = urls ?? [];
        if (writerUrl === undefined || watcherUrl === undefined) continue;
        await measureLatency(
          { measurement: 'watch', label: 'watch delivery (201 → SSE event)', target: name, targetLabel },
          () =>
            measureWatch({
              writerUrl,
              watcherUrl,
              rounds: WATCH_ROUNDS,
              budgetMs: WATCH_BUDGET_MS,
              runId: `${runTag}-${name}`,
            }),
        );
      }
    }
    const postgresUrl = context.postgresUrl;
    if (options.latency.includes('notify') && postgresUrl !== undefined) {
      await measureLatency(
        {
          measurement: 'notify',
          label: 'LISTEN/NOTIFY round trip',
          target: 'postgres',
          targetLabel: 'postgres',
        },
        () => measureNotify({ url: postgresUrl, rounds: NOTIFY_ROUNDS, budgetMs: NOTIFY_BUDGET_MS }),
      );
    }
    if (options.latency.includes('acquire-ttl')) {
      const acquireTargets: [string, string][] = [
        [SQLITE_REST, 'sqlite'],
        [PG_ONE, 'pg, 1 replica'],
      ];
      for (const [name, targetLabel] of acquireTargets) {
        const url = (await replicaUrls(name))?.[0];
        if (url === undefined) continue;
        for (const ttlSeconds of [ACQUIRE_TTL_SECONDS, undefined]) {
          const withTtl = ttlSeconds !== undefined;
          await measureLatency(
            {
              measurement: withTtl ? 'acquire-ttl' : 'acquire-no-ttl',
              label: withTtl ? `acquire with ttlSeconds=${ttlSeconds}` : 'acquire without TTL',
              target: name,
              targetLabel,
            },
            () =>
              measureAcquire({
                url,
                ttlSeconds,
                warmupMs: options.warmup * 1000,
                measureMs: ACQUIRE_MS,
                runId: `${runTag}-${name}-${withTtl ? 'ttl' : 'no-ttl'}`,
              }),
          );
        }
      }
    }
    if (options.versus.length > 0 && !interrupted) {
      versusReport = await runVersus({
        selected: options.versus,
        connections: options.connections,
        rounds: options.rounds,
        seconds: options.peerSeconds,
        warmupSeconds: options.peerWarmup,
        runTag,
        endpoints: (name) => started.get(name) ?? Promise.resolve(undefined),
        postgresUrl: context.postgresUrl,
        log,
        interrupted: () => interrupted,
      });
    }
    if (options.big && !interrupted) {
      bigReport = await runBig({
        locks: options.bigLocks,
        events: options.bigEvents,
        connections: options.connections,
        rounds: options.rounds,
        seconds: options.peerSeconds,
        warmupSeconds: options.peerWarmup,
        probes: 500,
        watchers: options.bigWatchers,
        runTag,
        log,
        interrupted: () => interrupted,
      });
    }
    if (options.rss && !interrupted) {
      rssReport = await runRss({
        minutes: options.rssMinutes,
        connections: options.connections,
        runTag,
        log,
        interrupted: () => interrupted,
      });
    }
  } finally {
    await cleanUp();
  }

  const errors =
    measurements.reduce((sum, m) => sum + m.errors, 0) +
    latencyRows.reduce((sum, row) => sum + row.errors, 0) +
    (versusReport?.runs.reduce((sum, run) => sum + run.errors, 0) ?? 0) +
    (versusReport?.failed.length ?? 0) +
    [
      ...(bigReport?.empty ?? []),
      ...(bigReport?.seeded ?? []),
      ...(bigReport?.watchers?.without ?? []),
      ...(bigReport?.watchers?.with ?? []),
    ].reduce((sum, run) => sum + run.errors, 0) +
    (bigReport?.probes.reduce((sum, row) => sum + row.errors, 0) ?? 0) +
    (rssReport?.samples.reduce((sum, sample) => sum + sample.errors, 0) ?? 0);
  const lines = [...summary(measurements, postgresSkipped), ...latencySummary(latencyRows)];
  const targetRatios = [
    ...(versusReport?.ratios ?? []),
    ...latencyTargets(latencyRows),
    ...(bigReport?.ratios ?? []),
    ...(rssReport?.ratios ?? []),
  ];
  const report = {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    seconds: options.seconds,
    warmupSeconds: options.warmup,
    maxPairs: MAX_PAIRS,
    grpcChannels: options.channels,
    postgres:
      options.targets.some((target) => target.store === 'postgres') || options.latency.length > 0
        ? { adminUrl: maskPassword(admin), skipped: postgresSkipped }
        : null,
    results: measurements.map((m) => ({
      ...m,
      seconds: round(m.seconds, 3),
      pairsPerSec: round(m.pairsPerSec, 1),
      p50Ms: round(m.p50Ms, 3),
      p99Ms: round(m.p99Ms, 3),
      vsCeiling: m.vsCeiling === null ? null : round(m.vsCeiling, 3),
      vsSqlite: m.vsSqlite === null ? null : round(m.vsSqlite, 3),
    })),
    latency: latencyRows.map((row) => ({
      ...row,
      p50Ms: round(row.p50Ms, 3),
      p99Ms: round(row.p99Ms, 3),
      meanMs: round(row.meanMs, 3),
      maxMs: round(row.maxMs, 3),
    })),
    versus: versusReport === undefined ? null : roundDeep(versusReport),
    big: bigReport === undefined ? null : roundDeep(bigReport),
    rss: rssReport === undefined ? null : roundDeep(rssReport),
    targets: roundDeep(targetRatios),
    errors,
    summary: lines,
  };
  if (options.out !== undefined) {
    mkdirSync(path.dirname(options.out), { recursive: true });
    writeFileSync(options.out, `${JSON.stringify(report, null, 2)}\n`);
    log(`bench: wrote ${path.relative(process.cwd(), options.out) || options.out}`);
  }
  if (options.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    const cpus = os.cpus();
    process.stdout.write(
      `Tracker bench: ${options.seconds} s per measurement after ${options.warmup} s warm-up; ` +
        `node ${process.version}, ${cpus.length} CPU(s) ${cpus[0]?.model ?? ''}; ` +
        `gRPC channels: ${options.channels}\n\n`,
    );
    if (measurements.length > 0) process.stdout.write(`${table(measurements)}\n`);
    if (latencyRows.length > 0) {
      process.stdout.write(`${measurements.length > 0 ? '\n' : ''}${latencyTable(latencyRows)}\n`);
    }
    const capped = measurements.filter((m) => m.capped);
    if (capped.length > 0) {
      process.stdout.write(`\n(stopped at ${MAX_PAIRS} pairs: ${capped.map(label).join(', ')})\n`);
    }
    for (const m of measurements.filter((m) => m.errors > 0)) {
      process.stdout.write(`\n${label(m)}: ${m.errors} error(s): ${m.errorSamples.join(' | ')}`);
    }
    for (const row of latencyRows.filter((row) => row.errors > 0)) {
      process.stdout.write(
        `\n${row.label} on ${row.targetLabel}: ${row.errors} error(s): ${row.errorSamples.join(' | ')}`,
      );
    }
    if (errors > 0) process.stdout.write(`\n\nERRORS: ${errors} failed request(s) in total\n`);
    if (lines.length > 0) process.stdout.write(`\n${lines.join('\n')}\n`);
    if (versusReport !== undefined) process.stdout.write(`\n${versusText(versusReport)}\n`);
    if (bigReport !== undefined) process.stdout.write(`\n${bigText(bigReport)}\n`);
    if (rssReport !== undefined) process.stdout.write(`\n${rssText(rssReport)}\n`);
    if (targetRatios.length > 0) process.stdout.write(`\n${targetsTable(targetRatios)}\n`);
  }
  if (errors > 0) process.exitCode = 1;
}

/** The latency rows' lines of the Targets table (cross-replica watch and hand-off). */
function latencyTargets(rows: LatencyRow[]): TargetRatio[] {
  const lines: TargetRatio[] = [];
  const watch = rows.find((row) => row.measurement === 'watch' && row.target === PG_TWO);
  if (watch !== undefined && watch.n > 0) {
    lines.push(
      ratioLine(
        'cross-replica watch delivery p50, ms',
        watch.p50Ms,
        '<= 10 ms',
        (v) => v <= 10,
        `p99 ${fixed(watch.p99Ms, 2)} ms`,
      ),
    );
  }
  const pg = (measurement: string) =>
    rows.find((row) => row.measurement === measurement && row.target === PG_TWO);
  const [handoff, release, after] = [pg('handoff'), pg('handoff-release'), pg('handoff-after')];
  const notify = rows.find((row) => row.measurement === 'notify');
  if (handoff !== undefined && notify !== undefined && handoff.n > 0 && notify.n > 0) {
    const vsNotify = (ms: number) => (notify.p50Ms > 0 ? ms / notify.p50Ms : null);
    const versus = `vs LISTEN/NOTIFY ${fixed(notify.p50Ms, 2)} ms`;
    lines.push(
      ratioLine(
        'cross-replica hand-off p50 ÷ bare LISTEN/NOTIFY p50',
        vsNotify(handoff.p50Ms),
        '<= 2',
        (v) => v <= 2,
        `${fixed(handoff.p50Ms, 2)} ms ${versus} (from the release sent)`,
      ),
    );
    if (release !== undefined && after !== undefined) {
      lines.push(
        ratioLine(
          '  its part after the release answered ÷ NOTIFY',
          vsNotify(after.p50Ms),
          '(<= 2)',
          (v) => v <= 2,
          `${fixed(after.p50Ms, 2)} ms ${versus}; the release itself ${fixed(release.p50Ms, 2)} ms`,
        ),
      );
    }
  }
  return lines;
}

function textTable(header: string[], rows: string[][], leftColumns: number): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column]?.length ?? 0)),
  );
  const format = (row: string[]) =>
    row
      .map((cell, column) => {
        const width = widths[column] ?? 0;
        return column < leftColumns ? cell.padEnd(width) : cell.padStart(width);
      })
      .join('  ')
      .trimEnd();
  return [format(header), ...rows.map(format)].join('\n');
}

function targetsTable(ratios: TargetRatio[]): string {
  const rows = ratios.map((r) => [
    r.what,
    r.value === null ? '-' : r.value.toFixed(2),
    r.target,
    r.met === null ? '' : r.met ? 'met' : 'NOT MET',
    r.detail,
  ]);
  return `Targets (issue 17)\n${textTable(['what', 'measured', 'target', '', 'figures'], rows, 1)}`;
}

function versusText(report: VersusReport): string {
  const rows = report.runs.map((run) => [
    run.label,
    String(run.round + 1),
    run.requestsPerSec.toFixed(0),
    run.pairsPerSec.toFixed(0),
    fixed(run.p50Ms, 2),
    fixed(run.p99Ms, 2),
    run.errors > 0 ? `${run.errors} !` : '0',
  ]);
  const header = ['peers', 'round', 'req/s', 'pairs/s', 'p50 ms', 'p99 ms', 'errors'];
  const generators = [...new Map(report.runs.map((run) => [run.label, run.generator])).entries()].map(
    ([label, generator]) => `  ${label}: ${generator}`,
  );
  const notes = [
    ...new Set(report.runs.flatMap((run) => (run.note === undefined ? [] : [`  ${run.label}: ${run.note}`]))),
  ];
  return [
    `Peers at ${report.connections} connections, ${report.rounds} interleaved round(s) of ${report.seconds} s, each after ${report.warmupSeconds} s of warm-up`,
    textTable(header, rows, 1),
    'generators:',
    ...generators,
    ...(notes.length > 0 ? ['notes (last round):', ...notes.slice(-8)] : []),
    ...report.skipped.map((reason) => `skipped: ${reason}`),
    ...report.failed.map((reason) => `FAILED: ${reason}`),
  ].join('\n');
}

function bigText(report: BigReport): string {
  const runs = [
    ...report.empty.map((run, i) => [
      'empty store',
      String(i + 1),
      run.requestsPerSec.toFixed(0),
      fixed(run.p50Ms, 2),
      fixed(run.p99Ms, 2),
    ]),
    ...report.seeded.map((run, i) => [
      `${report.locks} locks, ${report.events} events`,
      String(i + 1),
      run.requestsPerSec.toFixed(0),
      fixed(run.p50Ms, 2),
      fixed(run.p99Ms, 2),
    ]),
  ];
  const probes = report.probes.map((row) => [
    `GET ${row.what}`,
    String(row.n),
    fixed(row.p50Ms, 2),
    fixed(row.p99Ms, 2),
    fixed(row.maxMs, 2),
    row.errors > 0 ? `${row.errors} !` : '0',
  ]);
  return [
    `Big store on SQLite (seeded in ${report.seedSeconds.toFixed(1)} s; ${report.generator})`,
    textTable(['store', 'round', 'req/s', 'p50 ms', 'p99 ms'], runs, 1),
    '',
    textTable(
      ['request (seeded store, one at a time)', 'n', 'p50 ms', 'p99 ms', 'max ms', 'errors'],
      probes,
      1,
    ),
    '',
    `RSS of the seeded server: ${fixed(report.rss.startMb, 0)} MB at start, ` +
      `${fixed(report.rss.maxMb, 0)} MB at most, ${fixed(report.rss.endMb, 0)} MB at the end ` +
      `(${report.rss.samples} samples over ${report.rss.seconds.toFixed(0)} s)`,
    ...(report.watchers === null
      ? []
      : [
          '',
          `SSE watchers (${report.watchers.connected} of ${report.watchers.count} connected, each on a service of its own)`,
          textTable(
            ['watchers', 'round', 'req/s', 'p50 ms', 'p99 ms'],
            [
              ...report.watchers.without.map((run, i) => [
                '0',
                String(i + 1),
                fixed(run.requestsPerSec, 0),
                fixed(run.p50Ms, 2),
                fixed(run.p99Ms, 2),
              ]),
              ...report.watchers.with.map((run, i) => [
                String(report.watchers?.count),
                String(i + 1),
                fixed(run.requestsPerSec, 0),
                fixed(run.p50Ms, 2),
                fixed(run.p99Ms, 2),
              ]),
            ],
            1,
          ),
        ]),
  ].join('\n');
}

/** Rounds every number of a report to 3 decimals for the JSON file; NaN becomes null. */
function roundDeep<T>(value: T): T {
  return JSON.parse(
    JSON.stringify(value, (_key, item: unknown) =>
      typeof item === 'number' ? (Number.isFinite(item) ? Number(item.toFixed(3)) : null) : item,
    ),
  ) as T;
}

/** Rounds for the JSON report; NaN (no pair completed) becomes null. */
function round(value: number, digits: number): number | null {
  return Number.isFinite(value) ? Number(value.toFixed(digits)) : null;
}

function label(m: Measurement): string {
  return `${m.target} x${m.clients}`;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
