import { fileURLToPath } from 'node:url';
import {
  Metadata,
  Server,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  setLogger,
  status,
} from '@grpc/grpc-js';
import { loadSync, type ServiceDefinition } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { clientAddress, type ProxyTrust } from '../auth/client-address.js';
import { subjectOfCertificate } from '../auth/client-certificate.js';
import type { Gate } from '../auth/gate.js';
import { type Caller, ownerName } from '../core/auth.js';
import type { FeedMessage } from '../core/event-feed.js';
import type { Lock } from '../core/lock.js';
import { type LockService, timestampArgument } from '../core/lock-service.js';
import type { Logger } from '../core/logger.js';
import type { WatcherRegistry, WatcherSlot } from '../core/watchers.js';
import type { Metrics } from '../metrics.js';
import { toGrpcError } from './error-mapping.js';
import type { LockServiceHandlers } from './generated/tracker/lock/v1alpha1/LockService.js';
import type { WatchLocksRequest__Output as WatchLocksRequest } from './generated/tracker/lock/v1alpha1/WatchLocksRequest.js';
import { createHealthService } from './health.js';
import {
  claimOptions,
  eventMessage,
  groupMessage,
  lockMessage,
  queueMessage,
  resourceMessage,
  watchMessage,
} from './messages.js';
import { reflectionDefinition } from './reflection-descriptors.js';

/** The .proto is the single source of the wire types; dist/ carries a copy at the same depth. */
export const PROTO_FILE = fileURLToPath(
  new URL('../../proto/tracker/lock/v1alpha1/lock.proto', import.meta.url),
);
/** The standard health checking protocol (grpc.health.v1), shipped next to ours. */
export const HEALTH_PROTO_FILE = fileURLToPath(
  new URL('../../proto/grpc/health/v1/health.proto', import.meta.url),
);
export const SERVICE_NAME = 'tracker.lock.v1alpha1.LockService';
const HEALTH_SERVICE_NAME = 'grpc.health.v1.Health';
/** Largest accepted request message, as REST's body limit. */
const MAX_MESSAGE_BYTES = 64 * 1024;
const LOAD_OPTIONS = { longs: String, enums: String, defaults: true } as const;

export interface GrpcServerDeps {
  readonly service: LockService;
  readonly metrics: Metrics;
  /** Resolves when the store answers; backs the health service. */
  readonly ready: () => Promise<void>;
  readonly logger: Logger;
  /** Authentication and rate limit of LockService calls. */
  readonly gate: Gate;
  /** Open watch streams and what they have waiting (shared with REST). */
  readonly watchers: WatcherRegistry;
  /** A connection with no call for this long is closed (GOAWAY). */
  readonly idleTimeoutMs: number;
  /**
   * Which hops are proxies trusted to name the client in `x-forwarded-for` metadata
   * (--trust-proxy), with the same rule as REST; undefined: the client is the peer.
   */
  readonly trustProxy?: ProxyTrust | undefined;
}

/** The server, and what the process tells it when it starts to stop. */
export interface GrpcServer {
  readonly server: Server;
  /** Health turns NOT_SERVING and watch streams end, before the server shuts down. */
  stopping(): void;
}

/**
 * About how many bytes a watch message takes on the wire: its strings and a few bytes per
 * field. Only the slow-watcher bookkeeping uses it (encoding each message twice to measure
 * it would cost more than the rest of the stream).
 */
function approximateBytes(message: FeedMessage): number {
  // A resource's labels and properties may be most of a lock's bytes (up to 64 × 1 KiB).
  const textBytes = (texts: Iterable<string>) => {
    let sum = 0;
    for (const text of texts) sum += 2 + text.length * 3;
    return sum;
  };
  const resourceBytes = ({ resource }: Lock) =>
    resource === null
      ? 0
      : textBytes([resource.name, ...resource.labels, ...Object.entries(resource.properties).flat()]);
  const lockBytes = (lock: Lock) =>
    80 + lock.id.length * 2 + lock.service.length * 3 + lock.who.length * 3 + resourceBytes(lock);
  if (message.kind === 'snapshot') return message.locks.reduce((sum, lock) => sum + lockBytes(lock), 16);
  const { event } = message;
  return (
    112 +
    event.lockId.length +
    (event.groupId?.length ?? 0) * 2 +
    event.service.length * 3 +
    event.who.length * 3 +
    (event.reason?.length ?? 0) * 3 +
    (event.label?.length ?? 0) * 3
  );
}

/** An RFC 3339 bound of GetHistory; empty: none. */
function timestampField(field: 'since' | 'until', value: string): Date | undefined {
  return value === '' ? undefined : timestampArgument(field, value);
}

/** Proto3 cannot tell an absent number from 0: 0 means "not given". */
const given = (value: number): number | undefined => (value === 0 ? undefined : value);

/**
 * How long an acquire may wait: until the call is cancelled (the request then leaves the
 * queue at once) or its deadline passes.
 */
function waitOf(call: ServerUnaryCall<unknown, unknown>): { signal: AbortSignal; deadline: number } {
  const gone = new AbortController();
  call.once('cancelled', () => gone.abort());
  return { signal: gone.signal, deadline: deadlineOf(call) };
}

/** An acquire answered from its request_id's earlier grant says so in its response metadata. */
function sendReplayed(call: ServerUnaryCall<unknown, unknown>): void {
  const metadata = new Metadata();
  metadata.set('idempotent-replayed', 'true');
  call.sendMetadata(metadata);
}

/**
 * The gRPC adapter, mirroring the REST routes, with server reflection on so that grpcurl
 * and buf curl work with no .proto at hand.
 */
export function buildGrpcServer({
  service,
  metrics,
  ready,
  logger,
  gate,
  watchers,
  idleTimeoutMs,
  trustProxy,
}: GrpcServerDeps): GrpcServer {
  // grpc-js writes its own diagnostics to stderr; send them to our log at debug level. Our
  // handlers and the listen path report what matters themselves.
  const grpcLog = (...args: unknown[]) => logger.debug({ grpc: args.map(String).join(' ') }, 'grpc-js');
  setLogger({ error: grpcLog, info: grpcLog, debug: grpcLog });
  const definition = loadSync([PROTO_FILE, HEALTH_PROTO_FILE], { ...LOAD_OPTIONS, keepCase: false });
  const lockService = definition[SERVICE_NAME] as ServiceDefinition;
  const healthService = definition[HEALTH_SERVICE_NAME] as ServiceDefinition;
  const health = createHealthService({ services: [SERVICE_NAME], ready });
  const watches = new Set<() => void>();

  // One wrapper for every unary method: call the core, map errors, log one line.
  const unary =
    <Req, Res>(
      method: string,
      handle: (request: Req, call: ServerUnaryCall<Req, Res>, caller: Caller) => Promise<Res>,
    ) =>
    (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      const started = performance.now();
      const address = addressOf(call);
      // The gate (token, rate limit) runs first; its refusal is answered like any error.
      Promise.resolve()
        .then(() => handle(call.request, call, admit(call, address)))
        .then(
          (response) => {
            finished(method, 'OK', started);
            callback(null, response);
          },
          (error: unknown) => {
            callback(failed(method, error, started, address, Date.now() >= deadlineOf(call)));
          },
        );
    };
  type AnyCall = ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>;
  /** The client's address: the peer, or behind trusted proxies the one they forwarded. */
  const addressOf = (call: AnyCall): string => {
    const forwarded = call.metadata.get('x-forwarded-for').filter((value) => typeof value === 'string');
    return clientAddress(
      peerAddress(call.getPeer()),
      forwarded.length > 0 ? forwarded.join(',') : undefined,
      trustProxy,
    );
  };
  /**
   * The caller of a call, from its `authorization` metadata (or, without one, its verified
   * client certificate: grpc-js shows only a certificate the TLS layer verified) and its
   * client address.
   */
  const admit = (call: AnyCall, address: string): Caller => {
    const [value] = call.metadata.get('authorization');
    const authorization = typeof value === 'string' ? value : undefined;
    return gate.admit({
      authorization,
      address,
      certificateSubject:
        authorization === undefined && gate.authenticates
          ? subjectOfCertificate(call.getAuthContext()?.sslPeerCertificate?.raw)
          : undefined,
    });
  };
  const finished = (method: string, code: string, started: number) => {
    const ms = performance.now() - started;
    metrics.grpc(method, code, ms / 1000);
    logger.info({ method, status: code, ms: Math.round(ms * 100) / 100 }, 'rpc');
  };
  /** A call that failed: its gRPC error, logged (a bug in full, a refusal in a line) and counted. */
  const failed = (
    method: string,
    error: unknown,
    started: number,
    address: string,
    deadlinePassed = false,
  ) => {
    const grpcError = toGrpcError(error, deadlinePassed);
    if (grpcError.code === status.INTERNAL) logger.error({ err: error, method }, 'rpc failed');
    if (isRefusal(grpcError.code) && !gate.alreadyLogged(error)) {
      logger.warn({ method, code: grpcError.details, ip: address }, 'rpc refused');
    }
    finished(method, status[grpcError.code ?? status.UNKNOWN], started);
    return grpcError;
  };

  /**
   * WatchLocks: like the SSE route, a snapshot (or a resume) and then every event, until
   * the client cancels or the server stops (the stream then ends OK; clients resume), or the
   * stream's token is revoked or narrowed (it then ends UNAUTHENTICATED or PERMISSION_DENIED).
   */
  const watchLocks = (call: ServerWritableStream<WatchLocksRequest, unknown>) => {
    const started = performance.now();
    const address = addressOf(call);
    const { service: name, lastEventId } = call.request;
    let stop: (() => void) | null = null;
    let slot: WatcherSlot | null = null;
    let over = false;
    const end = (code: string) => {
      if (over) return;
      over = true;
      watches.delete(endOk);
      stop?.();
      stop = null;
      slot?.close();
      if (!call.writableEnded) call.end();
      finished('WatchLocks', code, started);
    };
    const endOk = () => end('OK');
    const fail = (error: unknown) => {
      if (over) return;
      over = true;
      watches.delete(endOk);
      stop?.();
      stop = null;
      slot?.close();
      const grpcError = failed('WatchLocks', error, started, address);
      // grpc-js sends an error emitted on a server stream as the call's status, with its
      // metadata as trailers (destroy() would end the stream with no status at all).
      call.emit('error', Object.assign(new Error(grpcError.details), grpcError));
    };
    call.once('cancelled', () => end('CANCELLED'));
    watches.add(endOk);
    (async () => {
      const caller = admit(call, address);
      const mine = watchers.open(ownerName(caller) ?? `address:${address}`, (reason) => {
        logger.warn({ method: 'WatchLocks', code: reason.code }, reason.message);
        fail(reason);
      });
      slot = mine;
      const unsubscribe = await service.watch(
        {
          caller,
          service: name === '' ? undefined : name,
          lastEventId: lastEventId === '' ? undefined : lastEventId,
          lastEventIdField: 'last_event_id',
          drained: () => mine.drained(),
          onEnd: (reason) => {
            stop = null;
            fail(reason);
          },
        },
        (message) => {
          if (call.cancelled || call.writableEnded || !watches.has(endOk)) return;
          const bytes = approximateBytes(message);
          call.write(watchMessage(message), () => mine.sent(bytes));
          mine.queued(bytes);
        },
      );
      if (call.cancelled || !watches.has(endOk)) unsubscribe();
      else stop = unsubscribe;
    })().catch(fail);
  };

  const handlers: LockServiceHandlers = {
    CreateLock: unary('CreateLock', async (request, call, caller) => {
      const { quantity: _none, ...claim } = claimOptions(request);
      const { lock, replayed } = await service.acquire({
        caller,
        ...claim,
        who: request.who,
        ttlSeconds: given(request.ttlSeconds),
        waitSeconds: request.waitSeconds,
        priority: request.priority,
        note: request.note,
        link: request.link,
        ...waitOf(call),
        idempotencyKey: request.requestId === '' ? undefined : request.requestId,
      });
      if (replayed) sendReplayed(call);
      return lockMessage(lock);
    }),
    AcquireLocks: unary('AcquireLocks', async (request, call, caller) => {
      const { group, replayed } = await service.acquireGroup({
        caller,
        locks: request.locks.map(claimOptions),
        who: request.who,
        ttlSeconds: given(request.ttlSeconds),
        waitSeconds: request.waitSeconds,
        priority: request.priority,
        note: request.note,
        link: request.link,
        ...waitOf(call),
        idempotencyKey: request.requestId === '' ? undefined : request.requestId,
      });
      if (replayed) sendReplayed(call);
      return groupMessage(group);
    }),
    GetLockGroup: unary('GetLockGroup', async (request, _call, caller) =>
      groupMessage(await service.getGroup({ caller, id: request.id })),
    ),
    RenewLockGroup: unary('RenewLockGroup', async (request, _call, caller) =>
      groupMessage(
        await service.renewGroup({ caller, id: request.id, ttlSeconds: given(request.ttlSeconds) }),
      ),
    ),
    ReleaseLockGroup: unary('ReleaseLockGroup', async (request, _call, caller) =>
      groupMessage(await service.releaseGroup({ caller, id: request.id })),
    ),
    PutResource: unary('PutResource', async (request, _call, caller) => {
      const { resource, created } = await service.putResource({
        caller,
        name: request.name,
        labels: request.labels,
        properties: request.properties,
        capacity: request.capacity,
        description: request.description,
      });
      return { resource: resourceMessage(resource), created };
    }),
    GetResource: unary('GetResource', async (request, _call, caller) =>
      resourceMessage(await service.getResource({ caller, name: request.name })),
    ),
    ListResources: unary('ListResources', async (request, _call, caller) => {
      const resources = await service.listResources({
        caller,
        label: request.label === '' ? undefined : request.label,
      });
      return { resources: resources.map(resourceMessage) };
    }),
    DeleteResource: unary('DeleteResource', async (request, _call, caller) => {
      await service.deleteResource({ caller, name: request.name });
      return {};
    }),
    GetQueue: unary('GetQueue', async (request, _call, caller) =>
      queueMessage(await service.queue({ caller, service: request.service })),
    ),
    RenewLock: unary('RenewLock', async (request, _call, caller) =>
      lockMessage(await service.renew({ caller, id: request.id, ttlSeconds: given(request.ttlSeconds) })),
    ),
    UpdateLock: unary('UpdateLock', async (request, _call, caller) =>
      lockMessage(await service.setNote({ caller, id: request.id, note: request.note })),
    ),
    GetLock: unary('GetLock', async (request, _call, caller) =>
      lockMessage(await service.get({ caller, id: request.id })),
    ),
    UnLock: unary('UnLock', async (request, _call, caller) => {
      await service.release({ caller, id: request.id });
      return { success: true, message: 'Lock released successfully' };
    }),
    StealLock: unary('StealLock', async (request, _call, caller) => {
      const { lock, stolen } = await service.steal({
        caller,
        id: request.id,
        who: request.who,
        reason: request.reason,
        ttlSeconds: given(request.ttlSeconds),
        note: request.note,
      });
      return { lock: lockMessage(lock), stolen: lockMessage(stolen) };
    }),
    ForceReleaseLock: unary('ForceReleaseLock', async (request, _call, caller) => {
      const lock = await service.forceRelease({
        caller,
        id: request.id,
        reason: request.reason === '' ? undefined : request.reason,
      });
      return { success: true, message: 'Lock force-released', lock: lockMessage(lock) };
    }),
    GetHistory: unary('GetHistory', async (request, _call, caller) => {
      const before = Number(request.before);
      const page = await service.history({
        caller,
        service: request.service === '' ? undefined : request.service,
        who: request.who === '' ? undefined : request.who,
        since: timestampField('since', request.since),
        until: timestampField('until', request.until),
        limit: given(request.limit),
        before: before === 0 ? undefined : before,
      });
      return { events: page.events.map(eventMessage), nextBefore: String(page.nextBefore ?? 0) };
    }),
    WatchLocks: watchLocks,
    ListLocks: unary('ListLocks', async (request, _call, caller) => {
      // Proto3 cannot tell "absent" from zero or empty: those mean "default" and "any".
      const result = await service.list({
        caller,
        page: given(request.page),
        perPage: given(request.perPage),
        service: request.service === '' ? undefined : request.service,
        who: request.who === '' ? undefined : request.who,
      });
      return {
        locks: result.locks.map(lockMessage),
        total: result.total,
        page: result.page,
        perPage: result.perPage,
      };
    }),
  };

  // Requests are small: refuse anything larger than the REST body limit, as REST does.
  const server = new Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_connection_idle_ms': idleTimeoutMs,
  });
  server.addService(lockService, handlers);
  server.addService(healthService, health.handlers);
  // Reflection must describe the .proto as written (per_page, created_at), so that grpcurl
  // accepts the proto field names; the handlers use proto-loader's camelCase view instead.
  new ReflectionService(
    reflectionDefinition(loadSync([PROTO_FILE, HEALTH_PROTO_FILE], { ...LOAD_OPTIONS, keepCase: true })),
  ).addToServer(server);
  return {
    server,
    stopping() {
      health.stopping();
      for (const end of [...watches]) end();
    },
  };
}

/** Lets in-flight calls finish for up to `graceMs`, then cuts what is left. */
export function shutdownGrpc(server: Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Refusals worth a log line of their own: authentication, permission, limits. */
function isRefusal(code: status | undefined): boolean {
  return (
    code === status.UNAUTHENTICATED || code === status.PERMISSION_DENIED || code === status.RESOURCE_EXHAUSTED
  );
}

/** grpc-js peers look like `ipv4:127.0.0.1:5555` or `127.0.0.1:5555`: the address part. */
function peerAddress(peer: string): string {
  const bare = peer.replace(/^ipv[46]:/, '');
  const ipv6 = /^\[(.*)\]:\d+$/.exec(bare);
  if (ipv6?.[1]) return ipv6[1];
  return bare.replace(/:\d+$/, '');
}

/** The call's deadline in epoch ms; +Infinity when the client set none. */
function deadlineOf(call: ServerUnaryCall<unknown, unknown>): number {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : Number(deadline);
  return Number.isFinite(ms) && ms > 0 ? ms : Number.POSITIVE_INFINITY;
}
