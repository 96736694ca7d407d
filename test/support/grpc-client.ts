import { join } from 'node:path';
import {
  type CallOptions,
  type ClientUnaryCall,
  credentials,
  Metadata,
  makeClientConstructor,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync, type ServiceDefinition } from '@grpc/proto-loader';
import { ROOT } from './server-process.js';

/** A client made by makeClientConstructor: its methods are looked up by name. */
export type LockServiceClient = InstanceType<ReturnType<typeof makeClientConstructor>>;

export const SERVICE = 'tracker.lock.v1alpha1.LockService';
export const PROTO_FILE = join(ROOT, 'proto/tracker/lock/v1alpha1/lock.proto');

const LockServiceClient = makeClientConstructor(
  loadSync(PROTO_FILE, { keepCase: false, defaults: true, longs: String })[SERVICE] as ServiceDefinition,
  'LockService',
);

/**
 * A grpc-js client for the LockService, loaded from the .proto, over plaintext.
 * `ownConnection` gives it a subchannel pool of its own, so that it does not share a TCP
 * connection with other clients of the same address.
 */
export function lockServiceClient(
  address: string,
  options: { ownConnection?: boolean } = {},
): LockServiceClient {
  return new LockServiceClient(
    address,
    credentials.createInsecure(),
    options.ownConnection ? { 'grpc.use_local_subchannel_pool': 1 } : {},
  );
}

type Unary = (
  request: object,
  metadata: Metadata,
  options: CallOptions,
  callback: (error: ServiceError | null, response?: unknown) => void,
) => ClientUnaryCall;

/** Calls a unary method by name with a deadline; rejects with the grpc-js ServiceError. */
export function unary<T>(
  client: LockServiceClient,
  method: string,
  request: object,
  timeoutMs = 10_000,
): Promise<T> {
  const call = client[method] as Unary;
  return new Promise((resolve, reject) => {
    call.call(client, request, new Metadata(), { deadline: Date.now() + timeoutMs }, (error, response) => {
      if (error) reject(error);
      else resolve(response as T);
    });
  });
}

/** A Lock message as grpc-js decodes it (defaults filled in, int64 as a string). */
export interface LockMessage {
  id: string;
  service: string;
  who: string;
  createdAt: string;
  ttlSeconds: number;
  expiresAt: string;
  fencingToken: string;
  waiters: number;
}

/** The same lock as REST shows it: proto3's 0 and '' become null, the token a number. */
export function lockMessageAsRest(lock: LockMessage) {
  return {
    id: lock.id,
    service: lock.service,
    who: lock.who,
    createdAt: lock.createdAt,
    ttlSeconds: lock.ttlSeconds === 0 ? null : lock.ttlSeconds,
    expiresAt: lock.expiresAt === '' ? null : lock.expiresAt,
    fencingToken: Number(lock.fencingToken),
    waiters: lock.waiters,
  };
}
