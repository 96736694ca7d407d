import { readFile } from 'node:fs/promises';
import { STATUS_CODES } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance, RouteOptions } from 'fastify';
import { ErrorCode } from '../core/errors.js';
import { HTTP_STATUS } from './error-mapping.js';
import { lockJson } from './schemas.js';

/**
 * The API description: `GET /openapi.json` (OpenAPI 3.1) and the Swagger UI at `/docs`.
 *
 * The document is generated from the routes themselves: an onRoute hook, added before any
 * route is declared, keeps every route's options, and the document is built once when the
 * app is ready, from the very schema objects Fastify validates and serializes with (OpenAPI
 * 3.1 Schema Objects are JSON Schema, so they go in unchanged). The words (summary,
 * description, tags, operationId) come from the OPERATIONS table below, keyed by
 * `METHOD path`; a route missing from it is still documented, under a generated
 * operationId and without a summary (test/openapi.test.ts fails on that).
 *
 * @fastify/swagger is not used: its own onRoute hook is only added when the plugin loads,
 * at ready time, after buildHttpApp has declared its routes, so it would document none.
 */

type Schema = Readonly<Record<string, unknown>>;

interface ResponseDoc {
  readonly description: string;
  /** Media type → schema, for answers no route schema describes (text, SSE, plain JSON). */
  readonly content?: Readonly<Record<string, Schema>>;
}

interface OperationDoc {
  readonly operationId: string;
  readonly summary: string;
  readonly description?: string;
  readonly tags: readonly string[];
  /**
   * Error codes the route answers beyond those derived from its shape (bad input, body
   * problems, the store being down, a bug).
   */
  readonly errors?: readonly string[];
  /** The request body may be left out entirely. */
  readonly bodyOptional?: boolean;
  /** An example request body. */
  readonly example?: Schema;
  /** Descriptions of path, query and header parameters, by name. */
  readonly parameters?: Readonly<Record<string, string>>;
  /** Responses by status: a description for a schema the route has, or the whole answer. */
  readonly responses?: Readonly<Record<string, ResponseDoc>>;
}

const API = '/api/v1alpha1';

const LOCK_ID = 'The `id` returned when the lock was acquired.';

const RELEASE_DESCRIPTION =
  'Releases the lock with this `id`. Releasing a lock that is not held (released, expired, ' +
  'or never existed) answers `404` with `{"success": false, ...}`.';

const released = {
  200: { description: 'Released: `{"success": true, "message": "Lock released successfully"}`.' },
};

const text = { type: 'string' } as const;

/** Summaries and descriptions of the routes, by `METHOD path` as declared in Fastify. */
export const OPERATIONS: Readonly<Record<string, OperationDoc>> = {
  [`POST ${API}/lock`]: {
    operationId: 'createLock',
    summary: 'Acquire a lock',
    description:
      'Acquires the lock named `service` for `who`. Answers at once: `201` and the lock, or ' +
      '`409 LOCK_HELD` with the holder in `existingLock`. With `waitSeconds` the request waits ' +
      "in the service's queue (granted in arrival order) and answers `201` when granted, or " +
      '`409 WAIT_TIMEOUT` at its deadline; a client that hangs up leaves the queue at once. ' +
      'With `ttlSeconds` the lock is a lease that expires unless renewed. `fencingToken` grows ' +
      'with every acquire of the service: pass it along with every write to the protected system.',
    tags: ['locks'],
    errors: [ErrorCode.LOCK_HELD, ErrorCode.WAIT_TIMEOUT],
    example: { service: 'production-deployment', who: 'ci-pipeline-123', ttlSeconds: 600 },
    responses: { 201: { description: 'The lock, now held by `who`.' } },
  },
  [`GET ${API}/lock/:id`]: {
    operationId: 'getLock',
    summary: 'Get a lock',
    description: 'The lock with this `id`, while it is held (an expired lock is not).',
    tags: ['locks'],
    errors: [ErrorCode.LOCK_NOT_FOUND],
    parameters: { id: LOCK_ID },
    responses: { 200: { description: 'The lock.' } },
  },
  [`POST ${API}/lock/:id/renew`]: {
    operationId: 'renewLock',
    summary: 'Renew a lease',
    description:
      "Extends the lease of a held lock: `ttlSeconds` from now, or the lock's own TTL when the " +
      'body (optional) does not say. A lock that expired, was released or never existed ' +
      'answers `404 LOCK_NOT_HELD`: renewal never brings back a lock someone else may hold.',
    tags: ['locks'],
    errors: [ErrorCode.LOCK_NOT_HELD],
    bodyOptional: true,
    example: { ttlSeconds: 600 },
    parameters: { id: LOCK_ID },
    responses: { 200: { description: 'The lock with its new `expiresAt`.' } },
  },
  [`DELETE ${API}/lock/:id`]: {
    operationId: 'releaseLock',
    summary: 'Release a lock',
    description: `${RELEASE_DESCRIPTION} The preferred way to release.`,
    tags: ['locks'],
    errors: [ErrorCode.LOCK_NOT_FOUND],
    parameters: { id: LOCK_ID },
    responses: released,
  },
  [`POST ${API}/unlock/:id`]: {
    operationId: 'unlockWithPost',
    summary: 'Release a lock (POST form)',
    description:
      `${RELEASE_DESCRIPTION} Same as \`DELETE /api/v1alpha1/lock/{id}\`, which is preferred. ` +
      'Sends no body.',
    tags: ['locks'],
    errors: [ErrorCode.LOCK_NOT_FOUND],
    parameters: { id: LOCK_ID },
    responses: released,
  },
  [`GET ${API}/unlock/:id`]: {
    operationId: 'unlockWithGet',
    summary: "Release a lock (GET form, for the Locks Guide's scripts)",
    description:
      `${RELEASE_DESCRIPTION} A GET with a side effect: it exists because the Locks Guide's ` +
      'scripts use it. Prefer `DELETE /api/v1alpha1/lock/{id}`; caches, prefetchers and link ' +
      'checkers may follow a GET.',
    tags: ['locks'],
    errors: [ErrorCode.LOCK_NOT_FOUND],
    parameters: { id: LOCK_ID },
    responses: released,
  },
  [`GET ${API}/locks/list`]: {
    operationId: 'listLocks',
    summary: 'List held locks',
    description:
      'The locks held now, oldest first (by acquisition time, then `id`), a page at a time. ' +
      'A page past the end answers `locks: []` with the true `total`.',
    tags: ['locks'],
    parameters: {
      page: 'The page, from 1 (default 1).',
      per_page: 'Locks per page (default 100, at most 1000).',
      service: 'Only the lock of this service.',
      who: 'Only the locks held by this owner.',
    },
    responses: { 200: { description: 'A page of locks and the total count.' } },
  },
  [`GET ${API}/queue/:service`]: {
    operationId: 'getQueue',
    summary: "Show a service's queue",
    description:
      'The holder of the service (`null` when free) and the requests waiting for it, in the ' +
      'order they will be granted.',
    tags: ['queue'],
    parameters: { service: 'The lock name.' },
    responses: { 200: { description: 'The holder and the waiters.' } },
  },
  [`POST ${API}/lock/:id/force-release`]: {
    operationId: 'forceReleaseLock',
    summary: 'Force-release a lock',
    description:
      'Releases a lock on behalf of someone other than its holder (an operator clearing a lock ' +
      'left by a dead job). The optional `reason` is recorded in the history.',
    tags: ['locks'],
    errors: [ErrorCode.LOCK_NOT_FOUND],
    bodyOptional: true,
    parameters: { id: LOCK_ID },
  },
  [`GET ${API}/history`]: {
    operationId: 'listHistory',
    summary: 'Lock history',
    description:
      'Past lock events (acquired, released, expired, force-released), newest first, ' +
      'filtered by `service`, `who` and a time range; page with `before`.',
    tags: ['history'],
    parameters: {
      service: 'Only events of this service.',
      who: 'Only events of this owner.',
      since: 'Only events at or after this time.',
      until: 'Only events before this time.',
      limit: 'At most this many events.',
      before: 'Only events older than this cursor (from the previous page).',
    },
  },
  [`GET ${API}/watch`]: {
    operationId: 'watchLocks',
    summary: 'Watch lock events (Server-Sent Events)',
    description:
      'A `text/event-stream`: first an `event: snapshot` message with every held lock ' +
      '(`{"eventId", "locks"}`), then one message per lock event as it happens (`event:` its type, ' +
      '`data:` the event as in GET /history), optionally for one `service`. Each message carries ' +
      'an `id`; a client that reconnects with `Last-Event-ID` (or `lastEventId`) gets exactly the ' +
      'events after it, or a fresh snapshot when they are no longer all kept. Events right after a ' +
      'snapshot may repeat changes it shows: apply them as upserts and deletes by lock id.',
    tags: ['history'],
    parameters: {
      service: 'Only events of this service.',
      lastEventId: 'Resume after this event id, for clients that cannot send the header.',
      'last-event-id': 'Resume after this event id (sent by `EventSource` on reconnection).',
    },
    responses: {
      200: {
        description: 'An endless stream of Server-Sent Events; each `data:` line is one JSON event.',
        content: { 'text/event-stream': text },
      },
    },
  },
  'GET /healthz': {
    operationId: 'getHealth',
    summary: 'Liveness',
    description: 'Answers `200` while the process runs; does not touch the store.',
    tags: ['operations'],
    responses: {
      200: {
        description: 'The process runs.',
        content: {
          'application/json': {
            type: 'object',
            required: ['status'],
            properties: { status: { type: 'string', enum: ['ok'] } },
          },
        },
      },
    },
  },
  'GET /readyz': {
    operationId: 'getReadiness',
    summary: 'Readiness',
    description: 'Answers `200` while the store answers, `503 STORE_UNAVAILABLE` otherwise.',
    tags: ['operations'],
    errors: [ErrorCode.STORE_UNAVAILABLE],
    responses: {
      200: {
        description: 'The store answers.',
        content: {
          'application/json': {
            type: 'object',
            required: ['status'],
            properties: { status: { type: 'string', enum: ['ready'] } },
          },
        },
      },
    },
  },
  'GET /metrics': {
    operationId: 'getMetrics',
    summary: 'Prometheus metrics',
    description: 'Metrics in the Prometheus text exposition format, for scraping.',
    tags: ['operations'],
    responses: { 200: { description: 'The metrics.', content: { 'text/plain': text } } },
  },
};

const TAGS = [
  { name: 'locks', description: 'Acquire, inspect, renew and release locks.' },
  { name: 'queue', description: 'Requests waiting for a held service.' },
  { name: 'history', description: 'What happened to locks, past and live.' },
  { name: 'operations', description: 'Health, readiness and metrics.' },
];

/** What each error code means, for the error responses' descriptions. */
const CODE_MEANINGS: Readonly<Record<string, string>> = {
  [ErrorCode.LOCK_HELD]: 'the service is held by someone else; `existingLock` is the holder',
  [ErrorCode.WAIT_TIMEOUT]:
    'waited `waitSeconds` and the service is still held; `existingLock` is the holder',
  [ErrorCode.LOCK_NOT_FOUND]: 'no lock with that id is held',
  [ErrorCode.LOCK_NOT_HELD]: 'the lock expired, was released or never existed',
  [ErrorCode.INVALID_ARGUMENT]: 'bad input; `field` names it',
  UNSUPPORTED_MEDIA_TYPE: 'a body that is not `application/json`',
  PAYLOAD_TOO_LARGE: 'a body over 64 KiB',
  [ErrorCode.STORE_UNAVAILABLE]: 'the database cannot serve right now; retry',
  [ErrorCode.INTERNAL]: 'a bug; the body says only `internal error`, the log has the rest',
  [ErrorCode.UNAUTHENTICATED]: 'authentication is on and the bearer token is missing or not valid',
  [ErrorCode.PERMISSION_DENIED]: "the token lacks the scope or the service, or the lock is another token's",
  [ErrorCode.RATE_LIMITED]:
    'too many requests from this token (or address); `Retry-After` says when to retry',
  [ErrorCode.QUEUE_FULL]: 'the service already has `--max-waiters-per-service` requests waiting',
  [ErrorCode.TOO_MANY_LOCKS]: 'the store already holds `--max-locks` locks',
};

/** The routes behind the gate (app.ts): the API and the metrics. */
function isGated(url: string): boolean {
  return url.startsWith('/api/') || url === '/metrics';
}

/** Statuses of the codes that Fastify's own errors map to (error-mapping.ts). */
const FRAMEWORK_STATUS: Readonly<Record<string, number>> = {
  UNSUPPORTED_MEDIA_TYPE: 415,
  PAYLOAD_TOO_LARGE: 413,
};

function statusOf(code: string): number {
  return (HTTP_STATUS as Readonly<Record<string, number>>)[code] ?? FRAMEWORK_STATUS[code] ?? 500;
}

const ERROR_PROPERTIES = {
  error: { type: 'string', description: 'What went wrong, in words.' },
  code: {
    type: 'string',
    description: 'A stable code to act on; see the response descriptions.',
    examples: ['LOCK_HELD', 'INVALID_ARGUMENT'],
  },
  field: { type: 'string', description: 'The field or query parameter at fault (`INVALID_ARGUMENT`).' },
  existingLock: {
    $ref: '#/components/schemas/Lock',
    description: 'The holder (`LOCK_HELD`, `WAIT_TIMEOUT`).',
  },
} as const;

const COMPONENTS = {
  securitySchemes: {
    bearer: {
      type: 'http',
      scheme: 'bearer',
      description: 'A token from `tracker token create`, when the server runs with --auth-tokens-file.',
    },
  },
  schemas: {
    Lock: lockJson,
    Error: { type: 'object', required: ['error', 'code'], properties: ERROR_PROPERTIES },
    ReleaseError: {
      description: "The release routes answer errors in the envelope the Locks Guide's scripts expect.",
      type: 'object',
      required: ['success', 'error', 'code'],
      properties: { success: { type: 'boolean', enum: [false] }, ...ERROR_PROPERTIES },
    },
  },
} as const;

const INFO = {
  title: 'Tracker',
  version: 'v1alpha1',
  description:
    'A distributed lock service: take a named lock (`service`) for an owner (`who`), get an ' +
    '`id` back, do the critical work, release by `id`.\n\n' +
    'Every error is JSON with a stable `code` (and `field` for bad input), for example ' +
    '`{"error": "who must be at most 256 characters", "code": "INVALID_ARGUMENT", "field": "who"}`. ' +
    'Unknown fields are refused, never ignored; no value is coerced.',
  license: { name: 'MIT', identifier: 'MIT' },
};

/** Paths that are not part of the API: the dashboard, its assets, and this description. */
export function isUndocumentedPath(url: string): boolean {
  return (
    url === '/' ||
    url === '/openapi.json' ||
    url === '/docs' ||
    url.startsWith('/docs/') ||
    url === '/assets' ||
    url.startsWith('/assets/')
  );
}

/** `/lock/:id` → `/lock/{id}`; a wildcard becomes `{wildcard}`. */
export function toOpenApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)(\([^)]*\))?/g, '{$1}').replace(/\*/g, '{wildcard}');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function generatedOperationId(method: string, url: string): string {
  const words = url.split(/[^A-Za-z0-9]+/).filter(Boolean);
  return method.toLowerCase() + words.map((word) => word.charAt(0).toUpperCase() + word.slice(1)).join('');
}

function parameters(
  where: 'path' | 'query' | 'header',
  schema: unknown,
  descriptions: Readonly<Record<string, string>>,
): Record<string, unknown>[] {
  if (!isObject(schema) || !isObject(schema.properties)) return [];
  const required = Array.isArray(schema.required) ? schema.required : [];
  return Object.entries(schema.properties).map(([name, property]) => {
    const description = descriptions[name];
    return {
      name,
      in: where,
      required: where === 'path' || required.includes(name),
      ...(description === undefined ? {} : { description }),
      schema: property,
    };
  });
}

/** A body schema, or Fastify's per-content-type form `{content: {type: {schema}}}`. */
function mediaTypes(schema: unknown): Record<string, unknown> {
  if (isObject(schema) && isObject(schema.content) && schema.type === undefined) return { ...schema.content };
  return { 'application/json': { schema } };
}

function operation(route: RouteOptions, method: string, taken: Set<string>): Record<string, unknown> {
  const doc: OperationDoc | undefined = OPERATIONS[`${method} ${route.url}`];
  const schema: Record<string, unknown> = isObject(route.schema) ? route.schema : {};
  const described = doc?.parameters ?? {};

  // Every templated path segment must be declared, with a schema or without.
  const path = parameters('path', schema.params, described).filter((p) => route.url.includes(`:${p.name}`));
  const names = [...route.url.matchAll(/:([A-Za-z0-9_]+)/g)].map((match) => match[1] ?? '');
  for (const name of names.filter((n) => !path.some((p) => p.name === n))) {
    const description = described[name];
    path.push({ name, in: 'path', required: true, ...(description ? { description } : {}), schema: text });
  }
  if (route.url.includes('*')) path.push({ name: 'wildcard', in: 'path', required: true, schema: text });
  const all = [
    ...path,
    ...parameters('query', schema.querystring, described),
    ...parameters('header', schema.headers, described),
  ];

  const base = doc?.operationId ?? generatedOperationId(method, route.url);
  let operationId = base;
  for (let n = 2; taken.has(operationId); n++) operationId = `${base}${n}`;
  taken.add(operationId);

  const result: Record<string, unknown> = { operationId };
  if (doc) {
    result.summary = doc.summary;
    if (doc.description) result.description = doc.description;
    result.tags = doc.tags;
  }
  if (all.length > 0) result.parameters = all;
  if (schema.body !== undefined) {
    const content = mediaTypes(schema.body);
    const json = content['application/json'];
    // An example for the request body: the one Swagger UI derives from patterns is noise.
    if (doc?.example !== undefined && isObject(json))
      content['application/json'] = { ...json, example: doc.example };
    result.requestBody = { required: !doc?.bodyOptional, content };
  }
  result.responses = responses(route, method, schema, doc);
  // With --auth-tokens-file these need a bearer token; without, none: both are allowed.
  if (isGated(route.url)) result.security = [{ bearer: [] }, {}];
  return result;
}

function responses(
  route: RouteOptions,
  method: string,
  schema: Record<string, unknown>,
  doc: OperationDoc | undefined,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const described = doc?.responses ?? {};
  if (isObject(schema.response)) {
    for (const [status, response] of Object.entries(schema.response)) {
      const key = status.toUpperCase() === 'DEFAULT' ? 'default' : status.toUpperCase();
      const perType = isObject(response) && isObject(response.content) && response.type === undefined;
      const description =
        described[status]?.description ??
        (isObject(response) && typeof response.description === 'string' ? response.description : undefined) ??
        STATUS_CODES[Number(status)] ??
        'Success.';
      out[key] = perType
        ? { description, content: response.content }
        : { description, content: { 'application/json': { schema: response } } };
    }
  }
  for (const [status, response] of Object.entries(described)) {
    if (out[status] !== undefined) continue;
    const content = response.content
      ? Object.fromEntries(Object.entries(response.content).map(([type, body]) => [type, { schema: body }]))
      : undefined;
    out[status] = { description: response.description, ...(content ? { content } : {}) };
  }
  if (!Object.keys(out).some((status) => status.startsWith('2'))) out['200'] = { description: 'Success.' };

  // The errors: those of the route's own, and those its shape implies.
  const codes = new Set<string>(doc?.errors ?? []);
  // A path parameter is always a string: only a constraint beyond that can fail.
  const constrained = (params: unknown) =>
    isObject(params) &&
    isObject(params.properties) &&
    Object.values(params.properties).some((p) => isObject(p) && Object.keys(p).some((key) => key !== 'type'));
  if (
    ['querystring', 'headers', 'body'].some((part) => schema[part] !== undefined) ||
    constrained(schema.params)
  ) {
    codes.add(ErrorCode.INVALID_ARGUMENT);
  }
  if (['POST', 'PUT', 'PATCH'].includes(method)) {
    codes.add(ErrorCode.INVALID_ARGUMENT);
    codes.add('PAYLOAD_TOO_LARGE');
    codes.add('UNSUPPORTED_MEDIA_TYPE');
  }
  if (route.url.startsWith('/api/')) codes.add(ErrorCode.STORE_UNAVAILABLE);
  if (isGated(route.url)) {
    codes.add(ErrorCode.UNAUTHENTICATED);
    codes.add(ErrorCode.PERMISSION_DENIED);
    codes.add(ErrorCode.RATE_LIMITED);
  }
  if (method === 'POST' && route.url === '/api/v1alpha1/lock') {
    codes.add(ErrorCode.QUEUE_FULL);
    codes.add(ErrorCode.TOO_MANY_LOCKS);
  }
  codes.add(ErrorCode.INTERNAL);
  const errorSchema = route.config?.successEnvelope ? 'ReleaseError' : 'Error';
  const byStatus = new Map<number, string[]>();
  for (const code of codes) byStatus.set(statusOf(code), [...(byStatus.get(statusOf(code)) ?? []), code]);
  for (const [status, list] of [...byStatus].sort(([a], [b]) => a - b)) {
    const key = String(status);
    const lines = list.map((code) => `- \`${code}\`: ${CODE_MEANINGS[code] ?? 'see `error`'}`);
    const description = `${STATUS_CODES[status] ?? 'Error'}.\n\n${lines.join('\n')}`;
    const existing = out[key];
    if (isObject(existing)) {
      // The table documents this status with its own body: add the codes' meanings only.
      out[key] = { ...existing, description: `${String(existing.description)}\n\n${lines.join('\n')}` };
    } else {
      out[key] = {
        description,
        content: { 'application/json': { schema: { $ref: `#/components/schemas/${errorSchema}` } } },
      };
    }
  }
  return out;
}

/** The OpenAPI document of these routes (in declaration order, HEAD routes left out). */
export function buildOpenApiDocument(routes: readonly RouteOptions[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  const taken = new Set<string>();
  for (const route of routes) {
    if (isUndocumentedPath(route.url)) continue;
    for (const method of [route.method].flat()) {
      if (method === 'HEAD') continue;
      const path = toOpenApiPath(route.url);
      paths[path] ??= {};
      paths[path][method.toLowerCase()] = operation(route, method, taken);
    }
  }
  const used = new Set(
    Object.values(paths).flatMap((item) =>
      Object.values(item).flatMap((op) => (op as { tags?: string[] }).tags ?? []),
    ),
  );
  const tags = TAGS.filter((tag) => used.has(tag.name));
  return { openapi: '3.1.0', info: INFO, tags, paths, components: COMPONENTS };
}

/** The Swagger UI files served from the installed swagger-ui-dist package, by name. */
const SWAGGER_UI_DIR = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
const ASSETS: Readonly<Record<string, string>> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'index.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
  'favicon-16x16.png': 'image/png',
};
const assetCache = new Map<string, Promise<Buffer>>();

function readAsset(name: string): Promise<Buffer> {
  let content = assetCache.get(name);
  if (content === undefined) {
    content = readFile(join(SWAGGER_UI_DIR, name));
    // A failed read is retried on the next request rather than cached.
    content.catch(() => assetCache.delete(name));
    assetCache.set(name, content);
  }
  return content;
}

/** Nothing but this origin; Swagger UI sets inline styles and uses data: images. */
export const DOCS_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "frame-ancestors 'self'",
].join('; ');

// Relative URLs (from /docs: docs/x is /docs/x, openapi.json is /openapi.json), so that the
// page also works behind a proxy that adds a path prefix.
const DOCS_HTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tracker API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
<link rel="stylesheet" href="docs/index.css">
<link rel="icon" type="image/png" href="docs/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/init.js"></script>
</body>
</html>
`;

// validatorUrl null: no badge fetched from validator.swagger.io; the spec comes from here.
const DOCS_INIT = `window.addEventListener('load', function () {
  window.ui = SwaggerUIBundle({
    url: 'openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: 'BaseLayout',
  });
});
`;

/**
 * Documents every route declared after this call and serves the description. Synchronous:
 * call it right after creating the app, before declaring any route.
 */
export function registerOpenApi(app: FastifyInstance): void {
  const routes: RouteOptions[] = [];
  app.addHook('onRoute', (route) => {
    routes.push(route);
  });
  let document: string | undefined;
  // Built once, when every route is declared and its schemas are in their final form.
  app.addHook('onReady', async () => {
    document = JSON.stringify(buildOpenApiDocument(routes));
  });

  app.get('/openapi.json', async (_request, reply) => {
    document ??= JSON.stringify(buildOpenApiDocument(routes));
    return reply.type('application/json; charset=utf-8').header('cache-control', 'no-cache').send(document);
  });

  const docsHeaders = {
    'content-security-policy': DOCS_CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  };
  app.get('/docs', async (_request, reply) =>
    reply
      .headers(docsHeaders)
      .header('cache-control', 'no-cache')
      .type('text/html; charset=utf-8')
      .send(DOCS_HTML),
  );
  app.get('/docs/', async (_request, reply) => reply.redirect('../docs', 301));
  app.get<{ Params: { file: string } }>('/docs/:file', async (request, reply) => {
    const { file } = request.params;
    reply.headers(docsHeaders).header('cache-control', 'public, max-age=3600');
    if (file === 'init.js') return reply.type('text/javascript; charset=utf-8').send(DOCS_INIT);
    const type = Object.hasOwn(ASSETS, file) ? ASSETS[file] : undefined;
    if (type === undefined) return reply.callNotFound();
    return reply.type(type).send(await readAsset(file));
  });
}
