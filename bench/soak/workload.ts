// The soak's clients and its janitor. Each client loops until the deadline: it picks a
// random service and a random replica for every request and does one of: acquire without
// waiting (with or without a lease), acquire waiting in line, acquire a short lease and
// leave it to expire, or look at a queue or a history. A granted lock is held for a while,
// renewed before its lease runs out, looked at now and then, and released through a random
// replica. Each client keeps its own view of what it holds; the recorder keeps every 201,
// every refusal, every error, and the intervals the safety checks use.
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { type Attempt, errorKind, type Op, type Recorder } from './record.js';
import { type Answer, API, type Rest } from './rest.js';

/** A request that answers at once: the server answers 503 within 2 s when the store is away. */
export const REQUEST_TIMEOUT_MS = 8_000;
/** On top of waitSeconds for a waiting acquire. */
const WAIT_MARGIN_MS = 8_000;
/**
 * Subtracted from every lease bound computed from the soak's clock (sentAt + ttl): covers
 * the rate difference of CLOCK_MONOTONIC (performance.now) and PostgreSQL's wall clock.
 */
export const LEASE_SLACK_MS = 50;
/** Subtracted from a bound computed from the server's expiresAt (a wall-clock instant). */
export const CLOCK_SLACK_MS = 100;
/** A renewal, GET or release counts as "in time" when sent at least this long before the lease bound. */
export const IN_TIME_MS = 1_000;
/** Bounds on every loop. */
const MAX_ITERATIONS = 1_000_000;
const MAX_HOLD_STEPS = 500;
const RELEASE_ATTEMPTS = 12;
const RELEASE_BUDGET_MS = 30_000;
/** When the janitor looks for the lock of an acquire whose outcome is unknown, after its answer. */
const JANITOR_POLLS_MS = [500, 1_500, 3_500, 7_500, 15_500, 30_000, 45_000, 60_000, 90_000];
const JANITOR_PARALLEL = 4;

export interface WorkloadContext {
  readonly replicas: readonly Rest[];
  readonly services: readonly string[];
  readonly recorder: Recorder;
  readonly janitor: Janitor;
  /** True once the run's time is up: clients release what they hold and stop. */
  readonly stopping: () => boolean;
}

interface Held {
  readonly id: string;
  readonly service: string;
  readonly token: number;
  readonly ttl: number | null;
  /** When the 201 arrived. */
  readonly start: number;
  /** Lower bound of the lease end (Infinity without TTL), raised by each confirmed renewal. */
  leaseBound: number;
}

interface LockJson {
  id: string;
  fencingToken: number;
  ttlSeconds: number | null;
  expiresAt: string | null;
}

const random = (min: number, max: number) => min + Math.random() * (max - min);
const randomInt = (min: number, max: number) => Math.floor(random(min, max + 1));
function pick<T>(items: readonly T[]): T {
  const item = items[Math.floor(Math.random() * items.length)];
  if (item === undefined) throw new Error('pick from an empty list');
  return item;
}

function asLock(json: unknown): LockJson | null {
  if (typeof json !== 'object' || json === null) return null;
  const lock = json as Partial<LockJson>;
  if (typeof lock.id !== 'string' || typeof lock.fencingToken !== 'number') return null;
  return {
    id: lock.id,
    fencingToken: lock.fencingToken,
    ttlSeconds: typeof lock.ttlSeconds === 'number' ? lock.ttlSeconds : null,
    expiresAt: typeof lock.expiresAt === 'string' ? lock.expiresAt : null,
  };
}

/**
 * The lease's lower bound after a request sent at `sentAt` was answered with a lock: the
 * server stamps the lease no earlier than it receives the request, so it ends no earlier
 * than sentAt + ttl; and no earlier than the answer's expiresAt (whole seconds, truncated),
 * mapped from the wall clock to performance.now(). Infinity without TTL.
 */
export function leaseBound(sentAt: number, lock: LockJson): number {
  if (lock.ttlSeconds === null) return Number.POSITIVE_INFINITY;
  const fromSend = sentAt + lock.ttlSeconds * 1000 - LEASE_SLACK_MS;
  const wall = lock.expiresAt === null ? Number.NaN : Date.parse(lock.expiresAt);
  const fromAnswer = Number.isFinite(wall)
    ? wall - (Date.now() - performance.now()) - CLOCK_SLACK_MS
    : Number.NEGATIVE_INFINITY;
  return Math.max(fromSend, fromAnswer);
}

export class Client {
  readonly #id: number;
  readonly #ctx: WorkloadContext;
  #attempts = 0;

  constructor(id: number, ctx: WorkloadContext) {
    this.#id = id;
    this.#ctx = ctx;
  }

  async run(): Promise<void> {
    for (let i = 0; i < MAX_ITERATIONS && !this.#ctx.stopping(); i++) {
      const service = pick(this.#ctx.services);
      const dice = Math.random();
      if (dice < 0.1) await this.#observe(service);
      else if (dice < 0.22) await this.#acquire(service, 'acquire-expire', randomInt(1, 3), 0);
      else if (dice < 0.5) await this.#acquire(service, 'acquire-ttl', randomInt(1, 5), 0);
      else if (dice < 0.7) await this.#acquire(service, 'acquire', null, 0);
      else
        await this.#acquire(
          service,
          'acquire-wait',
          Math.random() < 0.5 ? randomInt(1, 5) : null,
          randomInt(1, 3),
        );
      await delay(random(0, 100));
    }
  }

  #replica(): Rest {
    return pick(this.#ctx.replicas);
  }

  async #observe(service: string): Promise<void> {
    const name = encodeURIComponent(service);
    if (Math.random() < 0.6) {
      const answer = await this.#replica().request(
        'GET',
        `${API}/queue/${name}`,
        undefined,
        REQUEST_TIMEOUT_MS,
      );
      this.#ctx.recorder.count('queue', answer);
    } else {
      const path = `${API}/history?service=${name}&limit=20`;
      const answer = await this.#replica().request('GET', path, undefined, REQUEST_TIMEOUT_MS);
      this.#ctx.recorder.count('history', answer);
    }
  }

  async #acquire(service: string, op: Op, ttl: number | null, waitSeconds: number): Promise<void> {
    const { recorder } = this.#ctx;
    const who = `soak-c${String(this.#id).padStart(2, '0')}-${String(++this.#attempts).padStart(6, '0')}`;
    const body: Record<string, unknown> = { service, who };
    if (ttl !== null) body.ttlSeconds = ttl;
    if (waitSeconds > 0) body.waitSeconds = waitSeconds;
    const timeout = waitSeconds > 0 ? waitSeconds * 1000 + WAIT_MARGIN_MS : REQUEST_TIMEOUT_MS;
    const answer = await this.#replica().request('POST', `${API}/lock`, body, timeout);
    const verdict = recorder.count(op, answer);
    const attempt: Attempt = {
      who,
      service,
      op,
      client: this.#id,
      outcome: '',
      sentAt: answer.sentAt,
      doneAt: answer.doneAt,
    };
    recorder.attempts.set(who, attempt);
    const lock = answer.kind === 'reply' && answer.status === 201 ? asLock(answer.json) : null;
    if (verdict === 'ok' && lock !== null) {
      attempt.outcome = 'granted';
      attempt.lockId = lock.id;
      attempt.token = lock.fencingToken;
      recorder.granted.set(lock.id, { token: lock.fencingToken, who, service });
      const held: Held = {
        id: lock.id,
        service,
        token: lock.fencingToken,
        ttl: lock.ttlSeconds,
        start: answer.doneAt,
        leaseBound: leaseBound(answer.sentAt, lock),
      };
      if (op === 'acquire-expire') {
        // Never renewed nor released: the store expires it.
        recorder.deliberateExpiries++;
        recorder.lastDeliberateEnd = Math.max(recorder.lastDeliberateEnd, held.leaseBound);
        this.#interval(held, held.leaseBound, 'expired-on-purpose');
        return;
      }
      await this.#hold(held, op === 'acquire-ttl' ? random(200, 4_000) : random(50, 2_000));
      return;
    }
    if (verdict === 'refused' && answer.kind === 'reply') {
      attempt.outcome = `refused ${answer.code}`;
      await delay(random(20, 200));
      return;
    }
    // 503, timeout, connection error, or a 201 without a lock: the lock may exist (the
    // commit may have happened, or a waiter may still be granted later). The janitor looks
    // for it by its unique `who` and releases it.
    attempt.outcome = verdict === 'ok' ? 'error 201 without a lock' : `error ${errorKind(answer)}`;
    this.#ctx.janitor.watch(attempt);
    await delay(random(100, 500));
  }

  #interval(held: Held, end: number, how: 'released' | 'expired-on-purpose' | 'gone' | 'lease-ran-out') {
    this.#ctx.recorder.intervals.push({
      service: held.service,
      client: this.#id,
      lockId: held.id,
      token: held.token,
      start: held.start,
      end,
      how,
    });
  }

  /** The server says the lock is gone; the client stops holding it. */
  #gone(held: Held, via: 'renew' | 'release' | 'get', answer: Answer, end: number): void {
    const { recorder } = this.#ctx;
    const inTime = held.ttl === null || answer.sentAt <= held.leaseBound - IN_TIME_MS;
    if (inTime) {
      recorder.gone.push({
        lockId: held.id,
        service: held.service,
        client: this.#id,
        via,
        sentAt: answer.sentAt,
        doneAt: answer.doneAt,
        leaseBound: held.leaseBound,
        ttl: held.ttl,
        inTime,
      });
    } else recorder.lateNotHeld++;
    this.#interval(held, end, 'gone');
  }

  async #hold(held: Held, holdMs: number): Promise<void> {
    const holdUntil = performance.now() + holdMs;
    // The last error of a renewal sent before the lease bound, cleared by a renewal's 200.
    let failedInTime = '';
    for (let step = 0; step < MAX_HOLD_STEPS; step++) {
      const now = performance.now();
      if (this.#ctx.stopping() || now >= holdUntil) break;
      // A bound already past with no failed renewal (a waiter granted late, a slow answer)
      // is no loss: the renewal below tells whether the lock is still there.
      if (held.ttl !== null && now >= held.leaseBound && failedInTime !== '') {
        // Renewals sent in time kept failing (the store was away): the lease may be over.
        this.#ctx.recorder.ranOut.push({
          lockId: held.id,
          service: held.service,
          client: this.#id,
          since: held.start,
          leaseBound: held.leaseBound,
          lastError: failedInTime,
        });
        this.#interval(held, held.leaseBound, 'lease-ran-out');
        // Best effort, so that a renewal that did land does not keep the service for nothing.
        const answer = await this.#replica().request(
          'DELETE',
          `${API}/lock/${held.id}`,
          undefined,
          REQUEST_TIMEOUT_MS,
        );
        this.#ctx.recorder.count('release', answer);
        return;
      }
      const renewAt = held.ttl === null ? Number.POSITIVE_INFINITY : held.leaseBound - held.ttl * 500;
      if (now >= renewAt || (held.ttl === null && Math.random() < 0.03)) {
        const boundBefore = held.leaseBound;
        const result = await this.#renew(held);
        if (result === 'gone') return;
        if (result === 'ok') failedInTime = '';
        else {
          if (now < boundBefore) failedInTime = result;
          await delay(random(100, 250));
          continue;
        }
      } else if (Math.random() < 0.08) {
        const result = await this.#get(held);
        if (result === 'gone') return;
      }
      const after = performance.now();
      await delay(Math.max(5, Math.min(holdUntil - after, renewAt - after, random(50, 300))));
    }
    await this.#release(held);
  }

  /** 'ok', 'gone', or the error kind. */
  async #renew(held: Held): Promise<string> {
    const { recorder } = this.#ctx;
    const body = held.ttl !== null && Math.random() < 0.3 ? { ttlSeconds: held.ttl } : undefined;
    const answer = await this.#replica().request(
      'POST',
      `${API}/lock/${held.id}/renew`,
      body,
      REQUEST_TIMEOUT_MS,
    );
    const verdict = recorder.count('renew', answer);
    if (verdict === 'ok' && answer.kind === 'reply') {
      const lock = asLock(answer.json);
      if (lock === null || lock.id !== held.id || lock.fencingToken !== held.token) {
        recorder.mismatches.push(
          `renew of ${held.id} (token ${held.token}) answered ${JSON.stringify(answer.json)}`,
        );
        return 'ok';
      }
      held.leaseBound = Math.max(held.leaseBound, leaseBound(answer.sentAt, lock));
      return 'ok';
    }
    if (verdict === 'not-held') {
      this.#gone(held, 'renew', answer, held.ttl === null ? answer.sentAt : held.leaseBound);
      return 'gone';
    }
    return errorKind(answer);
  }

  async #get(held: Held): Promise<'ok' | 'gone' | 'error'> {
    const { recorder } = this.#ctx;
    const answer = await this.#replica().request(
      'GET',
      `${API}/lock/${held.id}`,
      undefined,
      REQUEST_TIMEOUT_MS,
    );
    const verdict = recorder.count('get', answer);
    if (verdict === 'ok' && answer.kind === 'reply') {
      const lock = asLock(answer.json);
      if (lock === null || lock.id !== held.id || lock.fencingToken !== held.token) {
        recorder.mismatches.push(
          `GET of ${held.id} (token ${held.token}) answered ${JSON.stringify(answer.json)}`,
        );
      }
      return 'ok';
    }
    if (verdict === 'not-held') {
      this.#gone(held, 'get', answer, held.ttl === null ? answer.sentAt : held.leaseBound);
      return 'gone';
    }
    return 'error';
  }

  async #release(held: Held): Promise<void> {
    const { recorder } = this.#ctx;
    const started = performance.now();
    for (let attempt = 0; attempt < RELEASE_ATTEMPTS; attempt++) {
      const [method, path] =
        Math.random() < 0.1 ? ['POST', `${API}/unlock/${held.id}`] : ['DELETE', `${API}/lock/${held.id}`];
      const answer = await this.#replica().request(method, path, undefined, REQUEST_TIMEOUT_MS);
      const verdict = recorder.count('release', answer);
      if (attempt === 0) {
        // The client stops counting on the lock the moment it sends the release.
        const end = Math.min(answer.sentAt, held.leaseBound);
        if (verdict === 'not-held') {
          this.#gone(held, 'release', answer, end);
          return;
        }
        this.#interval(held, end, 'released');
      }
      if (verdict === 'ok') return;
      if (verdict === 'not-held') {
        // Released by an earlier attempt whose answer was lost, or expired meanwhile.
        recorder.retriedReleaseNotFound++;
        return;
      }
      if (performance.now() - started > RELEASE_BUDGET_MS) break;
      await delay(Math.min(3_000, 250 * 1.5 ** attempt));
    }
    recorder.releasesGivenUp++;
    this.#ctx.janitor.releaseLater(held.id);
  }
}

interface Watched {
  attempt: Attempt;
  polls: number;
  nextAt: number;
}

/** A lock the janitor found and released: an acquire whose outcome the client never learnt. */
export interface Orphan {
  who: string;
  lockId: string;
  /** The outcome the client saw (error ...). */
  outcome: string;
  op: Op;
  /** From the client's error answer to the janitor's list that found it. */
  foundAfterMs: number;
}

/**
 * Looks for the locks of acquires whose outcome is unknown (503, timeout, connection error),
 * by their unique `who`, for 90 s after the answer (a waiter left in a queue could be
 * granted later), and releases them, so that a lock without TTL does not block its service
 * for the rest of the run. Also retries releases that never got an answer.
 */
export class Janitor {
  readonly #replicas: readonly Rest[];
  readonly #recorder: Recorder;
  readonly #watched: Watched[] = [];
  readonly #toRelease: { id: string; until: number; nextAt: number }[] = [];
  readonly orphans: Orphan[] = [];
  /** Unknown outcomes still watched when the janitor stopped. */
  unresolved = 0;
  #stopped = false;

  constructor(replicas: readonly Rest[], recorder: Recorder) {
    this.#replicas = replicas;
    this.#recorder = recorder;
  }

  watch(attempt: Attempt): void {
    this.#watched.push({ attempt, polls: 0, nextAt: attempt.doneAt + (JANITOR_POLLS_MS[0] ?? 500) });
  }

  releaseLater(id: string): void {
    const now = performance.now();
    this.#toRelease.push({ id, until: now + 60_000, nextAt: now + 1_000 });
  }

  /** Runs until stop(); each round handles what is due, a few at a time. */
  async run(): Promise<void> {
    for (let round = 0; round < MAX_ITERATIONS && !this.#stopped; round++) {
      const now = performance.now();
      const due = this.#watched.filter((item) => item.nextAt <= now).slice(0, JANITOR_PARALLEL);
      await Promise.all(due.map((item) => this.#poll(item)));
      const releases = this.#toRelease.filter((item) => item.nextAt <= now).slice(0, JANITOR_PARALLEL);
      await Promise.all(releases.map((item) => this.#retryRelease(item)));
      if (due.length === 0 && releases.length === 0) await delay(250);
    }
  }

  stop(): void {
    this.#stopped = true;
    this.unresolved = this.#watched.length;
  }

  #replica(): Rest {
    return pick(this.#replicas);
  }

  async #poll(item: Watched): Promise<void> {
    const { attempt } = item;
    const path = `${API}/locks/list?who=${encodeURIComponent(attempt.who)}&per_page=10`;
    const answer = await this.#replica().request('GET', path, undefined, REQUEST_TIMEOUT_MS);
    this.#recorder.count('janitor', answer);
    item.polls++;
    const locks =
      answer.kind === 'reply' && answer.status === 200
        ? ((answer.json as { locks?: unknown }).locks as { id?: unknown }[] | undefined)
        : undefined;
    if (Array.isArray(locks) && locks.length > 0) {
      for (const lock of locks) {
        if (typeof lock.id !== 'string') continue;
        this.orphans.push({
          who: attempt.who,
          lockId: lock.id,
          outcome: attempt.outcome,
          op: attempt.op,
          foundAfterMs: answer.doneAt - attempt.doneAt,
        });
        await this.#releaseNow(lock.id);
      }
      this.#forget(item);
      return;
    }
    const next = JANITOR_POLLS_MS[item.polls];
    if (next === undefined) this.#forget(item);
    else item.nextAt = attempt.doneAt + next;
  }

  #forget(item: Watched): void {
    const index = this.#watched.indexOf(item);
    if (index >= 0) this.#watched.splice(index, 1);
  }

  /** Releases a lock by id, a few tries; true once it is gone (200 or 404). */
  async #releaseNow(id: string): Promise<boolean> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const answer = await this.#replica().request(
        'DELETE',
        `${API}/lock/${id}`,
        undefined,
        REQUEST_TIMEOUT_MS,
      );
      const verdict = this.#recorder.count('release', answer);
      if (verdict === 'ok' || verdict === 'not-held') return true;
      await delay(500 * (attempt + 1));
    }
    this.releaseLater(id);
    return false;
  }

  async #retryRelease(item: { id: string; until: number; nextAt: number }): Promise<void> {
    const answer = await this.#replica().request(
      'DELETE',
      `${API}/lock/${item.id}`,
      undefined,
      REQUEST_TIMEOUT_MS,
    );
    const verdict = this.#recorder.count('release', answer);
    const now = performance.now();
    if (verdict === 'ok' || verdict === 'not-held' || now > item.until) {
      const index = this.#toRelease.indexOf(item);
      if (index >= 0) this.#toRelease.splice(index, 1);
    } else item.nextAt = now + 2_000;
  }
}
