import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/**
 * Where `npm run build` puts the dashboard (scripts/build-web.mjs): dist/web/, found from
 * dist/src/http/dashboard.js. Run from the TypeScript sources (tsx), this is web/ itself,
 * which holds no hashed bundle: the dashboard then answers 503 until built.
 */
export const DASHBOARD_ASSETS_DIR = fileURLToPath(new URL('../../web/', import.meta.url));

/** The HTML may load only this origin's own files: no inline script or style, no CDN. */
export const DASHBOARD_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/** The types of the files served under /assets/ (a source map is not among them). */
const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * An asset's name carries a hash of its content, so it never changes under that name: it is
 * cached for a year and never revalidated. The HTML, which names the assets, is never stored.
 */
export const ASSET_CACHE_CONTROL = 'public, max-age=31536000, immutable';
export const HTML_CACHE_CONTROL = 'no-store';

/** Hex digits of an asset's SHA-256 in its name. */
const HASH_LENGTH = 16;
const HASHED_NAME = new RegExp(`^(.+)-([0-9a-f]{${HASH_LENGTH}})(\\.[a-z0-9]+)$`);

/**
 * `app.js` with `body` -> `app-<the first 16 hex digits of its SHA-256>.js`: the name the
 * build (scripts/build-web.mjs, by the same rule) gives each asset, and the only name under
 * which the server serves it.
 */
export function hashedAssetName(name: string, body: Uint8Array | string): string {
  const hash = createHash('sha256').update(body).digest('hex').slice(0, HASH_LENGTH);
  const dot = name.lastIndexOf('.');
  return `${name.slice(0, dot)}-${hash}${name.slice(dot)}`;
}

interface Asset {
  readonly body: Buffer;
  readonly type: string;
  readonly etag: string;
}

/** The built dashboard: its page, and the assets it may load by name. */
interface Dashboard {
  readonly index: Asset;
  readonly assets: ReadonlyMap<string, Asset>;
}

function asset(body: Buffer, type: string): Asset {
  return { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
}

/**
 * The build in `dir` (not its subfolders), read once: index.html, and the files whose name
 * is their content's hash (hashedAssetName) with a type in CONTENT_TYPES. Anything else
 * (an unhashed or stale name, a source map) is not served. When there is no build (no
 * index.html, or one that loads from assets/ a file that is not such a built file, as
 * web/index.html itself does), why not.
 */
function loadDashboard(dir: string): Dashboard | { readonly notBuilt: string } {
  const indexPath = join(dir, 'index.html');
  if (!existsSync(indexPath)) return { notBuilt: `no ${indexPath}` };
  const assets = new Map<string, Asset>();
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const type = CONTENT_TYPES[extname(name)];
    if (!type || !HASHED_NAME.test(name) || !statSync(path).isFile()) continue;
    const body = readFileSync(path);
    if (hashedAssetName(name.replace(HASHED_NAME, '$1$3'), body) === name) {
      assets.set(name, asset(body, type));
    }
  }
  const html = readFileSync(indexPath);
  const loads = [...html.toString('utf8').matchAll(/"assets\/([^"]+)"/g)].map((match) => match[1] as string);
  if (loads.length === 0) return { notBuilt: `${indexPath} loads nothing from assets/` };
  const absent = loads.find((name) => !assets.has(name));
  if (absent !== undefined) {
    return { notBuilt: `${indexPath} loads assets/${absent}, not a content-hashed file of ${dir}` };
  }
  return { index: asset(html, 'text/html; charset=utf-8'), assets };
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
 * The dashboard: GET / (index.html, never stored) and GET /assets/:file (the hashed built
 * files, immutable). Only files present in `assetsDir` when the server starts are served, so
 * no request names a path on disk.
 */
export function registerDashboard(app: FastifyInstance, options: { assetsDir: string }): void {
  const dashboard = loadDashboard(options.assetsDir);

  app.get('/', async (request, reply) => {
    if ('notBuilt' in dashboard) {
      return reply.status(503).send({
        error: `the dashboard is not built (${dashboard.notBuilt}): run npm run build`,
        code: 'DASHBOARD_NOT_BUILT',
      });
    }
    reply.header('content-security-policy', DASHBOARD_CSP);
    reply.header('referrer-policy', 'no-referrer');
    reply.header('x-frame-options', 'DENY');
    return send(request, reply, dashboard.index, HTML_CACHE_CONTROL);
  });

  app.get<{ Params: { file: string } }>('/assets/:file', async (request, reply) => {
    const asset = 'assets' in dashboard ? dashboard.assets.get(request.params.file) : undefined;
    if (!asset) return reply.status(404).send({ error: 'asset not found', code: 'NOT_FOUND' });
    return send(request, reply, asset, ASSET_CACHE_CONTROL);
  });
}
