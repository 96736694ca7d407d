import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  type CallOptions,
  type ChannelCredentials,
  type ClientReadableStream,
  type ClientUnaryCall,
  credentials,
  Metadata,
  makeClientConstructor,
  type ServiceError,
  type StatusObject,
  status,
} from '@grpc/grpc-js';
import { loadSync, type ServiceDefinition } from '@grpc/proto-loader';
import { ROOT } from './server-process.js';
import { within } from './wait-for.js';

/** A client made by makeClientConstructor: its methods are looked up by name. */
export type LockServiceClient = InstanceType<ReturnType<typeof makeClientConstructor>>;

export const SERVICE = 'tracker.lock.v1alpha1.LockService';
export const PROTO_FILE = join(ROOT, 'proto/tracker/lock/v1alpha1/lock.proto');

const LockServiceClient = makeClientConstructor(
  loadSync(PROTO_FILE, { keepCase: false, defaults: true, longs: String })[SERVICE] as ServiceDefinition,
  'LockService',
);

export const HEALTH_SERVICE = 'grpc.health.v1.Health';
export const HEALTH_PROTO_FILE = join(ROOT, 'proto/grpc/health/v1/health.proto');

const HealthClient = makeClientConstructor(
  loadSync(HEALTH_PROTO_FILE, { keepCase: false, defaults: true, enums: String })[
    HEALTH_SERVICE
  ] as ServiceDefinition,
  'Health',
);

/** A grpc-js client for grpc.health.v1.Health (statuses as enum names), over plaintext. */
export function healthClient(address: string): LockServiceClient {
  return new HealthClient(address, credentials.createInsecure());
}

/**
 * A grpc-js client for the LockService, loaded from the .proto, over plaintext.
 * `ownConnection` gives it a subchannel pool of its own, so that it does not share a TCP
 * connection with other clients of the same address.
 */
export function lockServiceClient(
  address: string,
  options: { ownConnection?: boolean; credentials?: ChannelCredentials } = {},
): LockServiceClient {
  return new LockServiceClient(
    address,
    options.credentials ?? credentials.createInsecure(),
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
  owner: string;
  limit: number;
  mode: string;
  groupId: string;
  /** null when its service is not a registered resource. */
  resource: { name: string; labels: string[]; properties: Record<string, string> } | null;
  /** '' when none. */
  note: string;
  link: string;
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
    owner: lock.owner === '' ? null : lock.owner,
    limit: lock.limit,
    mode: lock.mode,
    groupId: lock.groupId === '' ? null : lock.groupId,
    note: lock.note === '' ? null : lock.note,
    link: lock.link === '' ? null : lock.link,
    resource: lock.resource,
  };
}

/**
 * The same lock as grpcurl and buf print it (proto3 JSON): the zero values (no TTL, no
 * expiry, no waiters, no owner, no group, no resource, an empty list of labels or
 * properties) left out, int64 as a string.
 */
export function lockMessageAsJson(lock: LockMessage): Record<string, unknown> {
  const { ttlSeconds, expiresAt, waiters, owner, limit, groupId, resource, note, link, ...rest } = lock;
  return {
    ...rest,
    ...(note === '' ? {} : { note }),
    ...(link === '' ? {} : { link }),
    ...(ttlSeconds === 0 ? {} : { ttlSeconds }),
    ...(expiresAt === '' ? {} : { expiresAt }),
    ...(waiters === 0 ? {} : { waiters }),
    ...(owner === '' ? {} : { owner }),
    ...(limit === 0 ? {} : { limit }),
    ...(groupId === '' ? {} : { groupId }),
    ...(resource === null
      ? {}
      : {
          resource: {
            name: resource.name,
            ...(resource.labels.length === 0 ? {} : { labels: resource.labels }),
            ...(Object.keys(resource.properties).length === 0 ? {} : { properties: resource.properties }),
          },
        }),
  };
}

/** A LockEvent message as grpc-js decodes it. */
export interface LockEventMessage {
  id: string;
  type: string;
  at: string;
  service: string;
  who: string;
  lock: LockMessage;
  heldSeconds: number;
  reason: string;
  groupId: string;
  label: string;
}

/** A WatchLocksResponse: exactly one of the two is present. */
export interface WatchLocksMessage {
  snapshot?: { eventId: string; locks: LockMessage[] };
  event?: LockEventMessage;
}

/** The messages of a server-streaming call as they arrive, and how it ended. */
export interface StreamRecorder<T> {
  readonly call: ClientReadableStream<T>;
  /** Every message received so far, in order. */
  readonly messages: T[];
  /** The final status (OK when the server ended the stream); null while it runs. */
  readonly status: StatusObject | null;
  /** Resolves with the final status once the call is over. */
  readonly ended: Promise<StatusObject>;
  /**
   * Resolves with the messages once `done(messages)` holds; rejects, listing what came,
   * when the call ends first or `timeoutMs` passes.
   */
  until(done: (messages: readonly T[]) => boolean, timeoutMs?: number): Promise<T[]>;
  /** Ends the call from this side (the recorder's status then says CANCELLED). */
  cancel(): void;
}

type ServerStreaming = (
  request: object,
  metadata: Metadata,
  options: CallOptions,
) => ClientReadableStream<unknown>;

/**
 * Starts a server-streaming method by name and records what it sends. The call has a
 * deadline (`deadlineMs`, default 60 s) so that a stream nobody ends cannot outlive a test;
 * `metadata` goes with it (an `authorization` token).
 */
export function serverStream<T>(
  client: LockServiceClient,
  method: string,
  request: object,
  deadlineMs = 60_000,
  metadata = new Metadata(),
): StreamRecorder<T> {
  const start = client[method] as ServerStreaming;
  const call = start.call(client, request, metadata, {
    deadline: Date.now() + deadlineMs,
  }) as ClientReadableStream<T>;
  const messages: T[] = [];
  const listeners = new Set<() => void>();
  let final: StatusObject | null = null;
  const notify = () => {
    for (const listener of [...listeners]) listener();
  };
  const ended = new Promise<StatusObject>((resolve) => {
    call.on('status', (status: StatusObject) => {
      final = status;
      resolve(status);
      notify();
    });
  });
  // A non-OK status is also emitted as an error; the status above reports it.
  call.on('error', () => {});
  call.on('data', (message: T) => {
    messages.push(message);
    notify();
  });
  return {
    call,
    messages,
    get status() {
      return final;
    },
    ended,
    until(done, timeoutMs = 10_000) {
      let check = () => {};
      const arrived = new Promise<T[]>((resolve, reject) => {
        check = () => {
          if (done(messages)) {
            resolve([...messages]);
          } else if (final !== null) {
            reject(
              new Error(
                `${method} ended (${final.code} ${final.details}) before the expected messages; got ${JSON.stringify(messages)}`,
              ),
            );
          }
        };
        listeners.add(check);
        check();
      });
      return within(arrived, { what: `the expected ${method} messages`, timeoutMs })
        .catch((error: Error) => {
          if (final !== null) throw error;
          throw new Error(`${error.message}; got ${JSON.stringify(messages)}`);
        })
        .finally(() => listeners.delete(check));
    },
    cancel() {
      call.cancel();
    },
  };
}

/**
 * A unary call with these metadata entries (e.g. `authorization`); resolves with the response
 * or the error, never rejects, within 10 s.
 */
export function unaryOutcome(
  client: LockServiceClient,
  method: string,
  request: object,
  entries: Record<string, string> = {},
): Promise<{ response?: Record<string, unknown>; error?: ServiceError }> {
  const metadata = new Metadata();
  for (const [key, value] of Object.entries(entries)) metadata.set(key, value);
  const fn = client[method] as (
    request: object,
    metadata: Metadata,
    options: object,
    callback: (error: ServiceError | null, response?: Record<string, unknown>) => void,
  ) => void;
  return new Promise((resolve) => {
    fn.call(client, request, metadata, { deadline: Date.now() + 10_000 }, (error, response) =>
      resolve(error ? { error } : { response: response ?? {} }),
    );
  });
}

/** Asserts that `promise` fails with `code` and the given `tracker-*` trailers (and no others). */
export async function rejectsWith(
  promise: Promise<unknown>,
  code: status,
  trailers: Record<string, string>,
): Promise<ServiceError> {
  let caught: ServiceError | undefined;
  await assert.rejects(promise, (error: ServiceError) => {
    caught = error;
    return true;
  });
  assert.ok(caught);
  assert.equal(caught.code, code, `${status[caught.code]}: ${caught.details}`);
  const tracker = Object.fromEntries(
    Object.entries(caught.metadata.getMap()).filter(([key]) => key.startsWith('tracker-')),
  );
  assert.deepEqual(tracker, trailers, caught.details);
  for (const [key, value] of Object.entries(trailers)) assert.deepEqual(caught.metadata.get(key), [value]);
  return caught;
}
