// `npm run bench -- --only big`: what Tracker costs as the work grows (issue 17, point 7),
// on SQLite. Two servers, each on its own file: one empty, one seeded before it starts with
// 100,000 held locks and 1,000,000 history events (written straight into the file, in one
// transaction, as the current schema holds them: seconds, not the hours the API would take).
// Then, interleaved: acquire/release throughput on both (the REST workload of the peers:
// wrk, or the Node generator when wrk is missing), and, on the seeded one, the latency of
// `GET /locks/list?service=…`, `?who=…` and of a history page (the newest 100, and one
// service's), each asked one at a time on a keep-alive connection. The seeded server's RSS
// is sampled every 500 ms over the whole run.
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { percentile } from './load.js';
import { available, measureRest, type PeerRun, restGenerator } from './peers.js';
import { type Endpoints, startTracker } from './targets.js';
import { ratioLine, type TargetRatio } from './versus.js';

export interface BigOptions {
  locks: number;
  events: number;
  connections: number;
  rounds: number;
  seconds: number;
  warmupSeconds: number;
  /** Requests per latency probe. */
  probes: number;
  /** SSE watchers connected for the watchers measurement (0: none). */
  watchers: number;
  runTag: string;
  log(message: string): void;
  interrupted(): boolean;
}

export interface Probe {
  what: string;
  n: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
}

export interface BigReport {
  locks: number;
  events: number;
  seedSeconds: number;
  generator: string;
  empty: PeerRun[];
  seeded: PeerRun[];
  /** Mean requests/s, seeded ÷ empty. */
  throughputRatio: number | null;
  probes: Probe[];
  rss: { startMb: number; maxMb: number; endMb: number; samples: number; seconds: number };
  /**
   * Throughput of a third server on an empty file, interleaved: with no watcher, and with
   * `count` SSE watchers connected, each watching a service of its own (a dashboard per
   * pipeline) that the load never touches.
   */
  watchers: { count: number; connected: number; without: PeerRun[]; with: PeerRun[] } | null;
  ratios: TargetRatio[];
}

const SERVICES_PER_WHO = 10;
const HISTORY_SERVICES = 10_000;

/**
 * Writes `locks` held locks (service big-<i>, who who-<i / 10>) and enough history events to
 * reach `events` into a migrated Tracker SQLite file. The store's SQL functions are given
 * here so that the schema's triggers (if any) run as they do in the server.
 */
export function seed(file: string, locks: number, events: number): void {
  const db = new Database(file);
  try {
    const now = Date.now();
    db.pragma('synchronous = OFF');
    db.function('tracker_now', { deterministic: false }, () => now);
    db.function('tracker_context', { deterministic: false }, () => null);
    const columns = new Set(
      (db.prepare('SELECT name FROM pragma_table_info(?)').all('locks') as { name: string }[]).map(
        (c) => c.name,
      ),
    );
    const withToken = columns.has('fencing_token');
    const service = db.prepare(
      'INSERT INTO services (service, last_token) VALUES (?, 1) ON CONFLICT (service) DO NOTHING',
    );
    const lock = db.prepare(
      withToken
        ? 'INSERT INTO locks (id, service, who, created_at, fencing_token) VALUES (?, ?, ?, ?, 1)'
        : 'INSERT INTO locks (id, service, who, created_at) VALUES (?, ?, ?, ?)',
    );
    const event = db.prepare(
      'INSERT INTO lock_events (at, type, lock_id, service, who, created_at, waiters, held_ms) ' +
        'VALUES (?, ?, ?, ?, ?, ?, 0, ?)',
    );
    db.transaction(() => {
      for (let i = 0; i < locks; i++) {
        const name = `big-${i}`;
        service.run(name);
        lock.run(
          `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`,
          name,
          whoOf(i),
          now - locks + i,
        );
      }
      const have = (db.prepare('SELECT count(*) AS n FROM lock_events').get() as { n: number }).n;
      const missing = Math.max(0, events - have);
      for (let i = 0; i < missing; i++) {
        const pair = Math.floor(i / 2);
        const released = i % 2 === 1;
        const at = now - 2 * (missing - i);
        event.run(
          at,
          released ? 'released' : 'acquired',
          `10000000-0000-4000-8000-${pair.toString(16).padStart(12, '0')}`,
          `hist-${pair % HISTORY_SERVICES}`,
          `hist-who-${pair % 1000}`,
          released ? at - 2 : at,
          released ? 2 : null,
        );
      }
    })();
  } finally {
    db.close();
  }
}

function whoOf(i: number): string {
  return `who-${Math.floor(i / SERVICES_PER_WHO)}`;
}

/** VmRSS of a process, in MB; NaN when /proc cannot tell (not Linux, process gone). */
export function rssMb(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
    return kb === undefined ? Number.NaN : Number(kb) / 1024;
  } catch {
    return Number.NaN;
  }
}

/** Time budget of one latency probe: it stops after `n` requests or this, whichever is first. */
const PROBE_BUDGET_MS = 15_000;

/** Up to `n` GETs one after the other on one keep-alive socket; latency of each, in ms. */
async function probe(
  baseUrl: string,
  what: string,
  n: number,
  pathOf: (i: number) => string,
): Promise<Probe> {
  const url = new URL(baseUrl);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const latencies = new Float64Array(n);
  let errors = 0;
  let done = 0;
  const deadline = performance.now() + PROBE_BUDGET_MS;
  try {
    for (let i = 0; i < n && performance.now() < deadline; i++) {
      const t0 = performance.now();
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.get(
          { agent, hostname: url.hostname, port: Number(url.port), path: pathOf(i) },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
            res.on('error', reject);
          },
        );
        req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
        req.on('error', reject);
      }).catch(() => 0);
      latencies[i] = performance.now() - t0;
      done++;
      if (status !== 200) errors++;
    }
  } finally {
    agent.destroy();
  }
  const sorted = latencies.subarray(0, done).sort();
  return {
    what,
    n: done,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    maxMs: sorted[sorted.length - 1] ?? Number.NaN,
    errors,
  };
}

/**
 * Opens `count` SSE streams (`GET /api/v1alpha1/watch?service=watched-i`), each on a
 * connection of its own, and resolves once each has answered 200 (or failed); `close` ends
 * them all.
 */
async function connectWatchers(base: string, count: number): Promise<{ connected: number; close(): void }> {
  const agent = new http.Agent({ keepAlive: false, maxSockets: count });
  const requests: http.ClientRequest[] = [];
  const opened = await Promise.all(
    Array.from(
      { length: count },
      (_, i) =>
        new Promise<boolean>((resolve) => {
          const request = http.get(
            `${base}/api/v1alpha1/watch?service=watched-${i}`,
            { agent, timeout: 30_000 },
            (response) => {
              // Read and drop what the stream sends (the snapshot, the keep-alives).
              response.resume();
              resolve(response.statusCode === 200);
            },
          );
          request.on('error', () => resolve(false));
          request.on('timeout', () => request.destroy());
          requests.push(request);
        }),
    ),
  );
  return {
    connected: opened.filter(Boolean).length,
    close() {
      for (const request of requests) request.destroy();
      agent.destroy();
    },
  };
}

export async function runBig(options: BigOptions): Promise<BigReport> {
  const { log, locks, events } = options;
  const dir = await mkdtemp(path.join(tmpdir(), 'tracker-bench-big-'));
  const servers: Endpoints[] = [];
  let sampler: NodeJS.Timeout | undefined;
  try {
    const emptyUrl = `sqlite:${path.join(dir, 'empty.db')}`;
    const seededFile = path.join(dir, 'seeded.db');
    // Let the server create and migrate the file, then stop it and seed.
    log('bench: big: migrating the seeded file...');
    await (await startTracker({ databaseUrl: `sqlite:${seededFile}`, name: 'big migrate' })).stop();
    log(`bench: big: seeding ${locks} locks and ${events} events...`);
    const seedStart = performance.now();
    seed(seededFile, locks, events);
    const seedSeconds = (performance.now() - seedStart) / 1000;
    log(`bench: big: seeded in ${seedSeconds.toFixed(1)} s`);

    const empty = await startTracker({ databaseUrl: emptyUrl, name: 'big empty' });
    servers.push(empty);
    const seeded = await startTracker({ databaseUrl: `sqlite:${seededFile}`, name: 'big seeded' });
    servers.push(seeded);
    const rssStart = rssMb(seeded.pid);
    let rssMax = rssStart;
    let samples = 1;
    const sampleStart = performance.now();
    sampler = setInterval(() => {
      const mb = rssMb(seeded.pid);
      if (Number.isFinite(mb)) {
        rssMax = Math.max(rssMax, mb);
        samples++;
      }
    }, 500);

    const hasWrk = await available('wrk');
    const generator = restGenerator(hasWrk, options.connections);
    const measure = async (endpoints: Endpoints, tag: string): Promise<PeerRun> => {
      const url = endpoints.http;
      if (url === undefined) throw new Error('no REST endpoint');
      return measureRest([url], hasWrk, { ...options, tag });
    };

    const probes: Probe[] = [];
    const runProbes = async () => {
      const base = seeded.http;
      if (base === undefined) return;
      const api = '/api/v1alpha1';
      const n = options.probes;
      // Spread over the whole key range: i * a large odd step, modulo the count.
      const pick = (i: number, count: number) => (i * 7919) % count;
      log('bench: big: list and history latency on the seeded server...');
      probes.push(
        await probe(
          base,
          `locks/list?service= (${locks} locks held)`,
          n,
          (i) => `${api}/locks/list?service=big-${pick(i, locks)}`,
        ),
        await probe(
          base,
          `locks/list?who= (${SERVICES_PER_WHO} locks each)`,
          n,
          (i) => `${api}/locks/list?who=${whoOf(pick(i, locks))}`,
        ),
        await probe(base, `history?limit=100 (${events} events)`, n, () => `${api}/history?limit=100`),
        await probe(
          base,
          'history?service=…&limit=100',
          n,
          (i) => `${api}/history?service=hist-${pick(i, HISTORY_SERVICES)}&limit=100`,
        ),
        await probe(
          base,
          'history?limit=100&before=… (deep page)',
          n,
          (i) => `${api}/history?limit=100&before=${1 + pick(i, Math.max(1, events - 100)) + 100}`,
        ),
      );
    };

    const emptyRuns: PeerRun[] = [];
    const seededRuns: PeerRun[] = [];
    await runProbes();
    for (let round = 0; round < options.rounds; round++) {
      const order: [Endpoints, PeerRun[], string][] = [
        [empty, emptyRuns, 'empty'],
        [seeded, seededRuns, 'seeded'],
      ];
      for (const [endpoints, runs, name] of round % 2 === 0 ? order : order.reverse()) {
        if (options.interrupted()) break;
        log(`bench: big: throughput on the ${name} store (round ${round + 1}/${options.rounds})...`);
        runs.push(await measure(endpoints, `${options.runTag}-big-${name}-${round}`));
      }
    }
    const rssEnd = rssMb(seeded.pid);
    clearInterval(sampler);
    sampler = undefined;

    let watched: BigReport['watchers'] = null;
    if (options.watchers > 0 && !options.interrupted()) {
      const count = options.watchers;
      const server = await startTracker({
        databaseUrl: `sqlite:${path.join(dir, 'watched.db')}`,
        name: 'big watched',
        args: ['--max-watchers', String(count * 2), '--max-watchers-per-token', String(count * 2)],
      });
      servers.push(server);
      const url = server.http;
      if (url === undefined) throw new Error('no REST endpoint');
      watched = { count, connected: 0, without: [], with: [] };
      for (let round = 0; round < options.rounds && !options.interrupted(); round++) {
        // Without first in even rounds, with first in odd ones.
        for (const withWatchers of round % 2 === 0 ? [false, true] : [true, false]) {
          if (options.interrupted()) break;
          log(`bench: big: throughput with ${withWatchers ? count : 0} SSE watchers (round ${round + 1})...`);
          if (!withWatchers) {
            watched.without.push(await measure(server, `${options.runTag}-watch0-${round}`));
            continue;
          }
          const crowd = await connectWatchers(url, count);
          try {
            watched.connected = Math.max(watched.connected, crowd.connected);
            watched.with.push(await measure(server, `${options.runTag}-watch${count}-${round}`));
          } finally {
            crowd.close();
          }
        }
      }
    }

    const meanRps = (runs: PeerRun[]) =>
      runs.length === 0 ? Number.NaN : runs.reduce((sum, run) => sum + run.requestsPerSec, 0) / runs.length;
    const emptyRps = meanRps(emptyRuns);
    const seededRps = meanRps(seededRuns);
    const throughputRatio = emptyRps > 0 && Number.isFinite(seededRps) ? seededRps / emptyRps : null;
    const ratios: TargetRatio[] = [
      ratioLine(
        `throughput with ${locks} locks held ÷ empty store, SQLite`,
        throughputRatio,
        '>= 0.80',
        (v) => v >= 0.8,
        `${seededRps.toFixed(0)} vs ${emptyRps.toFixed(0)} req/s`,
      ),
    ];
    if (watched !== null) {
      const without = meanRps(watched.without);
      const withWatchers = meanRps(watched.with);
      ratios.push(
        ratioLine(
          `throughput with ${watched.count} SSE watchers ÷ none, SQLite`,
          without > 0 && Number.isFinite(withWatchers) ? withWatchers / without : null,
          '>= 0.80',
          (v) => v >= 0.8,
          `${withWatchers.toFixed(0)} vs ${without.toFixed(0)} req/s, ${watched.connected} connected`,
        ),
      );
    }
    const limits: [number, number][] = [
      [0, 5],
      [1, 5],
      [2, 10],
      [3, 10],
      [4, 10],
    ];
    for (const [index, limitMs] of limits) {
      const row = probes[index];
      if (row === undefined) continue;
      ratios.push(
        ratioLine(
          `GET ${row.what}, p99 ms`,
          row.p99Ms,
          `< ${limitMs} ms`,
          (v) => v < limitMs,
          `p50 ${row.p50Ms.toFixed(2)} ms`,
        ),
      );
    }
    return {
      locks,
      events,
      seedSeconds,
      generator,
      empty: emptyRuns,
      seeded: seededRuns,
      throughputRatio,
      probes,
      rss: {
        startMb: rssStart,
        maxMb: rssMax,
        endMb: rssEnd,
        samples,
        seconds: (performance.now() - sampleStart) / 1000,
      },
      watchers: watched,
      ratios,
    };
  } finally {
    if (sampler !== undefined) clearInterval(sampler);
    await Promise.allSettled(servers.map((server) => server.stop()));
    await rm(dir, { recursive: true, force: true });
  }
}
