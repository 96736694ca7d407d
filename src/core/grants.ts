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
  readonly picks: readonly Pick[];
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
    limit = Math.min(limit, holder.limit);
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
 * a label: every resource carrying it); holders added by earlier grants count for later
 * ones. Returns the grants in grant order.
 */
export function decideGrants(
  resources: ReadonlyMap<string, ResourceView>,
  pending: readonly PendingRequest[],
): Grant[] {
  const holders = new Map<string, HolderView[]>();
  const holdersOf = (name: string): HolderView[] => {
    let list = holders.get(name);
    if (!list) {
      list = [...(resources.get(name)?.holders ?? [])];
      holders.set(name, list);
    }
    return list;
  };
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
  const blocked = new Set<string>();
  const grants: Grant[] = [];
  for (const request of [...pending].sort(compareRequests)) {
    // Tentative holders of this request, so two of its claims on one resource see each other.
    const mine = new Map<string, HolderView[]>();
    const current = (name: string) => [...holdersOf(name), ...(mine.get(name) ?? [])];
    const take = (resource: ResourceView, claim: Claim, index: number, picks: Pick[]) => {
      const pick = { claim: index, service: resource.name, mode: claim.mode, limit: recordedLimit(resource, claim) };
      picks.push(pick);
      mine.set(resource.name, [...(mine.get(resource.name) ?? []), { mode: pick.mode, limit: pick.limit }]);
    };
    const picks: Pick[] = [];
    /** Resources of the claims this request cannot get now. */
    const contended: string[] = [];
    request.claims.forEach((claim, index) => {
      if (claim.service !== null) {
        const resource = resources.get(claim.service);
        if (resource && !blocked.has(resource.name) && admits(resource, claim, current(resource.name))) {
          take(resource, claim, index, picks);
        } else contended.push(claim.service);
        return;
      }
      const candidates = byLabel.get(claim.label ?? '') ?? [];
      let taken = 0;
      const chosen = new Set<string>();
      for (const resource of candidates) {
        if (taken === claim.quantity) break;
        if (blocked.has(resource.name) || chosen.has(resource.name)) continue;
        if (!admits(resource, claim, current(resource.name))) continue;
        chosen.add(resource.name);
        take(resource, claim, index, picks);
        taken++;
      }
      if (taken < claim.quantity) contended.push(...candidates.map((resource) => resource.name));
    });
    if (request.grantable && contended.length === 0) {
      for (const pick of picks) holdersOf(pick.service).push({ mode: pick.mode, limit: pick.limit });
      grants.push({ key: request.key, picks });
    } else {
      for (const name of contended) blocked.add(name);
    }
  }
  return grants;
}
