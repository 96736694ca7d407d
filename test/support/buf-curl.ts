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
