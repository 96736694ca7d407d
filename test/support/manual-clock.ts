import type { Clock } from '../../src/core/clock.js';

/** A clock that only moves when a test moves it. */
export class ManualClock implements Clock {
  #now: number;

  constructor(start = Date.parse('2024-01-15T10:00:00.000Z')) {
    this.#now = start;
  }

  now(): Date {
    return new Date(this.#now);
  }

  advance(ms: number): void {
    this.#now += ms;
  }
}
