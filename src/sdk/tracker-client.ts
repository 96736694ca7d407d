import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { hostname, userInfo } from 'node:os';
import { parseDurationSeconds } from '../duration.js';
import type {
  ClaimBody,
  CreateGroupBody,
  CreateLockBody,
  EventJson,
  ForceReleaseBody,
  ForceReleasedJson,
  GroupJson,
  HistoryJson,
  LockListJson,
  PutResourceBody,
  QueueJson,
  ReleasedJson,
  RenewGroupBody,
  RenewLockBody,
  ResourceJson,
  ResourceListJson,
  StealLockBody,
  StolenJson,
  UpdateLockBody,
  WaiterJson,
} from '../http/schemas.js';
import {
  errorFromResponse,
  type LockInfo,
  LockLostError,
  LockNotFoundError,
  LockNotHeldError,
  RateLimitedError,
  ServerUnreachableError,
  StoreUnavailableError,
} from './errors.js';

/** Seconds, or a duration such as `90s`, `30m`, `1h30m`. */
export type Duration = number | string;

/** PEM text, as a string or the bytes of a file. */
export type Pem = string | Buffer;

export interface TrackerClientOptions {
  /** Base URL of the REST API, `http://` or `https://` (default `http://localhost:8080`). */
  readonly url?: string;
  /**
   * Sent as `Authorization: Bearer <token>` on every call, for a server run with
   * `--auth-tokens-file` (default: the environment's `TRACKER_TOKEN`; null or '': none).
   */
  readonly token?: string | null;
  /**
   * `https://` only: the CA certificate(s) that signed the server's certificate, PEM. When
   * given they replace Node's bundled public CAs for this client. Default: the file
   * `caFile`, else `TRACKER_CA_FILE`, else Node's bundled CAs.
   */
  readonly ca?: Pem;
  /** `https://` only: a PEM file read once, here, for `ca`. */
  readonly caFile?: string;
  /**
   * `https://` only: a client certificate (chain), PEM, for a server that requires one (mutual
   * TLS, `--tls-ca`); goes with `key`. Default: the file `certFile`, else `TRACKER_CLIENT_CERT_FILE`.
   */
  readonly cert?: Pem;
  /** `https://` only: a PEM file read once, here, for `cert`. */
  readonly certFile?: string;
  /** `https://` only: the private key of `cert`, PEM (unencrypted). Default: `keyFile`, else `TRACKER_CLIENT_KEY_FILE`. */
  readonly key?: Pem;
  /** `https://` only: a PEM file read once, here, for `key`. */
  readonly keyFile?: string;
  /** Retries of what is safe to retry (refused connections, 503), default 3. */
  readonly retries?: number;
  /** First backoff delay in ms, doubled each retry (default 100). */
  readonly retryDelayMs?: number;
}

/** What every acquire takes, single or group. */
export interface AcquireCommonOptions {
  /** The holder's name (default `user@hostname`). */
  readonly who?: string;
  /** Lease length; none: the server's default (usually no expiry). */
  readonly ttl?: Duration;
  /** How long to wait in line if the service is held; none: answer at once. */
  readonly wait?: Duration;
  /** -1000 to 1000 (default 0): higher waiters are granted first, arrival order within one. */
  readonly priority?: number;
  /**
   * The acquire's Idempotency-Key (default: a new UUID per call). Give your own to make a
   * retry across processes safe (e.g. a CI job's run id and attempt).
   */
  readonly idempotencyKey?: string;
  /** Why the lock is held (up to 1024 characters), shown with it everywhere. */
  readonly note?: string;
  /** Where to look: an absolute http(s) URL (a CI run, a ticket). */
  readonly link?: string;
  readonly signal?: AbortSignal;
}

export interface AcquireOptions extends AcquireCommonOptions {
  /**
   * Exclusive holders the service admits at once, 1 to 1000 (default 1: a mutex). Every
   * holder must ask with the same limit (else LimitMismatchError). Not with `mode: 'shared'`
   * nor with `label`.
   */
  readonly limit?: number;
  /** `shared` holders coexist with each other, never with an exclusive one (default `exclusive`). */
  readonly mode?: LockMode;
  /**
   * Take any free registered resource carrying this label instead of the named service: call
   * `acquire(null, {label})`. The lock's `resource` says which one.
   */
  readonly label?: string;
}

/** A lock's mode: `exclusive` (the default) or `shared`. */
export type LockMode = LockInfo['mode'];

/** One claim of a group: a service, or `quantity` resources carrying a label. */
export type Claim = Readonly<ClaimBody>;

/** A group acquire: every claim of `locks` together, or none. */
export interface GroupOptions extends AcquireCommonOptions {
  /** 1 to 32 claims. */
  readonly locks: readonly Claim[];
}

/** A group's id and its locks (each with `groupId` = `id`). */
export type LockGroup = Readonly<GroupJson>;

/** A registered resource, with its holders, its waiters and how many more it admits (`free`). */
export type ResourceInfo = Readonly<ResourceJson>;

/** A request waiting in a queue. */
export type WaiterInfo = Readonly<WaiterJson>;

/** What a resource is registered with (every field optional: none, none, capacity 1). */
export type ResourceSpec = Readonly<PutResourceBody>;

export interface ListOptions {
  readonly service?: string;
  readonly who?: string;
  readonly page?: number;
  readonly perPage?: number;
  readonly signal?: AbortSignal;
}

/** A page of held locks (GET /locks/list). */
export type LockList = Readonly<LockListJson>;

/** A service's holder and its waiters in arrival order (GET /queue/{service}). */
export type QueueInfo = Readonly<QueueJson>;

/**
 * One entry of the lock history, as `GET /history` answers it: `lock` is the lock (for
 * `queued`/`dequeued` the waiting request, with no fencing token yet), `heldSeconds` how long
 * it was held (released, force-released, expired), `reason` the operator's reason
 * (force-released) or granted/left/abandoned (dequeued).
 */
export type LockEvent = Readonly<EventJson>;

/** What can happen to a lock; the history records each. */
export type LockEventType = EventJson['type'];

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
export type HistoryPage = Readonly<HistoryJson>;

const API = '/api/v1alpha1';

/**
 * The longest Retry-After a rate-limited call waits for by itself. The server's limiter asks
 * for a second or two at ordinary rates; a longer wait means a deliberately tight limit, and
 * the caller should decide (RateLimitedError carries `retryAfterSeconds`).
 */
const MAX_RETRY_AFTER_SECONDS = 10;

/** What an `https://` request presents and trusts; empty for `http://`. */
interface TlsMaterial {
  readonly ca?: Pem;
  readonly cert?: Pem;
  readonly key?: Pem;
}

/** The token to send: the option, else TRACKER_TOKEN; surrounding white space dropped. */
function resolveToken(option: string | null | undefined): string | null {
  const token = (option === undefined ? process.env.TRACKER_TOKEN : option)?.trim() ?? '';
  if (token === '') return null;
  // What an HTTP header can carry; the server's own rule is stricter and answers 401.
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new TypeError('the token must be printable ASCII without spaces (check TRACKER_TOKEN)');
  }
  return token;
}

/**
 * The CA, certificate and key for an `https://` URL: each from its option, else its file
 * option, else its environment variable's file. TLS options with an `http://` URL are a
 * mistake (nothing would be encrypted) and throw; the environment's are then ignored.
 */
function resolveTls(options: TrackerClientOptions, url: string): TlsMaterial {
  const { ca, caFile, cert, certFile, key, keyFile } = options;
  if (!/^https:/i.test(url)) {
    if ([ca, caFile, cert, certFile, key, keyFile].some((option) => option !== undefined)) {
      throw new TypeError(`ca, cert and key (and their files) apply to https:// URLs only, not ${url}`);
    }
    return {};
  }
  const env = process.env;
  const pick = (value: Pem | undefined, file: string | undefined, variable: string, what: string) =>
    value ?? readPem(file ?? (env[variable] || undefined), what);
  const material = {
    ca: pick(ca, caFile, 'TRACKER_CA_FILE', 'CA file'),
    cert: pick(cert, certFile, 'TRACKER_CLIENT_CERT_FILE', 'client certificate file'),
    key: pick(key, keyFile, 'TRACKER_CLIENT_KEY_FILE', 'client key file'),
  };
  if ((material.cert === undefined) !== (material.key === undefined)) {
    throw new TypeError(
      'a client certificate and its key go together: give both (cert/certFile and key/keyFile, ' +
        'or TRACKER_CLIENT_CERT_FILE and TRACKER_CLIENT_KEY_FILE) or neither',
    );
  }
  return Object.fromEntries(Object.entries(material).filter(([, value]) => value !== undefined));
}

function readPem(path: string | undefined, what: string): Buffer | undefined {
  if (path === undefined) return undefined;
  try {
    return readFileSync(path);
  } catch (error) {
    throw new Error(`cannot read the ${what} ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

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
  readonly #token: string | null;
  readonly #tls: TlsMaterial;

  /**
   * Reads the TLS files (if any) at once: throws TypeError for contradictory options, and
   * Error naming the file for one that cannot be read.
   */
  constructor(options: TrackerClientOptions = {}) {
    this.url = (options.url ?? 'http://localhost:8080').replace(/\/+$/, '');
    this.#retries = options.retries ?? 3;
    this.#retryDelayMs = options.retryDelayMs ?? 100;
    this.#token = resolveToken(options.token);
    this.#tls = resolveTls(options, this.url);
  }

  /** Whether calls carry a bearer token. */
  get hasToken(): boolean {
    return this.#token !== null;
  }

  /**
   * Takes the lock on `service` (or, with `service` null and `label`, on any free resource
   * carrying the label), waiting in line for up to `wait`; throws LockHeldError or
   * WaitTimeoutError (with every holder), LimitMismatchError, NoSuchLabelError. Every acquire carries an Idempotency-Key of its own, so it is retried
   * safely when the connection breaks or the server answers 503 (even after the server may
   * have granted the lock): a retry gets the same lock, or takes the same place in line.
   */
  acquire(service: string | null, options: AcquireOptions = {}): Promise<LockInfo> {
    const body: CreateLockBody = { who: options.who ?? defaultWho() };
    if (service !== null) body.service = service;
    if (options.label !== undefined) body.label = options.label;
    if (options.limit !== undefined) body.limit = options.limit;
    if (options.mode !== undefined) body.mode = options.mode;
    Object.assign(body, commonBody(options));
    return this.#request<LockInfo>('POST', `${API}/lock`, body, options.signal, {
      idempotencyKey: options.idempotencyKey ?? randomUUID(),
    });
  }

  /**
   * Takes every claim of `locks` at once, or none (waiting for all of them together up to
   * `wait`); throws LockHeldError or WaitTimeoutError naming the holders. Retried safely like
   * `acquire`, with an Idempotency-Key of its own.
   */
  acquireGroup(options: GroupOptions): Promise<LockGroup> {
    const body: CreateGroupBody = {
      who: options.who ?? defaultWho(),
      locks: options.locks.map((claim) => ({ ...claim })),
      ...commonBody(options),
    };
    return this.#request<LockGroup>('POST', `${API}/locks`, body, options.signal, {
      idempotencyKey: options.idempotencyKey ?? randomUUID(),
    });
  }

  /** A group's locks that are still held; throws LockNotFoundError when none is. */
  getGroup(id: string, options: { signal?: AbortSignal } = {}): Promise<LockGroup> {
    return this.#request<LockGroup>(
      'GET',
      `${API}/locks/${encodeURIComponent(id)}`,
      undefined,
      options.signal,
    );
  }

  /** Renews every held lock of a group (by `ttl`, or each one's own); LockNotHeldError when none is. */
  renewGroup(id: string, options: { ttl?: Duration; signal?: AbortSignal } = {}): Promise<LockGroup> {
    const body: RenewGroupBody =
      options.ttl === undefined ? {} : { ttlSeconds: durationSeconds(options.ttl, 'ttl') };
    return this.#request<LockGroup>(
      'POST',
      `${API}/locks/${encodeURIComponent(id)}/renew`,
      body,
      options.signal,
    );
  }

  /** Releases every held lock of a group; resolves with them. LockNotFoundError when none is held. */
  releaseGroup(id: string, options: { signal?: AbortSignal } = {}): Promise<LockGroup> {
    return this.#request<LockGroup>(
      'DELETE',
      `${API}/locks/${encodeURIComponent(id)}`,
      undefined,
      options.signal,
    );
  }

  /**
   * Creates or replaces the registered resource `name` (needs a lock:admin token); resolves
   * with it and whether it was created (rather than replaced).
   */
  async putResource(
    name: string,
    spec: ResourceSpec = {},
    options: { signal?: AbortSignal } = {},
  ): Promise<{ resource: ResourceInfo; created: boolean }> {
    const body: PutResourceBody = {};
    if (spec.labels !== undefined) body.labels = [...spec.labels];
    if (spec.properties !== undefined) body.properties = { ...spec.properties };
    if (spec.capacity !== undefined) body.capacity = spec.capacity;
    if (spec.description !== undefined) body.description = spec.description;
    const { status, body: resource } = await this.#exchange<ResourceInfo>(
      'PUT',
      resourcePath(name),
      body,
      options.signal,
    );
    return { resource, created: status === 201 };
  }

  /** The registered resource `name`; throws ResourceNotFoundError. */
  getResource(name: string, options: { signal?: AbortSignal } = {}): Promise<ResourceInfo> {
    return this.#request<ResourceInfo>('GET', resourcePath(name), undefined, options.signal);
  }

  /** The registered resources by name; with `label`, those carrying it. */
  async listResources(options: { label?: string; signal?: AbortSignal } = {}): Promise<ResourceInfo[]> {
    const query = options.label === undefined ? '' : `?${new URLSearchParams({ label: options.label })}`;
    const answer = await this.#request<Readonly<ResourceListJson>>(
      'GET',
      `${API}/resources${query}`,
      undefined,
      options.signal,
    );
    return answer.resources;
  }

  /** Removes a resource from the registry (lock:admin); ResourceInUseError while it is held. */
  async deleteResource(name: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#request<unknown>('DELETE', resourcePath(name), undefined, options.signal);
  }

  get(id: string, options: { signal?: AbortSignal } = {}): Promise<LockInfo> {
    return this.#request<LockInfo>('GET', `${API}/lock/${encodeURIComponent(id)}`, undefined, options.signal);
  }

  async release(id: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#request<ReleasedJson>(
      'DELETE',
      `${API}/lock/${encodeURIComponent(id)}`,
      undefined,
      options.signal,
    );
  }

  /** Extends the lease (by `ttl`, or the lock's own TTL); throws LockNotHeldError when lost. */
  renew(id: string, options: { ttl?: Duration; signal?: AbortSignal } = {}): Promise<LockInfo> {
    const body: RenewLockBody =
      options.ttl === undefined ? {} : { ttlSeconds: durationSeconds(options.ttl, 'ttl') };
    return this.#request<LockInfo>(
      'POST',
      `${API}/lock/${encodeURIComponent(id)}/renew`,
      body,
      options.signal,
    );
  }

  /**
   * Changes the note of a held lock (null or '' clears it); throws LockNotHeldError when the
   * lock is not held, or not this caller's.
   */
  setNote(id: string, note: string | null, options: { signal?: AbortSignal } = {}): Promise<LockInfo> {
    const body: UpdateLockBody = { note };
    return this.#request<LockInfo>('PATCH', `${API}/lock/${encodeURIComponent(id)}`, body, options.signal);
  }

  /**
   * Ends the lock `id` whoever holds it and takes its service for `who`, ahead of every
   * waiter (an admin's tool: needs lock:admin); `reason` is required and kept in the history
   * (`stolen`). Resolves with the new lock and the one it ended; throws LockNotFoundError
   * when no lock with that id is held. Retried like `forceRelease`, with the same cost: a
   * repeat after an attempt that did commit (a 503 after COMMIT) finds the lock gone and
   * throws LockNotFoundError although the first attempt took it (`list({ who })` says).
   */
  async steal(
    id: string,
    options: { who?: string; reason: string; ttl?: Duration; note?: string; signal?: AbortSignal },
  ): Promise<{ lock: LockInfo; stolen: LockInfo }> {
    const body: StealLockBody = { who: options.who ?? defaultWho(), reason: options.reason };
    if (options.ttl !== undefined) body.ttlSeconds = durationSeconds(options.ttl, 'ttl');
    if (options.note !== undefined) body.note = options.note;
    return this.#request<StolenJson>(
      'POST',
      `${API}/lock/${encodeURIComponent(id)}/steal`,
      body,
      options.signal,
    );
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
    const body: ForceReleaseBody = options.reason === undefined ? {} : { reason: options.reason };
    const answer = await this.#request<ForceReleasedJson>(
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
    return this.#request<HistoryPage>('GET', `${API}/history${suffix}`, undefined, options.signal);
  }

  list(options: ListOptions = {}): Promise<LockList> {
    const query = new URLSearchParams();
    if (options.service !== undefined) query.set('service', options.service);
    if (options.who !== undefined) query.set('who', options.who);
    if (options.page !== undefined) query.set('page', String(options.page));
    if (options.perPage !== undefined) query.set('per_page', String(options.perPage));
    const suffix = query.size > 0 ? `?${query}` : '';
    return this.#request<LockList>('GET', `${API}/locks/list${suffix}`, undefined, options.signal);
  }

  queue(service: string, options: { signal?: AbortSignal } = {}): Promise<QueueInfo> {
    return this.#request<QueueInfo>(
      'GET',
      `${API}/queue/${encodeURIComponent(service)}`,
      undefined,
      options.signal,
    );
  }

  /**
   * Runs `fn` while holding the lock: renews it every third of its TTL, aborts the signal
   * given to `fn` the moment the lock is lost (renewal refused, or the lease ran out while
   * the server could not be reached), and releases it in `finally`. A lock without TTL is
   * never renewed (it cannot be lost to expiry).
   */
  async withLock<T>(
    service: string | null,
    fn: (lock: LockInfo, signal: AbortSignal) => Promise<T>,
    options: AcquireOptions = {},
  ): Promise<T> {
    const lock = await this.acquire(service, options);
    const what = `lock ${lock.id} on ${lock.service}`;
    return this.#holding(
      {
        what,
        ttlSeconds: lock.ttlSeconds,
        signal: options.signal,
        renew: async (signal) => {
          await this.renew(lock.id, { signal });
        },
        release: () => this.release(lock.id),
      },
      (signal) => fn(lock, signal),
    );
  }

  /**
   * `withLock` for a group: takes every claim of `options.locks` at once (`acquireGroup`),
   * runs `fn` while renewing the group every third of its shortest TTL, aborts the signal
   * given to `fn` the moment any of its locks is lost, and releases the group in `finally`.
   */
  async withLocks<T>(
    options: GroupOptions,
    fn: (group: LockGroup, signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const group = await this.acquireGroup(options);
    const ttls = group.locks.flatMap((lock) => (lock.ttlSeconds === null ? [] : [lock.ttlSeconds]));
    return this.#holding(
      {
        what: `group ${group.id}`,
        ttlSeconds: ttls.length === 0 ? null : Math.min(...ttls),
        signal: options.signal,
        renew: async (signal) => {
          const renewed = await this.renewGroup(group.id, { signal });
          // A member released or force-released alone: the group is no longer whole.
          if (renewed.locks.length < group.locks.length) {
            throw new LockNotHeldError(
              `${group.locks.length - renewed.locks.length} of its ${group.locks.length} locks ended`,
            );
          }
        },
        release: async () => {
          await this.releaseGroup(group.id);
        },
      },
      (signal) => fn(group, signal),
    );
  }

  /**
   * Runs `fn` while holding what `held` names: renews it every third of its TTL, aborts the
   * signal given to `fn` the moment it is lost (renewal refused, or the lease ran out while
   * the server could not be reached), and releases it in `finally`. Nothing without a TTL is
   * renewed (it cannot be lost to expiry).
   */
  async #holding<T>(
    held: {
      readonly what: string;
      readonly ttlSeconds: number | null;
      readonly signal: AbortSignal | undefined;
      readonly renew: (signal: AbortSignal) => Promise<void>;
      readonly release: () => Promise<void>;
    },
    fn: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const lost = new AbortController();
    const signal = held.signal ? AbortSignal.any([held.signal, lost.signal]) : lost.signal;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let done = false;
    if (held.ttlSeconds !== null) {
      const ttlMs = held.ttlSeconds * 1000;
      let leaseEnds = Date.now() + ttlMs;
      const renewSoon = () => {
        timer = setTimeout(renew, Math.max(ttlMs / 3, 100));
      };
      const renew = async () => {
        try {
          await held.renew(lost.signal);
          leaseEnds = Date.now() + ttlMs;
        } catch (error) {
          if (done) return;
          if (error instanceof LockNotHeldError) {
            lost.abort(new LockLostError(`${held.what} was lost: ${error.message}`));
            return;
          }
          if (Date.now() >= leaseEnds) {
            lost.abort(new LockLostError(`${held.what}: lease ran out while renewals failed`));
            return;
          }
        }
        if (!done) renewSoon();
      };
      renewSoon();
    }
    try {
      return await fn(signal);
    } finally {
      done = true;
      clearTimeout(timer);
      if (!lost.signal.aborted) {
        await held.release().catch((error: unknown) => {
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
    options: { idempotencyKey?: string } = {},
  ): Promise<T> {
    return (await this.#exchange<T>(method, path, body, signal, options)).body;
  }

  /** One call, retried as safe; the success status and body, or the typed error. */
  async #exchange<T>(
    method: string,
    path: string,
    body: unknown,
    signal: AbortSignal | undefined,
    options: { idempotencyKey?: string } = {},
  ): Promise<{ status: number; body: T }> {
    const request = {
      method,
      body,
      signal,
      token: this.#token,
      tls: this.#tls,
      idempotencyKey: options.idempotencyKey,
    };
    for (let attempt = 0; ; attempt++) {
      let response: Response;
      try {
        response = await send(new URL(`${this.url}${path}`), request);
      } catch (error) {
        if (signal?.aborted) throw error;
        // Refused: nothing was sent, so trying again is safe. Anything else may have
        // reached the server, and is retried only with an idempotency key (the server then
        // answers the retry with what the first attempt got).
        if ((refused(error) || options.idempotencyKey !== undefined) && attempt < this.#retries) {
          await this.#backoff(attempt, signal);
          continue;
        }
        throw new ServerUnreachableError(`cannot reach Tracker at ${this.url}: ${describe(error, this.url)}`);
      }
      const json = response.text === '' ? {} : (JSON.parse(response.text) as Record<string, unknown>);
      if (response.status >= 200 && response.status < 300)
        return { status: response.status, body: json as T };
      // 401 and 403 are never retried: the same token gets the same answer.
      const error = errorFromResponse(response.status, json, response.retryAfter);
      if (error instanceof StoreUnavailableError && attempt < this.#retries) {
        await this.#backoff(attempt, signal);
        continue;
      }
      // 429 RATE_LIMITED: the server refuses before doing anything (the token and rate check
      // come first), so any call, acquire and release included, is safe to repeat. It gets
      // no budget of its own: it spends one of the same `retries` as a refused connection or
      // a 503, and waits what Retry-After asks instead of the backoff (sooner would only be
      // refused again), and only when that is at most MAX_RETRY_AFTER_SECONDS. Otherwise,
      // or once the retries are spent, the caller gets RateLimitedError.
      if (
        error instanceof RateLimitedError &&
        attempt < this.#retries &&
        error.retryAfterSeconds !== null &&
        error.retryAfterSeconds <= MAX_RETRY_AFTER_SECONDS
      ) {
        // A little jitter, so that callers refused together do not come back together.
        await sleep(error.retryAfterSeconds * 1000 + Math.random() * this.#retryDelayMs, signal);
        continue;
      }
      throw error;
    }
  }

  #backoff(attempt: number, signal: AbortSignal | undefined): Promise<void> {
    return sleep(this.#retryDelayMs * 2 ** attempt * (0.5 + Math.random() / 2), signal);
  }
}

type CommonBody = Pick<CreateLockBody, 'ttlSeconds' | 'waitSeconds' | 'priority' | 'note' | 'link'>;

/** The body fields every acquire shares (TTL, wait, priority, note, link), as the server takes them. */
function commonBody(options: AcquireCommonOptions): CommonBody {
  const body: CommonBody = {};
  if (options.ttl !== undefined) body.ttlSeconds = durationSeconds(options.ttl, 'ttl');
  if (options.wait !== undefined) body.waitSeconds = durationSeconds(options.wait, 'wait');
  if (options.priority !== undefined) body.priority = options.priority;
  if (options.note !== undefined) body.note = options.note;
  if (options.link !== undefined) body.link = options.link;
  return body;
}

function resourcePath(name: string): string {
  return `${API}/resources/${encodeURIComponent(name)}`;
}

/** Waits `ms`, or rejects with the signal's reason when it aborts first. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

interface Response {
  readonly status: number;
  readonly text: string;
  readonly retryAfter: string | undefined;
}

/**
 * One HTTP exchange with node:http(s), not fetch: fetch gives up on a response after 300 s
 * without headers, and an acquire that waits in line may take an hour to answer.
 */
function send(
  url: URL,
  options: {
    method: string;
    body: unknown;
    signal: AbortSignal | undefined;
    token: string | null;
    tls: TlsMaterial;
    idempotencyKey: string | undefined;
  },
): Promise<Response> {
  const { method, body, signal, token, tls, idempotencyKey } = options;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const transport = url.protocol === 'https:' ? https : http;
  const headers: Record<string, string | number> =
    payload === undefined
      ? {}
      : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (idempotencyKey !== undefined) headers['idempotency-key'] = idempotencyKey;
  // With https, the CA, certificate and key are part of the global agent's key for the
  // connection: connections made with different ones are never shared.
  const secure = url.protocol === 'https:' ? tls : {};
  return new Promise((resolve, reject) => {
    const request = transport.request(url, { method, signal, headers, ...secure }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({
          status: response.statusCode ?? 0,
          text: Buffer.concat(chunks).toString('utf8'),
          retryAfter: response.headers['retry-after'],
        }),
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

/** TLS failures, said plainly: what is wrong and what to give. */
const UNTRUSTED = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);

function describe(error: unknown, url: string): string {
  const { code, message } = error as { code?: string; message?: string };
  if (code !== undefined && UNTRUSTED.has(code)) {
    return `the server's TLS certificate is not trusted (${code}): give the CA certificate that signed it (TRACKER_CA_FILE)`;
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return `the server's TLS certificate is not for this host name or address (${code})`;
  }
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') {
    return `the server's TLS certificate is not valid now (${code})`;
  }
  if (
    code !== undefined &&
    /CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN/.test(code)
  ) {
    return `the server refused the TLS connection (${code}): it requires a client certificate signed by its CA (TRACKER_CLIENT_CERT_FILE and TRACKER_CLIENT_KEY_FILE)`;
  }
  if (code === 'EPROTO' && /wrong version number|packet length too long/i.test(message ?? '')) {
    return `no TLS at the other end (${code}): is the server serving http:// rather than https://?`;
  }
  if (code === 'ECONNRESET' && /^http:/i.test(url)) {
    return `${code} (if the server serves HTTPS, use an https:// URL)`;
  }
  return code ?? message ?? String(error);
}
