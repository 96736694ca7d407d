// The load generator: N clients, each looping acquire+release pairs on its own service (so
// clients never contend), for a warm-up and then a measured window.
import http from 'node:http';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { REPO_ROOT } from './targets.js';

/** Hard bound on the pairs of one measurement (warm-up included), whatever happens. */
export const MAX_PAIRS = 1_000_000;
/** A request that takes longer than this counts as an error. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Distinct error messages kept per measurement, to print. */
const ERROR_SAMPLES = 3;

/** Speaks one protocol to one server; client is the index of the calling client. */
export interface Driver {
  /** Takes the lock; resolves with its id. */
  acquire(client: number, service: string, who: string): Promise<string>;
  release(client: number, id: string): Promise<void>;
  close(): void;
}

export interface LoadOptions {
  clients: number;
  warmupMs: number;
  measureMs: number;
  /** Makes the service names unique: client i locks `bench-<runId>-<i>`. */
  runId: string;
  maxPairs?: number;
}

export interface LoadResult {
  clients: number;
  /** Pairs that completed inside the measured window. */
  pairs: number;
  /** Length of the measured window (shorter than asked if MAX_PAIRS was reached). */
  seconds: number;
  pairsPerSec: number;
  /** Latency of a pair, acquire start to release end. NaN when no pair completed. */
  p50Ms: number;
  p99Ms: number;
  /** Failed requests, warm-up included. */
  errors: number;
  errorSamples: string[];
  /** True when MAX_PAIRS stopped the measurement early. */
  capped: boolean;
}

export async function runLoad(driver: Driver, options: LoadOptions): Promise<LoadResult> {
  const { clients, warmupMs, measureMs, runId } = options;
  const maxPairs = options.maxPairs ?? MAX_PAIRS;
  const latencies = new Float64Array(maxPairs);
  let recorded = 0;
  let started = 0;
  let errors = 0;
  const errorSamples: string[] = [];
  let stopping = false;
  let cappedAt: number | undefined;

  const noteError = (err: unknown) => {
    errors++;
    const message = err instanceof Error ? err.message : String(err);
    if (errorSamples.length < ERROR_SAMPLES && !errorSamples.includes(message)) {
      errorSamples.push(message);
    }
  };

  const begin = performance.now();
  const measureStart = begin + warmupMs;
  const measureEnd = measureStart + measureMs;
  const timer = setTimeout(() => {
    stopping = true;
  }, warmupMs + measureMs);

  const loop = async (client: number) => {
    const service = `bench-${runId}-${client}`;
    const who = `bench-client-${client}`;
    while (!stopping) {
      if (started >= maxPairs) {
        cappedAt ??= performance.now();
        stopping = true;
        break;
      }
      started++;
      const t0 = performance.now();
      let id: string;
      try {
        id = await driver.acquire(client, service, who);
      } catch (err) {
        noteError(err);
        continue;
      }
      try {
        await driver.release(client, id);
      } catch (err) {
        noteError(err);
        continue;
      }
      const t1 = performance.now();
      if (t1 >= measureStart && t1 <= measureEnd) latencies[recorded++] = t1 - t0;
    }
  };

  try {
    await Promise.all(Array.from({ length: clients }, (_, client) => loop(client)));
  } finally {
    clearTimeout(timer);
  }

  const windowEnd = Math.min(measureEnd, cappedAt ?? measureEnd);
  const seconds = Math.max(0, windowEnd - measureStart) / 1000;
  const sorted = latencies.subarray(0, recorded).sort();
  return {
    clients,
    pairs: recorded,
    seconds,
    pairsPerSec: seconds > 0 ? recorded / seconds : 0,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    errors,
    errorSamples,
    capped: cappedAt !== undefined,
  };
}

/** Nearest-rank percentile of sorted values; NaN when there are none. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[rank] ?? Number.NaN;
}

// ---------------------------------------------------------------------------------------
// REST: node:http with a keep-alive agent per server, one socket per client.

const LOCK_PATH = '/api/v1alpha1/lock';

interface HttpReply {
  status: number;
  body: string;
}

type Request = (method: string, requestPath: string, body?: string) => Promise<HttpReply>;

/** One server (replica) of the REST driver: its own keep-alive agent and request function. */
interface RestServer {
  prefix: string;
  request: Request;
  agent: http.Agent;
}

function restServer(baseUrl: string, sockets: number): RestServer {
  const url = new URL(baseUrl);
  const agent = new http.Agent({ keepAlive: true, maxSockets: sockets });
  const hostname = url.hostname;
  const port = Number(url.port || 80);
  const prefix = url.pathname.replace(/\/$/, '');

  const request: Request = (method, requestPath, body) =>
    new Promise<HttpReply>((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = {};
      if (body !== undefined) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = Buffer.byteLength(body);
      }
      const req = http.request({ agent, hostname, port, method, path: requestPath, headers }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      });
      req.setTimeout(REQUEST_TIMEOUT_MS, () => {
        req.destroy(new Error(`${method} ${requestPath} timed out after ${REQUEST_TIMEOUT_MS} ms`));
      });
      req.on('error', reject);
      req.end(body);
    });
  return { prefix, request, agent };
}

/**
 * REST to one server, or to several replicas of one service: client i then always talks to
 * baseUrls[i % baseUrls.length] (acquire and release alike), so each replica gets its
 * share of the clients and its own agent (with 1 client, only the first replica is used).
 */
export function restDriver(baseUrls: string | readonly string[], clients: number): Driver {
  const urls = typeof baseUrls === 'string' ? [baseUrls] : [...baseUrls];
  if (urls.length === 0) throw new Error('restDriver needs at least one base URL');
  const sockets = Math.max(1, Math.ceil(clients / urls.length));
  const servers = urls.map((url) => restServer(url, sockets));
  const serverFor = (client: number): RestServer => {
    const server = servers[client % servers.length];
    if (server === undefined) throw new Error(`no REST server for client ${client}`);
    return server;
  };

  return {
    async acquire(client, service, who) {
      const { request, prefix } = serverFor(client);
      const reply = await request('POST', prefix + LOCK_PATH, JSON.stringify({ service, who }));
      if (reply.status < 200 || reply.status > 299) {
        throw new Error(`POST ${LOCK_PATH}: ${reply.status} ${reply.body.slice(0, 200)}`);
      }
      const id = (JSON.parse(reply.body) as { id?: unknown }).id;
      if (typeof id !== 'string' || id === '') {
        throw new Error(`POST ${LOCK_PATH}: ${reply.status} without an id: ${reply.body.slice(0, 200)}`);
      }
      return id;
    },
    async release(client, id) {
      const { request, prefix } = serverFor(client);
      const reply = await request('DELETE', `${prefix}${LOCK_PATH}/${encodeURIComponent(id)}`);
      if (reply.status < 200 || reply.status > 299) {
        throw new Error(`DELETE ${LOCK_PATH}/:id: ${reply.status} ${reply.body.slice(0, 200)}`);
      }
    },
    close() {
      for (const server of servers) server.agent.destroy();
    },
  };
}

// ---------------------------------------------------------------------------------------
// gRPC: @grpc/grpc-js with the proto loaded by @grpc/proto-loader.

const PROTO_FILE = path.join(REPO_ROOT, 'proto', 'tracker', 'lock', 'v1alpha1', 'lock.proto');

interface LockMessage {
  id: string;
  service: string;
  who: string;
  createdAt: string;
}

interface UnLockResponse {
  success: boolean;
  message: string;
}

type Callback<T> = (err: grpc.ServiceError | null, value?: T) => void;

interface LockServiceClient extends grpc.Client {
  CreateLock(
    request: { service: string; who: string },
    options: grpc.CallOptions,
    callback: Callback<LockMessage>,
  ): grpc.ClientUnaryCall;
  UnLock(
    request: { id: string },
    options: grpc.CallOptions,
    callback: Callback<UnLockResponse>,
  ): grpc.ClientUnaryCall;
}

type LockServiceConstructor = new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => LockServiceClient;

let lockServiceConstructor: LockServiceConstructor | undefined;

function loadLockService(): LockServiceConstructor {
  if (lockServiceConstructor === undefined) {
    const definition = protoLoader.loadSync(PROTO_FILE, { keepCase: false, defaults: true });
    const loaded = grpc.loadPackageDefinition(definition) as unknown as {
      tracker?: { lock?: { v1alpha1?: { LockService?: LockServiceConstructor } } };
    };
    const found = loaded.tracker?.lock?.v1alpha1?.LockService;
    if (found === undefined) {
      throw new Error(`${PROTO_FILE} has no tracker.lock.v1alpha1.LockService`);
    }
    lockServiceConstructor = found;
  }
  return lockServiceConstructor;
}

/**
 * How the gRPC clients share connections.
 * - shared: one channel (one HTTP/2 connection) multiplexes all clients' calls.
 * - per-client: one channel per client, each with its own connection (grpc-js otherwise
 *   shares subchannels between channels to the same address, hence the local pool option).
 * The default is 'shared', the cheaper of the two on the 2-core bench machine: against a bare
 * grpc-js server answering the same calls, 64 clients did ~3,200 pairs/s shared and ~2,400
 * per-client (equal at 1 and 16); against Tracker, which is the bottleneck there, the two
 * were within noise. `--grpc-channels per-client` re-checks it.
 */
export type GrpcChannels = 'shared' | 'per-client';

export async function grpcDriver(
  address: string,
  clients: number,
  channels: GrpcChannels = 'shared',
): Promise<Driver> {
  const LockService = loadLockService();
  const credentials = grpc.credentials.createInsecure();
  const stubs: LockServiceClient[] =
    channels === 'shared'
      ? [new LockService(address, credentials)]
      : Array.from(
          { length: clients },
          () => new LockService(address, credentials, { 'grpc.use_local_subchannel_pool': 1 }),
        );
  const close = () => {
    for (const stub of stubs) stub.close();
  };
  try {
    await Promise.all(
      stubs.map(
        (stub) =>
          new Promise<void>((resolve, reject) => {
            stub.waitForReady(Date.now() + REQUEST_TIMEOUT_MS, (err) =>
              err ? reject(new Error(`gRPC ${address} not ready: ${err.message}`)) : resolve(),
            );
          }),
      ),
    );
  } catch (err) {
    close();
    throw err;
  }
  const stubFor = (client: number): LockServiceClient => {
    const stub = stubs[channels === 'shared' ? 0 : client];
    if (stub === undefined) throw new Error(`no gRPC client ${client}`);
    return stub;
  };

  return {
    acquire(client, service, who) {
      return new Promise<string>((resolve, reject) => {
        stubFor(client).CreateLock(
          { service, who },
          { deadline: Date.now() + REQUEST_TIMEOUT_MS },
          (err, lock) => {
            if (err) reject(new Error(`CreateLock: ${grpcError(err)}`));
            else if (!lock?.id) reject(new Error('CreateLock: reply without an id'));
            else resolve(lock.id);
          },
        );
      });
    },
    release(client, id) {
      return new Promise<void>((resolve, reject) => {
        stubFor(client).UnLock({ id }, { deadline: Date.now() + REQUEST_TIMEOUT_MS }, (err, reply) => {
          if (err) reject(new Error(`UnLock: ${grpcError(err)}`));
          else if (reply?.success !== true) reject(new Error(`UnLock: not released: ${reply?.message}`));
          else resolve();
        });
      });
    },
    close,
  };
}

function grpcError(err: grpc.ServiceError): string {
  const code = grpc.status[err.code] ?? String(err.code);
  return `${code} ${err.details}`;
}
