import type { LockMode } from '../../../src/core/lock.js';
import { type Model, type Operation, UNKNOWN, type Unknown } from './checker.js';

/**
 * Tracker's lock as a sequential model for the checker: holders and a line of requests over
 * services, granted by the rules of src/core/grants.ts (restated here from its header, not
 * imported: the model is the specification the stores are checked against).
 *
 * - **Capacity and mode.** A service admits a shared claim while all its holders are shared;
 *   an exclusive claim while it has no shared holder and fewer exclusive holders than its
 *   limit (a registered resource's capacity, else the claim's `limit`, else 1; never more than
 *   any holder's own limit). Each holder keeps the limit it was granted under and its mode;
 *   an answer showing another limit or mode than the grant's is refused.
 * - **Order.** The line is considered by priority (higher first), then arrival; a newcomer
 *   comes after every waiter of its priority. A request that cannot be granted blocks, for
 *   every later one, the services of the claims it cannot get now (for a label claim it
 *   cannot complete: every resource carrying the label): no overtaking on what it waits for.
 * - **Groups** are granted all their claims at once or nothing, also while they wait.
 * - **Labels.** A label claim takes `quantity` distinct resources carrying the label. The
 *   rules take the least recently released first; the model lets it take any free ones (each
 *   choice a branch of the search, cut down to the resources its client was answered when the
 *   history shows them), which keeps the model free of release times. One consequence: the
 *   rules choose claim by claim, so a request mixing a label claim with a claim on a resource
 *   carrying that label may find no complete choice where another choice completes; the model
 *   grants it then. The fault run never mixes the two.
 * - **Grant passes.** A store grants in passes, each inside the transaction of a write: an
 *   acquire's pass covers what its claims can use, a release's, a timed-out wait's, a group
 *   release's the services they free. In a pass, the waiters touching those services (by
 *   name, or by a label the service carries) may be granted, in order; every other waiter only
 *   blocks. A service freed without a pass (a lease that ran out, a lock nobody knew of that
 *   the server ended, a waiter whose client went away) is `dirty` until a pass covers it: one
 *   may run at any time (housekeeping, a waiting request's re-check), or not yet.
 * - **Fencing tokens** grow per service in grant order, across all holders (gaps allowed): a
 *   token seen must exceed every token seen of an earlier grant and stay below every token
 *   seen of a later one.
 * - **Leases** expire by the store's clock. Each operation carries the interval of store time
 *   it may have taken effect in (`at`), and a lease's end is known as an interval too (the API
 *   shows whole seconds): a lease *may* have ended at an operation when its earliest end is
 *   before the operation's latest time, and *must* have ended when its latest end is before
 *   the operation's earliest time.
 * - Things happen that no client observes, as internal transitions the search may take before
 *   any operation: a lease ending; a pass over a dirty service; a lock whose client never
 *   learned of it (an acquire with an unknown outcome, a waiter that hung up) being ended by
 *   the server; a waiter whose client is gone leaving the line.
 *
 * A waiting acquire is two operations over the same interval (see `expand`): `arrive` (it
 * joins the line, or is granted at once) and `complete` (its answer: granted, or timed out),
 * so that the line's order is part of the state and an overtaken waiter is caught. A release
 * answered is two steps too: the lock goes, then a pass over its service runs before the
 * answer (the SQLite store commits them one after the other).
 */

/** The store's clock, as an interval of epoch ms. */
export interface TimeWindow {
  readonly from: number;
  readonly to: number;
}

/** One thing a request asks for: a service, or `quantity` resources carrying a label. */
export interface ModelClaim {
  readonly service: string | null;
  readonly label: string | null;
  readonly mode: LockMode;
  /** The exclusive limit asked for (null: 1, or a resource's capacity). */
  readonly limit: number | null;
  readonly quantity: number;
}

/** A registered resource of the run: fixed for its whole history. */
export interface ModelResource {
  readonly name: string;
  readonly labels: readonly string[];
  readonly capacity: number;
}

interface Common {
  /** The service the operation is about (for a label or group request: its first claim's). */
  readonly service: string;
  /** When the operation may have taken effect, by the store's clock. */
  readonly at: TimeWindow;
}

export type LockInput =
  | (Common & {
      readonly kind: 'acquire';
      /**
       * `now`: no wait; `arrive`/`complete`: the two halves of a waiting acquire (`rejoin`: a
       * retried one joining the line again, see `retried`).
       */
      readonly phase: 'now' | 'arrive' | 'rejoin' | 'complete';
      /** The request, unique in the history (client and sequence number). */
      readonly request: string;
      readonly ttlMs: number | null;
      /**
       * A waiting request that its client sent again after losing a connection: the server may
       * have dropped it from the line when the connection broke (it then joins again, at the
       * back, when the retry arrives), or kept its place (the retry takes it).
       */
      readonly retried?: boolean;
      /** What it asks for; absent: one exclusive claim on `service` (limit 1). */
      readonly claims?: readonly ModelClaim[];
      /** Default 0. */
      readonly priority?: number;
      /** A group request (POST /locks): its answer shows `locks` and the group's id. */
      readonly group?: boolean;
    })
  | (Common & { readonly kind: 'release' | 'force-release' | 'get'; readonly id: string })
  /** A look at the service's holders and line (GET /queue/{service}). */
  | (Common & { readonly kind: 'queue' })
  | (Common & { readonly kind: 'renew'; readonly id: string; readonly ttlMs: number | null })
  /** DELETE /locks/{group}, POST /locks/{group}/renew: `services` are its locks' services. */
  | (Common & {
      readonly kind: 'release-group' | 'renew-group';
      readonly group: string;
      readonly services: readonly string[];
      readonly ttlMs: number | null;
    })
  /** Internal (see `expand`): a grant pass over `services`, as a step of a release. */
  | (Common & { readonly kind: 'pass'; readonly services: readonly string[] });

/** A lock as an answer shows it: expiresAt truncated to whole seconds (null: no TTL). */
export interface SeenLock {
  readonly id: string;
  readonly token: number;
  readonly expiresAt: number | null;
  /** Its service (absent: the operation's). */
  readonly service?: string;
  readonly mode?: LockMode;
  readonly limit?: number;
}

/** The queue as GET /queue shows it. */
export interface SeenQueue {
  /** The oldest holder's id (null: free). */
  readonly holderId: string | null;
  /** Every holder's id, when the answer lists them. */
  readonly holderIds?: readonly string[];
  /** The requests that could take it (by name or by label), in grant order. */
  readonly waiters: readonly string[];
}

export type FailureCode =
  | 'LOCK_HELD'
  | 'WAIT_TIMEOUT'
  | 'LOCK_NOT_FOUND'
  | 'LOCK_NOT_HELD'
  | 'LOCK_ENDED'
  | 'LIMIT_MISMATCH'
  | 'NO_SUCH_LABEL'
  | 'REFUSED';

export type LockOutput =
  | {
      readonly ok: true;
      /** A single acquire's lock, a renewal's, a read's. */
      readonly lock?: SeenLock;
      /** A group's locks (acquire, renew, release of a group). */
      readonly locks?: readonly SeenLock[];
      /** A group's id. */
      readonly group?: string;
      readonly queue?: SeenQueue;
    }
  | {
      readonly ok: false;
      /**
       * LOCK_HELD, WAIT_TIMEOUT, LOCK_NOT_FOUND, LOCK_NOT_HELD, LOCK_ENDED (a retry of a request
       * whose lock ended, or a wait whose lock ended before its answer), LIMIT_MISMATCH,
       * NO_SUCH_LABEL; REFUSED: turned away before any effect (400, 429).
       */
      readonly code: FailureCode;
      /** LOCK_HELD, WAIT_TIMEOUT: the holder the answer names. */
      readonly holderId?: string;
    };

export type LockOperation = Operation<LockInput, LockOutput>;

interface Holder {
  /** null: a lock no client learned of (its id unknown). */
  readonly id: string | null;
  readonly request: string | null;
  readonly service: string;
  readonly mode: LockMode;
  /** The limit it was granted under. */
  readonly limit: number;
  /** null: not seen yet. */
  readonly token: number | null;
  /** Tokens seen of grants before and after this one: its own lies strictly between. */
  readonly after: number;
  readonly before: number;
  /** Earliest and latest end of the lease (Infinity: no TTL, or unknown). */
  readonly endsFrom: number;
  readonly endsTo: number;
  /** Nobody will ever release it: the server may end it at any time. */
  readonly orphan: boolean;
  readonly ttlMs: number | null;
}

interface Waiter {
  readonly request: string;
  readonly ttlMs: number | null;
  readonly claims: readonly ModelClaim[];
  readonly priority: number;
  /** Its client is gone (unknown outcome): the server may drop it at any time. */
  readonly orphan: boolean;
}

export interface ServiceState {
  /** Every holder of the partition's services, in grant order. */
  readonly holders: readonly Holder[];
  /** The line, in arrival order. */
  readonly queue: readonly Waiter[];
  /** Per service, the greatest fencing token seen; sorted by service. */
  readonly tokens: readonly (readonly [string, number])[];
  /** Services freed without a pass that some waiter touches; sorted. */
  readonly dirty: readonly string[];
}

const EMPTY: ServiceState = { holders: [], queue: [], tokens: [], dirty: [] };

const SECOND = 1000;

/** What the whole history tells the model. */
interface Knowledge {
  /** The locks each request's client was answered (single or group). */
  readonly locksOfRequest: ReadonlyMap<string, readonly SeenLock[]>;
  /** The request of each group id seen. */
  readonly requestOfGroup: ReadonlyMap<string, string>;
  /** Every lock id any answer showed. */
  readonly knownIds: ReadonlySet<string>;
  readonly resources: ReadonlyMap<string, ModelResource>;
  /** The resources carrying each label, by name. */
  readonly members: ReadonlyMap<string, readonly string[]>;
}

// ---------------------------------------------------------------- the rules

function claimsOf(input: LockInput & { kind: 'acquire' }): readonly ModelClaim[] {
  return (
    input.claims ?? [{ service: input.service, label: null, mode: 'exclusive', limit: null, quantity: 1 }]
  );
}

/** The services a claim can use. */
function candidatesOf(claim: ModelClaim, k: Knowledge): readonly string[] {
  return claim.service !== null ? [claim.service] : (k.members.get(claim.label ?? '') ?? []);
}

function servicesOfClaims(claims: readonly ModelClaim[], k: Knowledge): string[] {
  return [...new Set(claims.flatMap((claim) => candidatesOf(claim, k)))];
}

function touches(waiter: Waiter, services: ReadonlySet<string>, k: Knowledge): boolean {
  return waiter.claims.some((claim) => candidatesOf(claim, k).some((name) => services.has(name)));
}

type HolderLike = { readonly mode: LockMode; readonly limit: number };

function admits(service: string, claim: ModelClaim, holders: readonly HolderLike[], k: Knowledge): boolean {
  if (claim.mode === 'shared') return holders.every((holder) => holder.mode === 'shared');
  let limit = k.resources.get(service)?.capacity ?? claim.limit ?? 1;
  for (const holder of holders) {
    if (holder.mode === 'shared') return false;
    limit = Math.min(limit, holder.limit);
  }
  return holders.length < limit;
}

function grantedLimit(service: string, claim: ModelClaim, k: Knowledge): number {
  const capacity = k.resources.get(service)?.capacity ?? null;
  return claim.mode === 'shared' ? (capacity ?? 1) : (capacity ?? claim.limit ?? 1);
}

/** Whether an exclusive claim names (or defaults to) another limit than the service's now. */
function mismatches(state: ServiceState, claims: readonly ModelClaim[], k: Knowledge): boolean {
  return claims.some((claim) => {
    if (claim.mode === 'shared' || claim.service === null) return false;
    const capacity = k.resources.get(claim.service)?.capacity ?? null;
    if (capacity !== null) return claim.limit !== null && claim.limit !== capacity;
    const requested = claim.limit ?? 1;
    return state.holders.some(
      (holder) =>
        holder.service === claim.service && holder.mode === 'exclusive' && holder.limit !== requested,
    );
  });
}

function tokenOf(state: ServiceState, service: string): number {
  return state.tokens.find(([name]) => name === service)?.[1] ?? 0;
}

function withToken(state: ServiceState, service: string, token: number): ServiceState {
  if (token <= tokenOf(state, service)) return state;
  const tokens = [...state.tokens.filter(([name]) => name !== service), [service, token] as const];
  tokens.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return { ...state, tokens };
}

/** Keeps `dirty` canonical: only services some waiter touches matter. */
function withDirty(state: ServiceState, dirty: Iterable<string>, k: Knowledge): ServiceState {
  const names = [...new Set(dirty)].filter((name) =>
    state.queue.some((waiter) => touches(waiter, new Set([name]), k)),
  );
  names.sort();
  return { ...state, dirty: names };
}

/** One resource taken for one claim. */
interface Choice {
  readonly service: string;
  readonly mode: LockMode;
  readonly limit: number;
}

/**
 * Every complete choice of resources for `claims` given `holders` and the `blocked`
 * services (a label claim: any admissible ones), cut down to `allowed` when the history
 * shows what the request was answered.
 */
function choices(
  claims: readonly ModelClaim[],
  holders: readonly Holder[],
  blocked: ReadonlySet<string>,
  allowed: ReadonlySet<string> | null,
  k: Knowledge,
): Choice[][] {
  const results: Choice[][] = [];
  const current = (name: string, picks: readonly Choice[]) => [
    ...holders.filter((holder) => holder.service === name),
    ...picks.filter((pick) => pick.service === name),
  ];
  const fits = (name: string, claim: ModelClaim, picks: readonly Choice[]) =>
    !blocked.has(name) &&
    (allowed === null || allowed.has(name)) &&
    admits(name, claim, current(name, picks), k);
  const visit = (index: number, picks: Choice[]): void => {
    const claim = claims[index];
    if (!claim) {
      results.push(picks);
      return;
    }
    const pick = (name: string): Choice => ({
      service: name,
      mode: claim.mode,
      limit: grantedLimit(name, claim, k),
    });
    if (claim.service !== null) {
      if (fits(claim.service, claim, picks)) visit(index + 1, [...picks, pick(claim.service)]);
      return;
    }
    const candidates = candidatesOf(claim, k);
    const take = (from: number, left: number, chosen: Choice[]): void => {
      if (left === 0) {
        visit(index + 1, chosen);
        return;
      }
      for (let i = from; i < candidates.length; i++) {
        const name = candidates[i] as string;
        if (fits(name, claim, chosen)) take(i + 1, left - 1, [...chosen, pick(name)]);
      }
    };
    take(0, claim.quantity, picks);
  };
  visit(0, []);
  return results;
}

/** The services of the claims a request cannot get now (a label claim it cannot complete: all its resources). */
function contended(
  claims: readonly ModelClaim[],
  holders: readonly Holder[],
  blocked: ReadonlySet<string>,
  k: Knowledge,
) {
  const names: string[] = [];
  for (const claim of claims) {
    const candidates = candidatesOf(claim, k);
    const free = candidates.filter(
      (name) =>
        !blocked.has(name) &&
        admits(
          name,
          claim,
          holders.filter((holder) => holder.service === name),
          k,
        ),
    );
    if (free.length < claim.quantity) names.push(...(claim.service !== null ? [claim.service] : candidates));
  }
  return names;
}

/** A holder for a grant: its id from the answer its client got (when the history has one). */
function granted(state: ServiceState, waiter: Waiter, picks: readonly Choice[], k: Knowledge): Holder[] {
  const seen = [...(k.locksOfRequest.get(waiter.request) ?? [])];
  return picks.map((pick) => {
    const index = seen.findIndex((lock) => lock.service === pick.service);
    const lock = index >= 0 ? seen.splice(index, 1)[0] : undefined;
    return {
      id: lock?.id ?? null,
      request: waiter.request,
      service: pick.service,
      mode: pick.mode,
      limit: pick.limit,
      token: null,
      after: tokenOf(state, pick.service),
      before: Number.POSITIVE_INFINITY,
      // Its lease is not known yet, and needs not be: a client that learns of the grant holds
      // it until its answer shows the lease (an order where the lease ended first cannot end
      // in that answer), and one whose client is gone (an orphan) may lose it at any time.
      endsFrom: Number.POSITIVE_INFINITY,
      endsTo: Number.POSITIVE_INFINITY,
      orphan: waiter.orphan,
      ttlMs: waiter.ttlMs,
    };
  });
}

/**
 * A grant pass over `services`, with `arriving` (a new request) last of its priority: every
 * state it may lead to, with whether `arriving` was granted.
 */
function pass(
  state: ServiceState,
  services: ReadonlySet<string>,
  arriving: Waiter | null,
  k: Knowledge,
): { state: ServiceState; mine: boolean }[] {
  const line = arriving ? [...state.queue, arriving] : [...state.queue];
  // Stable: arrival order within a priority.
  const order = line
    .map((waiter, index) => ({ waiter, index }))
    .sort((a, b) => b.waiter.priority - a.waiter.priority || a.index - b.index)
    .map((entry) => entry.waiter);
  const results: { state: ServiceState; mine: boolean }[] = [];
  const visit = (index: number, current: ServiceState, blocked: ReadonlySet<string>, mine: boolean): void => {
    const waiter = order[index];
    if (!waiter) {
      const dirty = current.dirty.filter((name) => !services.has(name));
      results.push({ state: withDirty(current, dirty, k), mine });
      return;
    }
    const grantable = waiter === arriving || touches(waiter, services, k);
    const known = k.locksOfRequest.get(waiter.request);
    const allowed = known ? new Set(known.map((lock) => lock.service ?? '')) : null;
    const options = choices(waiter.claims, current.holders, blocked, null, k);
    if (options.length === 0) {
      const more = contended(waiter.claims, current.holders, blocked, k);
      visit(index + 1, current, more.length === 0 ? blocked : new Set([...blocked, ...more]), mine);
      return;
    }
    // It can complete: granted if the pass may grant it (else it blocks nothing).
    if (!grantable) {
      visit(index + 1, current, blocked, mine);
      return;
    }
    for (const picks of options) {
      // A choice its client was not answered leads nowhere.
      if (allowed && !picks.every((pick) => allowed.has(pick.service))) continue;
      const next: ServiceState = {
        ...current,
        holders: [...current.holders, ...granted(current, waiter, picks, k)],
        queue: current.queue.filter((w) => w !== waiter),
      };
      visit(index + 1, next, blocked, mine || waiter === arriving);
    }
  };
  visit(0, state, new Set(), false);
  return results;
}

// ---------------------------------------------------------------- what happens unseen

/**
 * Every state `state` may be in when an operation at `at` takes effect: leases that must
 * have ended are gone, those that may have are gone or not, orphans may be gone (holders
 * ended by the server, waiters dropped), and passes may have run over what that freed.
 */
function settle(state: ServiceState, at: TimeWindow, k: Knowledge): ServiceState[] {
  const ended: ServiceState[] = [];
  const visit = (current: ServiceState, index: number): void => {
    if (index === current.holders.length) {
      ended.push(current);
      return;
    }
    const holder = current.holders[index] as Holder;
    // A lease without end (Infinity) never ends, even for an operation whose time is open.
    const mustEnd = holder.endsTo <= at.from;
    const mayEnd = mustEnd || (holder.endsFrom < Infinity && holder.endsFrom <= at.to) || holder.orphan;
    if (!mustEnd) visit(current, index + 1);
    if (mayEnd) {
      const without = { ...current, holders: current.holders.filter((_, i) => i !== index) };
      visit(withDirty(without, [...current.dirty, holder.service], k), index);
    }
  };
  visit(state, 0);
  const dropped = ended.flatMap((candidate) => dropOrphans(candidate, k));
  return dropped.flatMap((candidate) => passes(candidate, 0, k));
}

/** Waiters whose client is gone may have been dropped, each (their services then dirty). */
function dropOrphans(state: ServiceState, k: Knowledge): ServiceState[] {
  let states = [state];
  for (const orphan of state.queue.filter((waiter) => waiter.orphan)) {
    states = states.flatMap((current) => {
      const without = {
        ...current,
        queue: current.queue.filter((waiter) => waiter.request !== orphan.request),
      };
      return [current, withDirty(without, [...current.dirty, ...servicesOfClaims(orphan.claims, k)], k)];
    });
  }
  return states;
}

/** A pass over each dirty service may have run (or not yet), in turn. */
function passes(state: ServiceState, index: number, k: Knowledge): ServiceState[] {
  const name = state.dirty[index];
  if (name === undefined) return [state];
  const after = pass(state, new Set([name]), null, k).map((result) => result.state);
  return [
    ...passes(state, index + 1, k),
    ...after.flatMap((next) => passes(next, next.dirty.indexOf(name) < 0 ? index : index + 1, k)),
  ];
}

// ---------------------------------------------------------------- operations

/** The holder with this id on `service`, or one whose id nobody learned (when the id is unknown). */
function holderIndex(state: ServiceState, id: string, service: string, k: Knowledge): number {
  const exact = state.holders.findIndex((holder) => holder.id === id);
  if (exact >= 0 || k.knownIds.has(id)) return exact;
  return state.holders.findIndex((holder) => holder.id === null && holder.service === service);
}

/** The lease an answer shows, as an interval: the API truncates to whole seconds. */
function endOf(lock: SeenLock): { endsFrom: number; endsTo: number } {
  return lock.expiresAt === null
    ? { endsFrom: Infinity, endsTo: Infinity }
    : { endsFrom: lock.expiresAt, endsTo: lock.expiresAt + SECOND };
}

/**
 * A holder's client sees its lock: the id, token, mode and limit must be the grant's (a token
 * not known yet must lie between the tokens seen of the grants around it); its lease is now
 * known, and its client knows it.
 */
function confirm(state: ServiceState, index: number, lock: SeenLock): ServiceState | null {
  const holder = state.holders[index] as Holder;
  if (holder.id !== null && holder.id !== lock.id) return null;
  if (lock.mode !== undefined && lock.mode !== holder.mode) return null;
  if (lock.limit !== undefined && lock.limit !== holder.limit) return null;
  if (
    holder.token !== null
      ? holder.token !== lock.token
      : !(lock.token > holder.after && lock.token < holder.before)
  ) {
    return null;
  }
  const holders = state.holders.map((other, i): Holder => {
    if (i === index) return { ...other, id: lock.id, token: lock.token, ...endOf(lock), orphan: false };
    if (other.service !== holder.service || other.token !== null) return other;
    return i < index
      ? { ...other, before: Math.min(other.before, lock.token) }
      : { ...other, after: Math.max(other.after, lock.token) };
  });
  return withToken({ ...state, holders }, holder.service, lock.token);
}

/** Confirms each lock an answer shows against the request's holders: all of them, exactly. */
function confirmAll(state: ServiceState, request: string, locks: readonly SeenLock[], service: string) {
  const mine = state.holders.filter((holder) => holder.request === request);
  if (mine.length !== locks.length) return null;
  let current: ServiceState | null = state;
  const used = new Set<number>();
  for (const lock of locks) {
    if (!current) return null;
    const name = lock.service ?? service;
    const index: number = current.holders.findIndex(
      (holder, i) =>
        !used.has(i) &&
        holder.request === request &&
        holder.service === name &&
        (holder.id === null || holder.id === lock.id),
    );
    if (index < 0) return null;
    used.add(index);
    current = confirm(current, index, lock);
  }
  return current;
}

/** The locks an answer shows. */
function locksOf(output: LockOutput | Unknown): readonly SeenLock[] | null {
  if (output === UNKNOWN || !output.ok) return null;
  return output.locks ?? (output.lock ? [output.lock] : null);
}

/**
 * An answer naming `holderId` as a holder fits a state that holds it on one of `services`,
 * or holds there a lock no client learned of (whose id can be no lock any answer showed).
 * When nothing there is held (a waiter keeps the request out), the refusal names a holder
 * of what that waiter waits for: any holder of the partition.
 */
function namesAHolder(
  state: ServiceState,
  holderId: string | undefined,
  services: ReadonlySet<string>,
  k: Knowledge,
) {
  const own = state.holders.filter((holder) => services.has(holder.service));
  const there = own.length > 0 ? own : state.holders;
  if (holderId === undefined) return there.length > 0;
  return there.some((holder) => holder.id === holderId || (holder.id === null && !k.knownIds.has(holderId)));
}

function stepAcquire(
  state: ServiceState,
  input: LockInput & { kind: 'acquire' },
  output: LockOutput | Unknown,
  k: Knowledge,
): ServiceState[] {
  const { request, ttlMs } = input;
  const claims = claimsOf(input);
  const services = new Set(servicesOfClaims(claims, k));
  const held = state.holders.some((holder) => holder.request === request);
  const queuedAt = state.queue.findIndex((waiter) => waiter.request === request);
  const code = output !== UNKNOWN && !output.ok ? output.code : null;
  if (code === 'REFUSED') return input.phase === 'complete' && (held || queuedAt >= 0) ? [] : [state];

  // A retry of a request (the same idempotency key) that was granted: the same locks again.
  if (held && input.phase !== 'complete') {
    if (output === UNKNOWN) return [state];
    const locks = locksOf(output);
    const confirmed = locks ? confirmAll(state, request, locks, input.service) : null;
    return confirmed ? [confirmed] : [];
  }
  if (code === 'LOCK_ENDED' && input.phase !== 'arrive') {
    // A retry after the request's lock ended, or a wait whose lock ended before its answer:
    // nothing of it is held or waiting by then.
    return !held && queuedAt < 0 ? [state] : [];
  }
  // Refusals that never wait: nothing of the request is anywhere.
  if (code === 'LIMIT_MISMATCH' || code === 'NO_SUCH_LABEL') {
    if (input.phase === 'complete') return !held && queuedAt < 0 ? [state] : [];
    const fits =
      code === 'LIMIT_MISMATCH'
        ? mismatches(state, claims, k)
        : claims.some((claim) => claim.label !== null && !k.members.has(claim.label));
    return fits ? [state] : [];
  }
  if (input.phase === 'complete') return stepComplete(state, input, output, k);
  if (mismatches(state, claims, k)) return output === UNKNOWN ? [state] : [];

  const ended = code === 'LOCK_ENDED';
  // A wait whose client may be gone (or went away once and came back: retried): the server
  // may drop it from the line, and end what it is granted, unseen. A wait answered LOCK_ENDED
  // was granted a lock its client never saw: it may end any time.
  const orphan =
    input.phase !== 'now' &&
    (output === UNKNOWN || ended || (input.retried === true && input.phase === 'arrive'));
  const waiter: Waiter = { request, ttlMs, claims, priority: input.priority ?? 0, orphan };

  if (input.phase === 'rejoin' || input.phase === 'arrive') {
    if (queuedAt >= 0) {
      // A retry of a request still in line takes its place (its client is back), and its
      // pass runs.
      if (output === UNKNOWN) return [state];
      const back = {
        ...state,
        queue: state.queue.map((w, i) => (i === queuedAt ? { ...w, orphan: false } : w)),
      };
      return pass(back, services, null, k).map((result) => result.state);
    }
    if (input.phase === 'rejoin' && output === UNKNOWN) return [state];
    const results = pass(state, services, waiter, k).map((result) =>
      result.mine ? result.state : { ...result.state, queue: [...result.state.queue, waiter] },
    );
    return orphan ? [state, ...results] : results;
  }

  // now
  const results = pass(state, services, waiter, k);
  if (output === UNKNOWN) {
    // A lost answer: the lock may be held, unseen (its lease or a retry ends it).
    const lease = { endsFrom: ttlMs === null ? Infinity : input.at.from + ttlMs, endsTo: Infinity };
    return [
      state,
      ...results.map((result) =>
        result.mine
          ? {
              ...result.state,
              holders: result.state.holders.map((holder) =>
                holder.request === request ? { ...holder, ...lease } : holder,
              ),
            }
          : result.state,
      ),
    ];
  }
  if (output.ok) {
    const locks = locksOf(output);
    if (!locks) return [];
    return results.flatMap((result) => {
      if (!result.mine) return [];
      const confirmed = confirmAll(result.state, request, locks, input.service);
      return confirmed ? [confirmed] : [];
    });
  }
  if (output.code !== 'LOCK_HELD') return [];
  // Refused: what it asks for is held (after its pass, which serves the line first).
  return results
    .filter((result) => !result.mine && namesAHolder(result.state, output.holderId, services, k))
    .map((result) => result.state);
}

function stepComplete(
  state: ServiceState,
  input: LockInput & { kind: 'acquire' },
  output: LockOutput | Unknown,
  k: Knowledge,
): ServiceState[] {
  const { request } = input;
  const held = state.holders.some((holder) => holder.request === request);
  const waiting = state.queue.findIndex((waiter) => waiter.request === request);
  if (output === UNKNOWN) return [state];
  if (output.ok) {
    const locks = locksOf(output);
    const confirmed = locks && held ? confirmAll(state, request, locks, input.service) : null;
    return confirmed ? [confirmed] : [];
  }
  if (output.code !== 'WAIT_TIMEOUT') return [];
  // Timed out: it leaves the line without the lock, and a pass runs over what it asked for.
  // (Someone held it at the request's last look; a lease may have ended an instant before the
  // request gave up, so a free service at the timeout is no anomaly: only a grant out of order
  // is, and the line checks that.)
  if (waiting < 0 || held) return [];
  const waiter = state.queue[waiting] as Waiter;
  const without = { ...state, queue: state.queue.filter((_, i) => i !== waiting) };
  return pass(without, new Set(servicesOfClaims(waiter.claims, k)), null, k).map((result) => result.state);
}

/** A look at the line fits a state with those holders and those waiters, in grant order. */
function stepQueue(
  state: ServiceState,
  service: string,
  output: LockOutput | Unknown,
  k: Knowledge,
): ServiceState[] {
  if (output === UNKNOWN || !output.ok) return [state];
  if (!output.queue) return [];
  const { holderId, holderIds, waiters } = output.queue;
  const holders = state.holders.filter((holder) => holder.service === service);
  let holdersFit: boolean;
  if (holderIds) {
    // Each id shown names a holder (or one whose id nobody learned); every holder is shown.
    const left = [...holders];
    holdersFit =
      holderIds.length === holders.length &&
      holderIds.every((id) => {
        let index = left.findIndex((holder) => holder.id === id);
        if (index < 0 && !k.knownIds.has(id)) index = left.findIndex((holder) => holder.id === null);
        if (index < 0) return false;
        left.splice(index, 1);
        return true;
      });
  } else {
    holdersFit =
      holderId === null ? holders.length === 0 : namesAHolder(state, holderId, new Set([service]), k);
  }
  const line = state.queue
    .map((waiter, index) => ({ waiter, index }))
    .filter(({ waiter }) => touches(waiter, new Set([service]), k))
    .sort((a, b) => b.waiter.priority - a.waiter.priority || a.index - b.index)
    .map(({ waiter }) => waiter.request);
  const queueFits = waiters.length === line.length && waiters.every((request, i) => line[i] === request);
  return holdersFit && queueFits ? [state] : [];
}

function stepById(
  state: ServiceState,
  input: LockInput & { kind: 'release' | 'force-release' | 'get' | 'renew' },
  output: LockOutput | Unknown,
  k: Knowledge,
): ServiceState[] {
  const index = holderIndex(state, input.id, input.service, k);
  const holder = index < 0 ? undefined : (state.holders[index] as Holder);
  const without = () =>
    withDirty(
      { ...state, holders: state.holders.filter((_, i) => i !== index) },
      [...state.dirty, holder?.service ?? input.service],
      k,
    );
  switch (input.kind) {
    case 'release':
    case 'force-release': {
      if (output === UNKNOWN) return holder ? [state, without()] : [state];
      if (output.ok) {
        if (!holder) return [];
        // A force release grants in its own transaction; a release's pass is its next step.
        return input.kind === 'release'
          ? [without()]
          : pass(without(), new Set([holder.service]), null, k).map((result) => result.state);
      }
      if (output.code === 'REFUSED') return [state];
      return output.code === 'LOCK_NOT_FOUND' && !holder ? [state] : [];
    }
    case 'get': {
      if (output === UNKNOWN) return [state];
      if (output.ok) {
        if (!holder || !output.lock) return [];
        return holder.token === output.lock.token ? [state] : [];
      }
      if (output.code === 'REFUSED') return [state];
      return output.code === 'LOCK_NOT_FOUND' && !holder ? [state] : [];
    }
    case 'renew': {
      if (output === UNKNOWN) {
        if (!holder) return [state];
        return [state, extend(state, [index], input.ttlMs, input.at)];
      }
      if (output.ok) {
        if (!holder || !output.lock || holder.token !== output.lock.token) return [];
        const renewed: Holder = { ...holder, ...endOf(output.lock) };
        return [{ ...state, holders: state.holders.map((h, i) => (i === index ? renewed : h)) }];
      }
      if (output.code === 'REFUSED') return [state];
      return output.code === 'LOCK_NOT_HELD' && !holder ? [state] : [];
    }
  }
}

/**
 * A renewal whose answer was lost restarts the leases at its own time (some time after its
 * call): they may end as early as the call plus the TTL (shorter than before, too), or any later.
 */
function extend(
  state: ServiceState,
  indexes: readonly number[],
  ttlMs: number | null,
  at: TimeWindow,
): ServiceState {
  return {
    ...state,
    holders: state.holders.map((holder, i) => {
      if (!indexes.includes(i)) return holder;
      const ttl = ttlMs ?? holder.ttlMs;
      return { ...holder, endsFrom: ttl === null ? holder.endsFrom : at.from + ttl, endsTo: Infinity };
    }),
  };
}

function stepGroup(
  state: ServiceState,
  input: LockInput & { kind: 'release-group' | 'renew-group' },
  output: LockOutput | Unknown,
  k: Knowledge,
): ServiceState[] {
  const request = k.requestOfGroup.get(input.group);
  const indexes = state.holders.flatMap((holder, i) =>
    request !== undefined && holder.request === request ? [i] : [],
  );
  const members = indexes.map((i) => state.holders[i] as Holder);
  const release = () => {
    const freed = new Set(members.map((holder) => holder.service));
    const without = { ...state, holders: state.holders.filter((_, i) => !indexes.includes(i)) };
    return pass(without, freed, null, k).map((result) => result.state);
  };
  if (output === UNKNOWN) {
    if (members.length === 0) return [state];
    return input.kind === 'release-group'
      ? [state, ...release()]
      : [state, extend(state, indexes, input.ttlMs, input.at)];
  }
  if (!output.ok) {
    if (output.code === 'REFUSED') return [state];
    const none = input.kind === 'release-group' ? 'LOCK_NOT_FOUND' : 'LOCK_NOT_HELD';
    return output.code === none && members.length === 0 ? [state] : [];
  }
  // The answer lists what was released or renewed: every member still held, each as granted.
  const locks = output.locks ?? [];
  if (members.length === 0 || locks.length !== members.length) return [];
  const fits = locks.every((lock) =>
    members.some((holder) => holder.id === lock.id && (holder.token === null || holder.token === lock.token)),
  );
  if (!fits) return [];
  if (input.kind === 'release-group') return release();
  return [
    {
      ...state,
      holders: state.holders.map((holder) => {
        const lock = holder.request === request ? locks.find((each) => each.id === holder.id) : undefined;
        return lock ? { ...holder, ...endOf(lock) } : holder;
      }),
    },
  ];
}

function key(state: ServiceState): string {
  return JSON.stringify([
    state.holders.map((h) => [
      h.id,
      h.request,
      h.service,
      h.mode,
      h.limit,
      h.token,
      h.after,
      h.before,
      h.endsFrom,
      h.endsTo,
      h.orphan,
    ]),
    state.queue.map((w) => [w.request, w.orphan]),
    state.tokens,
    state.dirty,
  ]);
}

/** The services an operation touches: what links services into one partition. */
export function servicesOf(input: LockInput, resources: readonly ModelResource[] = []): string[] {
  if (input.kind === 'acquire') {
    const members = membersOf(resources);
    return [
      ...new Set(
        claimsOf(input).flatMap((claim) =>
          claim.service !== null ? [claim.service] : (members.get(claim.label ?? '') ?? []),
        ),
      ),
      input.service,
    ];
  }
  if (input.kind === 'release-group' || input.kind === 'renew-group' || input.kind === 'pass') {
    return [input.service, ...input.services];
  }
  return [input.service];
}

function membersOf(resources: readonly ModelResource[]): Map<string, string[]> {
  const members = new Map<string, string[]>();
  for (const resource of resources) {
    for (const label of resource.labels) members.set(label, [...(members.get(label) ?? []), resource.name]);
  }
  return members;
}

export interface LockModelOptions {
  /** The registered resources of the run (fixed for the whole history). */
  readonly resources?: readonly ModelResource[];
}

/**
 * The model of Tracker's lock for one history, partitioned by the services operations link
 * (a group's, a label's resources): what the history's answers reveal (the locks each
 * request's client learned) is part of it.
 */
export function lockModel(
  history: readonly LockOperation[],
  options: LockModelOptions = {},
): Model<ServiceState, LockInput, LockOutput> {
  const resources = options.resources ?? [];
  const locksOfRequest = new Map<string, SeenLock[]>();
  const requestOfGroup = new Map<string, string>();
  const knownIds = new Set<string>();
  for (const op of history) {
    const locks = locksOf(op.output);
    if (!locks || op.output === UNKNOWN || !op.output.ok) continue;
    const service = op.input.service;
    const withService = locks.map((lock) => ({ ...lock, service: lock.service ?? service }));
    for (const lock of withService) knownIds.add(lock.id);
    if (op.input.kind === 'acquire') {
      locksOfRequest.set(op.input.request, withService);
      if (op.output.group !== undefined) requestOfGroup.set(op.output.group, op.input.request);
    }
  }
  const knowledge: Knowledge = {
    locksOfRequest,
    requestOfGroup,
    knownIds,
    resources: new Map(resources.map((resource) => [resource.name, resource])),
    members: membersOf(resources),
  };
  return {
    init: () => [EMPTY],
    step(state, input, output) {
      return settle(state, input.at, knowledge).flatMap((settled) => {
        switch (input.kind) {
          case 'acquire':
            return stepAcquire(settled, input, output, knowledge);
          case 'queue':
            return stepQueue(settled, input.service, output, knowledge);
          case 'release-group':
          case 'renew-group':
            return stepGroup(settled, input, output, knowledge);
          case 'pass':
            return pass(settled, new Set(input.services), null, knowledge).map((result) => result.state);
          default:
            return stepById(settled, input, output, knowledge);
        }
      });
    },
    key,
    // A waiting acquire: it joins the line (`arrive`), then is granted or times out
    // (`complete`). A release answered: the lock goes, then its pass runs.
    expand: (op) => {
      const { input } = op;
      if (input.kind === 'release' && op.output !== UNKNOWN && op.output.ok) {
        const pass: LockInput = {
          kind: 'pass',
          service: input.service,
          at: input.at,
          services: [input.service],
        };
        return [op, { ...op, input: pass }];
      }
      if (input.kind !== 'acquire' || input.phase !== 'complete') return [op];
      const arrive = { ...op, input: { ...input, phase: 'arrive' as const } };
      return input.retried
        ? [arrive, { ...op, input: { ...input, phase: 'rejoin' as const } }, op]
        : [arrive, op];
    },
    partition(operations) {
      // Connected components of the services operations touch (union-find).
      const parent = new Map<string, string>();
      const find = (name: string): string => {
        let root = name;
        for (let up = parent.get(root); up !== undefined && up !== root; up = parent.get(root)) root = up;
        parent.set(name, root);
        return root;
      };
      const touched = operations.map((op) => servicesOf(op.input, resources));
      for (const names of touched) {
        for (const name of names) if (!parent.has(name)) parent.set(name, name);
        const [first, ...rest] = names.map(find);
        for (const other of rest) if (first !== undefined && other !== first) parent.set(other, first);
      }
      const parts = new Map<string, LockOperation[]>();
      operations.forEach((op, i) => {
        const root = find((touched[i] as string[])[0] as string);
        const list = parts.get(root) ?? [];
        list.push(op);
        parts.set(root, list);
      });
      return [...parts.values()];
    },
    describe: describeOperation,
  };
}

function describeClaims(input: LockInput & { kind: 'acquire' }): string {
  if (!input.claims) return '';
  const claims = input.claims.map(
    (claim) =>
      `${claim.service ?? `label ${claim.label}${claim.quantity > 1 ? ` ×${claim.quantity}` : ''}`}${claim.mode === 'shared' ? ' shared' : ''}${claim.limit !== null ? ` limit ${claim.limit}` : ''}`,
  );
  const priority = input.priority ? ` priority ${input.priority}` : '';
  return ` [${claims.join(', ')}${input.group ? ', group' : ''}${priority}]`;
}

function describeLock(lock: SeenLock): string {
  return `${lock.service ? `${lock.service} ` : ''}${lock.id} token ${lock.token}${lock.mode === 'shared' ? ' shared' : ''}${lock.limit !== undefined && lock.limit > 1 ? ` limit ${lock.limit}` : ''}`;
}

/** One line for an operation, for reports and timelines. */
export function describeOperation(op: LockOperation): string {
  const input = op.input;
  const what =
    input.kind === 'acquire'
      ? `acquire${input.phase === 'now' ? '' : ` (${input.phase})`} ${input.request}${describeClaims(input)}`
      : input.kind === 'queue'
        ? 'queue'
        : input.kind === 'release-group' || input.kind === 'renew-group'
          ? `${input.kind} ${input.group}`
          : input.kind === 'pass'
            ? `pass over ${input.services.join(', ')}`
            : `${input.kind} ${'id' in input ? input.id : ''}`;
  const output = op.output;
  const shown =
    output === UNKNOWN
      ? 'unknown'
      : output.ok
        ? output.locks
          ? `ok${output.group ? ` group ${output.group}` : ''}: ${output.locks.map(describeLock).join('; ')}`
          : output.lock
            ? `ok ${describeLock(output.lock)}`
            : output.queue
              ? `held by ${output.queue.holderIds?.join(', ') || output.queue.holderId || 'nobody'}, waiting ${output.queue.waiters.join(', ') || 'nobody'}`
              : 'ok'
        : `${output.code}${output.holderId ? ` (${output.holderId})` : ''}`;
  return `${op.client} ${input.service}: ${what} → ${shown} [${op.call}, ${op.return}]`;
}
