import type { FromSchema } from 'json-schema-to-ts';
import {
  LOCK_EVENT_TYPES,
  LOCK_MODES,
  MAX_GROUP_CLAIMS,
  MAX_HISTORY_LIMIT,
  MAX_LABELS,
  MAX_LIMIT,
  MAX_LINK_LENGTH,
  MAX_NAME_LENGTH,
  MAX_NOTE_LENGTH,
  MAX_PRIORITY,
  MAX_PROPERTIES,
  MAX_PROPERTY_LENGTH,
  MAX_QUANTITY,
  MAX_REASON_LENGTH,
  MAX_TTL_SECONDS,
  MAX_WAIT_SECONDS,
  MIN_PRIORITY,
} from '../core/lock.js';
import {
  MAX_SECRET_LENGTH,
  MAX_WEBHOOK_URL_LENGTH,
  MIN_SECRET_LENGTH,
  WEBHOOK_EVENT_TYPES,
  WEBHOOK_FORMATS,
} from '../core/webhooks.js';

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

const waitSeconds = { type: 'integer', minimum: 0, maximum: MAX_WAIT_SECONDS } as const;
/** Exclusive holders a service admits at once (a semaphore); default 1. */
const limit = { type: 'integer', minimum: 1, maximum: MAX_LIMIT } as const;
const mode = { type: 'string', enum: LOCK_MODES } as const;
/** Higher waiters are granted first; default 0. */
const priority = { type: 'integer', minimum: MIN_PRIORITY, maximum: MAX_PRIORITY } as const;
/** Why the lock is held: free text, no control characters ('' counts as none). */
const note = {
  type: 'string',
  maxLength: MAX_NOTE_LENGTH,
  pattern: PRINTABLE,
  description: `Why the lock is held (up to ${MAX_NOTE_LENGTH} characters), shown with it everywhere.`,
} as const;
/** Where to look; the core checks it is an absolute http(s) URL. */
const link = {
  type: 'string',
  maxLength: MAX_LINK_LENGTH,
  description: 'Where to look: an absolute `http://` or `https://` URL (a CI run, a ticket).',
} as const;

/**
 * POST /lock. Exactly one of `service` and `label`; `limit` neither with `mode: "shared"` nor
 * with `label` (a resource's capacity is its limit). Those rules span fields, so the route
 * checks them (400 naming the field), not the schema: Ajv's `oneOf` errors name no field.
 */
export const CreateLockBody = {
  type: 'object',
  required: ['who'],
  additionalProperties: false,
  properties: {
    service: name,
    /** Any free registered resource carrying this label, instead of a named service. */
    label: name,
    who: name,
    ttlSeconds,
    waitSeconds,
    limit,
    mode,
    priority,
    note,
    link,
  },
} as const;
export type CreateLockBody = FromSchema<typeof CreateLockBody>;

/**
 * One claim of a group: a service, or `quantity` resources carrying a label (the same
 * cross-field rules as POST /lock, and `quantity` with a label only).
 */
export const ClaimBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    service: name,
    label: name,
    mode,
    limit,
    quantity: { type: 'integer', minimum: 1, maximum: MAX_QUANTITY },
  },
} as const;
export type ClaimBody = FromSchema<typeof ClaimBody>;

/** POST /locks: every claim granted together, or none. */
export const CreateGroupBody = {
  type: 'object',
  required: ['who', 'locks'],
  additionalProperties: false,
  properties: {
    who: name,
    ttlSeconds,
    waitSeconds,
    priority,
    note,
    link,
    locks: { type: 'array', minItems: 1, maxItems: MAX_GROUP_CLAIMS, items: ClaimBody },
  },
} as const;
export type CreateGroupBody = FromSchema<typeof CreateGroupBody>;

/** The body is optional; without `ttlSeconds` the lock's own TTL is used again. */
export const RenewLockBody = {
  type: 'object',
  additionalProperties: false,
  properties: { ttlSeconds },
} as const;
export type RenewLockBody = FromSchema<typeof RenewLockBody>;

/** POST /locks/{groupId}/renew: the same body as a lock's renewal, for every member. */
export const RenewGroupBody = RenewLockBody;
export type RenewGroupBody = RenewLockBody;

/** PATCH /lock/{id}: the holder changes its note (null or '' clears it). */
export const UpdateLockBody = {
  type: 'object',
  required: ['note'],
  additionalProperties: false,
  // pattern and maxLength apply to a string only: null passes them.
  properties: { note: { ...note, type: ['string', 'null'] } },
} as const;
export type UpdateLockBody = FromSchema<typeof UpdateLockBody>;

/** The body is optional; an empty reason counts as none. */
export const ForceReleaseBody = {
  type: 'object',
  additionalProperties: false,
  properties: { reason: { type: 'string', maxLength: MAX_REASON_LENGTH, pattern: PRINTABLE } },
} as const;
export type ForceReleaseBody = FromSchema<typeof ForceReleaseBody>;

/** POST /lock/{id}/steal: who takes it, why (required), and the new lock's lease and note. */
export const StealLockBody = {
  type: 'object',
  required: ['who', 'reason'],
  additionalProperties: false,
  properties: {
    who: name,
    reason: { type: 'string', minLength: 1, maxLength: MAX_REASON_LENGTH, pattern: PRINTABLE },
    ttlSeconds,
    note,
  },
} as const;
export type StealLockBody = FromSchema<typeof StealLockBody>;

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

export const GroupIdParams = {
  type: 'object',
  required: ['groupId'],
  properties: {
    groupId: { type: 'string', description: 'The group `id` returned when the locks were acquired.' },
  },
} as const;

export const ResourceParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { ...name, description: 'The resource (a service name).' } },
} as const;

/** PUT /resources/{name}. Labels and property keys follow the `service` rules. */
export const PutResourceBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    /** A label given twice counts once (as the core keeps them). */
    labels: { type: 'array', maxItems: MAX_LABELS, items: name },
    properties: {
      type: 'object',
      maxProperties: MAX_PROPERTIES,
      propertyNames: name,
      additionalProperties: { type: 'string', maxLength: MAX_PROPERTY_LENGTH, pattern: PRINTABLE },
    },
    /** Its limit: how many exclusive holders it admits at once (default 1). */
    capacity: limit,
    description: { type: 'string', maxLength: MAX_PROPERTY_LENGTH, pattern: PRINTABLE },
  },
} as const;
export type PutResourceBody = FromSchema<typeof PutResourceBody>;

export const ListResourcesQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { label: { ...name, description: 'Only the resources carrying this label.' } },
} as const;
export type ListResourcesQuery = FromSchema<typeof ListResourcesQuery>;

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

/** A registered resource as a lock on it shows it. */
const ResourceRefJson = {
  type: 'object',
  required: ['name', 'labels', 'properties'],
  properties: {
    name: { type: 'string' },
    labels: { type: 'array', items: { type: 'string' } },
    properties: { type: 'object', additionalProperties: { type: 'string' } },
  },
} as const;

/** The fields a lock and an event's lock share. */
const heldProperties = {
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
  /** How many exclusive holders its service admits while it is held. */
  limit: { type: 'integer' },
  mode,
  /** The group it was granted in; null for a lock acquired alone. */
  groupId: { type: ['string', 'null'] },
  /** Why it is held; null: no note. */
  note: { type: ['string', 'null'] },
  /** Where to look (http(s)); null: none. */
  link: { type: ['string', 'null'] },
} as const;
const HELD_FIELDS = [
  'id',
  'service',
  'who',
  'createdAt',
  'ttlSeconds',
  'expiresAt',
  'fencingToken',
  'waiters',
  'owner',
  'limit',
  'mode',
  'groupId',
  'note',
  'link',
] as const;

export const LockJson = {
  type: 'object',
  required: [...HELD_FIELDS, 'resource'],
  properties: {
    ...heldProperties,
    /** The registered resource it holds; null when its service is not one. */
    resource: { anyOf: [{ type: 'null' }, ResourceRefJson] },
  },
} as const;
export type LockJson = FromSchema<typeof LockJson>;

export const WaiterJson = {
  type: 'object',
  required: ['who', 'since', 'position', 'priority', 'mode', 'label', 'groupId', 'note', 'link'],
  properties: {
    who: { type: 'string' },
    since: { type: 'string' },
    position: { type: 'integer' },
    priority: { type: 'integer' },
    mode,
    /** A request for any resource carrying this label; null for one naming the service. */
    label: { type: ['string', 'null'] },
    groupId: { type: ['string', 'null'] },
    note: { type: ['string', 'null'] },
    link: { type: ['string', 'null'] },
  },
} as const;
export type WaiterJson = FromSchema<typeof WaiterJson>;

export const QueueJson = {
  type: 'object',
  required: ['service', 'holder', 'holders', 'waiters'],
  properties: {
    service: { type: 'string' },
    /** The oldest holder; null when free. */
    holder: { anyOf: [{ type: 'null' }, LockJson] },
    /** Every holder, oldest first. */
    holders: { type: 'array', items: LockJson },
    waiters: { type: 'array', items: WaiterJson },
  },
} as const;
export type QueueJson = FromSchema<typeof QueueJson>;

/** A group's locks (POST /locks, GET, renew and DELETE /locks/{groupId}). */
export const GroupJson = {
  type: 'object',
  required: ['id', 'locks'],
  properties: { id: { type: 'string' }, locks: { type: 'array', items: LockJson } },
} as const;
export type GroupJson = FromSchema<typeof GroupJson>;

/** A registered resource, with who holds it and who waits for it. */
export const ResourceJson = {
  type: 'object',
  required: ['name', 'labels', 'properties', 'capacity', 'description', 'holders', 'waiters', 'free'],
  properties: {
    name: { type: 'string' },
    labels: { type: 'array', items: { type: 'string' } },
    properties: { type: 'object', additionalProperties: { type: 'string' } },
    capacity: { type: 'integer' },
    description: { type: ['string', 'null'] },
    holders: { type: 'array', items: LockJson },
    waiters: { type: 'array', items: WaiterJson },
    /** How many more exclusive holders it admits now. */
    free: { type: 'integer' },
  },
} as const;
export type ResourceJson = FromSchema<typeof ResourceJson>;

export const ResourceListJson = {
  type: 'object',
  required: ['resources'],
  properties: { resources: { type: 'array', items: ResourceJson } },
} as const;
export type ResourceListJson = FromSchema<typeof ResourceListJson>;

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

/** A steal's answer: the caller's new lock, and the lock it ended. */
export const StolenJson = {
  type: 'object',
  required: ['lock', 'stolen'],
  properties: { lock: LockJson, stolen: LockJson },
} as const;
export type StolenJson = FromSchema<typeof StolenJson>;

export const ForceReleasedJson = {
  type: 'object',
  required: ['success', 'message', 'lock'],
  properties: { success: { type: 'boolean' }, message: { type: 'string' }, lock: LockJson },
} as const;
export type ForceReleasedJson = FromSchema<typeof ForceReleasedJson>;

/** The lock an event is about; for queued/dequeued, the waiting request (no token, no limit yet). */
const EventLockJson = {
  type: 'object',
  required: HELD_FIELDS,
  properties: {
    ...heldProperties,
    fencingToken: { type: ['integer', 'null'] },
    limit: { type: ['integer', 'null'] },
  },
} as const;

export const EventJson = {
  type: 'object',
  required: [
    'id',
    'type',
    'at',
    'service',
    'who',
    'lock',
    'heldSeconds',
    'reason',
    'groupId',
    'label',
    'stolenBy',
  ],
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
    /** The lock's (or the waiting request's) group; null outside a group. */
    groupId: { type: ['string', 'null'] },
    /** queued/dequeued of a request for any resource carrying a label: the label. */
    label: { type: ['string', 'null'] },
    /** stolen: the lock that took its place, its holder and token name; null otherwise. */
    stolenBy: {
      anyOf: [
        { type: 'null' },
        {
          type: 'object',
          required: ['lockId', 'who', 'owner'],
          properties: {
            lockId: { type: 'string' },
            who: { type: 'string' },
            owner: { type: ['string', 'null'] },
          },
        },
      ],
    },
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

export const WebhookParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { ...name, description: 'The webhook’s name.' } },
} as const;

/** PUT /webhooks/{name}: the core checks the URL (an absolute http(s) one, and where it resolves). */
export const PutWebhookBody = {
  type: 'object',
  required: ['url', 'secret', 'events'],
  additionalProperties: false,
  properties: {
    url: {
      type: 'string',
      maxLength: MAX_WEBHOOK_URL_LENGTH,
      description: 'Where to POST: an absolute http:// or https:// URL.',
    },
    secret: {
      type: 'string',
      minLength: MIN_SECRET_LENGTH,
      maxLength: MAX_SECRET_LENGTH,
      pattern: PRINTABLE,
      description:
        'Signs every delivery: X-Tracker-Signature-256 is sha256=HMAC-SHA256(body, secret). Never shown.',
    },
    events: {
      type: 'array',
      minItems: 1,
      maxItems: WEBHOOK_EVENT_TYPES.length,
      items: { type: 'string', enum: WEBHOOK_EVENT_TYPES },
      description: 'Which events: every history type, held-too-long and waited-too-long.',
    },
    services: {
      type: 'string',
      minLength: 1,
      maxLength: MAX_NAME_LENGTH,
      pattern: PRINTABLE,
      description: 'Only events of services matching this glob (* any characters, ? one).',
    },
    format: { type: 'string', enum: WEBHOOK_FORMATS, description: 'json (default), or slack: {"text": …}.' },
    alertAfterSeconds: {
      ...ttlSeconds,
      description: 'How long is too long, for held-too-long and waited-too-long.',
    },
  },
} as const;
export type PutWebhookBody = FromSchema<typeof PutWebhookBody>;

const instant = { type: ['string', 'null'] } as const;

/** A webhook as GET shows it: what it wants, and where its delivery stands (never its secret). */
export const WebhookJson = {
  type: 'object',
  required: [
    'name',
    'url',
    'events',
    'services',
    'format',
    'alertAfterSeconds',
    'createdAt',
    'updatedAt',
    'delivery',
  ],
  properties: {
    name: { type: 'string' },
    url: { type: 'string' },
    events: { type: 'array', items: { type: 'string', enum: WEBHOOK_EVENT_TYPES } },
    services: { type: ['string', 'null'] },
    format: { type: 'string', enum: WEBHOOK_FORMATS },
    alertAfterSeconds: { type: ['integer', 'null'] },
    createdAt: { type: 'string' },
    updatedAt: { type: 'string' },
    delivery: {
      type: 'object',
      required: [
        'cursor',
        'pending',
        'lagSeconds',
        'delivered',
        'dropped',
        'failures',
        'lastStatus',
        'lastError',
        'lastAttemptAt',
        'lastSuccessAt',
        'nextAttemptAt',
      ],
      properties: {
        /** The last history event handled. */
        cursor: { type: 'integer' },
        /** History events after the cursor (counted up to 1000). */
        pending: { type: 'integer' },
        /** How old the oldest undelivered event is; 0 when caught up. */
        lagSeconds: { type: 'number' },
        delivered: { type: 'integer' },
        /** Events dropped after 24 h of failed attempts. */
        dropped: { type: 'integer' },
        /** Consecutive failed attempts. */
        failures: { type: 'integer' },
        lastStatus: { type: ['integer', 'null'] },
        lastError: { type: ['string', 'null'] },
        lastAttemptAt: instant,
        lastSuccessAt: instant,
        nextAttemptAt: instant,
      },
    },
  },
} as const;
export type WebhookJson = FromSchema<typeof WebhookJson>;

export const WebhookListJson = {
  type: 'object',
  required: ['webhooks'],
  properties: { webhooks: { type: 'array', items: WebhookJson } },
} as const;
export type WebhookListJson = FromSchema<typeof WebhookListJson>;

const errorProperties = {
  error: { type: 'string', description: 'What went wrong, in words.' },
  code: { type: 'string', description: 'A stable code to act on; see the response descriptions.' },
  field: { type: 'string', description: 'The field or query parameter at fault (`INVALID_ARGUMENT`).' },
  /** The oldest holder (`LOCK_HELD`, `WAIT_TIMEOUT`). */
  existingLock: LockJson,
  /** Every holder of what the request could not get (`LOCK_HELD`, `WAIT_TIMEOUT`). */
  holders: { type: 'array', items: LockJson },
  limit: { type: 'integer', description: "The service's current limit (`LIMIT_MISMATCH`)." },
  service: { type: 'string', description: 'The service whose limit differs (`LIMIT_MISMATCH`).' },
  label: { type: 'string', description: 'The label no resource carries (`NO_SUCH_LABEL`).' },
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
const NAME_RULES = {
  pattern: 'must not contain control characters, nor invisible or bidirectional formatting characters',
  maxLength: `must be at most ${MAX_NAME_LENGTH} characters`,
} as const;
const integerFrom = (min: number, max: number) => {
  const rule = `must be an integer from ${min} to ${max}`;
  return { type: rule, minimum: rule, maximum: rule } as const;
};

/**
 * What each rule means in words, for error messages that name the field. Keyed by the field's
 * path (`ttlSeconds`), by that path with the segments after the first as `*` (`labels.*` for
 * `labels[2]`, `properties.*` for `properties.serial`), or by its last name (`limit` for
 * `locks[0].limit`): see error-mapping.ts.
 */
export const RULES: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  service: NAME_RULES,
  who: NAME_RULES,
  label: NAME_RULES,
  /** A resource's name (path). */
  name: NAME_RULES,
  'labels.*': NAME_RULES,
  labels: {
    type: 'must be an array of labels',
    maxItems: `must hold at most ${MAX_LABELS} labels`,
  },
  properties: {
    type: 'must be an object of string values',
    maxProperties: `must hold at most ${MAX_PROPERTIES} properties`,
    propertyNames: `keys must be 1 to ${MAX_NAME_LENGTH} visible characters (the service rules)`,
  },
  'properties.*': {
    type: 'must be a string',
    pattern: 'must not contain control characters',
    maxLength: `must be at most ${MAX_PROPERTY_LENGTH} characters`,
  },
  description: {
    pattern: 'must not contain control characters',
    maxLength: `must be at most ${MAX_PROPERTY_LENGTH} characters`,
  },
  ttlSeconds: { ...integerFrom(1, MAX_TTL_SECONDS), type: 'must be an integer' },
  waitSeconds: { ...integerFrom(0, MAX_WAIT_SECONDS), type: 'must be an integer' },
  priority: integerFrom(MIN_PRIORITY, MAX_PRIORITY),
  capacity: integerFrom(1, MAX_LIMIT),
  quantity: integerFrom(1, MAX_QUANTITY),
  mode: { enum: `must be one of ${LOCK_MODES.join(', ')}`, type: `must be one of ${LOCK_MODES.join(', ')}` },
  locks: {
    type: 'must be an array of claims',
    minItems: `must hold 1 to ${MAX_GROUP_CLAIMS} claims`,
    maxItems: `must hold 1 to ${MAX_GROUP_CLAIMS} claims`,
  },
  'locks.*': { type: 'must be an object (a claim)' },
  reason: {
    pattern: 'must not contain control characters',
    maxLength: `must be at most ${MAX_REASON_LENGTH} characters`,
  },
  note: {
    type: 'must be a string (or null to clear it)',
    pattern: 'must not contain control characters',
    maxLength: `must be at most ${MAX_NOTE_LENGTH} characters`,
  },
  link: {
    type: 'must be a string: an absolute http:// or https:// URL',
    maxLength: `must be at most ${MAX_LINK_LENGTH} characters`,
  },
  url: {
    type: 'must be a string: an absolute http:// or https:// URL',
    maxLength: `must be at most ${MAX_WEBHOOK_URL_LENGTH} characters`,
  },
  secret: {
    type: 'must be a string',
    minLength: `must be ${MIN_SECRET_LENGTH} to ${MAX_SECRET_LENGTH} characters`,
    maxLength: `must be ${MIN_SECRET_LENGTH} to ${MAX_SECRET_LENGTH} characters`,
    pattern: 'must not contain control characters',
  },
  events: {
    type: 'must be an array of event types',
    minItems: 'must list at least one event type',
    maxItems: 'must list each event type once at most',
  },
  'events.*': { enum: `must be one of ${WEBHOOK_EVENT_TYPES.join(', ')}`, type: 'must be an event type' },
  services: { type: 'must be a glob of service names', pattern: 'must not contain control characters' },
  format: {
    enum: `must be one of ${WEBHOOK_FORMATS.join(', ')}`,
    type: `must be one of ${WEBHOOK_FORMATS.join(', ')}`,
  },
  alertAfterSeconds: { ...integerFrom(1, MAX_TTL_SECONDS), type: 'must be an integer' },
  since: { pattern: 'must be an RFC 3339 timestamp, e.g. 2026-11-26T17:00:00Z' },
  until: { pattern: 'must be an RFC 3339 timestamp, e.g. 2026-11-26T17:00:00Z' },
  // The history query's `limit` (text) and an acquire's (an integer): both from 1 to 1000.
  limit: { pattern: `must be an integer from 1 to ${MAX_HISTORY_LIMIT}`, ...integerFrom(1, MAX_LIMIT) },
  before: { pattern: 'must be an event id (a positive integer)' },
  lastEventId: { pattern: 'must be an event id (a non-negative integer)' },
  page: { pattern: 'must be a positive integer' },
  per_page: { pattern: 'must be a positive integer' },
};
