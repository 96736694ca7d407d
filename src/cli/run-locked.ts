import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import {
  LockNotFoundError,
  LockNotHeldError,
  type QueueInfo,
  ServerUnreachableError,
  type TrackerClient,
} from '../sdk/index.js';
import { defaultWho } from '../sdk/tracker-client.js';
import { humanDuration, printable } from './table.js';

export interface RunLockedOptions {
  readonly client: TrackerClient;
  readonly service: string;
  readonly who: string | undefined;
  readonly ttlSeconds: number | undefined;
  readonly waitSeconds: number | undefined;
  /** Between SIGTERM and SIGKILL when the lock is lost. */
  readonly killGraceMs: number;
  readonly command: string;
  readonly args: readonly string[];
}

/** `tracker run`: exit code of the command, or 75 when the lock was lost. */
export const LOST_EXIT_CODE = 75;
const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

const say = (message: string) => process.stderr.write(`tracker: ${message}\n`);

/** On a terminal the waiting line is redrawn every second; elsewhere a line every 30 s. */
const LIVE_EVERY_MS = 1000;
const LINE_EVERY_MS = 30_000;
/** Until a first line is shown: how often to look whether someone else holds the service. */
const LOOK_EVERY_MS = 1000;

/**
 * While waiting in line, tells the user who holds the lock and their place: a live line on
 * a terminal, a line every 30 s otherwise. Nothing is shown unless someone else holds the
 * service: the first look is taken before the acquire is sent, so a holder seen then is
 * someone else and the first line comes at once; when the service was free then (and was
 * taken by someone else meanwhile), later looks show a line once the holder cannot be us.
 * Resolves, once the first look is done, with the function that stops it.
 */
async function showProgress(client: TrackerClient, service: string, who: string): Promise<() => void> {
  const live = process.stderr.isTTY === true;
  const started = Date.now();
  let stopped = false;
  let shown = false;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const look = async (beforeAsking: boolean) => {
    let queue: QueueInfo;
    try {
      queue = await client.queue(service);
    } catch {
      return; // Progress is best effort; the acquire itself reports real trouble.
    }
    if (stopped) return;
    // Before our request is sent, a waiter of our name is someone else too.
    const position = beforeAsking ? 0 : queue.waiters.findIndex((waiter) => waiter.who === who) + 1;
    // Once our request is sent, a holder of our name that we are not waiting behind may be
    // us, granted a moment ago (the acquire is about to answer): say nothing of it.
    const held = queue.holder !== null;
    const maybeUs = held && !beforeAsking && queue.holder?.who === who && position === 0;
    if (maybeUs || (!shown && !held)) return;
    const holder = queue.holder ? `held by ${printable(queue.holder.who)}` : 'being handed over';
    const place = position > 0 ? `, you are ${position} of ${queue.waiters.length} in line` : '';
    const line = `waiting ${humanDuration(Date.now() - started)} for ${printable(service)}: ${holder}${place}`;
    if (live) process.stderr.write(`\r\x1b[2K${line}`);
    else say(line);
    shown = true;
  };
  const next = () => {
    if (stopped) return;
    const ms = live ? LIVE_EVERY_MS : shown ? LINE_EVERY_MS : LOOK_EVERY_MS;
    timer = setTimeout(() => void look(false).then(next, next), ms);
  };

  await look(true);
  next();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (live && shown) process.stderr.write('\r\x1b[2K');
  };
}

export async function runLocked(options: RunLockedOptions): Promise<number> {
  const { client, service } = options;
  const who = options.who ?? defaultWho();
  const stopProgress = options.waitSeconds ? await showProgress(client, service, who) : undefined;
  let lock: Awaited<ReturnType<TrackerClient['acquire']>>;
  try {
    lock = await client.acquire(service, { who, ttl: options.ttlSeconds, wait: options.waitSeconds });
  } finally {
    stopProgress?.();
  }

  const child = spawn(options.command, [...options.args], {
    stdio: 'inherit',
    env: {
      ...process.env,
      TRACKER_LOCK_ID: lock.id,
      TRACKER_FENCING_TOKEN: String(lock.fencingToken),
      TRACKER_SERVICE: service,
    },
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>(
    (resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
    },
  );

  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  for (const signal of FORWARDED) process.on(signal, forward);

  // Renew every third of the TTL; the lock is lost when renewal is refused, or when the
  // server stays unreachable until the lease has run out.
  let lost = false;
  let renewTimer: ReturnType<typeof setTimeout> | undefined;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const loseLock = (why: string) => {
    lost = true;
    say(`lost the lock on ${service} (${why}); stopping ${options.command}`);
    child.kill('SIGTERM');
    killTimer = setTimeout(() => child.kill('SIGKILL'), options.killGraceMs);
  };
  if (lock.ttlSeconds !== null) {
    const ttlMs = lock.ttlSeconds * 1000;
    let leaseEnds = Date.now() + ttlMs;
    const renew = async () => {
      try {
        await client.renew(lock.id);
        leaseEnds = Date.now() + ttlMs;
      } catch (error) {
        if (lost || child.exitCode !== null) return;
        if (error instanceof LockNotHeldError) return loseLock('renewal refused: the lock is no longer held');
        if (Date.now() >= leaseEnds) {
          // Unreachable, or refused otherwise (a token revoked meanwhile: 401): say which.
          const why =
            error instanceof ServerUnreachableError
              ? 'the server stayed unreachable until the lease ran out'
              : `renewals failed until the lease ran out: ${(error as Error).message}`;
          return loseLock(why);
        }
      }
      if (!lost) renewTimer = setTimeout(renew, Math.min(ttlMs / 3, Math.max(leaseEnds - Date.now(), 0)));
    };
    renewTimer = setTimeout(renew, ttlMs / 3);
  }

  const result = await exited;
  clearTimeout(renewTimer);
  clearTimeout(killTimer);
  for (const signal of FORWARDED) process.off(signal, forward);

  if (!lost) {
    await client.release(lock.id).catch((error: unknown) => {
      if (!(error instanceof LockNotFoundError))
        say(`could not release lock ${lock.id}: ${(error as Error).message}`);
    });
  }
  if (result.error) {
    say(
      `cannot run ${options.command}: ${(result.error as NodeJS.ErrnoException).code ?? result.error.message}`,
    );
    return 1;
  }
  if (lost) return LOST_EXIT_CODE;
  if (result.signal) return 128 + (constants.signals[result.signal] ?? 0);
  return result.code ?? 1;
}
