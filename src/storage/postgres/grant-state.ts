import {
  compareRequests,
  type HolderView,
  type PendingRequest,
  type ResourceView,
} from '../../core/grants.js';
import type { Claim, LockMode } from '../../core/lock.js';
import type { GrantStateJson } from './queries.js';

/** Most waiters one read of the grant state takes (the first in grant order). */
export const WAITERS_PER_READ = 100;

/** The position of the request being made now: after every waiter (decideGrants' "new request"). */
export const NEW_TICKET = Number.MAX_SAFE_INTEGER;

/** A waiter as a grant pass reads it. */
export interface WaiterState {
  readonly ticket: number;
  readonly lockId: string;
  readonly priority: number;
  /** What it shows: its service, label or first claim's. */
  readonly service: string;
  readonly claims: readonly Claim[];
}

/**
 * What a grant pass has read under its row locks, gathered over one or more reads (the
 * resources locked first, then those the waiters read so far also use): the services read
 * (registered or not), their live holders, the live waiters touching them, the members of
 * the labels those waiters (and the request) name.
 *
 * Reads take waiters in grant order, WAITERS_PER_READ at most. When a read is cut short,
 * every waiter after its last one is left out (`cutoff`), also from earlier reads: the
 * rules decide each request from those before it only, so the waiters kept are decided
 * exactly as with the whole line, and those left out wait for a later pass.
 */
export class GrantState {
  readonly read = new Set<string>();
  readonly registered = new Map<string, { capacity: number; labels: string[]; releasedAt: number }>();
  readonly holders = new Map<string, HolderView[]>();
  readonly waiters = new Map<number, WaiterState>();
  readonly members = new Map<string, string[]>();
  cutoff: { priority: number; ticket: number } | null = null;

  /** Adds one read of `names`. */
  merge(names: readonly string[], json: GrantStateJson): void {
    for (const name of names) this.read.add(name);
    for (const resource of json.resources) {
      this.registered.set(resource.name, {
        capacity: resource.capacity,
        labels: resource.labels,
        releasedAt: Number(resource.released_ms),
      });
    }
    for (const name of names) this.holders.set(name, []);
    for (const holder of json.holders) {
      this.holders.get(holder.service)?.push({ mode: holder.mode as LockMode, limit: holder.limit });
    }
    for (const [label, names] of Object.entries(json.members)) this.members.set(label, names);
    for (const waiter of json.waiters) {
      this.waiters.set(Number(waiter.ticket), {
        ticket: Number(waiter.ticket),
        lockId: waiter.lock_id,
        priority: waiter.priority,
        service: waiter.service,
        claims: waiter.claims.map((claim) => ({
          service: claim.service,
          label: claim.label,
          mode: claim.mode as LockMode,
          limit: claim.limit,
          quantity: claim.quantity,
        })),
      });
    }
    const last = json.waiters.at(-1);
    if (last && json.waiters.length >= WAITERS_PER_READ) {
      const cut = { priority: last.priority, ticket: Number(last.ticket) };
      if (!this.cutoff || compareRequests(cut, this.cutoff) < 0) this.cutoff = cut;
    }
    if (this.cutoff) {
      const cutoff = this.cutoff;
      for (const [ticket, waiter] of this.waiters)
        if (compareRequests(waiter, cutoff) > 0) this.waiters.delete(ticket);
    }
  }

  /** Whether a request at this place in grant order comes before the cut-off. */
  inLine(request: { priority: number; ticket: number }): boolean {
    return this.cutoff === null || compareRequests(request, this.cutoff) <= 0;
  }

  /**
   * The resources `claims` can use: the services they name and every resource carrying
   * their labels (a label whose members were not read yet is `unknown`).
   */
  uses(claims: readonly Claim[]): { names: Set<string>; unknown: string[] } {
    const names = new Set<string>();
    const unknown: string[] = [];
    for (const claim of claims) {
      if (claim.service !== null) names.add(claim.service);
      else {
        const members = this.members.get(claim.label ?? '');
        if (members) for (const name of members) names.add(name);
        else unknown.push(claim.label ?? '');
      }
    }
    return { names, unknown };
  }

  /** What the rules see of a service read: registered or not, with its live holders. */
  view(name: string): ResourceView {
    const registered = this.registered.get(name);
    return {
      name,
      capacity: registered?.capacity ?? null,
      labels: registered?.labels ?? [],
      releasedAt: registered?.releasedAt ?? 0,
      holders: this.holders.get(name) ?? [],
    };
  }

  /** Every service read, as the rules see it. */
  views(): Map<string, ResourceView> {
    return new Map([...this.read].map((name) => [name, this.view(name)]));
  }

  /**
   * Whether claims can never be granted while the registry stays as it is: a label claim
   * for more resources than carry the label. Such a waiter is left out of the decision: it
   * would only keep the label's resources from everyone (a registry change runs a pass).
   */
  impossible(claims: readonly Claim[]): boolean {
    return claims.some(
      (claim) => claim.label !== null && (this.members.get(claim.label)?.length ?? 0) < claim.quantity,
    );
  }

  /** The waiters as the rules see them: grantable when everything their claims use was read. */
  pending(): PendingRequest[] {
    const pending: PendingRequest[] = [];
    for (const waiter of this.waiters.values()) {
      if (this.impossible(waiter.claims)) continue;
      pending.push({
        key: waiter.lockId,
        priority: waiter.priority,
        ticket: waiter.ticket,
        claims: waiter.claims,
        grantable: this.covers(waiter.claims),
      });
    }
    return pending;
  }

  /** Whether every resource the claims can use was read. */
  covers(claims: readonly Claim[]): boolean {
    const { names, unknown } = this.uses(claims);
    return unknown.length === 0 && [...names].every((name) => this.read.has(name));
  }

  /** Every resource used by the waiters read and by `extra` claims, that was not read yet. */
  missing(extra: readonly Claim[]): { names: string[]; labels: string[] } {
    const names = new Set<string>();
    const labels = new Set<string>();
    for (const claims of [extra, ...[...this.waiters.values()].map((waiter) => waiter.claims)]) {
      const used = this.uses(claims);
      for (const name of used.names) if (!this.read.has(name)) names.add(name);
      for (const label of used.unknown) labels.add(label);
    }
    return { names: [...names].sort(), labels: [...labels].sort() };
  }

  /** Adds the holders a grant made, so that later reads of this state see them. */
  hold(service: string, holder: HolderView): void {
    const list = this.holders.get(service);
    if (list) list.push(holder);
    else this.holders.set(service, [holder]);
  }
}
