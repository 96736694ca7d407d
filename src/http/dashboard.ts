import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/**
 * Where `npm run build` puts the dashboard (scripts/build-web.mjs): dist/web/, found from
 * dist/src/http/dashboard.js. Run from the TypeScript sources (tsx), this is web/ itself,
 * which holds no bundle: the dashboard then answers 503 until built.
 */
export const DASHBOARD_ASSETS_DIR = fileURLToPath(new URL('../../web/', import.meta.url));

/** The HTML may load only this origin's own files: no inline script or style, no CDN. */
export const DASHBOARD_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

/** Assets may be cached briefly; the HTML is revalidated every time (it names the assets). */
const ASSET_MAX_AGE_SECONDS = 300;

interface Asset {
  readonly body: Buffer;
  readonly type: string;
  readonly etag: string;
}

/** The files of `dir` (not its subfolders), read once; undefined when the dir has no build. */
function loadAssets(dir: string): Map<string, Asset> | undefined {
  if (!existsSync(join(dir, 'index.html')) || !existsSync(join(dir, 'app.js'))) return undefined;
  const assets = new Map<string, Asset>();
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (!statSync(path).isFile()) continue;
    const body = readFileSync(path);
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
    assets.set(name, { body, etag, type: CONTENT_TYPES[extname(name)] ?? 'application/octet-stream' });
  }
  return assets;
}

function send(request: FastifyRequest, reply: FastifyReply, asset: Asset, cacheControl: string) {
  reply.header('content-type', asset.type);
  reply.header('cache-control', cacheControl);
  reply.header('etag', asset.etag);
  reply.header('x-content-type-options', 'nosniff');
  const match = request.headers['if-none-match'];
  if (match?.split(',').some((tag) => tag.trim() === asset.etag)) {
    return reply.status(304).send();
  }
  return reply.send(asset.body);
}

/**
 * The dashboard: GET / (index.html) and GET /assets/:file (the other built files). Only
 * files present in `assetsDir` when the server starts are served, so no request names a
 * path on disk.
 */
export function registerDashboard(app: FastifyInstance, options: { assetsDir: string }): void {
  const assets = loadAssets(options.assetsDir);
  const index = assets?.get('index.html');

  app.get('/', async (request, reply) => {
    if (!index) {
      return reply.status(503).send({
        error: `the dashboard is not built (no ${join(options.assetsDir, 'app.js')}): run npm run build`,
        code: 'DASHBOARD_NOT_BUILT',
      });
    }
    reply.header('content-security-policy', DASHBOARD_CSP);
    reply.header('referrer-policy', 'no-referrer');
    reply.header('x-frame-options', 'DENY');
    return send(request, reply, index, 'no-cache');
  });

  app.get<{ Params: { file: string } }>('/assets/:file', async (request, reply) => {
    const asset = assets?.get(request.params.file);
    if (!asset || request.params.file === 'index.html') {
      return reply.status(404).send({ error: 'asset not found', code: 'NOT_FOUND' });
    }
    return send(request, reply, asset, `public, max-age=${ASSET_MAX_AGE_SECONDS}`);
  });
}
