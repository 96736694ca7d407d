import type { FromSchema } from 'json-schema-to-ts';
import {
  LOCK_EVENT_TYPES,
  MAX_HISTORY_LIMIT,
  MAX_NAME_LENGTH,
  MAX_REASON_LENGTH,
  MAX_TTL_SECONDS,
  MAX_WAIT_SECONDS,
} from '../core/lock.js';

/**
 * Every REST request and response body, declared once, as a plain JSON Schema object
 * (`as const`): Fastify's Ajv validates requests with it, fast-json-stringify serializes
 * responses with it, @fastify/swagger documents it, and json-schema-to-ts derives its
 * TypeScript type (`FromSchema`, exported under the same name), which the routes (through
 * the type provider), the SDK and the dashboard's client use. A field is added here, once,
 * and every one of them follows.
 *
 * Ajv runs with coercion and removal of unknown properties turned off (see app.ts), so a
 * wrong type or an unknown field is a 400, never silently fixed. Deeper rules (blank names,
 * ranges that depend on flags) are checked again in the core, for gRPC too.
 */

/**
 * No control character (Unicode Cc: C0, DEL, C1), as CONTROL_CHARACTERS in core/lock.ts.
 * Ajv compiles patterns with the `u` flag, so `\p{…}` classes mean what they do in the core.
 */
const PRINTABLE = '^\\P{Cc}*$';
/**
 * A name's characters: no control character, and nothing invisible (Unicode Cf: bidi controls,
 * zero-width characters, the soft hyphen...; U+2028, U+2029), as INVISIBLE_CHARACTERS.
 */
const VISIBLE = '^[^\\p{Cc}\\p{Cf}\\u2028\\u2029]*$';

/**
 * A `service` or `who`: 1 to 256 characters, printable and visible. The core then keeps it in
 * Unicode NFC (and checks the length again in that form).
 */
const name = { type: 'string', minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: VISIBLE } as const;
const ttlSeconds = { type: 'integer', minimum: 1, maximum: MAX_TTL_SECONDS } as const;
/** Query values arrive as strings; their shape is checked here, ranges in the core. */
const positiveIntegerText = { type: 'string', pattern: '^[1-9][0-9]{0,8}$' } as const;
/** An RFC 3339 timestamp, e.g. 2026-11-26T17:00:00Z or with an offset and fractions. */
const timestamp = {
  type: 'string',
  pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?(Z|[+-]\\d{2}:\\d{2})$',
} as const;
const eventIdText = { type: 'string', pattern: '^[0-9]{1,15}$' } as const;

export const CreateLockBody = {
  type: 'object',
  required: ['service', 'who'],
  additionalProperties: false,
  properties: {
    service: name,
    who: name,
    ttlSeconds,
    waitSeconds: { type: 'integer', minimum: 0, maximum: MAX_WAIT_SECONDS },
  },
} as const;
export type CreateLockBody = FromSchema<typeof CreateLockBody>;

/** The body is optional; without `ttlSeconds` the lock's own TTL is used again. */
export const RenewLockBody = {
  type: 'object',
  additionalProperties: false,
  properties: { ttlSeconds },
} as const;
export type RenewLockBody = FromSchema<typeof RenewLockBody>;

/** The body is optional; an empty reason counts as none. */
export const ForceReleaseBody = {
  type: 'object',
  additionalProperties: false,
  properties: { reason: { type: 'string', maxLength: MAX_REASON_LENGTH, pattern: PRINTABLE } },
} as const;
export type ForceReleaseBody = FromSchema<typeof ForceReleaseBody>;

export const LockIdParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', description: 'The `id` returned when the lock was acquired.' } },
} as const;

/** POST /lock's headers: the optional Idempotency-Key (checked in the core, for gRPC too). */
export const AcquireHeaders = {
  type: 'object',
  properties: {
    'idempotency-key': {
      type: 'string',
      description:
        'Up to 255 printable characters, unique per acquire (a UUID): a retry with the same key and ' +
        'body gets the same lock (`200`, `Idempotent-Replayed: true`) or joins the same wait, never a ' +
        'second lock. Kept for --idempotency-retention (24 h) after the lock is gone.',
    },
  },
} as const;

export const ServiceParams = {
  type: 'object',
  required: ['service'],
  properties: { service: { ...name, description: 'The lock name.' } },
} as const;

export const ListLocksQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    page: { ...positiveIntegerText, description: 'The page, from 1 (default 1).' },
    per_page: { ...positiveIntegerText, description: 'Locks per page (default 100, at most 1000).' },
    service: { ...name, description: 'Only the lock of this service.' },
    who: { ...name, description: 'Only the locks held by this owner.' },
  },
} as const;
export type ListLocksQuery = FromSchema<typeof ListLocksQuery>;

export const HistoryQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    service: { ...name, description: 'Only events of this service.' },
    who: { ...name, description: 'Only events of this owner.' },
    since: { ...timestamp, description: 'Only events at or after this time.' },
    until: { ...timestamp, description: 'Only events before this time.' },
    limit: { ...positiveIntegerText, description: 'At most this many events (default 100, at most 1000).' },
    before: {
      ...eventIdText,
      description: "Only events older than this id (the previous page's `nextBefore`).",
    },
  },
} as const;
export type HistoryQuery = FromSchema<typeof HistoryQuery>;

export const WatchQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    service: { ...name, description: 'Only events of this service.' },
    lastEventId: {
      ...eventIdText,
      description: 'Resume after this event id, for clients that cannot send the Last-Event-ID header.',
    },
  },
} as const;
export type WatchQuery = FromSchema<typeof WatchQuery>;

export const WatchHeaders = {
  type: 'object',
  properties: {
    'last-event-id': {
      type: 'string',
      description: 'Resume after this event id (sent by `EventSource` on reconnection).',
    },
  },
} as const;

const lockProperties = {
  id: { type: 'string' },
  service: { type: 'string' },
  who: { type: 'string' },
  /** UTC, whole seconds: `2024-01-15T10:00:00Z`. */
  createdAt: { type: 'string' },
  /** The lease length; null: no TTL. */
  ttlSeconds: { type: ['integer', 'null'] },
  /** When the lease runs out; null: never. */
  expiresAt: { type: ['string', 'null'] },
  fencingToken: { type: 'integer' },
  /** Requests queued for this service right now. */
  waiters: { type: 'integer' },
  /** The name of the token that took it; null without authentication. */
  owner: { type: ['string', 'null'] },
} as const;
const LOCK_FIELDS = [
  'id',
  'service',
  'who',
  'createdAt',
  'ttlSeconds',
  'expiresAt',
  'fencingToken',
  'waiters',
  'owner',
] as const;

export const LockJson = { type: 'object', required: LOCK_FIELDS, properties: lockProperties } as const;
export type LockJson = FromSchema<typeof LockJson>;

export const WaiterJson = {
  type: 'object',
  required: ['who', 'since', 'position'],
  properties: { who: { type: 'string' }, since: { type: 'string' }, position: { type: 'integer' } },
} as const;
export type WaiterJson = FromSchema<typeof WaiterJson>;

export const QueueJson = {
  type: 'object',
  required: ['service', 'holder', 'waiters'],
  properties: {
    service: { type: 'string' },
    holder: { anyOf: [{ type: 'null' }, LockJson] },
    waiters: { type: 'array', items: WaiterJson },
  },
} as const;
export type QueueJson = FromSchema<typeof QueueJson>;

export const LockListJson = {
  type: 'object',
  required: ['locks', 'total', 'page', 'perPage'],
  properties: {
    locks: { type: 'array', items: LockJson },
    total: { type: 'integer' },
    page: { type: 'integer' },
    perPage: { type: 'integer' },
  },
} as const;
export type LockListJson = FromSchema<typeof LockListJson>;

export const ReleasedJson = {
  type: 'object',
  required: ['success', 'message'],
  properties: { success: { type: 'boolean' }, message: { type: 'string' } },
} as const;
export type ReleasedJson = FromSchema<typeof ReleasedJson>;

export const ForceReleasedJson = {
  type: 'object',
  required: ['success', 'message', 'lock'],
  properties: { success: { type: 'boolean' }, message: { type: 'string' }, lock: LockJson },
} as const;
export type ForceReleasedJson = FromSchema<typeof ForceReleasedJson>;

/** The lock an event is about; for queued/dequeued, the waiting request (no token yet). */
const EventLockJson = {
  type: 'object',
  required: LOCK_FIELDS,
  properties: { ...lockProperties, fencingToken: { type: ['integer', 'null'] } },
} as const;

export const EventJson = {
  type: 'object',
  required: ['id', 'type', 'at', 'service', 'who', 'lock', 'heldSeconds', 'reason'],
  properties: {
    id: { type: 'integer' },
    type: { type: 'string', enum: LOCK_EVENT_TYPES },
    /** RFC 3339, UTC, with milliseconds. */
    at: { type: 'string' },
    service: { type: 'string' },
    who: { type: 'string' },
    lock: EventLockJson,
    heldSeconds: { type: ['number', 'null'] },
    reason: { type: ['string', 'null'] },
  },
} as const;
export type EventJson = FromSchema<typeof EventJson>;

export const HistoryJson = {
  type: 'object',
  required: ['events', 'nextBefore'],
  properties: {
    events: { type: 'array', maxItems: MAX_HISTORY_LIMIT, items: EventJson },
    nextBefore: { type: ['integer', 'null'] },
  },
} as const;
export type HistoryJson = FromSchema<typeof HistoryJson>;

/**
 * The first messages of a watch stream (SSE `event: snapshot`): the held locks, up to 500
 * per message. `continued` false starts a new state, true adds to it; after the message with
 * `more` false come the events after `eventId`.
 */
export const SnapshotJson = {
  type: 'object',
  required: ['eventId', 'locks', 'continued', 'more'],
  properties: {
    eventId: { type: 'integer' },
    locks: { type: 'array', items: LockJson },
    continued: { type: 'boolean' },
    more: { type: 'boolean' },
  },
} as const;
export type SnapshotJson = FromSchema<typeof SnapshotJson>;

const errorProperties = {
  error: { type: 'string', description: 'What went wrong, in words.' },
  code: { type: 'string', description: 'A stable code to act on; see the response descriptions.' },
  field: { type: 'string', description: 'The field or query parameter at fault (`INVALID_ARGUMENT`).' },
  /** The holder (`LOCK_HELD`, `WAIT_TIMEOUT`). */
  existingLock: LockJson,
  lockId: { type: 'string', description: 'The lock that ended (`LOCK_ENDED`).' },
} as const;

/** Every error: JSON with a stable `code`, and `field` for bad input. */
export const ErrorJson = {
  type: 'object',
  required: ['error', 'code'],
  properties: errorProperties,
} as const;
export type ErrorJson = FromSchema<typeof ErrorJson>;

/** The release routes answer errors in the envelope the Locks Guide's scripts expect. */
export const ReleaseErrorJson = {
  type: 'object',
  required: ['success', 'error', 'code'],
  properties: { success: { type: 'boolean', enum: [false] }, ...errorProperties },
} as const;

export const HealthJson = {
  type: 'object',
  required: ['status'],
  properties: { status: { type: 'string', enum: ['ok'] } },
} as const;
export const ReadyJson = {
  type: 'object',
  required: ['status'],
  properties: { status: { type: 'string', enum: ['ready'] } },
} as const;

/** What each rule means in words, for error messages that name the field. */
export const RULES: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  service: {
    pattern: 'must not contain control characters, nor invisible or bidirectional formatting characters',
    maxLength: `must be at most ${MAX_NAME_LENGTH} characters`,
  },
  who: {
    pattern: 'must not contain control characters, nor invisible or bidirectional formatting characters',
    maxLength: `must be at most ${MAX_NAME_LENGTH} characters`,
  },
  ttlSeconds: {
    type: 'must be an integer',
    minimum: `must be an integer from 1 to ${MAX_TTL_SECONDS}`,
    maximum: `must be an integer from 1 to ${MAX_TTL_SECONDS}`,
  },
  waitSeconds: {
    type: 'must be an integer',
    minimum: `must be an integer from 0 to ${MAX_WAIT_SECONDS}`,
    maximum: `must be an integer from 0 to ${MAX_WAIT_SECONDS}`,
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
