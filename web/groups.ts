import { byId, h, setText } from './dom.js';
import { formatDuration } from './format.js';
import type { LockState, Row } from './state.js';
import { holdTag } from './table.js';

/** Groups listed at most; the rest are counted. */
const MAX_GROUPS_SHOWN = 100;

interface GroupView {
  readonly first: Row;
  readonly held: HTMLElement;
  readonly expires: HTMLElement;
  readonly expiresMs: number;
}

/**
 * The groups held now, each shown as one unit (who, its services, since when) with one
 * button that releases the whole group. Rebuilt when the held locks change; the clocks move
 * on every render.
 */
export class GroupList {
  private readonly section = byId('groups');
  private readonly list = byId('groups-list');
  private version = -1;
  private views: GroupView[] = [];

  constructor(
    private readonly state: LockState,
    private readonly onRelease: (groupId: string) => void,
  ) {}

  render(now: number): void {
    if (this.state.version !== this.version) this.rebuild(now);
    for (const view of this.views) {
      setText(view.held, `held ${formatDuration(now - view.first.createdMs)}`);
      setText(
        view.expires,
        view.expiresMs === Number.POSITIVE_INFINITY
          ? 'no TTL'
          : `expires in ${formatDuration(view.expiresMs - now)}`,
      );
    }
  }

  private rebuild(now: number): void {
    this.version = this.state.version;
    // A lock whose lease ran out is gone, whether or not the stream told of it yet.
    const groups = this.state
      .groups()
      .map((group) => ({ id: group.id, rows: group.rows.filter((row) => row.expiresMs > now) }))
      .filter((group) => group.rows.length > 0);
    this.section.hidden = groups.length === 0;
    this.views = [];
    const items = groups.slice(0, MAX_GROUPS_SHOWN).map(({ id, rows }) => {
      const first = rows[0] as Row;
      const held = h('span', { class: 'group-held' });
      const expires = h('span', { class: 'group-expires muted' });
      const expiresMs = Math.min(...rows.map((row) => row.expiresMs));
      this.views.push({ first, held, expires, expiresMs });
      const services = rows.map((row) => {
        const tag = holdTag({ ...row.lock, groupId: null }).text;
        return h(
          'li',
          null,
          h(
            'a',
            { class: 'service-link', attrs: { href: `#/services/${encodeURIComponent(row.lock.service)}` } },
            row.lock.service,
          ),
          tag === '' ? null : h('span', { class: 'tag' }, tag),
        );
      });
      return h(
        'li',
        { class: 'group', attrs: { 'data-group-id': id } },
        h(
          'div',
          { class: 'group-head' },
          h('span', { class: 'group-who' }, first.lock.who),
          h('span', { class: 'group-count muted' }, `${rows.length} ${rows.length === 1 ? 'lock' : 'locks'}`),
          held,
          expires,
          h('span', { class: 'group-id mono muted', attrs: { title: `group ${id}` } }, id.slice(0, 8)),
          h(
            'button',
            {
              class: 'danger small release-group',
              attrs: { type: 'button', 'aria-label': `Release group ${id}` },
              on: { click: () => this.onRelease(id) },
            },
            'Release group',
          ),
        ),
        h('ul', { class: 'group-services' }, ...services),
      );
    });
    const more = groups.length - items.length;
    if (more > 0) items.push(h('li', { class: 'muted small' }, `and ${more} more groups`));
    this.list.replaceChildren(...items);
  }
}
