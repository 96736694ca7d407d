import { ApiError, getHistory, getQueue, type HeldLock, type LockEvent, type Queue } from './api.js';
import { byId, h, setText } from './dom.js';
import { formatAxis, formatDateTime, formatDuration, formatSeconds } from './format.js';
import type { LockState, Row } from './state.js';
import { holdTag, showLink } from './table.js';

export type Range = '1h' | '24h' | '7d';
const RANGE_MS: Record<Range, number> = { '1h': 3600_000, '24h': 24 * 3600_000, '7d': 7 * 24 * 3600_000 };
const RANGE_WORDS: Record<Range, string> = { '1h': 'hour', '24h': '24 hours', '7d': '7 days' };
/** History pages of 1,000 events fetched at most per range (the newest 20,000). */
const MAX_PAGES = 20;
const PAGE_SIZE = 1000;
/** Rows of the events table. */
const EVENTS_SHOWN = 500;
/** The timeline's right edge is "now": redraw it this often even without events. */
const TIMELINE_REFRESH_MS = 10_000;

const ENDED = new Set(['released', 'expired', 'force-released']);

interface Hold {
  readonly who: string;
  readonly start: number;
  readonly end: number;
  /** released, expired, force-released, or held (still). */
  readonly how: string;
  readonly reason: string | null;
}

export interface ServicePageDeps {
  readonly state: LockState;
  readonly now: () => number;
  readonly forceRelease: (lock: HeldLock) => void;
  /** Asks to steal a lock, or to reserve a free service (the take dialog). */
  readonly steal: (lock: HeldLock) => void;
  readonly reserve: (service: string) => void;
  /** Asks to release a whole group (the confirmation dialog). */
  readonly releaseGroup: (groupId: string) => void;
  readonly requestRender: () => void;
  /** False until the watch stream's first snapshot: the holder is unknown until then. */
  readonly loaded: () => boolean;
}

/**
 * The page of one service: its holders (several for a semaphore or shared holders, each with
 * its group if it has one), its queue, who held it when, and its events.
 */
export class ServicePage {
  private service: string | undefined;
  private range: Range = '24h';
  /** Newest first. */
  private events: LockEvent[] = [];
  private readonly seen = new Set<number>();
  private truncated = false;
  private historyError = '';
  private loading: AbortController | undefined;
  /** Events that arrived on the stream while the history was loading. */
  private arrived: LockEvent[] = [];
  private queue: Queue | undefined;
  private queueError = '';
  private queueFetch: Promise<void> | undefined;
  private queueAgain = false;
  private eventsDirty = true;
  private queueDirty = true;
  private timelineAt = 0;
  private holderKey = '';

  private readonly title = byId('service-title');
  private readonly holder = byId('holder');
  private readonly queueBox = byId('queue');
  private readonly timeline = byId('timeline');
  private readonly summary = byId('timeline-summary');
  private readonly eventsBody = byId<HTMLTableSectionElement>('events-body');
  private readonly eventsNote = byId('events-note');
  private readonly rangeButtons = [...document.querySelectorAll<HTMLButtonElement>('[data-range]')];

  constructor(private readonly deps: ServicePageDeps) {
    for (const button of this.rangeButtons) {
      button.addEventListener('click', () => {
        const range = (button.dataset.range ?? '24h') as Range;
        if (!(range in RANGE_MS)) return;
        if (range === this.range) return;
        this.range = range;
        for (const other of this.rangeButtons) {
          other.setAttribute('aria-pressed', String(other.dataset.range === range));
        }
        this.loadHistory();
      });
    }
  }

  get current(): string | undefined {
    return this.service;
  }

  open(service: string): void {
    if (service === this.service) return;
    this.service = service;
    this.title.textContent = service;
    document.title = `${service} · Tracker`;
    this.queue = undefined;
    this.holderKey = '';
    this.loadHistory();
    this.refreshQueue();
  }

  close(): void {
    this.loading?.abort();
    this.loading = undefined;
    this.service = undefined;
    this.events = [];
    this.seen.clear();
  }

  /** Everything again (after a token change or a fresh snapshot: events may have been missed). */
  reload(): void {
    if (this.service === undefined) return;
    this.loadHistory();
    this.refreshQueue();
  }

  /** An event from the watch stream. */
  onEvent(event: LockEvent): void {
    if (event.service !== this.service) return;
    if (this.loading) this.arrived.push(event);
    else if (this.add(event)) this.eventsDirty = true;
    if (event.type !== 'renewed') this.refreshQueue();
  }

  render(now: number): void {
    if (this.service === undefined) return;
    this.renderHolders(now);
    if (this.queueDirty || (this.queue?.waiters.length ?? 0) > 0) this.renderQueue(now);
    if (this.eventsDirty || now - this.timelineAt > TIMELINE_REFRESH_MS) {
      this.renderTimeline(now);
      this.timelineAt = now;
    }
    if (this.eventsDirty) this.renderEvents();
    this.eventsDirty = false;
  }

  private add(event: LockEvent): boolean {
    if (this.seen.has(event.id)) return false;
    this.seen.add(event.id);
    const first = this.events[0];
    if (!first || event.id > first.id) this.events.unshift(event);
    else {
      this.events.push(event);
      this.events.sort((a, b) => b.id - a.id);
    }
    return true;
  }

  private loadHistory(): void {
    const service = this.service;
    if (service === undefined) return;
    this.loading?.abort();
    const controller = new AbortController();
    this.loading = controller;
    this.arrived = [];
    const range = this.range;
    const since = new Date(this.deps.now() - RANGE_MS[range]).toISOString();
    void (async () => {
      const loaded: LockEvent[] = [];
      let truncated = false;
      let before: number | undefined;
      for (let page = 0; page < MAX_PAGES; page++) {
        const query = { service, since, limit: PAGE_SIZE, ...(before === undefined ? {} : { before }) };
        const result = await getHistory(query, controller.signal);
        loaded.push(...result.events);
        if (result.nextBefore === null || result.events.length === 0) break;
        before = result.nextBefore;
        truncated = page === MAX_PAGES - 1;
      }
      return { loaded, truncated };
    })().then(
      ({ loaded, truncated }) => {
        if (this.loading !== controller) return;
        this.loading = undefined;
        this.events = [];
        this.seen.clear();
        for (const event of loaded) {
          if (!this.seen.has(event.id)) {
            this.seen.add(event.id);
            this.events.push(event);
          }
        }
        this.events.sort((a, b) => b.id - a.id);
        for (const event of this.arrived) this.add(event);
        this.arrived = [];
        this.truncated = truncated;
        this.historyError = '';
        this.eventsDirty = true;
        this.deps.requestRender();
      },
      (error: unknown) => {
        if (this.loading !== controller) return;
        this.loading = undefined;
        this.events = [];
        this.seen.clear();
        this.historyError = describe(error, 'history');
        this.eventsDirty = true;
        this.deps.requestRender();
      },
    );
  }

  /** Fetches the queue; a refresh asked for during a fetch runs once after it. */
  private refreshQueue(): void {
    const service = this.service;
    if (service === undefined) return;
    if (this.queueFetch) {
      this.queueAgain = true;
      return;
    }
    this.queueFetch = getQueue(service)
      .then(
        (queue) => {
          if (service !== this.service) return;
          this.queue = queue;
          this.queueError = '';
        },
        (error: unknown) => {
          if (service !== this.service) return;
          this.queueError = describe(error, 'queue');
        },
      )
      .finally(() => {
        this.queueFetch = undefined;
        this.queueDirty = true;
        this.deps.requestRender();
        if (this.queueAgain) {
          this.queueAgain = false;
          this.refreshQueue();
        }
      });
  }

  private renderHolders(now: number): void {
    const holders = (this.service === undefined ? [] : this.deps.state.holdersOf(this.service)).filter(
      (row) => row.expiresMs > now,
    );
    if (!this.deps.loaded()) {
      if (this.holderKey !== 'loading') {
        this.holderKey = 'loading';
        this.holder.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
      }
      return;
    }
    const key =
      holders.length === 0
        ? 'free'
        : holders
            .map(({ lock }) => {
              const group = lock.groupId === null ? '' : this.deps.state.groupOf(lock.groupId).length;
              return `${lock.id}:${lock.expiresAt}:${lock.waiters}:${lock.owner ?? ''}:${lock.limit}:${group}:${lock.note}`;
            })
            .join('|');
    if (key !== this.holderKey) {
      this.holderKey = key;
      if (holders.length === 0) {
        const service = this.service ?? '';
        this.holder.replaceChildren(
          h('p', { class: 'free' }, 'Free: nobody holds this lock.'),
          h(
            'div',
            { class: 'buttons-row' },
            h(
              'button',
              {
                class: 'primary reserve',
                attrs: { type: 'button' },
                on: { click: () => this.deps.reserve(service) },
              },
              'Reserve',
            ),
          ),
        );
      } else {
        const summary = holdersSummary(holders);
        const blocks = holders.map((row) => this.holderBlock(row));
        this.holder.replaceChildren(...(summary ? [summary, ...blocks] : blocks));
      }
    }
    for (const row of holders) {
      const block = this.holder.querySelector(`[data-lock-id="${row.lock.id}"]`);
      const heldCell = block?.querySelector('.holder-held');
      const expiresCell = block?.querySelector('.holder-expires');
      if (heldCell) setText(heldCell, formatDuration(now - row.createdMs));
      if (expiresCell) {
        setText(
          expiresCell,
          row.expiresMs === Number.POSITIVE_INFINITY ? 'no TTL' : formatDuration(row.expiresMs - now),
        );
      }
    }
  }

  /** One holder: who, how it holds the service, its lease and token, its group; its buttons. */
  private holderBlock(row: Row): HTMLElement {
    const { lock } = row;
    const groupId = lock.groupId;
    const mode =
      lock.mode === 'shared'
        ? 'shared'
        : lock.limit > 1
          ? `exclusive, one of up to ${lock.limit} (a semaphore)`
          : 'exclusive';
    return h(
      'div',
      { class: 'holder', attrs: { 'data-lock-id': lock.id } },
      h(
        'dl',
        { class: 'details' },
        h('dt', null, 'Held by'),
        h('dd', { class: 'holder-who' }, lock.who),
        lock.note === null ? null : h('dt', null, 'Note'),
        lock.note === null ? null : h('dd', { class: 'holder-note' }, lock.note),
        lock.link === null ? null : h('dt', null, 'Link'),
        lock.link === null ? null : h('dd', null, this.linkTo(lock.link)),
        h('dt', null, 'Owner'),
        h(
          'dd',
          { class: lock.owner ? 'holder-owner' : 'holder-owner muted' },
          lock.owner ?? '— (taken without a token)',
        ),
        h('dt', null, 'Mode'),
        h('dd', { class: 'holder-mode' }, mode),
        h('dt', null, 'Held for'),
        h('dd', { class: 'holder-held' }),
        h('dt', null, 'Expires in'),
        h('dd', { class: 'holder-expires' }),
        h('dt', null, 'Fencing token'),
        h('dd', null, String(lock.fencingToken)),
        h('dt', null, 'Since'),
        h('dd', null, formatDateTime(row.createdMs)),
        h('dt', null, 'Lock id'),
        h('dd', { class: 'mono' }, lock.id),
        groupId === null ? null : h('dt', null, 'Group'),
        groupId === null ? null : h('dd', { class: 'holder-group' }, this.groupText(groupId)),
      ),
      h(
        'div',
        { class: 'buttons-row' },
        h(
          'button',
          { class: 'steal', attrs: { type: 'button' }, on: { click: () => this.deps.steal(lock) } },
          'Steal',
        ),
        h(
          'button',
          { class: 'danger', attrs: { type: 'button' }, on: { click: () => this.deps.forceRelease(lock) } },
          'Force release',
        ),
        groupId === null
          ? null
          : h(
              'button',
              {
                class: 'danger release-group',
                attrs: { type: 'button', 'aria-label': `Release group ${groupId}` },
                on: { click: () => this.deps.releaseGroup(groupId) },
              },
              'Release group',
            ),
      ),
    );
  }

  /** A lock's link, opened in a new tab (see showLink). */
  private linkTo(link: string): HTMLAnchorElement {
    const anchor = h(
      'a',
      { class: 'holder-link', attrs: { target: '_blank', rel: 'noopener noreferrer' } },
      link,
    );
    showLink(anchor, link);
    return anchor;
  }

  /** `3 locks: db, cache, phone-2 (id 1a2b3c4d)`: what the group holds together. */
  private groupText(groupId: string): string {
    const members = this.deps.state.groupOf(groupId);
    const services = members.map((row) => row.lock.service).join(', ');
    return `${members.length} ${members.length === 1 ? 'lock' : 'locks'}: ${services} (id ${groupId.slice(0, 8)})`;
  }

  private renderQueue(now: number): void {
    this.queueDirty = false;
    if (this.queueError !== '') {
      this.queueBox.replaceChildren(h('p', { class: 'error' }, this.queueError));
      return;
    }
    const queue = this.queue;
    if (!queue) {
      this.queueBox.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
      return;
    }
    if (queue.waiters.length === 0) {
      this.queueBox.replaceChildren(h('p', { class: 'muted' }, 'Nobody is waiting.'));
      return;
    }
    const rows = queue.waiters.map((waiter) =>
      h(
        'tr',
        null,
        h('td', { class: 'num' }, String(waiter.position)),
        h('td', { class: 'who' }, waiter.who, noteOf(waiter.note)),
        h('td', { class: 'mode' }, waiter.mode),
        h('td', { class: waiter.priority === 0 ? 'num muted' : 'num priority' }, String(waiter.priority)),
        h(
          'td',
          { class: 'asks' },
          waiter.label === null ? 'this service' : `any "${waiter.label}"`,
          waiter.groupId === null ? null : h('span', { class: 'tag' }, 'group'),
        ),
        h('td', null, formatDateTime(Date.parse(waiter.since))),
        h('td', { class: 'num' }, formatDuration(now - Date.parse(waiter.since))),
      ),
    );
    this.queueBox.replaceChildren(
      h(
        'table',
        { class: 'queue' },
        h(
          'thead',
          null,
          h(
            'tr',
            null,
            h('th', { class: 'num', attrs: { scope: 'col' } }, '#'),
            h('th', { attrs: { scope: 'col' } }, 'Who'),
            h('th', { attrs: { scope: 'col' } }, 'Mode'),
            h('th', { class: 'num', attrs: { scope: 'col' } }, 'Priority'),
            h('th', { attrs: { scope: 'col' } }, 'Asks for'),
            h('th', { attrs: { scope: 'col' } }, 'Waiting since'),
            h('th', { class: 'num', attrs: { scope: 'col' } }, 'Waiting for'),
          ),
        ),
        h('tbody', null, ...rows),
      ),
    );
  }

  private holds(now: number, start: number): Hold[] {
    const holds: Hold[] = [];
    for (const event of this.events) {
      if (!ENDED.has(event.type)) continue;
      const begin = Date.parse(event.lock.createdAt);
      let end = Date.parse(event.at);
      // An expiry ends at expiresAt, whenever it was noticed.
      if (event.type === 'expired' && event.lock.expiresAt !== null) {
        end = Math.min(end, Date.parse(event.lock.expiresAt));
      }
      if (!Number.isFinite(begin) || !Number.isFinite(end) || end < start) continue;
      holds.push({ who: event.lock.who, start: begin, end, how: event.type, reason: event.reason });
    }
    for (const row of this.service === undefined ? [] : this.deps.state.holdersOf(this.service)) {
      if (row.expiresMs > now) {
        holds.push({ who: row.lock.who, start: row.createdMs, end: now, how: 'held', reason: null });
      }
    }
    return holds.sort((a, b) => a.start - b.start);
  }

  private renderTimeline(now: number): void {
    const span = RANGE_MS[this.range];
    const start = now - span;
    const holds = this.holds(now, start);
    const track = h('div', { class: 'track' });
    const position = (ms: number) => (Math.min(Math.max(ms, start), now) - start) / span;
    let heldMs = 0;
    let longest: Hold | undefined;
    const holders = new Set<string>();
    for (const hold of holds) {
      const left = position(hold.start);
      const width = position(hold.end) - left;
      const duration = hold.end - hold.start;
      heldMs += Math.min(hold.end, now) - Math.max(hold.start, start);
      holders.add(hold.who);
      if (!longest || duration > longest.end - longest.start) longest = hold;
      const until = hold.how === 'held' ? 'now' : formatDateTime(hold.end);
      const how = hold.how === 'held' ? 'still held' : hold.how;
      const reason = hold.reason ? `: ${hold.reason}` : '';
      const bar = h(
        'div',
        {
          class: `bar ${hold.how}`,
          attrs: {
            title: `${hold.who}\n${formatDateTime(hold.start)} → ${until} (${formatDuration(duration)})\n${how}${reason}`,
          },
        },
        hold.who,
      );
      // A hold that just began still shows, at the right edge.
      bar.style.left = `min(${(left * 100).toFixed(3)}%, calc(100% - 3px))`;
      bar.style.width = `${(width * 100).toFixed(3)}%`;
      bar.style.setProperty('--hue', String(hue(hold.who)));
      track.append(bar);
    }
    const axis = h('div', { class: 'axis' });
    for (const tick of ticks(start, now)) {
      const label = h('span', { class: 'tick' }, formatAxis(tick, span));
      label.style.left = `${(position(tick) * 100).toFixed(3)}%`;
      axis.append(label);
    }
    this.timeline.replaceChildren(track, axis);
    if (this.historyError !== '') {
      this.summary.textContent = this.historyError;
      this.summary.className = 'error small';
      return;
    }
    this.summary.className = 'muted small';
    this.summary.textContent =
      holds.length === 0
        ? this.loading
          ? 'Loading…'
          : `Nobody held it in the last ${RANGE_WORDS[this.range]}.`
        : `${holds.length} ${holds.length === 1 ? 'hold' : 'holds'} by ${holders.size} ` +
          `${holders.size === 1 ? 'holder' : 'holders'}, held ${Math.round((heldMs / span) * 100)}% of the time` +
          (longest ? `; longest ${formatDuration(longest.end - longest.start)} (${longest.who})` : '') +
          (this.truncated ? '. Only the newest 20,000 events are shown.' : '.');
  }

  private renderEvents(): void {
    if (this.historyError !== '') {
      this.eventsBody.replaceChildren();
      this.eventsNote.textContent = this.historyError;
      return;
    }
    const shown = this.events.slice(0, EVENTS_SHOWN);
    this.eventsBody.replaceChildren(
      ...shown.map((event) =>
        h(
          'tr',
          null,
          h('td', { class: 'when' }, formatDateTime(Date.parse(event.at))),
          h('td', null, h('span', { class: `badge ${event.type}` }, event.type)),
          h(
            'td',
            { class: 'who', attrs: { title: event.lock.owner ? `owner: ${event.lock.owner}` : event.who } },
            event.who,
            noteOf(event.lock.note),
          ),
          h('td', { class: 'num' }, formatSeconds(event.heldSeconds)),
          h('td', { class: 'num' }, event.lock.fencingToken === null ? '' : String(event.lock.fencingToken)),
          h('td', { class: 'reason' }, event.reason ?? ''),
        ),
      ),
    );
    this.eventsNote.textContent =
      this.loading && this.events.length === 0
        ? 'Loading…'
        : this.events.length === 0
          ? 'No events in this range.'
          : this.events.length > EVENTS_SHOWN
            ? `The newest ${EVENTS_SHOWN} of ${this.events.length} events.`
            : '';
  }
}

/** A stable colour per holder. */
function hue(text: string): number {
  let hash = 0;
  for (let i = 0; i < text.length; i++) hash = (hash * 31 + text.charCodeAt(i)) | 0;
  return Math.abs(hash) % 360;
}

/** Axis ticks at local round times: 10 minutes for an hour, 3 hours for a day, midnights for a week. */
function ticks(start: number, end: number): number[] {
  const span = end - start;
  const at = new Date(start);
  let step: (date: Date) => void;
  let keep: (date: Date) => boolean = () => true;
  if (span > 36 * 3600_000) {
    at.setHours(0, 0, 0, 0);
    step = (date) => date.setDate(date.getDate() + 1);
  } else if (span > 2 * 3600_000) {
    at.setMinutes(0, 0, 0);
    step = (date) => date.setHours(date.getHours() + 1);
    keep = (date) => date.getHours() % 3 === 0;
  } else {
    at.setMinutes(Math.floor(at.getMinutes() / 10) * 10, 0, 0);
    step = (date) => date.setMinutes(date.getMinutes() + 10);
  }
  const result: number[] = [];
  for (let i = 0; i < 64 && at.getTime() <= end; i++) {
    if (at.getTime() >= start && keep(at)) result.push(at.getTime());
    step(at);
  }
  return result;
}

function describe(error: unknown, what: string): string {
  if (error instanceof ApiError) {
    if (error.status === 401) return `Cannot load the ${what}: sign in with an API token first.`;
    if (error.status === 403) return `Cannot load the ${what}: this token may not (${error.message}).`;
    if (error.status === 429) return `Cannot load the ${what}: too many requests; try again shortly.`;
    return `Cannot load the ${what}: ${error.message}`;
  }
  return `Cannot load the ${what}: ${error instanceof Error ? error.message : String(error)}`;
}

/** `2 of 3 held` (a semaphore), `3 shared holders`: how full the service is; empty for a mutex. */
function holdersSummary(holders: readonly Row[]): HTMLElement | null {
  const first = holders[0];
  if (!first) return null;
  if (holders.every((row) => row.lock.mode === 'shared')) {
    return h(
      'p',
      { class: 'holders-summary muted' },
      `${holders.length} shared ${holders.length === 1 ? 'holder' : 'holders'}: more shared holders may join, no exclusive one.`,
    );
  }
  const limit = Math.min(...holders.map((row) => row.lock.limit));
  if (limit <= 1) return null;
  const tag = holdTag({ mode: 'exclusive', limit, groupId: null }).text;
  return h('p', { class: 'holders-summary muted' }, `${holders.length} of ${limit} held (${tag}).`);
}

/** A waiter's or an event's note, after the holder's name; nothing without one. */
function noteOf(note: string | null): HTMLSpanElement | null {
  return note === null ? null : h('span', { class: 'note' }, note);
}
