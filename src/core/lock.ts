/**
 * The lock domain, and the words every layer uses for it (API fields, SQL columns, proto
 * fields, log keys):
 *
 * - **service**: the name of the thing being locked ("production-deployment"). At most one
 *   lock per service is held at any time.
 * - **who**: the holder's identifier ("ci-pipeline-123"); free text, chosen by the caller.
 * - **lock**: the fact that `who` holds `service`, identified by a random UUID `id`.
 * - **acquire** takes the lock if the service is free; **release** gives it up by `id`.
 * - **createdAt**: when the lock was acquired, decided by the store's clock. The API shows
 *   it in UTC with whole seconds; stores keep milliseconds so that "oldest first" is exact.
 * - **lease**: a lock may carry a TTL (`ttlSeconds`); it then expires at `expiresAt` unless
 *   **renewed** before. An expired lock is gone for every purpose at once, by the store's
 *   clock, whether or not anything has deleted its row yet. A lock without TTL never expires.
 * - **waiter**: a request queued for a held service. Waiters are granted the lock strictly
 *   in arrival order when the holder releases or expires; a waiter whose client goes away
 *   leaves the queue at once.
 * - **fencing token**: an integer given with every acquire, strictly greater than every
 *   token given before for the same service (across releases, expiries, restarts and
 *   replicas). Downstream systems reject writes that carry a token older than one they saw.
 * - **limit** (a semaphore): a service admits up to `limit` exclusive holders at once (1 by
 *   default: a mutex). **mode** `shared`: any number of shared holders, never together with
 *   an exclusive one. See core/grants.ts for the grant rules.
 * - **resource**: a registered service, with `labels`, `properties` and a `capacity` (its
 *   limit). A request may name a **label** instead of a service: it takes any free resource
 *   carrying it.
 * - **group**: one request for several claims (services, labels with a quantity), granted
 *   all together or not at all; its locks share the `groupId`.
 * - **priority**: higher waiters are granted first; arrival order within a priority.
 * - **note** and **link**: why the lock is held and where to look (a CI run's URL), given on
 *   acquire (a waiting request carries them into its lock); the holder may change the note.
 */

/** How a lock shares its service: `exclusive` holders count against the limit; `shared` ones coexist. */
export const LOCK_MODES = ['exclusive', 'shared'] as const;
export type LockMode = (typeof LOCK_MODES)[number];

/** A registered resource as a lock taken on it shows it. */
export interface ResourceRef {
  readonly name: string;
  readonly labels: readonly string[];
  readonly properties: Readonly<Record<string, string>>;
}

/** A held lock. */
export interface Lock {
  readonly id: string;
  readonly service: string;
  readonly who: string;
  readonly createdAt: Date;
  /** The lease length the lock was taken or last renewed with; null: no TTL. */
  readonly ttlSeconds: number | null;
  /** When the lease runs out; null: never. */
  readonly expiresAt: Date | null;
  readonly fencingToken: number;
  /** How many requests are queued for this service right now. */
  readonly waiters: number;
  /** The name of the token that took it; null when authentication was off. */
  readonly owner: string | null;
  /**
   * How many exclusive holders its service admits while this lock is held (for a shared
   * lock: the service's limit, 1 or its resource's capacity).
   */
  readonly limit: number;
  readonly mode: LockMode;
  /** The group it was granted in (the group's id); null for a lock acquired alone. */
  readonly groupId: string | null;
  /** The registered resource it holds; null when its service is not a registered resource. */
  readonly resource: ResourceRef | null;
  /** Why it is held, in the holder's words (up to MAX_NOTE_LENGTH); null: none. */
  readonly note: string | null;
  /** Where to look (an http(s) URL: a CI run, a ticket); null: none. */
  readonly link: string | null;
}

/** A request queued for a held service, in arrival order. */
export interface Waiter {
  /** Arrival order across every process sharing the store: smaller came first. */
  readonly ticket: number;
  /** The id its lock gets when granted. */
  readonly lockId: string;
  readonly service: string;
  readonly who: string;
  readonly since: Date;
  /** 1 for the next in line. */
  readonly position: number;
  readonly priority: number;
  readonly mode: LockMode;
  /** A label request waiting for any resource carrying it (then `service` is the label). */
  readonly label: string | null;
  /** The group the request belongs to (its id), or null. */
  readonly groupId: string | null;
  /** The request's note and link, which its lock will carry. */
  readonly note: string | null;
  readonly link: string | null;
}

/** A service's holders and its queue. */
export interface Queue {
  readonly service: string;
  /** The oldest holder; null when free. */
  readonly holder: Lock | null;
  /** Every holder, oldest first. */
  readonly holders: readonly Lock[];
  /** The waiters that could take it (by name or by one of its labels), in grant order. */
  readonly waiters: readonly Waiter[];
}

/**
 * One thing an acquire asks for: a service by name, or `quantity` resources carrying a
 * label. `limit` is the exclusive limit the caller expects (null: 1, or the resource's
 * capacity); a shared claim names none.
 */
export interface Claim {
  readonly service: string | null;
  readonly label: string | null;
  readonly mode: LockMode;
  readonly limit: number | null;
  /** How many resources of the label (1 for a service). */
  readonly quantity: number;
}

/**
 * What a store is asked to write on acquire; the id is chosen by the service. A single
 * acquire names its `service` (its lock gets `id`); one with `claims` asks for all of them
 * (a label claim, or a group when `group` is set: its locks get new ids and `groupId` = id).
 */
export interface AcquireRequest {
  readonly id: string;
  /** A single acquire's service (also the first claim's, or its label, for display). */
  readonly service: string;
  /** Absent: one exclusive claim on `service` with limit 1 (the guide's acquire). */
  readonly claims?: readonly Claim[] | undefined;
  /** The request is a group: every lock gets its own id and this request's id as groupId. */
  readonly group?: boolean | undefined;
  /** Higher is granted first among waiters; default 0. */
  readonly priority?: number | undefined;
  readonly who: string;
  /** null: the lock never expires. */
  readonly ttlSeconds: number | null;
  /** The caller's token name (authentication on); absent or null without authentication. */
  readonly owner?: string | null;
  /**
   * The caller's identity (Principal.key), which a release or renewal must match; absent or
   * null without authentication. Kept by the store, never shown.
   */
  readonly ownerKey?: string | null;
  /** The lock's note and link (every lock of a group carries them); absent or null: none. */
  readonly note?: string | null;
  readonly link?: string | null;
}

/** The claims of a request: its own, or the guide's one exclusive claim on its service. */
export function claimsOf(request: AcquireRequest): readonly Claim[] {
  return (
    request.claims ?? [{ service: request.service, label: null, mode: 'exclusive', limit: null, quantity: 1 }]
  );
}

/** A registered resource, as the registry keeps it. */
export interface ResourceSpec {
  readonly name: string;
  readonly labels: readonly string[];
  readonly properties: Readonly<Record<string, string>>;
  readonly capacity: number;
  readonly description: string | null;
}

/** A registered resource with who holds it and who waits for it. */
export interface Resource extends ResourceSpec {
  readonly holders: readonly Lock[];
  readonly waiters: readonly Waiter[];
}

export const MAX_LIMIT = 1000;
export const MIN_PRIORITY = -1000;
export const MAX_PRIORITY = 1000;
/** Most claims in one group. */
export const MAX_GROUP_CLAIMS = 32;
/** Most resources one label claim takes. */
export const MAX_QUANTITY = 32;
/** Most labels and properties of a resource. */
export const MAX_LABELS = 32;
export const MAX_PROPERTIES = 64;
/** Longest property value, in code points. */
export const MAX_PROPERTY_LENGTH = 1024;

/** Longest accepted TTL: one year. */
export const MAX_TTL_SECONDS = 31_536_000;

/** Longest a request may wait in a queue. */
export const MAX_WAIT_SECONDS = 3600;

/** One page of held locks, oldest first (createdAt, then id). */
export interface LockPage {
  readonly locks: readonly Lock[];
  /** How many locks match the filters, over all pages. */
  readonly total: number;
}

export interface ListRequest {
  /** 1-based. */
  readonly page: number;
  readonly perPage: number;
  /** Exact match filters; undefined means "any". */
  readonly service?: string | undefined;
  readonly who?: string | undefined;
}

/** Longest accepted `service` or `who`, in Unicode code points. */
export const MAX_NAME_LENGTH = 256;
export const DEFAULT_PER_PAGE = 100;
export const MAX_PER_PAGE = 1000;

/**
 * Control characters (Unicode Cc: C0, DEL and C1, U+0080–U+009F): refused in every name and
 * reason, since one would corrupt logs, tables and shell output (C1's U+009B is a terminal's
 * escape sequence start).
 */
export const CONTROL_CHARACTERS = /\p{Cc}/u;

/**
 * Invisible characters refused in names (`service`, `who`) on top of the controls: every
 * format character (Unicode Cf: the bidi controls U+202A–U+202E, U+2066–U+2069, U+200E,
 * U+200F and U+061C; the zero-width U+200B–U+200D, U+2060–U+2064 and U+FEFF; the soft hyphen
 * U+00AD; and the rest of Cf) and the line and paragraph separators U+2028, U+2029. With one,
 * two different names could look the same, or a name could reorder what is shown around it.
 */
export const INVISIBLE_CHARACTERS = /[\p{Cf}\u2028\u2029]/u;

/**
 * A name as it is kept and compared: Unicode NFC, so that `café` typed as one code point or
 * as `e` + U+0301 is the same service (and the same `who`).
 */
export function normalizeName(value: string): string {
  return value.normalize('NFC');
}

/** RFC 4122 textual form, any version; ids are compared in lower case. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isLockId(value: string): boolean {
  return UUID.test(value);
}

/** `2024-01-15T10:00:00Z`: UTC, whole seconds, so that jq's `todate` compares with it. */
export function formatTimestamp(at: Date): string {
  return `${at.toISOString().slice(0, 19)}Z`;
}

/** RFC 3339's date-time, upper-case `T` and `Z` (as the API shows them), up to nanoseconds. */
const RFC_3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:Z|[+-](\d{2}):(\d{2}))$/;

/**
 * An RFC 3339 timestamp (`2026-11-26T17:00:00Z`, `2026-11-26T18:00:00.5+01:00`) as a Date, or
 * null when the text is not one: another shape (no zone, no seconds, a date alone), or a date
 * or time that does not exist (February 30th, 24:00, minute 60, a leap second, which a Date
 * cannot hold). `new Date` alone would read `2024-02-30` as March 1st.
 */
export function parseTimestamp(text: string): Date | null {
  const match = RFC_3339.exec(text);
  if (!match) return null;
  const [year, month, day, hour, minute, second, offsetHours, offsetMinutes] = match
    .slice(1)
    .map((part) => Number(part ?? 0)) as [number, number, number, number, number, number, number, number];
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const lastDay = month === 2 && leap ? 29 : DAYS_IN_MONTH[month - 1];
  if (lastDay === undefined || day < 1 || day > lastDay) return null;
  if (hour > 23 || minute > 59 || second > 59 || offsetHours > 23 || offsetMinutes > 59) return null;
  const at = new Date(text);
  return Number.isNaN(at.getTime()) ? null : at;
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] as const;

/**
 * What can happen to a lock; the history records every one, and watchers receive them.
 * - acquired: a lock was taken (also a waiter's grant).
 * - renewed: its lease was extended.
 * - released / force-released / expired: it ended; `heldMs` says how long it was held.
 * - queued / dequeued: a request joined or left a service's queue (`reason` of dequeued:
 *   `granted`, `left` when its caller stopped waiting, `abandoned` when its replica died).
 * - noted: its holder changed its note.
 * - stolen: an admin ended it and took its service in the same step (`reason`, `stolenBy`).
 */
export const LOCK_EVENT_TYPES = [
  'acquired',
  'released',
  'expired',
  'renewed',
  'force-released',
  'queued',
  'dequeued',
  'noted',
  'stolen',
] as const;

export type LockEventType = (typeof LOCK_EVENT_TYPES)[number];

/** Why a waiter left its queue. */
export const DEQUEUE_REASONS = ['granted', 'left', 'abandoned'] as const;

/**
 * One entry of the history, written by the store in the same transaction as the change it
 * records (so it exists exactly when the change committed).
 */
export interface LockEventRecord {
  /** Increasing in the order events become final; may have gaps. */
  readonly id: number;
  readonly type: LockEventType;
  /** When it was recorded, by the store's clock. */
  readonly at: Date;
  /** The lock it is about; for queued/dequeued, the waiting request (the id its lock gets). */
  readonly lockId: string;
  readonly service: string;
  readonly who: string;
  /** When the lock was acquired; for queued/dequeued, when the request joined the queue. */
  readonly createdAt: Date;
  readonly ttlSeconds: number | null;
  readonly expiresAt: Date | null;
  /** null for queued/dequeued: a waiter has no token yet. */
  readonly fencingToken: number | null;
  /** The service's live waiters right after the event. */
  readonly waiters: number;
  /** The token name that took the lock (or queued the request); null without authentication. */
  readonly owner: string | null;
  /** released/force-released/expired: how long the lock was held (an expiry ends at expiresAt). */
  readonly heldMs: number | null;
  /** force-released, stolen: the operator's reason; dequeued: one of DEQUEUE_REASONS. */
  readonly reason: string | null;
  /** The lock's (or the waiting request's) group; null outside a group. */
  readonly groupId: string | null;
  readonly mode: LockMode;
  /** The lock's limit; null for queued/dequeued. */
  readonly limit: number | null;
  /** queued/dequeued of a label request: the label (then `service` is the label too). */
  readonly label: string | null;
  /** The lock's (or the waiting request's) note and link when the event was recorded. */
  readonly note: string | null;
  readonly link: string | null;
  /** stolen: the lock that took its place, and who holds it; null for every other type. */
  readonly stolenBy: StolenBy | null;
}

/**
 * An event's `stolenBy` from what a store keeps of it (the new lock's id, holder and token
 * name): only a `stolen` event has one.
 */
export function stolenByOf(
  type: string,
  lockId: string | null,
  who: string | null,
  owner: string | null,
): StolenBy | null {
  return type === 'stolen' && lockId !== null && who !== null ? { lockId, who, owner } : null;
}

/** Who stole a lock: the new lock's id, its holder and the token that took it. */
export interface StolenBy {
  readonly lockId: string;
  readonly who: string;
  readonly owner: string | null;
}

export interface HistoryQuery {
  readonly service?: string | undefined;
  readonly who?: string | undefined;
  /** Inclusive. */
  readonly since?: Date | undefined;
  /** Exclusive. */
  readonly until?: Date | undefined;
  /** Only events with a smaller id (paging newest first). */
  readonly before?: number | undefined;
  readonly limit: number;
}

/** Longest accepted Idempotency-Key, in characters. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;

/** Longest accepted force-release reason, in code points. */
export const MAX_REASON_LENGTH = 1024;
/** Longest accepted note, in code points. */
export const MAX_NOTE_LENGTH = 1024;
/** Longest accepted link, in characters. */
export const MAX_LINK_LENGTH = 2048;

/**
 * A link as it is kept: an absolute `http:` or `https:` URL (WHATWG parsing, as browsers do),
 * or null when the text is not one. Anything else (`javascript:`, `data:`, a relative path)
 * could run or mislead where it is shown as a link.
 */
export function parseLink(text: string): string | null {
  if (text.length > MAX_LINK_LENGTH || /[\s\p{Cc}]/u.test(text)) return null;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  if (url.username !== '' || url.password !== '') return null;
  return text;
}
export const DEFAULT_HISTORY_LIMIT = 100;
export const MAX_HISTORY_LIMIT = 1000;
