import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { arch, platform } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './server-process.js';
import { waitFor } from './wait-for.js';

/**
 * The buf binary itself. `node_modules/.bin/buf` is a Node script that starts it (a second
 * process, and a Node start-up, per call): the platform package's binary is called directly
 * when it is installed, the script otherwise.
 */
const BUF = (() => {
  const native = join(
    ROOT,
    'node_modules/@bufbuild',
    `buf-${platform()}-${arch()}`,
    'bin',
    platform() === 'win32' ? 'buf.exe' : 'buf',
  );
  return existsSync(native) ? native : join(ROOT, 'node_modules/.bin/buf');
})();

const CURL = ['curl', '--protocol', 'grpc', '--http2-prior-knowledge'];

export interface BufCurlResult {
  /** buf's exit code: 0 on an OK status. */
  readonly exitCode: number;
  /** The response message as JSON, when the call succeeded. */
  readonly response: unknown;
  /** On failure, buf prints `{"code": "already_exists", "message": "..."}` on stderr. */
  readonly error: { code: string; message: string } | null;
  readonly stderr: string;
}

/**
 * Calls a gRPC method the way the guide's grpcurl does: with no .proto at hand, so the
 * schema comes from the server's reflection service alone.
 */
export function bufCurl(address: string, method: string, body?: unknown): Promise<BufCurlResult> {
  const args = [...CURL];
  if (body !== undefined) args.push('-d', JSON.stringify(body));
  args.push(`http://${address}/${method}`);
  return new Promise((resolve) => {
    execFile(BUF, args, { timeout: 20_000 }, (error, stdout, stderr) => {
      const exitCode = error ? Number((error as { code?: unknown }).code ?? 1) : 0;
      resolve({
        exitCode,
        response: exitCode === 0 && stdout.trim() !== '' ? JSON.parse(stdout) : null,
        error: exitCode !== 0 ? parseError(stderr) : null,
        stderr,
      });
    });
  });
}

/** One method (`package.Service/Method`) through buf and reflection; the call must succeed. */
export async function bufOk<T>(address: string, method: string, body?: unknown): Promise<T> {
  const result = await bufCurl(address, method, body);
  assert.equal(result.exitCode, 0, `${method} ${JSON.stringify(body)} failed: ${result.stderr}`);
  return result.response as T;
}

/** gRPC codes by buf's lower-case names. */
const BUF_CODES = {
  already_exists: 6,
  not_found: 5,
  invalid_argument: 3,
  deadline_exceeded: 4,
  failed_precondition: 9,
} as const;

/** The exit code of buf for a call that ended with `code`: the gRPC code times 8. */
export function bufExitCode(code: keyof typeof BUF_CODES): number {
  return BUF_CODES[code] * 8;
}

/** One method through buf that must fail with `code` (buf's lower-case name); returns the status message. */
export async function bufFails(
  address: string,
  method: string,
  body: unknown,
  code: keyof typeof BUF_CODES,
): Promise<string> {
  const result = await bufCurl(address, method, body);
  const context = `${method} ${JSON.stringify(body)}: exit ${result.exitCode}, stderr ${result.stderr}`;
  assert.equal(result.response, null, context);
  assert.ok(result.error, context);
  assert.equal(result.error.code, code, context);
  assert.equal(result.exitCode, bufExitCode(code), context);
  return result.error.message;
}

/** Runs buf with raw arguments (e.g. `--list-services`), returning stdout. */
export function bufRaw(args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(BUF, args, { timeout: 20_000 }, (error, stdout, stderr) => {
      resolve({ exitCode: error ? Number((error as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** A server-streaming call through buf and reflection, read as buf prints it. */
export interface BufStream {
  /** The messages printed so far, in order (each a complete JSON value). */
  readonly messages: unknown[];
  /** True while buf runs, i.e. while the stream is open. */
  readonly running: boolean;
  /**
   * Resolves with the messages once `count` of them have been printed; fails when buf exits
   * first or `timeoutMs` (default 10 s) passes.
   */
  until(count: number, what: string, timeoutMs?: number): Promise<unknown[]>;
  /** Ends buf (and so the call) from this side; resolves once it has exited. */
  stop(): Promise<void>;
  /** What buf wrote on stderr. */
  readonly stderr: string;
}

/**
 * Starts a server-streaming method through buf (`--timeout` bounds it), collecting each
 * message as buf prints it; stop() ends it.
 */
export function bufStream(address: string, method: string, body: unknown, timeoutSeconds = 20): BufStream {
  const child: ChildProcess = spawn(
    BUF,
    [...CURL, '--timeout', `${timeoutSeconds}s`, '-d', JSON.stringify(body), `http://${address}/${method}`],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  let running = true;
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<void>((resolve) => {
    child.once('close', () => {
      running = false;
      resolve();
    });
  });
  return {
    get messages() {
      return completeJsonValues(stdout);
    },
    get running() {
      return running;
    },
    get stderr() {
      return stderr;
    },
    async until(count, what, timeoutMs = 10_000) {
      const seen = await waitFor(
        () => {
          const messages = completeJsonValues(stdout);
          return messages.length >= count || !running ? messages : null;
        },
        { what, timeoutMs },
      );
      assert.ok(
        seen.length >= count,
        `${what}: buf exited (${child.exitCode}) first: ${stderr}; printed ${stdout}`,
      );
      return seen;
    },
    async stop() {
      if (running) child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * The complete JSON values buf printed one after the other for a server stream (each
 * pretty-printed over several lines), in order; a value still being written is left out.
 */
function completeJsonValues(text: string): unknown[] {
  const values: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  let escaped = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (c === '\\') escaped = true;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    } else if (c === '{' || c === '[') {
      if (depth === 0) start = i;
      depth++;
    } else if (c === '}' || c === ']') {
      depth--;
      if (depth === 0) values.push(JSON.parse(text.slice(start, i + 1)));
    }
  }
  return values;
}

function parseError(stderr: string): { code: string; message: string } | null {
  const start = stderr.indexOf('{');
  if (start < 0) return null;
  try {
    return JSON.parse(stderr.slice(start)) as { code: string; message: string };
  } catch {
    return null;
  }
}
