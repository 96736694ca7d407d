/**
 * Time is a dependency. On the embedded store the process clock decides createdAt (and,
 * later, expiry); stores that have a clock of their own (PostgreSQL) use that one instead.
 * Tests inject a clock they move by hand rather than sleeping.
 */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };
