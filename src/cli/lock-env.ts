import type { LockGroup, LockInfo } from '../sdk/index.js';

/**
 * The environment variables that name what a job holds, the same for `tracker run`'s command
 * and for the steps after the GitHub Action (action/src/main.ts): kept here, in one place,
 * so that both say the same thing.
 */

/** A single lock: TRACKER_LOCK_ID, TRACKER_FENCING_TOKEN, TRACKER_SERVICE and the resource variables. */
export function lockEnv(lock: LockInfo): Record<string, string> {
  return {
    TRACKER_LOCK_ID: lock.id,
    TRACKER_FENCING_TOKEN: String(lock.fencingToken),
    TRACKER_SERVICE: lock.service,
    ...resourceEnv([lock]),
  };
}

/** A group: TRACKER_GROUP_ID and the resource variables of its locks. */
export function groupEnv(group: LockGroup): Record<string, string> {
  return { TRACKER_GROUP_ID: group.id, ...resourceEnv(group.locks) };
}

/**
 * What the command learns of the resources it holds, the way Lockable Resources exposes
 * them: TRACKER_RESOURCES (the names, comma-separated, in grant order), TRACKER_FENCING_TOKENS
 * (theirs, in the same order), and for each one i TRACKER_RESOURCE_<i> (its name) and
 * TRACKER_RESOURCE_<i>_<PROPERTY> (each property of a registered resource; the name upper-
 * cased, every other character than A-Z and 0-9 as `_`).
 */
export function resourceEnv(locks: readonly LockInfo[]): Record<string, string> {
  const env: Record<string, string> = {
    TRACKER_RESOURCES: locks.map((lock) => lock.service).join(','),
    TRACKER_FENCING_TOKENS: locks.map((lock) => String(lock.fencingToken)).join(','),
  };
  locks.forEach((lock, index) => {
    env[`TRACKER_RESOURCE_${index}`] = lock.service;
    const properties = Object.entries(lock.resource?.properties ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));
    for (const [key, value] of properties) {
      env[`TRACKER_RESOURCE_${index}_${key.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`] = value;
    }
  });
  return env;
}
