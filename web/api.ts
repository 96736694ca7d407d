/** The REST API as the dashboard uses it, with the optional bearer token on every call. */

/** Relative, so that the dashboard also works behind a reverse proxy's path prefix. */
export const API_BASE = 'api/v1alpha1';
export const TOKEN_KEY = 'tracker.token';

export interface Lock {
  readonly id: string;
  readonly service: string;
  readonly who: string;
  readonly createdAt: string;
  readonly ttlSeconds: number | null;
  readonly expiresAt: string | null;
  readonly fencingToken: number;
  readonly waiters: number;
}

export type EventType =
  | 'acquired'
  | 'released'
  | 'expired'
  | 'renewed'
  | 'force-released'
  | 'queued'
  | 'dequeued';

export interface LockEvent {
  readonly id: number;
  readonly type: EventType;
  readonly at: string;
  readonly service: string;
  readonly who: string;
  /** For queued/dequeued: the waiting request (fencingToken null). */
  readonly lock: Omit<Lock, 'fencingToken'> & { readonly fencingToken: number | null };
  readonly heldSeconds: number | null;
  readonly reason: string | null;
}

export interface Snapshot {
  readonly eventId: number;
  readonly locks: Lock[];
}

export interface Queue {
  readonly service: string;
  readonly holder: Lock | null;
  readonly waiters: { readonly who: string; readonly since: string; readonly position: number }[];
}

export interface History {
  readonly events: LockEvent[];
  readonly nextBefore: number | null;
}

/** The token when localStorage is unavailable (private modes may refuse it). */
let memoryToken = '';

export function getToken(): string {
  try {
    return localStorage.getItem(TOKEN_KEY) ?? '';
  } catch {
    return '';
  }
}

export function setToken(token: string): void {
  try {
    if (token === '') localStorage.removeItem(TOKEN_KEY);
    else localStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Storage disabled: the token lasts until the page closes.
    memoryToken = token;
  }
}

/** Headers every request carries: the bearer token when one is set. */
export function authHeaders(): Record<string, string> {
  const token = getToken() || memoryToken;
  return token === '' ? {} : { authorization: `Bearer ${token}` };
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
  ) {
    super(message);
  }
}

export async function api<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json', ...authHeaders() };
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
    );
  }
  return json as T;
}

export function forceRelease(id: string, reason: string): Promise<{ success: boolean; lock: Lock }> {
  return api('POST', `/lock/${encodeURIComponent(id)}/force-release`, reason === '' ? {} : { reason });
}

export function getQueue(service: string, signal?: AbortSignal): Promise<Queue> {
  return api('GET', `/queue/${encodeURIComponent(service)}`, undefined, signal);
}

export function getHistory(
  query: { service?: string; since?: string; until?: string; limit?: number; before?: number },
  signal?: AbortSignal,
): Promise<History> {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined) params.set(key, String(value));
  }
  return api('GET', `/history?${params.toString()}`, undefined, signal);
}
