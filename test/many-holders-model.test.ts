/**
 * Model-based test of the many-holders rules (issue 16, point 10): random sequences of
 * acquires (limits, modes, labels, groups, priorities, with and without waiting), releases,
 * group releases, leaves, clock moves (expiry) and resource puts, run against the real
 * SQLite store and the real PostgreSQL store, and against a reference model written here
 * from the rules (core/grants.ts's header, the brief), independently of decideGrants.
 *
 * After every step: the holders of every service equal the model's (request, mode, limit),
 * no service is over its capacity or holds shared and exclusive together, fencing tokens
 * grow strictly per service, the waiters each service shows are the model's, in grant order.
 *
 * The model, restated:
 * - A shared claim fits a service whose holders are all shared; an exclusive claim one with
 *   no shared holder and fewer exclusive holders than its limit: the registered capacity,
 *   else the claim's limit, else 1, and never more than a holder's own limit.
 * - Requests are served by priority (higher first), then arrival. One that cannot be served
 *   keeps every later one off what it waits for (for a label it cannot fill: every resource
 *   carrying the label); it does not keep them off what it could take now.
 * - A request takes all its claims or nothing. A label claim takes distinct resources of the
 *   label, least recently released first, then by name.
 * - An exclusive claim naming another limit than the held (or registered) one is refused at
 *   once (LIMIT_MISMATCH), a label nobody carries too (NO_SUCH_LABEL), and claims that could
 *   not be granted together even on an idle store (unsatisfiable).
 * - Every change that frees something serves the line again; a lock's limit shows its
 *   resource's current capacity (so a larger capacity lets waiters in).
 *
 * Runs are reproducible: the seed is fixed (TRACKER_MODEL_SEED=<n> picks another);
 * TRACKER_MODEL_RUNS=<factor> multiplies the run counts.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { AcquireRequest, Claim, Lock, LockMode } from '../src/core/lock.js';
import type { AcquireResult, KeyRefusal, LockStore } from '../src/core/lock-store.js';
import { openPostgresLockStore } from '../src/storage/postgres/postgres-lock-store.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { recordingLogger } from './support/logger.js';
import { ManualClock } from './support/manual-clock.js';
import { describePostgres, installTestClock } from './support/postgres.js';

const SEED = Number(process.env.TRACKER_MODEL_SEED ?? 1616);
const RUNS = Number(process.env.TRACKER_MODEL_RUNS ?? 1);
const OWNER = 'model-replica';

/** What a test file gives the model: a store and its clock. */
interface Subject {
  readonly store: LockStore;
  readonly advance: (ms: number) => Promise<void>;
}

// ---------------------------------------------------------------------------------------
// Commands. Targets index the run's universe: 0-1 plain services, 2-4 registered resources,
// 5-7 labels (the third has no member until a put gives it one).
const SERVICES = 2;
const RESOURCES = 3;
const LABELS = 3;

interface ClaimSpec {
  readonly target: number;
  readonly mode: LockMode;
  readonly limit: number | null;
  readonly quantity: number;
}

type Command =
  | {
      readonly kind: 'acquire';
      readonly claims: readonly ClaimSpec[];
      readonly group: boolean;
      readonly priority: number;
      readonly ttl: number | null;
      readonly wait: boolean;
    }
  | { readonly kind: 'release'; readonly pick: number }
  | { readonly kind: 'releaseGroup'; readonly pick: number }
  | { readonly kind: 'leave'; readonly pick: number }
  | { readonly kind: 'advance' }
  | {
      readonly kind: 'put';
      readonly resource: number;
      readonly capacity: number;
      readonly labels: readonly number[];
    };

const claimSpec: fc.Arbitrary<ClaimSpec> = fc
  .record({
    target: fc.integer({ min: 0, max: SERVICES + RESOURCES + LABELS - 1 }),
    mode: fc.constantFrom<LockMode>('exclusive', 'exclusive', 'shared'),
    limit: fc.constantFrom<number | null>(null, null, 1, 2, 3),
    quantity: fc.constantFrom(1, 1, 2),
  })
  .map((spec) => ({
    ...spec,
    // Shared and label claims name no limit; only label claims have a quantity.
    limit: spec.mode === 'shared' || spec.target >= SERVICES + RESOURCES ? null : spec.limit,
    quantity: spec.target >= SERVICES + RESOURCES ? spec.quantity : 1,
  }));

const command: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .record({
        claims: fc.array(claimSpec, { minLength: 1, maxLength: 3 }),
        group: fc.boolean(),
        priority: fc.constantFrom(0, 0, 1, -1),
        ttl: fc.constantFrom<number | null>(null, 1, 2, 3),
        wait: fc.boolean(),
      })
      .map(({ claims, group, ...rest }) => {
        // A group names each service once; a single acquire has one claim of quantity 1.
        const seen = new Set<number>();
        const distinct = claims.filter((claim) => {
          if (claim.target >= SERVICES + RESOURCES) return true;
          if (seen.has(claim.target)) return false;
          seen.add(claim.target);
          return true;
        });
        const isGroup = group || distinct.length > 1;
        const kept = isGroup ? distinct : distinct.slice(0, 1).map((claim) => ({ ...claim, quantity: 1 }));
        return { kind: 'acquire' as const, claims: kept, group: isGroup, ...rest };
      }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('release' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('releaseGroup' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('leave' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'advance' as const }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('put' as const),
      resource: fc.integer({ min: 0, max: RESOURCES - 1 }),
      capacity: fc.integer({ min: 1, max: 3 }),
      labels: fc.uniqueArray(fc.integer({ min: 0, max: LABELS - 1 }), { maxLength: 2 }),
    }),
  },
);

// ---------------------------------------------------------------------------------------
// The reference model.

interface ModelHolder {
  /** The request it was granted to: the lock id of a single acquire, the group id of a group. */
  readonly key: string;
  readonly group: boolean;
  /** The store's lock id (a group member's is learnt from the store). */
  lockId: string | null;
  readonly service: string;
  readonly mode: LockMode;
  limit: number;
  /** Model ms; null: no TTL. */
  readonly expires: number | null;
}

interface ModelWaiter {
  readonly key: string;
  readonly group: boolean;
  /** The model's arrival order. */
  readonly arrival: number;
  /** The store's ticket, for leave(). */
  readonly ticket: number;
  readonly priority: number;
  readonly claims: readonly Claim[];
  readonly ttl: number | null;
}

interface Registered {
  capacity: number;
  labels: readonly string[];
  /** Model ms of the last lock on it that ended; 0: never. */
  releasedAt: number;
}

interface Pending {
  readonly key: string;
  readonly priority: number;
  readonly arrival: number;
  readonly claims: readonly Claim[];
}

interface Picked {
  readonly service: string;
  readonly mode: LockMode;
  readonly limit: number;
}

class Model {
  /** Model ms; above 0, which means "never released". */
  now = 1_000_000;
  readonly registry = new Map<string, Registered>();
  holders: ModelHolder[] = [];
  waiters: ModelWaiter[] = [];
  arrivals = 0;
  /** Services whose capacity a put lowered below their holders: over it until they drain. */
  readonly overAllowed = new Set<string>();

  holdersOf(service: string): ModelHolder[] {
    return this.holders.filter((holder) => holder.service === service);
  }

  membersOf(label: string): string[] {
    return [...this.registry.entries()]
      .filter(([, resource]) => resource.labels.includes(label))
      .sort(([a, ra], [b, rb]) => ra.releasedAt - rb.releasedAt || (a < b ? -1 : a > b ? 1 : 0))
      .map(([name]) => name);
  }

  /** Whether one more holder for `claim` fits beside `holders` on `service`. */
  fits(service: string, claim: Claim, holders: readonly { mode: LockMode; limit: number }[]): boolean {
    if (claim.mode === 'shared') return holders.every((holder) => holder.mode === 'shared');
    if (holders.some((holder) => holder.mode === 'shared')) return false;
    const limits = [this.limitFor(service, claim), ...holders.map((holder) => holder.limit)];
    return holders.length < Math.min(...limits);
  }

  limitFor(service: string, claim: Claim): number {
    const capacity = this.registry.get(service)?.capacity;
    if (claim.mode === 'shared') return capacity ?? 1;
    return capacity ?? claim.limit ?? 1;
  }

  /**
   * Serves `pending` (and nothing else) in order; returns who gets what, and for each one
   * not served, the services it could not get. Changes nothing.
   */
  serve(pending: readonly Pending[]): {
    granted: Map<string, Picked[]>;
    unmet: Map<string, string[]>;
  } {
    const extra = new Map<string, { mode: LockMode; limit: number }[]>();
    const current = (service: string) => [...this.holdersOf(service), ...(extra.get(service) ?? [])];
    const blocked = new Set<string>();
    const granted = new Map<string, Picked[]>();
    const unmetBy = new Map<string, string[]>();
    const order = [...pending].sort((a, b) => b.priority - a.priority || a.arrival - b.arrival);
    for (const request of order) {
      const picks: Picked[] = [];
      const unmet: string[] = [];
      let short = false;
      const withMine = (service: string) => [
        ...current(service),
        ...picks.filter((pick) => pick.service === service),
      ];
      const order: number[] = [];
      const take = (service: string, claim: Claim) => {
        picks.push({ service, mode: claim.mode, limit: this.limitFor(service, claim) });
        order.push(request.claims.indexOf(claim));
      };
      // Named services first, so that a label claim never takes one the request also names.
      const named = request.claims.filter((claim) => claim.service !== null);
      for (const claim of [...named, ...request.claims.filter((claim) => claim.service === null)]) {
        if (claim.service !== null) {
          if (!blocked.has(claim.service) && this.fits(claim.service, claim, withMine(claim.service))) {
            take(claim.service, claim);
          } else unmet.push(claim.service);
          continue;
        }
        const members = this.membersOf(claim.label ?? '');
        const chosen = new Set<string>();
        for (const member of members) {
          if (chosen.size === claim.quantity) break;
          if (blocked.has(member) || chosen.has(member)) continue;
          if (!this.fits(member, claim, withMine(member))) continue;
          chosen.add(member);
          take(member, claim);
        }
        if (chosen.size < claim.quantity) {
          // Short of resources: it waits, for every resource of the label (there may be none).
          unmet.push(...members);
          short = true;
        }
      }
      if (unmet.length === 0 && !short) {
        // Picks in claim order.
        const sorted = picks.map((pick, i) => ({ pick, at: order[i] ?? 0 })).sort((a, b) => a.at - b.at);
        picks.splice(0, picks.length, ...sorted.map((entry) => entry.pick));
        granted.set(request.key, picks);
        for (const pick of picks) extra.set(pick.service, [...(extra.get(pick.service) ?? []), pick]);
      } else {
        unmetBy.set(request.key, unmet);
        for (const service of unmet) blocked.add(service);
      }
    }
    return { granted, unmet: unmetBy };
  }

  /** Serves the line after a change; returns the keys granted, in grant order. */
  serveWaiters(): string[] {
    const { granted } = this.serve(this.waiters);
    for (const [key, picks] of granted) {
      const waiter = this.waiters.find((w) => w.key === key);
      assert.ok(waiter);
      this.waiters = this.waiters.filter((w) => w !== waiter);
      this.hold(waiter.key, waiter.group, picks, waiter.ttl);
    }
    return [...granted.keys()];
  }

  hold(key: string, group: boolean, picks: readonly Picked[], ttl: number | null): void {
    for (const pick of picks) {
      this.holders.push({
        key,
        group,
        lockId: group ? null : key,
        service: pick.service,
        mode: pick.mode,
        limit: pick.limit,
        expires: ttl === null ? null : this.now + ttl * 1000,
      });
    }
  }

  end(holder: ModelHolder, at: number): void {
    this.holders = this.holders.filter((h) => h !== holder);
    const resource = this.registry.get(holder.service);
    if (resource) resource.releasedAt = Math.max(resource.releasedAt, at);
  }

  /** The refusals an acquire must get at once (any one of them), or [] when none applies. */
  refusals(claims: readonly Claim[]): KeyRefusal[] {
    const found: KeyRefusal[] = [];
    // Claims that could not be granted together even with nobody holding or waiting.
    const alone = new Model();
    for (const [name, resource] of this.registry) alone.registry.set(name, { ...resource });
    if (alone.serve([{ key: 'alone', priority: 0, arrival: 1, claims }]).granted.size === 0) {
      found.push({ acquired: false, unsatisfiable: true });
    }
    for (const claim of claims) {
      if (claim.label !== null && this.membersOf(claim.label).length === 0) {
        found.push({ acquired: false, noSuchLabel: claim.label });
      }
      if (claim.service === null || claim.mode === 'shared') continue;
      const registered = this.registry.get(claim.service);
      if (registered) {
        if (claim.limit !== null && claim.limit !== registered.capacity) {
          found.push({
            acquired: false,
            limitMismatch: { service: claim.service, limit: registered.capacity },
          });
        }
        continue;
      }
      const wanted = claim.limit ?? 1;
      for (const holder of this.holdersOf(claim.service)) {
        if (holder.mode === 'exclusive' && holder.limit !== wanted) {
          found.push({ acquired: false, limitMismatch: { service: claim.service, limit: holder.limit } });
        }
      }
    }
    return found;
  }

  /** Waiters that could take `service` (by name or by a label it carries), in grant order. */
  waitersFor(service: string): string[] {
    const labels = this.registry.get(service)?.labels ?? [];
    return this.waiters
      .filter((waiter) =>
        waiter.claims.some(
          (claim) => claim.service === service || (claim.label !== null && labels.includes(claim.label)),
        ),
      )
      .sort((a, b) => b.priority - a.priority || a.arrival - b.arrival)
      .map((waiter) => waiter.key);
  }
}

// ---------------------------------------------------------------------------------------
// One run: a fresh universe of names, the commands, the checks after each step.

async function runCommands(subject: Subject, commands: readonly Command[]): Promise<void> {
  const { store } = subject;
  const prefix = `m${randomUUID().slice(0, 8)}`;
  const services = Array.from({ length: SERVICES }, (_, i) => `${prefix}-s${i}`);
  const resources = Array.from({ length: RESOURCES }, (_, i) => `${prefix}-r${i}`);
  const labels = Array.from({ length: LABELS }, (_, i) => `${prefix}-L${i}`);
  const names = [...services, ...resources];
  const model = new Model();
  const trace: string[] = [];
  const fail = (message: string): never => {
    assert.fail(`${message}\n  steps so far:\n    ${trace.join('\n    ')}`);
  };
  const check = (ok: unknown, message: string) => {
    if (!ok) fail(message);
  };
  const equal = (actual: unknown, expected: unknown, message: string) => {
    try {
      assert.deepEqual(actual, expected);
    } catch {
      fail(`${message}: got ${JSON.stringify(actual)}, the model says ${JSON.stringify(expected)}`);
    }
  };

  // The starting registry: r0 [L0] capacity 1, r1 [L0, L1] capacity 1, r2 [L1] capacity 2.
  const initial: [number, number, number[]][] = [
    [0, 1, [0]],
    [1, 1, [0, 1]],
    [2, 2, [1]],
  ];
  for (const [index, capacity, labelIndexes] of initial) {
    const name = resources[index] as string;
    const resourceLabels = labelIndexes.map((i) => labels[i] as string);
    await store.putResource({ name, labels: resourceLabels, properties: {}, capacity, description: null });
    model.registry.set(name, { capacity, labels: resourceLabels, releasedAt: 0 });
  }

  const toClaim = (spec: ClaimSpec): Claim => {
    if (spec.target < SERVICES + RESOURCES) {
      return {
        service: names[spec.target] as string,
        label: null,
        mode: spec.mode,
        limit: spec.limit,
        quantity: 1,
      };
    }
    const label = labels[spec.target - SERVICES - RESOURCES] as string;
    return { service: null, label, mode: spec.mode, limit: null, quantity: spec.quantity };
  };

  /** Every lock id the run has seen (released ones too), every group id, every ticket. */
  const lockIds: string[] = [];
  const groupIds: string[] = [];
  const tickets: number[] = [];
  const maxToken = new Map<string, number>();
  const seenLocks = new Set<string>();

  const describeHolders = (locks: readonly Lock[]) =>
    locks.map((lock) => `${lock.groupId ?? lock.id}|${lock.mode}|${lock.limit}`).sort();

  /** Compares the store with the model after a step. */
  const compare = async () => {
    const snapshot = (await store.snapshot()).filter((lock) => names.includes(lock.service));
    // Learn the ids of group members the model granted.
    for (const holder of model.holders) {
      if (holder.lockId !== null) continue;
      const lock = snapshot.find(
        (l) =>
          l.groupId === holder.key &&
          l.service === holder.service &&
          l.mode === holder.mode &&
          !model.holders.some((h) => h.lockId === l.id),
      );
      if (lock) {
        holder.lockId = lock.id;
        lockIds.push(lock.id);
      }
    }
    const fresh: Lock[] = [];
    for (const name of names) {
      const locks = snapshot.filter((lock) => lock.service === name);
      equal(
        describeHolders(locks),
        model
          .holdersOf(name)
          .map((holder) => `${holder.key}|${holder.mode}|${holder.limit}`)
          .sort(),
        `holders of ${name}`,
      );
      const exclusive = locks.filter((lock) => lock.mode === 'exclusive');
      check(
        exclusive.length === 0 || exclusive.length === locks.length,
        `${name} holds shared and exclusive locks together`,
      );
      if (exclusive.length > 0 && !model.overAllowed.has(name)) {
        const limit = Math.min(...exclusive.map((lock) => lock.limit));
        check(
          exclusive.length <= limit,
          `${name} has ${exclusive.length} exclusive holders over limit ${limit}`,
        );
      }
      if (model.overAllowed.has(name) && exclusive.length <= (model.registry.get(name)?.capacity ?? 1)) {
        model.overAllowed.delete(name);
      }
      const before = maxToken.get(name) ?? 0;
      const tokens: number[] = [];
      for (const lock of locks) {
        if (seenLocks.has(lock.id)) continue;
        seenLocks.add(lock.id);
        fresh.push(lock);
        check(lock.fencingToken > before, `${name}: new token ${lock.fencingToken} is not above ${before}`);
        tokens.push(lock.fencingToken);
      }
      check(new Set(tokens).size === tokens.length, `${name}: two new locks share a token (${tokens})`);
      maxToken.set(name, Math.max(before, ...tokens));
      const queue = await store.queue(name);
      const shown: string[] = [];
      for (const waiter of queue.waiters) {
        const key = waiter.groupId ?? waiter.lockId;
        if (!shown.includes(key)) shown.push(key);
      }
      equal(shown, model.waitersFor(name), `waiters of ${name}, in grant order`);
    }
  };

  for (const step of commands) {
    trace.push(JSON.stringify(step));
    switch (step.kind) {
      case 'acquire': {
        const claims = step.claims.map(toClaim);
        const id = randomUUID();
        const request: AcquireRequest = {
          id,
          service: claims[0]?.service ?? claims[0]?.label ?? '',
          claims,
          group: step.group,
          priority: step.priority,
          who: `w${trace.length}`,
          ttlSeconds: step.ttl,
        };
        const result: AcquireResult | KeyRefusal = await store.acquire(
          request,
          step.wait ? { owner: OWNER } : undefined,
          undefined,
        );
        trace[trace.length - 1] += ` → ${outcome(result)}`;
        const refusals = model.refusals(claims);
        if (refusals.length > 0) {
          check(
            !result.acquired && refusals.some((refusal) => isDeepEqual(refusal, result)),
            `expected one of ${JSON.stringify(refusals)}`,
          );
          break;
        }
        const arrival = ++model.arrivals;
        const { granted, unmet } = model.serve([
          ...model.waiters,
          { key: id, priority: step.priority, arrival, claims },
        ]);
        check(
          [...granted.keys()].every((key) => key === id),
          `model: a settled line let waiters in on an acquire (${[...granted.keys()]})`,
        );
        const picks = granted.get(id);
        if (picks) {
          check(result.acquired, 'the model grants this request');
          if (!result.acquired) break;
          equal(
            result.locks.map((lock) => `${lock.service}|${lock.mode}|${lock.limit}`).sort(),
            picks.map((pick) => `${pick.service}|${pick.mode}|${pick.limit}`).sort(),
            'what the request was granted',
          );
          check(
            result.locks.every((lock) => lock.groupId === (step.group ? id : null)),
            'group ids of the locks',
          );
          model.hold(id, step.group, picks, step.ttl);
          if (step.group) groupIds.push(id);
          else lockIds.push(id);
        } else {
          check(!result.acquired && 'holders' in result, 'the model refuses this request (held)');
          if (result.acquired || !('holders' in result)) break;
          const expected = new Set(
            (unmet.get(id) ?? []).flatMap((service) =>
              model.holdersOf(service).map((holder) => holder.lockId),
            ),
          );
          // A request kept off only by waiters (nothing held) has no holder to name.
          if (expected.size > 0) {
            // At least those (the stores name the holders of everything the request touches;
            // the contract pins the exact rule).
            const named = new Set(result.holders.map((lock) => lock.id));
            check(
              [...expected].every((lockId) => lockId !== null && named.has(lockId)),
              `the holders a refusal names: got ${[...named]}, the model says at least ${[...expected]}`,
            );
            check(result.holder.id === result.holders[0]?.id, 'holder is the first (oldest) of holders');
          }
          if (step.wait) {
            check(result.waiter !== null, 'a refused request that waits joins the line');
            if (!result.waiter) break;
            model.waiters.push({
              key: id,
              group: step.group,
              arrival,
              ticket: result.waiter.ticket,
              priority: step.priority,
              claims,
              ttl: step.ttl,
            });
            tickets.push(result.waiter.ticket);
            if (step.group) groupIds.push(id);
            else lockIds.push(id);
          } else {
            check(result.waiter === null, 'a request that does not wait is not queued');
          }
        }
        break;
      }
      case 'release': {
        const id = lockIds[step.pick % Math.max(lockIds.length, 1)] ?? randomUUID();
        const released = await store.release(id);
        const holder = model.holders.find((h) => h.lockId === id);
        trace[trace.length - 1] += ` (${id.slice(0, 8)}) → ${released ? 'released' : 'null'}`;
        equal(released?.id ?? null, holder ? id : null, `release of ${id}`);
        if (holder) {
          model.end(holder, model.now);
          model.serveWaiters();
        }
        break;
      }
      case 'releaseGroup': {
        const id = groupIds[step.pick % Math.max(groupIds.length, 1)] ?? randomUUID();
        const released = await store.releaseGroup(id);
        const members = model.holders.filter((h) => h.group && h.key === id);
        trace[trace.length - 1] += ` (${id.slice(0, 8)}) → ${released.locks.length} released`;
        equal(
          released.locks.map((lock) => lock.id).sort(),
          members.map((member) => member.lockId).sort(),
          `group release of ${id}`,
        );
        check(!released.denied, 'nobody is denied without an owner');
        for (const member of members) model.end(member, model.now);
        if (members.length > 0) model.serveWaiters();
        break;
      }
      case 'leave': {
        const ticket = tickets[step.pick % Math.max(tickets.length, 1)] ?? -1;
        const left = await store.leave(ticket);
        const waiter = model.waiters.find((w) => w.ticket === ticket);
        trace[trace.length - 1] += ` (ticket ${ticket}) → ${left}`;
        equal(left, waiter !== undefined, `leave of ticket ${ticket}`);
        if (waiter) {
          model.waiters = model.waiters.filter((w) => w !== waiter);
          model.serveWaiters();
        }
        break;
      }
      case 'advance': {
        model.now += 1000;
        await subject.advance(1000);
        await store.heartbeat(OWNER);
        for (const holder of [...model.holders]) {
          if (holder.expires !== null && holder.expires <= model.now) model.end(holder, holder.expires);
        }
        const first = await store.settle(names);
        const granted = model.serveWaiters();
        trace[trace.length - 1] += ` → settle granted ${first ? first.service : 'nothing'}`;
        equal(first !== null, granted.length > 0, 'settle returns a lock when it grants one');
        break;
      }
      case 'put': {
        const name = resources[step.resource] as string;
        const resourceLabels = step.labels.map((i) => labels[i] as string);
        const { created } = await store.putResource({
          name,
          labels: resourceLabels,
          properties: { step: String(trace.length) },
          capacity: step.capacity,
          description: null,
        });
        equal(created, false, `put of ${name} replaces it`);
        const registered = model.registry.get(name);
        assert.ok(registered);
        registered.capacity = step.capacity;
        registered.labels = resourceLabels;
        // A lock shows its resource's current capacity as its limit.
        for (const holder of model.holdersOf(name)) holder.limit = step.capacity;
        const exclusive = model.holdersOf(name).filter((holder) => holder.mode === 'exclusive').length;
        if (exclusive > step.capacity) model.overAllowed.add(name);
        model.serveWaiters();
        break;
      }
    }
    await compare();
  }
}

function outcome(result: AcquireResult | KeyRefusal): string {
  if (result.acquired)
    return `granted ${result.locks.map((lock) => `${lock.service}/${lock.mode}`).join(',')}`;
  if ('holders' in result) return `refused${result.waiter ? ', queued' : ''}`;
  return `refused ${JSON.stringify(result)}`;
}

function isDeepEqual(a: unknown, b: unknown): boolean {
  try {
    assert.deepEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

function property(subject: () => Subject, numRuns: number) {
  return async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 30 }), (commands) =>
        runCommands(subject(), commands),
      ),
      { numRuns: Math.max(1, Math.round(numRuns * RUNS)), seed: SEED, includeErrorInReport: true },
    );
  };
}

describe('many holders, model-based: SQLite', () => {
  let store: LockStore;
  const clock = new ManualClock();
  before(() => {
    store = openSqliteLockStore({ path: ':memory:', clock });
  });
  after(async () => {
    await store.close();
  });
  test(
    'random limits, modes, labels, groups, priorities, releases, leaves, expiries and puts match the model',
    { timeout: 120_000 },
    property(() => ({ store, advance: async (ms) => clock.advance(ms) }), 60),
  );
});

await describePostgres('many holders, model-based: PostgreSQL', (database) => {
  let subject: Subject | undefined;
  let closeAll: (() => Promise<void>) | undefined;
  before(async () => {
    const store = await openPostgresLockStore({
      connectionString: database().url,
      schema: 'model',
      logger: recordingLogger().logger,
    });
    const clock = await installTestClock(database().url, 'model', { frozen: true });
    subject = { store, advance: (ms) => clock.advance(ms) };
    closeAll = async () => {
      await clock.close();
      await store.close();
    };
  });
  after(async () => {
    await closeAll?.();
  });
  test(
    'random limits, modes, labels, groups, priorities, releases, leaves, expiries and puts match the model',
    { timeout: 180_000 },
    property(() => {
      assert.ok(subject);
      return subject;
    }, 25),
  );
});
