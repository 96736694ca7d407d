import { AUTHENTICATION_OFF, type AuthenticationOff, type Caller } from '../core/auth.js';
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

export interface GateOptions {
  /** The tokens file's authority, or AUTHENTICATION_OFF: every caller may do everything. */
  readonly authentication: TokenAuthority | AuthenticationOff;
  /** null: no rate limit. */
  readonly limiter: RateLimiter | null;
}

export function createGate({ authentication, limiter }: GateOptions): Gate {
  if (authentication.kind === 'authentication-off') {
    return {
      authenticates: false,
      admit(_authorization, address) {
        limiter?.take(`address:${address}`);
        return AUTHENTICATION_OFF;
      },
    };
  }
  return {
    authenticates: true,
    admit(authorization) {
      const caller = authentication.authenticate(authorization);
      limiter?.take(`token:${caller.name}`);
      return caller;
    },
  };
}
