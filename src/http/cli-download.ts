import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { HttpCode } from './error-mapping.js';

/**
 * Where `npm run build:cli` puts the single-executable client (scripts/build-cli.mjs):
 * dist/cli/, found from dist/src/http/cli-download.js.
 */
export const CLI_DIR = fileURLToPath(new URL('../../cli/', import.meta.url));

/** The executables served, by name: only what the build makes. */
const NAMES = ['tracker-linux-x64'] as const;

/**
 * GET /cli/tracker-linux-x64: the single-executable client, for CI images without Node.js
 * (`curl -fsSLo tracker "$TRACKER_URL/cli/tracker-linux-x64" && chmod +x tracker`), with its
 * SHA-256 in `X-Checksum-Sha256`; GET /cli/tracker-linux-x64.sha256: the same digest in
 * sha256sum's format, to check the download with `sha256sum -c`. Not behind authentication
 * (like the dashboard's files: nothing in it is secret). 404 CLI_NOT_BUILT when the server's
 * installation has no such build (the npm package has none; the container image has it).
 */
export function registerCliDownload(app: FastifyInstance, options: { dir: string }): void {
  const notBuilt = {
    error: 'the single-executable CLI is not built here (npm run build:cli)',
    code: 'CLI_NOT_BUILT' satisfies HttpCode,
  };
  /** The build's digest line (`<hex>  <name>`), read at each request: a rebuild is served at once. */
  const digestOf = (name: string): string | null => {
    const file = join(options.dir, `${name}.sha256`);
    if (!existsSync(file) || !existsSync(join(options.dir, name))) return null;
    return readFileSync(file, 'utf8');
  };
  for (const name of NAMES) {
    app.get(`/cli/${name}`, async (_request, reply) => {
      const line = digestOf(name);
      if (line === null) return reply.status(404).send(notBuilt);
      const path = join(options.dir, name);
      return reply
        .header('content-type', 'application/octet-stream')
        .header('content-disposition', `attachment; filename="${name}"`)
        .header('content-length', statSync(path).size)
        .header('x-checksum-sha256', line.split(' ')[0] ?? '')
        .header('cache-control', 'no-cache')
        .send(createReadStream(path));
    });
    app.get(`/cli/${name}.sha256`, async (_request, reply) => {
      const line = digestOf(name);
      if (line === null) return reply.status(404).send(notBuilt);
      return reply
        .header('content-type', 'text/plain; charset=utf-8')
        .header('cache-control', 'no-cache')
        .send(line);
    });
  }
}
