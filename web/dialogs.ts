import { ApiError, forceRelease, getToken, type Lock, setToken } from './api.js';
import { byId, h } from './dom.js';
import { formatDuration } from './format.js';

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
export function setUpForceRelease(now: () => number): (lock: Lock) => void {
  const dialog = byId<HTMLDialogElement>('force-dialog');
  const form = byId<HTMLFormElement>('force-form');
  const details = byId('force-details');
  const reason = byId<HTMLTextAreaElement>('force-reason');
  const error = byId('force-error');
  const confirm = byId<HTMLButtonElement>('force-confirm');
  let current: Lock | undefined;
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
    forceRelease(lock.id, text).then(
      () => {
        busy = false;
        confirm.disabled = false;
        dialog.close();
        toast(`Force-released ${lock.service} (held by ${lock.who}).`);
      },
      (failure: unknown) => {
        busy = false;
        confirm.disabled = false;
        if (failure instanceof ApiError && failure.status === 404) {
          showError('This lock is no longer held: it was released or expired meanwhile.');
        } else if (failure instanceof ApiError && (failure.status === 401 || failure.status === 403)) {
          showError(`Not allowed (${failure.status}): set an API token in Settings.`);
        } else {
          showError(`Force release failed: ${failure instanceof Error ? failure.message : String(failure)}`);
        }
      },
    );
  });

  function showError(text: string): void {
    error.textContent = text;
    error.hidden = false;
  }

  return (lock: Lock) => {
    current = lock;
    const createdMs = Date.parse(lock.createdAt);
    details.replaceChildren(
      h('dt', null, 'Service'),
      h('dd', null, lock.service),
      h('dt', null, 'Held by'),
      h('dd', null, lock.who),
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

/** The settings dialog; `onSaved` runs when the token changed. */
export function setUpSettings(onSaved: () => void): void {
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
    setToken(token);
    dialog.close();
    if (changed) {
      toast(token === '' ? 'Token removed.' : 'Token saved.');
      onSaved();
    }
  });
}
