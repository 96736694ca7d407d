/**
 * Time is a dependency: `core/` reads it only through an injected Clock. On the embedded
 * store the process clock decides createdAt and expiry; stores with a clock of their own
 * (PostgreSQL) use that one for those instead. Tests inject a clock they move by hand
 * rather than sleeping.
 */
export interface Clock {
  /** Wall-clock time: timestamps, and deadlines given as instants (a gRPC call's). */
  now(): Date;
  /**
   * Monotonic milliseconds from an arbitrary origin, for durations and for how old a cached
   * value is: never jumps when the wall clock is set.
   */
  monotonicMs(): number;
}

export const systemClock: Clock = { now: () => new Date(), monotonicMs: () => performance.now() };
