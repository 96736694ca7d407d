import http from 'node:http';
import https from 'node:https';
import { hostname, userInfo } from 'node:os';
import { parseDurationSeconds } from '../duration.js';
import {
  errorFromResponse,
  type LockInfo,
  LockLostError,
  LockNotFoundError,
  LockNotHeldError,
  ServerUnreachableError,
  StoreUnavailableError,
} from './errors.js';

/** Seconds, or a duration such as `90s`, `30m`, `1h30m`. */
export type Duration = number | string;

export interface TrackerClientOptions {
  /** Base URL of the REST API (default `http://localhost:8080`). */
  readonly url?: string;
  /** Retries of what is safe to retry (refused connections, 503), default 3. */
  readonly retries?: number;
  /** First backoff delay in ms, doubled each retry (default 100). */
  readonly retryDelayMs?: number;
}

export interface AcquireOptions {
  /** The holder's name (default `user@hostname`). */
  readonly who?: string;
  /** Lease length; none: the server's default (usually no expiry). */
  readonly ttl?: Duration;
  /** How long to wait in line if the service is held; none: answer at once. */
  readonly wait?: Duration;
  readonly signal?: AbortSignal;
}

export interface ListOptions {
  readonly service?: string;
  readonly who?: string;
  readonly page?: number;
  readonly perPage?: number;
  readonly signal?: AbortSignal;
}

export interface LockList {
  readonly locks: LockInfo[];
  readonly total: number;
  readonly page: number;
  readonly perPage: number;
}

export interface QueueInfo {
  readonly service: string;
  readonly holder: LockInfo | null;
  readonly waiters: Array<{ who: string; since: string; position: number }>;
}

/** What can happen to a lock; the history records each. */
export type LockEventType =
  | 'acquired'
  | 'released'
  | 'expired'
  | 'renewed'
  | 'force-released'
  | 'queued'
  | 'dequeued';

/** One entry of the lock history, as `GET /history` answers it. */
export interface LockEvent {
  /** Increasing in the order events happened (may have gaps); pass one as `before` to page. */
  readonly id: number;
  readonly type: LockEventType;
  /** When it was recorded: RFC 3339, UTC, with milliseconds. */
  readonly at: string;
  readonly service: string;
  readonly who: string;
  /** The lock; for `queued`/`dequeued` the waiting request, which has no fencing token yet. */
  readonly lock: Omit<LockInfo, 'fencingToken'> & { readonly fencingToken: number | null };
  /** released, force-released, expired: how long the lock was held. */
  readonly heldSeconds: number | null;
  /** force-released: the operator's reason (or null); dequeued: granted, left or abandoned. */
  readonly reason: string | null;
}

export interface HistoryOptions {
  /** Only this service (exact). */
  readonly service?: string;
  /** Only this holder (exact). */
  readonly who?: string;
  /** Events at or after this moment (a Date, or an RFC 3339 timestamp). */
  readonly since?: Date | string;
  /** Events before this moment (a Date, or an RFC 3339 timestamp). */
  readonly until?: Date | string;
  /** Page size, 1 to 1000 (the server's default: 100). */
  readonly limit?: number;
  /** Only events with a smaller id: the previous page's `nextBefore`. */
  readonly before?: number;
  readonly signal?: AbortSignal;
}

/** A page of history, newest first; `nextBefore` is set when another page may follow. */
export interface HistoryPage {
  readonly events: LockEvent[];
  readonly nextBefore: number | null;
}

const API = '/api/v1alpha1';

/** A Date as RFC 3339 (UTC, milliseconds); a string is the caller's timestamp, checked by the server. */
function timestamp(value: Date | string, what: string): string {
  if (typeof value === 'string') return value;
  if (Number.isNaN(value.getTime())) throw new TypeError(`${what} is an invalid Date`);
  return value.toISOString();
}

/** Seconds from a Duration; throws on nonsense so that a typo never means "no TTL". */
export function durationSeconds(value: Duration, what: string): number {
  const seconds = typeof value === 'number' ? value : parseDurationSeconds(value);
  if (seconds === null || !Number.isSafeInteger(seconds) || seconds < 0) {
    throw new TypeError(
      `${what} must be whole seconds or a duration like 90s, 30m, 1h30m; got ${String(value)}`,
    );
  }
  return seconds;
}

export function defaultWho(): string {
  let user = process.env.USER ?? 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // No passwd entry (some containers): keep $USER.
  }
  return `${user}@${hostname()}`;
}

/**
 * A typed client of Tracker's REST API. Every method takes an optional AbortSignal; errors
 * are typed by the server's stable `code` (LockHeldError, WaitTimeoutError, ...).
 */
export class TrackerClient {
  readonly url: string;
  readonly #retries: number;
  readonly #retryDelayMs: number;

  constructor(options: TrackerClientOptions = {}) {
    this.url = (options.url ?? 'http://localhost:8080').replace(/\/+$/, '');
    this.#retries = options.retries ?? 3;
    this.#retryDelayMs = options.retryDelayMs ?? 100;
  }

  /** Takes the lock (waiting in line for up to `wait`); throws LockHeldError or WaitTimeoutError. */
  acquire(service: string, options: AcquireOptions = {}): Promise<LockInfo> {
    const body: Record<string, unknown> = { service, who: options.who ?? defaultWho() };
    if (options.ttl !== undefined) body.ttlSeconds = durationSeconds(options.ttl, 'ttl');
    if (options.wait !== undefined) body.waitSeconds = durationSeconds(options.wait, 'wait');
    return this.#request('POST', `${API}/lock`, body, options.signal);
  }

  get(id: string, options: { signal?: AbortSignal } = {}): Promise<LockInfo> {
    return this.#request('GET', `${API}/lock/${encodeURIComponent(id)}`, undefined, options.signal);
  }

  async release(id: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#request('DELETE', `${API}/lock/${encodeURIComponent(id)}`, undefined, options.signal);
  }

  /** Extends the lease (by `ttl`, or the lock's own TTL); throws LockNotHeldError when lost. */
  renew(id: string, options: { ttl?: Duration; signal?: AbortSignal } = {}): Promise<LockInfo> {
    const body = options.ttl === undefined ? {} : { ttlSeconds: durationSeconds(options.ttl, 'ttl') };
    return this.#request('POST', `${API}/lock/${encodeURIComponent(id)}/renew`, body, options.signal);
  }

  /**
   * Releases the lock whoever holds it (an operator's tool for a holder that will never come
   * back), recording `reason` in the history; the next waiter is granted the service as on a
   * release. Resolves with the lock as it was; throws LockNotFoundError when no lock with
   * that id is held.
   *
   * Retried like `release`, and for the same reason: a refused connection sent nothing, and
   * a 503 is retried although the first attempt may have committed (PostgreSQL's connection
   * breaking after COMMIT). Force release is not idempotent in effect by nature (it takes a
   * lock away from someone else), but it names the lock by id and ids are never reused (the
   * next holder, a granted waiter included, has another id), so a repeat can never release a
   * different lock or record a second event. The one cost is the answer: a retry after an
   * attempt that did commit finds no lock and throws LockNotFoundError, exactly as `release`
   * does, and the lock is gone either way, which is what the caller asked for.
   */
  async forceRelease(id: string, options: { reason?: string; signal?: AbortSignal } = {}): Promise<LockInfo> {
    const body = options.reason === undefined ? {} : { reason: options.reason };
    const answer = await this.#request<{ lock: LockInfo }>(
      'POST',
      `${API}/lock/${encodeURIComponent(id)}/force-release`,
      body,
      options.signal,
    );
    return answer.lock;
  }

  /**
   * One page of the lock history, newest first. For the next page, pass `nextBefore` as
   * `before` (with the same filters); it is null when this page was the last.
   */
  history(options: HistoryOptions = {}): Promise<HistoryPage> {
    const query = new URLSearchParams();
    if (options.service !== undefined) query.set('service', options.service);
    if (options.who !== undefined) query.set('who', options.who);
    if (options.since !== undefined) query.set('since', timestamp(options.since, 'since'));
    if (options.until !== undefined) query.set('until', timestamp(options.until, 'until'));
    if (options.limit !== undefined) query.set('limit', String(options.limit));
    if (options.before !== undefined) query.set('before', String(options.before));
    const suffix = query.size > 0 ? `?${query}` : '';
    return this.#request('GET', `${API}/history${suffix}`, undefined, options.signal);
  }

  list(options: ListOptions = {}): Promise<LockList> {
    const query = new URLSearchParams();
    if (options.service !== undefined) query.set('service', options.service);
    if (options.who !== undefined) query.set('who', options.who);
    if (options.page !== undefined) query.set('page', String(options.page));
    if (options.perPage !== undefined) query.set('per_page', String(options.perPage));
    const suffix = query.size > 0 ? `?${query}` : '';
    return this.#request('GET', `${API}/locks/list${suffix}`, undefined, options.signal);
  }

  queue(service: string, options: { signal?: AbortSignal } = {}): Promise<QueueInfo> {
    return this.#request('GET', `${API}/queue/${encodeURIComponent(service)}`, undefined, options.signal);
  }

  /**
   * Runs `fn` while holding the lock: renews it every third of its TTL, aborts the signal
   * given to `fn` the moment the lock is lost (renewal refused, or the lease ran out while
   * the server could not be reached), and releases it in `finally`. A lock without TTL is
   * never renewed (it cannot be lost to expiry).
   */
  async withLock<T>(
    service: string,
    fn: (lock: LockInfo, signal: AbortSignal) => Promise<T>,
    options: AcquireOptions = {},
  ): Promise<T> {
    const lock = await this.acquire(service, options);
    const lost = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, lost.signal]) : lost.signal;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let done = false;
    if (lock.ttlSeconds !== null) {
      const ttlMs = lock.ttlSeconds * 1000;
      let leaseEnds = Date.now() + ttlMs;
      const renewSoon = () => {
        timer = setTimeout(renew, Math.max(ttlMs / 3, 100));
      };
      const renew = async () => {
        try {
          await this.renew(lock.id, { signal: lost.signal });
          leaseEnds = Date.now() + ttlMs;
        } catch (error) {
          if (done) return;
          if (error instanceof LockNotHeldError) {
            lost.abort(new LockLostError(`lock ${lock.id} on ${service} was lost: ${error.message}`));
            return;
          }
          if (Date.now() >= leaseEnds) {
            lost.abort(
              new LockLostError(`lock ${lock.id} on ${service}: lease ran out while renewals failed`),
            );
            return;
          }
        }
        if (!done) renewSoon();
      };
      renewSoon();
    }
    try {
      return await fn(lock, signal);
    } finally {
      done = true;
      clearTimeout(timer);
      if (!lost.signal.aborted) {
        await this.release(lock.id).catch((error: unknown) => {
          if (!(error instanceof LockNotFoundError)) throw error;
        });
      }
    }
  }

  async #request<T>(
    method: string,
    path: string,
    body: unknown,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      let response: { status: number; text: string };
      try {
        response = await send(new URL(`${this.url}${path}`), method, body, signal);
      } catch (error) {
        if (signal?.aborted) throw error;
        // Refused: nothing was sent, so trying again is safe. Anything else may have
        // reached the server; it is not retried.
        if (refused(error) && attempt < this.#retries) {
          await this.#backoff(attempt, signal);
          continue;
        }
        throw new ServerUnreachableError(`cannot reach Tracker at ${this.url}: ${describe(error)}`);
      }
      const json = response.text === '' ? {} : (JSON.parse(response.text) as Record<string, unknown>);
      if (response.status >= 200 && response.status < 300) return json as T;
      const error = errorFromResponse(response.status, json);
      if (error instanceof StoreUnavailableError && attempt < this.#retries) {
        await this.#backoff(attempt, signal);
        continue;
      }
      throw error;
    }
  }

  #backoff(attempt: number, signal: AbortSignal | undefined): Promise<void> {
    const ms = this.#retryDelayMs * 2 ** attempt * (0.5 + Math.random() / 2);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      signal?.addEventListener(
        'abort',
        () => {
          clearTimeout(timer);
          reject(signal.reason);
        },
        { once: true },
      );
    });
  }
}

/**
 * One HTTP exchange with node:http(s), not fetch: fetch gives up on a response after 300 s
 * without headers, and an acquire that waits in line may take an hour to answer.
 */
function send(
  url: URL,
  method: string,
  body: unknown,
  signal: AbortSignal | undefined,
): Promise<{ status: number; text: string }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const transport = url.protocol === 'https:' ? https : http;
  const headers: Record<string, string | number> =
    payload === undefined
      ? {}
      : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
  return new Promise((resolve, reject) => {
    const request = transport.request(url, { method, signal, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
      );
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(payload);
  });
}

function refused(error: unknown): boolean {
  return (error as { code?: string }).code === 'ECONNREFUSED';
}

function describe(error: unknown): string {
  const { code, message } = error as { code?: string; message?: string };
  return code ?? message ?? String(error);
}
