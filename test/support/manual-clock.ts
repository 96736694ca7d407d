import type { Clock } from '../../src/core/clock.js';

/** A clock that only moves when a test moves it: wall time and monotonic time alike. */
export class ManualClock implements Clock {
  #now: number;
  #monotonic = 0;

  constructor(start = Date.parse('2024-01-15T10:00:00.000Z')) {
    this.#now = start;
  }

  now(): Date {
    return new Date(this.#now);
  }

  monotonicMs(): number {
    return this.#monotonic;
  }

  advance(ms: number): void {
    this.#now += ms;
    this.#monotonic += ms;
  }
}
