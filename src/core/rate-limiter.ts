import type { Clock } from './clock.js';
import { rateLimited } from './errors.js';

export interface RateLimiterOptions {
  /** Sustained requests per second per key. */
  readonly perSecond: number;
  /** Requests a key may make at once after a quiet spell. */
  readonly burst: number;
  /** Refills are measured on its monotonic time. */
  readonly clock: Clock;
  /** Keys tracked at most; idle full buckets are forgotten first (default 100,000). */
  readonly maxKeys?: number;
}

/**
 * Token buckets per key (a token name, or a client address without authentication), in
 * this process's memory: each replica limits on its own, so N replicas admit up to N times
 * the rate in total.
 */
export function createRateLimiter({ perSecond, burst, clock, maxKeys = 100_000 }: RateLimiterOptions) {
  const buckets = new Map<string, { tokens: number; at: number }>();
  const refill = (bucket: { tokens: number; at: number }, at: number) => {
    bucket.tokens = Math.min(burst, bucket.tokens + ((at - bucket.at) / 1000) * perSecond);
    bucket.at = at;
  };
  const forgetIdle = (at: number) => {
    for (const [key, bucket] of buckets) {
      refill(bucket, at);
      if (bucket.tokens >= burst) buckets.delete(key);
    }
    // Still too many active keys: forget the oldest (Map keeps insertion order).
    for (const key of buckets.keys()) {
      if (buckets.size < maxKeys) break;
      buckets.delete(key);
    }
  };

  const wait = (bucket: { tokens: number }) => Math.max(1, Math.ceil((1 - bucket.tokens) / perSecond));

  return {
    /**
     * Seconds until `key` may make a request, without taking anything; null when it may now
     * (a key never seen may).
     */
    retryAfter(key: string): number | null {
      const bucket = buckets.get(key);
      if (!bucket) return null;
      refill(bucket, clock.monotonicMs());
      return bucket.tokens >= 1 ? null : wait(bucket);
    },

    /** Takes one request's worth for `key`; throws RATE_LIMITED with when to retry. */
    take(key: string): void {
      const at = clock.monotonicMs();
      let bucket = buckets.get(key);
      if (!bucket) {
        if (buckets.size >= maxKeys) forgetIdle(at);
        bucket = { tokens: burst, at };
        buckets.set(key, bucket);
      } else refill(bucket, at);
      if (bucket.tokens >= 1) {
        bucket.tokens -= 1;
        return;
      }
      throw rateLimited(wait(bucket));
    },
  };
}

export type RateLimiter = ReturnType<typeof createRateLimiter>;
