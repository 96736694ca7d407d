/**
 * The one way tests wait: for a condition, never for a fixed time. `condition` is polled
 * until it returns something other than false/undefined/null (its value is returned) or
 * the time runs out (the test fails, naming what it waited for and the last value seen).
 * A condition that throws is polled again; the last error is reported on a timeout.
 */
export interface WaitForOptions {
  /** What the test waits for, for the failure message. */
  readonly what: string;
  /** Longest wait, in ms (default 10,000). */
  readonly timeoutMs?: number;
  /**
   * Between polls, in ms. Default: 10, growing by half each poll up to 100, so that a long
   * wait does not spend the machine's time asking (many tests wait at once).
   */
  readonly intervalMs?: number;
}

export async function waitFor<T>(
  condition: () => T | Promise<T>,
  options: WaitForOptions,
): Promise<Exclude<T, false | null | undefined>> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  let intervalMs = options.intervalMs ?? 10;
  const growing = options.intervalMs === undefined;
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  let failure: unknown;
  for (;;) {
    try {
      last = await condition();
      failure = undefined;
      if (last !== false && last !== null && last !== undefined) {
        return last as Exclude<T, false | null | undefined>;
      }
    } catch (error) {
      failure = error;
    }
    if (performance.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
    if (growing) intervalMs = Math.min(100, intervalMs * 1.5);
  }
  const seen = failure === undefined ? `last value: ${describe(last)}` : `last error: ${describe(failure)}`;
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${options.what} (${seen})`, {
    cause: failure,
  });
}

/** Resolves with the value `promise` settles to, or fails the test after `timeoutMs`. */
export async function within<T>(promise: Promise<T>, options: WaitForOptions): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${options.what}`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function describe(value: unknown): string {
  if (value instanceof Error) return value.message;
  try {
    return JSON.stringify(value)?.slice(0, 300) ?? String(value);
  } catch {
    return String(value);
  }
}
