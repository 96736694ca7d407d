/** What the fault run's client processes are told, and what they report (JSON lines). */

import type { LockMode } from '../../../src/core/lock.js';
import type { LockOutput, SeenLock, SeenQueue } from '../linearizability/lock-model.js';

/** What the clients may ask for besides plain locks on `services`. */
export interface ClientPlan {
  /** Plain locks on `services` (every client; gRPC's only kind). */
  readonly plain: boolean;
  /** Shared locks on `services` (REST clients). */
  readonly shared: boolean;
  /** A semaphore: a service taken with `limit` (REST clients). */
  readonly semaphore: { readonly service: string; readonly limit: number } | null;
  /** Registered resources carrying `label`, taken by label (REST clients). */
  readonly label: { readonly label: string; readonly resources: readonly string[] } | null;
  /** Groups (REST clients): two services in either order, two of the label, the semaphore with a shared service. */
  readonly groups: boolean;
  /** Priorities other than 0 on waits. */
  readonly priorities: boolean;
}

export interface ClientConfig {
  readonly id: string;
  readonly transport: 'rest' | 'grpc';
  readonly targets: ReadonlyArray<{ readonly baseUrl: string; readonly grpcAddress: string }>;
  /** Plain services (mutexes). */
  readonly services: readonly string[];
  readonly plan: ClientPlan;
  readonly registerUrl: string;
  readonly seconds: number;
  readonly maxOps: number;
  /** Leases it takes and renews for, in whole seconds: [shortest, longest]. */
  readonly leaseSeconds: readonly [number, number];
}

/** A lock as an answer shows it (expiresAt: epoch ms, whole seconds; null: no TTL). */
export type SeenLockJson = SeenLock;

export type Outcome =
  | 'unknown'
  | {
      readonly ok: true;
      readonly lock?: SeenLockJson;
      /** A group's locks, and its id. */
      readonly locks?: readonly SeenLockJson[];
      readonly group?: string;
      readonly queue?: SeenQueue;
    }
  | Extract<LockOutput, { readonly ok: false }>;

/** One claim of an acquire, as sent. */
export interface ClaimCall {
  readonly service?: string;
  readonly label?: string;
  readonly mode?: LockMode;
  readonly limit?: number;
  readonly quantity?: number;
}

export type Call =
  | {
      readonly kind: 'acquire';
      /** Exactly one of service and label. */
      readonly service?: string;
      readonly label?: string;
      readonly mode?: LockMode;
      readonly limit?: number;
      readonly priority?: number;
      readonly who: string;
      readonly ttlSeconds: number;
      readonly waitSeconds: number;
      readonly key: string;
    }
  | {
      readonly kind: 'acquire-group';
      readonly claims: readonly ClaimCall[];
      readonly priority?: number;
      readonly who: string;
      readonly ttlSeconds: number;
      readonly waitSeconds: number;
      readonly key: string;
    }
  | { readonly kind: 'release' | 'force-release' | 'get'; readonly id: string }
  | { readonly kind: 'renew'; readonly id: string; readonly ttlSeconds: number }
  | { readonly kind: 'release-group'; readonly group: string }
  | { readonly kind: 'renew-group'; readonly group: string; readonly ttlSeconds: number }
  | { readonly kind: 'queue'; readonly service: string };

export interface Record {
  readonly client: string;
  readonly call: Call;
  /** Epoch ms on the run's clock (the machine's). */
  readonly started: number;
  /** null: no answer (the outcome is unknown). */
  readonly ended: number | null;
  readonly outcome: Outcome;
  /** Set by the checker's preparation: the call was sent again after a lost answer. */
  readonly retried?: boolean;
  /**
   * Set by the checker's preparation, for a call whose answer was lost: a moment by which it
   * surely took effect, if it did (a retry with its key answered that its lock had ended).
   */
  readonly settledBy?: number;
}

export type ClientLine =
  | { readonly type: 'op'; readonly record: Record }
  | { readonly type: 'holding'; readonly service: string; readonly id: string }
  /** It has read the register under its lock and is about to write: where a pause does harm. */
  | { readonly type: 'working' }
  | { readonly type: 'free' }
  | { readonly type: 'done' };
