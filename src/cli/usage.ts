/** Exit codes, the same for every command. */
export const EXIT = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  HELD: 3,
  WAIT_TIMEOUT: 4,
  LOST: 75,
} as const;

/** A usage mistake: printed as one line, exit 2. */
export class UsageError extends Error {}

/** A failure to print as one line after `tracker: `, exit 1 (not a usage mistake). */
export class CommandError extends Error {}

/** parseArgs, with its complaints turned into usage errors. */
export function parsed<T>(run: () => T): T {
  try {
    return run();
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

export const strict = { strict: true, allowPositionals: true } as const;
