import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import {
  type Claim,
  type LockInfo,
  LockNotFoundError,
  LockNotHeldError,
  type QueueInfo,
  ServerUnreachableError,
  type TrackerClient,
} from '../sdk/index.js';
import { defaultWho } from '../sdk/tracker-client.js';
import { groupEnv, lockEnv } from './lock-env.js';
import { humanDuration, printable } from './table.js';

export interface RunLockedOptions {
  readonly client: TrackerClient;
  /**
   * What to hold: one claim (a service, or one resource of a label) is a single acquire;
   * several, or a label claim with a quantity over 1, a group acquire (all or nothing).
   */
  readonly claims: readonly Claim[];
  readonly who: string | undefined;
  readonly ttlSeconds: number | undefined;
  readonly waitSeconds: number | undefined;
  /** Higher waiters are granted first (default 0). */
  readonly priority: number | undefined;
  /** The lock's note and link (a CI run's URL). */
  readonly note?: string | undefined;
  readonly link?: string | undefined;
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

/** What `run` holds while the command runs: one lock or a group, and how to keep it. */
interface Held {
  /** For messages: `the lock on S`, `group G`. */
  readonly what: string;
  /** In grant order. */
  readonly locks: readonly LockInfo[];
  /** The shortest lease of its locks; null: none expires. */
  readonly ttlSeconds: number | null;
  /** The command's environment variables that name it. */
  readonly env: Readonly<Record<string, string>>;
  /** Throws LockNotHeldError once it is lost (for a group: once any lock of it ended). */
  renew(): Promise<void>;
  release(): Promise<void>;
}

/** Takes what the claims ask for: a single acquire, or a group acquire. */
async function take(options: RunLockedOptions, who: string): Promise<Held> {
  const { client, claims, ttlSeconds: ttl, waitSeconds: wait, priority, note, link } = options;
  const [claim] = claims;
  if (claim !== undefined && claims.length === 1 && (claim.quantity ?? 1) === 1) {
    const lock = await client.acquire(claim.service ?? null, {
      who,
      ttl,
      wait,
      priority,
      note,
      link,
      label: claim.label,
      limit: claim.limit,
      mode: claim.mode,
    });
    return {
      what: `the lock on ${printable(lock.service)}`,
      locks: [lock],
      ttlSeconds: lock.ttlSeconds,
      env: lockEnv(lock),
      renew: async () => {
        await client.renew(lock.id);
      },
      release: () => client.release(lock.id),
    };
  }
  const group = await client.acquireGroup({ who, ttl, wait, priority, note, link, locks: claims });
  const ttls = group.locks.flatMap((lock) => (lock.ttlSeconds === null ? [] : [lock.ttlSeconds]));
  return {
    what: `group ${group.id}`,
    locks: group.locks,
    ttlSeconds: ttls.length === 0 ? null : Math.min(...ttls),
    env: groupEnv(group),
    renew: async () => {
      const renewed = await client.renewGroup(group.id);
      // A member released or force-released alone: the group is no longer whole.
      if (renewed.locks.length < group.locks.length) {
        throw new LockNotHeldError(`${group.locks.length - renewed.locks.length} of its locks ended`);
      }
    },
    release: async () => {
      await client.releaseGroup(group.id);
    },
  };
}

export async function runLocked(options: RunLockedOptions): Promise<number> {
  const { client } = options;
  const who = options.who ?? defaultWho();
  // Progress names a holder of one service; a label or a group has no one queue to show.
  const [first] = options.claims;
  const shown = options.claims.length === 1 && first?.service !== undefined ? first.service : undefined;
  const stopProgress =
    options.waitSeconds && shown !== undefined ? await showProgress(client, shown, who) : undefined;
  let held: Held;
  try {
    held = await take(options, who);
  } finally {
    stopProgress?.();
  }

  const child = spawn(options.command, [...options.args], {
    stdio: 'inherit',
    env: { ...process.env, ...held.env },
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
    say(`lost ${held.what} (${why}); stopping ${options.command}`);
    child.kill('SIGTERM');
    killTimer = setTimeout(() => child.kill('SIGKILL'), options.killGraceMs);
  };
  if (held.ttlSeconds !== null) {
    const ttlMs = held.ttlSeconds * 1000;
    let leaseEnds = Date.now() + ttlMs;
    const renew = async () => {
      try {
        await held.renew();
        leaseEnds = Date.now() + ttlMs;
      } catch (error) {
        if (lost || child.exitCode !== null) return;
        if (error instanceof LockNotHeldError) return loseLock(`renewal refused: ${error.message}`);
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

  // A group that lost one lock still holds the others: they are given back too.
  if (!lost || held.locks.length > 1) {
    await held.release().catch((error: unknown) => {
      if (!(error instanceof LockNotFoundError))
        say(`could not release ${held.what}: ${(error as Error).message}`);
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
