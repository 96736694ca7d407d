import { LockHeldError, type LockInfo, TrackerApiError, WaitTimeoutError } from '../../src/sdk/index.js';
import type { LockRequest } from './lock-request.js';

/** `W (service S since T, lock L): note, link` for each holder (its note and link when it has them). */
function holders(locks: readonly LockInfo[]): string {
  return locks
    .map((lock) => {
      const about = [lock.note, lock.link].filter((part) => part !== null).join(' ');
      return `${lock.who} (${lock.service} since ${lock.createdAt}, lock ${lock.id})${about === '' ? '' : `: ${about}`}`;
    })
    .join('; ');
}

/**
 * Why the job did not get its lock, as the one line of its `::error::` annotation: for a
 * held service, who holds it and since when; otherwise the server's (or the SDK's) message.
 */
export function failureMessage(request: LockRequest, failure: unknown): string {
  if (failure instanceof WaitTimeoutError) {
    return `Tracker: waited ${request.wait} for ${request.what}; still held by ${holders(failure.holders)}`;
  }
  if (failure instanceof LockHeldError) {
    return `Tracker: ${request.what} is held by ${holders(failure.holders)} (not waiting: wait is ${request.wait})`;
  }
  if (failure instanceof TrackerApiError) {
    return `Tracker: could not lock ${request.what}: ${failure.message} (${failure.code})`;
  }
  return `Tracker: could not lock ${request.what}: ${(failure as Error).message ?? String(failure)}`;
}
