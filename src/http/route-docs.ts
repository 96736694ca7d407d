import { STATUS_CODES } from 'node:http';
import { ErrorCode } from '../core/errors.js';
import { type HttpCode, statusOf } from './error-mapping.js';
import { ErrorJson, ReleaseErrorJson } from './schemas.js';

/**
 * The words of a route for the API document: @fastify/swagger builds `/openapi.json` from
 * the routes as registered, so each route's schema carries its own summary, description,
 * tags and every response, errors included. `apiRoute` adds the error responses that the
 * route's shape implies to those it names, each with the error body's schema (which also
 * serializes them) and a line per code saying what it means.
 */

export type Tag = 'locks' | 'queue' | 'resources' | 'history' | 'webhooks' | 'operations';

export const TAGS: ReadonlyArray<{ readonly name: Tag; readonly description: string }> = [
  { name: 'locks', description: 'Acquire, inspect, renew and release locks.' },
  { name: 'queue', description: 'Requests waiting for a held service.' },
  {
    name: 'resources',
    description: 'Registered resources: labels to ask for any free one, properties, capacity.',
  },
  { name: 'history', description: 'What happened to locks, past and live.' },
  { name: 'webhooks', description: 'The history and alerts, POSTed to receivers (signed, at least once).' },
  { name: 'operations', description: 'Health, readiness and metrics.' },
];

/** What each error code means, for the error responses' descriptions. */
export const CODE_MEANINGS: Readonly<Record<ErrorCode | HttpCode, string>> = {
  LOCK_HELD:
    'the service is held by someone else (or full); `existingLock` is the oldest holder, `holders` every one',
  WAIT_TIMEOUT:
    'waited `waitSeconds` and the service is still held; `existingLock` is the oldest holder, `holders` every one',
  LIMIT_MISMATCH:
    'the service is held (or registered) with another `limit`: `limit` is the current one, `service` the service (answered at once, never queued)',
  NO_SUCH_LABEL: 'no registered resource carries the `label`',
  RESOURCE_NOT_FOUND: 'no registered resource has that name',
  WEBHOOK_NOT_FOUND: 'no webhook has that name',
  RESOURCE_IN_USE: 'the resource is held: release its locks first',
  LOCK_NOT_FOUND: 'no lock with that id is held',
  LOCK_NOT_HELD: 'the lock expired, was released or never existed',
  INVALID_ARGUMENT: 'bad input; `field` names it',
  CANCELLED: 'the caller went away while waiting (logged only: nobody reads the answer)',
  STORE_UNAVAILABLE: 'the database cannot serve right now; retry',
  INTERNAL: 'a bug; the body says only `internal error`, the log has the rest',
  UNAUTHENTICATED: 'authentication is on and the bearer token is missing or not valid',
  PERMISSION_DENIED: "the token lacks the scope or the service, or the lock is another token's",
  RATE_LIMITED: 'too many requests from this token (or address); `Retry-After` says when to retry',
  QUEUE_FULL:
    'the service already has `--max-waiters-per-service` requests waiting, or this replica `--max-waiters` in total',
  TOO_MANY_LOCKS: 'the store already holds `--max-locks` locks',
  IDEMPOTENCY_KEY_REUSED:
    'the Idempotency-Key came before with another request (service, who, ttlSeconds or waitSeconds)',
  LOCK_ENDED:
    'the lock acquired with this Idempotency-Key has ended (`lockId`): a key is never granted twice; or a waiting request was granted a lock that ended before the answer',
  TOO_MANY_WATCHERS:
    'the server has `--max-watchers` watch streams open, or this token (address) `--max-watchers-per-token`',
  WATCHER_TOO_SLOW:
    "a watch stream's last message (SSE `event: error`, gRPC status): it read too slowly and had over `--max-watcher-buffer` waiting; resume with the last event id",
  NOT_FOUND: 'no route has this path',
  METHOD_NOT_ALLOWED: 'the path exists, but not with this method; `Allow` lists those it has',
  UNSUPPORTED_MEDIA_TYPE: 'a body that is not `application/json`',
  PAYLOAD_TOO_LARGE: 'a body over 64 KiB',
  HEADERS_TOO_LARGE: 'request headers over 16 KiB',
  REQUEST_TIMEOUT: 'the request was not received in time',
  BAD_REQUEST: 'not valid HTTP',
  DASHBOARD_NOT_BUILT: 'the dashboard was not built (`npm run build`)',
  CLI_NOT_BUILT:
    'the single-executable CLI is not available here: its bundle was not built (`npm run build:cli`), this node is not Linux x64, or it could not be made (the error says which)',
  HOST_NOT_ALLOWED:
    'the `Host` header names a host this server does not answer to (a DNS rebinding page); see `--allowed-host`',
  CROSS_SITE_REQUEST:
    'a change sent by a page of another origin or site (`Origin`, `Referer`, `Sec-Fetch-Site`), or a body-less POST without `Content-Type: application/json`, `Authorization` or `X-Tracker`',
};

export interface RouteDoc {
  readonly operationId: string;
  readonly summary: string;
  readonly description?: string;
  readonly tags: readonly Tag[];
  /** Error codes the route answers beyond those its shape implies (see `apiRoute`). */
  readonly errors?: readonly (ErrorCode | HttpCode)[];
  /** The request body may be left out entirely (documented as not required). */
  readonly bodyOptional?: boolean;
}

/** A JSON Schema object, as schemas.ts declares them. */
type Schema = object;

/** A route's schema parts, as Fastify takes them. */
export interface RouteParts {
  readonly params?: Schema;
  readonly querystring?: Schema;
  readonly headers?: Schema;
  readonly body?: Schema;
  /** By status; each schema's `description` is the response's description. */
  readonly response: Readonly<Record<number, Schema | ContentResponse>>;
}

/** A response that is not JSON (text, SSE): described by media type. */
export interface ContentResponse {
  readonly description: string;
  readonly content: Readonly<Record<string, { readonly schema: object }>>;
}

/** `schema` with a `description` for the API document (JSON Schema allows it on any schema). */
export function describedAs<T extends Schema>(schema: T, description: string): T {
  return { ...schema, description };
}

/** With --auth-tokens-file a bearer token; without, none: both are allowed. */
const BEARER_OR_NONE: ReadonlyArray<Readonly<Record<string, readonly string[]>>> = [{ bearer: [] }, {}];

export interface RouteShape {
  readonly method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Behind the gate: a bearer token (when authentication is on) and the rate limit. */
  readonly gated: boolean;
  /** An API route (under /api/): the store may be unavailable. */
  readonly api: boolean;
  /** Errors in the release routes' `{success: false, ...}` envelope. */
  readonly envelope?: boolean;
}

/**
 * The route's schema, ready for Fastify and @fastify/swagger: the parts as given, the words
 * of `doc`, a bearer security requirement on gated routes, and an error response for every
 * status the route can answer with.
 */
export function apiRoute<P extends RouteParts>(shape: RouteShape, doc: RouteDoc, parts: P) {
  const codes = new Set<ErrorCode | HttpCode>(doc.errors ?? []);
  // A path parameter is always a string: only a constraint beyond that can fail.
  const constrained = (params: Schema | undefined) =>
    Object.values((params as { properties?: Record<string, object> } | undefined)?.properties ?? {}).some(
      (property) => Object.keys(property).some((key) => key !== 'type' && key !== 'description'),
    );
  if (parts.querystring || parts.headers || parts.body || constrained(parts.params)) {
    codes.add(ErrorCode.INVALID_ARGUMENT);
  }
  if (['POST', 'PUT', 'PATCH'].includes(shape.method)) {
    codes.add(ErrorCode.INVALID_ARGUMENT);
    codes.add('PAYLOAD_TOO_LARGE');
    codes.add('UNSUPPORTED_MEDIA_TYPE');
  }
  if (shape.api) codes.add(ErrorCode.STORE_UNAVAILABLE);
  // Every change is refused to other sites' pages (request-guard.ts).
  if (shape.method !== 'GET') codes.add('CROSS_SITE_REQUEST');
  if (shape.gated) {
    codes.add('HOST_NOT_ALLOWED');
    codes.add(ErrorCode.UNAUTHENTICATED);
    codes.add(ErrorCode.PERMISSION_DENIED);
    codes.add(ErrorCode.RATE_LIMITED);
  }
  codes.add(ErrorCode.INTERNAL);

  const byStatus = new Map<number, (ErrorCode | HttpCode)[]>();
  for (const code of codes) byStatus.set(statusOf(code), [...(byStatus.get(statusOf(code)) ?? []), code]);
  const response: Record<number, Schema | ContentResponse> = { ...parts.response };
  const errorBody = shape.envelope ? ReleaseErrorJson : ErrorJson;
  for (const [status, list] of [...byStatus].sort(([a], [b]) => a - b)) {
    const lines = list.map((code) => `- \`${code}\`: ${CODE_MEANINGS[code]}`).join('\n');
    const existing = response[status] as { description?: string } | undefined;
    response[status] = existing
      ? { ...existing, description: `${existing.description ?? ''}\n\n${lines}` }
      : describedAs(errorBody, `${STATUS_CODES[status] ?? 'Error'}.\n\n${lines}`);
  }

  return {
    ...parts,
    response: response as P['response'],
    operationId: doc.operationId,
    summary: doc.summary,
    ...(doc.description === undefined ? {} : { description: doc.description }),
    tags: [...doc.tags],
    // With --auth-tokens-file these need a bearer token; without, none: both are allowed.
    ...(shape.gated ? { security: BEARER_OR_NONE } : {}),
    ...(doc.bodyOptional ? { 'x-body-optional': true } : {}),
  };
}
