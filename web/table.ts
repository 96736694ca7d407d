import { h, setText } from './dom.js';
import { formatDuration } from './format.js';
import type { Row } from './state.js';

/** Every row has this height (styles.css: .locks tbody tr.row), so the window is arithmetic. */
export const ROW_HEIGHT = 36;
/** Rows rendered above and below the visible ones, so fast scrolling shows no gaps. */
const OVERSCAN = 8;
const FRESH_MS = 2000;

export type SortKey = 'service' | 'who' | 'owner' | 'held' | 'expires' | 'token' | 'waiters';

const COMPARE: Record<SortKey, (a: Row, b: Row) => number> = {
  service: (a, b) => cmp(a.lock.service, b.lock.service),
  who: (a, b) => cmp(a.lock.who, b.lock.who) || cmp(a.lock.service, b.lock.service),
  // Locks without an owner (taken without authentication) last.
  owner: (a, b) =>
    cmp(a.lock.owner ?? '\uffff', b.lock.owner ?? '\uffff') || cmp(a.lock.service, b.lock.service),
  // Held longest first when ascending: the oldest createdAt.
  held: (a, b) => a.createdMs - b.createdMs || cmp(a.lock.service, b.lock.service),
  expires: (a, b) => cmpNumber(a.expiresMs, b.expiresMs) || cmp(a.lock.service, b.lock.service),
  token: (a, b) => a.lock.fencingToken - b.lock.fencingToken || cmp(a.lock.service, b.lock.service),
  waiters: (a, b) => a.lock.waiters - b.lock.waiters || cmp(a.lock.service, b.lock.service),
};

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function cmpNumber(a: number, b: number): number {
  return a === b ? 0 : a < b ? -1 : 1;
}

export function sortRows(rows: Row[], key: SortKey, descending: boolean): Row[] {
  const compare = COMPARE[key];
  return rows.sort(descending ? (a, b) => compare(b, a) : compare);
}

interface RowView {
  readonly tr: HTMLTableRowElement;
  readonly service: HTMLAnchorElement;
  /** How the lock shares its service (shared, a limit above 1) and whether it is in a group. */
  readonly tag: HTMLSpanElement;
  readonly who: HTMLTableCellElement;
  readonly whoText: HTMLSpanElement;
  /** The lock's note (one line, cut; whole in the tooltip) and its link. */
  readonly note: HTMLSpanElement;
  readonly link: HTMLAnchorElement;
  readonly owner: HTMLTableCellElement;
  readonly held: HTMLTableCellElement;
  readonly expires: HTMLTableCellElement;
  readonly token: HTMLTableCellElement;
  readonly waiters: HTMLTableCellElement;
  readonly button: HTMLButtonElement;
  row: Row | undefined;
}

/**
 * The table of held locks, windowed: only the rows in (and near) the viewport exist in the
 * DOM, recycled as it scrolls, between two spacer rows that keep the scroll height right.
 * 5,000 locks cost a sort and a filter over plain objects, never 5,000 table rows.
 */
export class LockTable {
  private rows: Row[] = [];
  private readonly pool: RowView[] = [];
  private readonly top = h('tr', { class: 'spacer', attrs: { 'aria-hidden': 'true' } });
  private readonly bottom = h('tr', { class: 'spacer', attrs: { 'aria-hidden': 'true' } });
  /** The one cell of the row shown instead of locks (it spans every column). */
  private readonly emptyCell = h('td', { attrs: { colspan: '8' } });
  private readonly empty = h('tr', { class: 'empty' }, this.emptyCell);
  private shown = -1;
  private readonly fresh = new Map<string, number>();

  constructor(
    private readonly viewport: HTMLElement,
    private readonly tbody: HTMLTableSectionElement,
    private readonly onForceRelease: (row: Row) => void,
  ) {}

  /** The rows to show (already filtered and sorted), and what to say when there are none. */
  setRows(rows: Row[], emptyText: string): void {
    this.rows = rows;
    setText(this.emptyCell, emptyText);
  }

  /** Highlights a lock for a moment (it just appeared or changed). */
  markFresh(id: string, now: number): void {
    this.fresh.set(id, now);
  }

  /** Renders the rows in the viewport; `now` is the server's clock. */
  render(now: number): void {
    const total = this.rows.length;
    if (total === 0) {
      if (this.shown !== 0) {
        this.tbody.replaceChildren(this.empty);
        this.shown = 0;
      }
      return;
    }
    const head = this.tbody.offsetTop;
    const scrolled = Math.max(0, this.viewport.scrollTop - head);
    const visible = Math.ceil(this.viewport.clientHeight / ROW_HEIGHT) + 1;
    const start = Math.max(0, Math.floor(scrolled / ROW_HEIGHT) - OVERSCAN);
    const end = Math.min(total, Math.floor(scrolled / ROW_HEIGHT) + visible + OVERSCAN);
    const count = end - start;
    while (this.pool.length < count) this.pool.push(this.createRow());
    for (const [id, at] of this.fresh) if (now - at > FRESH_MS) this.fresh.delete(id);
    for (let i = 0; i < count; i++) {
      const view = this.pool[i];
      const row = this.rows[start + i];
      if (view && row) this.bind(view, row, now);
    }
    this.top.style.height = `${start * ROW_HEIGHT}px`;
    this.bottom.style.height = `${(total - end) * ROW_HEIGHT}px`;
    if (this.shown !== count || this.tbody.firstChild !== this.top) {
      this.tbody.replaceChildren(this.top, ...this.pool.slice(0, count).map((view) => view.tr), this.bottom);
      this.shown = count;
    }
  }

  private bind(view: RowView, row: Row, now: number): void {
    const { lock } = row;
    if (view.row?.lock !== lock) {
      view.row = row;
      view.tr.dataset.lockId = lock.id;
      setText(view.service, lock.service);
      view.service.href = `#/services/${encodeURIComponent(lock.service)}`;
      setText(view.whoText, lock.who);
      setText(view.note, lock.note ?? '');
      view.who.title = lock.note === null ? lock.who : `${lock.who}\n${lock.note}`;
      showLink(view.link, lock.link);
      // Only what the lock has is in the cell (its text is the holder's name alone without).
      view.who.replaceChildren(
        view.whoText,
        ...(lock.note === null ? [] : [view.note]),
        ...(view.link.hidden ? [] : [view.link]),
      );
      const owner = lock.owner ?? null;
      setText(view.owner, owner ?? '—');
      view.owner.title =
        owner === null ? 'Taken without a token (authentication off)' : `Taken with the token "${owner}"`;
      view.owner.className = owner === null ? 'owner muted' : 'owner';
      view.service.title = lock.service;
      const tag = holdTag(lock);
      setText(view.tag, tag.text);
      view.tag.title = tag.title;
      view.tag.hidden = tag.text === '';
      setText(view.token, String(lock.fencingToken));
      setText(view.waiters, lock.waiters === 0 ? '0' : String(lock.waiters));
      view.waiters.className = lock.waiters > 0 ? 'num has-waiters' : 'num muted';
      view.button.setAttribute('aria-label', `Force release ${lock.service}`);
    }
    view.tr.classList.toggle('fresh', this.fresh.has(lock.id));
    setText(view.held, formatDuration(now - row.createdMs));
    if (row.expiresMs === Number.POSITIVE_INFINITY) {
      setText(view.expires, 'no TTL');
      view.expires.className = 'num muted';
    } else {
      const left = row.expiresMs - now;
      setText(view.expires, formatDuration(left));
      view.expires.className = left < 30_000 ? 'num soon' : 'num';
    }
  }

  private createRow(): RowView {
    const service = h('a', { class: 'service-link' });
    const tag = h('span', { class: 'tag' });
    const button = h('button', { class: 'danger small', attrs: { type: 'button' } }, 'Force release');
    const view: RowView = {
      tr: h('tr', { class: 'row' }),
      service,
      tag,
      who: h('td', { class: 'who' }),
      whoText: h('span'),
      note: h('span', { class: 'note' }),
      link: h('a', { class: 'lock-link', attrs: { target: '_blank', rel: 'noopener noreferrer' } }, 'link'),
      owner: h('td', { class: 'owner' }),
      held: h('td', { class: 'num' }),
      expires: h('td', { class: 'num' }),
      token: h('td', { class: 'num' }),
      waiters: h('td', { class: 'num' }),
      button,
      row: undefined,
    };
    view.tr.append(
      h('td', { class: 'service' }, service, tag),
      view.who,
      view.owner,
      view.held,
      view.expires,
      view.token,
      view.waiters,
      h('td', { class: 'actions' }, button),
    );
    button.addEventListener('click', () => {
      if (view.row) this.onForceRelease(view.row);
    });
    return view;
  }
}

/**
 * A lock's link on `anchor`: shown, with its URL, only for an http(s) one (the server accepts
 * no other; checked here again, as the dashboard never trusts text to be what it says).
 */
export function showLink(anchor: HTMLAnchorElement, link: string | null): void {
  const safe = link !== null && /^https?:\/\//i.test(link);
  anchor.hidden = !safe;
  if (safe) {
    anchor.href = link;
    anchor.title = link;
  } else anchor.removeAttribute('href');
}

/**
 * The short words beside a lock's service: `shared`, `limit 3` (a semaphore), `group`; and
 * what they mean, for the tooltip. Empty for a plain lock (exclusive, limit 1, alone).
 */
export function holdTag(lock: Pick<Row['lock'], 'mode' | 'limit' | 'groupId'>): {
  text: string;
  title: string;
} {
  const words: string[] = [];
  const titles: string[] = [];
  if (lock.mode === 'shared') {
    words.push('shared');
    titles.push('Held in shared mode: other shared holders may hold it too, no exclusive one.');
  } else if (lock.limit > 1) {
    words.push(`limit ${lock.limit}`);
    titles.push(`A semaphore: up to ${lock.limit} exclusive holders at once.`);
  }
  if (lock.groupId !== null) {
    words.push('group');
    titles.push(`Acquired in group ${lock.groupId}, with every other lock of the group.`);
  }
  return { text: words.join(' · '), title: titles.join(' ') };
}
