// `npm run bench`, second part: what a crowd costs the server. Run after bench/run.ts.
//
//   node --import tsx bench/abuse.ts [--waiters 1000,10000] [--pg-waiters 1000]
//                                     [--idle 20000] [--only waiters,idle-grpc] [--json]
//
// waiters: N requests wait in line (1,000 per service, N / 1,000 services, one holder each),
//   each on its own connection. Measured on the server process: RSS before and with them all
//   waiting; /healthz latency while they wait; then "hang up" (every client goes away, the
//   probe's storm) and "hand-off" (the holders release; each waiter, once granted, releases
//   at once, so the whole line is granted one after the other): the server's CPU seconds and
//   the wall time until the queue is empty, and /healthz latency meanwhile; requests that got
//   anything else than a wait (503, 429). SQLite, then PostgreSQL (--pg-waiters).
// idle-grpc: N TCP connections to the gRPC port that send the HTTP/2 preface and nothing more,
//   100 per source address (127.0.0.1, 127.0.0.2, ...): how many the caps let in and refuse,
//   /healthz latency and RSS while they are held.
// Every loop is bounded in count and time; everything talks to 127.0.0.1 only.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { adminUrl, createBenchDatabase, describe } from './postgres.js';
import { type Endpoints, startTracker } from './targets.js';

const PER_SERVICE = 1000;
const WAIT_SECONDS = 300;
/** Longest any phase may take before the bench gives up on it. */
const PHASE_BUDGET_MS = 180_000;
const CLOCK_TICKS = 100;

const log = (line: string) => process.stderr.write(`${line}\n`);

/** The process's CPU seconds so far (user + system), from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** The process's resident memory in MB, from /proc. */
function rssMb(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Math.round(Number(match?.[1] ?? 0) / 1024);
}

/** One request on a connection of its own; resolves with the status (0: no answer). */
function request(
  base: string,
  method: string,
  path: string,
  body?: unknown,
): { done: Promise<{ status: number; body: string }>; cancel(): void } {
  const url = new URL(path, base);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  let req: http.ClientRequest | undefined;
  const done = new Promise<{ status: number; body: string }>((resolve) => {
    req = http.request(
      url,
      {
        method,
        agent: false,
        // A POST without a body still says it is JSON: the server refuses body-less changes
        // without a header a browser form could not send.
        headers: method === 'POST' ? { 'content-type': 'application/json' } : {},
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', () => resolve({ status: 0, body: text }));
      },
    );
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.end(payload);
  });
  return { done, cancel: () => req?.destroy() };
}

/** tracker_waiters from /metrics (the store's count of live waiters). */
async function waiters(base: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(30_000) })).text();
  return Number(/^tracker_waiters (\d+)/m.exec(text)?.[1] ?? Number.NaN);
}

async function until(what: string, check: () => Promise<boolean>, budgetMs = PHASE_BUDGET_MS): Promise<void> {
  const started = performance.now();
  for (let round = 0; performance.now() - started < budgetMs; round++) {
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, Math.min(500, 20 * (round + 1))));
  }
  throw new Error(`gave up after ${budgetMs / 1000} s waiting for ${what}`);
}

interface Probe {
  stop(): Promise<{ p50Ms: number; maxMs: number; n: number; failed: number }>;
}

/** GET /healthz over and over (one at a time, 50 ms apart) until stopped. */
function probeHealth(base: string): Probe {
  const samples: number[] = [];
  let failed = 0;
  let running = true;
  const loop = (async () => {
    for (let i = 0; running && i < 100_000; i++) {
      const started = performance.now();
      const { status } = await request(base, 'GET', '/healthz').done;
      if (status === 200) samples.push(performance.now() - started);
      else failed++;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      const sorted = [...samples].sort((a, b) => a - b);
      return {
        p50Ms: sorted[Math.floor(sorted.length / 2)] ?? Number.NaN,
        maxMs: sorted.at(-1) ?? Number.NaN,
        n: samples.length,
        failed,
      };
    },
  };
}

interface WaitersRow {
  store: string;
  waiters: number;
  rssBeforeMb: number;
  rssWaitingMb: number;
  healthWaiting: Awaited<ReturnType<Probe['stop']>>;
  refused: Record<string, number>;
  hangUp: { cpuS: number; wallS: number; health: Awaited<ReturnType<Probe['stop']>> };
  handOff: { cpuS: number; wallS: number; granted: number; health: Awaited<ReturnType<Probe['stop']>> };
}

/** Queues `count` waiting acquires; resolves once the store counts them all (or they were answered). */
async function queueUp(base: string, services: string[], count: number, tag: string) {
  const calls = Array.from({ length: count }, (_, i) =>
    request(base, 'POST', '/api/v1alpha1/lock', {
      service: services[i % services.length],
      who: `${tag}-${i}`,
      waitSeconds: WAIT_SECONDS,
    }),
  );
  const answered = new Map<number, number>();
  for (const call of calls) {
    void call.done.then(({ status }) => answered.set(status, (answered.get(status) ?? 0) + 1));
  }
  const settledCount = () => [...answered.values()].reduce((sum, n) => sum + n, 0);
  await until(`${count} waiters in line`, async () => (await waiters(base)) + settledCount() >= count);
  return { calls, answered };
}

async function measureWaiters(endpoints: Endpoints, store: string, count: number): Promise<WaitersRow> {
  const base = endpoints.http ?? '';
  const pid = endpoints.pid ?? 0;
  const services = Array.from({ length: Math.ceil(count / PER_SERVICE) }, (_, i) => `crowd-${count}-${i}`);
  const take = async () => {
    const holders: string[] = [];
    for (const service of services) {
      const { status, body } = await request(base, 'POST', '/api/v1alpha1/lock', { service, who: 'holder' })
        .done;
      if (status !== 201) throw new Error(`holder of ${service}: ${status} ${body}`);
      holders.push((JSON.parse(body) as { id: string }).id);
    }
    return holders;
  };
  const rssBeforeMb = rssMb(pid);

  // 1. Everyone waits, then everyone hangs up.
  const holders = await take();
  const line = await queueUp(base, services, count, 'gone');
  const rssWaitingMb = rssMb(pid);
  const waitingProbe = probeHealth(base);
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const healthWaiting = await waitingProbe.stop();
  const refused = Object.fromEntries(line.answered);
  let cpu = cpuSeconds(pid);
  let started = performance.now();
  const hangUpProbe = probeHealth(base);
  for (const call of line.calls) call.cancel();
  await until('the line to empty after the hang-up', async () => (await waiters(base)) === 0);
  const hangUp = {
    cpuS: cpuSeconds(pid) - cpu,
    wallS: (performance.now() - started) / 1000,
    health: await hangUpProbe.stop(),
  };
  for (const id of holders) await request(base, 'POST', `/api/v1alpha1/unlock/${id}`).done;

  // 2. Everyone waits; the holders release; each one granted releases at once.
  const nextHolders = await take();
  const chain = Array.from({ length: count }, (_, i) =>
    request(base, 'POST', '/api/v1alpha1/lock', {
      service: services[i % services.length],
      who: `chain-${i}`,
      waitSeconds: WAIT_SECONDS,
    }),
  );
  let granted = 0;
  const chainAnswers = new Map<number, number>();
  const released = chain.map(async (call) => {
    const { status, body } = await call.done;
    if (status !== 201) {
      chainAnswers.set(status, (chainAnswers.get(status) ?? 0) + 1);
      if (chainAnswers.get(status) === 1) log(`  ${status} ${body.slice(0, 300)}`);
      return;
    }
    granted++;
    await request(base, 'POST', `/api/v1alpha1/unlock/${(JSON.parse(body) as { id: string }).id}`).done;
  });
  await until(`${count} waiters in line again`, async () => {
    const answered = [...chainAnswers.values()].reduce((sum, n) => sum + n, 0);
    return (await waiters(base)) + answered >= count;
  });
  cpu = cpuSeconds(pid);
  started = performance.now();
  const handOffProbe = probeHealth(base);
  for (const id of nextHolders) await request(base, 'POST', `/api/v1alpha1/unlock/${id}`).done;
  await Promise.race([Promise.all(released), new Promise((resolve) => setTimeout(resolve, PHASE_BUDGET_MS))]);
  const handOff = {
    cpuS: cpuSeconds(pid) - cpu,
    wallS: (performance.now() - started) / 1000,
    granted,
    health: await handOffProbe.stop(),
  };
  return { store, waiters: count, rssBeforeMb, rssWaitingMb, healthWaiting, refused, hangUp, handOff };
}

interface IdleRow {
  attempted: number;
  addresses: number;
  heldOpen: number;
  refused: number;
  rssBeforeMb: number;
  rssHeldMb: number;
  health: Awaited<ReturnType<Probe['stop']>>;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);

async function measureIdleGrpc(endpoints: Endpoints, count: number): Promise<IdleRow> {
  const pid = endpoints.pid ?? 0;
  const [host, port] = (endpoints.grpc ?? '').split(':');
  const rssBeforeMb = rssMb(pid);
  const sockets: net.Socket[] = [];
  let open = 0;
  let refused = 0;
  const perAddress = 100;
  const addresses = Math.ceil(count / perAddress);
  for (let a = 0; a < addresses; a++) {
    await Promise.all(
      Array.from(
        { length: Math.min(perAddress, count - a * perAddress) },
        () =>
          new Promise<void>((resolve) => {
            const socket = net.connect({
              host,
              port: Number(port),
              localAddress: `127.0.${Math.floor(a / 250)}.${(a % 250) + 1}`,
            });
            sockets.push(socket);
            socket.on('error', () => {});
            socket.once('connect', () => {
              open++;
              socket.write(Buffer.concat([PREFACE, SETTINGS]));
              resolve();
            });
            socket.once('close', () => {
              open--;
              refused++;
              resolve();
            });
          }),
      ),
    );
  }
  // Refusals arrive as closes right after the connect: let them.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const probe = probeHealth(endpoints.http ?? '');
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const health = await probe.stop();
  const row = {
    attempted: count,
    addresses,
    heldOpen: open,
    refused,
    rssBeforeMb,
    rssHeldMb: rssMb(pid),
    health,
  };
  for (const socket of sockets) socket.destroy();
  return row;
}

function ms(value: number): string {
  return Number.isFinite(value) ? value.toFixed(1) : '-';
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      waiters: { type: 'string', default: '1000,10000' },
      'pg-waiters': { type: 'string', default: '1000,10000' },
      idle: { type: 'string', default: '20000' },
      only: { type: 'string', default: 'waiters,idle-grpc' },
      json: { type: 'boolean', default: false },
    },
  });
  const only = values.only.split(',');
  const counts = (list: string) => list.split(',').filter(Boolean).map(Number);
  const results: { waiters: WaitersRow[]; idle: IdleRow[] } = { waiters: [], idle: [] };
  const flags = ['--max-waiters', '20000'];

  if (only.includes('waiters')) {
    for (const count of counts(values.waiters)) {
      log(`abuse: ${count} waiters on SQLite...`);
      const server = await startTracker({ args: flags });
      try {
        results.waiters.push(await measureWaiters(server, 'sqlite', count));
        log(`abuse: ${JSON.stringify(results.waiters.at(-1))}`);
      } finally {
        await server.stop();
      }
    }
    const pgCounts = counts(values['pg-waiters']);
    if (pgCounts.length > 0) {
      const database = await createBenchDatabase(adminUrl()).catch((error: unknown) => {
        log(`abuse: PostgreSQL rows skipped: ${describe(error)}`);
        return null;
      });
      if (database) {
        try {
          for (const count of pgCounts) {
            log(`abuse: ${count} waiters on PostgreSQL...`);
            const server = await startTracker({ databaseUrl: database.url, args: flags });
            try {
              results.waiters.push(await measureWaiters(server, 'postgres', count));
              log(`abuse: ${JSON.stringify(results.waiters.at(-1))}`);
            } finally {
              await server.stop();
            }
          }
        } finally {
          await database.drop();
        }
      }
    }
  }
  if (only.includes('idle-grpc')) {
    for (const count of counts(values.idle)) {
      log(`abuse: ${count} idle gRPC connections...`);
      const server = await startTracker();
      try {
        results.idle.push(await measureIdleGrpc(server, count));
      } finally {
        await server.stop();
      }
    }
  }

  if (values.json) {
    process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    return;
  }
  const lines = [
    'waiters: N requests in line (1,000 per service), each on its own connection',
    'store     N       RSS MB (before → waiting)  /healthz p50/max ms waiting  hang-up: CPU s, wall s, /healthz max ms  hand-off: CPU s, wall s, granted, /healthz max ms  other answers',
  ];
  for (const row of results.waiters) {
    lines.push(
      [
        row.store.padEnd(9),
        String(row.waiters).padEnd(7),
        `${row.rssBeforeMb} → ${row.rssWaitingMb}`.padEnd(26),
        `${ms(row.healthWaiting.p50Ms)} / ${ms(row.healthWaiting.maxMs)}`.padEnd(28),
        `${row.hangUp.cpuS.toFixed(2)}, ${row.hangUp.wallS.toFixed(2)}, ${ms(row.hangUp.health.maxMs)}`.padEnd(
          40,
        ),
        `${row.handOff.cpuS.toFixed(2)}, ${row.handOff.wallS.toFixed(2)}, ${row.handOff.granted}, ${ms(row.handOff.health.maxMs)}`.padEnd(
          50,
        ),
        JSON.stringify(row.refused),
      ].join(' '),
    );
  }
  lines.push('', 'idle gRPC connections (preface only), 100 per source address');
  for (const row of results.idle) {
    lines.push(
      `${row.attempted} attempted from ${row.addresses} addresses: ${row.heldOpen} held open, ${row.refused} refused; ` +
        `RSS ${row.rssBeforeMb} → ${row.rssHeldMb} MB; /healthz p50 ${ms(row.health.p50Ms)} ms, max ${ms(row.health.maxMs)} ms, ${row.health.failed} failed`,
    );
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();
