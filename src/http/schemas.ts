import {
  LOCK_EVENT_TYPES,
  MAX_HISTORY_LIMIT,
  MAX_NAME_LENGTH,
  MAX_REASON_LENGTH,
  MAX_TTL_SECONDS,
} from '../core/lock.js';

/**
 * JSON schemas of the REST API. Ajv runs with coercion and removal of unknown properties
 * turned off (see app.ts), so a wrong type or an unknown field is a 400, never silently
 * fixed. Deeper rules (blank names, ranges) are checked again in the core, for gRPC too.
 */

const name = {
  type: 'string',
  minLength: 1,
  maxLength: MAX_NAME_LENGTH,
  pattern: '^[^\\u0000-\\u001f\\u007f]*$',
} as const;

const ttlSeconds = { type: 'integer', minimum: 1, maximum: MAX_TTL_SECONDS } as const;

export const createLockBody = {
  type: 'object',
  required: ['service', 'who'],
  additionalProperties: false,
  properties: {
    service: name,
    who: name,
    ttlSeconds,
    waitSeconds: { type: 'integer', minimum: 0, maximum: 3600 },
  },
} as const;

/** The body is optional; without `ttlSeconds` the lock's own TTL is used again. */
export const renewLockBody = {
  type: 'object',
  additionalProperties: false,
  properties: { ttlSeconds },
} as const;

export const lockIdParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string' } },
} as const;

/** Query values arrive as strings; their shape is checked here, ranges in the core. */
export const listLocksQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    page: { type: 'string', pattern: '^[1-9][0-9]{0,8}$' },
    per_page: { type: 'string', pattern: '^[1-9][0-9]{0,8}$' },
    service: name,
    who: name,
  },
} as const;

export const lockJson = {
  type: 'object',
  required: [
    'id',
    'service',
    'who',
    'createdAt',
    'ttlSeconds',
    'expiresAt',
    'fencingToken',
    'waiters',
    'owner',
  ],
  properties: {
    id: { type: 'string' },
    service: { type: 'string' },
    who: { type: 'string' },
    createdAt: { type: 'string' },
    ttlSeconds: { type: ['integer', 'null'] },
    expiresAt: { type: ['string', 'null'] },
    fencingToken: { type: 'integer' },
    waiters: { type: 'integer' },
    /** The token name that took it; null without authentication. */
    owner: { type: ['string', 'null'] },
  },
} as const;

export const serviceParams = {
  type: 'object',
  required: ['service'],
  properties: { service: name },
} as const;

export const queueJson = {
  type: 'object',
  required: ['service', 'holder', 'waiters'],
  properties: {
    service: { type: 'string' },
    holder: { anyOf: [{ type: 'null' }, lockJson] },
    waiters: {
      type: 'array',
      items: {
        type: 'object',
        required: ['who', 'since', 'position'],
        properties: { who: { type: 'string' }, since: { type: 'string' }, position: { type: 'integer' } },
      },
    },
  },
} as const;

export const lockListJson = {
  type: 'object',
  required: ['locks', 'total', 'page', 'perPage'],
  properties: {
    locks: { type: 'array', items: lockJson },
    total: { type: 'integer' },
    page: { type: 'integer' },
    perPage: { type: 'integer' },
  },
} as const;

export const releasedJson = {
  type: 'object',
  required: ['success', 'message'],
  properties: { success: { type: 'boolean' }, message: { type: 'string' } },
} as const;

/** The body is optional; an empty reason counts as none. */
export const forceReleaseBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    reason: { type: 'string', maxLength: MAX_REASON_LENGTH, pattern: '^[^\\u0000-\\u001f\\u007f]*$' },
  },
} as const;

export const forceReleasedJson = {
  type: 'object',
  required: ['success', 'message', 'lock'],
  properties: { success: { type: 'boolean' }, message: { type: 'string' }, lock: lockJson },
} as const;

/** An RFC 3339 timestamp, e.g. 2026-11-26T17:00:00Z or with an offset and fractions. */
const timestamp = {
  type: 'string',
  pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?(Z|[+-]\\d{2}:\\d{2})$',
} as const;

const eventId = { type: 'string', pattern: '^[0-9]{1,15}$' } as const;

export const historyQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    service: name,
    who: name,
    since: timestamp,
    until: timestamp,
    limit: { type: 'string', pattern: '^[1-9][0-9]{0,8}$' },
    before: eventId,
  },
} as const;

export const watchQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    service: name,
    /** For clients that cannot send the Last-Event-ID header on their first request. */
    lastEventId: eventId,
  },
} as const;

/** The lock an event is about; for queued/dequeued, the waiting request (no token yet). */
const eventLockJson = {
  ...lockJson,
  properties: { ...lockJson.properties, fencingToken: { type: ['integer', 'null'] } },
} as const;

export const eventJson = {
  type: 'object',
  required: ['id', 'type', 'at', 'service', 'who', 'lock', 'heldSeconds', 'reason'],
  properties: {
    id: { type: 'integer' },
    type: { type: 'string', enum: [...LOCK_EVENT_TYPES] },
    at: { type: 'string' },
    service: { type: 'string' },
    who: { type: 'string' },
    lock: eventLockJson,
    heldSeconds: { type: ['number', 'null'] },
    reason: { type: ['string', 'null'] },
  },
} as const;

export const historyJson = {
  type: 'object',
  required: ['events', 'nextBefore'],
  properties: {
    events: { type: 'array', maxItems: MAX_HISTORY_LIMIT, items: eventJson },
    nextBefore: { type: ['integer', 'null'] },
  },
} as const;

/** What each rule means in words, for error messages that name the field. */
export const RULES: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  service: {
    pattern: 'must not contain control characters',
    maxLength: `must be at most ${MAX_NAME_LENGTH} characters`,
  },
  who: {
    pattern: 'must not contain control characters',
    maxLength: `must be at most ${MAX_NAME_LENGTH} characters`,
  },
  ttlSeconds: {
    type: 'must be an integer',
    minimum: `must be an integer from 1 to ${MAX_TTL_SECONDS}`,
    maximum: `must be an integer from 1 to ${MAX_TTL_SECONDS}`,
  },
  waitSeconds: {
    type: 'must be an integer',
    minimum: 'must be an integer from 0 to 3600',
    maximum: 'must be an integer from 0 to 3600',
  },
  reason: {
    pattern: 'must not contain control characters',
    maxLength: `must be at most ${MAX_REASON_LENGTH} characters`,
  },
  since: { pattern: 'must be an RFC 3339 timestamp, e.g. 2026-11-26T17:00:00Z' },
  until: { pattern: 'must be an RFC 3339 timestamp, e.g. 2026-11-26T17:00:00Z' },
  limit: { pattern: `must be an integer from 1 to ${MAX_HISTORY_LIMIT}` },
  before: { pattern: 'must be an event id (a positive integer)' },
  lastEventId: { pattern: 'must be an event id (a non-negative integer)' },
  page: { pattern: 'must be a positive integer' },
  per_page: { pattern: 'must be a positive integer' },
};
