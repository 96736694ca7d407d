import { ApiError, forceRelease, getToken, type HeldLock, releaseGroup } from './api.js';
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
