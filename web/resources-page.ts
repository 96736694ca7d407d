import { ApiError, getResources, type Resource } from './api.js';
import { byId, h, setText } from './dom.js';
import { holdTag } from './table.js';

/**
 * The registry changes without lock events (the resources file, PUT): read it again this
 * often while the view is open, besides after every lock event.
 */
const REFRESH_MS = 5000;
/** Least time between two reads that events asked for. */
const REREAD_MS = 250;

/** One label's pool, as the view shows it. */
export interface LabelPool {
  /** '' for the resources that carry no label. */
  readonly label: string;
  readonly resources: readonly Resource[];
  readonly capacity: number;
  readonly holders: number;
  /** Requests waiting for one of them (by name or by label), each counted once. */
  readonly waiters: number;
  readonly free: number;
}

/** The resources by label (sorted; resources without a label last, under ''). */
export function pools(resources: readonly Resource[]): LabelPool[] {
  const byLabel = new Map<string, Resource[]>();
  for (const resource of resources) {
    for (const label of resource.labels.length === 0 ? [''] : resource.labels) {
      const list = byLabel.get(label);
      if (list) list.push(resource);
      else byLabel.set(label, [resource]);
    }
  }
  return [...byLabel]
    .sort(([a], [b]) => (a === '' ? 1 : b === '' ? -1 : a < b ? -1 : a > b ? 1 : 0))
    .map(([label, members]) => {
      // A label request (or a group) waits on every resource it could take: count it once.
      // The API names no waiter's id; its group, or who, since and what it asks for, tell
      // them apart.
      const waiting = new Set<string>();
      for (const resource of members) {
        for (const waiter of resource.waiters) {
          const asks =
            waiter.groupId !== null
              ? `group ${waiter.groupId}`
              : waiter.label !== null
                ? `label ${waiter.label}`
                : `service ${resource.name}`;
          waiting.add(`${asks}\n${waiter.who}\n${waiter.since}\n${waiter.mode}\n${waiter.priority}`);
        }
      }
      return {
        label,
        resources: members,
        capacity: members.reduce((sum, resource) => sum + resource.capacity, 0),
        holders: members.reduce((sum, resource) => sum + resource.holders.length, 0),
        waiters: waiting.size,
        free: members.reduce((sum, resource) => sum + resource.free, 0),
      };
    });
}

/** The Resources view: every label's pool with its capacity, holders, waiters and free count. */
export class ResourcesPage {
  private open = false;
  private resources: readonly Resource[] | undefined;
  private error = '';
  private fetching: Promise<void> | undefined;
  private again = false;
  private timer: ReturnType<typeof setInterval> | undefined;
  /** What the shown cards were built from. */
  private shown = '';

  private readonly box = byId('resources');
  private readonly count = byId('resources-count');

  constructor(
    private readonly requestRender: () => void,
    /** Offers a free resource for a while (the take dialog's Reserve). */
    private readonly reserve: (service: string) => void,
  ) {}

  show(): void {
    if (this.open) return;
    this.open = true;
    document.title = 'Resources · Tracker';
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  hide(): void {
    this.open = false;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Something changed (a lock event, a new token): read the registry again. */
  refresh(): void {
    if (!this.open) return;
    if (this.fetching) {
      this.again = true;
      return;
    }
    this.fetching = getResources()
      .then(
        (resources) => {
          this.resources = resources;
          this.error = '';
        },
        (error: unknown) => {
          this.error = describe(error);
        },
      )
      .finally(() => {
        this.fetching = undefined;
        this.requestRender();
        // A burst of lock events reads the registry a few times a second at most.
        if (this.again) {
          this.again = false;
          setTimeout(() => this.refresh(), REREAD_MS);
        }
      });
  }

  render(): void {
    if (!this.open) return;
    const key = this.error !== '' ? `error:${this.error}` : JSON.stringify(this.resources ?? null);
    if (key === this.shown) return;
    this.shown = key;
    if (this.error !== '') {
      setText(this.count, '');
      this.box.replaceChildren(h('p', { class: 'error' }, this.error));
      return;
    }
    const resources = this.resources;
    if (!resources) {
      this.box.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
      return;
    }
    const noun = resources.length === 1 ? 'resource' : 'resources';
    setText(this.count, `${resources.length} ${noun}`);
    if (resources.length === 0) {
      this.box.replaceChildren(
        h(
          'p',
          { class: 'muted' },
          'No resources are registered. Declare them in the resources file (--resources-file) ' +
            'or with PUT /api/v1alpha1/resources/{name}.',
        ),
      );
      return;
    }
    this.box.replaceChildren(...pools(resources).map((pool) => card(pool, this.reserve)));
  }
}

function card(pool: LabelPool, reserve: (service: string) => void): HTMLElement {
  const stat = (name: string, label: string, value: number) =>
    h(
      'div',
      { class: `stat stat-${name}` },
      h('span', { class: 'stat-value' }, String(value)),
      h('span', { class: 'stat-label muted' }, label),
    );
  const title = pool.label === '' ? 'No label' : pool.label;
  return h(
    'section',
    {
      class: pool.free === 0 && pool.waiters > 0 ? 'card label-card exhausted' : 'card label-card',
      attrs: { 'data-label': pool.label, 'aria-label': `Label ${title}` },
    },
    h(
      'div',
      { class: 'card-head' },
      h('h2', { class: pool.label === '' ? 'label-name muted' : 'label-name' }, title),
      h(
        'div',
        { class: 'stats' },
        stat('capacity', 'capacity', pool.capacity),
        stat('holders', pool.holders === 1 ? 'holder' : 'holders', pool.holders),
        stat('waiters', pool.waiters === 1 ? 'waiter' : 'waiters', pool.waiters),
        stat('free', 'free', pool.free),
      ),
    ),
    h(
      'table',
      { class: 'resources' },
      h(
        'thead',
        null,
        h(
          'tr',
          null,
          h('th', { attrs: { scope: 'col' } }, 'Resource'),
          h('th', { class: 'num', attrs: { scope: 'col' } }, 'Capacity'),
          h('th', { attrs: { scope: 'col' } }, 'Holders'),
          h('th', { class: 'num', attrs: { scope: 'col' } }, 'Waiters'),
          h('th', { class: 'num', attrs: { scope: 'col' } }, 'Free'),
          h('th', { attrs: { scope: 'col' } }, 'Properties'),
          h('th', { attrs: { scope: 'col' } }, 'Description'),
        ),
      ),
      h('tbody', null, ...pool.resources.map((resource) => resourceRow(resource, reserve))),
    ),
  );
}

function resourceRow(resource: Resource, reserve: (service: string) => void): HTMLElement {
  const holders =
    resource.holders.length === 0
      ? [h('span', { class: 'muted' }, '—')]
      : resource.holders.map((lock) => {
          const tag = holdTag({ ...lock, limit: 1 }).text;
          return h(
            'span',
            { class: 'holder', attrs: { title: `lock ${lock.id}` } },
            lock.who,
            tag === '' ? null : h('span', { class: 'tag' }, tag),
          );
        });
  const properties = Object.entries(resource.properties).map(([key, value]) =>
    h('span', { class: 'property' }, h('span', { class: 'property-key' }, key), '=', value),
  );
  return h(
    'tr',
    { attrs: { 'data-resource': resource.name } },
    h(
      'td',
      { class: 'name' },
      h(
        'a',
        { class: 'service-link', attrs: { href: `#/services/${encodeURIComponent(resource.name)}` } },
        resource.name,
      ),
    ),
    h('td', { class: 'num' }, String(resource.capacity)),
    h('td', { class: 'holders' }, ...holders),
    h(
      'td',
      { class: resource.waiters.length > 0 ? 'num has-waiters' : 'num muted' },
      String(resource.waiters.length),
    ),
    h(
      'td',
      { class: resource.free === 0 ? 'num free-count none' : 'num free-count' },
      String(resource.free),
      resource.free === 0
        ? null
        : h(
            'button',
            {
              class: 'small reserve',
              attrs: { type: 'button', 'aria-label': `Reserve ${resource.name}` },
              on: { click: () => reserve(resource.name) },
            },
            'Reserve',
          ),
    ),
    h('td', { class: 'properties' }, ...properties),
    h('td', { class: 'description' }, resource.description ?? ''),
  );
}

function describe(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 401) return 'Cannot load the resources: sign in with an API token first.';
    if (error.status === 403) return `Cannot load the resources: this token may not (${error.message}).`;
    if (error.status === 429) return 'Cannot load the resources: too many requests; trying again shortly.';
    return `Cannot load the resources: ${error.message}`;
  }
  return `Cannot load the resources: ${error instanceof Error ? error.message : String(error)}`;
}
