import {
  API_BASE,
  authHeaders,
  getToken,
  type LockEvent,
  noteServerDate,
  retryAfterMs,
  type Snapshot,
  serverNow,
} from './api.js';
import { onTokenChange, setUpSignIn, signIn, tokenChanged } from './auth.js';
import { setUpForceRelease, setUpReleaseGroup, setUpSettings, setUpTake } from './dialogs.js';
import { byId, setText } from './dom.js';
import { GroupList } from './groups.js';
import { ResourcesPage } from './resources-page.js';
import { ServicePage } from './service-page.js';
import { type StreamStatus, watchStream } from './sse.js';
import { LockState, type Row } from './state.js';
import { LockTable, type SortKey, sortRows } from './table.js';

/**
 * The dashboard: one watch stream keeps the held locks; a change schedules one render on
 * the next animation frame (a burst of events renders once); a 1 s tick moves the clocks.
 */

const state = new LockState();
const viewport = byId('viewport');
const filterInput = byId<HTMLInputElement>('filter');
const countLabel = byId('count');
const statusLabel = byId('status');
const locksView = byId('locks-view');
const serviceView = byId('service-view');
const resourcesView = byId('resources-view');

const openForceRelease = setUpForceRelease(serverNow);
const take = setUpTake();
const table = new LockTable(viewport, byId<HTMLTableSectionElement>('locks-body'), (row: Row) =>
  openForceRelease(row.lock),
);
const openReleaseGroup = setUpReleaseGroup(serverNow, (groupId) => state.groupOf(groupId));
const groupList = new GroupList(state, openReleaseGroup);
const servicePage = new ServicePage({
  state,
  now: serverNow,
  forceRelease: openForceRelease,
  steal: take.steal,
  reserve: take.reserve,
  releaseGroup: openReleaseGroup,
  requestRender: () => scheduleRender(),
  loaded: () => loaded,
});
const resourcesPage = new ResourcesPage(() => scheduleRender(), take.reserve);

let sortKey: SortKey = 'service';
let descending = false;
let filter = '';
/** What the current rows were derived from. */
let derived: { version: number; filter: string; sortKey: SortKey; descending: boolean; nextExpiry: number } =
  {
    version: -1,
    filter: '',
    sortKey,
    descending,
    nextExpiry: 0,
  };
let loaded = false;
/** The server refused the stream's token (401/403): nothing to show until another one. */
let signedOut = false;

/** Filters out expired and non-matching locks and sorts, when anything they depend on moved. */
function derive(now: number): void {
  if (
    derived.version === state.version &&
    derived.filter === filter &&
    derived.sortKey === sortKey &&
    derived.descending === descending &&
    now < derived.nextExpiry
  ) {
    return;
  }
  const rows: Row[] = [];
  let live = 0;
  let nextExpiry = Number.POSITIVE_INFINITY;
  for (const row of state.values()) {
    // An expired lease is gone for every purpose, as in the API's lists, even before the
    // stream reports the expiry.
    if (row.expiresMs <= now) continue;
    live++;
    if (row.expiresMs < nextExpiry) nextExpiry = row.expiresMs;
    if (filter === '' || row.search.includes(filter)) rows.push(row);
  }
  sortRows(rows, sortKey, descending);
  derived = { version: state.version, filter, sortKey, descending, nextExpiry };
  const empty = signedOut
    ? 'Sign in with an API token to see the locks.'
    : !loaded
      ? 'Loading…'
      : live === 0
        ? 'No locks are held.'
        : 'No lock matches the filter.';
  table.setRows(rows, empty);
  const noun = live === 1 ? 'lock' : 'locks';
  setText(
    countLabel,
    !loaded ? '' : filter === '' ? `${live} held ${noun}` : `${rows.length} of ${live} held ${noun}`,
  );
}

let frame = 0;
function scheduleRender(): void {
  if (frame === 0) frame = requestAnimationFrame(render);
}

function render(): void {
  frame = 0;
  const now = serverNow();
  if (!locksView.hidden) {
    groupList.render(now);
    derive(now);
    table.render(now);
  }
  servicePage.render(now);
  resourcesPage.render();
}

// --- the live stream -------------------------------------------------------------------

function onMessage(message: { event: string; data: string }): void {
  let parsed: unknown;
  try {
    parsed = JSON.parse(message.data);
  } catch {
    console.warn('watch: unparsable message', message.event);
    return;
  }
  if (message.event === 'snapshot') {
    // A large snapshot comes in pages: the first starts a new state, the others add to it.
    const snapshot = parsed as Snapshot;
    if (snapshot.continued) state.add(snapshot.locks, snapshot.eventId);
    else state.replace(snapshot.locks, snapshot.eventId);
    if (snapshot.more) return;
    const wasLoaded = loaded;
    loaded = true;
    // A snapshot after a reconnect means events were missed: the service page reloads too.
    if (wasLoaded) servicePage.reload();
    resourcesPage.refresh();
  } else if (message.event === 'error') {
    // The server ended the stream (this watcher read too slowly, or its store failed): the
    // stream reconnects and resumes by itself.
    console.warn('watch:', message.data);
    return;
  } else {
    const event = parsed as LockEvent;
    if (typeof event.id !== 'number' || typeof event.lock !== 'object' || event.lock === null) return;
    if (state.apply(event) && (event.type === 'acquired' || event.type === 'renewed')) {
      table.markFresh(event.lock.id, serverNow());
    }
    servicePage.onEvent(event);
    if (event.type !== 'renewed' && event.type !== 'noted') resourcesPage.refresh();
  }
  scheduleRender();
}

function onStatus(status: StreamStatus): void {
  document.body.classList.toggle('stale', status.state !== 'live' && loaded);
  statusLabel.className = `status ${status.state}`;
  const wasSignedOut = signedOut;
  if (status.state === 'live' || status.state === 'unauthorized') signedOut = status.state === 'unauthorized';
  if (signedOut !== wasSignedOut) {
    // Force a new derive: the empty table's text changed.
    derived = { ...derived, version: -1 };
    scheduleRender();
  }
  switch (status.state) {
    case 'live':
      statusLabel.textContent = 'Live';
      break;
    case 'unauthorized':
      statusLabel.textContent =
        status.status === 401 ? 'Sign-in required' : 'This token may not view the locks (403)';
      break;
    case 'connecting':
      statusLabel.textContent = status.attempt > 1 ? 'Reconnecting…' : 'Connecting…';
      break;
    case 'retrying':
      statusLabel.textContent =
        status.status === 429
          ? `Rate limited, retrying in ${Math.ceil(status.inMs / 1000)} s`
          : `Offline (${status.reason}), retrying in ${Math.ceil(status.inMs / 1000)} s`;
      break;
  }
}

setUpSignIn();
setUpSettings();

/** The token the stream connected with last. */
let streamToken = '';
const watch = watchStream({
  url: () => `${API_BASE}/watch`,
  headers: () => {
    streamToken = getToken();
    return authHeaders(streamToken);
  },
  onMessage,
  onStatus,
  onResponse: noteServerDate,
  retryAfterMs,
  // Refused: ask for a token; dismissed, wait until one is set (Sign in, Settings).
  onUnauthorized: async (status) => {
    if (!(await signIn(streamToken, status))) await tokenChanged();
  },
});

onTokenChange(() => {
  watch.restart();
  servicePage.reload();
  resourcesPage.refresh();
});

// --- filter, sorting, scrolling ----------------------------------------------------------

filterInput.addEventListener('input', () => {
  filter = filterInput.value.trim().toLowerCase();
  viewport.scrollTop = 0;
  scheduleRender();
});

for (const th of document.querySelectorAll<HTMLTableCellElement>('th[data-sort]')) {
  th.querySelector('button')?.addEventListener('click', () => {
    const key = th.dataset.sort as SortKey;
    if (key === sortKey) descending = !descending;
    else {
      sortKey = key;
      descending = false;
    }
    updateSortMarks();
    scheduleRender();
  });
}

function updateSortMarks(): void {
  for (const th of document.querySelectorAll<HTMLTableCellElement>('th[data-sort]')) {
    if (th.dataset.sort === sortKey) th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
    else th.removeAttribute('aria-sort');
  }
}
updateSortMarks();

viewport.addEventListener('scroll', scheduleRender, { passive: true });
window.addEventListener('resize', scheduleRender);
setInterval(scheduleRender, 1000);

// --- routing: #/, #/resources and #/services/<name> ----------------------------------------

const navLinks = { locks: byId('nav-locks'), resources: byId('nav-resources') };

function showView(view: 'locks' | 'resources' | 'service'): void {
  locksView.hidden = view !== 'locks';
  resourcesView.hidden = view !== 'resources';
  serviceView.hidden = view !== 'service';
  for (const [name, link] of Object.entries(navLinks)) {
    if (name === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function route(): void {
  if (location.hash === '#/resources') {
    servicePage.close();
    showView('resources');
    resourcesPage.show();
    scheduleRender();
    return;
  }
  resourcesPage.hide();
  const match = /^#\/services\/(.+)$/.exec(location.hash);
  let service: string | undefined;
  if (match?.[1]) {
    try {
      service = decodeURIComponent(match[1]);
    } catch {
      service = undefined;
    }
  }
  if (service === undefined) {
    servicePage.close();
    showView('locks');
    document.title = 'Tracker';
  } else {
    showView('service');
    servicePage.open(service);
    window.scrollTo(0, 0);
  }
  scheduleRender();
}

window.addEventListener('hashchange', route);
route();
