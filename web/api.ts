/** The REST API as the dashboard uses it, with the optional bearer token on every call. */

// The wire types are the server's own schemas (type-only: nothing of the server is bundled).
import type {
  CreateLockBody,
  EventJson,
  ForceReleasedJson,
  GroupJson,
  HistoryJson,
  LockJson,
  QueueJson,
  ResourceJson,
  ResourceListJson,
  SnapshotJson,
  StealLockBody,
  StolenJson,
} from '../src/http/schemas.js';

/** Relative, so that the dashboard also works behind a reverse proxy's path prefix. */
export const API_BASE = 'api/v1alpha1';
export const TOKEN_KEY = 'tracker.token';

export type Lock = Readonly<LockJson>;
/**
 * A held lock as the watch stream tells it: a snapshot's lock, or an event's (which names
 * no resource: the Resources view and the queue show those).
 */
export type HeldLock = Readonly<
  Pick<
    LockJson,
    | 'id'
    | 'service'
    | 'who'
    | 'createdAt'
    | 'ttlSeconds'
    | 'expiresAt'
    | 'fencingToken'
    | 'waiters'
    | 'owner'
    | 'limit'
    | 'mode'
    | 'groupId'
    | 'note'
    | 'link'
  >
>;
export type Resource = Readonly<ResourceJson>;
export type Group = Readonly<GroupJson>;
export type LockEvent = Readonly<EventJson>;
export type EventType = EventJson['type'];
export type Snapshot = Readonly<SnapshotJson>;
export type Queue = Readonly<QueueJson>;
export type History = Readonly<HistoryJson>;

/** The token when localStorage is unavailable (private modes may refuse it). */
let memoryToken = '';

/** The saved token ('' when none). */
export function getToken(): string {
  try {
    return localStorage.getItem(TOKEN_KEY) ?? memoryToken;
  } catch {
    return memoryToken;
  }
}

/** Saves the token in this browser only (localStorage; memory when storage is refused). */
export function setToken(token: string): void {
  memoryToken = token;
  try {
    if (token === '') localStorage.removeItem(TOKEN_KEY);
    else localStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Storage disabled: the token lasts until the page closes.
  }
}

/** Headers every request carries: the bearer token when one is set. */
export function authHeaders(token = getToken()): Record<string, string> {
  return token === '' ? {} : { authorization: `Bearer ${token}` };
}

/**
 * What a call answered 401 does: resolves true once another token is in place (the user
 * signed in), false when there will be none (the prompt was dismissed). Set by auth.ts.
 */
type UnauthorizedHandler = (rejected: string, status: number) => Promise<boolean>;
let onUnauthorized: UnauthorizedHandler | undefined;

export function setUnauthorizedHandler(handler: UnauthorizedHandler): void {
  onUnauthorized = handler;
}

/** Calls made at most, per api() call: a sign-in or a rate-limit wait between two. */
const MAX_ATTEMPTS = 4;
/** Longest a call waits on a 429's Retry-After before retrying; longer ones fail at once. */
const MAX_RETRY_AFTER_MS = 60_000;

/**
 * A Retry-After header (seconds, or an HTTP date) in ms; undefined when absent or
 * unreadable. Never below one second.
 */
export function retryAfterMs(response: Response): number | undefined {
  const header = response.headers.get('retry-after');
  if (header === null || header.trim() === '') return undefined;
  const seconds = /^\s*\d+\s*$/.test(header) ? Number(header) * 1000 : Date.parse(header) - Date.now();
  return Number.isFinite(seconds) ? Math.max(1000, seconds) : undefined;
}

/** Server clock minus browser clock, from the Date header of answers (1 s resolution). */
let clockOffsetMs = 0;

/** Now, by the server's clock (lock times are the server's). */
export function serverNow(): number {
  return Date.now() + clockOffsetMs;
}

export function noteServerDate(response: Response): void {
  const header = response.headers.get('date');
  const at = header === null ? Number.NaN : Date.parse(header);
  if (!Number.isFinite(at)) return;
  // The header is truncated to the second: on average half a second behind.
  const offset = at + 500 - Date.now();
  // Within the header's resolution the clocks agree; keep the browser's own then.
  clockOffsetMs = Math.abs(offset) < 1500 ? 0 : offset;
}

export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** For 429: when the server said to retry, in ms. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

export interface CallOptions {
  readonly signal?: AbortSignal | undefined;
  /** Told before the call waits out a rate limit (429), with the wait in ms. */
  readonly onWait?: ((ms: number) => void) | undefined;
}

/**
 * One API call, with its answer parsed. A 401 asks for a token (onUnauthorized) and calls
 * again with it; a 429 RATE_LIMITED waits as long as Retry-After says (refused before the
 * server did anything: safe to repeat) and calls again. At most MAX_ATTEMPTS calls.
 */
export async function api<T>(
  method: string,
  path: string,
  body?: unknown,
  options: CallOptions = {},
): Promise<T> {
  let failure: ApiError | undefined;
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const token = getToken();
    try {
      return await callOnce<T>(method, path, body, token, options.signal);
    } catch (error) {
      if (!(error instanceof ApiError) || attempt === MAX_ATTEMPTS) throw error;
      failure = error;
      if (error.status === 401 && onUnauthorized) {
        if (await onUnauthorized(token, error.status)) continue;
        throw error;
      }
      const wait = error.retryAfterMs ?? 1000;
      if (error.status === 429 && error.code === 'RATE_LIMITED' && wait <= MAX_RETRY_AFTER_MS) {
        options.onWait?.(wait);
        await sleep(wait, options.signal);
        continue;
      }
      throw error;
    }
  }
  // Unreachable: the last attempt returns or throws.
  throw failure ?? new Error('no attempt made');
}

async function callOnce<T>(
  method: string,
  path: string,
  body: unknown,
  token: string,
  signal: AbortSignal | undefined,
): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json', ...authHeaders(token) };
  const init: RequestInit = { method, headers, cache: 'no-store' };
  if (signal) init.signal = signal;
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`${API_BASE}${path}`, init);
  noteServerDate(response);
  const text = await response.text();
  let json: unknown = null;
  try {
    json = text === '' ? null : JSON.parse(text);
  } catch {
    // Not JSON (a proxy's error page): reported by status below.
  }
  if (!response.ok) {
    const error = (json ?? {}) as { error?: unknown; code?: unknown };
    throw new ApiError(
      response.status,
      typeof error.code === 'string' ? error.code : `HTTP_${response.status}`,
      typeof error.error === 'string' ? error.error : `${response.status} ${response.statusText}`,
      retryAfterMs(response),
    );
  }
  return json as T;
}

/** Resolves after `ms`, or rejects when `signal` aborts first. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
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

/**
 * Checks a token before it is saved, with one cheap read: undefined when the server takes
 * it, else the refusal (401: unknown token, 403: no lock:read, 429: too many tries).
 */
export async function checkToken(token: string): Promise<ApiError | undefined> {
  try {
    await callOnce('GET', '/locks/list?per_page=1', undefined, token, AbortSignal.timeout(10_000));
    return undefined;
  } catch (error) {
    if (error instanceof ApiError) return error;
    return new ApiError(0, 'NETWORK', error instanceof Error ? error.message : String(error));
  }
}

export function forceRelease(
  id: string,
  reason: string,
  onWait?: (ms: number) => void,
): Promise<ForceReleasedJson> {
  return api('POST', `/lock/${encodeURIComponent(id)}/force-release`, reason === '' ? {} : { reason }, {
    onWait,
  });
}

/** Ends a held lock and takes its service at once (POST /lock/{id}/steal, lock:admin). */
export function stealLock(
  id: string,
  body: StealLockBody,
  onWait?: (ms: number) => void,
): Promise<StolenJson> {
  return api('POST', `/lock/${encodeURIComponent(id)}/steal`, body, { onWait });
}

/** Takes a free service for a while (POST /lock, never waiting): a reservation. */
export function reserve(body: CreateLockBody, onWait?: (ms: number) => void): Promise<LockJson> {
  return api('POST', '/lock', body, { onWait });
}

/** Releases every lock of a group (DELETE /locks/{groupId}); answers what was released. */
export function releaseGroup(groupId: string, onWait?: (ms: number) => void): Promise<Group> {
  return api('DELETE', `/locks/${encodeURIComponent(groupId)}`, undefined, { onWait });
}

/** The registered resources, by name, with their holders and waiters. */
export function getResources(signal?: AbortSignal): Promise<readonly Resource[]> {
  return api<ResourceListJson>('GET', '/resources', undefined, { signal }).then((list) => list.resources);
}

export function getQueue(service: string, signal?: AbortSignal): Promise<Queue> {
  return api('GET', `/queue/${encodeURIComponent(service)}`, undefined, { signal });
}

export function getHistory(
  query: { service?: string; since?: string; until?: string; limit?: number; before?: number },
  signal?: AbortSignal,
): Promise<History> {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined) params.set(key, String(value));
  }
  return api('GET', `/history?${params.toString()}`, undefined, { signal });
}
