import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * The repository root (the folder of package.json above this file: test/support/ as a
 * source, dist/test/support/ once compiled), and the compiled entry point `npm start` runs.
 */
export const ROOT = repositoryRoot(fileURLToPath(new URL('.', import.meta.url)));
export const MAIN = join(ROOT, 'dist/src/main.js');

function repositoryRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly httpPort: number;
  readonly grpcPort: number;
  /** `http://127.0.0.1:PORT` */
  readonly baseUrl: string;
  /** `127.0.0.1:PORT` */
  readonly grpcAddress: string;
  /** Every stdout line so far (pino JSON). */
  readonly lines: string[];
  /**
   * Resolves with the exit code (or signal name) once the process has exited. Reading it
   * keeps the test process alive until then (the child itself is unreferenced).
   */
  readonly exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after `ms` if it is still running. */
  stop(ms?: number): Promise<number | string>;
}

/** A temporary folder removed by the returned function. */
export function tempDir(prefix = 'tracker-test-'): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/**
 * Server processes still running. A test that fails before its cleanup must not leave a
 * server behind, nor keep the test file's process alive through the server's pipes (the
 * runner would wait forever): children and their pipes are unreferenced, and whatever is
 * still running when the test process exits is killed.
 */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function track(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
  child.unref();
  for (const stream of [child.stdout, child.stderr]) (stream as { unref?: () => void } | null)?.unref?.();
}

/** `promise`, with a referenced timer keeping the event loop alive until it settles. */
function whileAwaited<T>(promise: Promise<T>): Promise<T> {
  const timer = setInterval(() => {}, 60_000);
  return promise.finally(() => clearInterval(timer));
}

/** The server's arguments for free ports and a throwaway in-memory store; more may follow. */
export const FREE_ARGS: readonly string[] = [
  '--http-port',
  '0',
  '--grpc-port',
  '0',
  '--database-url',
  'sqlite::memory:',
];

/**
 * Starts the real server (`node dist/src/main.js`) as a child process and waits for its
 * "tracker listening" line. Defaults to free ports and a throwaway in-memory store.
 */
export async function startServerProcess(
  options: {
    args?: readonly string[];
    env?: NodeJS.ProcessEnv;
    cwd?: string;
    timeoutMs?: number;
    /** What runs the server, before `args` (default: node dist/src/main.js). */
    command?: readonly [string, ...string[]];
  } = {},
): Promise<ServerProcess> {
  const args = options.args ?? FREE_ARGS;
  const [program, ...first] = options.command ?? [process.execPath, MAIN];
  const child = spawn(program, [...first, ...args], {
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  const lines: string[] = [];
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  const ports = await new Promise<{ httpPort: number; grpcPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start in time; stderr: ${stderr}`));
    }, options.timeoutMs ?? 15_000);
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      lines.push(line);
      if (!line.includes('"tracker listening"')) return;
      const parsed = JSON.parse(line) as { httpPort: number; grpcPort: number };
      clearTimeout(timer);
      resolve(parsed);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening; stderr: ${stderr}`));
    });
  });
  return {
    child,
    ...ports,
    baseUrl: `http://127.0.0.1:${ports.httpPort}`,
    grpcAddress: `127.0.0.1:${ports.grpcPort}`,
    lines,
    get exited() {
      return whileAwaited(exited);
    },
    async stop(ms = 10_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), ms);
        const code = await whileAwaited(exited);
        clearTimeout(timer);
        return code;
      }
      return whileAwaited(exited);
    },
  };
}

export interface ProcessRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to completion in its own process group, collecting its output; the whole
 * group is killed, and the promise rejects, if it outlives `timeoutMs`.
 */
export function runToExit(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<ProcessRun> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? ROOT,
      env: options.env ?? process.env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(
          new Error(
            `${command} ${args.join(' ')} ran longer than ${timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`,
          ),
        );
      } else {
        resolve({ code, signal, stdout, stderr });
      }
    });
  });
}

/** Runs the server entry to completion (for --help and bad configuration). */
export function runServerToExit(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 15_000,
): Promise<ProcessRun> {
  return runToExit(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env }, timeoutMs });
}
