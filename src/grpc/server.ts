import { fileURLToPath } from 'node:url';
import {
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type sendUnaryData,
  setLogger,
  status,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { loadSync, type ServiceDefinition } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import type { FastifyBaseLogger } from 'fastify';
import { formatTimestamp, type Lock } from '../core/lock.js';
import type { LockService } from '../core/lock-service.js';
import { toGrpcError } from './error-mapping.js';

/** The .proto is the single source of the wire types; dist/ carries a copy at the same depth. */
export const PROTO_FILE = fileURLToPath(
  new URL('../../proto/tracker/lock/v1alpha1/lock.proto', import.meta.url),
);
export const SERVICE_NAME = 'tracker.lock.v1alpha1.LockService';
const LOAD_OPTIONS = { longs: String, enums: String, defaults: true } as const;

/** Request shapes as proto-loader decodes them (camelCase, defaults filled in). */
interface CreateLockRequest {
  service: string;
  who: string;
  ttlSeconds: number;
  waitSeconds: number;
}
interface RenewLockRequest {
  id: string;
  ttlSeconds: number;
}
interface LockIdRequest {
  id: string;
}
interface ListLocksRequest {
  page: number;
  perPage: number;
  service: string;
  who: string;
}

export interface GrpcServerDeps {
  readonly service: LockService;
  readonly logger: FastifyBaseLogger;
}

/** The Lock message: proto3 has no null, so "no TTL" is 0 and "no expiry" is empty. */
function lockMessage(lock: Lock) {
  return {
    id: lock.id,
    service: lock.service,
    who: lock.who,
    createdAt: formatTimestamp(lock.createdAt),
    ttlSeconds: lock.ttlSeconds ?? 0,
    expiresAt: lock.expiresAt === null ? '' : formatTimestamp(lock.expiresAt),
    fencingToken: String(lock.fencingToken),
    waiters: lock.waiters,
  };
}

/** Proto3 cannot tell an absent number from 0: 0 means "not given". */
const given = (value: number): number | undefined => (value === 0 ? undefined : value);

/**
 * The gRPC adapter, mirroring the REST routes, with server reflection on so that grpcurl
 * and buf curl work with no .proto at hand.
 */
export function buildGrpcServer({ service, logger }: GrpcServerDeps): Server {
  // grpc-js writes its own diagnostics to stderr; send them to our log at debug level. Our
  // handlers and the listen path report what matters themselves.
  const grpcLog = (...args: unknown[]) => logger.debug({ grpc: args.map(String).join(' ') }, 'grpc-js');
  setLogger({ error: grpcLog, info: grpcLog, debug: grpcLog });
  const definition = loadSync(PROTO_FILE, { ...LOAD_OPTIONS, keepCase: false });
  const lockService = definition[SERVICE_NAME] as ServiceDefinition;

  // One wrapper for every unary method: call the core, map errors, log one line.
  const unary =
    <Req, Res>(method: string, handle: (request: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>) =>
    (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      const started = performance.now();
      handle(call.request, call).then(
        (response) => {
          logger.info({ method, status: 'OK', ms: elapsed(started) }, 'rpc');
          callback(null, response);
        },
        (error: unknown) => {
          const grpcError = toGrpcError(error, Date.now() >= deadlineOf(call));
          if (grpcError.code === status.INTERNAL) logger.error({ err: error, method }, 'rpc failed');
          logger.info(
            { method, status: status[grpcError.code ?? status.UNKNOWN], ms: elapsed(started) },
            'rpc',
          );
          callback(grpcError);
        },
      );
    };

  const handlers: UntypedServiceImplementation = {
    CreateLock: unary('CreateLock', async (request: CreateLockRequest, call) => {
      // A cancelled call (or one past its deadline) leaves the queue at once.
      const gone = new AbortController();
      call.once('cancelled', () => gone.abort());
      const lock = await service.acquire(request.service, request.who, given(request.ttlSeconds), {
        waitSeconds: request.waitSeconds,
        signal: gone.signal,
        deadline: deadlineOf(call),
      });
      return lockMessage(lock);
    }),
    GetQueue: unary('GetQueue', async (request: { service: string }) => {
      const queue = await service.queue(request.service);
      return {
        service: queue.service,
        holder: queue.holder === null ? null : lockMessage(queue.holder),
        waiters: queue.waiters.map((waiter) => ({
          who: waiter.who,
          since: formatTimestamp(waiter.since),
          position: waiter.position,
        })),
      };
    }),
    RenewLock: unary('RenewLock', async (request: RenewLockRequest) =>
      lockMessage(await service.renew(request.id, given(request.ttlSeconds))),
    ),
    GetLock: unary('GetLock', async (request: LockIdRequest) => lockMessage(await service.get(request.id))),
    UnLock: unary('UnLock', async (request: LockIdRequest) => {
      await service.release(request.id);
      return { success: true, message: 'Lock released successfully' };
    }),
    ListLocks: unary('ListLocks', async (request: ListLocksRequest) => {
      // Proto3 cannot tell "absent" from zero or empty: those mean "default" and "any".
      const result = await service.list({
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

  const server = new Server();
  server.addService(lockService, handlers);
  // Reflection must describe the .proto as written (per_page, created_at), so that grpcurl
  // accepts the proto field names; the handlers use proto-loader's camelCase view instead.
  new ReflectionService(loadSync(PROTO_FILE, { ...LOAD_OPTIONS, keepCase: true })).addToServer(server);
  return server;
}

/** Binds and starts; resolves with the bound port (useful with port 0). */
export function listenGrpc(server: Server, host: string, port: number): Promise<number> {
  const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  return new Promise((resolve, reject) => {
    server.bindAsync(address, ServerCredentials.createInsecure(), (error, boundPort) => {
      if (error) reject(error);
      else resolve(boundPort);
    });
  });
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

/** The call's deadline in epoch ms; +Infinity when the client set none. */
function deadlineOf(call: ServerUnaryCall<unknown, unknown>): number {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : Number(deadline);
  return Number.isFinite(ms) && ms > 0 ? ms : Number.POSITIVE_INFINITY;
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 100) / 100;
}
