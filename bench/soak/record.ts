// What the soak's clients observed, kept for the report and the safety checks. Times are
// performance.now() milliseconds of the soak process (one clock for every client).
import type { Answer } from './rest.js';

/** Request kinds, as rows of the operations table. */
export const OPS = [
  'acquire',
  'acquire-ttl',
  'acquire-wait',
  'acquire-expire',
  'renew',
  'release',
  'get',
  'queue',
  'history',
  'janitor',
] as const;
export type Op = (typeof OPS)[number];

export const OP_LABELS: Record<Op, string> = {
  acquire: 'acquire, no TTL, no wait',
  'acquire-ttl': 'acquire, ttlSeconds 1-5',
  'acquire-wait': 'acquire, waitSeconds 1-3',
  'acquire-expire': 'acquire, left to expire',
  renew: 'renew',
  release: 'release',
  get: 'GET lock',
  queue: 'GET queue',
  history: 'GET history',
  janitor: 'list ?who= (clean-up)',
};

export type Verdict = 'ok' | 'refused' | 'not-held' | 'error';

export interface OpStats {
  count: number;
  ok: number;
  refused: number;
  notHeld: number;
  errors: number;
  /** Round trips of the requests that got an HTTP answer, in ms. */
  latencies: number[];
}

/** A request that got no useful answer: 5xx, an unexpected status, a timeout, a connection error. */
export interface ErrorEvent {
  kind: string;
  op: Op;
  /** When the request was sent and when it ended: a wait may span a fault's start. */
  at: number;
  doneAt: number;
}

/**
 * A time during which a client certainly held `service` if the server is correct: from the
 * arrival of its 201 to the earlier of its release being sent and the lease's lower bound
 * (see soak.ts, "Double grants").
 */
export interface Interval {
  service: string;
  client: number;
  lockId: string;
  token: number;
  start: number;
  end: number;
  how: 'released' | 'expired-on-purpose' | 'gone' | 'lease-ran-out';
}

/** One acquire request, by its unique `who`. */
export interface Attempt {
  who: string;
  service: string;
  op: Op;
  client: number;
  /** granted, refused LOCK_HELD, refused WAIT_TIMEOUT, or error <kind>. */
  outcome: string;
  sentAt: number;
  doneAt: number;
  lockId?: string;
  token?: number;
}

/**
 * The server said a lock the client held was gone (renew 404 LOCK_NOT_HELD, GET or first
 * release attempt 404): counted as lost when the request was sent in time (see IN_TIME_MS).
 */
export interface GoneObservation {
  lockId: string;
  service: string;
  client: number;
  via: 'renew' | 'release' | 'get';
  sentAt: number;
  doneAt: number;
  /** The client's lower bound of the lease end (Infinity: no TTL). */
  leaseBound: number;
  ttl: number | null;
  inTime: boolean;
}

/**
 * A held lock whose lease bound passed while its renewals kept failing: a renewal was sent
 * before the bound and none was confirmed by then.
 */
export interface RanOut {
  lockId: string;
  service: string;
  client: number;
  /** When the 201 arrived, and when the bound passed. */
  since: number;
  leaseBound: number;
  lastError: string;
}

export class Recorder {
  readonly ops = new Map<Op, OpStats>(
    OPS.map((op) => [op, { count: 0, ok: 0, refused: 0, notHeld: 0, errors: 0, latencies: [] }]),
  );
  readonly errors: ErrorEvent[] = [];
  readonly refusedByCode = new Map<string, number>();
  readonly intervals: Interval[] = [];
  readonly attempts = new Map<string, Attempt>();
  /** Lock ids the clients were granted (201), with their token. */
  readonly granted = new Map<string, { token: number; who: string; service: string }>();
  readonly gone: GoneObservation[] = [];
  readonly ranOut: RanOut[] = [];
  /** Locks acquired and left to expire on purpose. */
  deliberateExpiries = 0;
  /** Latest lease bound of those, to wait for them at the end. */
  lastDeliberateEnd = 0;
  /** 404s that were expected: a renewal or release sent too close to (or after) the lease bound. */
  lateNotHeld = 0;
  /** A release retried after an unclear first attempt answered 404 (the first one may have worked). */
  retriedReleaseNotFound = 0;
  /** Releases that never got an answer after every retry (left to the clean-up). */
  releasesGivenUp = 0;
  /** A 200 (renew, GET) describing a lock other than the one asked for, or with another token. */
  mismatches: string[] = [];

  /** Counts one answer for `op` and says what it was. */
  count(op: Op, answer: Answer): Verdict {
    const stats = this.ops.get(op);
    if (stats === undefined) throw new Error(`unknown op ${op}`);
    stats.count++;
    if (answer.kind === 'failed') {
      stats.errors++;
      this.errors.push({ kind: answer.error, op, at: answer.sentAt, doneAt: answer.doneAt });
      return 'error';
    }
    stats.latencies.push(answer.doneAt - answer.sentAt);
    const { status, code } = answer;
    if (status >= 200 && status < 300) {
      stats.ok++;
      return 'ok';
    }
    if (status === 409 && (code === 'LOCK_HELD' || code === 'WAIT_TIMEOUT')) {
      stats.refused++;
      const key = `${status} ${code}`;
      this.refusedByCode.set(key, (this.refusedByCode.get(key) ?? 0) + 1);
      return 'refused';
    }
    if (status === 404 && (code === 'LOCK_NOT_HELD' || code === 'LOCK_NOT_FOUND')) {
      stats.notHeld++;
      return 'not-held';
    }
    stats.errors++;
    this.errors.push({
      kind: `${status} ${code ?? '(no code)'}`,
      op,
      at: answer.sentAt,
      doneAt: answer.doneAt,
    });
    return 'error';
  }
}

/** The error kind of an answer counted as an error, for logs and attempt outcomes. */
export function errorKind(answer: Answer): string {
  return answer.kind === 'failed' ? answer.error : `${answer.status} ${answer.code ?? '(no code)'}`;
}
