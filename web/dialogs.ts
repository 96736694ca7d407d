// Durations as the CLI and the SDK read them (`30m`, `2h`, `1d`): the one module of src/ in the bundle.
import { parseDurationSeconds } from '../src/duration.js';
import { ApiError, forceRelease, getToken, type HeldLock, releaseGroup, reserve, stealLock } from './api.js';
import { saveToken } from './auth.js';
import { byId, h } from './dom.js';
import { formatDuration } from './format.js';
import type { Row } from './state.js';
import { holdTag } from './table.js';

let toastTimer: ReturnType<typeof setTimeout> | undefined;

/** A short message at the bottom of the page. */
export function toast(text: string, kind: 'ok' | 'error' = 'ok'): void {
  const element = byId('toast');
  element.textContent = text;
  element.className = `toast ${kind}`;
  element.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    element.hidden = true;
  }, 5000);
}

/**
 * The force-release confirmation: shows what is about to be released, asks why, and calls
 * the API only on an explicit confirm.
 */
export function setUpForceRelease(now: () => number): (lock: HeldLock) => void {
  const dialog = byId<HTMLDialogElement>('force-dialog');
  const form = byId<HTMLFormElement>('force-form');
  const details = byId('force-details');
  const reason = byId<HTMLTextAreaElement>('force-reason');
  const error = byId('force-error');
  const confirm = byId<HTMLButtonElement>('force-confirm');
  let current: HeldLock | undefined;
  let busy = false;

  byId('force-cancel').addEventListener('click', () => dialog.close());
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const lock = current;
    const text = reason.value.trim();
    if (!lock || busy) return;
    if (text === '') {
      showError('Say why: the reason is kept in the lock history.');
      reason.focus();
      return;
    }
    busy = true;
    confirm.disabled = true;
    error.hidden = true;
    const waitNote = (ms: number) =>
      showError(`Too many requests: trying again in ${Math.ceil(ms / 1000)} s…`, 'muted small');
    forceRelease(lock.id, text, waitNote).then(
      () => {
        busy = false;
        confirm.disabled = false;
        dialog.close();
        toast(`Force-released ${lock.service} (held by ${lock.who}).`);
      },
      (failure: unknown) => {
        busy = false;
        confirm.disabled = false;
        showError(failureText(failure));
      },
    );
  });

  function showError(text: string, kind = 'error'): void {
    error.textContent = text;
    error.className = kind;
    error.hidden = false;
  }

  return (lock: HeldLock) => {
    current = lock;
    const createdMs = Date.parse(lock.createdAt);
    details.replaceChildren(
      h('dt', null, 'Service'),
      h('dd', null, lock.service),
      h('dt', null, 'Held by'),
      h('dd', null, lock.who),
      h('dt', null, 'Owner'),
      h('dd', null, ownerText(lock)),
      h('dt', null, 'Held for'),
      h('dd', null, formatDuration(now() - createdMs)),
      h('dt', null, 'Fencing token'),
      h('dd', null, String(lock.fencingToken)),
      h('dt', null, 'Waiters'),
      h('dd', null, String(lock.waiters)),
    );
    reason.value = '';
    error.hidden = true;
    confirm.disabled = false;
    if (!dialog.open) dialog.showModal();
    reason.focus();
  };
}

/** Where the dashboard keeps the name it last took locks under (Steal, Reserve). */
const WHO_KEY = 'tracker.who';

/**
 * Steal and Reserve, one dialog: who takes it, for how long, with what note; a steal also
 * asks why (required, kept in the history). Steal ends a held lock and takes its service at
 * once (lock:admin); Reserve takes a free service for a while (an acquire that never waits).
 */
export function setUpTake(): { steal: (lock: HeldLock) => void; reserve: (service: string) => void } {
  const dialog = byId<HTMLDialogElement>('take-dialog');
  const form = byId<HTMLFormElement>('take-form');
  const title = byId('take-title');
  const details = byId('take-details');
  const warning = byId('take-warning');
  const who = byId<HTMLInputElement>('take-who');
  const ttl = byId<HTMLInputElement>('take-ttl');
  const note = byId<HTMLInputElement>('take-note');
  const reasonField = byId('take-reason-field');
  const reason = byId<HTMLTextAreaElement>('take-reason');
  const error = byId('take-error');
  const confirm = byId<HTMLButtonElement>('take-confirm');
  let target: { kind: 'steal'; lock: HeldLock } | { kind: 'reserve'; service: string } | undefined;
  let busy = false;

  byId('take-cancel').addEventListener('click', () => dialog.close());
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!target || busy) return;
    const holder = who.value.trim();
    if (holder === '') return showError('Say who holds it: a name people will recognise.', who);
    const seconds = ttl.value.trim() === '' ? null : parseDurationSeconds(ttl.value.trim());
    if (seconds === null && (target.kind === 'reserve' || ttl.value.trim() !== '')) {
      return showError('For how long: a duration such as 30m, 2h or 1d.', ttl);
    }
    const text = reason.value.trim();
    if (target.kind === 'steal' && text === '') {
      return showError('Say why: the reason is kept in the lock history.', reason);
    }
    const extra = {
      ...(seconds === null ? {} : { ttlSeconds: seconds }),
      ...(note.value.trim() === '' ? {} : { note: note.value.trim() }),
    };
    localStorage.setItem(WHO_KEY, holder);
    busy = true;
    confirm.disabled = true;
    error.hidden = true;
    const onWait = (ms: number) =>
      showError(`Too many requests: trying again in ${Math.ceil(ms / 1000)} s…`, undefined, 'muted small');
    const done =
      target.kind === 'steal'
        ? stealLock(target.lock.id, { who: holder, reason: text, ...extra }, onWait).then(
            ({ stolen }) => `Took ${stolen.service} from ${stolen.who}.`,
          )
        : reserve({ service: target.service, who: holder, ...extra }, onWait).then(
            (lock) => `Reserved ${lock.service} for ${formatDuration((lock.ttlSeconds ?? 0) * 1000)}.`,
          );
    const kind = target.kind;
    done.then(
      (message) => {
        busy = false;
        confirm.disabled = false;
        dialog.close();
        toast(message);
      },
      (failure: unknown) => {
        busy = false;
        confirm.disabled = false;
        showError(takeFailureText(kind, failure));
      },
    );
  });

  function showError(text: string, field?: HTMLElement, kind = 'error'): void {
    error.textContent = text;
    error.className = kind;
    error.hidden = false;
    field?.focus();
  }

  function open(kind: 'steal' | 'reserve', rows: readonly [string, string][]): void {
    title.textContent = kind === 'steal' ? 'Steal this lock?' : 'Reserve this service?';
    confirm.textContent = kind === 'steal' ? 'Steal' : 'Reserve';
    confirm.className = kind === 'steal' ? 'danger' : 'primary';
    warning.hidden = kind !== 'steal';
    reasonField.hidden = kind !== 'steal';
    details.replaceChildren(...rows.flatMap(([term, value]) => [h('dt', null, term), h('dd', null, value)]));
    who.value = localStorage.getItem(WHO_KEY) ?? '';
    ttl.value = kind === 'reserve' ? '1h' : '';
    note.value = '';
    reason.value = '';
    error.hidden = true;
    confirm.disabled = false;
    if (!dialog.open) dialog.showModal();
    (who.value === '' ? who : kind === 'steal' ? reason : note).focus();
  }

  return {
    steal(lock) {
      target = { kind: 'steal', lock };
      open('steal', [
        ['Service', lock.service],
        ['Held by', lock.who],
        ['Owner', ownerText(lock)],
        ['Fencing token', String(lock.fencingToken)],
        ['Waiters', String(lock.waiters)],
      ]);
    },
    reserve(service) {
      target = { kind: 'reserve', service };
      open('reserve', [['Service', service]]);
    },
  };
}

/** Why a steal or a reservation failed, in words. */
function takeFailureText(kind: 'steal' | 'reserve', failure: unknown): string {
  const what = kind === 'steal' ? 'Steal' : 'Reserve';
  if (!(failure instanceof ApiError)) {
    return `${what} failed: ${failure instanceof Error ? failure.message : String(failure)}`;
  }
  switch (failure.status) {
    case 404:
      return kind === 'steal'
        ? 'This lock is no longer held: it was released or expired meanwhile.'
        : `${what} failed: ${failure.message}`;
    case 409:
      return 'Someone took it meanwhile: it is no longer free.';
    case 401:
      return `Not signed in: a valid API token is needed to ${kind}.`;
    case 403:
      return kind === 'steal'
        ? 'This token may not steal: it needs lock:admin (for this service).'
        : 'This token may not take this service: it needs lock:write for it.';
    case 429:
      return `Too many requests: try again in ${Math.ceil((failure.retryAfterMs ?? 1000) / 1000)} s.`;
    default:
      return `${what} failed: ${failure.message}`;
  }
}

/** Why a force release failed, in words (403: what the token lacks). */
function failureText(failure: unknown): string {
  if (!(failure instanceof ApiError)) {
    return `Force release failed: ${failure instanceof Error ? failure.message : String(failure)}`;
  }
  switch (failure.status) {
    case 404:
      return 'This lock is no longer held: it was released or expired meanwhile.';
    case 401:
      return 'Not signed in: a valid API token is needed to force-release.';
    case 403:
      return /service/.test(failure.message)
        ? 'This token may not force-release: it may not use this service.'
        : 'This token may not force-release: it needs lock:admin.';
    case 429:
      return `Too many requests: try again in ${Math.ceil((failure.retryAfterMs ?? 1000) / 1000)} s.`;
    default:
      return `Force release failed: ${failure.message}`;
  }
}

/** A lock's owner (the name of the token that took it), or why there is none. */
export function ownerText(lock: HeldLock): string {
  return lock.owner ?? '— (no token)';
}

/**
 * The group release confirmation: shows the group's locks (`rows`, read when it opens) and
 * releases them all (DELETE /locks/{groupId}) only on an explicit confirm.
 */
export function setUpReleaseGroup(
  now: () => number,
  rowsOf: (groupId: string) => readonly Row[],
): (groupId: string) => void {
  const dialog = byId<HTMLDialogElement>('group-dialog');
  const form = byId<HTMLFormElement>('group-form');
  const details = byId('group-details');
  const members = byId('group-members');
  const error = byId('group-error');
  const confirm = byId<HTMLButtonElement>('group-confirm');
  let current: string | undefined;
  let busy = false;

  byId('group-cancel').addEventListener('click', () => dialog.close());
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const groupId = current;
    if (groupId === undefined || busy) return;
    busy = true;
    confirm.disabled = true;
    error.hidden = true;
    const waitNote = (ms: number) => {
      error.textContent = `Too many requests: trying again in ${Math.ceil(ms / 1000)} s…`;
      error.className = 'muted small';
      error.hidden = false;
    };
    releaseGroup(groupId, waitNote).then(
      (released) => {
        busy = false;
        confirm.disabled = false;
        dialog.close();
        const count = released.locks.length;
        toast(`Released the group: ${count} ${count === 1 ? 'lock' : 'locks'}.`);
      },
      (failure: unknown) => {
        busy = false;
        confirm.disabled = false;
        error.textContent = groupFailureText(failure);
        error.className = 'error';
        error.hidden = false;
      },
    );
  });

  return (groupId: string) => {
    current = groupId;
    const rows = rowsOf(groupId);
    const first = rows[0];
    details.replaceChildren(
      h('dt', null, 'Group'),
      h('dd', { class: 'mono' }, groupId),
      h('dt', null, 'Held by'),
      h('dd', null, first ? first.lock.who : '—'),
      h('dt', null, 'Owner'),
      h('dd', null, first ? ownerText(first.lock) : '—'),
      h('dt', null, 'Held for'),
      h('dd', null, first ? formatDuration(now() - first.createdMs) : '—'),
    );
    members.replaceChildren(
      ...rows.map((row) => {
        const tag = holdTag({ ...row.lock, groupId: null }).text;
        return h(
          'li',
          null,
          h('span', { class: 'member-service' }, row.lock.service),
          tag === '' ? null : h('span', { class: 'tag' }, tag),
          h('span', { class: 'muted small' }, ` token ${row.lock.fencingToken}`),
        );
      }),
    );
    error.hidden = true;
    confirm.disabled = false;
    if (!dialog.open) dialog.showModal();
    confirm.focus();
  };
}

/** Why a group release failed, in words. */
function groupFailureText(failure: unknown): string {
  if (!(failure instanceof ApiError)) {
    return `Release failed: ${failure instanceof Error ? failure.message : String(failure)}`;
  }
  switch (failure.status) {
    case 404:
      return 'This group is no longer held: its locks were released or expired meanwhile.';
    case 401:
      return 'Not signed in: a valid API token is needed to release a group.';
    case 403:
      return `This token may not release this group: ${failure.message}`;
    case 429:
      return `Too many requests: try again in ${Math.ceil((failure.retryAfterMs ?? 1000) / 1000)} s.`;
    default:
      return `Release failed: ${failure.message}`;
  }
}

/** The settings dialog: the token can be changed or removed here at any time. */
export function setUpSettings(): void {
  const dialog = byId<HTMLDialogElement>('settings-dialog');
  const form = byId<HTMLFormElement>('settings-form');
  const input = byId<HTMLInputElement>('token');
  byId('settings-button').addEventListener('click', () => {
    input.value = getToken();
    dialog.showModal();
    input.focus();
  });
  byId('settings-cancel').addEventListener('click', () => dialog.close());
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = input.value.trim();
    const changed = token !== getToken();
    dialog.close();
    if (changed) {
      toast(token === '' ? 'Token removed.' : 'Token saved.');
      saveToken(token);
    }
  });
}
