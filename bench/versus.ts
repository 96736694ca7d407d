// Tracker against its peers, in one run, interleaved: each round measures every pair, the
// peer first in even rounds and Tracker first in odd ones, so that a machine that slows
// down or speeds up during the run moves both sides alike. Each pair uses one load generator
// for both of its sides:
//   vs-http     wrk (acquire a fresh name / GET /unlock/{id})  Tracker REST on SQLite  vs  bare node:http
//   vs-grpc     grpc-js generator (bench/load.ts), unary calls  Tracker gRPC on SQLite  vs  bare grpc-js
//   vs-pgbench  wrk  vs  pgbench -M prepared (same SQL)         Tracker REST on PostgreSQL, 1 and 2 replicas
//   vs-redis    wrk  vs  redis-benchmark SET NX PX + DEL        Tracker REST on SQLite  vs  Redis
// When wrk is not installed, the REST sides fall back to the Node generator of
// bench/load.ts (restDriver, DELETE /lock/{id}, one service per client) and the report says so.
import { grpcDriver } from './load.js';
import {
  available,
  driveLoad,
  measureRest,
  type PeerRun,
  type Pgbench,
  preparePgbench,
  prepareRedis,
  reachable,
  redisAddress,
  restGenerator as restGeneratorOf,
} from './peers.js';
import type { Endpoints } from './targets.js';

export const VERSUS = ['vs-http', 'vs-grpc', 'vs-pgbench', 'vs-redis'] as const;
export type Versus = (typeof VERSUS)[number];

/** The servers (run.ts TARGETS names, and grpc-ceiling) each comparison needs. */
export const VERSUS_SERVERS: Record<Versus, string[]> = {
  'vs-http': ['ceiling', 'rest'],
  'vs-grpc': ['grpc-ceiling', 'rest'],
  'vs-pgbench': ['pg-rest', 'pg-2x-rest'],
  'vs-redis': ['rest'],
};

/** What is measured, by key. */
const MEASURED = {
  'node-http': 'bare node:http',
  'tracker-rest': 'Tracker REST, SQLite',
  'grpc-js': 'bare grpc-js',
  'tracker-grpc': 'Tracker gRPC, SQLite',
  pgbench: 'pgbench -M prepared',
  'tracker-pg': 'Tracker REST, PostgreSQL',
  'tracker-pg-2x': 'Tracker REST, PostgreSQL, 2 replicas',
  redis: 'Redis SET NX PX + DEL',
} as const;
type Measured = keyof typeof MEASURED;

export interface VersusRun extends PeerRun {
  key: Measured;
  label: string;
  generator: string;
  round: number;
}

export interface VersusMean extends PeerRun {
  key: Measured;
  label: string;
  generator: string;
  rounds: number;
}

/** One line of the Targets table. */
export interface TargetRatio {
  what: string;
  value: number | null;
  /** e.g. '>= 0.50', '<= 4', '< 5 ms'. */
  target: string;
  /** Whether value meets target; null when not measured. */
  met: boolean | null;
  detail: string;
}

export interface VersusReport {
  connections: number;
  rounds: number;
  seconds: number;
  warmupSeconds: number;
  /** Set when wrk was missing and the Node generator measured the REST sides. */
  restGenerator: string;
  runs: VersusRun[];
  means: VersusMean[];
  ratios: TargetRatio[];
  skipped: string[];
  /** Runs that failed (left out of the means), with the reason. */
  failed: string[];
}

export interface VersusOptions {
  selected: readonly Versus[];
  connections: number;
  rounds: number;
  seconds: number;
  warmupSeconds: number;
  runTag: string;
  /** The started server of a TARGETS (or grpc-ceiling) name; undefined when it was not started. */
  endpoints(name: string): Promise<Endpoints | undefined>;
  /** The bench database, for pgbench; undefined when PostgreSQL is skipped. */
  postgresUrl: string | undefined;
  log(message: string): void;
  interrupted(): boolean;
}

export async function runVersus(options: VersusOptions): Promise<VersusReport> {
  const { connections, seconds, warmupSeconds, runTag, log } = options;
  const selected = new Set(options.selected);
  const skipped: string[] = [];
  const hasWrk = await available('wrk');
  const restGenerator = restGeneratorOf(hasWrk, connections, seconds);
  if (!hasWrk) log('bench: wrk is not installed; the REST sides use the Node generator (bench/load.ts)');

  if (selected.has('vs-pgbench') && options.postgresUrl === undefined) {
    skipped.push('vs-pgbench: no PostgreSQL database');
    selected.delete('vs-pgbench');
  }
  if (selected.has('vs-pgbench') && !(await available('pgbench'))) {
    skipped.push('vs-pgbench: pgbench is not installed');
    selected.delete('vs-pgbench');
  }
  if (selected.has('vs-redis') && !(await available('redis-benchmark'))) {
    skipped.push('vs-redis: redis-benchmark is not installed');
    selected.delete('vs-redis');
  }
  const redisAt = redisAddress();
  if (selected.has('vs-redis') && !(await reachable(redisAt.host, redisAt.port))) {
    skipped.push(`vs-redis: nothing listens on ${redisAt.host}:${redisAt.port} (TRACKER_BENCH_REDIS)`);
    selected.delete('vs-redis');
  }
  let pgbench: Pgbench | undefined;
  if (selected.has('vs-pgbench') && options.postgresUrl !== undefined)
    pgbench = await preparePgbench(options.postgresUrl);
  const redis = prepareRedis(redisAt.host, redisAt.port);

  const need = async (name: string): Promise<Endpoints> => {
    const endpoints = await options.endpoints(name);
    if (endpoints === undefined) throw new Error(`the ${name} server was not started`);
    return endpoints;
  };

  const run = { connections, seconds, warmupSeconds };
  const rest = async (name: string, tag: string): Promise<PeerRun> => {
    const endpoints = await need(name);
    const urls = endpoints.httpReplicas ?? (endpoints.http === undefined ? [] : [endpoints.http]);
    if (urls.length === 0) throw new Error(`${name} has no REST endpoint`);
    return measureRest(urls, hasWrk, { ...run, tag });
  };
  const grpc = async (name: string, tag: string): Promise<PeerRun> => {
    const endpoints = await need(name);
    if (endpoints.grpc === undefined) throw new Error(`${name} has no gRPC endpoint`);
    return driveLoad(await grpcDriver(endpoints.grpc, connections, 'shared'), { ...run, tag });
  };

  const grpcGenerator = `grpc-js generator (bench/load.ts), ${connections} concurrent calls, one channel`;
  const steps: Record<Measured, { generator: string; measure(tag: string): Promise<PeerRun> }> = {
    'node-http': { generator: restGenerator, measure: (tag) => rest('ceiling', tag) },
    'tracker-rest': { generator: restGenerator, measure: (tag) => rest('rest', tag) },
    'grpc-js': { generator: grpcGenerator, measure: (tag) => grpc('grpc-ceiling', tag) },
    'tracker-grpc': { generator: grpcGenerator, measure: (tag) => grpc('rest', tag) },
    pgbench: {
      generator: `pgbench -M prepared -c${connections} -j1 -T${Math.max(1, Math.round(seconds))}`,
      measure: async (tag) => {
        if (pgbench === undefined) throw new Error('pgbench is not prepared');
        return pgbench.run({ clients: connections, seconds, warmupSeconds, tag });
      },
    },
    'tracker-pg': { generator: restGenerator, measure: (tag) => rest('pg-rest', tag) },
    'tracker-pg-2x': { generator: restGenerator, measure: (tag) => rest('pg-2x-rest', tag) },
    redis: {
      generator: `redis-benchmark -c ${connections} (SET NX PX, then DEL)`,
      measure: () => redis.run({ clients: connections, seconds }),
    },
  };

  // Groups measured back to back; the order inside a group flips every round.
  const groups: Measured[][] = [];
  if (selected.has('vs-http')) groups.push(['node-http', 'tracker-rest']);
  if (selected.has('vs-redis')) groups.push(selected.has('vs-http') ? ['redis'] : ['redis', 'tracker-rest']);
  if (selected.has('vs-grpc')) groups.push(['grpc-js', 'tracker-grpc']);
  if (selected.has('vs-pgbench')) groups.push(['pgbench', 'tracker-pg', 'tracker-pg-2x']);

  const runs: VersusRun[] = [];
  const failed: string[] = [];
  try {
    for (let round = 0; round < options.rounds; round++) {
      for (const group of groups) {
        const ordered = round % 2 === 0 ? group : [...group].reverse();
        for (const key of ordered) {
          if (options.interrupted()) return finish();
          const step = steps[key];
          log(`bench: ${MEASURED[key]} (round ${round + 1}/${options.rounds})...`);
          let result: PeerRun;
          try {
            result = await step.measure(`${runTag}-${key}-${round}`);
          } catch (err) {
            // One failed run (a peer's tool refused, a server full) costs its figure, not the bench.
            const reason = err instanceof Error ? err.message.split('\n').slice(0, 2).join(' ') : String(err);
            failed.push(`${MEASURED[key]}, round ${round + 1}: ${reason}`);
            log(`bench:   failed: ${reason}`);
            continue;
          }
          runs.push({ key, label: MEASURED[key], generator: step.generator, round, ...result });
          if (result.errors > 0) log(`bench:   ${result.errors} error(s) ${result.note ?? ''}`);
        }
      }
    }
  } finally {
    await pgbench?.close();
  }
  return finish();

  function finish(): VersusReport {
    const means = meansOf(runs);
    return {
      connections,
      rounds: options.rounds,
      seconds,
      warmupSeconds,
      restGenerator,
      runs,
      means,
      ratios: versusRatios(means, connections),
      skipped,
      failed,
    };
  }
}

function mean(values: number[]): number {
  const finite = values.filter((value) => Number.isFinite(value));
  return finite.length === 0 ? Number.NaN : finite.reduce((sum, value) => sum + value, 0) / finite.length;
}

function meansOf(runs: VersusRun[]): VersusMean[] {
  const keys = [...new Set(runs.map((run) => run.key))];
  return keys.map((key) => {
    const mine = runs.filter((run) => run.key === key);
    const first = mine[0];
    return {
      key,
      label: first?.label ?? key,
      generator: first?.generator ?? '',
      rounds: mine.length,
      requestsPerSec: mean(mine.map((run) => run.requestsPerSec)),
      pairsPerSec: mean(mine.map((run) => run.pairsPerSec)),
      p50Ms: mean(mine.map((run) => run.p50Ms)),
      p99Ms: mean(mine.map((run) => run.p99Ms)),
      errors: mine.reduce((sum, run) => sum + run.errors, 0),
      ...(first?.note === undefined ? {} : { note: first.note }),
    };
  });
}

export function ratioLine(
  what: string,
  value: number | null,
  target: string,
  met: (value: number) => boolean,
  detail: string,
): TargetRatio {
  const measured = value !== null && Number.isFinite(value);
  return { what, value: measured ? value : null, target, met: measured ? met(value) : null, detail };
}

function versusRatios(means: VersusMean[], connections: number): TargetRatio[] {
  const get = (key: Measured) => means.find((m) => m.key === key);
  const divide = (a: number | undefined, b: number | undefined) =>
    a === undefined || b === undefined || !(b > 0) ? null : a / b;
  const figure = (value: number | undefined, unit: string) =>
    value === undefined || !Number.isFinite(value) ? '-' : `${value.toFixed(0)} ${unit}`;
  const lines: TargetRatio[] = [];
  /** One "ours ÷ theirs ≥ least" line, when both sides were measured. */
  const atLeast = (
    what: string,
    ours: Measured,
    theirs: Measured,
    field: 'requestsPerSec' | 'pairsPerSec',
    least: number,
  ) => {
    const a = get(ours);
    const b = get(theirs);
    if (a === undefined || b === undefined) return;
    const unit = field === 'requestsPerSec' ? 'req/s' : 'pairs/s';
    lines.push(
      ratioLine(
        what,
        divide(a[field], b[field]),
        `>= ${least.toFixed(2)}`,
        (v) => v >= least,
        `${figure(a[field], unit)} vs ${figure(b[field], unit)}`,
      ),
    );
  };
  atLeast('REST on SQLite, requests/s ÷ bare node:http', 'tracker-rest', 'node-http', 'requestsPerSec', 0.5);
  atLeast('REST on PostgreSQL, pairs/s ÷ pgbench', 'tracker-pg', 'pgbench', 'pairsPerSec', 1);
  atLeast('REST on PostgreSQL, 2 replicas, pairs/s ÷ pgbench', 'tracker-pg-2x', 'pgbench', 'pairsPerSec', 1);
  atLeast('PostgreSQL, 2 replicas ÷ 1 replica, pairs/s', 'tracker-pg-2x', 'tracker-pg', 'pairsPerSec', 1);
  atLeast('gRPC on SQLite, pairs/s ÷ bare grpc-js', 'tracker-grpc', 'grpc-js', 'pairsPerSec', 0.7);
  atLeast(
    'Tracker SQLite REST pairs/s ÷ Redis SET NX PX + DEL',
    'tracker-rest',
    'redis',
    'pairsPerSec',
    0.33,
  );
  const tracker = get('tracker-rest');
  if (tracker !== undefined) {
    lines.push(
      ratioLine(
        `p99 ÷ p50 at ${connections} connections, SQLite REST`,
        divide(tracker.p99Ms, tracker.p50Ms),
        '<= 4',
        (v) => v <= 4,
        `p99 ${tracker.p99Ms.toFixed(2)} ms, p50 ${tracker.p50Ms.toFixed(2)} ms (per request)`,
      ),
    );
  }
  return lines;
}
