// `npm run bench`: acquire+release throughput and latency of Tracker over REST and gRPC on
// SQLite, and over REST on PostgreSQL with one and two replicas, next to a bare node:http
// server answering the same REST calls (the "ceiling").
//
//   node --import tsx bench/run.ts [--seconds 3] [--warmup 0.5] [--clients 1,16,64]
//                                  [--only ceiling,rest,grpc,pg-rest,pg-2x-rest]
//                                  [--grpc-channels shared] [--json]
//
// For each client count, the targets are measured one after the other (ceiling, rest,
// grpc, pg-rest, pg-2x-rest) so that, on a small machine shared by the generator and the
// servers, every target sees the same conditions. Servers are started once and stopped at
// the end. The PostgreSQL targets run on a fresh database, tracker_bench_<hex>, created
// through TRACKER_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test) and dropped
// WITH (FORCE) at the end; when that server cannot be reached, their rows are skipped.
// The exit code is 1 when any request failed.
import os from 'node:os';
import { parseArgs } from 'node:util';
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
import {
  type Endpoints,
  type StartContext,
  type Store,
  shared,
  startCeiling,
  startReplicas,
  startTracker,
  type Target,
} from './targets.js';

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
const CEILING = 'ceiling';
/** The SQLite REST target, reference of the "vs sqlite" column. */
const SQLITE_REST = 'rest';
const PG_ONE = 'pg-rest';
const PG_TWO = 'pg-2x-rest';
const DEFAULT_CLIENTS = [1, 16, 64];

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
    `  --only LIST          targets among ${TARGETS.map((t) => t.name).join(',')} (default all)`,
    '  --grpc-channels M    shared (one channel for all clients, default) or per-client',
    '  --json               print the results as one JSON object instead of a table',
    'environment:',
    `  TRACKER_BENCH_PG_URL admin URL where the PostgreSQL targets' database is created`,
    '                       and dropped (default postgres://postgres@127.0.0.1:5432/test)',
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
    if (!TARGETS.some((target) => target.name === name)) fail(`--only: unknown target "${name}"`);
  }
  const targets = TARGETS.filter((target) => only === undefined || only.includes(target.name));
  const channelsFlag = values['grpc-channels'];
  const channels: GrpcChannels =
    channelsFlag === 'shared' || channelsFlag === 'per-client'
      ? channelsFlag
      : fail('--grpc-channels is shared or per-client');
  return { seconds, warmup, clients, targets, channels, json: values.json };
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
  const runTag = Date.now().toString(36);
  try {
    const context: StartContext = {};
    if (targets.some((target) => target.store === 'postgres')) {
      database = createBenchDatabase(admin);
      try {
        const created = await database;
        context.postgresUrl = created.url;
        log(`bench: PostgreSQL database ${created.name} created through ${maskPassword(admin)}`);
      } catch (err) {
        postgresSkipped = describe(err);
        const names = targets.filter((target) => target.store === 'postgres').map((target) => target.name);
        log(`bench: PostgreSQL rows (${names.join(', ')}) skipped: ${postgresSkipped}`);
        targets = targets.filter((target) => target.store !== 'postgres');
      }
    }
    for (const target of targets) {
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
  } finally {
    await cleanUp();
  }

  const errors = measurements.reduce((sum, m) => sum + m.errors, 0);
  const lines = summary(measurements, postgresSkipped);
  if (options.json) {
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
      postgres: options.targets.some((target) => target.store === 'postgres')
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
      errors,
      summary: lines,
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    const cpus = os.cpus();
    process.stdout.write(
      `Tracker bench: ${options.seconds} s per measurement after ${options.warmup} s warm-up; ` +
        `node ${process.version}, ${cpus.length} CPU(s) ${cpus[0]?.model ?? ''}; ` +
        `gRPC channels: ${options.channels}\n\n`,
    );
    process.stdout.write(`${table(measurements)}\n`);
    const capped = measurements.filter((m) => m.capped);
    if (capped.length > 0) {
      process.stdout.write(`\n(stopped at ${MAX_PAIRS} pairs: ${capped.map(label).join(', ')})\n`);
    }
    for (const m of measurements.filter((m) => m.errors > 0)) {
      process.stdout.write(`\n${label(m)}: ${m.errors} error(s): ${m.errorSamples.join(' | ')}`);
    }
    if (errors > 0) process.stdout.write(`\n\nERRORS: ${errors} failed request(s) in total\n`);
    if (lines.length > 0) process.stdout.write(`\n${lines.join('\n')}\n`);
  }
  if (errors > 0) process.exitCode = 1;
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
