import http from 'node:http';
import https from 'node:https';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyRequest,
  LogController,
} from 'fastify';
import { type Gate, OPEN_GATE } from '../auth/gate.js';
import { type Caller, requireScope } from '../core/auth.js';
import { TrackerError } from '../core/errors.js';
import type { EventFeed } from '../core/event-feed.js';
import type { LockService } from '../core/lock-service.js';
import type { Metrics } from '../metrics.js';
import { DASHBOARD_ASSETS_DIR, registerDashboard } from './dashboard.js';
import { eventToJson, lockToJson, queueToJson, toHttpError } from './error-mapping.js';
import { registerOpenApi } from './openapi.js';
import {
  createLockBody,
  forceReleaseBody,
  forceReleasedJson,
  historyJson,
  historyQuery,
  listLocksQuery,
  lockIdParams,
  lockJson,
  lockListJson,
  queueJson,
  releasedJson,
  renewLockBody,
  serviceParams,
} from './schemas.js';
import { registerWatch } from './watch.js';

export interface HttpAppDeps {
  readonly service: LockService;
  /** The store's history as a live stream, for the watch route. */
  readonly feed: EventFeed;
  /** Request durations go here, and GET /metrics serves its registry. */
  readonly metrics: Metrics;
  /** Authentication and rate limit of API calls (default: open). */
  readonly gate?: Gate;
  /** TLS and slow-client timeouts of the listening server (default: plaintext, Node's defaults). */
  readonly server?: HttpServerOptions;
  /** Resolves when the store answers; backs /readyz. */
  readonly ready: () => Promise<void>;
  readonly logger: FastifyBaseLogger;
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
      { ...timeouts, cert, key, ...(ca ? { ca, requestCert: true, rejectUnauthorized: true } : {}) },
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
  const [status, code, message] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'HEADERS_TOO_LARGE', 'request headers are larger than 16 KiB']
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'REQUEST_TIMEOUT', 'the request was not received in time']
        : [400, 'BAD_REQUEST', 'the request is not valid HTTP'];
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

const API = '/api/v1alpha1';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who is calling (null: authentication off), set by the gate for API routes. */
    caller: Caller;
  }
  interface FastifyContextConfig {
    /** Release routes answer errors as `{success: false, ...}`, as the guide's scripts expect. */
    successEnvelope?: boolean;
  }
}

/**
 * The REST adapter: parse, call the core, map the result. Built from its dependencies so
 * that tests can start it on a real socket without the rest of the process.
 */
export function buildHttpApp({
  service,
  feed,
  metrics,
  gate = OPEN_GATE,
  ready,
  logger,
  server,
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
    serverFactory: createServer(server ?? {}),
  });

  // JSON is the only body type (anything else is a 415). An empty JSON body is "no body"
  // (POST /unlock/{id} sends none); anything else goes through Fastify's own parser, which
  // also refuses __proto__ poisoning.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') done(null, undefined);
    else parseJson(request, body.toString(), done);
  });

  // Before any route: it documents every route declared after it (GET /openapi.json, /docs).
  registerOpenApi(app);

  // Every API route and /metrics pass the gate (token, rate limit); health checks, the
  // OpenAPI document and the dashboard's static files do not (the dashboard's own calls do).
  app.decorateRequest('caller', null);
  app.addHook('onRequest', async (request) => {
    const route = request.routeOptions.url;
    if (route === undefined || !(route.startsWith(`${API}/`) || route === '/metrics')) return;
    request.caller = gate.admit(request.headers.authorization, request.ip);
  });

  app.addHook('onResponse', async (request, reply) => {
    // The route as declared (`/lock/:id`), so that metrics have one series per route; a
    // request that matched none is counted as such, never by its (unbounded) URL.
    const route = request.routeOptions.url;
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
    if (status === 401 || status === 403 || status === 429) {
      request.log.warn(
        { code: body.code, caller: request.caller?.name ?? null, ip: request.ip },
        'request refused',
      );
    }
    return reply.status(status).send({ ...envelope, ...body });
  });

  app.setNotFoundHandler((_request, reply) =>
    reply.status(404).send({ error: 'route not found', code: 'NOT_FOUND' }),
  );

  app.post<{ Body: { service: string; who: string; ttlSeconds?: number; waitSeconds?: number } }>(
    `${API}/lock`,
    { schema: { body: createLockBody, response: { 201: lockJson } } },
    async (request, reply) => {
      const { service: name, who, ttlSeconds, waitSeconds } = request.body;
      // A waiting client that hangs up leaves the queue at once. 'close' also fires after a
      // normal response; only a close before the response ended is a hang-up.
      const gone = new AbortController();
      reply.raw.once('close', () => {
        if (!reply.raw.writableEnded) gone.abort();
      });
      const lock = await service.acquire(
        name,
        who,
        ttlSeconds,
        { waitSeconds, signal: gone.signal },
        request.caller,
      );
      return reply.status(201).send(lockToJson(lock));
    },
  );

  app.get<{ Params: { service: string } }>(
    `${API}/queue/:service`,
    { schema: { params: serviceParams, response: { 200: queueJson } } },
    async (request) => queueToJson(await service.queue(request.params.service, request.caller)),
  );

  app.post<{ Params: { id: string }; Body: { ttlSeconds?: number } | undefined }>(
    `${API}/lock/:id/renew`,
    {
      schema: { params: lockIdParams, body: renewLockBody, response: { 200: lockJson } },
      // The body is optional: no body at all validates as an empty object.
      preValidation: async (request) => {
        request.body ??= {};
      },
    },
    async (request) =>
      lockToJson(await service.renew(request.params.id, request.body?.ttlSeconds, request.caller)),
  );

  app.get<{ Params: { id: string } }>(
    `${API}/lock/:id`,
    { schema: { params: lockIdParams, response: { 200: lockJson } } },
    async (request) => lockToJson(await service.get(request.params.id, request.caller)),
  );

  const release = {
    schema: { params: lockIdParams, response: { 200: releasedJson } },
    config: { successEnvelope: true },
  };
  const releaseHandler = async (request: FastifyRequest<{ Params: { id: string } }>) => {
    await service.release(request.params.id, request.caller);
    return { success: true, message: 'Lock released successfully' };
  };
  // GET has a side effect only because the guide's scripts use it; prefer DELETE or POST.
  app.get<{ Params: { id: string } }>(`${API}/unlock/:id`, release, releaseHandler);
  app.post<{ Params: { id: string } }>(`${API}/unlock/:id`, release, releaseHandler);
  app.delete<{ Params: { id: string } }>(`${API}/lock/:id`, release, releaseHandler);

  app.get<{ Querystring: { page?: string; per_page?: string; service?: string; who?: string } }>(
    `${API}/locks/list`,
    { schema: { querystring: listLocksQuery, response: { 200: lockListJson } } },
    async (request) => {
      const { page, per_page: perPage, service: serviceName, who } = request.query;
      const result = await service.list(
        {
          page: page === undefined ? undefined : Number(page),
          perPage: perPage === undefined ? undefined : Number(perPage),
          service: serviceName,
          who,
        },
        request.caller,
      );
      return { ...result, locks: result.locks.map(lockToJson) };
    },
  );

  app.post<{ Params: { id: string }; Body: { reason?: string } | undefined }>(
    `${API}/lock/:id/force-release`,
    {
      schema: { params: lockIdParams, body: forceReleaseBody, response: { 200: forceReleasedJson } },
      preValidation: async (request) => {
        request.body ??= {};
      },
    },
    async (request) => {
      const lock = await service.forceRelease(request.params.id, request.body?.reason, request.caller);
      return { success: true, message: 'Lock force-released', lock: lockToJson(lock) };
    },
  );

  app.get<{
    Querystring: {
      service?: string;
      who?: string;
      since?: string;
      until?: string;
      limit?: string;
      before?: string;
    };
  }>(
    `${API}/history`,
    { schema: { querystring: historyQuery, response: { 200: historyJson } } },
    async (request) => {
      const { service: serviceName, who, since, until, limit, before } = request.query;
      const page = await service.history(
        {
          service: serviceName,
          who,
          since: since === undefined ? undefined : new Date(since),
          until: until === undefined ? undefined : new Date(until),
          limit: limit === undefined ? undefined : Number(limit),
          before: before === undefined ? undefined : Number(before),
        },
        request.caller,
      );
      return { events: page.events.map(eventToJson), nextBefore: page.nextBefore };
    },
  );

  registerWatch(app, `${API}/watch`, feed);

  app.get('/metrics', async (request, reply) => {
    requireScope(request.caller, 'lock:read');
    const text = await metrics.registry.metrics();
    return reply.type(metrics.registry.contentType).send(text);
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (request, reply) => {
    try {
      await ready();
      return { status: 'ready' };
    } catch (error) {
      request.log.warn({ err: error }, 'store not ready');
      return reply
        .status(503)
        .send({ status: 'unavailable', error: 'store unavailable', code: 'STORE_UNAVAILABLE' });
    }
  });

  registerDashboard(app, { assetsDir: DASHBOARD_ASSETS_DIR });
  return app;
}
