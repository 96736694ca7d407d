import http from 'node:http';
import https from 'node:https';
import fastJson from 'fast-json-stringify';
import Fastify, { type FastifyInstance, type FastifyReply, LogController } from 'fastify';
import type { ProxyTrust } from '../auth/client-address.js';
import { verifiedPeerSubject } from '../auth/client-certificate.js';
import type { Gate } from '../auth/gate.js';
import { requireEveryService } from '../core/auth.js';
import { TrackerError } from '../core/errors.js';
import type { LockService } from '../core/lock-service.js';
import type { Logger } from '../core/logger.js';
import type { WatcherRegistry } from '../core/watchers.js';
import type { WebhookAdmin } from '../core/webhooks.js';
import type { Metrics } from '../metrics.js';
import { serverTlsOptions } from '../server-tls-options.js';
import { CLI_DIR, registerCliDownload } from './cli-download.js';
import { DASHBOARD_ASSETS_DIR, registerDashboard } from './dashboard.js';
import { HTTP_CODES, type HttpCode, toHttpError } from './error-mapping.js';
import { API, callerOf, registerLockRoutes, routeOf } from './lock-routes.js';
import { registerOpenApi } from './openapi.js';
import { type HostCheck, registerRequestGuard } from './request-guard.js';
import { registerResourceRoutes } from './resource-routes.js';
import { apiRoute, describedAs } from './route-docs.js';
import { ErrorJson, HealthJson, ReadyJson } from './schemas.js';
import { registerWatch } from './watch.js';
import { registerWebhookRoutes } from './webhook-routes.js';

export interface HttpAppDeps {
  readonly service: LockService;
  /** The webhooks' routes; absent: none (an app built for a test of other routes). */
  readonly webhooks?: WebhookAdmin;
  /** Open watch streams and what they have waiting (shared with gRPC). */
  readonly watchers: WatcherRegistry;
  /** Request durations go here, and GET /metrics serves its registry. */
  readonly metrics: Metrics;
  /** Authentication and rate limit of API calls. */
  readonly gate: Gate;
  /** The Host names REST answers to (DNS rebinding); changes from other sites are refused too. */
  readonly hosts: HostCheck;
  /** TLS and slow-client timeouts of the listening server (default: plaintext, Node's defaults). */
  readonly server?: HttpServerOptions;
  /** Resolves when the store answers; backs /readyz. */
  readonly ready: () => Promise<void>;
  readonly logger: Logger;
  /**
   * Which hops are proxies trusted to name the client in X-Forwarded-For (--trust-proxy);
   * undefined: none, the client is the socket's peer. Fastify's `trustProxy`, so it also
   * decides when X-Forwarded-Host and X-Forwarded-Proto are believed.
   */
  readonly trustProxy?: ProxyTrust | undefined;
}

export interface HttpServerOptions {
  /** PEM; with `ca`, clients must present a certificate it signed. */
  readonly tls?:
    | { readonly cert: Buffer; readonly key: Buffer; readonly ca?: Buffer | undefined }
    | undefined;
  /** Longest a client may take to send its headers, then the whole request, in ms. */
  readonly headersTimeoutMs?: number;
  readonly requestTimeoutMs?: number;
}

/**
 * The node:http(s) server under Fastify. Timeouts bound how long a slow client holds a
 * socket while sending a request (checked every second, not Node's default 30 s); a request
 * waiting for a lock has been received in full, so no timeout cuts its wait.
 */
function createServer(options: HttpServerOptions) {
  const timeouts = {
    headersTimeout: options.headersTimeoutMs ?? 60_000,
    requestTimeout: options.requestTimeoutMs ?? 300_000,
    connectionsCheckingInterval: 1000,
  };
  return (handler: http.RequestListener) => {
    if (!options.tls) return http.createServer(timeouts, handler);
    const { cert, key, ca } = options.tls;
    return https.createServer(
      {
        ...timeouts,
        ...serverTlsOptions,
        cert,
        key,
        ...(ca ? { ca, requestCert: true, rejectUnauthorized: true } : {}),
      },
      handler,
    );
  };
}

/**
 * What Node's HTTP parser refuses before Fastify sees a request (headers over 16 KiB, a
 * malformed request line, a client too slow to send its headers): answered with JSON and a
 * stable code like every other error, then the connection is closed.
 */
function answerClientError(error: Error & { code?: string }, socket: import('node:net').Socket): void {
  if (error.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const [code, message]: [HttpCode, string] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? ['HEADERS_TOO_LARGE', 'request headers are larger than 16 KiB']
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? ['REQUEST_TIMEOUT', 'the request was not received in time']
        : ['BAD_REQUEST', 'the request is not valid HTTP'];
  const status = HTTP_CODES[code];
  const body = JSON.stringify({ error: message, code });
  // Closed once written, whatever the client does next (a slow client keeps sending).
  socket.write(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    () => socket.destroy(),
  );
}

/** Largest accepted request body. */
export const BODY_LIMIT = 64 * 1024;

/**
 * The REST adapter: parse, call the core, map the result. Built from its dependencies so
 * that tests can start it on a real socket without the rest of the process.
 */
export function buildHttpApp({
  service,
  webhooks,
  watchers,
  metrics,
  gate,
  hosts,
  ready,
  logger,
  server,
  trustProxy,
}: HttpAppDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: logger,
    // One line per request, from the onResponse hook below, instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
    // Reject instead of repairing: no type coercion, no silent removal of unknown fields.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    return503OnClosing: true,
    // A service name may be 256 characters, up to 3 KiB once percent-encoded (Fastify's
    // default is 100). As long as the largest request line Node accepts (16 KiB), so that an
    // overlong parameter gets the route's own answer (400 naming it, or 404 for an id).
    routerOptions: { maxParamLength: 16 * 1024 },
    clientErrorHandler: answerClientError,
    // What the router refuses before any route or hook runs (a path that is not validly
    // percent-encoded, `/lock/%ff`): the same JSON and stable code as every other error,
    // not Fastify's own `FST_ERR_BAD_URL` body.
    frameworkErrors: (error, request, reply) => {
      const { status, body } = toHttpError(error);
      metrics.http(request.method, '(unmatched)', status, 0);
      request.log.info({ method: request.method, route: '(unmatched)', status, code: body.code }, 'request');
      return (reply as FastifyReply).status(status).send(body);
    },
    serverFactory: createServer(server ?? {}),
    // request.ip: the rightmost X-Forwarded-For hop that is not a trusted proxy (client-address.ts).
    ...(trustProxy ? { trustProxy } : {}),
  });

  // Successful answers are serialized from their route's schema (fast, and nothing the schema
  // does not name leaks out); error bodies, built by toHttpError alone, with JSON.stringify:
  // compiling a serializer for every error status of every route cost more at start than
  // the rare error ever saves.
  app.setSerializerCompiler(({ schema, httpStatus }) =>
    Number(httpStatus) >= 400 ? JSON.stringify : fastJson(schema as Parameters<typeof fastJson>[0]),
  );

  // JSON is the only body type (anything else is a 415). An empty JSON body is "no body"
  // (POST /unlock/{id} sends none); anything else goes through Fastify's own parser, which
  // also refuses __proto__ poisoning.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') done(null, undefined);
    else parseJson(request, body.toString(), done);
  });

  app.decorateRequest('matchedRoute', undefined);

  // Before the gate: a request naming a host this server does not answer to, or a change sent
  // by another site's page, is refused whatever its token.
  registerRequestGuard(app, hosts);

  // Every API route and /metrics pass the gate (token, rate limit); health checks, the
  // OpenAPI document and the dashboard's static files do not (the dashboard's own calls do).
  app.decorateRequest('caller', undefined);
  // Hooks in callback form (as the guard's): an async hook costs a promise and a microtask
  // turn per request, on every request. A throw is answered as a rejection would be.
  app.addHook('onRequest', (request, _reply, done) => {
    const route = routeOf(request);
    if (route === undefined || !(route.startsWith(`${API}/`) || route === '/metrics')) return done();
    const { authorization } = request.headers;
    request.caller = gate.admit({
      authorization,
      address: request.ip,
      // Mutual TLS: a verified client certificate may stand for a token (client-certificate.ts).
      certificateSubject:
        authorization === undefined && gate.authenticates
          ? verifiedPeerSubject(request.raw.socket)
          : undefined,
    });
    done();
  });

  app.addHook('onResponse', (request, reply, done) => {
    // The route as declared (`/lock/:id`), so that metrics have one series per route; a
    // request that matched none is counted as such, never by its (unbounded) URL.
    const route = routeOf(request);
    metrics.http(request.method, route ?? '(unmatched)', reply.statusCode, reply.elapsedTime / 1000);
    request.log.info(
      {
        method: request.method,
        route: route ?? request.url,
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime * 100) / 100,
      },
      'request',
    );
    done();
  });

  app.setErrorHandler((error, request, reply) => {
    const { status, body } = toHttpError(error);
    // A bug is logged in full; a store that is down (503) is expected trouble: one line.
    if (status === 500) request.log.error({ err: error }, 'request failed');
    else if (status >= 500)
      request.log.warn({ code: body.code, reason: String((error as Error).cause ?? '') }, 'request failed');
    const envelope = request.routeOptions.config.successEnvelope ? { success: false } : {};
    if (status === 401) void reply.header('www-authenticate', 'Bearer realm="tracker"');
    const retryAfter = error instanceof TrackerError ? error.details.retryAfterSeconds : undefined;
    if (retryAfter !== undefined) void reply.header('retry-after', String(retryAfter));
    if ((status === 401 || status === 403 || status === 429) && !gate.alreadyLogged(error)) {
      request.log.warn(
        {
          code: body.code,
          caller: request.caller?.kind === 'token' ? request.caller.name : null,
          ip: request.ip,
          host: request.headers.host,
          origin: request.headers.origin,
        },
        'request refused',
      );
    }
    return reply.status(status).send({ ...envelope, ...body });
  });

  // A path some route has, asked with another method: 405 and the methods it has.
  const methodsByPath: Array<{ readonly path: RegExp; readonly methods: Set<string> }> = [];
  app.addHook('onRoute', (route) => {
    const path = routePattern(route.url ?? route.path);
    let entry = methodsByPath.find((known) => known.path.source === path.source);
    if (!entry) {
      entry = { path, methods: new Set() };
      methodsByPath.push(entry);
    }
    for (const method of [route.method].flat()) entry.methods.add(method);
  });
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    const allowed = methodsByPath.find((known) => known.path.test(path));
    if (allowed && !allowed.methods.has(request.method)) {
      return reply
        .status(HTTP_CODES.METHOD_NOT_ALLOWED)
        .header('allow', [...allowed.methods].sort().join(', '))
        .send({
          error: `${request.method} is not allowed here`,
          code: 'METHOD_NOT_ALLOWED' satisfies HttpCode,
        });
    }
    return reply
      .status(HTTP_CODES.NOT_FOUND)
      .send({ error: 'route not found', code: 'NOT_FOUND' satisfies HttpCode });
  });

  // Before any route: @fastify/swagger documents the routes registered after it, which is
  // why every route below is declared inside a plugin.
  registerOpenApi(app);

  void app.register(async (routes) => {
    registerLockRoutes(routes, service);
    registerResourceRoutes(routes, service);
    if (webhooks) registerWebhookRoutes(routes, webhooks);
    registerWatch(routes, service, watchers);

    routes.get(
      '/metrics',
      {
        schema: apiRoute(
          { method: 'GET', gated: true, api: false },
          {
            operationId: 'getMetrics',
            summary: 'Prometheus metrics',
            description:
              'Metrics in the Prometheus text exposition format, for scraping. They count every ' +
              "service's locks and requests, so a token limited to some services is refused " +
              '(`403 PERMISSION_DENIED`): scrape with a `lock:read` token without service patterns.',
            tags: ['operations'],
          },
          {
            response: {
              200: { description: 'The metrics.', content: { 'text/plain': { schema: { type: 'string' } } } },
            },
          },
        ),
      },
      async (request, reply) => {
        // The metrics count every service's locks, waiters and requests: no filter can show a
        // token limited to some services only theirs.
        requireEveryService(callerOf(request), 'lock:read', '/metrics');
        const text = await metrics.registry.metrics();
        return reply.type(metrics.registry.contentType).send(text);
      },
    );

    routes.get(
      '/healthz',
      {
        schema: apiRoute(
          { method: 'GET', gated: false, api: false },
          {
            operationId: 'getHealth',
            summary: 'Liveness',
            description: 'Answers `200` while the process runs; does not touch the store.',
            tags: ['operations'],
          },
          { response: { 200: describedAs(HealthJson, 'The process runs.') } },
        ),
      },
      async () => ({ status: 'ok' as const }),
    );
    routes.get(
      '/readyz',
      {
        schema: apiRoute(
          { method: 'GET', gated: false, api: true },
          {
            operationId: 'getReadiness',
            summary: 'Readiness',
            description: 'Answers `200` while the store answers, `503 STORE_UNAVAILABLE` otherwise.',
            tags: ['operations'],
          },
          {
            response: {
              200: describedAs(ReadyJson, 'The store answers.'),
              503: describedAs(ErrorJson, 'Service Unavailable.'),
            },
          },
        ),
      },
      async (request, reply) => {
        try {
          await ready();
          return { status: 'ready' as const };
        } catch (error) {
          request.log.warn({ err: error }, 'store not ready');
          return reply.status(503).send({ error: 'store unavailable', code: 'STORE_UNAVAILABLE' });
        }
      },
    );

    registerDashboard(routes, { assetsDir: DASHBOARD_ASSETS_DIR });
    registerCliDownload(routes, {
      dir: CLI_DIR,
      node: process.execPath,
      platform: process.platform,
      arch: process.arch,
    });
  });
  return app;
}

/** `/api/v1alpha1/lock/:id` → a RegExp matching its concrete paths (a parameter is one segment). */
function routePattern(url: string): RegExp {
  const escaped = url
    .split('/')
    .map((segment) =>
      segment.startsWith(':')
        ? '[^/]+'
        : segment === '*'
          ? '.*'
          : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'),
    )
    .join('/');
  return new RegExp(`^${escaped}$`);
}
