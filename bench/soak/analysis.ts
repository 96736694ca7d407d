// The soak's safety checks, as pure functions of what was recorded and what the server's
// history says. The rules, and why a correct server always passes them, are in soak.ts.
import { performance } from 'node:perf_hooks';
import type { Attempt, GoneObservation, Interval, RanOut } from './record.js';
import { CLOCK_SLACK_MS } from './workload.js';

const EXAMPLES = 5;

export interface ClientCheck {
  intervals: number;
  /** Pairs of intervals of one service that overlap: double grants. */
  overlaps: number;
  /** Consecutive (disjoint) intervals of one service whose tokens do not increase. */
  tokenRegressions: number;
  examples: string[];
}

/**
 * Double grants as the clients saw them. Each interval is a time during which the lock
 * certainly existed on a correct server; two locks of one service never exist at once, so
 * two intervals of one service must not overlap, and the later one must carry the larger
 * fencing token.
 */
export function checkClientIntervals(intervals: readonly Interval[]): ClientCheck {
  const byService = groupBy(
    intervals.filter((interval) => interval.end > interval.start),
    (interval) => interval.service,
  );
  let overlaps = 0;
  let tokenRegressions = 0;
  const examples: string[] = [];
  for (const [service, list] of byService) {
    list.sort((a, b) => a.start - b.start);
    for (let i = 0; i < list.length; i++) {
      const a = list[i];
      if (a === undefined) continue;
      for (let j = i + 1; j < list.length; j++) {
        const b = list[j];
        if (b === undefined || b.start >= a.end) break;
        overlaps++;
        if (examples.length < EXAMPLES) {
          examples.push(
            `${service}: client ${a.client} held ${a.lockId} (token ${a.token}) over ` +
              `[${ms(a.start)}, ${ms(a.end)}) and client ${b.client} held ${b.lockId} (token ${b.token}) ` +
              `from ${ms(b.start)} (${(a.end - b.start).toFixed(1)} ms of overlap, ${a.how})`,
          );
        }
      }
      const next = list[i + 1];
      if (next !== undefined && next.start >= a.end && next.token <= a.token) {
        tokenRegressions++;
        if (examples.length < EXAMPLES) {
          examples.push(
            `${service}: token ${next.token} (${next.lockId}) held after token ${a.token} (${a.lockId})`,
          );
        }
      }
    }
  }
  return { intervals: intervals.length, overlaps, tokenRegressions, examples };
}

/** An event of GET /api/v1alpha1/history, as far as the checks read it. */
export interface HistoryEvent {
  id: number;
  type: string;
  at: string;
  service: string;
  who: string;
  lock: { id: string; fencingToken: number | null; ttlSeconds: number | null };
  heldSeconds: number | null;
  reason: string | null;
}

/** A lock as the history tells it. */
export interface ServerLock {
  service: string;
  who: string;
  token: number;
  /** Wall-clock ms (the store's clock). */
  start: number;
  end: number | null;
  endType: string | null;
}

export interface HistoryCheck {
  services: number;
  events: number;
  locks: number;
  /** An `acquired` while another lock of the service was still open, in the store's own order. */
  doubleGrants: number;
  /** An `acquired` whose token is not above the service's previous one. */
  tokenRegressions: number;
  /**
   * Acquired at a store time before the previous lock's end although the event order is
   * right (see soak.ts: transaction start times); with the largest such overlap.
   */
  clockOverlaps: number;
  clockOverlapMaxMs: number;
  /** renewed/released/expired of a lock that is not the open one. */
  anomalies: number;
  /** Locks still open at the end of the history. */
  openAtEnd: number;
  /** 201s the clients got whose lock the history does not know. */
  grantsMissing: number;
  /** 201s whose token differs from the history's. */
  tokenMismatches: number;
  /** Locks in the history no client got a 201 for, by what that client saw. */
  phantomGrants: Map<string, number>;
  /** Of the phantom grants stamped after their request's error answer: the longest delay, and a few. */
  phantomLatestAfterMs: number;
  phantomExamples: string[];
  examples: string[];
  locksById: Map<string, ServerLock>;
}

const ENDS = new Set(['released', 'force-released', 'expired']);

export function checkHistory(
  eventsByService: ReadonlyMap<string, readonly HistoryEvent[]>,
  granted: ReadonlyMap<string, { token: number; who: string; service: string }>,
  attempts: ReadonlyMap<string, Attempt>,
): HistoryCheck {
  const result: HistoryCheck = {
    services: eventsByService.size,
    events: 0,
    locks: 0,
    doubleGrants: 0,
    tokenRegressions: 0,
    clockOverlaps: 0,
    clockOverlapMaxMs: 0,
    anomalies: 0,
    openAtEnd: 0,
    grantsMissing: 0,
    tokenMismatches: 0,
    phantomGrants: new Map(),
    phantomLatestAfterMs: 0,
    phantomExamples: [],
    examples: [],
    locksById: new Map(),
  };
  const example = (text: string) => {
    if (result.examples.length < EXAMPLES) result.examples.push(text);
  };
  for (const [service, unsorted] of eventsByService) {
    const events = [...unsorted].sort((a, b) => a.id - b.id);
    result.events += events.length;
    let open: { id: string; lock: ServerLock } | null = null;
    let lastToken = Number.NEGATIVE_INFINITY;
    let lastEnd = Number.NEGATIVE_INFINITY;
    for (const event of events) {
      const at = Date.parse(event.at);
      if (event.type === 'acquired') {
        result.locks++;
        const token = event.lock.fencingToken ?? Number.NaN;
        if (open !== null) {
          result.doubleGrants++;
          example(`${service}: event ${event.id} acquired ${event.lock.id} while ${open.id} was still held`);
        }
        if (!(token > lastToken)) {
          result.tokenRegressions++;
          example(`${service}: event ${event.id} token ${token} after token ${lastToken}`);
        }
        if (at < lastEnd - 1) {
          result.clockOverlaps++;
          result.clockOverlapMaxMs = Math.max(result.clockOverlapMaxMs, lastEnd - at);
        }
        const lock: ServerLock = { service, who: event.who, token, start: at, end: null, endType: null };
        result.locksById.set(event.lock.id, lock);
        open = { id: event.lock.id, lock };
        lastToken = Math.max(lastToken, token);
      } else if (event.type === 'renewed') {
        if (open?.id !== event.lock.id) {
          result.anomalies++;
          example(`${service}: event ${event.id} renewed ${event.lock.id}, which is not the held lock`);
        }
      } else if (ENDS.has(event.type)) {
        if (open?.id !== event.lock.id) {
          result.anomalies++;
          example(`${service}: event ${event.id} ${event.type} ${event.lock.id}, which is not the held lock`);
          continue;
        }
        // An expiry ends at expiresAt, recorded later (by a sweep or a takeover): heldSeconds
        // counts up to it. A release ends when it was recorded.
        const end =
          event.type === 'expired' && event.heldSeconds !== null
            ? open.lock.start + event.heldSeconds * 1000
            : at;
        open.lock.end = end;
        open.lock.endType = event.type;
        lastEnd = end;
        open = null;
      }
    }
    if (open !== null) result.openAtEnd++;
  }
  for (const [lockId, grant] of granted) {
    const lock = result.locksById.get(lockId);
    if (lock === undefined) {
      result.grantsMissing++;
      example(`201 for ${lockId} (${grant.who}, ${grant.service}) has no acquired event`);
    } else if (lock.token !== grant.token) {
      result.tokenMismatches++;
      example(`201 for ${lockId} said token ${grant.token}, the history ${lock.token}`);
    }
  }
  for (const [lockId, lock] of result.locksById) {
    if (granted.has(lockId)) continue;
    const attempt = attempts.get(lock.who);
    let key = 'no such request';
    if (attempt !== undefined) {
      // The store stamps a grant no later than it commits; a grant stamped after the
      // client had its error answer was made after the request had been given up.
      const after = wallToPerf(lock.start) - attempt.doneAt;
      const late = after > CLOCK_SLACK_MS;
      key = `${attempt.op}: ${attempt.outcome}, ${late ? 'granted after that answer' : 'committed before that answer'}`;
      if (late) {
        result.phantomLatestAfterMs = Math.max(result.phantomLatestAfterMs, after);
        if (result.phantomExamples.length < EXAMPLES) {
          result.phantomExamples.push(
            `${lock.service}: ${attempt.who} (${attempt.op}) answered "${attempt.outcome}" at ${ms(attempt.doneAt)}, ` +
              `its lock ${lockId} (token ${lock.token}) granted ${(after / 1000).toFixed(3)} s later, ended by ${lock.endType ?? 'nothing'}`,
          );
        }
      }
    }
    result.phantomGrants.set(key, (result.phantomGrants.get(key) ?? 0) + 1);
  }
  return result;
}

export interface LostCheck {
  /** Gone observations sent in time, by cause. */
  gone: Map<string, number>;
  /** Leases that ran out while renewals failed, by what the history says happened to the lock. */
  ranOut: Map<string, number>;
  /** Causes that a correct server never produces. */
  suspicious: number;
  examples: string[];
}

/** Wall-clock ms → this process's performance.now() ms (one machine: the clocks agree but for drift). */
function wallToPerf(wall: number): number {
  return wall - (Date.now() - performance.now());
}

/**
 * Why each lost lock was lost, from the history: a lock that expired no earlier than the
 * client's lease bound was lost because the request reached the store late (a fault, a
 * slow moment); a lock that ended before that bound, or by a release its client did not
 * send, was taken away: a server bug.
 */
export function classifyLost(
  gone: readonly GoneObservation[],
  ranOut: readonly RanOut[],
  locks: ReadonlyMap<string, ServerLock>,
): LostCheck {
  const result: LostCheck = { gone: new Map(), ranOut: new Map(), suspicious: 0, examples: [] };
  const add = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);
  for (const observation of gone) {
    const lock = locks.get(observation.lockId);
    let cause: string;
    if (lock === undefined) cause = 'unknown to the history';
    else if (lock.end === null) cause = 'still held per the history';
    else if (lock.endType !== 'expired') cause = `${lock.endType} by a request the client did not send`;
    else if (observation.ttl === null) cause = 'expired without a TTL';
    else if (wallToPerf(lock.end) >= observation.leaseBound - CLOCK_SLACK_MS) {
      cause = 'expired at its lease end; the request reached the store after it';
    } else cause = 'expired before the lease the client was promised';
    const expected = cause.startsWith('expired at its lease end');
    if (!expected) {
      result.suspicious++;
      if (result.examples.length < EXAMPLES) {
        result.examples.push(
          `${observation.service}: ${observation.via} of ${observation.lockId} answered 404 ` +
            `(sent ${ms(observation.sentAt)}, lease bound ${ms(observation.leaseBound)}): ${cause}`,
        );
      }
    }
    add(result.gone, `${observation.via}: ${cause}`);
  }
  for (const item of ranOut) {
    const lock = locks.get(item.lockId);
    const fate =
      lock === undefined
        ? 'unknown to the history'
        : lock.endType === 'expired'
          ? 'expired'
          : `${lock.endType ?? 'still held'} (the lease outlived the client's lower bound)`;
    add(result.ranOut, fate);
  }
  return result;
}

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const list = groups.get(k);
    if (list === undefined) groups.set(k, [item]);
    else list.push(item);
  }
  return groups;
}

/** performance.now() ms as seconds since the soak process started, for examples. */
function ms(value: number): string {
  return Number.isFinite(value) ? `${(value / 1000).toFixed(3)} s` : '∞';
}
