import Type, { type Static, type TSchema } from 'typebox';
import {
  LOCK_EVENT_TYPES,
  MAX_HISTORY_LIMIT,
  MAX_NAME_LENGTH,
  MAX_REASON_LENGTH,
  MAX_TTL_SECONDS,
  MAX_WAIT_SECONDS,
} from '../core/lock.js';

/**
 * Every REST request and response body, declared once, with TypeBox: each declaration is a
 * plain JSON Schema object (Fastify's Ajv validates requests with it, fast-json-stringify
 * serializes responses with it, @fastify/swagger documents it) and carries its TypeScript
 * type (`Static<typeof X>`, exported as `X` too), which the routes, the SDK and the
 * dashboard's client use. A field is added here, once, and every one of them follows.
 *
 * Ajv runs with coercion and removal of unknown properties turned off (see app.ts), so a
 * wrong type or an unknown field is a 400, never silently fixed. Deeper rules (blank names,
 * ranges that depend on flags) are checked again in the core, for gRPC too.
 */

/** `T | null` as JSON Schema's `type: [T, 'null']` (the form fast-json-stringify serializes fastest). */
function Nullable<T extends TSchema & { type: string }>(schema: T) {
  return Type.Unsafe<Static<T> | null>({ ...schema, type: [schema.type, 'null'] });
}

const PRINTABLE = '^[^\\u0000-\\u001f\\u007f]*$';

/** A description for the API document, when there is one. */
const described = (description: string | undefined) => (description === undefined ? {} : { description });

/** A `service` or `who`: 1 to 256 characters, no control characters. */
const Name = (description?: string) =>
  Type.String({ minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: PRINTABLE, ...described(description) });
const TtlSeconds = Type.Integer({ minimum: 1, maximum: MAX_TTL_SECONDS });
/** Query values arrive as strings; their shape is checked here, ranges in the core. */
const PositiveIntegerText = (description?: string) =>
  Type.String({ pattern: '^[1-9][0-9]{0,8}$', ...described(description) });
/** An RFC 3339 timestamp, e.g. 2026-11-26T17:00:00Z or with an offset and fractions. */
const Timestamp = (description: string) =>
  Type.String({
    pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?(Z|[+-]\\d{2}:\\d{2})$',
    description,
  });
const EventIdText = (description: string) => Type.String({ pattern: '^[0-9]{1,15}$', description });

export const CreateLockBody = Type.Object(
  {
    service: Name(),
    who: Name(),
    ttlSeconds: Type.Optional(TtlSeconds),
    waitSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_WAIT_SECONDS })),
  },
  { additionalProperties: false },
);
export type CreateLockBody = Static<typeof CreateLockBody>;

/** The body is optional; without `ttlSeconds` the lock's own TTL is used again. */
export const RenewLockBody = Type.Object(
  { ttlSeconds: Type.Optional(TtlSeconds) },
  { additionalProperties: false },
);
export type RenewLockBody = Static<typeof RenewLockBody>;

/** The body is optional; an empty reason counts as none. */
export const ForceReleaseBody = Type.Object(
  { reason: Type.Optional(Type.String({ maxLength: MAX_REASON_LENGTH, pattern: PRINTABLE })) },
  { additionalProperties: false },
);
export type ForceReleaseBody = Static<typeof ForceReleaseBody>;

export const LockIdParams = Type.Object({
  id: Type.String({ description: 'The `id` returned when the lock was acquired.' }),
});
export const ServiceParams = Type.Object({ service: Name('The lock name.') });

export const ListLocksQuery = Type.Object(
  {
    page: Type.Optional(PositiveIntegerText('The page, from 1 (default 1).')),
    per_page: Type.Optional(PositiveIntegerText('Locks per page (default 100, at most 1000).')),
    service: Type.Optional(Name('Only the lock of this service.')),
    who: Type.Optional(Name('Only the locks held by this owner.')),
  },
  { additionalProperties: false },
);
export type ListLocksQuery = Static<typeof ListLocksQuery>;

export const HistoryQuery = Type.Object(
  {
    service: Type.Optional(Name('Only events of this service.')),
    who: Type.Optional(Name('Only events of this owner.')),
    since: Type.Optional(Timestamp('Only events at or after this time.')),
    until: Type.Optional(Timestamp('Only events before this time.')),
    limit: Type.Optional(PositiveIntegerText('At most this many events (default 100, at most 1000).')),
    before: Type.Optional(EventIdText("Only events older than this id (the previous page's `nextBefore`).")),
  },
  { additionalProperties: false },
);
export type HistoryQuery = Static<typeof HistoryQuery>;

export const WatchQuery = Type.Object(
  {
    service: Type.Optional(Name('Only events of this service.')),
    lastEventId: Type.Optional(
      EventIdText('Resume after this event id, for clients that cannot send the Last-Event-ID header.'),
    ),
  },
  { additionalProperties: false },
);
export type WatchQuery = Static<typeof WatchQuery>;

export const WatchHeaders = Type.Object({
  'last-event-id': Type.Optional(
    Type.String({ description: 'Resume after this event id (sent by `EventSource` on reconnection).' }),
  ),
});

const lockProperties = {
  id: Type.String(),
  service: Type.String(),
  who: Type.String(),
  /** UTC, whole seconds: `2024-01-15T10:00:00Z`. */
  createdAt: Type.String(),
  /** The lease length; null: no TTL. */
  ttlSeconds: Nullable(Type.Integer()),
  /** When the lease runs out; null: never. */
  expiresAt: Nullable(Type.String()),
  fencingToken: Type.Integer(),
  /** Requests queued for this service right now. */
  waiters: Type.Integer(),
  /** The name of the token that took it; null without authentication. */
  owner: Nullable(Type.String()),
};

export const LockJson = Type.Object(lockProperties);
export type LockJson = Static<typeof LockJson>;

export const WaiterJson = Type.Object({ who: Type.String(), since: Type.String(), position: Type.Integer() });
export type WaiterJson = Static<typeof WaiterJson>;

export const QueueJson = Type.Object({
  service: Type.String(),
  holder: Type.Union([Type.Null(), LockJson]),
  waiters: Type.Array(WaiterJson),
});
export type QueueJson = Static<typeof QueueJson>;

export const LockListJson = Type.Object({
  locks: Type.Array(LockJson),
  total: Type.Integer(),
  page: Type.Integer(),
  perPage: Type.Integer(),
});
export type LockListJson = Static<typeof LockListJson>;

export const ReleasedJson = Type.Object({ success: Type.Boolean(), message: Type.String() });
export type ReleasedJson = Static<typeof ReleasedJson>;

export const ForceReleasedJson = Type.Object({
  success: Type.Boolean(),
  message: Type.String(),
  lock: LockJson,
});
export type ForceReleasedJson = Static<typeof ForceReleasedJson>;

/** The lock an event is about; for queued/dequeued, the waiting request (no token yet). */
const EventLockJson = Type.Object({ ...lockProperties, fencingToken: Nullable(Type.Integer()) });

export const EventJson = Type.Object({
  id: Type.Integer(),
  type: Type.Enum(LOCK_EVENT_TYPES),
  /** RFC 3339, UTC, with milliseconds. */
  at: Type.String(),
  service: Type.String(),
  who: Type.String(),
  lock: EventLockJson,
  heldSeconds: Nullable(Type.Number()),
  reason: Nullable(Type.String()),
});
export type EventJson = Static<typeof EventJson>;

export const HistoryJson = Type.Object({
  events: Type.Array(EventJson, { maxItems: MAX_HISTORY_LIMIT }),
  nextBefore: Nullable(Type.Integer()),
});
export type HistoryJson = Static<typeof HistoryJson>;

/** The first message of a watch stream (SSE `event: snapshot`). */
export const SnapshotJson = Type.Object({ eventId: Type.Integer(), locks: Type.Array(LockJson) });
export type SnapshotJson = Static<typeof SnapshotJson>;

const errorProperties = {
  error: Type.String({ description: 'What went wrong, in words.' }),
  code: Type.String({ description: 'A stable code to act on; see the response descriptions.' }),
  field: Type.Optional(
    Type.String({ description: 'The field or query parameter at fault (`INVALID_ARGUMENT`).' }),
  ),
  /** The holder (`LOCK_HELD`, `WAIT_TIMEOUT`). */
  existingLock: Type.Optional(LockJson),
};

/** Every error: JSON with a stable `code`, and `field` for bad input. */
export const ErrorJson = Type.Object(errorProperties);
export type ErrorJson = Static<typeof ErrorJson>;

/** The release routes answer errors in the envelope the Locks Guide's scripts expect. */
export const ReleaseErrorJson = Type.Object({
  // `enum`, not `const`: the form the API document keeps as written.
  success: Type.Unsafe<false>(Type.Boolean({ enum: [false] })),
  ...errorProperties,
});

export const HealthJson = Type.Object({ status: Type.Unsafe<'ok'>(Type.String({ enum: ['ok'] })) });
export const ReadyJson = Type.Object({ status: Type.Unsafe<'ready'>(Type.String({ enum: ['ready'] })) });

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
