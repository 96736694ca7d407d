import {
  type Caller,
  hasScope,
  mayUseService,
  ownerKey,
  ownerName,
  requireScope,
  requireService,
  serviceFilter,
} from './auth.js';
import type { Clock } from './clock.js';
import {
  ErrorCode,
  idempotencyKeyReused,
  invalidArgument,
  limitMismatch,
  lockEnded,
  lockHeld,
  lockNotFound,
  lockNotHeld,
  noSuchLabel,
  permissionDenied,
  queueFull,
  resourceInUse,
  resourceNotFound,
  TrackerError,
  tooManyLocks,
  tooManyWaiters,
} from './errors.js';
import type { EventFeed, FeedMessage } from './event-feed.js';
import {
  type Claim,
  DEFAULT_HISTORY_LIMIT,
  DEFAULT_PER_PAGE,
  isLockId,
  LOCK_MODES,
  type Lock,
  type LockEventRecord,
  type LockMode,
  type LockPage,
  MAX_GROUP_CLAIMS,
  MAX_HISTORY_LIMIT,
  MAX_IDEMPOTENCY_KEY_LENGTH,
  MAX_LABELS,
  MAX_LIMIT,
  MAX_LINK_LENGTH,
  MAX_NOTE_LENGTH,
  MAX_PER_PAGE,
  MAX_PRIORITY,
  MAX_PROPERTIES,
  MAX_PROPERTY_LENGTH,
  MAX_QUANTITY,
  MAX_REASON_LENGTH,
  MAX_TTL_SECONDS,
  MAX_WAIT_SECONDS,
  MIN_PRIORITY,
  parseLink,
  parseTimestamp,
  type Queue,
  type Resource,
  type ResourceSpec,
} from './lock.js';
import type { LockStore, OwnerMatch } from './lock-store.js';
import { validateName, validateText } from './names.js';
import { type CredentialCheck, createSessions } from './sessions.js';
import { createWaitingRoom } from './waiting-room.js';

/**
 * Every operation names its caller: a checked token, or AUTHENTICATION_OFF. There is no
 * default, so a transport that forgets to pass one does not compile.
 */
export interface CallerOptions {
  readonly caller: Caller;
}

/** One claim as a transport received it: a service or a label, and how to hold it. */
export interface ClaimOptions {
  /** Exactly one of `service` and `label`. */
  readonly service?: string | undefined;
  readonly label?: string | undefined;
  /** Default 'exclusive'. */
  readonly mode?: LockMode | undefined;
  /** Exclusive holders the service admits (1 to MAX_LIMIT); not with `shared` nor `label`. */
  readonly limit?: number | undefined;
  /** With `label` only (in a group): how many resources (1 to MAX_QUANTITY). */
  readonly quantity?: number | undefined;
}

/** What every acquire (single or group) takes besides its claims. */
export interface AcquireCommon extends CallerOptions {
  readonly who: string;
  /** Lease length; undefined: the server's default TTL (or none). */
  readonly ttlSeconds?: number | undefined;
  /** 0 or undefined: answer at once, as the guide does; up to MAX_WAIT_SECONDS. */
  readonly waitSeconds?: number | undefined;
  /** Aborts when the caller goes away: the request leaves the queue at once. */
  readonly signal?: AbortSignal | undefined;
  /** The caller's own deadline, an instant in epoch ms (a gRPC call's): it also bounds the wait. */
  readonly deadline?: number | undefined;
  /**
   * The client's key for this acquire (REST Idempotency-Key, gRPC request_id), up to 255
   * characters: a retry with the same key and the same request gets the same lock (or
   * joins the same wait), never a second one.
   */
  readonly idempotencyKey?: string | undefined;
  /** MIN_PRIORITY to MAX_PRIORITY, default 0: higher waiters are granted first. */
  readonly priority?: number | undefined;
  /** Why the lock is held, up to MAX_NOTE_LENGTH printable characters ('' counts as none). */
  readonly note?: string | undefined;
  /** Where to look: an absolute http(s) URL ('' counts as none). */
  readonly link?: string | undefined;
}

/** A single acquire: one claim (a service, or a label) with the common fields. */
export interface AcquireOptions extends AcquireCommon, Omit<ClaimOptions, 'quantity'> {}

/** A group acquire: 1 to MAX_GROUP_CLAIMS claims, granted all together or not at all. */
export interface GroupAcquireOptions extends AcquireCommon {
  readonly locks: readonly ClaimOptions[];
}

/** A group's held locks. */
export interface LockGroup {
  readonly id: string;
  readonly locks: readonly Lock[];
}

export interface GroupAcquired {
  readonly group: LockGroup;
  readonly replayed: boolean;
}

export interface ResourceOptions extends CallerOptions {
  readonly name: string;
}

export interface PutResourceOptions extends ResourceOptions {
  readonly labels?: readonly string[] | undefined;
  readonly properties?: Readonly<Record<string, string>> | undefined;
  /** Default 1. */
  readonly capacity?: number | undefined;
  readonly description?: string | undefined;
}

export interface ListResourcesOptions extends CallerOptions {
  readonly label?: string | undefined;
}

/** An acquire's answer: the lock, and whether it answers an earlier request with the same key. */
export interface Acquired {
  readonly lock: Lock;
  readonly replayed: boolean;
}

export interface LockIdOptions extends CallerOptions {
  /** The lock's id as the client sent it; anything that is not a UUID names no lock. */
  readonly id: string;
}

export interface RenewOptions extends LockIdOptions {
  /** undefined: the lock's own TTL. */
  readonly ttlSeconds?: number | undefined;
}

export interface SetNoteOptions extends LockIdOptions {
  /** The new note; null or '': none. */
  readonly note: string | null;
}

export interface StealOptions extends LockIdOptions {
  /** The new holder. */
  readonly who: string;
  /** Why, required: recorded in the history and shown to the old holder's tools. */
  readonly reason: string;
  /** The new lock's lease; undefined: the server's default TTL (or none). */
  readonly ttlSeconds?: number | undefined;
  /** The new lock's note ('' counts as none). */
  readonly note?: string | undefined;
}

export interface ForceReleaseOptions extends LockIdOptions {
  /** Recorded in the history; undefined or '' for none. */
  readonly reason?: string | undefined;
}

/** List parameters as a transport received them; undefined means "default" or "any". */
export interface ListOptions extends CallerOptions {
  readonly page?: number | undefined;
  readonly perPage?: number | undefined;
  readonly service?: string | undefined;
  readonly who?: string | undefined;
}

export interface ServiceOptions extends CallerOptions {
  readonly service: string;
}

/** History parameters as a transport received them; undefined means "any". */
export interface HistoryOptions extends CallerOptions {
  readonly service?: string | undefined;
  readonly who?: string | undefined;
  readonly since?: Date | undefined;
  readonly until?: Date | undefined;
  readonly before?: number | undefined;
  readonly limit?: number | undefined;
}

export interface SnapshotOptions extends CallerOptions {
  readonly service?: string | undefined;
}

/** A watch as a transport received it: raw values, absent when not given. */
export interface WatchOptions extends CallerOptions {
  readonly service?: string | undefined;
  readonly lastEventId?: string | undefined;
  /** How the transport names the event id, for the error (`Last-Event-ID`, `last_event_id`). */
  readonly lastEventIdField: string;
  /** Resolves when the stream has sent most of what it was given (see WatchRequest). */
  readonly drained?: (() => Promise<void>) | undefined;
  /**
   * Called when the service ends a live stream itself: its token was revoked
   * (UNAUTHENTICATED) or narrowed so that it may no longer watch this (PERMISSION_DENIED).
   * Nothing is sent after it; the transport tells its client why and closes the stream.
   */
  readonly onEnd: (reason: TrackerError) => void;
}

export interface HistoryPage {
  readonly events: LockEventRecord[];
  /** Where the next page starts; null after the last. */
  readonly nextBefore: number | null;
}

export type ListPage = LockPage & { readonly page: number; readonly perPage: number };

/**
 * What the transports may do with locks: the public surface of the core. Each method
 * validates its input, checks the caller's scopes and services, and maps store results to
 * domain errors (TrackerError with a stable code). Atomicity lives in the store.
 */
export interface LockService {
  /**
   * Takes the lock. With `waitSeconds`, a held service queues the request until it is
   * granted (FIFO), the wait runs out (WAIT_TIMEOUT) or the signal aborts (CANCELLED).
   */
  acquire(options: AcquireOptions): Promise<Acquired>;
  /** Takes every claim at once or nothing (also while waiting); see core/grants.ts. */
  acquireGroup(options: GroupAcquireOptions): Promise<GroupAcquired>;
  /** A group's held locks; LOCK_NOT_FOUND when none is held. */
  getGroup(options: LockIdOptions): Promise<LockGroup>;
  /** Renews every held lock of a group; LOCK_NOT_HELD when none is held. */
  renewGroup(options: RenewOptions): Promise<LockGroup>;
  /** Releases every held lock of a group; LOCK_NOT_FOUND when none is held. */
  releaseGroup(options: LockIdOptions): Promise<LockGroup>;
  /** Creates or replaces a registered resource (lock:admin). */
  putResource(options: PutResourceOptions): Promise<{ resource: Resource; created: boolean }>;
  getResource(options: ResourceOptions): Promise<Resource>;
  listResources(options: ListResourcesOptions): Promise<Resource[]>;
  /** Deletes a registered resource (lock:admin); RESOURCE_IN_USE while held. */
  deleteResource(options: ResourceOptions): Promise<void>;
  get(options: LockIdOptions): Promise<Lock>;
  /** Releases a lock: the caller's own, or any for an admin (or without authentication). */
  release(options: LockIdOptions): Promise<Lock>;
  /** Extends the lease; a lock that is not held answers LOCK_NOT_HELD. */
  renew(options: RenewOptions): Promise<Lock>;
  /** Changes a held lock's note (the holder's, or any for an admin); LOCK_NOT_HELD otherwise. */
  setNote(options: SetNoteOptions): Promise<Lock>;
  /**
   * Releases a lock whoever holds it (an operator's action, lock:admin), recording the
   * reason in the history. The next waiter, if any, is granted the lock as on a release.
   */
  forceRelease(options: ForceReleaseOptions): Promise<Lock>;
  /**
   * Ends a held lock whoever holds it and gives its service to the caller in the same step,
   * ahead of the queue (lock:admin); the history records `stolen` with the reason and the
   * new holder. The old holder's renewal then answers LOCK_NOT_HELD.
   */
  steal(options: StealOptions): Promise<{ stolen: Lock; lock: Lock }>;
  list(options: ListOptions): Promise<ListPage>;
  /** The holder and the queue of a service. */
  queue(options: ServiceOptions): Promise<Queue>;
  /**
   * The history, newest first, and where the next page starts. A token limited to some
   * services sees only their events, so its pages may come out short.
   */
  history(options: HistoryOptions): Promise<HistoryPage>;
  /** Every held lock (of one service) the caller may see, from one snapshot. */
  snapshot(options: SnapshotOptions): Promise<Lock[]>;
  /**
   * Starts sending to `send`: a snapshot (or a resume after `lastEventId`), then every event
   * the caller may see. Resolves once live, with the function that stops it. A stream whose
   * token is revoked or narrowed meanwhile ends through `onEnd` (or, before it is live, by
   * rejecting with the same error).
   */
  watch(options: WatchOptions, send: (message: FeedMessage) => void): Promise<() => void>;
}

/** The service as the composition root holds it: the public surface, and the process's chores. */
export interface LockServiceRuntime extends LockService {
  /** Expires what is due and drops abandoned waiters, in batches; returns how many expired. */
  sweep(): Promise<number>;
  /** Stops waiting: requests in line answer STORE_UNAVAILABLE and leave the queue. */
  close(): void;
  /**
   * After the tokens file was read again: every watch stream and waiting acquire whose token
   * was revoked, or narrowed so that it may no longer do that, ends (a waiting acquire leaves
   * the queue, or hands back a lock granted in the race, and answers UNAUTHENTICATED or
   * PERMISSION_DENIED). Returns how many ended. See core/sessions.ts for the rules.
   */
  revalidate(check: CredentialCheck): number;
}

/** How an acquire that did not get the lock ended. */
export type Refusal = 'held' | 'timeout' | 'cancelled' | 'failed';

/**
 * Something this process did to a lock; logs and metrics subscribe to these. (The history
 * and watchers use the store's own record, which covers every process.)
 */
export type LockEvent =
  /** `ms`: how long the acquire took, a wait in the queue included; `waited`: it queued. */
  | { readonly type: 'acquired'; readonly lock: Lock; readonly ms: number; readonly waited: boolean }
  | {
      readonly type: 'refused';
      readonly service: string;
      readonly who: string;
      readonly reason: Refusal;
      readonly ms: number;
    }
  | { readonly type: 'released' | 'renewed' | 'expired' | 'noted'; readonly lock: Lock }
  | { readonly type: 'force-released'; readonly lock: Lock; readonly reason: string | null }
  /** `lock` was stolen: `by` took its service. */
  | { readonly type: 'stolen'; readonly lock: Lock; readonly by: Lock; readonly reason: string }
  /** A request joined the queue of a held service. */
  | { readonly type: 'queued'; readonly service: string; readonly who: string; readonly holder: Lock };

export interface LockServiceDeps {
  readonly store: LockStore;
  /** The store's history as a live stream, for watchers. */
  readonly feed: EventFeed;
  readonly clock: Clock;
  /** New lock ids; crypto.randomUUID in production. */
  readonly newId: () => string;
  /** Called after each committed change, synchronously; must not throw. */
  readonly onEvent: (event: LockEvent) => void;
  /** TTL for acquires that give none; null: such locks never expire. */
  readonly defaultTtlSeconds: number | null;
  /** Longest TTL accepted on acquire and renew; null: MAX_TTL_SECONDS. */
  readonly maxTtlSeconds: number | null;
  /** This process's name in the queue (a replica id); unique per process. */
  readonly owner: string;
  /** Safety re-check of a waiting request, in ms (default 1000). */
  readonly recheckMs?: number;
  /** Most live waiters one service's queue takes. */
  readonly maxWaitersPerService: number;
  /** Most requests this process lets wait at once, over all services. */
  readonly maxWaiters: number;
  /** Most locks the store may hold; null: no limit. */
  readonly maxLocks: number | null;
}

export const DEFAULT_MAX_WAITERS = 1000;
/** Most waiting requests per process, over all services. */
export const DEFAULT_MAX_WAITERS_TOTAL = 10_000;
export const DEFAULT_MAX_LOCKS = 1_000_000;
/** How old the count of held locks that --max-locks is checked against may be, in ms. */
const LOCK_COUNT_MAX_AGE_MS = 1000;
/** Locks one sweep expires at most; a sweep that hits it runs again at once. */
export const SWEEP_BATCH = 500;
const EVENT_ID = /^[0-9]{1,15}$/;

export function createLockService({
  store,
  feed,
  clock,
  newId,
  onEvent,
  defaultTtlSeconds,
  maxTtlSeconds,
  owner,
  recheckMs,
  maxWaitersPerService,
  maxWaiters,
  maxLocks,
}: LockServiceDeps): LockServiceRuntime {
  const room = createWaitingRoom(store, owner, { recheckMs, clock, maxWaiters });
  // What callers started that outlives their request (watches, waits), for revocations.
  const sessions = createSessions();
  // --max-locks is checked against a count of held locks at most a second old, plus this
  // process's acquires since: counting the store on every acquire would cost a scan each.
  // Several replicas acquiring in the same second may overshoot by what they took in it.
  let lockCount = { value: 0, at: Number.NEGATIVE_INFINITY };
  // One count at a time, shared by the acquires that arrive while it runs.
  let counting: Promise<void> | null = null;
  const checkLockLimit = async () => {
    if (maxLocks === null) return;
    if (clock.monotonicMs() - lockCount.at > LOCK_COUNT_MAX_AGE_MS) {
      counting ??= store
        .stats()
        .then((stats) => {
          lockCount = { value: stats.locks, at: clock.monotonicMs() };
        })
        .finally(() => {
          counting = null;
        });
      await counting;
    }
    if (lockCount.value >= maxLocks) throw tooManyLocks(maxLocks);
  };
  /**
   * The lock behind an id, if the caller may know of it. A lock of a service outside the
   * caller's patterns answers like an unknown id, so that an id tells a stranger nothing,
   * not even its service (a caller without the scope at all is refused before this).
   */
  const visibleLock = async (key: string | null, caller: Caller): Promise<Lock | null> => {
    const lock = key ? await store.get(key) : null;
    return lock && mayUseService(caller, lock.service) ? lock : null;
  };
  /** Whether the caller is a token limited to some services (whose locks are looked up first). */
  const limited = (caller: Caller) => caller.kind === 'token' && caller.services !== null;
  /**
   * Before a release or renewal: the scope; the lock's service, for a token limited to some
   * services (an admin too): a lock of another service is `missing`, as for an unknown id;
   * and the owner the change must match: the caller's identity (not its name), unless it is
   * an admin (or authentication is off). A lock's service never changes, so looking it up
   * first leaves no gap.
   */
  const ownerFilter = async (
    key: string,
    caller: Caller,
    missing: () => TrackerError,
  ): Promise<OwnerMatch | undefined> => {
    requireScope(caller, 'lock:write');
    if (caller.kind === 'authentication-off') return undefined;
    if (limited(caller) && !(await visibleLock(key, caller))) throw missing();
    return hasScope(caller, 'lock:admin') ? undefined : { key: caller.key, name: caller.name };
  };
  /** After a refused owner-checked change: 403 if the lock exists (another owner's), else `missing`. */
  const refusedChange = async (key: string, owner: OwnerMatch | undefined, missing: () => TrackerError) => {
    if (owner !== undefined && (await store.get(key))) {
      return permissionDenied(
        'this lock was taken with another token; only that token or an admin may change it',
      );
    }
    return missing();
  };
  const maxTtl = maxTtlSeconds ?? MAX_TTL_SECONDS;
  const validateTtl = (ttlSeconds: number | undefined): void => {
    if (ttlSeconds === undefined) return;
    if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_TTL_SECONDS) {
      throw invalidArgument('ttlSeconds', `ttlSeconds must be an integer from 1 to ${MAX_TTL_SECONDS}`);
    }
    if (ttlSeconds > maxTtl) {
      throw invalidArgument('ttlSeconds', `ttlSeconds must be at most ${maxTtl} (the server's --max-ttl)`);
    }
  };
  /** Only the events of services the caller may see. */
  const visibleEvents = (caller: Caller, events: LockEventRecord[]) =>
    caller.kind === 'token' && caller.services !== null
      ? events.filter((event) => mayUseService(caller, event.service))
      : events;

  /**
   * One claim as a transport sent it, checked: exactly one of service and label; a mode;
   * a limit only for an exclusive claim on a service; a quantity only for a label. The
   * caller must be allowed to lock the service (for a label: every resource carrying it).
   */
  const validateClaim = async (caller: Caller, raw: ClaimOptions, prefix = ''): Promise<Claim> => {
    const field = (name: string) => `${prefix}${name}`;
    if (raw.service !== undefined && raw.label !== undefined) {
      throw invalidArgument(field('label'), `give ${field('service')} or ${field('label')}, not both`);
    }
    if (raw.service === undefined && raw.label === undefined) {
      throw invalidArgument(field('service'), `${field('service')} (or ${field('label')}) is required`);
    }
    const mode = raw.mode ?? 'exclusive';
    if (!LOCK_MODES.includes(mode)) {
      throw invalidArgument(field('mode'), `${field('mode')} must be "exclusive" or "shared"`);
    }
    if (raw.limit !== undefined) {
      if (!Number.isSafeInteger(raw.limit) || raw.limit < 1 || raw.limit > MAX_LIMIT) {
        throw invalidArgument(field('limit'), `${field('limit')} must be an integer from 1 to ${MAX_LIMIT}`);
      }
      if (mode === 'shared') {
        throw invalidArgument(field('limit'), `${field('limit')} cannot be given with mode "shared"`);
      }
      if (raw.label !== undefined) {
        throw invalidArgument(
          field('limit'),
          `${field('limit')} cannot be given with a label: a resource's capacity is its limit`,
        );
      }
    }
    if (raw.quantity !== undefined) {
      if (raw.label === undefined) {
        throw invalidArgument(field('quantity'), `${field('quantity')} is given only with a label`);
      }
      if (!Number.isSafeInteger(raw.quantity) || raw.quantity < 1 || raw.quantity > MAX_QUANTITY) {
        throw invalidArgument(
          field('quantity'),
          `${field('quantity')} must be an integer from 1 to ${MAX_QUANTITY}`,
        );
      }
    }
    if (raw.service !== undefined) {
      const service = validateName(field('service'), raw.service);
      requireService(caller, 'lock:write', service);
      return { service, label: null, mode, limit: raw.limit ?? null, quantity: 1 };
    }
    const label = validateName(field('label'), raw.label ?? '');
    requireScope(caller, 'lock:write');
    if (limited(caller)) {
      for (const resource of await store.listResources(label))
        requireService(caller, 'lock:write', resource.name);
    }
    return { service: null, label, mode, limit: null, quantity: raw.quantity ?? 1 };
  };

  /** The services a waiting request's claims can use, for its lines in the waiting room. */
  const servicesOf = async (claims: readonly Claim[]): Promise<string[]> => {
    const names = new Set<string>();
    for (const claim of claims) {
      if (claim.service !== null) names.add(claim.service);
      else for (const resource of await store.listResources(claim.label ?? '')) names.add(resource.name);
    }
    return [...names];
  };

  /**
   * Every acquire: the common fields checked, the store asked (the request waits in line
   * with `waitSeconds`), refusals mapped to errors. Returns the request's id (a group's id)
   * and its locks.
   */
  const take = async (
    {
      caller,
      who: rawWho,
      ttlSeconds,
      waitSeconds = 0,
      priority,
      signal,
      deadline,
      idempotencyKey,
      note: rawNote,
      link: rawLink,
    }: AcquireCommon,
    claims: readonly Claim[],
    { group, plain }: { group: boolean; plain: boolean },
  ): Promise<{ id: string; locks: readonly Lock[]; replayed: boolean }> => {
    const who = validateName('who', rawWho);
    validateTtl(ttlSeconds);
    if (!Number.isSafeInteger(waitSeconds) || waitSeconds < 0 || waitSeconds > MAX_WAIT_SECONDS) {
      throw invalidArgument('waitSeconds', `waitSeconds must be an integer from 0 to ${MAX_WAIT_SECONDS}`);
    }
    if (
      priority !== undefined &&
      (!Number.isSafeInteger(priority) || priority < MIN_PRIORITY || priority > MAX_PRIORITY)
    ) {
      throw invalidArgument(
        'priority',
        `priority must be an integer from ${MIN_PRIORITY} to ${MAX_PRIORITY}`,
      );
    }
    if (idempotencyKey !== undefined) validateKey(idempotencyKey);
    const note = validateNote(rawNote);
    const link = validateLink(rawLink);
    const [first] = claims;
    const service = first?.service ?? first?.label ?? '';
    const ttl = ttlSeconds ?? defaultTtlSeconds;
    const id = newId();
    const key =
      idempotencyKey === undefined
        ? undefined
        : {
            // Per identity: a new token under an old name replays none of the old one's keys.
            scope: ownerKey(caller) ?? '',
            key: idempotencyKey,
            // What the client asked, as it asked it: a retry must ask the same. A plain acquire
            // keeps the fingerprint it always had.
            fingerprint: JSON.stringify([
              ...(plain && priority === undefined
                ? [service, who, ttlSeconds ?? null, waitSeconds]
                : [claims, group, who, ttlSeconds ?? null, waitSeconds, priority ?? 0]),
              ...(note === null && link === null ? [] : [note, link]),
            ]),
            attempt: newId(),
          };
    const started = clock.monotonicMs();
    const elapsed = () => clock.monotonicMs() - started;
    let waited = false;
    // A request that may wait holds a place among this process's waiters from the start
    // (the total is a limit on what one process keeps open). Without a place it may still
    // take a free service; it does not join a queue.
    let claimed = waitSeconds > 0 && room.claim('within-limit');
    try {
      await checkLockLimit();
      const result = await store.acquire(
        {
          id,
          service,
          ...(plain ? {} : { claims, group, priority: priority ?? 0 }),
          ...(plain && priority !== undefined ? { priority } : {}),
          who,
          ttlSeconds: ttl,
          owner: ownerName(caller),
          ownerKey: ownerKey(caller),
          ...(note === null && link === null ? {} : { note, link }),
        },
        claimed ? { owner, maxWaiters: maxWaitersPerService } : undefined,
        key,
      );
      if ('keyReused' in result) throw idempotencyKeyReused();
      if ('ended' in result) throw lockEnded(result.ended.lockId);
      if ('limitMismatch' in result)
        throw limitMismatch(result.limitMismatch.service, result.limitMismatch.limit);
      if ('noSuchLabel' in result) throw noSuchLabel(result.noSuchLabel);
      if ('unsatisfiable' in result) {
        throw invalidArgument(
          'locks',
          'these claims cannot be granted together: they ask for more than their services and labels can give at once (or for resources deleted since)',
        );
      }
      let locks: readonly Lock[];
      if (result.acquired) locks = result.locks;
      else {
        if (result.queueFull) throw queueFull(maxWaitersPerService);
        if (!result.waiter) {
          throw waitSeconds > 0 && !claimed
            ? tooManyWaiters(maxWaiters)
            : lockHeld(result.holder, result.holders);
        }
        // A retry whose earlier attempt still waits has its place in line already.
        if (!claimed) room.claim('over-limit');
        waited = true;
        claimed = false; // waitFor gives the place back
        onEvent({ type: 'queued', service, who, holder: result.holder });
        const untilDeadline = (deadline ?? Number.POSITIVE_INFINITY) - clock.now().getTime();
        // A revoked or narrowed token stops waiting at once (narrowed: any service the request
        // may be granted is no longer its own): the abort's reason is its answer.
        const revoked = new AbortController();
        const services = plain ? [service] : await servicesOf(claims);
        const closes = services.map((name) =>
          sessions.open(caller, {
            scope: 'lock:write',
            service: name,
            end: (reason) => revoked.abort(reason),
          }),
        );
        const close = () => {
          for (const closeOne of closes) closeOne();
        };
        try {
          locks = await room.waitFor(
            {
              service,
              services,
              priority: priority ?? 0,
              group,
              id: result.waiter.lockId,
              ticket: result.waiter.ticket,
              holder: result.holder,
              attempt: key?.attempt,
            },
            Math.min(waitSeconds * 1000, untilDeadline),
            signal ? AbortSignal.any([signal, revoked.signal]) : revoked.signal,
          );
        } finally {
          close();
        }
      }
      lockCount.value += locks.length;
      for (const lock of locks) onEvent({ type: 'acquired', lock, ms: elapsed(), waited });
      const requestId = group ? (locks[0]?.groupId ?? id) : (locks[0]?.id ?? id);
      return { id: requestId, locks, replayed: result.replayed ?? false };
    } catch (error) {
      onEvent({ type: 'refused', service, who, reason: refusal(error), ms: elapsed() });
      throw error;
    } finally {
      if (claimed) room.unclaim();
    }
  };

  /** Before a group renewal or release: like ownerFilter, for the group's locks. */
  const groupOwner = async (
    key: string | null,
    caller: Caller,
    missing: () => TrackerError,
  ): Promise<OwnerMatch | undefined> => {
    requireScope(caller, 'lock:write');
    if (!key) throw missing();
    if (caller.kind === 'authentication-off') return undefined;
    if (limited(caller)) {
      const locks = await store.granted(key);
      if (locks.length === 0 || !locks.every((lock) => mayUseService(caller, lock.service))) throw missing();
    }
    return hasScope(caller, 'lock:admin') ? undefined : { key: caller.key, name: caller.name };
  };

  return {
    async acquire({ service, label, mode, limit, ...common }) {
      const claim = await validateClaim(common.caller, { service, label, mode, limit });
      const plain = label === undefined && mode === undefined && limit === undefined;
      const { locks, replayed } = await take(common, [claim], { group: false, plain });
      const [lock] = locks;
      if (!lock) throw new Error('an acquire was granted no lock');
      return { lock, replayed };
    },

    async acquireGroup({ locks: raw, ...common }) {
      if (!Array.isArray(raw) || raw.length < 1 || raw.length > MAX_GROUP_CLAIMS) {
        throw invalidArgument('locks', `locks must list 1 to ${MAX_GROUP_CLAIMS} claims`);
      }
      const claims: Claim[] = [];
      for (const [index, item] of raw.entries()) {
        const claim = await validateClaim(common.caller, item, `locks[${index}].`);
        if (claim.service !== null && claims.some((earlier) => earlier.service === claim.service)) {
          throw invalidArgument(`locks[${index}].service`, `${claim.service} is claimed twice in this group`);
        }
        claims.push(claim);
      }
      const { id, locks, replayed } = await take(common, claims, { group: true, plain: false });
      return { group: { id, locks }, replayed };
    },

    async getGroup({ caller, id }) {
      requireScope(caller, 'lock:read');
      const key = lockKey(id);
      const locks = key ? (await store.granted(key)).filter((lock) => lock.groupId === key) : [];
      if (!key || locks.length === 0 || !locks.every((lock) => mayUseService(caller, lock.service))) {
        throw lockNotFound();
      }
      return { id: key, locks };
    },

    async renewGroup({ caller, id, ttlSeconds }) {
      validateTtl(ttlSeconds);
      const key = lockKey(id);
      const owner = await groupOwner(key, caller, lockNotHeld);
      if (!key) throw lockNotHeld();
      const { locks, denied } = await store.renewGroup(key, ttlSeconds ?? null, owner);
      if (denied) throw notYours();
      if (locks.length === 0) throw lockNotHeld();
      for (const lock of locks) onEvent({ type: 'renewed', lock });
      return { id: key, locks };
    },

    async releaseGroup({ caller, id }) {
      const key = lockKey(id);
      const owner = await groupOwner(key, caller, lockNotFound);
      if (!key) throw lockNotFound();
      const { locks, denied } = await store.releaseGroup(key, owner);
      if (denied) throw notYours();
      if (locks.length === 0) throw lockNotFound();
      for (const lock of locks) onEvent({ type: 'released', lock });
      return { id: key, locks };
    },

    async putResource({ caller, ...raw }) {
      requireScope(caller, 'lock:admin');
      const spec = validateResource(raw);
      requireService(caller, 'lock:admin', spec.name);
      return store.putResource(spec);
    },

    async getResource({ caller, name: raw }) {
      const name = validateName('name', raw);
      requireService(caller, 'lock:read', name);
      const resource = await store.getResource(name);
      if (!resource) throw resourceNotFound();
      return resource;
    },

    async listResources({ caller, label }) {
      requireScope(caller, 'lock:read');
      const resources = await store.listResources(
        label === undefined ? undefined : validateName('label', label),
      );
      return resources.filter((resource) => mayUseService(caller, resource.name));
    },

    async deleteResource({ caller, name: raw }) {
      requireScope(caller, 'lock:admin');
      const name = validateName('name', raw);
      requireService(caller, 'lock:admin', name);
      const outcome = await store.deleteResource(name);
      if (outcome === 'missing') throw resourceNotFound();
      if (outcome === 'in-use') throw resourceInUse();
    },

    async forceRelease({ caller, id, reason }) {
      if (reason !== undefined) validateText('reason', reason, MAX_REASON_LENGTH);
      requireScope(caller, 'lock:admin');
      const key = lockKey(id);
      // An admin limited to some services may force-release only their locks; others are unknown to it.
      if (key && limited(caller) && !(await visibleLock(key, caller))) throw lockNotFound();
      const lock = key
        ? await store.forceRelease(key, reason === undefined || reason === '' ? null : reason)
        : null;
      if (!lock) throw lockNotFound();
      onEvent({ type: 'force-released', lock, reason: reason ?? null });
      return lock;
    },

    async steal({ caller, id, who: rawWho, reason, ttlSeconds, note: rawNote }) {
      requireScope(caller, 'lock:admin');
      const who = validateName('who', rawWho);
      if (typeof reason !== 'string' || reason.trim() === '') {
        throw invalidArgument('reason', 'reason is required: say why the lock is taken away');
      }
      validateText('reason', reason, MAX_REASON_LENGTH);
      validateTtl(ttlSeconds);
      const note = validateNote(rawNote);
      const key = lockKey(id);
      // As for a force release: a limited admin steals only locks of its services.
      if (key && limited(caller) && !(await visibleLock(key, caller))) throw lockNotFound();
      const stolen = key
        ? await store.steal(
            key,
            {
              id: newId(),
              who,
              ttlSeconds: ttlSeconds ?? defaultTtlSeconds,
              owner: ownerName(caller),
              ownerKey: ownerKey(caller),
              note,
            },
            reason,
          )
        : null;
      if (!stolen) throw lockNotFound();
      onEvent({ type: 'stolen', lock: stolen.stolen, by: stolen.lock, reason });
      return stolen;
    },

    async sweep() {
      let total = 0;
      // Bounded: at most 20 batches a call; the next call goes on.
      for (let batch = 0; batch < 20; batch++) {
        const { expired } = await store.sweep(SWEEP_BATCH);
        for (const lock of expired) onEvent({ type: 'expired', lock });
        total += expired.length;
        if (expired.length < SWEEP_BATCH) break;
      }
      return total;
    },

    async history({ caller, limit = DEFAULT_HISTORY_LIMIT, ...raw }) {
      requireScope(caller, 'lock:read');
      const params = {
        ...raw,
        service: raw.service === undefined ? undefined : validateName('service', raw.service),
        who: raw.who === undefined ? undefined : validateName('who', raw.who),
      };
      if (params.service !== undefined) requireService(caller, 'lock:read', params.service);
      if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_HISTORY_LIMIT) {
        throw invalidArgument('limit', `limit must be an integer from 1 to ${MAX_HISTORY_LIMIT}`);
      }
      for (const field of ['since', 'until'] as const) {
        const at = params[field];
        if (at !== undefined && Number.isNaN(at.getTime())) {
          throw invalidArgument(field, `${field} must be an RFC 3339 timestamp`);
        }
      }
      if (params.before !== undefined && (!Number.isSafeInteger(params.before) || params.before < 1)) {
        throw invalidArgument('before', 'before must be a positive integer (an event id)');
      }
      const events = await store.history({ ...params, limit });
      return {
        events: visibleEvents(caller, events),
        // Another page may follow only when this one came back full.
        nextBefore: events.length === limit ? (events.at(-1)?.id ?? null) : null,
      };
    },

    async snapshot({ caller, ...raw }) {
      requireScope(caller, 'lock:read');
      const service = raw.service === undefined ? undefined : validateName('service', raw.service);
      if (service !== undefined) requireService(caller, 'lock:read', service);
      const locks = await store.snapshot(service);
      return caller.kind === 'token' && caller.services !== null
        ? locks.filter((lock) => mayUseService(caller, lock.service))
        : locks;
    },

    watch({ caller, lastEventId, lastEventIdField, drained, onEnd, ...raw }, send) {
      requireScope(caller, 'lock:read');
      const service = raw.service === undefined ? undefined : validateName('service', raw.service);
      if (service !== undefined) requireService(caller, 'lock:read', service);
      if (lastEventId !== undefined && !EVENT_ID.test(lastEventId)) {
        throw invalidArgument(
          lastEventIdField,
          `${lastEventIdField} must be an event id (a non-negative integer)`,
        );
      }
      let stopFeed: (() => void) | null = null;
      let ended: TrackerError | null = null;
      const close = sessions.open(caller, {
        scope: 'lock:read',
        service,
        end: (reason) => {
          ended = reason;
          // Not live yet: the watch rejects with the reason below, as any refusal.
          if (!stopFeed) return;
          stopFeed();
          onEnd(reason);
        },
      });
      return feed
        .watch(
          {
            service,
            after: lastEventId === undefined ? undefined : Number(lastEventId),
            allow: serviceFilter(caller),
            drained,
          },
          (message) => {
            if (ended === null) send(message);
          },
        )
        .then(
          (unsubscribe) => {
            if (ended) {
              unsubscribe();
              throw ended;
            }
            stopFeed = unsubscribe;
            return () => {
              close();
              unsubscribe();
            };
          },
          (error: unknown) => {
            close();
            throw error;
          },
        );
    },

    close() {
      room.close();
    },

    revalidate(check) {
      return sessions.revalidate(check);
    },

    async queue({ caller, ...raw }) {
      const service = validateName('service', raw.service);
      requireService(caller, 'lock:read', service);
      return store.queue(service);
    },

    async get({ caller, id }) {
      requireScope(caller, 'lock:read');
      const lock = await visibleLock(lockKey(id), caller);
      if (!lock) throw lockNotFound();
      return lock;
    },

    async release({ caller, id }) {
      const key = lockKey(id);
      if (!key) {
        requireScope(caller, 'lock:write');
        throw lockNotFound();
      }
      const owner = await ownerFilter(key, caller, lockNotFound);
      const lock = await store.release(key, owner);
      if (!lock) throw await refusedChange(key, owner, lockNotFound);
      onEvent({ type: 'released', lock });
      return lock;
    },

    async renew({ caller, id, ttlSeconds }) {
      validateTtl(ttlSeconds);
      const key = lockKey(id);
      if (!key) {
        requireScope(caller, 'lock:write');
        throw lockNotHeld();
      }
      const owner = await ownerFilter(key, caller, lockNotHeld);
      const lock = await store.renew(key, ttlSeconds ?? null, owner);
      if (!lock) throw await refusedChange(key, owner, lockNotHeld);
      onEvent({ type: 'renewed', lock });
      return lock;
    },

    async setNote({ caller, id, note: rawNote }) {
      const note = rawNote === null ? null : validateNote(rawNote);
      const key = lockKey(id);
      if (!key) {
        requireScope(caller, 'lock:write');
        throw lockNotHeld();
      }
      const owner = await ownerFilter(key, caller, lockNotHeld);
      const lock = await store.setNote(key, note, owner);
      if (!lock) throw await refusedChange(key, owner, lockNotHeld);
      onEvent({ type: 'noted', lock });
      return lock;
    },

    async list({ caller, page = 1, perPage = DEFAULT_PER_PAGE, ...raw }) {
      requireScope(caller, 'lock:read');
      if (!Number.isSafeInteger(page) || page < 1) {
        throw invalidArgument('page', 'page must be a positive integer');
      }
      if (!Number.isSafeInteger(perPage) || perPage < 1 || perPage > MAX_PER_PAGE) {
        throw invalidArgument('per_page', `per_page must be an integer from 1 to ${MAX_PER_PAGE}`);
      }
      const service = raw.service === undefined ? undefined : validateName('service', raw.service);
      const who = raw.who === undefined ? undefined : validateName('who', raw.who);
      if (service !== undefined) requireService(caller, 'lock:read', service);
      if (caller.kind === 'token' && caller.services !== null) {
        // Only the services this token may see: filtered from one snapshot, then paged.
        const visible = (await store.snapshot(service)).filter(
          (lock) => mayUseService(caller, lock.service) && (who === undefined || lock.who === who),
        );
        return {
          locks: visible.slice((page - 1) * perPage, page * perPage),
          total: visible.length,
          page,
          perPage,
        };
      }
      const result = await store.list({ page, perPage, service, who });
      return { ...result, page, perPage };
    },
  };
}

/** The id as stores know it (lower case), or null when it cannot name any lock. */
/** A group renewal or release refused: the group is another owner's. */
function notYours(): TrackerError {
  return permissionDenied(
    'this group was taken with another token; only that token or an admin may change it',
  );
}

function lockKey(id: string): string | null {
  const key = id.toLowerCase();
  return isLockId(key) ? key : null;
}

/**
 * A `since` or `until` as a transport received it (text) as a Date; INVALID_ARGUMENT naming
 * the field when it is not an RFC 3339 timestamp of an instant that exists.
 */
export function timestampArgument(field: 'since' | 'until', text: string): Date {
  const at = parseTimestamp(text);
  if (at === null) {
    throw invalidArgument(field, `${field} must be an RFC 3339 timestamp, e.g. 2026-11-26T17:00:00Z`);
  }
  return at;
}

/** An idempotency key: 1 to 255 printable characters. */
function validateKey(key: string): void {
  if (key === '' || key.length > MAX_IDEMPOTENCY_KEY_LENGTH || !/^[\x20-\x7e]+$/.test(key)) {
    throw invalidArgument(
      'Idempotency-Key',
      `Idempotency-Key must be 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters`,
    );
  }
}

/** A resource as a transport sent it, checked (see PutResourceOptions). */
function validateResource(raw: Omit<PutResourceOptions, 'caller'>): ResourceSpec {
  const name = validateName('name', raw.name);
  const labels = raw.labels ?? [];
  if (!Array.isArray(labels) || labels.length > MAX_LABELS) {
    throw invalidArgument('labels', `labels must list at most ${MAX_LABELS} labels`);
  }
  const properties = raw.properties ?? {};
  const entries = Object.entries(properties);
  if (entries.length > MAX_PROPERTIES) {
    throw invalidArgument('properties', `properties must have at most ${MAX_PROPERTIES} entries`);
  }
  const capacity = raw.capacity ?? 1;
  if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > MAX_LIMIT) {
    throw invalidArgument('capacity', `capacity must be an integer from 1 to ${MAX_LIMIT}`);
  }
  if (raw.description !== undefined) validateText('description', raw.description, MAX_REASON_LENGTH);
  return {
    name,
    labels: [...new Set(labels.map((label) => validateName('labels', label)))],
    properties: Object.fromEntries(
      entries.map(([key, value]) => {
        const property = validateName('properties', key);
        if (typeof value !== 'string')
          throw invalidArgument(`properties.${key}`, 'property values must be strings');
        validateText(`properties.${key}`, value, MAX_PROPERTY_LENGTH);
        return [property, value];
      }),
    ),
    capacity,
    description: raw.description === undefined || raw.description === '' ? null : raw.description,
  };
}

/** A note as kept: null for none or '' (see validateText). */
function validateNote(note: string | undefined): string | null {
  if (note === undefined || note === '') return null;
  validateText('note', note, MAX_NOTE_LENGTH);
  return note;
}

/** A link as kept: null for none or ''; else an absolute http(s) URL (see parseLink). */
function validateLink(link: string | undefined): string | null {
  if (link === undefined || link === '') return null;
  const parsed = parseLink(link);
  if (parsed === null) {
    throw invalidArgument(
      'link',
      `link must be an absolute http:// or https:// URL of at most ${MAX_LINK_LENGTH} characters, without credentials`,
    );
  }
  return parsed;
}

function refusal(error: unknown): Refusal {
  if (!(error instanceof TrackerError)) return 'failed';
  if (error.code === ErrorCode.LOCK_HELD) return 'held';
  if (error.code === ErrorCode.WAIT_TIMEOUT) return 'timeout';
  if (error.code === ErrorCode.CANCELLED) return 'cancelled';
  return 'failed';
}
