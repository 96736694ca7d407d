// One client of the fault run, as a process of its own (so that the run can pause it with
// SIGSTOP while it holds a lock): it takes locks (over REST also shared ones, a semaphore's,
// a label's resources and groups), works under its exclusive limit-1 locks through the fenced
// register, renews, reads and releases them, over REST or gRPC, and writes every operation
// it made, with when it was called and when it returned (or that its outcome is unknown), as
// a JSON line on stdout. Bounded by its deadline and its operation count.
import { randomInt } from 'node:crypto';
import { Metadata, type ServiceError } from '@grpc/grpc-js';
import { type LockServiceClient, lockServiceClient } from '../grpc-client.js';
import type { Call, ClaimCall, ClientConfig, Record as OpRecord, Outcome, SeenLockJson } from './protocol.js';

const config = JSON.parse(process.env.TORTURE_CLIENT ?? '{}') as ClientConfig;
const now = () => performance.timeOrigin + performance.now();
const emit = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`);
const pick = <T>(items: readonly T[]): T => items[randomInt(items.length)] as T;
const lease = () => randomInt(config.leaseSeconds[0], config.leaseSeconds[1] + 1);
let seq = 0;

/** What an answer says, as the checker reads it. */
function outcomeOf(status: number, body: Record<string, unknown>): Outcome {
  if (status === 200 || status === 201) {
    if (Array.isArray(body.locks) && typeof body.id === 'string') {
      return { ok: true, group: body.id, locks: (body.locks as Record<string, unknown>[]).map(lockOf) };
    }
    if (typeof body.id === 'string') return { ok: true, lock: lockOf(body) };
    if (body.holder !== undefined) {
      const holder = body.holder as { id: string } | null;
      const waiters = (body.waiters as { who: string }[]).map((waiter) => waiter.who);
      const holders = Array.isArray(body.holders) ? (body.holders as { id: string }[]) : null;
      return {
        ok: true,
        queue: {
          holderId: holder?.id ?? null,
          ...(holders ? { holderIds: holders.map((each) => each.id) } : {}),
          waiters,
        },
      };
    }
    return { ok: true };
  }
  const code = String(body.code ?? '');
  if (status === 409 && (code === 'LOCK_HELD' || code === 'WAIT_TIMEOUT')) {
    const holder = body.existingLock as { id?: string } | undefined;
    return { ok: false, code, ...(holder?.id ? { holderId: holder.id } : {}) };
  }
  if (status === 409 && (code === 'LOCK_ENDED' || code === 'LIMIT_MISMATCH')) return { ok: false, code };
  if (status === 404 && (code === 'LOCK_NOT_FOUND' || code === 'LOCK_NOT_HELD' || code === 'NO_SUCH_LABEL')) {
    return { ok: false, code };
  }
  // Refused before anything happened.
  if (status === 400 || status === 429) return { ok: false, code: 'REFUSED' };
  // 503 (the commit may have happened), 5xx, anything else: unknown.
  return 'unknown';
}

function lockOf(body: Record<string, unknown>): SeenLockJson {
  return {
    id: String(body.id),
    token: Number(body.fencingToken),
    expiresAt:
      typeof body.expiresAt === 'string' && body.expiresAt !== '' ? Date.parse(body.expiresAt) : null,
    ...(typeof body.service === 'string' && body.service !== '' ? { service: body.service } : {}),
    ...(body.mode === 'shared' || body.mode === 'exclusive' ? { mode: body.mode } : {}),
    ...(typeof body.limit === 'number' && body.limit > 0 ? { limit: body.limit } : {}),
  };
}

interface Target {
  readonly baseUrl: string;
  readonly grpc: LockServiceClient;
}

const targets: Target[] = config.targets.map((target) => ({
  baseUrl: target.baseUrl,
  grpc: lockServiceClient(target.grpcAddress, { ownConnection: true }),
}));

async function overRest(target: Target, call: Call, timeoutMs: number): Promise<Outcome> {
  const api = `${target.baseUrl}/api/v1alpha1`;
  const json = { 'content-type': 'application/json' };
  const request = (() => {
    switch (call.kind) {
      case 'acquire':
        return {
          url: `${api}/lock`,
          method: 'POST',
          headers: { ...json, 'idempotency-key': call.key },
          body: JSON.stringify({
            ...(call.service !== undefined ? { service: call.service } : { label: call.label }),
            who: call.who,
            ttlSeconds: call.ttlSeconds,
            ...(call.waitSeconds > 0 ? { waitSeconds: call.waitSeconds } : {}),
            ...(call.mode !== undefined ? { mode: call.mode } : {}),
            ...(call.limit !== undefined ? { limit: call.limit } : {}),
            ...(call.priority !== undefined ? { priority: call.priority } : {}),
          }),
        };
      case 'acquire-group':
        return {
          url: `${api}/locks`,
          method: 'POST',
          headers: { ...json, 'idempotency-key': call.key },
          body: JSON.stringify({
            who: call.who,
            ttlSeconds: call.ttlSeconds,
            ...(call.waitSeconds > 0 ? { waitSeconds: call.waitSeconds } : {}),
            ...(call.priority !== undefined ? { priority: call.priority } : {}),
            locks: call.claims,
          }),
        };
      case 'release-group':
        return { url: `${api}/locks/${call.group}`, method: 'DELETE' };
      case 'renew-group':
        return {
          url: `${api}/locks/${call.group}/renew`,
          method: 'POST',
          headers: json,
          body: JSON.stringify({ ttlSeconds: call.ttlSeconds }),
        };
      case 'release':
        return { url: `${api}/lock/${call.id}`, method: 'DELETE' };
      case 'force-release':
        return {
          url: `${api}/lock/${call.id}/force-release`,
          method: 'POST',
          headers: json,
          body: '{"reason":"torture"}',
        };
      case 'get':
        return { url: `${api}/lock/${call.id}`, method: 'GET' };
      case 'renew':
        return {
          url: `${api}/lock/${call.id}/renew`,
          method: 'POST',
          headers: json,
          body: JSON.stringify({ ttlSeconds: call.ttlSeconds }),
        };
      case 'queue':
        return { url: `${api}/queue/${encodeURIComponent(call.service)}`, method: 'GET' };
    }
  })();
  const response = await fetch(request.url, {
    method: request.method,
    headers: request.headers,
    body: request.body,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await response.text();
  return outcomeOf(response.status, text === '' ? {} : (JSON.parse(text) as Record<string, unknown>));
}

const GRPC_STATUS_HTTP: Readonly<Record<number, number>> = {
  5: 404,
  6: 409,
  3: 400,
  8: 429,
  9: 409,
  14: 503,
};

/** gRPC carries the plain calls only (the run gives its clients nothing else to make). */
function overGrpc(target: Target, call: Call, timeoutMs: number): Promise<Outcome> {
  const [method, request] = ((): [string, object] => {
    switch (call.kind) {
      case 'acquire-group':
      case 'release-group':
      case 'renew-group':
        throw new Error(`${call.kind} is not a gRPC client's call here`);
      case 'acquire':
        return [
          'CreateLock',
          {
            service: call.service,
            who: call.who,
            ttlSeconds: call.ttlSeconds,
            waitSeconds: call.waitSeconds,
            requestId: call.key,
          },
        ];
      case 'release':
        return ['UnLock', { id: call.id }];
      case 'force-release':
        return ['ForceReleaseLock', { id: call.id, reason: 'torture' }];
      case 'get':
        return ['GetLock', { id: call.id }];
      case 'renew':
        return ['RenewLock', { id: call.id, ttlSeconds: call.ttlSeconds }];
      case 'queue':
        return ['GetQueue', { service: call.service }];
    }
  })();
  return new Promise((resolve) => {
    const fn = target.grpc[method] as (
      request: object,
      metadata: Metadata,
      options: object,
      callback: (error: ServiceError | null, value: Record<string, unknown>) => void,
    ) => void;
    // waitForReady: a call waits (within its deadline) for a connection, as the REST client's does.
    const options = { deadline: Date.now() + timeoutMs, waitForReady: true };
    fn.call(target.grpc, request, new Metadata(), options, (error, value) => {
      if (!error) {
        if (method === 'UnLock' || method === 'ForceReleaseLock') resolve({ ok: true });
        else if (method === 'GetQueue') resolve(outcomeOf(200, { ...value, holder: value.holder ?? null }));
        else resolve(outcomeOf(200, value));
        return;
      }
      const code = String(error.metadata?.get('tracker-code')[0] ?? '');
      const holderId = error.metadata?.get('tracker-existing-lock-id')[0];
      const status = code === '' ? undefined : GRPC_STATUS_HTTP[error.code];
      resolve(
        status === undefined
          ? 'unknown'
          : outcomeOf(status, { code, ...(holderId ? { existingLock: { id: String(holderId) } } : {}) }),
      );
    });
  });
}

/** A client that got no answer waits a little (jittered) before its next call, as clients should. */
const backOff = () => new Promise((resolve) => setTimeout(resolve, 50 + randomInt(200)));

/** One call, recorded: its outcome, or unknown (no answer, a broken connection, a 503). */
async function perform(call: Call, timeoutMs: number): Promise<Outcome> {
  const target = pick(targets);
  const started = now();
  let outcome: Outcome;
  try {
    outcome =
      config.transport === 'rest'
        ? await overRest(target, call, timeoutMs)
        : await overGrpc(target, call, timeoutMs);
  } catch {
    outcome = 'unknown';
  }
  const record: OpRecord = {
    client: config.id,
    call,
    started,
    ended: outcome === 'unknown' ? null : now(),
    outcome,
  };
  emit({ type: 'op', record });
  if (outcome === 'unknown') await backOff();
  return outcome;
}

/**
 * A call repeated (the same call: the same key for an acquire) until it is answered, for as
 * long as the run may need to heal (bounded).
 */
async function untilAnswered(call: Call, timeoutMs: number): Promise<Outcome> {
  const giveUp = Date.now() + config.seconds * 1000 + 30_000;
  for (let attempt = 0; attempt < 1000; attempt++) {
    const outcome = await perform(call, timeoutMs);
    if (outcome !== 'unknown' || Date.now() > giveUp) return outcome;
  }
  return 'unknown';
}

/** The fenced register: every access carries the lock's fencing token. */
async function access(
  service: string,
  token: number,
  op: 'read' | 'write',
  value?: number,
): Promise<number | null> {
  try {
    const response = await fetch(`${config.registerUrl}/${op}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service, token, value, client: config.id }),
      signal: AbortSignal.timeout(5000),
    });
    if (!response.ok) return null;
    return ((await response.json()) as { value: number }).value;
  } catch {
    return null;
  }
}

// Aborted calls' timers are unreferenced: this keeps the process alive while it works.
const alive = setInterval(() => {}, 1000);
// The run says when to stop by closing our stdin; the deadline is only a bound.
const deadline = Date.now() + config.seconds * 1000;
let stopping = false;
process.stdin.on('end', () => {
  stopping = true;
});
process.stdin.resume();
interface HeldLock {
  readonly service: string;
  readonly id: string;
  readonly token: number;
  /** Worked under through the fenced register: an exclusive lock of limit 1. */
  readonly fenced: boolean;
}
/** What it holds: one lock, or a group's locks. */
let held: { readonly group: string | null; locks: HeldLock[] } | null = null;
let lastSeenId: string | null = null;
const { plan } = config;

/** The next acquire: a plain lock over gRPC; over REST any kind the plan allows. */
function nextAcquire(request: string): Call {
  const common = {
    who: request,
    ttlSeconds: lease(),
    waitSeconds: randomInt(3) === 0 ? 0 : randomInt(1, 3),
    key: request,
    ...(plan.priorities && randomInt(4) === 0 ? { priority: pick([-1, 1, 2]) } : {}),
  };
  const plain: Call = { kind: 'acquire', service: pick(config.services), ...common };
  // gRPC carries plain acquires only, without priority (see overGrpc).
  if (config.transport !== 'rest') {
    const { priority: _, ...withoutPriority } = plain;
    return withoutPriority;
  }
  const kinds: (() => Call | null)[] = [
    () => (plan.plain ? plain : null),
    () => (plan.plain ? plain : null),
    () =>
      plan.shared ? { kind: 'acquire', service: pick(config.services), mode: 'shared', ...common } : null,
    () =>
      plan.semaphore
        ? { kind: 'acquire', service: plan.semaphore.service, limit: plan.semaphore.limit, ...common }
        : null,
    () => (plan.label ? { kind: 'acquire', label: plan.label.label, ...common } : null),
    () => {
      if (!plan.groups) return null;
      const choices: ClaimCall[][] = [];
      const [a, b] = config.services;
      if (a !== undefined && b !== undefined)
        choices.push([{ service: a }, { service: b }], [{ service: b }, { service: a }]);
      if (plan.label && plan.label.resources.length >= 2)
        choices.push([{ label: plan.label.label, quantity: 2 }]);
      const shared = config.services.at(-1);
      if (plan.semaphore && shared !== undefined) {
        choices.push([
          { service: plan.semaphore.service, limit: plan.semaphore.limit },
          { service: shared, mode: 'shared' },
        ]);
      }
      return choices.length > 0 ? { kind: 'acquire-group', claims: pick(choices), ...common } : null;
    },
  ];
  const allowed = kinds.map((kind) => kind()).filter((call): call is Call => call !== null);
  return allowed.length > 0 ? pick(allowed) : plain;
}

/** The lock a single acquire's answer shows, on its service (a label's: the resource's). */
function heldOf(call: Call, lock: SeenLockJson): HeldLock {
  const service = lock.service ?? (call.kind === 'acquire' ? (call.service ?? '') : '');
  const exclusive = lock.mode !== 'shared' && (call.kind !== 'acquire' || call.mode !== 'shared');
  const limit = lock.limit ?? (call.kind === 'acquire' ? (call.limit ?? 1) : 1);
  return { service, id: lock.id, token: lock.token, fenced: exclusive && limit === 1 };
}

for (let iteration = 0; iteration < config.maxOps && !stopping && Date.now() < deadline; iteration++) {
  if (!held) {
    const request = `${config.id}-${++seq}`;
    const call = nextAcquire(request);
    const waitSeconds = call.kind === 'acquire' || call.kind === 'acquire-group' ? call.waitSeconds : 0;
    // An unknown outcome is retried with the same key until an answer comes (the run heals
    // every fault at its end): the retry gets the same lock, or the same place in line,
    // never a second one.
    const outcome = await untilAnswered(call, waitSeconds * 1000 + 4000);
    if (
      outcome !== 'unknown' &&
      outcome.ok &&
      outcome.locks &&
      outcome.group &&
      call.kind === 'acquire-group'
    ) {
      // A group's exclusive members of limit 1 are fenced too.
      const locks = outcome.locks.map((lock) => {
        const claim = call.claims.find((each) => each.service === lock.service) ?? call.claims[0];
        const exclusive = (lock.mode ?? claim?.mode ?? 'exclusive') === 'exclusive';
        return { ...heldOf(call, lock), fenced: exclusive && (lock.limit ?? claim?.limit ?? 1) === 1 };
      });
      held = { group: outcome.group, locks };
    } else if (outcome !== 'unknown' && outcome.ok && outcome.lock) {
      held = { group: null, locks: [heldOf(call, outcome.lock)] };
    } else if (outcome !== 'unknown' && !outcome.ok && outcome.holderId) {
      lastSeenId = outcome.holderId;
    }
    if (held) emit({ type: 'holding', service: held.locks[0]?.service ?? '', id: held.locks[0]?.id ?? '' });
    continue;
  }
  const one = pick(held.locks);
  const dice = randomInt(100);
  if (dice < 55) {
    // Work under an exclusive lock of limit 1: read, then write one more, both fenced by
    // the token. Work takes time: the run stops a client between the read and the write (it
    // says when), which is where a holder that outlived its lease does harm (if nothing
    // fences it). Under a shared or semaphore lock it only takes the time.
    const fenced = held.locks.find((lock) => lock.fenced);
    const value = fenced ? await access(fenced.service, fenced.token, 'read') : null;
    if (value !== null) emit({ type: 'working' });
    await new Promise((resolve) => setTimeout(resolve, 20 + randomInt(30)));
    if (fenced && value !== null) await access(fenced.service, fenced.token, 'write', value + 1);
  } else if (dice < 70) {
    const outcome = await untilAnswered(
      held.group === null
        ? { kind: 'renew', id: one.id, ttlSeconds: lease() }
        : { kind: 'renew-group', group: held.group, ttlSeconds: lease() },
      4000,
    );
    if (outcome !== 'unknown' && !outcome.ok) held = null;
  } else if (dice < 78) {
    const outcome = await perform({ kind: 'get', id: one.id }, 4000);
    if (outcome !== 'unknown' && !outcome.ok) held = null;
  } else if (dice < 82) {
    await perform({ kind: 'queue', service: one.service }, 4000);
  } else if (dice < 84 && lastSeenId) {
    // An operator's force release of a lock seen held by someone else.
    await untilAnswered({ kind: 'force-release', id: lastSeenId }, 4000);
    lastSeenId = null;
  } else {
    // A release whose answer was lost is tried again (releasing is idempotent in effect). A
    // group goes as one, after one of its members, now and then, on its own.
    if (held.group !== null && held.locks.length > 1 && randomInt(3) === 0) {
      await untilAnswered({ kind: 'release', id: one.id }, 4000);
      held.locks = held.locks.filter((lock) => lock !== one);
      continue;
    }
    await untilAnswered(
      held.group === null ? { kind: 'release', id: one.id } : { kind: 'release-group', group: held.group },
      4000,
    );
    held = null;
    emit({ type: 'free' });
  }
}
emit({ type: 'done' });
clearInterval(alive);
process.stdin.pause();
for (const target of targets) target.grpc.close();
