/**
 * The action's post step (always run, also when the job failed or was cancelled): stops the
 * heartbeat and releases what main was granted, by the id main saved. Nothing saved (main
 * failed, or was cancelled while waiting): nothing to release, and the step succeeds.
 */
import { existsSync, readFileSync } from 'node:fs';
import { LockNotFoundError } from '../../src/sdk/index.js';
import { clientFromInputs } from './lock-request.js';
import { error, info, runStep, state, warning } from './workflow-commands.js';

/** SIGTERM to the heartbeat, unless it is gone already (or its pid now names another program). */
function stopHeartbeat(pidText: string): void {
  const pid = Number(pidText);
  if (!Number.isSafeInteger(pid) || pid <= 0) return;
  // Where /proc tells, a pid reused by another program since is left alone.
  const cmdline = `/proc/${pid}/cmdline`;
  if (existsSync('/proc/self/cmdline')) {
    if (!existsSync(cmdline) || !readFileSync(cmdline, 'utf8').includes('heartbeat.js')) {
      info(`Tracker: the heartbeat (process ${pid}) had ended`);
      return;
    }
  }
  try {
    process.kill(pid, 'SIGTERM');
    info(`Tracker: stopped the heartbeat (process ${pid})`);
  } catch (failure) {
    if ((failure as NodeJS.ErrnoException).code !== 'ESRCH') throw failure;
    info(`Tracker: the heartbeat (process ${pid}) had ended`);
  }
}

async function post(): Promise<number> {
  const pid = state('heartbeat_pid');
  if (pid !== '') stopHeartbeat(pid);
  const id = state('lock_id');
  const kind = state('kind');
  if (id === '') {
    info('Tracker: no lock was granted to this job: nothing to release');
    return 0;
  }
  const client = clientFromInputs();
  try {
    if (kind === 'group') {
      const group = await client.releaseGroup(id);
      info(`Tracker: released group ${id} (${group.locks.map((lock) => lock.service).join(', ')})`);
    } else {
      await client.release(id);
      info(`Tracker: released lock ${id}`);
    }
    return 0;
  } catch (failure) {
    if (failure instanceof LockNotFoundError) {
      warning(
        `Tracker: ${kind} ${id} was no longer held when the job ended (it expired or was force-released)`,
      );
      return 0;
    }
    error(
      `Tracker: could not release ${kind} ${id}: ${(failure as Error).message}; it ends when its TTL runs out`,
    );
    return 1;
  }
}

runStep(post);
