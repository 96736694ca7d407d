import { AUTHENTICATION_OFF, type AuthenticationOff, type Caller } from '../core/auth.js';
import { type Clock, systemClock } from '../core/clock.js';
import { ErrorCode, rateLimited, TrackerError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { RateLimiter } from '../core/rate-limiter.js';
import { failureKey } from './client-address.js';
import type { TokenAuthority } from './token-file.js';

/** What a request presents, as its transport read it. */
export interface Credentials {
  /** The Authorization header (REST), or the `authorization` metadata (gRPC). */
  readonly authorization: string | undefined;
  /** The client's address: the socket's peer, or behind trusted proxies the forwarded one. */
  readonly address: string;
  /**
   * The subject of the client certificate the TLS layer verified (mutual TLS), as Node shows
   * it; undefined without one. A request with no Authorization acts as the tokens-file entry
   * with this certificate subject, if any.
   */
  readonly certificateSubject?: string | undefined;
}

/**
 * What every API call passes first, on both transports: the bearer token (when
 * authentication is on), the limit on failed authentications per client address, and the
 * rate limit (per token, or per client address without authentication). Health checks,
 * reflection, the OpenAPI document and the dashboard's static files do not pass here.
 */
export interface Gate {
  /** The caller of a request with these credentials; throws UNAUTHENTICATED or RATE_LIMITED. */
  admit(credentials: Credentials): Caller;
  /** Whether calls need a token. */
  readonly authenticates: boolean;
  /**
   * Whether the gate has logged this refusal itself (a rate-limited authentication failure,
   * logged once per address and interval): the transport then logs no line of its own.
   */
  alreadyLogged(error: unknown): boolean;
}

/** How an authentication failure was answered. */
export type AuthFailure = 'refused' | 'limited';

export interface GateOptions {
  /** The tokens file's authority, or AUTHENTICATION_OFF: every caller may do everything. */
  readonly authentication: TokenAuthority | AuthenticationOff;
  /** null: no rate limit. */
  readonly limiter: RateLimiter | null;
  /**
   * Failed authentications per client address (an IPv6 address by its /64); undefined or
   * null: unlimited. Once an address has used its allowance, every request from it answers
   * RATE_LIMITED, a correct token too, until the allowance refills: otherwise a 429 for a
   * wrong token and a 200 for the right one would let guessing go on at full speed.
   */
  readonly failureLimiter?: RateLimiter | null;
  /** Told of every authentication failure: answered 401 (`refused`) or 429 (`limited`). */
  readonly onAuthFailure?: (result: AuthFailure, address: string) => void;
  /** Where rate-limited failures are logged, at most once per address and interval. */
  readonly logger?: Logger;
  readonly clock?: Clock;
}

/** At most one warning per address this often, in ms, about its failures being limited. */
const WARN_INTERVAL_MS = 60_000;

export function createGate({
  authentication,
  limiter,
  failureLimiter = null,
  onAuthFailure,
  logger,
  clock = systemClock,
}: GateOptions): Gate {
  const logged = new WeakSet<object>();
  const alreadyLogged = (error: unknown) => typeof error === 'object' && error !== null && logged.has(error);
  if (authentication.kind === 'authentication-off') {
    return {
      authenticates: false,
      admit({ address }) {
        limiter?.take(`address:${address}`);
        return AUTHENTICATION_OFF;
      },
      alreadyLogged,
    };
  }

  /** When each address was last warned about (and how many refusals since), to log once per interval. */
  const warned = new Map<string, { at: number; since: number }>();
  const limited = (key: string, address: string, retryAfterSeconds: number) => {
    onAuthFailure?.('limited', address);
    const error = rateLimited(retryAfterSeconds);
    if (!logger) return error;
    const at = clock.monotonicMs();
    const last = warned.get(key);
    if (last && at - last.at < WARN_INTERVAL_MS) {
      last.since++;
      logged.add(error);
      return error;
    }
    if (warned.size >= 10_000) {
      for (const [known, entry] of warned) if (at - entry.at >= WARN_INTERVAL_MS) warned.delete(known);
    }
    warned.set(key, { at, since: 0 });
    logger.warn(
      { address, key, retryAfterSeconds, refusedSinceLastWarning: last?.since ?? 0 },
      'authentication failures from this address are rate limited: its requests answer 429',
    );
    logged.add(error);
    return error;
  };

  return {
    authenticates: true,
    admit({ authorization, address, certificateSubject }) {
      const key = failureKey(address);
      const wait = failureLimiter?.retryAfter(key) ?? null;
      if (wait !== null) throw limited(key, address, wait);
      let caller: Caller;
      try {
        caller = authentication.authenticate(authorization, certificateSubject);
      } catch (error) {
        if (error instanceof TrackerError && error.code === ErrorCode.UNAUTHENTICATED) {
          onAuthFailure?.('refused', address);
          try {
            failureLimiter?.take(key);
          } catch {
            // Cannot happen: the check above found at least one failure's worth left.
          }
        }
        throw error;
      }
      limiter?.take(`token:${caller.name}`);
      return caller;
    },
    alreadyLogged,
  };
}
