// What the bench measures: a target is a named server (or several replicas) started as child
// processes and the protocol the load generator speaks to it. To add one, write a start()
// that returns its endpoints and add it to TARGETS in run.ts.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export type Protocol = 'rest' | 'grpc';

/** What keeps the locks: nothing (the ceiling), a SQLite file, or the bench's PostgreSQL database. */
export type Store = 'none' | 'sqlite' | 'postgres';

/** Where a started server listens. */
export interface Endpoints {
  /** Base URL of the REST API, e.g. http://127.0.0.1:8080 (no trailing slash). */
  http?: string;
  /**
   * Base URLs of every replica when several serve the same store (http is the first); the
   * load generator spreads its clients over them, client i to replica i % length.
   */
  httpReplicas?: string[];
  /** host:port of the gRPC server. */
  grpc?: string;
  /** The server's process id (of the first replica). */
  pid?: number;
  /** Stops the server; safe to call more than once. */
  stop(): Promise<void>;
}

/** What run.ts hands to start(). */
export interface StartContext {
  /** URL of the run's fresh PostgreSQL database; set for the targets whose store is 'postgres'. */
  postgresUrl?: string;
}

export interface Target {
  /** Row label in the table and name for --only. */
  name: string;
  protocol: Protocol;
  store: Store;
  /** Starts the server (or returns the one already started: targets may share a server). */
  start(context: StartContext): Promise<Endpoints>;
}

type Start = (context: StartContext) => Promise<Endpoints>;

/** Memoizes start() so that several targets (REST and gRPC) share one server process. */
export function shared(start: Start): Start {
  let started: Promise<Endpoints> | undefined;
  return (context) => {
    started ??= start(context);
    return started;
  };
}

const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;
/** How much of a child's recent output to keep for error messages. */
const TAIL_CHARS = 4_000;

interface SpawnedServer {
  /** The JSON object of the line that announced the server (holds its ports). */
  ready: Record<string, unknown>;
  pid: number | undefined;
  stop(): Promise<void>;
}

/**
 * Spawns `node <args>` in the repo root and waits (15 s at most) for the JSON log line whose
 * msg is readyMsg. The child's stdout goes straight to a log file, not through a pipe: the
 * load generator shares the CPU with the server, and reading one log line per request would
 * steal from it. The file is polled until the ready line appears and removed on stop().
 */
export async function spawnServer(name: string, args: string[], readyMsg: string): Promise<SpawnedServer> {
  const logDir = await mkdtemp(path.join(tmpdir(), 'tracker-bench-log-'));
  const logFile = path.join(logDir, 'stdout.log');
  const fd = openSync(logFile, 'w');
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ['ignore', fd, 'pipe'] });
  closeSync(fd);
  let stderrTail = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-TAIL_CHARS);
  });
  const stop = async () => {
    await stopChild(child);
    await rm(logDir, { recursive: true, force: true });
  };
  const started = Date.now();
  while (Date.now() - started < START_TIMEOUT_MS) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const tail = `${readFileSync(logFile, 'utf8').slice(-TAIL_CHARS)}\n${stderrTail}`.trim();
      await stop();
      throw new Error(
        `${name} exited before it was ready (code ${child.exitCode}, signal ${child.signalCode}): ${tail}`,
      );
    }
    for (const line of readFileSync(logFile, 'utf8').split('\n')) {
      const ready = parseReadyLine(line, readyMsg);
      if (ready !== undefined) return { ready, pid: child.pid, stop };
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await stop();
  throw new Error(
    `${name} did not log "${readyMsg}" within ${START_TIMEOUT_MS / 1000} s; stderr: ${stderrTail}`,
  );
}

function parseReadyLine(line: string, readyMsg: string): Record<string, unknown> | undefined {
  if (!line.includes(readyMsg)) return undefined;
  try {
    const parsed: unknown = JSON.parse(line);
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) {
      const record = parsed as Record<string, unknown>;
      if (record.msg === readyMsg) return record;
    }
  } catch {
    // Not JSON: not the line we wait for.
  }
  return undefined;
}

/** SIGTERM, then SIGKILL if the child has not exited after 10 s. */
function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const killer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    child.once('exit', () => {
      clearTimeout(killer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

function portField(ready: Record<string, unknown>, field: string, name: string): number {
  const port = ready[field];
  if (typeof port !== 'number' || !Number.isInteger(port) || port <= 0) {
    throw new Error(`${name}: the listening line has no numeric ${field}: ${JSON.stringify(ready)}`);
  }
  return port;
}

/** The bare node:http server of ceiling-server.mjs. */
export async function startCeiling(host = '127.0.0.1'): Promise<Endpoints> {
  const script = path.join(REPO_ROOT, 'bench', 'ceiling-server.mjs');
  const server = await spawnServer(
    'ceiling server',
    [script, '--host', host, '--port', '0'],
    'ceiling listening',
  );
  const httpPort = portField(server.ready, 'httpPort', 'ceiling server');
  return { http: `http://${host}:${httpPort}`, stop: server.stop };
}

export interface TrackerOptions {
  host?: string;
  /** Defaults to a SQLite file in a fresh temporary directory, removed on stop(). */
  databaseUrl?: string;
  logLevel?: string;
  /** Label in error messages (e.g. "tracker replica 2"). */
  name?: string;
  /** More flags for `tracker serve`. */
  args?: string[];
}

/** The built Tracker server (dist/src/main.js), REST and gRPC on ephemeral ports. */
export async function startTracker(options: TrackerOptions = {}): Promise<Endpoints> {
  const name = options.name ?? 'tracker';
  const host = options.host ?? '127.0.0.1';
  const main = path.join(REPO_ROOT, 'dist', 'src', 'main.js');
  if (!existsSync(main)) {
    throw new Error(`${main} does not exist: run \`npm run build\` first (npm run bench does)`);
  }
  let tmp: string | undefined;
  let databaseUrl = options.databaseUrl;
  if (databaseUrl === undefined) {
    tmp = await mkdtemp(path.join(tmpdir(), 'tracker-bench-'));
    databaseUrl = `sqlite:${path.join(tmp, 'bench.db')}`;
  }
  const removeTmp = async () => {
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
  };
  const args = [
    main,
    '--host',
    host,
    '--http-port',
    '0',
    '--grpc-port',
    '0',
    '--database-url',
    databaseUrl,
    '--log-level',
    options.logLevel ?? 'info',
    ...(options.args ?? []),
  ];
  let server: SpawnedServer;
  try {
    server = await spawnServer(name, args, 'tracker listening');
  } catch (err) {
    await removeTmp();
    throw err;
  }
  const stop = async () => {
    await server.stop();
    await removeTmp();
  };
  try {
    const httpPort = portField(server.ready, 'httpPort', name);
    const grpcPort = portField(server.ready, 'grpcPort', name);
    return { http: `http://${host}:${httpPort}`, grpc: `${host}:${grpcPort}`, pid: server.pid, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * `count` Tracker processes on the same database URL (PostgreSQL: a SQLite file is not
 * shared between processes), started together so that their migrations race as they would
 * in a deployment. If one fails to start, the others are stopped. The endpoints list every
 * replica's REST URL in httpReplicas; grpc is the first replica's.
 */
export async function startReplicas(count: number, options: TrackerOptions): Promise<Endpoints> {
  if (options.databaseUrl === undefined) throw new Error('replicas need a shared databaseUrl');
  const results = await Promise.allSettled(
    Array.from({ length: count }, (_, index) =>
      startTracker({ ...options, name: `${options.name ?? 'tracker'} replica ${index + 1}/${count}` }),
    ),
  );
  const replicas = results.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const stop = async () => {
    await Promise.allSettled(replicas.map((replica) => replica.stop()));
  };
  const failed = results.find((result) => result.status === 'rejected');
  if (failed !== undefined) {
    await stop();
    throw failed.reason;
  }
  const urls = replicas.map((replica) => replica.http).filter((url) => url !== undefined);
  if (urls.length !== count || count === 0) {
    await stop();
    throw new Error(`expected ${count} replicas with a REST endpoint, got ${urls.length}`);
  }
  return { http: urls[0], httpReplicas: urls, grpc: replicas[0]?.grpc, stop };
}

/** The bare grpc-js server of grpc-ceiling-server.mjs (Tracker's proto, no storage). */
export async function startGrpcCeiling(host = '127.0.0.1'): Promise<Endpoints> {
  const script = path.join(REPO_ROOT, 'bench', 'grpc-ceiling-server.mjs');
  const server = await spawnServer(
    'grpc ceiling server',
    [script, '--host', host, '--port', '0'],
    'grpc ceiling listening',
  );
  const grpcPort = portField(server.ready, 'grpcPort', 'grpc ceiling server');
  return { grpc: `${host}:${grpcPort}`, pid: server.pid, stop: server.stop };
}
