/** What the fault run's client processes are told, and what they report (JSON lines). */

import type { LockOutput, SeenLock } from '../linearizability/lock-model.js';

export interface ClientConfig {
  readonly id: string;
  readonly transport: 'rest' | 'grpc';
  readonly targets: ReadonlyArray<{ readonly baseUrl: string; readonly grpcAddress: string }>;
  readonly services: readonly string[];
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
      readonly queue?: { holderId: string | null; waiters: string[] };
    }
  | Extract<LockOutput, { readonly ok: false }>;

export interface Record {
  readonly client: string;
  readonly call:
    | {
        readonly kind: 'acquire';
        readonly service: string;
        readonly who: string;
        readonly ttlSeconds: number;
        readonly waitSeconds: number;
        readonly key: string;
      }
    | { readonly kind: 'release' | 'force-release' | 'get'; readonly id: string }
    | { readonly kind: 'renew'; readonly id: string; readonly ttlSeconds: number }
    | { readonly kind: 'queue'; readonly service: string };
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
