import type { FastifyError } from 'fastify';
import { ErrorCode, TrackerError } from '../core/errors.js';
import { formatTimestamp, type Lock, type LockEventRecord, type Queue } from '../core/lock.js';
import { RULES } from './schemas.js';

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
};

/** Errors raised by Fastify itself before a handler runs, as (status, code, message). */
const FRAMEWORK_ERRORS: Readonly<Record<string, readonly [number, string, string]>> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'UNSUPPORTED_MEDIA_TYPE', 'content type must be application/json'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [
    400,
    ErrorCode.INVALID_ARGUMENT,
    'content length does not match the body',
  ],
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'PAYLOAD_TOO_LARGE', 'request body is larger than 64 KiB'],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, ErrorCode.INVALID_ARGUMENT, 'request body is not valid JSON'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, ErrorCode.INVALID_ARGUMENT, 'request body must be a JSON object'],
  FST_ERR_BAD_URL: [400, ErrorCode.INVALID_ARGUMENT, 'the URL is not validly percent-encoded'],
};

export interface ErrorBody {
  error: string;
  code: string;
  field?: string;
  existingLock?: ReturnType<typeof lockToJson>;
}

export function lockToJson(lock: Lock) {
  return {
    id: lock.id,
    service: lock.service,
    who: lock.who,
    createdAt: formatTimestamp(lock.createdAt),
    ttlSeconds: lock.ttlSeconds,
    expiresAt: lock.expiresAt === null ? null : formatTimestamp(lock.expiresAt),
    fencingToken: lock.fencingToken,
    waiters: lock.waiters,
    owner: lock.owner,
  };
}

/** An event of the history or the watch stream; `at` keeps milliseconds. */
export function eventToJson(event: LockEventRecord) {
  return {
    id: event.id,
    type: event.type,
    at: event.at.toISOString(),
    service: event.service,
    who: event.who,
    lock: {
      id: event.lockId,
      service: event.service,
      who: event.who,
      createdAt: formatTimestamp(event.createdAt),
      ttlSeconds: event.ttlSeconds,
      expiresAt: event.expiresAt === null ? null : formatTimestamp(event.expiresAt),
      fencingToken: event.fencingToken,
      waiters: event.waiters,
      owner: event.owner,
    },
    heldSeconds: event.heldMs === null ? null : event.heldMs / 1000,
    reason: event.reason,
  };
}

export function queueToJson(queue: Queue) {
  return {
    service: queue.service,
    holder: queue.holder === null ? null : lockToJson(queue.holder),
    waiters: queue.waiters.map((waiter) => ({
      who: waiter.who,
      since: formatTimestamp(waiter.since),
      position: waiter.position,
    })),
  };
}

/** Turns any thrown error into a status and a JSON body; 5xx bodies carry no internals. */
export function toHttpError(error: unknown): { status: number; body: ErrorBody } {
  if (error instanceof TrackerError) {
    const body: ErrorBody = { error: error.message, code: error.code };
    if (error.details.field) body.field = error.details.field;
    if (error.details.existingLock) body.existingLock = lockToJson(error.details.existingLock);
    return { status: HTTP_STATUS[error.code], body };
  }
  const fastifyError = error as Partial<FastifyError>;
  if (fastifyError.validation) return { status: 400, body: validationError(fastifyError) };
  const known = fastifyError.code ? FRAMEWORK_ERRORS[fastifyError.code] : undefined;
  if (known) return { status: known[0], body: { error: known[2], code: known[1] } };
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

function validationError(error: Partial<FastifyError>): ErrorBody {
  const first = error.validation?.[0];
  const where = error.validationContext === 'querystring' ? 'query parameter' : 'field';
  const fromPath = first?.instancePath.split('/').filter(Boolean).join('.') ?? '';
  const params = (first?.params ?? {}) as Record<string, unknown>;
  const invalid = (field: string, message: string): ErrorBody => ({
    error: message,
    code: ErrorCode.INVALID_ARGUMENT,
    field,
  });
  switch (first?.keyword) {
    case 'required': {
      const field = String(params.missingProperty);
      return invalid(field, `${field} is required`);
    }
    case 'additionalProperties': {
      const field = String(params.additionalProperty);
      return invalid(field, `unknown ${where}: ${field}`);
    }
  }
  if (fromPath === '') {
    return invalid('body', 'request body must be a JSON object');
  }
  const keyword = first?.keyword ?? '';
  const rule = RULES[fromPath]?.[keyword];
  if (rule) return invalid(fromPath, `${fromPath} ${rule}`);
  if (keyword === 'type') return invalid(fromPath, `${fromPath} must be a ${String(params.type)}`);
  if (keyword === 'minLength') return invalid(fromPath, `${fromPath} must be a non-empty string`);
  return invalid(fromPath, `${fromPath} ${first?.message ?? 'is invalid'}`);
}
