/**
 * The grant rules: who may hold a service together with whom, and who goes first. Pure
 * functions over a snapshot that a store reads inside its write transaction (SQLite's
 * IMMEDIATE transaction, PostgreSQL's row locks on every `services` row involved), so the
 * decision and the writes that carry it out are one atomic step: replicas never overshoot a
 * limit, and nothing is decided outside the database's serialisation.
 *
 * Rules:
 * - **Capacity and mode.** A resource admits a shared claim while all its holders are
 *   shared; an exclusive claim while it has no shared holder and fewer exclusive holders
 *   than its limit (the registered capacity, else the claim's `limit`, else 1; never more
 *   than any holder's own limit).
 * - **Order.** Requests are considered by priority (higher first), then arrival (the
 *   store's ticket). A new request comes after every waiter of its priority.
 * - **No overtaking on what a waiter waits for.** A request that cannot be granted blocks,
 *   for every later request, each resource of the claims it cannot get now (for a label
 *   claim it cannot complete: every resource carrying the label). So an exclusive waiter is
 *   not overtaken by later shared ones, and a freed resource goes to the earliest waiter it
 *   lets complete.
 * - **Groups are all or nothing, also while they wait.** A request holds nothing until all
 *   its claims can be granted together. A waiting group does not block the resources it
 *   could take now (only those it waits for), so a group that cannot complete never idles a
 *   free resource; the price is that a group competing with single requests on a busy
 *   resource may wait long: give it a higher priority. Nothing is held while waiting, so
 *   `[a,b]` and `[b,a]` never deadlock.
 * - **Labels.** A label claim takes `quantity` distinct resources carrying the label, the
 *   least recently released first (to spread wear), then by name.
 */
import type { Claim, LockMode } from './lock.js';

/** A live holder of a resource, as the rules see it. */
export interface HolderView {
  readonly mode: LockMode;
  readonly limit: number;
}

/** A resource (any service; registered or not) as the rules see it. */
export interface ResourceView {
  readonly name: string;
  /** The registered capacity; null for a service that is not a registered resource. */
  readonly capacity: number | null;
  readonly labels: readonly string[];
  /** When a lock on it last ended (unix ms; 0: never). */
  readonly releasedAt: number;
  /** Its live holders. */
  readonly holders: readonly HolderView[];
}

/** A request in line (or arriving), as the rules see it. */
export interface PendingRequest {
  /** The request's id (a waiter's lock id or group id). */
  readonly key: string;
  readonly priority: number;
  /** Arrival order; a new request has a ticket above every waiter's. */
  readonly ticket: number;
  readonly claims: readonly Claim[];
  /**
   * Whether it may be granted now: every resource its claims can use was read. A request
   * read only because it may block others is considered for its blocking, never granted.
   */
  readonly grantable: boolean;
}

/** One resource granted for one claim. */
export interface Pick {
  /** The claim's index in its request. */
  readonly claim: number;
  readonly service: string;
  readonly mode: LockMode;
  /** The limit the lock records. */
  readonly limit: number;
}

export interface Grant {
  readonly key: string;
  /** In claim order. */
  readonly picks: readonly Pick[];
}

/** What decideGrants decided: the grants, in grant order, and what each refused request waits for. */
export interface Decision {
  readonly grants: readonly Grant[];
  /** For each request not granted, the resources of the claims it cannot get now. */
  readonly waitingFor: ReadonlyMap<string, readonly string[]>;
}

/** Grant order: priority, higher first, then arrival. */
export function compareRequests(
  a: { readonly priority: number; readonly ticket: number },
  b: { readonly priority: number; readonly ticket: number },
): number {
  return b.priority - a.priority || a.ticket - b.ticket;
}

/** The exclusive limit a claim would hold `resource` under. */
export function effectiveLimit(resource: ResourceView, claim: Claim): number {
  return resource.capacity ?? claim.limit ?? 1;
}

/**
 * The service's current limit when an exclusive claim names (or, unnamed, defaults to)
 * another one: a registered resource's capacity (against a named limit only), or the
 * limit its exclusive holders hold it under. Null when the claim fits. Answered at once:
 * such a request never waits.
 */
export function limitMismatch(resource: ResourceView, claim: Claim): number | null {
  if (claim.mode === 'shared') return null;
  if (resource.capacity !== null) {
    return claim.limit !== null && claim.limit !== resource.capacity ? resource.capacity : null;
  }
  const requested = claim.limit ?? 1;
  const held = resource.holders.find((holder) => holder.mode === 'exclusive' && holder.limit !== requested);
  return held ? held.limit : null;
}

/** Whether `resource`, with `holders`, admits one more holder for `claim`. */
export function admits(resource: ResourceView, claim: Claim, holders: readonly HolderView[]): boolean {
  if (claim.mode === 'shared') return holders.every((holder) => holder.mode === 'shared');
  let limit = effectiveLimit(resource, claim);
  for (const holder of holders) {
    if (holder.mode === 'shared') return false;
    // A registered resource's capacity is its limit, whatever its holders were granted
    // under (a larger capacity lets more in at once); otherwise no holder's limit is exceeded.
    if (resource.capacity === null) limit = Math.min(limit, holder.limit);
  }
  return holders.length < limit;
}

/** The limit a lock granted for `claim` on `resource` records. */
function recordedLimit(resource: ResourceView, claim: Claim): number {
  return claim.mode === 'shared' ? (resource.capacity ?? 1) : effectiveLimit(resource, claim);
}

/**
 * Decides, in grant order, which of `pending` are granted now and which resources each
 * takes. `resources` must hold every resource the grantable requests' claims can use (for
 * a label: every resource carrying it), and every request that may block them; holders
 * added by earlier grants count for later ones.
 */
export function decide(
  resources: ReadonlyMap<string, ResourceView>,
  pending: readonly PendingRequest[],
): Decision {
  const holders = new Map<string, HolderView[]>();
  for (const resource of resources.values()) holders.set(resource.name, [...resource.holders]);
  const byLabel = labelIndex(resources);
  const blocked = new Set<string>();
  const grants: Grant[] = [];
  const waitingFor = new Map<string, readonly string[]>();
  for (const request of [...pending].sort(compareRequests)) {
    const { picks, contended, complete } = tryClaims(request.claims, resources, byLabel, holders, blocked);
    if (request.grantable && complete) {
      for (const pick of picks) holders.get(pick.service)?.push({ mode: pick.mode, limit: pick.limit });
      grants.push({ key: request.key, picks });
    } else {
      for (const name of contended) blocked.add(name);
      waitingFor.set(request.key, contended);
    }
  }
  return { grants, waitingFor };
}

/** The grants of `decide`, in grant order. */
export function decideGrants(
  resources: ReadonlyMap<string, ResourceView>,
  pending: readonly PendingRequest[],
): readonly Grant[] {
  return decide(resources, pending).grants;
}

/**
 * Whether the claims could be granted together on the resources as they are registered,
 * with nobody holding or waiting for anything: if not, the request can never be granted.
 */
export function everGrantable(
  resources: ReadonlyMap<string, ResourceView>,
  claims: readonly Claim[],
): boolean {
  const idle = new Map(
    [...resources.values()].map((resource) => [resource.name, { ...resource, holders: [] }]),
  );
  const holders = new Map([...idle.keys()].map((name) => [name, [] as HolderView[]]));
  return tryClaims(claims, idle, labelIndex(idle), holders, new Set()).complete;
}

/** Each label's resources, least recently released first, then by name. */
function labelIndex(resources: ReadonlyMap<string, ResourceView>): Map<string, ResourceView[]> {
  const byLabel = new Map<string, ResourceView[]>();
  for (const resource of resources.values()) {
    for (const label of resource.labels) {
      const list = byLabel.get(label) ?? [];
      list.push(resource);
      byLabel.set(label, list);
    }
  }
  for (const list of byLabel.values()) {
    list.sort((a, b) => a.releasedAt - b.releasedAt || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  return byLabel;
}

/**
 * One request's claims against the current holders (not changed): the picks, whether every
 * claim is filled, and the resources of the claims it cannot get now. Named services are
 * taken first, so that a label claim does not take a resource the request also names.
 */
function tryClaims(
  claims: readonly Claim[],
  resources: ReadonlyMap<string, ResourceView>,
  byLabel: ReadonlyMap<string, readonly ResourceView[]>,
  holders: ReadonlyMap<string, readonly HolderView[]>,
  blocked: ReadonlySet<string>,
): { picks: Pick[]; contended: string[]; complete: boolean } {
  // This request's own picks so far, so that two of its claims on one resource see each other.
  const mine = new Map<string, HolderView[]>();
  const current = (name: string) => [...(holders.get(name) ?? []), ...(mine.get(name) ?? [])];
  const picks: Pick[] = [];
  const contended: string[] = [];
  let complete = true;
  const take = (resource: ResourceView, claim: Claim, index: number) => {
    const pick = {
      claim: index,
      service: resource.name,
      mode: claim.mode,
      limit: recordedLimit(resource, claim),
    };
    picks.push(pick);
    mine.set(resource.name, [...(mine.get(resource.name) ?? []), { mode: pick.mode, limit: pick.limit }]);
  };
  const order = claims
    .map((claim, index) => ({ claim, index }))
    .sort((a, b) => Number(a.claim.service === null) - Number(b.claim.service === null));
  for (const { claim, index } of order) {
    if (claim.service !== null) {
      const resource = resources.get(claim.service);
      if (resource && !blocked.has(resource.name) && admits(resource, claim, current(resource.name))) {
        take(resource, claim, index);
      } else {
        complete = false;
        contended.push(claim.service);
      }
      continue;
    }
    const candidates = byLabel.get(claim.label ?? '') ?? [];
    let taken = 0;
    const chosen = new Set<string>();
    for (const resource of candidates) {
      if (taken === claim.quantity) break;
      if (blocked.has(resource.name) || chosen.has(resource.name)) continue;
      if (!admits(resource, claim, current(resource.name))) continue;
      chosen.add(resource.name);
      take(resource, claim, index);
      taken++;
    }
    if (taken < claim.quantity) {
      complete = false;
      contended.push(...candidates.map((resource) => resource.name));
    }
  }
  picks.sort((a, b) => a.claim - b.claim);
  return { picks, contended, complete };
}
