/**
 * The action's main step: takes the lock (or the group), waiting in line up to `wait`, then
 * hands it to the rest of the job: outputs, the lock's environment variables for the later
 * steps (the same ones `tracker run` gives its command), and in the step's state the id the
 * post step releases. A detached heartbeat process renews the lease until the post step
 * stops it; a runner that dies takes the heartbeat with it, and the lock ends within a TTL.
 *
 * Cancelled while waiting (the runner's SIGINT or SIGTERM), it leaves the queue and exits 1
 * with nothing in its state, so the post step releases nothing.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { groupEnv, lockEnv } from '../../src/cli/lock-env.js';
import type { LockGroup, LockInfo, TrackerClient } from '../../src/sdk/index.js';
import { failureMessage } from './failure-message.js';
import { HEARTBEAT_ENV, type HeartbeatTarget } from './heartbeat-target.js';
import { clientFromInputs, type LockRequest, lockRequest } from './lock-request.js';
import { appendFileCommand, error, info, runStep, saveState } from './workflow-commands.js';

/** What the job was granted, as one shape for a lock and a group. */
interface Granted {
  readonly kind: 'lock' | 'group';
  readonly id: string;
  readonly locks: readonly LockInfo[];
  readonly env: Readonly<Record<string, string>>;
}

async function take(client: TrackerClient, request: LockRequest, signal: AbortSignal): Promise<Granted> {
  const [claim] = request.claims;
  if (!request.group && claim !== undefined) {
    const lock = await client.acquire(claim.service ?? null, {
      ...request.options,
      label: claim.label,
      limit: claim.limit,
      mode: claim.mode,
      signal,
    });
    return { kind: 'lock', id: lock.id, locks: [lock], env: lockEnv(lock) };
  }
  const group: LockGroup = await client.acquireGroup({ ...request.options, locks: request.claims, signal });
  return { kind: 'group', id: group.id, locks: group.locks, env: groupEnv(group) };
}

/**
 * Starts the heartbeat (dist/heartbeat.js beside this file) in a session of its own, its
 * output in a log file under RUNNER_TEMP: the runner waits for a step's output pipes to
 * close, so the step ends while the heartbeat runs on. Resolves with its pid and log.
 */
function startHeartbeat(target: HeartbeatTarget): { pid: number; log: string } {
  const folder = join(process.env.RUNNER_TEMP || tmpdir(), 'tracker-action');
  mkdirSync(folder, { recursive: true });
  const log = join(folder, `heartbeat-${target.id}.log`);
  const fd = openSync(log, 'a');
  try {
    const child = spawn(process.execPath, [join(dirname(fileURLToPath(import.meta.url)), 'heartbeat.js')], {
      detached: true,
      windowsHide: true,
      stdio: ['ignore', fd, fd],
      env: { ...process.env, [HEARTBEAT_ENV]: JSON.stringify(target) },
    });
    if (child.pid === undefined) throw new Error(`could not start the heartbeat (see ${log})`);
    child.unref();
    return { pid: child.pid, log };
  } finally {
    closeSync(fd);
  }
}

async function main(): Promise<number> {
  const cancel = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => cancel.abort(new Error(`cancelled (${signal})`));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  let request: LockRequest;
  let client: TrackerClient;
  try {
    request = lockRequest();
    client = clientFromInputs();
  } catch (failure) {
    error(`Tracker: ${(failure as Error).message}`);
    return 1;
  }

  info(
    `Tracker: asking ${client.url} for ${request.what} as ${request.options.who ?? 'this runner'} (waiting up to ${request.wait})`,
  );
  let granted: Granted;
  try {
    granted = await take(client, request, cancel.signal);
  } catch (failure) {
    if (cancel.signal.aborted) {
      info(
        `Tracker: ${(cancel.signal.reason as Error).message} while waiting for ${request.what}: left the queue`,
      );
      return 1;
    }
    error(failureMessage(request, failure));
    return 1;
  }

  // The id first: whatever fails after this, the post step releases what was granted.
  try {
    saveState('kind', granted.kind);
    saveState('lock_id', granted.id);
  } catch (failure) {
    await release(client, granted);
    error(`Tracker: ${(failure as Error).message}; released ${request.what}`);
    return 1;
  }
  const ttls = granted.locks.flatMap((lock) => (lock.ttlSeconds === null ? [] : [lock.ttlSeconds]));
  const ttlSeconds = ttls.length === 0 ? null : Math.min(...ttls);
  let renewing = 'no TTL: nothing to renew';
  if (ttlSeconds !== null) {
    const heartbeat = startHeartbeat({
      kind: granted.kind,
      id: granted.id,
      ttlSeconds,
      size: granted.locks.length,
    });
    saveState('heartbeat_pid', String(heartbeat.pid));
    renewing = `renewed every ${Math.round(ttlSeconds / 3)}s by process ${heartbeat.pid} (log: ${heartbeat.log})`;
  }

  appendFileCommand('GITHUB_OUTPUT', 'lock-id', granted.id);
  appendFileCommand(
    'GITHUB_OUTPUT',
    'fencing-token',
    granted.locks.map((lock) => lock.fencingToken).join(','),
  );
  appendFileCommand('GITHUB_OUTPUT', 'resources', granted.locks.map((lock) => lock.service).join(','));
  for (const [name, value] of Object.entries(granted.env)) appendFileCommand('GITHUB_ENV', name, value);

  const held = granted.locks.map((lock) => `${lock.service} (fencing token ${lock.fencingToken})`).join(', ');
  info(`Tracker: ${granted.kind} ${granted.id} holds ${held}; ${renewing}`);
  if (cancel.signal.aborted) info('Tracker: cancelled after the grant: the post step releases it');
  return 0;
}

async function release(client: TrackerClient, granted: Granted): Promise<void> {
  try {
    if (granted.kind === 'lock') await client.release(granted.id);
    else await client.releaseGroup(granted.id);
  } catch {
    // Its TTL ends it otherwise.
  }
}

runStep(main);
