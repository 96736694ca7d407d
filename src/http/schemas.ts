import { MAX_NAME_LENGTH, MAX_TTL_SECONDS } from '../core/lock.js';

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
  required: ['id', 'service', 'who', 'createdAt', 'ttlSeconds', 'expiresAt', 'fencingToken', 'waiters'],
  properties: {
    id: { type: 'string' },
    service: { type: 'string' },
    who: { type: 'string' },
    createdAt: { type: 'string' },
    ttlSeconds: { type: ['integer', 'null'] },
    expiresAt: { type: ['string', 'null'] },
    fencingToken: { type: 'integer' },
    waiters: { type: 'integer' },
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
  page: { pattern: 'must be a positive integer' },
  per_page: { pattern: 'must be a positive integer' },
};
