import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './server-process.js';

const BUF = join(ROOT, 'node_modules/.bin/buf');

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
  const args = ['curl', '--protocol', 'grpc', '--http2-prior-knowledge'];
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
const BUF_CODES = { already_exists: 6, not_found: 5, invalid_argument: 3, deadline_exceeded: 4 } as const;

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

function parseError(stderr: string): { code: string; message: string } | null {
  const start = stderr.indexOf('{');
  if (start < 0) return null;
  try {
    return JSON.parse(stderr.slice(start)) as { code: string; message: string };
  } catch {
    return null;
  }
}
