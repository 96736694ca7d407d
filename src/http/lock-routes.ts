import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Caller } from '../core/auth.js';
import { ErrorCode, invalidArgument } from '../core/errors.js';
import { type ClaimOptions, type LockService, timestampArgument } from '../core/lock-service.js';
import { eventToJson, groupToJson, lockToJson, queueToJson } from './present.js';
import { apiRoute, describedAs } from './route-docs.js';
import {
  AcquireHeaders,
  type ClaimBody,
  CreateGroupBody,
  CreateLockBody,
  ForceReleaseBody,
  ForceReleasedJson,
  GroupIdParams,
  GroupJson,
  HistoryJson,
  HistoryQuery,
  ListLocksQuery,
  LockIdParams,
  LockJson,
  LockListJson,
  QueueJson,
  ReleasedJson,
  RenewGroupBody,
  RenewLockBody,
  ServiceParams,
  StealLockBody,
  StolenJson,
  UpdateLockBody,
} from './schemas.js';

export const API = '/api/v1alpha1';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who is calling, set by the gate (app.ts) for the API routes and /metrics only. */
    caller: Caller | undefined;
    /** routeOf's cache: undefined until asked, null when no route matched. */
    matchedRoute: string | null | undefined;
  }
  interface FastifyContextConfig {
    /** Release routes answer errors as `{success: false, ...}`, as the guide's scripts expect. */
    successEnvelope?: boolean;
  }
}

/**
 * The route as declared (`/api/v1alpha1/lock/:id`), undefined when none matched. Fastify's
 * `request.routeOptions` builds a new object of a dozen fields at each read, and the guard,
 * the gate and the request log each want the route: it is read once per request.
 */
export function routeOf(request: FastifyRequest): string | undefined {
  let route = request.matchedRoute;
  if (route === undefined) {
    route = request.routeOptions.url ?? null;
    request.matchedRoute = route;
  }
  return route ?? undefined;
}

/** The caller the gate admitted; a route outside the gate asking for one is a bug. */
export function callerOf(request: FastifyRequest): Caller {
  if (request.caller === undefined) {
    throw new Error(`route ${routeOf(request) ?? request.url} is not behind the gate`);
  }
  return request.caller;
}

const api = { gated: true, api: true } as const;

const RELEASE_DESCRIPTION =
  'Releases the lock with this `id`. Releasing a lock that is not held (released, expired, ' +
  'or never existed) answers `404` with `{"success": false, ...}`.';

const released = describedAs(
  ReleasedJson,
  'Released: `{"success": true, "message": "Lock released successfully"}`.',
);

/** The lock routes of the REST API: parse, call the core, present the result. */
export function registerLockRoutes(root: FastifyInstance, service: LockService): void {
  const app = root.withTypeProvider<JsonSchemaToTsProvider>();

  app.post(
    `${API}/lock`,
    {
      schema: apiRoute(
        { method: 'POST', ...api },
        {
          operationId: 'createLock',
          summary: 'Acquire a lock',
          description:
            'Acquires the lock named `service` for `who`. Answers at once: `201` and the lock, or ' +
            '`409 LOCK_HELD` with the oldest holder in `existingLock` and every holder in `holders`. ' +
            "With `waitSeconds` the request waits in the service's queue (granted by `priority`, then " +
            'in arrival order) and answers `201` when granted, or `409 WAIT_TIMEOUT` at its deadline; ' +
            'a client that hangs up leaves the queue at once. With `ttlSeconds` the lock is a lease ' +
            'that expires unless renewed. `fencingToken` grows with every acquire of the service: pass ' +
            'it along with every write to the protected system.\n\n' +
            '`limit: n` makes the service a semaphore of n holders (a request naming another limit ' +
            'while it is held gets `409 LIMIT_MISMATCH`); `mode: "shared"` holds it together with ' +
            'other shared holders, never with an exclusive one. `label` instead of `service` takes any ' +
            'free registered resource carrying that label (`404 NO_SUCH_LABEL` when none does); the ' +
            'lock then shows the resource. Exactly one of `service` and `label`; `limit` goes with ' +
            'neither `mode: "shared"` nor `label` (a resource\'s capacity is its limit).',
          tags: ['locks'],
          errors: [
            ErrorCode.LOCK_HELD,
            ErrorCode.WAIT_TIMEOUT,
            ErrorCode.LIMIT_MISMATCH,
            ErrorCode.NO_SUCH_LABEL,
            ErrorCode.QUEUE_FULL,
            ErrorCode.TOO_MANY_LOCKS,
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            ErrorCode.LOCK_ENDED,
          ],
        },
        {
          headers: AcquireHeaders,
          body: CreateLockBody,
          response: {
            201: describedAs(LockJson, 'The lock, now held by `who`.'),
            200: describedAs(
              LockJson,
              'A retry with the same Idempotency-Key: the lock its first request was granted (header ' +
                '`Idempotent-Replayed: true`), with its lease as it is now.',
            ),
          },
        },
      ),
    },
    async (request, reply) => {
      const { who, ttlSeconds, waitSeconds, priority, note, link, ...claim } = request.body;
      const { lock, replayed } = await service.acquire({
        caller: callerOf(request),
        ...claimOptions(claim, ''),
        who,
        ttlSeconds,
        waitSeconds,
        priority,
        note,
        link,
        // Only a request that may wait listens for its client hanging up (an AbortController
        // and a 'close' listener per request showed in the profile).
        signal: waitSeconds ? hangUp(reply) : undefined,
        idempotencyKey: headerValue(request.headers['idempotency-key']),
      });
      const body = lockToJson(lock);
      if (!replayed) return reply.status(201).send(body);
      // A retry's answer: the earlier lock, 200 and the replay header. (The type provider
      // narrows a route's statuses to the first one its handler returns; both are declared.)
      return (reply as FastifyReply).status(200).header('idempotent-replayed', 'true').send(body);
    },
  );

  app.post(
    `${API}/locks`,
    {
      schema: apiRoute(
        { method: 'POST', ...api },
        {
          operationId: 'createLockGroup',
          summary: 'Acquire several locks at once (a group)',
          description:
            'Acquires every claim of `locks` (1 to 32: a `service`, or `quantity` resources carrying a ' +
            '`label`, each with its own `mode` and `limit` as on `POST /api/v1alpha1/lock`) for `who`, ' +
            'all together or none: a group never holds a part, not even while it waits, so two groups ' +
            'asking for `[a,b]` and `[b,a]` never deadlock. Answers `201 {id, locks}`: the group id ' +
            '(every lock carries it as `groupId`) and every granted lock; or `409 LOCK_HELD` naming ' +
            'the holders of what was not free. `waitSeconds`, `priority`, `ttlSeconds` and the ' +
            'Idempotency-Key work as for a single acquire.',
          tags: ['locks'],
          errors: [
            ErrorCode.LOCK_HELD,
            ErrorCode.WAIT_TIMEOUT,
            ErrorCode.LIMIT_MISMATCH,
            ErrorCode.NO_SUCH_LABEL,
            ErrorCode.QUEUE_FULL,
            ErrorCode.TOO_MANY_LOCKS,
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            ErrorCode.LOCK_ENDED,
          ],
        },
        {
          headers: AcquireHeaders,
          body: CreateGroupBody,
          response: {
            201: describedAs(GroupJson, 'The group: its id and every lock it holds.'),
            200: describedAs(
              GroupJson,
              'A retry with the same Idempotency-Key: the group its first request was granted (header ' +
                '`Idempotent-Replayed: true`).',
            ),
          },
        },
      ),
    },
    async (request, reply) => {
      const { who, ttlSeconds, waitSeconds, priority, note, link, locks } = request.body;
      const { group, replayed } = await service.acquireGroup({
        caller: callerOf(request),
        who,
        ttlSeconds,
        waitSeconds,
        priority,
        note,
        link,
        locks: locks.map((claim, index) => claimOptions(claim, `locks[${index}].`)),
        // Only a request that may wait listens for its client hanging up (an AbortController
        // and a 'close' listener per request showed in the profile).
        signal: waitSeconds ? hangUp(reply) : undefined,
        idempotencyKey: headerValue(request.headers['idempotency-key']),
      });
      const body = groupToJson(group);
      if (!replayed) return reply.status(201).send(body);
      return (reply as FastifyReply).status(200).header('idempotent-replayed', 'true').send(body);
    },
  );

  app.get(
    `${API}/locks/:groupId`,
    {
      schema: apiRoute(
        { method: 'GET', ...api },
        {
          operationId: 'getLockGroup',
          summary: 'Get a group',
          description: 'The locks of the group with this `id` that are still held.',
          tags: ['locks'],
          errors: [ErrorCode.LOCK_NOT_FOUND],
        },
        { params: GroupIdParams, response: { 200: describedAs(GroupJson, 'The group and its held locks.') } },
      ),
    },
    async (request) =>
      groupToJson(await service.getGroup({ caller: callerOf(request), id: request.params.groupId })),
  );

  app.post(
    `${API}/locks/:groupId/renew`,
    {
      schema: apiRoute(
        { method: 'POST', ...api },
        {
          operationId: 'renewLockGroup',
          summary: "Renew a group's leases",
          description:
            "Renews every held lock of the group: `ttlSeconds` from now, or each lock's own TTL when " +
            'the body (optional) does not say. A group none of whose locks is held answers ' +
            '`404 LOCK_NOT_HELD`.',
          tags: ['locks'],
          errors: [ErrorCode.LOCK_NOT_HELD],
          bodyOptional: true,
        },
        {
          params: GroupIdParams,
          body: RenewGroupBody,
          response: { 200: describedAs(GroupJson, 'The group with its renewed locks.') },
        },
      ),
      preValidation: async (request) => {
        request.body ??= {};
      },
    },
    async (request) =>
      groupToJson(
        await service.renewGroup({
          caller: callerOf(request),
          id: request.params.groupId,
          ttlSeconds: request.body?.ttlSeconds,
        }),
      ),
  );

  app.delete(
    `${API}/locks/:groupId`,
    {
      schema: apiRoute(
        { method: 'DELETE', ...api },
        {
          operationId: 'releaseLockGroup',
          summary: 'Release a group',
          description:
            'Releases every held lock of the group; the answer lists what was released. A member ' +
            'may also be released alone by its own `id`. A group none of whose locks is held ' +
            'answers `404 LOCK_NOT_FOUND`.',
          tags: ['locks'],
          errors: [ErrorCode.LOCK_NOT_FOUND],
        },
        {
          params: GroupIdParams,
          response: { 200: describedAs(GroupJson, 'The group and the locks it released.') },
        },
      ),
    },
    async (request) =>
      groupToJson(await service.releaseGroup({ caller: callerOf(request), id: request.params.groupId })),
  );

  app.get(
    `${API}/queue/:service`,
    {
      schema: apiRoute(
        { method: 'GET', ...api },
        {
          operationId: 'getQueue',
          summary: "Show a service's queue",
          description:
            'The holder of the service (`null` when free) and the requests waiting for it, in the ' +
            'order they will be granted.',
          tags: ['queue'],
        },
        { params: ServiceParams, response: { 200: describedAs(QueueJson, 'The holder and the waiters.') } },
      ),
    },
    async (request) =>
      queueToJson(await service.queue({ caller: callerOf(request), service: request.params.service })),
  );

  app.post(
    `${API}/lock/:id/renew`,
    {
      schema: apiRoute(
        { method: 'POST', ...api },
        {
          operationId: 'renewLock',
          summary: 'Renew a lease',
          description:
            "Extends the lease of a held lock: `ttlSeconds` from now, or the lock's own TTL when the " +
            'body (optional) does not say. A lock that expired, was released or never existed ' +
            'answers `404 LOCK_NOT_HELD`: renewal never brings back a lock someone else may hold.',
          tags: ['locks'],
          errors: [ErrorCode.LOCK_NOT_HELD],
          bodyOptional: true,
        },
        {
          params: LockIdParams,
          body: RenewLockBody,
          response: { 200: describedAs(LockJson, 'The lock with its new `expiresAt`.') },
        },
      ),
      // The body is optional: no body at all validates as an empty object.
      preValidation: async (request) => {
        request.body ??= {};
      },
    },
    async (request) =>
      lockToJson(
        await service.renew({
          caller: callerOf(request),
          id: request.params.id,
          ttlSeconds: request.body?.ttlSeconds,
        }),
      ),
  );

  app.patch(
    `${API}/lock/:id`,
    {
      schema: apiRoute(
        { method: 'PATCH', ...api },
        {
          operationId: 'updateLock',
          summary: "Change a lock's note",
          description:
            'The holder (or an admin) changes the note of a held lock; `null` or `""` clears it. The ' +
            'history records `noted`. Its lease, token and link stay as they are. A lock that is ' +
            'not held answers `404 LOCK_NOT_HELD`; another token’s, `403 PERMISSION_DENIED`.',
          tags: ['locks'],
          errors: [ErrorCode.LOCK_NOT_HELD],
        },
        {
          params: LockIdParams,
          body: UpdateLockBody,
          response: { 200: describedAs(LockJson, 'The lock with its new note.') },
        },
      ),
    },
    async (request) =>
      lockToJson(
        await service.setNote({ caller: callerOf(request), id: request.params.id, note: request.body.note }),
      ),
  );

  app.get(
    `${API}/lock/:id`,
    {
      schema: apiRoute(
        { method: 'GET', ...api },
        {
          operationId: 'getLock',
          summary: 'Get a lock',
          description: 'The lock with this `id`, while it is held (an expired lock is not).',
          tags: ['locks'],
          errors: [ErrorCode.LOCK_NOT_FOUND],
        },
        { params: LockIdParams, response: { 200: describedAs(LockJson, 'The lock.') } },
      ),
    },
    async (request) => lockToJson(await service.get({ caller: callerOf(request), id: request.params.id })),
  );

  const releaseHandler = async (request: FastifyRequest<{ Params: { id: string } }>) => {
    await service.release({ caller: callerOf(request), id: request.params.id });
    return { success: true, message: 'Lock released successfully' };
  };
  const release = (
    method: 'GET' | 'POST' | 'DELETE',
    operationId: string,
    summary: string,
    more: string,
  ) => ({
    schema: apiRoute(
      { method, ...api, envelope: true },
      {
        operationId,
        summary,
        description: `${RELEASE_DESCRIPTION} ${more}`,
        tags: ['locks'],
        // The GET form changes something too: refused to other sites' pages like the others.
        errors: [ErrorCode.LOCK_NOT_FOUND, 'CROSS_SITE_REQUEST'],
      },
      { params: LockIdParams, response: { 200: released } },
    ),
    config: { successEnvelope: true },
  });
  // GET has a side effect only because the guide's scripts use it; prefer DELETE or POST.
  app.get(
    `${API}/unlock/:id`,
    release(
      'GET',
      'unlockWithGet',
      "Release a lock (GET form, for the Locks Guide's scripts)",
      "A GET with a side effect: it exists because the Locks Guide's scripts use it. Prefer " +
        '`DELETE /api/v1alpha1/lock/{id}`; caches, prefetchers and link checkers may follow a GET.',
    ),
    releaseHandler,
  );
  app.post(
    `${API}/unlock/:id`,
    release(
      'POST',
      'unlockWithPost',
      'Release a lock (POST form)',
      'Same as `DELETE /api/v1alpha1/lock/{id}`, which is preferred. Sends no body.',
    ),
    releaseHandler,
  );
  app.delete(
    `${API}/lock/:id`,
    release('DELETE', 'releaseLock', 'Release a lock', 'The preferred way to release.'),
    releaseHandler,
  );

  app.get(
    `${API}/locks/list`,
    {
      schema: apiRoute(
        { method: 'GET', ...api },
        {
          operationId: 'listLocks',
          summary: 'List held locks',
          description:
            'The locks held now, oldest first (by acquisition time, then `id`), a page at a time. ' +
            'A page past the end answers `locks: []` with the true `total`.',
          tags: ['locks'],
        },
        {
          querystring: ListLocksQuery,
          response: { 200: describedAs(LockListJson, 'A page of locks and the total count.') },
        },
      ),
    },
    async (request) => {
      const { page, per_page: perPage, service: serviceName, who } = request.query;
      const result = await service.list({
        caller: callerOf(request),
        page: page === undefined ? undefined : Number(page),
        perPage: perPage === undefined ? undefined : Number(perPage),
        service: serviceName,
        who,
      });
      return { ...result, locks: result.locks.map(lockToJson) };
    },
  );

  app.post(
    `${API}/lock/:id/force-release`,
    {
      schema: apiRoute(
        { method: 'POST', ...api },
        {
          operationId: 'forceReleaseLock',
          summary: 'Force-release a lock',
          description:
            'Releases a lock on behalf of someone other than its holder (an operator clearing a lock ' +
            'left by a dead job; needs `lock:admin`). The optional `reason` is recorded in the history.',
          tags: ['locks'],
          errors: [ErrorCode.LOCK_NOT_FOUND],
          bodyOptional: true,
        },
        {
          params: LockIdParams,
          body: ForceReleaseBody,
          response: { 200: describedAs(ForceReleasedJson, 'Released; `lock` is the lock as it was.') },
        },
      ),
      preValidation: async (request) => {
        request.body ??= {};
      },
    },
    async (request) => {
      const lock = await service.forceRelease({
        caller: callerOf(request),
        id: request.params.id,
        reason: request.body?.reason,
      });
      return { success: true, message: 'Lock force-released', lock: lockToJson(lock) };
    },
  );

  app.post(
    `${API}/lock/:id/steal`,
    {
      schema: apiRoute(
        { method: 'POST', ...api },
        {
          operationId: 'stealLock',
          summary: 'Steal a lock',
          description:
            'Ends a held lock whoever holds it and gives its service to `who` in the same step, ahead ' +
            'of every waiter (needs `lock:admin`): the new lock has the old one’s mode and limit, a new ' +
            'fencing token, `ttlSeconds` (default: the server’s) and `note`. The history records ' +
            '`stolen` with the `reason` (required) and `stolenBy`; the old holder’s renewal answers ' +
            '`404 LOCK_NOT_HELD`, which stops its `tracker run` and its GitHub Action.',
          tags: ['locks'],
          errors: [ErrorCode.LOCK_NOT_FOUND],
        },
        {
          params: LockIdParams,
          body: StealLockBody,
          response: {
            201: describedAs(StolenJson, 'Taken: `lock` is the caller’s, `stolen` the ended one.'),
          },
        },
      ),
    },
    async (request, reply) => {
      const { who, reason, ttlSeconds, note } = request.body;
      const { stolen, lock } = await service.steal({
        caller: callerOf(request),
        id: request.params.id,
        who,
        reason,
        ttlSeconds,
        note,
      });
      return reply.status(201).send({ lock: lockToJson(lock), stolen: lockToJson(stolen) });
    },
  );

  app.get(
    `${API}/history`,
    {
      schema: apiRoute(
        { method: 'GET', ...api },
        {
          operationId: 'listHistory',
          summary: 'Lock history',
          description:
            'Past lock events, newest first, filtered by `service`, `who` and a time range; page ' +
            "with `before` (the previous page's `nextBefore`).",
          tags: ['history'],
        },
        {
          querystring: HistoryQuery,
          response: { 200: describedAs(HistoryJson, 'A page of events, newest first.') },
        },
      ),
    },
    async (request) => {
      const { service: serviceName, who, since, until, limit, before } = request.query;
      const page = await service.history({
        caller: callerOf(request),
        service: serviceName,
        who,
        since: since === undefined ? undefined : timestampArgument('since', since),
        until: until === undefined ? undefined : timestampArgument('until', until),
        limit: limit === undefined ? undefined : Number(limit),
        before: before === undefined ? undefined : Number(before),
      });
      return { events: page.events.map(eventToJson), nextBefore: page.nextBefore };
    },
  );
}

/**
 * An abort signal for a waiting request whose client hangs up: it leaves the queue at once.
 * 'close' also fires after a normal response; only a close before the response ended is one.
 */
function hangUp(reply: FastifyReply): AbortSignal {
  const gone = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableEnded) gone.abort();
  });
  return gone.signal;
}

/**
 * A claim of a request body (POST /lock's, or an item of POST /locks' `locks`, whose fields
 * are named with `prefix`), with the rules that span fields: exactly one of `service` and
 * `label`; `limit` neither with `mode: "shared"` nor with `label`; `quantity` with `label`.
 */
function claimOptions(claim: ClaimBody, prefix: string): ClaimOptions {
  const { service, label, mode, limit, quantity } = claim;
  if (service === undefined && label === undefined) {
    throw invalidArgument(
      `${prefix}service`,
      `${prefix}service is required (or ${prefix}label, for any resource carrying it)`,
    );
  }
  if (service !== undefined && label !== undefined) {
    throw invalidArgument(`${prefix}label`, `give ${prefix}service or ${prefix}label, not both`);
  }
  if (limit !== undefined && mode === 'shared') {
    throw invalidArgument(
      `${prefix}limit`,
      `${prefix}limit applies to exclusive locks: shared holders have no limit among themselves`,
    );
  }
  if (limit !== undefined && label !== undefined) {
    throw invalidArgument(
      `${prefix}limit`,
      `${prefix}limit does not go with ${prefix}label: a resource's capacity is its limit`,
    );
  }
  if (quantity !== undefined && label === undefined) {
    throw invalidArgument(`${prefix}quantity`, `${prefix}quantity goes with ${prefix}label only`);
  }
  return { service, label, mode, limit, quantity };
}

/** A header's value; a repeated one (which Node joins for most names) counts as given once. */
function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
