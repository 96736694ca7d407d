// Latency measurements of single requests, beside the throughput runs of load.ts:
// - hand-off: a holder releases a contended lock; how long until the queued waiter's 201
//   response arrives (through another replica when there are two);
// - notify: a bare PostgreSQL LISTEN/NOTIFY round trip, the floor of a cross-replica hand-off;
// - acquire: one client's uncontended acquire, with and without ttlSeconds.
// Every loop is bounded by a count and a time budget; a failing hand-off stops its loop.
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { percentile } from './load.js';

const LOCK_PATH = '/api/v1alpha1/lock';
const QUEUE_PATH = '/api/v1alpha1/queue';
/** Bound on one request (the waiter's request is bounded separately). */
const REQUEST_TIMEOUT_MS = 10_000;
/** How long the waiter's 201 may take after the release before the round counts as failed. */
const HANDOFF_TIMEOUT_MS = 10_000;
/** How long the waiter may take to show up in GET /queue. */
const QUEUE_TIMEOUT_MS = 5_000;
const QUEUE_POLL_MS = 2;
const WAIT_SECONDS = 30;
const NOTIFY_TIMEOUT_MS = 5_000;
const ERROR_SAMPLES = 3;

export interface LatencyResult {
  /** Measured samples. */
  n: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  maxMs: number;
  errors: number;
  errorSamples: string[];
}

export interface HandoffOptions {
  /** The holder acquires and releases here, and GET /queue polls here. */
  holderUrl: string;
  /** The waiter queues here (another replica, or the same server). */
  waiterUrl: string;
  rounds: number;
  budgetMs: number;
  runId: string;
}

interface Reply {
  status: number;
  body: string;
}

/** A keep-alive client to one server, one socket: requests on it are sequential. */
class RestClient {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  private readonly url: URL;

  constructor(baseUrl: string) {
    this.url = new URL(baseUrl);
  }

  /** The request is destroyed when `abort` fires or after timeoutMs. */
  request(method: string, path: string, body?: unknown, timeoutMs = REQUEST_TIMEOUT_MS, abort?: AbortSignal) {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const prefix = this.url.pathname.replace(/\/$/, '');
    return new Promise<Reply>((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = {};
      if (text !== undefined) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = Buffer.byteLength(text);
      }
      const req = http.request(
        {
          agent: this.agent,
          hostname: this.url.hostname,
          port: Number(this.url.port || 80),
          method,
          path: prefix + path,
          headers,
          signal: abort,
        },
        (res) => {
          let received = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            received += chunk;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: received }));
          res.on('error', reject);
        },
      );
      req.setTimeout(timeoutMs, () => {
        req.destroy(new Error(`${method} ${path} timed out after ${timeoutMs} ms`));
      });
      req.on('error', reject);
      req.end(text);
    });
  }

  async acquire(body: Record<string, unknown>, timeoutMs?: number, abort?: AbortSignal): Promise<string> {
    const reply = await this.request('POST', LOCK_PATH, body, timeoutMs, abort);
    if (reply.status !== 201)
      throw new Error(`POST ${LOCK_PATH}: ${reply.status} ${reply.body.slice(0, 200)}`);
    const id = (JSON.parse(reply.body) as { id?: unknown }).id;
    if (typeof id !== 'string' || id === '') throw new Error(`POST ${LOCK_PATH}: 201 without an id`);
    return id;
  }

  async release(id: string): Promise<void> {
    const reply = await this.request('DELETE', `${LOCK_PATH}/${encodeURIComponent(id)}`);
    if (reply.status < 200 || reply.status > 299) {
      throw new Error(`DELETE ${LOCK_PATH}/:id: ${reply.status} ${reply.body.slice(0, 200)}`);
    }
  }

  async waiters(service: string): Promise<number> {
    const reply = await this.request('GET', `${QUEUE_PATH}/${encodeURIComponent(service)}`);
    if (reply.status !== 200)
      throw new Error(`GET ${QUEUE_PATH}/:service: ${reply.status} ${reply.body.slice(0, 200)}`);
    const waiters = (JSON.parse(reply.body) as { waiters?: unknown }).waiters;
    if (!Array.isArray(waiters)) throw new Error(`GET ${QUEUE_PATH}/:service: no waiters array`);
    return waiters.length;
  }

  close(): void {
    this.agent.destroy();
  }
}

class Samples {
  private readonly values: number[] = [];
  errors = 0;
  readonly errorSamples: string[] = [];

  add(ms: number): void {
    this.values.push(ms);
  }

  error(err: unknown): void {
    this.errors++;
    const message = err instanceof Error ? err.message : String(err);
    if (this.errorSamples.length < ERROR_SAMPLES && !this.errorSamples.includes(message)) {
      this.errorSamples.push(message);
    }
  }

  result(): LatencyResult {
    const sorted = Float64Array.from(this.values).sort();
    const sum = this.values.reduce((total, value) => total + value, 0);
    return {
      n: sorted.length,
      p50Ms: percentile(sorted, 0.5),
      p99Ms: percentile(sorted, 0.99),
      meanMs: sorted.length > 0 ? sum / sorted.length : Number.NaN,
      maxMs: sorted.length > 0 ? (sorted[sorted.length - 1] ?? Number.NaN) : Number.NaN,
      errors: this.errors,
      errorSamples: this.errorSamples,
    };
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A hand-off's time (t1 - t0) and its two parts, split at the release's answer (tr). */
export interface HandoffResult {
  whole: LatencyResult;
  /** tr - t0: the release's own round trip on the holder's replica (HTTP and the commit). */
  release: LatencyResult;
  /**
   * t1 - tr: how much later the waiter's 201 arrived (through the other replica when there
   * are two): the news of the commit crossing to the waiter's replica, which answers. Both
   * answers leave after the commit, so this can be below zero when the waiter's is first.
   */
  afterRelease: LatencyResult;
}

/**
 * Hand-off rounds, each on its own service: A acquires; B asks with waitSeconds through
 * waiterUrl; once GET /queue shows B waiting, t0, A releases; tr when A's release is
 * answered; t1 when B's 201 arrives. The loop stops at `rounds`, at `budgetMs`, or at the
 * first failed round.
 */
export async function measureHandoff(options: HandoffOptions): Promise<HandoffResult> {
  const a = new RestClient(options.holderUrl);
  const b = new RestClient(options.waiterUrl);
  const samples = new Samples();
  const releases = new Samples();
  const after = new Samples();
  const deadline = performance.now() + options.budgetMs;
  try {
    for (let round = 0; round < options.rounds && performance.now() < deadline; round++) {
      const service = `handoff-${options.runId}-${round}`;
      let holder: string | undefined;
      const abort = new AbortController();
      let waiter: Promise<{ id: string; at: number }> | undefined;
      try {
        holder = await a.acquire({ service, who: 'bench-holder' });
        let settled = false;
        waiter = b
          .acquire(
            { service, who: 'bench-waiter', waitSeconds: WAIT_SECONDS },
            (WAIT_SECONDS + 5) * 1000,
            abort.signal,
          )
          .then((id) => ({ id, at: performance.now() }))
          .finally(() => {
            settled = true;
          });
        waiter.catch(() => {}); // awaited below; no unhandled rejection meanwhile
        const queuedBy = performance.now() + QUEUE_TIMEOUT_MS;
        while ((await a.waiters(service)) < 1) {
          if (settled) {
            await waiter; // throws the waiter's error, or:
            throw new Error('the waiter was granted while the holder still held the lock');
          }
          if (performance.now() > queuedBy) {
            throw new Error(`the waiter did not show in GET /queue within ${QUEUE_TIMEOUT_MS} ms`);
          }
          await sleep(QUEUE_POLL_MS);
        }
        const t0 = performance.now();
        await a.release(holder);
        const tr = performance.now();
        holder = undefined;
        let timer: NodeJS.Timeout | undefined;
        const granted = await Promise.race([
          waiter,
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`no 201 for the waiter within ${HANDOFF_TIMEOUT_MS} ms of the release`)),
              HANDOFF_TIMEOUT_MS,
            );
          }),
        ]).finally(() => clearTimeout(timer));
        samples.add(granted.at - t0);
        releases.add(tr - t0);
        after.add(granted.at - tr);
        await b.release(granted.id);
      } catch (err) {
        samples.error(err);
        abort.abort(); // hangs up: the server drops the waiter
        const got = await waiter?.catch(() => undefined);
        if (got !== undefined) await b.release(got.id).catch(() => {});
        if (holder !== undefined) await a.release(holder).catch(() => {});
        break;
      }
    }
  } finally {
    a.close();
    b.close();
  }
  return { whole: samples.result(), release: releases.result(), afterRelease: after.result() };
}

export interface AcquireOptions {
  url: string;
  ttlSeconds?: number;
  warmupMs: number;
  measureMs: number;
  runId: string;
  maxSamples?: number;
}

/** One client: acquire (timed alone) then release, for warmupMs + measureMs. */
export async function measureAcquire(options: AcquireOptions): Promise<LatencyResult> {
  const client = new RestClient(options.url);
  const samples = new Samples();
  const service = `acquire-${options.runId}`;
  const body: Record<string, unknown> = { service, who: 'bench-client' };
  if (options.ttlSeconds !== undefined) body.ttlSeconds = options.ttlSeconds;
  const maxSamples = options.maxSamples ?? 200_000;
  const start = performance.now();
  const measureStart = start + options.warmupMs;
  const end = measureStart + options.measureMs;
  try {
    for (let i = 0; i < maxSamples && performance.now() < end; i++) {
      try {
        const t0 = performance.now();
        const id = await client.acquire(body);
        const t1 = performance.now();
        if (t0 >= measureStart) samples.add(t1 - t0);
        await client.release(id);
      } catch (err) {
        samples.error(err);
        if (samples.errors >= 10) break;
      }
    }
  } finally {
    client.close();
  }
  return samples.result();
}

export interface NotifyOptions {
  /** PostgreSQL URL of the database to LISTEN on. */
  url: string;
  rounds: number;
  budgetMs: number;
}

/**
 * One connection LISTENs on `bench`, another runs `SELECT pg_notify('bench', <i>)` in
 * autocommit; from before the query to the notification's arrival.
 */
export async function measureNotify(options: NotifyOptions): Promise<LatencyResult> {
  const samples = new Samples();
  const connect = async () => {
    const client = new pg.Client({
      connectionString: options.url,
      connectionTimeoutMillis: 5_000,
      query_timeout: 10_000,
      application_name: 'tracker-bench-notify',
    });
    client.on('error', () => {});
    await client.connect();
    return client;
  };
  const clients: pg.Client[] = [];
  try {
    const listener = await connect();
    clients.push(listener);
    const notifier = await connect();
    clients.push(notifier);
    let expected: { payload: string; resolve: (at: number) => void } | undefined;
    listener.on('notification', (message) => {
      const at = performance.now();
      if (expected !== undefined && message.payload === expected.payload) expected.resolve(at);
    });
    await listener.query('LISTEN bench');
    const deadline = performance.now() + options.budgetMs;
    for (let i = 0; i < options.rounds && performance.now() < deadline; i++) {
      const payload = String(i);
      let timer: NodeJS.Timeout | undefined;
      const arrived = new Promise<number>((resolve, reject) => {
        expected = { payload, resolve };
        timer = setTimeout(
          () => reject(new Error(`no notification within ${NOTIFY_TIMEOUT_MS} ms`)),
          NOTIFY_TIMEOUT_MS,
        );
      });
      try {
        const t0 = performance.now();
        await notifier.query("SELECT pg_notify('bench', $1)", [payload]);
        samples.add((await arrived) - t0);
      } catch (err) {
        samples.error(err);
        break;
      } finally {
        clearTimeout(timer);
      }
    }
  } catch (err) {
    samples.error(err);
  } finally {
    await Promise.race([Promise.allSettled(clients.map((client) => client.end())), sleep(1_000)]);
  }
  return samples.result();
}

export interface WatchOptions {
  /** Locks are taken here. */
  writerUrl: string;
  /** The watcher's SSE stream comes from here (another replica, or the same server). */
  watcherUrl: string;
  rounds: number;
  budgetMs: number;
  runId: string;
}

/** How long the watcher's event may take after the acquire's 201 before the round fails. */
const WATCH_TIMEOUT_MS = 5_000;

/**
 * Watch delivery: a watcher follows GET /api/v1alpha1/watch?service=…; one client acquires
 * a lock (and releases it after). From the acquire's 201 to the watcher's `acquired` event
 * for that lock id. Through another replica, the event crosses the history table (the
 * writing replica NOTIFYs after its commit and the watching one reads; a slow poll remains
 * as a safety net); rounds are spaced by a random pause so that they do not fall into step
 * with that poll.
 */
export async function measureWatch(options: WatchOptions): Promise<LatencyResult> {
  const samples = new Samples();
  const client = new RestClient(options.writerUrl);
  const service = `watch-${options.runId}`;
  const arrivals = new Map<string, number>();
  let waiting: { id: string; resolve: (at: number) => void } | undefined;
  const url = new URL(`/api/v1alpha1/watch?service=${encodeURIComponent(service)}`, options.watcherUrl);
  const stream = new AbortController();
  const ready = new Promise<void>((resolve, reject) => {
    const req = http.get(url, { signal: stream.signal }, (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`GET /watch: ${res.statusCode}`));
        return;
      }
      res.setEncoding('utf8');
      let text = '';
      res.on('data', (chunk: string) => {
        const at = performance.now();
        text += chunk;
        for (let end = text.indexOf('\n\n'); end >= 0; end = text.indexOf('\n\n')) {
          const block = text.slice(0, end);
          text = text.slice(end + 2);
          if (block.includes('event: snapshot')) resolve();
          if (!block.includes('event: acquired')) continue;
          const data = block.split('\n').find((line) => line.startsWith('data: '));
          const id = data ? (JSON.parse(data.slice(6)) as { lock?: { id?: string } }).lock?.id : undefined;
          if (id === undefined) continue;
          arrivals.set(id, at);
          if (waiting?.id === id) waiting.resolve(at);
        }
      });
      res.on('error', () => {});
    });
    req.on('error', (err) => {
      if (!stream.signal.aborted) reject(err);
    });
  });
  try {
    await ready;
    const deadline = performance.now() + options.budgetMs;
    for (let i = 0; i < options.rounds && performance.now() < deadline; i++) {
      let timer: NodeJS.Timeout | undefined;
      try {
        const id = await client.acquire({ service, who: 'bench-watch' });
        const t0 = performance.now();
        const seen = arrivals.get(id);
        const at =
          seen ??
          (await new Promise<number>((resolve, reject) => {
            waiting = { id, resolve };
            timer = setTimeout(
              () => reject(new Error(`no event within ${WATCH_TIMEOUT_MS} ms`)),
              WATCH_TIMEOUT_MS,
            );
          }));
        // An event that beat the 201 to the watcher counts as 0.
        samples.add(Math.max(0, at - t0));
        await client.release(id);
        // A random pause, so that acquires do not fall into step with the replica's poll.
        await sleep(Math.random() * 250);
      } catch (err) {
        samples.error(err);
        break;
      } finally {
        clearTimeout(timer);
        waiting = undefined;
      }
    }
  } catch (err) {
    samples.error(err);
  } finally {
    stream.abort();
    client.close();
  }
  return samples.result();
}
