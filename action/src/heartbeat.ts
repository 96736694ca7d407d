/**
 * The heartbeat main starts after the grant, detached from the step: renews the lock (or the
 * group) every third of its TTL until the post step sends SIGTERM. It exits by itself when
 * the lock is lost: renewal refused (404 LOCK_NOT_HELD, or a group renewed with fewer locks
 * than it was granted), or the lease ran out while the server could not be reached. Its
 * output goes to a log file under RUNNER_TEMP.
 */
import { LockNotHeldError } from '../../src/sdk/index.js';
import { heartbeatTarget } from './heartbeat-target.js';
import { clientFromInputs } from './lock-request.js';

const log = (message: string) => process.stdout.write(`${new Date().toISOString()} ${message}\n`);

for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.once(signal, () => {
    log(`stopped (${signal})`);
    process.exit(0);
  });
}

const target = heartbeatTarget();
const client = clientFromInputs();
const ttlMs = target.ttlSeconds * 1000;
let leaseEnds = Date.now() + ttlMs;

async function renew(): Promise<void> {
  if (target.kind === 'lock') {
    await client.renew(target.id);
    return;
  }
  const group = await client.renewGroup(target.id);
  if (group.locks.length < target.size) {
    throw new LockNotHeldError(`${target.size - group.locks.length} of its ${target.size} locks ended`);
  }
}

async function beat(): Promise<void> {
  try {
    await renew();
    leaseEnds = Date.now() + ttlMs;
  } catch (failure) {
    if (failure instanceof LockNotHeldError) {
      log(`${target.kind} ${target.id} lost: renewal refused: ${failure.message}`);
      process.exit(3);
    }
    if (Date.now() >= leaseEnds) {
      log(
        `${target.kind} ${target.id} lost: renewals failed until the lease ran out: ${(failure as Error).message}`,
      );
      process.exit(4);
    }
    log(`renewal failed, trying again: ${(failure as Error).message}`);
  }
  setTimeout(beat, Math.min(ttlMs / 3, Math.max(leaseEnds - Date.now(), 0)));
}

log(`renewing ${target.kind} ${target.id} every ${ttlMs / 3000}s`);
setTimeout(beat, ttlMs / 3);
