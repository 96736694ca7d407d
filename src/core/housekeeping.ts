import type { LockStore } from './lock-store.js';

export interface HousekeepingOptions {
  /** Expires what is due (the service's sweep, which reports each expiry). */
  readonly sweep: () => Promise<number>;
  readonly store: Pick<LockStore, 'pruneHistory' | 'pruneIdempotencyKeys'>;
  /** How long the history keeps events, in ms; null keeps them forever. */
  readonly retentionMs: number | null;
  /** How long an idempotency key is kept once its lock is gone, in ms. */
  readonly keyRetentionMs: number;
  /** Between sweeps, in ms (default 1000). */
  readonly sweepMs?: number;
  /** Between retention runs, in ms (default 60,000). */
  readonly pruneMs?: number;
  /** A failed round (the store unreachable, say); the next round tries again. */
  readonly onError: (task: Task, error: unknown) => void;
}

type Task = 'sweep' | 'prune' | 'prune-keys';

/** Events one prune statement deletes at most; a round runs at most PRUNE_ROUNDS of them. */
const PRUNE_BATCH = 5000;
const PRUNE_ROUNDS = 20;

/**
 * The background chores of a process: the sweep that turns due leases into `expired`
 * events (expiry itself never waits for it: every read filters expired rows) and grants
 * their services to waiters, the history's retention, and that of idempotency keys. Every replica runs them; the
 * stores make concurrent sweeps and prunes skip each other's rows.
 *
 * Each chore is a chain of timeouts, never overlapping itself; the timers do not keep the
 * process alive, and `stop` waits for a round in progress.
 */
export function startHousekeeping(options: HousekeepingOptions) {
  const sweepMs = options.sweepMs ?? 1000;
  const pruneMs = options.pruneMs ?? 60_000;
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const running = new Set<Promise<void>>();
  let stopped = false;

  const every = (ms: number, task: Task, round: () => Promise<unknown>) => {
    const schedule = () => {
      if (stopped) return;
      const timer = setTimeout(() => {
        timers.delete(timer);
        const work = round()
          .then(
            () => {},
            (error: unknown) => options.onError(task, error),
          )
          .finally(() => {
            running.delete(work);
            schedule();
          });
        running.add(work);
      }, ms);
      timer.unref?.();
      timers.add(timer);
    };
    schedule();
  };

  every(sweepMs, 'sweep', options.sweep);
  every(pruneMs, 'prune-keys', async () => {
    for (let round = 0; round < PRUNE_ROUNDS; round++) {
      if ((await options.store.pruneIdempotencyKeys(options.keyRetentionMs, PRUNE_BATCH)) < PRUNE_BATCH)
        return;
    }
  });
  const { retentionMs } = options;
  if (retentionMs !== null) {
    every(pruneMs, 'prune', async () => {
      for (let round = 0; round < PRUNE_ROUNDS; round++) {
        if ((await options.store.pruneHistory(retentionMs, PRUNE_BATCH)) < PRUNE_BATCH) return;
      }
    });
  }

  return {
    async stop(): Promise<void> {
      stopped = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      await Promise.all(running);
    },
  };
}
