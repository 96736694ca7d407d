import { permissionDenied } from './errors.js';

/**
 * Who is calling, once a token was checked. Every core operation names its caller; there
 * is no default. With authentication off the caller is AUTHENTICATION_OFF, chosen once in
 * the composition root, and every call may do everything, as in the guide.
 *
 * Scopes nest: `lock:admin` includes `lock:write`, which includes `lock:read`.
 * - lock:read: get, list, queue, history, watch, metrics (only without service patterns).
 * - lock:write: acquire; release and renew the locks this token took.
 * - lock:admin: release and renew any lock, force-release.
 * `services`, when given, are glob patterns (`*` any run of characters, `?` one) a service
 * must match for this token to see or touch it.
 */
export interface Principal {
  readonly kind: 'token';
  /** The token's name: recorded as the `owner` of the locks it takes, shown to users. */
  readonly name: string;
  /**
   * The credential's identity, which ownership is bound to: derived from the token's hash
   * (`sha256:` and the hash's first 32 hex digits), or, for an entry with a certificate
   * subject and no hash, from that subject (`subject:` …). A new token under an old name has
   * another key, so it owns none of the old token's locks. Stored with each lock; never shown.
   */
  readonly key: string;
  readonly scopes: ReadonlySet<Scope>;
  /** null: every service. */
  readonly services: readonly string[] | null;
}

export const SCOPES = ['lock:read', 'lock:write', 'lock:admin'] as const;
export type Scope = (typeof SCOPES)[number];

const RANK: Readonly<Record<Scope, number>> = { 'lock:read': 1, 'lock:write': 2, 'lock:admin': 3 };

/** The caller of every operation while authentication is off: may do everything. */
export interface AuthenticationOff {
  readonly kind: 'authentication-off';
}

export const AUTHENTICATION_OFF: AuthenticationOff = Object.freeze({ kind: 'authentication-off' });

/** The caller of a core operation: a checked token, or AUTHENTICATION_OFF. */
export type Caller = Principal | AuthenticationOff;

/** The token name recorded as a lock's owner; null with authentication off. */
export function ownerName(caller: Caller): string | null {
  return caller.kind === 'token' ? caller.name : null;
}

/** The identity recorded with a lock, which release and renewal match; null with authentication off. */
export function ownerKey(caller: Caller): string | null {
  return caller.kind === 'token' ? caller.key : null;
}

export function hasScope(caller: Caller, scope: Scope): boolean {
  if (caller.kind === 'authentication-off') return true;
  for (const held of caller.scopes) if (RANK[held] >= RANK[scope]) return true;
  return false;
}

/** Throws PERMISSION_DENIED unless the caller has the scope. */
export function requireScope(caller: Caller, scope: Scope): void {
  if (!hasScope(caller, scope)) throw permissionDenied(`this token lacks the ${scope} scope`);
}

/** Whether the caller may see or touch `service` (its token's service patterns). */
export function mayUseService(caller: Caller, service: string): boolean {
  if (caller.kind === 'authentication-off' || caller.services === null) return true;
  return caller.services.some((pattern) => globToRegExp(pattern).test(service));
}

/** Throws PERMISSION_DENIED unless the caller has the scope for this service. */
export function requireService(caller: Caller, scope: Scope, service: string): void {
  requireScope(caller, scope);
  if (!mayUseService(caller, service)) {
    throw permissionDenied(`this token may not use the service "${service}"`);
  }
}

/**
 * Throws PERMISSION_DENIED unless the caller has the scope over every service (a token
 * without service patterns): for what counts every service at once and cannot be narrowed
 * to some, such as the metrics.
 */
export function requireEveryService(caller: Caller, scope: Scope, what: string): void {
  requireScope(caller, scope);
  if (caller.kind === 'token' && caller.services !== null) {
    throw permissionDenied(`this token may use only some services, and ${what} covers every service`);
  }
}

const compiled = new Map<string, RegExp>();

/** `deploy-*` → /^deploy-.*$/u; every other character is literal. */
export function globToRegExp(pattern: string): RegExp {
  let regexp = compiled.get(pattern);
  if (!regexp) {
    const body = [...pattern]
      .map((char) => {
        if (char === '*') return '.*';
        if (char === '?') return '.';
        return char.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
      })
      .join('');
    regexp = new RegExp(`^${body}$`, 'su');
    if (compiled.size > 10_000) compiled.clear();
    compiled.set(pattern, regexp);
  }
  return regexp;
}

/** For streams and lists: null when the caller sees every service, else the test to apply. */
export function serviceFilter(caller: Caller): ((service: string) => boolean) | undefined {
  if (caller.kind === 'authentication-off' || caller.services === null) return undefined;
  return (service) => mayUseService(caller, service);
}
