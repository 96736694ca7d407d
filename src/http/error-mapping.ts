import type { FastifyError } from 'fastify';
import { ErrorCode, TrackerError } from '../core/errors.js';
import { lockToJson } from './present.js';
import { type ErrorJson, RULES } from './schemas.js';

/** The one table from domain error codes to HTTP statuses. */
export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  LOCK_HELD: 409,
  LOCK_NOT_FOUND: 404,
  INVALID_ARGUMENT: 400,
  STORE_UNAVAILABLE: 503,
  INTERNAL: 500,
  LOCK_NOT_HELD: 404,
  WAIT_TIMEOUT: 409,
  // nginx's "client closed request": nobody reads it, but the log line says what happened.
  CANCELLED: 499,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  RATE_LIMITED: 429,
  QUEUE_FULL: 429,
  TOO_MANY_LOCKS: 429,
  IDEMPOTENCY_KEY_REUSED: 422,
  LOCK_ENDED: 409,
  TOO_MANY_WATCHERS: 429,
  WATCHER_TOO_SLOW: 429,
  LIMIT_MISMATCH: 409,
  NO_SUCH_LABEL: 404,
  RESOURCE_NOT_FOUND: 404,
  WEBHOOK_NOT_FOUND: 404,
  RESOURCE_IN_USE: 409,
};

/**
 * The codes REST adds to the core's, for what happens before a request reaches the core
 * (the HTTP parser, routing, Fastify's body handling, the dashboard), with their statuses.
 */
export const HTTP_CODES = {
  /** No route has this path. */
  NOT_FOUND: 404,
  /** A route has this path, but not this method; `Allow` lists the methods it has. */
  METHOD_NOT_ALLOWED: 405,
  /** A body that is not `application/json`. */
  UNSUPPORTED_MEDIA_TYPE: 415,
  /** A body over 64 KiB. */
  PAYLOAD_TOO_LARGE: 413,
  /** Request headers over 16 KiB (Node's HTTP parser). */
  HEADERS_TOO_LARGE: 431,
  /** The request was not received in time (slow client). */
  REQUEST_TIMEOUT: 408,
  /** Not valid HTTP, or a client error Fastify reports with no code of ours. */
  BAD_REQUEST: 400,
  /** GET / before `npm run build` made the dashboard. */
  DASHBOARD_NOT_BUILT: 503,
  /** GET /cli/… where `npm run build:cli` made no single executable (the npm package has none). */
  CLI_NOT_BUILT: 404,
  /** The Host header names a host this server does not answer to (DNS rebinding); see --allowed-host. */
  HOST_NOT_ALLOWED: 403,
  /**
   * A change sent by a page of another origin or site (`Origin`, `Referer`, `Sec-Fetch-Site`),
   * or a POST without a body and without a header that no HTML form can send.
   */
  CROSS_SITE_REQUEST: 403,
} as const;

export type HttpCode = keyof typeof HTTP_CODES;

/** A refusal REST makes itself, before a request reaches the core (request-guard.ts). */
export class HttpRefusal extends Error {
  override readonly name = 'HttpRefusal';

  constructor(
    readonly code: HttpCode,
    message: string,
  ) {
    super(message);
  }
}

/** Errors raised by Fastify itself before a handler runs, as (code, message). */
const FRAMEWORK_ERRORS: Readonly<Record<string, readonly [ErrorCode | HttpCode, string]>> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: ['UNSUPPORTED_MEDIA_TYPE', 'content type must be application/json'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [ErrorCode.INVALID_ARGUMENT, 'content length does not match the body'],
  FST_ERR_CTP_BODY_TOO_LARGE: ['PAYLOAD_TOO_LARGE', 'request body is larger than 64 KiB'],
  FST_ERR_CTP_INVALID_JSON_BODY: [ErrorCode.INVALID_ARGUMENT, 'request body is not valid JSON'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [ErrorCode.INVALID_ARGUMENT, 'request body must be a JSON object'],
  FST_ERR_BAD_URL: [ErrorCode.INVALID_ARGUMENT, 'the URL is not validly percent-encoded'],
};

/** The status of any code REST answers with. */
export function statusOf(code: ErrorCode | HttpCode): number {
  return code in HTTP_CODES ? HTTP_CODES[code as HttpCode] : HTTP_STATUS[code as ErrorCode];
}

/** Turns any thrown error into a status and a JSON body; 5xx bodies carry no internals. */
export function toHttpError(error: unknown): { status: number; body: ErrorJson } {
  if (error instanceof TrackerError) {
    const body: ErrorJson = { error: error.message, code: error.code };
    if (error.details.field) body.field = error.details.field;
    const { existingLock, holders, limit, service, label, lockId } = error.details;
    if (existingLock) body.existingLock = lockToJson(existingLock);
    if (holders) body.holders = holders.map(lockToJson);
    if (limit !== undefined) body.limit = limit;
    if (service !== undefined) body.service = service;
    if (label !== undefined) body.label = label;
    if (lockId) body.lockId = lockId;
    return { status: HTTP_STATUS[error.code], body };
  }
  if (error instanceof HttpRefusal) {
    return { status: HTTP_CODES[error.code], body: { error: error.message, code: error.code } };
  }
  const fastifyError = error as Partial<FastifyError>;
  if (fastifyError.validation) return { status: 400, body: validationError(fastifyError) };
  const known = fastifyError.code ? FRAMEWORK_ERRORS[fastifyError.code] : undefined;
  if (known) return { status: statusOf(known[0]), body: { error: known[1], code: known[0] } };
  if (error instanceof SyntaxError || fastifyError.statusCode === 400) {
    return {
      status: 400,
      body: { error: 'request body is not valid JSON', code: ErrorCode.INVALID_ARGUMENT },
    };
  }
  const status = fastifyError.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    return { status, body: { error: fastifyError.message ?? 'bad request', code: 'BAD_REQUEST' } };
  }
  return { status: 500, body: { error: 'internal error', code: ErrorCode.INTERNAL } };
}

function validationError(error: Partial<FastifyError>): ErrorJson {
  const first = error.validation?.[0];
  const where = error.validationContext === 'querystring' ? 'query parameter' : 'field';
  const segments = (first?.instancePath.split('/').filter(Boolean) ?? []).map(unescapePointer);
  const fromPath = fieldName(segments);
  const params = (first?.params ?? {}) as Record<string, unknown>;
  const invalid = (field: string, message: string): ErrorJson => ({
    error: message,
    code: ErrorCode.INVALID_ARGUMENT,
    field,
  });
  switch (first?.keyword) {
    // Inside a nested object (a group's claim), the field is named by its path: locks[0].ttl.
    case 'required': {
      const field =
        fromPath === '' ? String(params.missingProperty) : `${fromPath}.${String(params.missingProperty)}`;
      return invalid(field, `${field} is required`);
    }
    case 'additionalProperties': {
      const field =
        fromPath === ''
          ? String(params.additionalProperty)
          : `${fromPath}.${String(params.additionalProperty)}`;
      return invalid(field, `unknown ${where}: ${field}`);
    }
  }
  // A property name refused by `propertyNames` (PUT /resources: a property key).
  const propertyName = (first as { propertyName?: string } | undefined)?.propertyName;
  if (propertyName !== undefined) {
    return invalid(fromPath, `${fromPath} ${RULES[fromPath]?.propertyNames ?? 'has an invalid key'}`);
  }
  if (fromPath === '') {
    return invalid('body', 'request body must be a JSON object');
  }
  const keyword = first?.keyword ?? '';
  const rule = ruleFor(segments, keyword);
  if (rule) return invalid(fromPath, `${fromPath} ${rule}`);
  if (keyword === 'type') return invalid(fromPath, `${fromPath} must be a ${String(params.type)}`);
  if (keyword === 'minLength') return invalid(fromPath, `${fromPath} must be a non-empty string`);
  return invalid(fromPath, `${fromPath} ${first?.message ?? 'is invalid'}`);
}

/** The one object of free keys in a body (PUT /resources: `properties`): its keys are names, not indices. */
const MAPS = new Set(['properties']);

/**
 * A field as the core names it too: array items by index in brackets, object members by
 * name after a dot (`locks[0].limit`, `labels[2]`, `properties.serial`).
 */
function fieldName(segments: readonly string[]): string {
  return segments.reduce((path, segment, index) => {
    const parent = segments[index - 1];
    if (/^\d+$/.test(segment) && !(parent !== undefined && MAPS.has(parent))) return `${path}[${segment}]`;
    return path === '' ? segment : `${path}.${segment}`;
  }, '');
}

/** A JSON Pointer segment as the key it stands for (`~1` is `/`, `~0` is `~`). */
function unescapePointer(segment: string): string {
  return segment.replace(/~1/g, '/').replace(/~0/g, '~');
}

/**
 * The words of a rule for a field: by its path (`ttlSeconds`), by that path with every
 * segment after the first as `*` (`labels.*`, `properties.*`, `locks.*`), or by its last name
 * that is no index (`limit` for `locks[0].limit`).
 */
function ruleFor(segments: readonly string[], keyword: string): string | undefined {
  const [head, ...rest] = segments;
  const candidates = [
    segments.join('.'),
    [head, ...rest.map(() => '*')].join('.'),
    segments.findLast((segment) => !/^\d+$/.test(segment)),
  ];
  for (const candidate of candidates) {
    const rule = candidate === undefined ? undefined : RULES[candidate]?.[keyword];
    if (rule) return rule;
  }
  return undefined;
}
