import type { Caller } from '../core/auth.js';
import type { RateLimiter } from '../core/rate-limiter.js';
import type { TokenAuthority } from './token-file.js';

/**
 * What every API call passes first, on both transports: the bearer token (when
 * authentication is on) and the rate limit (per token, or per client address without
 * authentication). Health checks, reflection, the OpenAPI document and the dashboard's
 * static files do not pass here.
 */
export interface Gate {
  /**
   * The caller of a request carrying this Authorization value from this address; throws
   * UNAUTHENTICATED or RATE_LIMITED.
   */
  admit(authorization: string | undefined, address: string): Caller;
  /** Whether calls need a token. */
  readonly authenticates: boolean;
}

export function createGate(authority: TokenAuthority | null, limiter: RateLimiter | null): Gate {
  return {
    authenticates: authority !== null,
    admit(authorization, address) {
      const caller = authority ? authority.authenticate(authorization) : null;
      limiter?.take(caller ? `token:${caller.name}` : `address:${address}`);
      return caller;
    },
  };
}

/** A gate that lets everything through: authentication off, no rate limit. */
export const OPEN_GATE: Gate = createGate(null, null);
