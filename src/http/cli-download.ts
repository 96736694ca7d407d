import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import {
  digestSingleExecutable,
  makeSeaBlob,
  planSingleExecutable,
  type SingleExecutable,
  streamSingleExecutable,
} from '../single-executable.js';
import type { HttpCode } from './error-mapping.js';

/**
 * Where `npm run build:cli` puts the single-executable client (scripts/build-cli.mjs):
 * dist/cli/, found from dist/src/http/cli-download.js.
 */
export const CLI_DIR = fileURLToPath(new URL('../../cli/', import.meta.url));

/** The executable served: Linux x64, the platform of Node's official builds and CI runners. */
export const CLI_NAME = 'tracker-linux-x64';
/** The client bundled into one CommonJS file (`npm run build:cli`, and the npm package's prepack). */
export const CLI_BUNDLE = 'tracker.cjs';

export interface CliDownloadOptions {
  /** The folder holding CLI_BUNDLE. */
  dir: string;
  /** The node binary the executable is made of and with: the server's own (process.execPath). */
  node: string;
  /** That node's platform and architecture (process.platform, process.arch). */
  platform: string;
  arch: string;
}

/** How long a failure to make the executable is answered before it is tried again. */
const RETRY_MS = 60_000;

interface Made {
  executable: SingleExecutable;
  digest: string;
}

/**
 * GET /cli/tracker-linux-x64: the single-executable client, for CI images without Node.js
 * (`curl -fsSLo tracker "$TRACKER_URL/cli/tracker-linux-x64" && chmod +x tracker`), with its
 * SHA-256 in `X-Checksum-Sha256`; GET /cli/tracker-linux-x64.sha256: the same digest in
 * sha256sum's format, to check the download with `sha256sum -c`. Not behind authentication
 * (like the dashboard's files: nothing in it is secret).
 *
 * The executable is made at the first request from the client's bundle (which `npm run
 * build:cli` writes, and the npm package and the container image carry: 112 KiB) and the
 * server's own node binary: that node makes the SEA blob of the bundle (in a temporary
 * folder), and src/single-executable.ts joins the blob to the binary, streamed, never copied.
 * The digest is computed once; a rebuilt bundle is picked up at the next request. So no second
 * node binary is shipped anywhere, and a blob always matches the node it runs in.
 * 404 CLI_NOT_BUILT, saying why, when there is no bundle, or when this node cannot make a
 * linux-x64 executable.
 */
export function registerCliDownload(app: FastifyInstance, options: CliDownloadOptions): void {
  const notBuilt = (why: string) => ({
    error: `the single-executable CLI is not available: ${why}`,
    code: 'CLI_NOT_BUILT' satisfies HttpCode,
  });
  let cached: { stamp: string; made: Promise<Made | string>; retryAt: number } | null = null;

  /**
   * The executable and its digest, or why there is none: made once per build of the bundle
   * (requests meanwhile wait for the same making); a failure is tried again a minute later,
   * not at every request (the route needs no authentication).
   */
  const current = async (): Promise<Made | string> => {
    if (options.platform !== 'linux' || options.arch !== 'x64') {
      return `this server's node is ${options.platform}-${options.arch}, and makes no linux-x64 executable`;
    }
    const bundle = join(options.dir, CLI_BUNDLE);
    let stamp: string;
    try {
      const stats = await stat(bundle);
      stamp = `${stats.mtimeMs}:${stats.size}`;
    } catch {
      return 'it is not built here (npm run build:cli)';
    }
    if (cached?.stamp !== stamp || Date.now() >= cached.retryAt) {
      const entry = { stamp, made: make(bundle), retryAt: Number.POSITIVE_INFINITY };
      entry.made.then((made) => {
        if (typeof made === 'string') entry.retryAt = Date.now() + RETRY_MS;
      });
      cached = entry;
    }
    return cached.made;
  };

  const make = async (bundle: string): Promise<Made | string> => {
    try {
      const blob = await makeSeaBlob(options.node, bundle);
      const executable = await planSingleExecutable(options.node, blob);
      return { executable, digest: await digestSingleExecutable(executable) };
    } catch (error) {
      // The cause names the server's paths: for its log, not for a caller it does not know.
      app.log.warn({ err: error }, 'the single-executable client could not be made');
      return 'it could not be made on this server (its log says why)';
    }
  };

  app.get(`/cli/${CLI_NAME}`, async (_request, reply) => {
    const made = await current();
    if (typeof made === 'string') return reply.status(404).send(notBuilt(made));
    return reply
      .header('content-type', 'application/octet-stream')
      .header('content-disposition', `attachment; filename="${CLI_NAME}"`)
      .header('content-length', made.executable.size)
      .header('x-checksum-sha256', made.digest)
      .header('cache-control', 'no-cache')
      .send(streamSingleExecutable(made.executable));
  });
  app.get(`/cli/${CLI_NAME}.sha256`, async (_request, reply) => {
    const made = await current();
    if (typeof made === 'string') return reply.status(404).send(notBuilt(made));
    return reply
      .header('content-type', 'text/plain; charset=utf-8')
      .header('cache-control', 'no-cache')
      .send(`${made.digest}  ${CLI_NAME}\n`);
  });
}
