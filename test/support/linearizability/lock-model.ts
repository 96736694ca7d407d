import { type Model, type Operation, UNKNOWN, type Unknown } from './checker.js';

/**
 * Tracker's lock as a sequential model for the checker: a fenced FIFO lock per service.
 *
 * - A service has holders (at most `limit`: 1 today; semaphores raise it) and a queue of
 *   waiting requests in arrival order. A newcomer is granted only when a holder's place is
 *   free and nobody waits; a freed place goes to the queue's head (no overtaking).
 * - Every grant carries a fencing token strictly greater than every token granted before
 *   for the service (gaps allowed).
 * - Leases expire by the store's clock. Each operation carries the interval of store time it
 *   may have taken effect in (`at`), and a lease's end is known as an interval too (the API
 *   shows whole seconds): a lease *may* have ended at an operation when its earliest end is
 *   before the operation's latest time, and *must* have ended when its latest end is before
 *   the operation's earliest time.
 * - Things happen that no client observes, as internal transitions the search may take
 *   before any operation: a lease ending; the queue's head being granted the freed place; a
 *   lock whose client never learned of it (an acquire with an unknown outcome, a waiter that
 *   hung up) being released by the server; a waiter whose client is gone leaving the queue.
 *
 * A waiting acquire is two operations over the same interval (see `expand`): `arrive`
 * (it joins the queue, or takes a free service at once) and `complete` (it is granted, or
 * times out), so that the queue's order is part of the state and an overtaken waiter is
 * caught.
 */

/** The store's clock, as an interval of epoch ms. */
export interface TimeWindow {
  readonly from: number;
  readonly to: number;
}

interface Common {
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
    })
  | (Common & { readonly kind: 'release' | 'force-release' | 'get'; readonly id: string })
  /** A look at the service's queue (GET /queue/{service}). */
  | (Common & { readonly kind: 'queue' })
  | (Common & { readonly kind: 'renew'; readonly id: string; readonly ttlMs: number | null });

/** A lock as an answer shows it: expiresAt truncated to whole seconds (null: no TTL). */
export interface SeenLock {
  readonly id: string;
  readonly token: number;
  readonly expiresAt: number | null;
}

export type LockOutput =
  | { readonly ok: true; readonly lock: SeenLock; readonly queue?: undefined }
  /** Released, force-released. */
  | { readonly ok: true; readonly lock?: undefined; readonly queue?: undefined }
  /** The queue: the holder's id (null: free) and the waiting requests, first in line first. */
  | {
      readonly ok: true;
      readonly lock?: undefined;
      readonly queue: { readonly holderId: string | null; readonly waiters: readonly string[] };
    }
  | {
      readonly ok: false;
      /**
       * LOCK_HELD, WAIT_TIMEOUT, LOCK_NOT_FOUND, LOCK_NOT_HELD, LOCK_ENDED (a retry of a request
       * whose lock ended, or a wait whose lock ended before its answer); REFUSED: turned away
       * before any effect (400, 429).
       */
      readonly code:
        | 'LOCK_HELD'
        | 'WAIT_TIMEOUT'
        | 'LOCK_NOT_FOUND'
        | 'LOCK_NOT_HELD'
        | 'LOCK_ENDED'
        | 'REFUSED';
      /** LOCK_HELD, WAIT_TIMEOUT: the holder the answer names. */
      readonly holderId?: string;
    };

export type LockOperation = Operation<LockInput, LockOutput>;

interface Holder {
  /** null: a lock no client learned of (its id unknown). */
  readonly id: string | null;
  readonly request: string | null;
  /** null: not known yet (granted to a waiter whose `complete` is not linearised yet). */
  readonly token: number | null;
  /** The greatest token granted before this one, which its own must exceed. */
  readonly after: number;
  /** Earliest and latest end of the lease (Infinity: no TTL, or unknown). */
  readonly endsFrom: number;
  readonly endsTo: number;
  /** Nobody will ever release it: the server may end it at any time. */
  readonly orphan: boolean;
  /** Its TTL, for a grant to a waiter whose lease starts at the grant. */
  readonly ttlMs: number | null;
}

interface Waiter {
  readonly request: string;
  readonly ttlMs: number | null;
  /** Its client is gone (unknown outcome): the server may drop it at any time. */
  readonly orphan: boolean;
}

export interface ServiceState {
  readonly limit: number;
  readonly holders: readonly Holder[];
  readonly queue: readonly Waiter[];
  /** The greatest fencing token granted and seen. */
  readonly lastToken: number;
}

const EMPTY: ServiceState = { limit: 1, holders: [], queue: [], lastToken: 0 };

const SECOND = 1000;

/** The lease end an answer shows, as an interval: the API truncates to whole seconds. */
function endOf(lock: SeenLock): { endsFrom: number; endsTo: number } {
  return lock.expiresAt === null
    ? { endsFrom: Infinity, endsTo: Infinity }
    : { endsFrom: lock.expiresAt, endsTo: lock.expiresAt + SECOND };
}

function withHolders(state: ServiceState, holders: readonly Holder[]): ServiceState {
  return { ...state, holders };
}

/** What the whole history tells the model: the id each granted request's client learned. */
interface Knowledge {
  readonly idOfRequest: ReadonlyMap<string, string>;
  /** Every lock id any answer showed. */
  readonly knownIds: ReadonlySet<string>;
}

/**
 * Every state `state` may be in when an operation at `at` takes effect: leases that must
 * have ended are gone, those that may have are gone or not, orphans may be gone, and freed
 * places may have gone to the queue's head (who was granted at that time).
 */
function settle(state: ServiceState, at: TimeWindow, knowledge: Knowledge): ServiceState[] {
  const results: ServiceState[] = [];
  const visit = (current: ServiceState, index: number): void => {
    if (index === current.holders.length) {
      results.push(...grants(current, knowledge));
      return;
    }
    const holder = current.holders[index] as Holder;
    // A lease without end (Infinity) never ends, even for an operation whose time is open.
    const mustEnd = holder.endsTo <= at.from;
    const mayEnd = mustEnd || (holder.endsFrom < Infinity && holder.endsFrom <= at.to) || holder.orphan;
    if (!mustEnd) visit(current, index + 1);
    if (mayEnd) {
      visit(
        withHolders(
          current,
          current.holders.filter((_, i) => i !== index),
        ),
        index,
      );
    }
  };
  visit(state, 0);
  // Waiters whose client is gone may have been dropped.
  return results.flatMap((candidate) => dropOrphans(candidate));
}

/** A freed place may have gone to the queue's head (or not yet): both, recursively. */
function grants(state: ServiceState, knowledge: Knowledge): ServiceState[] {
  const head = state.queue[0];
  if (!head || state.holders.length >= state.limit) return [state];
  const granted: Holder = {
    id: knowledge.idOfRequest.get(head.request) ?? null,
    request: head.request,
    token: null,
    after: state.lastToken,
    // Its lease is not known yet, and needs not be: a waiter whose client learns of the grant
    // holds it until its answer shows the lease (an order where the lease ended first cannot
    // end in that answer), and one whose client is gone (an orphan) may lose it at any time.
    endsFrom: Infinity,
    endsTo: Infinity,
    orphan: head.orphan,
    ttlMs: head.ttlMs,
  };
  const next = { ...state, holders: [...state.holders, granted], queue: state.queue.slice(1) };
  return [state, ...grants(next, knowledge)];
}

function dropOrphans(state: ServiceState): ServiceState[] {
  const orphans = state.queue.filter((waiter) => waiter.orphan);
  if (orphans.length === 0) return [state];
  return [state, { ...state, queue: state.queue.filter((waiter) => !waiter.orphan) }];
}

/**
 * The holder with this id, if any: a holder whose id no client learned (its acquire's answer
 * was lost) may be named by an id no grant's answer showed (a refusal named it, an operator
 * force-released it).
 */
function holderIndex(state: ServiceState, id: string, knowledge: Knowledge): number {
  const exact = state.holders.findIndex((holder) => holder.id === id);
  if (exact >= 0 || knowledge.knownIds.has(id)) return exact;
  return state.holders.findIndex((holder) => holder.id === null);
}

/** A grant seen by its client: the token must exceed every token granted before. */
function validToken(state: ServiceState, token: number, after: number): boolean {
  return token > Math.max(state.lastToken, after);
}

function stepAcquire(
  state: ServiceState,
  input: LockInput & { kind: 'acquire' },
  output: LockOutput | Unknown,
  knowledge: Knowledge,
): ServiceState[] {
  const { request, ttlMs } = input;
  const free = state.holders.length < state.limit && state.queue.length === 0;
  const take = (lock: SeenLock | null, orphan: boolean): ServiceState => ({
    ...state,
    holders: [
      ...state.holders,
      {
        id: lock?.id ?? null,
        request,
        token: lock?.token ?? null,
        after: state.lastToken,
        ...(lock
          ? endOf(lock)
          : { endsFrom: ttlMs === null ? Infinity : input.at.from + ttlMs, endsTo: Infinity }),
        orphan,
        ttlMs,
      },
    ],
    lastToken: lock ? Math.max(state.lastToken, lock.token) : state.lastToken,
  });

  // A retry of a request (the same idempotency key) that was granted: the same lock again.
  const mine = state.holders.findIndex((holder) => holder.request === request);
  if (mine >= 0 && input.phase !== 'complete') {
    if (output === UNKNOWN) return [state];
    if (!output.ok) return output.code === 'REFUSED' ? [state] : [];
    return output.lock ? confirm(state, mine, output.lock) : [];
  }
  const queuedAt = state.queue.findIndex((waiter) => waiter.request === request);
  const ended = output !== UNKNOWN && !output.ok && output.code === 'LOCK_ENDED';
  if (ended && input.phase !== 'arrive') {
    // A retry after the request's lock ended, or a wait whose lock ended before its answer:
    // nothing of it is held or waiting by then.
    return mine < 0 && queuedAt < 0 ? [state] : [];
  }

  if (input.phase === 'now') {
    // A lost answer: the lock may be held, unseen (its lease or a retry ends it).
    if (output === UNKNOWN) return free ? [state, take(null, false)] : [state];
    if (output.ok) {
      if (!output.lock || !free || !validToken(state, output.lock.token, state.lastToken)) return [];
      return [take(output.lock, false)];
    }
    if (output.code === 'REFUSED') return [state];
    if (output.code !== 'LOCK_HELD') return [];
    // Refused: someone holds it (the head of a queue is granted before a newcomer is refused).
    if (state.holders.length < state.limit) return [];
    return namesAHolder(state, output.holderId, knowledge) ? [state] : [];
  }

  if (input.phase === 'rejoin') {
    if (output === UNKNOWN) return [state];
    // Dropped while its client was away: it joins at the back (or takes a free place, below);
    // still in line: the retry takes that place (below).
    if (queuedAt < 0 && !free)
      return [{ ...state, queue: [...state.queue, { request, ttlMs, orphan: false }] }];
  }
  if (input.phase === 'arrive' || input.phase === 'rejoin') {
    if (output !== UNKNOWN && !output.ok && output.code === 'REFUSED') return [state];
    // A retry of a request still in line takes its place (its client is back).
    if (queuedAt >= 0) {
      if (output === UNKNOWN) return [state];
      return [{ ...state, queue: state.queue.map((w, i) => (i === queuedAt ? { ...w, orphan: false } : w)) }];
    }
    // A wait whose client may be gone (or went away once and came back: retried): the server
    // may drop it from the line, and release what it is granted, unseen.
    // A wait answered LOCK_ENDED was granted a lock its client never saw: it may end any time.
    const orphan = output === UNKNOWN || ended || (input.retried === true && input.phase === 'arrive');
    const waiter: Waiter = { request, ttlMs, orphan };
    if (free) {
      // Taken at once: its `complete` shows the lock.
      const lock = output !== UNKNOWN && output.ok && output.lock ? output.lock : null;
      if (lock && !validToken(state, lock.token, state.lastToken)) return [];
      const taken = take(lock, orphan);
      return orphan ? [state, taken] : [taken];
    }
    const queued = { ...state, queue: [...state.queue, waiter] };
    return orphan ? [state, queued] : [queued];
  }

  // complete
  const held = state.holders.findIndex((holder) => holder.request === request);
  const waiting = state.queue.findIndex((waiter) => waiter.request === request);
  if (output === UNKNOWN) return [state];
  if (!output.ok && output.code === 'REFUSED') return held < 0 && waiting < 0 ? [state] : [];
  if (output.ok) return output.lock && held >= 0 ? confirm(state, held, output.lock) : [];
  if (output.code !== 'WAIT_TIMEOUT') return [];
  // Timed out: it leaves the queue without the lock. (Someone held it at the request's last
  // look; its lease may have ended an instant before the request gave up, so a free service
  // at the timeout is no anomaly: only a grant out of order is, and the queue checks that.)
  if (waiting < 0 || held >= 0) return [];
  return [{ ...state, queue: state.queue.filter((_, i) => i !== waiting) }];
}

/**
 * A holder's client sees its lock: the id and token must be the ones granted (a token not known
 * yet must exceed every one granted before it); its lease is now known, and its client knows it.
 */
function confirm(state: ServiceState, index: number, lock: SeenLock): ServiceState[] {
  const holder = state.holders[index] as Holder;
  if (holder.id !== null && holder.id !== lock.id) return [];
  if (holder.token !== null ? holder.token !== lock.token : !validToken(state, lock.token, holder.after)) {
    return [];
  }
  const seen: Holder = { ...holder, id: lock.id, token: lock.token, ...endOf(lock), orphan: false };
  return [
    {
      ...state,
      holders: state.holders.map((h, i) => (i === index ? seen : h)),
      lastToken: Math.max(state.lastToken, lock.token),
    },
  ];
}

/**
 * An answer naming `holderId` as the holder fits a state that holds it, or holds a lock no
 * client learned of (whose id can be no lock any answer showed).
 */
function namesAHolder(state: ServiceState, holderId: string | undefined, knowledge: Knowledge): boolean {
  if (holderId === undefined) return state.holders.length > 0;
  return state.holders.some(
    (holder) => holder.id === holderId || (holder.id === null && !knowledge.knownIds.has(holderId)),
  );
}

/** A look at the queue fits a state with that holder and those waiters, in that order. */
function stepQueue(state: ServiceState, output: LockOutput | Unknown, knowledge: Knowledge): ServiceState[] {
  if (output === UNKNOWN || !output.ok) return [state];
  if (!output.queue) return [];
  const { holderId, waiters } = output.queue;
  const holderFits =
    holderId === null ? state.holders.length === 0 : namesAHolder(state, holderId, knowledge);
  const queueFits =
    waiters.length === state.queue.length &&
    waiters.every((request, i) => state.queue[i]?.request === request);
  return holderFits && queueFits ? [state] : [];
}

function stepById(
  state: ServiceState,
  input: LockInput & { kind: 'release' | 'force-release' | 'get' | 'renew' },
  output: LockOutput | Unknown,
  knowledge: Knowledge,
): ServiceState[] {
  const index = holderIndex(state, input.id, knowledge);
  const holder = index < 0 ? undefined : (state.holders[index] as Holder);
  const without = () =>
    withHolders(
      state,
      state.holders.filter((_, i) => i !== index),
    );
  switch (input.kind) {
    case 'release':
    case 'force-release': {
      if (output === UNKNOWN) return holder ? [state, without()] : [state];
      if (output.ok) return holder ? [without()] : [];
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
        // A renewal restarts the lease at its own time (some time after its call): the lease
        // may end as early as the call plus the TTL (shorter than before, too), or any later.
        const ttlMs = input.ttlMs ?? holder.ttlMs;
        const extended: Holder = {
          ...holder,
          endsFrom: ttlMs === null ? holder.endsFrom : input.at.from + ttlMs,
          endsTo: Infinity,
        };
        return [
          state,
          withHolders(
            state,
            state.holders.map((h, i) => (i === index ? extended : h)),
          ),
        ];
      }
      if (output.ok) {
        if (!holder || !output.lock || holder.token !== output.lock.token) return [];
        const renewed: Holder = { ...holder, ...endOf(output.lock) };
        return [
          withHolders(
            state,
            state.holders.map((h, i) => (i === index ? renewed : h)),
          ),
        ];
      }
      if (output.code === 'REFUSED') return [state];
      return output.code === 'LOCK_NOT_HELD' && !holder ? [state] : [];
    }
  }
}

function key(state: ServiceState): string {
  return JSON.stringify([
    state.holders.map((h) => [h.id, h.request, h.token, h.after, h.endsFrom, h.endsTo, h.orphan]),
    state.queue.map((w) => [w.request, w.orphan]),
    state.lastToken,
  ]);
}

/**
 * The model of Tracker's lock for one history (partitioned by service): what the history's
 * answers reveal (the id each request's client learned) is part of it.
 */
export function lockModel(history: readonly LockOperation[]): Model<ServiceState, LockInput, LockOutput> {
  const idOfRequest = new Map<string, string>();
  const knownIds = new Set<string>();
  for (const op of history) {
    if (op.output === UNKNOWN || !op.output.ok || !op.output.lock) continue;
    knownIds.add(op.output.lock.id);
    if (op.input.kind === 'acquire') idOfRequest.set(op.input.request, op.output.lock.id);
  }
  const knowledge: Knowledge = { idOfRequest, knownIds };
  return {
    init: () => [EMPTY],
    step(state, input, output) {
      return settle(state, input.at, knowledge).flatMap((settled) =>
        input.kind === 'acquire'
          ? stepAcquire(settled, input, output, knowledge)
          : input.kind === 'queue'
            ? stepQueue(settled, output, knowledge)
            : stepById(settled, input, output, knowledge),
      );
    },
    key,
    // A waiting acquire: it joins the line (`arrive`), then is granted or times out (`complete`).
    expand: (op) => {
      const { input } = op;
      if (input.kind !== 'acquire' || input.phase !== 'complete') return [op];
      const arrive = { ...op, input: { ...input, phase: 'arrive' as const } };
      return input.retried
        ? [arrive, { ...op, input: { ...input, phase: 'rejoin' as const } }, op]
        : [arrive, op];
    },
    partition(operations) {
      const byService = new Map<string, LockOperation[]>();
      for (const op of operations) {
        const list = byService.get(op.input.service) ?? [];
        list.push(op);
        byService.set(op.input.service, list);
      }
      return [...byService.values()];
    },
    describe: describeOperation,
  };
}

/** One line for an operation, for reports and timelines. */
export function describeOperation(op: LockOperation): string {
  const input = op.input;
  const what =
    input.kind === 'acquire'
      ? `acquire${input.phase === 'now' ? '' : ` (${input.phase})`} ${input.request}`
      : input.kind === 'queue'
        ? 'queue'
        : `${input.kind} ${input.id}`;
  const output =
    op.output === UNKNOWN
      ? 'unknown'
      : op.output.ok
        ? op.output.lock
          ? `ok ${op.output.lock.id} token ${op.output.lock.token}`
          : op.output.queue
            ? `held by ${op.output.queue.holderId ?? 'nobody'}, waiting ${op.output.queue.waiters.join(', ') || 'nobody'}`
            : 'ok'
        : `${op.output.code}${op.output.holderId ? ` (${op.output.holderId})` : ''}`;
  return `${op.client} ${input.service}: ${what} → ${output} [${op.call}, ${op.return}]`;
}
