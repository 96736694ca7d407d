import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { FaultProxy } from '../fault-proxy.js';
import { MAIN } from '../server-process.js';
import { waitFor, within } from '../wait-for.js';

/**
 * What the fault run runs against: Tracker server processes (one on SQLite, or replicas on a
 * private PostgreSQL cluster), each behind a TCP fault proxy for its clients, replicas also
 * behind one towards PostgreSQL; every process restartable on its own ports, pausable, and
 * (with libfaketime) with a wall clock that can jump.
 */

export const FAKETIME_LIBRARY = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
const PG_BIN = (() => {
  const base = '/usr/lib/postgresql';
  const version = existsSync(base)
    ? execFileSync('ls', [base]).toString().trim().split('\n').sort().at(-1)
    : '';
  return join(base, version ?? '', 'bin');
})();

/**
 * Processes of the run still alive, and private clusters still up: should the process running
 * the run end first (a test that failed, a timeout), they go with it rather than linger.
 */
const running = new Set<ChildProcess>();
const clusters = new Set<PgCluster>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
  for (const cluster of clusters) cluster.stop();
});

/** Kills `child` with the run's process if it is still running then. */
export function track(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
}

/** A port nothing listens on (it was free a moment ago). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface NodeOptions {
  readonly name: string;
  readonly dir: string;
  readonly databaseUrl: string;
  /** Run under libfaketime, with a clock file the run can move. */
  readonly faketime: boolean;
  /** Extra server flags. */
  readonly args?: readonly string[];
  /** Flags for node itself, before the server's script (e.g. `--import` of a hook). */
  readonly nodeArgs?: readonly string[];
}

/** One Tracker server process, its ports fixed for its whole life, and its client-side proxy. */
export class TrackerNode {
  readonly name: string;
  /** The ports it listens on: chosen by the first start (port 0), kept by every restart. */
  httpPort = 0;
  grpcPort = 0;
  /** In front of REST and gRPC: the address clients use. */
  restProxy!: FaultProxy;
  grpcProxy!: FaultProxy;
  readonly clockFile: string | null;
  readonly #options: NodeOptions;
  #child: ChildProcess | null = null;
  #exited: Promise<void> = Promise.resolve();
  /** The offset of its wall clock, in seconds (libfaketime). */
  offsetSeconds = 0;

  private constructor(options: NodeOptions) {
    this.name = options.name;
    this.#options = options;
    this.clockFile = options.faketime ? join(options.dir, `${options.name}.clock`) : null;
    if (this.clockFile) writeFileSync(this.clockFile, '+0\n');
  }

  static async start(options: NodeOptions): Promise<TrackerNode> {
    const node = new TrackerNode(options);
    await node.start();
    node.restProxy = await FaultProxy.start(`tcp://127.0.0.1:${node.httpPort}`);
    node.grpcProxy = await FaultProxy.start(`tcp://127.0.0.1:${node.grpcPort}`);
    return node;
  }

  /** `http://127.0.0.1:<proxy>`: REST through the fault proxy. */
  get baseUrl(): string {
    return `http://127.0.0.1:${this.restProxy.port}`;
  }

  /** `127.0.0.1:<proxy>`: gRPC through the fault proxy. */
  get grpcAddress(): string {
    return `127.0.0.1:${this.grpcProxy.port}`;
  }

  /** The server itself, bypassing the proxy (for the run's own checks). */
  get directUrl(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  async start(): Promise<void> {
    const { databaseUrl, faketime, dir, name } = this.#options;
    const env: NodeJS.ProcessEnv = { ...process.env };
    if (faketime && this.clockFile) {
      Object.assign(env, {
        LD_PRELOAD: FAKETIME_LIBRARY,
        FAKETIME_TIMESTAMP_FILE: this.clockFile,
        // The file is read again at most every second or two (see jumpClock).
        FAKETIME_CACHE_DURATION: '1',
        // Only the wall clock moves (as NTP or an operator would move it); timers do not.
        FAKETIME_DONT_FAKE_MONOTONIC: '1',
      });
    }
    const args = [
      ...(this.#options.nodeArgs ?? []),
      MAIN,
      '--http-port',
      String(this.httpPort),
      '--grpc-port',
      String(this.grpcPort),
      '--database-url',
      databaseUrl,
      ...(this.#options.args ?? []),
    ];
    const log = join(dir, `${name}.log`);
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    child.stderr?.on('data', (chunk: Buffer) => writeFileSync(log, chunk, { flag: 'a' }));
    this.#child = child;
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
    // The "tracker listening" line says which ports it took; warnings and errors go to its log.
    const listening = new Promise<{ httpPort: number; grpcPort: number }>((resolve, reject) => {
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
        if (line.includes('"tracker listening"'))
          resolve(JSON.parse(line) as { httpPort: number; grpcPort: number });
        else if (/"level":(40|50|60)/.test(line)) writeFileSync(log, `${line}\n`, { flag: 'a' });
      });
      child.once('exit', (code) => reject(new Error(`${name} exited with ${code} (see ${log})`)));
    });
    const ports = await within(listening, { what: `${name} to listen`, timeoutMs: 20_000 });
    this.httpPort = ports.httpPort;
    this.grpcPort = ports.grpcPort;
    await waitFor(
      async () => (await fetch(`${this.directUrl}/readyz`, { signal: AbortSignal.timeout(1000) })).ok,
      { what: `${name} to be ready`, timeoutMs: 20_000, intervalMs: 50 },
    );
  }

  /** kill -9: nothing is flushed, nothing answered. */
  async kill9(): Promise<void> {
    this.#child?.kill('SIGKILL');
    await this.#exited;
    this.#child = null;
  }

  pause(): void {
    this.#child?.kill('SIGSTOP');
  }

  resume(): void {
    this.#child?.kill('SIGCONT');
  }

  /**
   * Moves its wall clock by `seconds` more, and resolves once the server's own clock shows
   * the jump (the Date header of its answers; libfaketime reads its file again only every
   * second or two, and only when the process asks the time): the instant it resolves is an
   * upper bound of when the jump took effect.
   */
  async jumpClock(seconds: number): Promise<number> {
    if (!this.clockFile) throw new Error(`${this.name} does not run under libfaketime`);
    const before = this.offsetSeconds * 1000;
    this.offsetSeconds += seconds;
    const after = this.offsetSeconds * 1000;
    writeFileSync(this.clockFile, `${this.offsetSeconds >= 0 ? '+' : ''}${this.offsetSeconds}\n`);
    return waitFor(
      async () => {
        const sent = Date.now();
        const answer = await fetch(`${this.directUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        await answer.arrayBuffer();
        const shown = Date.parse(answer.headers.get('date') ?? '');
        // Closer to the clock after the jump than before it (the header shows whole seconds,
        // and may be up to a second old).
        return Math.abs(shown - (sent + after)) < Math.abs(shown - (sent + before)) && Date.now();
      },
      { what: `${this.name}'s clock to jump ${seconds} s`, timeoutMs: 10_000, intervalMs: 50 },
    );
  }

  async stop(): Promise<void> {
    if (this.#child) {
      this.resume();
      this.#child.kill('SIGTERM');
      const timer = setTimeout(() => this.#child?.kill('SIGKILL'), 10_000);
      await this.#exited;
      clearTimeout(timer);
      this.#child = null;
    }
    await this.restProxy?.close();
    await this.grpcProxy?.close();
  }
}

/**
 * A PostgreSQL cluster of the run's own (initdb, pg_ctl), on a port of its own, run as the
 * `postgres` user (initdb refuses root): the run restarts it without touching the machine's
 * PostgreSQL, which other tests use.
 */
export class PgCluster {
  readonly port: number;
  readonly #data: string;
  readonly #dir: string;

  private constructor(dir: string, port: number) {
    this.#dir = dir;
    this.#data = join(dir, 'data');
    this.port = port;
  }

  static async start(dir: string): Promise<PgCluster> {
    mkdirSync(dir, { recursive: true });
    const asRoot = process.getuid?.() === 0;
    if (asRoot) {
      // The postgres user must reach its folder: the run's folder (0700, root's) opens up.
      chmodSync(dirname(dir), 0o755);
      chownSync(dir, uidOf('postgres'), gidOf('postgres'));
    }
    const cluster = new PgCluster(dir, await freePort());
    clusters.add(cluster);
    cluster.#run('initdb', ['-D', cluster.#data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
    cluster.#pgctl('start');
    return cluster;
  }

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  /** pg_ctl restart -m immediate: like a crash of the database server, then its recovery. */
  restart(): void {
    this.#pgctl('restart', ['-m', 'immediate']);
  }

  stop(): void {
    clusters.delete(this);
    try {
      this.#pgctl('stop', ['-m', 'immediate']);
    } catch {
      // Already down.
    }
  }

  #pgctl(action: string, extra: string[] = []): void {
    const options = `-p ${this.port} -k ${this.#dir} -c listen_addresses=127.0.0.1 -c max_connections=200`;
    this.#run('pg_ctl', [
      '-D',
      this.#data,
      '-o',
      options,
      '-l',
      join(this.#dir, 'postgres.log'),
      '-w',
      ...extra,
      action,
    ]);
  }

  #run(program: string, args: string[]): void {
    const command = join(PG_BIN, program);
    if (process.getuid?.() === 0)
      execFileSync('runuser', ['-u', 'postgres', '--', command, ...args], { stdio: 'ignore' });
    else execFileSync(command, args, { stdio: 'ignore' });
  }
}

function uidOf(user: string): number {
  return Number(execFileSync('id', ['-u', user]).toString().trim());
}

function gidOf(user: string): number {
  return Number(execFileSync('id', ['-g', user]).toString().trim());
}
