import { type ApiError, checkToken, getToken, setToken, setUnauthorizedHandler } from './api.js';
import { byId } from './dom.js';

/**
 * Signing in: when the server answers 401 (a call or the watch stream), one dialog asks for
 * a token, checks it with the server before keeping it (a wrong one is refused in the
 * dialog, which asks again), and saves it in this browser only. Everything that waited for
 * it then calls again. Dismissed, the dialog stays closed (a "Sign in" button reopens it)
 * until the token changes.
 */

type Listener = () => void;

const listeners: Listener[] = [];
/** Calls waiting for the prompt's outcome: true, a new token; false, dismissed. */
let waiting: ((signedIn: boolean) => void)[] = [];
/** The prompt was dismissed for this token: do not ask again until it changes. */
let dismissedFor: string | undefined;
/** Resolves at the next token change (for the watch stream after a dismissal). */
let nextChange = deferred();

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => {};
  const promise = new Promise<void>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

/** Runs `listener` after every change of the token (sign-in, Settings). */
export function onTokenChange(listener: Listener): void {
  listeners.push(listener);
}

/** A promise of the next token change. */
export function tokenChanged(): Promise<void> {
  return nextChange.promise;
}

/** Saves the token (this browser only) and tells whoever waits for one. */
export function saveToken(token: string): void {
  if (token === getToken()) return;
  setToken(token);
  dismissedFor = undefined;
  signInButton().hidden = true;
  settle(true);
  const change = nextChange;
  nextChange = deferred();
  change.resolve();
  for (const listener of listeners) listener();
}

function settle(signedIn: boolean): void {
  const callers = waiting;
  waiting = [];
  for (const resolve of callers) resolve(signedIn);
}

const signInButton = () => byId<HTMLButtonElement>('signin-button');

let open: ((rejected: string, status: number) => void) | undefined;

/**
 * After `rejected` (the token a call carried, '' for none) was refused with `status`:
 * true at once when another token is in place already, else asks for one (one dialog for
 * every caller) and resolves true when one was saved, false when the prompt was dismissed.
 */
export function signIn(rejected: string, status: number): Promise<boolean> {
  if (getToken() !== rejected) return Promise.resolve(true);
  if (dismissedFor === rejected || !open) return Promise.resolve(false);
  const done = new Promise<boolean>((resolve) => waiting.push(resolve));
  open(rejected, status);
  return done;
}

/** Wires the dialog of index.html; API calls answered 401 then ask through it. */
export function setUpSignIn(): void {
  const dialog = byId<HTMLDialogElement>('signin-dialog');
  const form = byId<HTMLFormElement>('signin-form');
  const input = byId<HTMLInputElement>('signin-token');
  const reason = byId('signin-reason');
  const error = byId('signin-error');
  const submit = byId<HTMLButtonElement>('signin-submit');
  let checking = false;

  const showError = (text: string) => {
    error.textContent = text;
    error.hidden = false;
    input.focus();
    input.select();
  };

  open = (rejected, status) => {
    if (dialog.open) return;
    reason.textContent =
      status === 403
        ? 'This token may not view the locks (it needs the lock:read scope). Enter another token.'
        : rejected === ''
          ? 'This Tracker server requires an API token. Enter one to see the locks.'
          : 'The saved token was not accepted (it may have been revoked or mistyped). Enter another token.';
    input.value = '';
    error.hidden = true;
    submit.disabled = false;
    signInButton().hidden = true;
    dialog.showModal();
    input.focus();
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (checking) return;
    if (token === '') {
      showError('Enter a token.');
      return;
    }
    if (!/^[A-Za-z0-9._~+/=-]{1,512}$/.test(token)) {
      showError('This is not a token: a token is one word of letters, digits and . _ ~ + / = -');
      return;
    }
    checking = true;
    submit.disabled = true;
    error.hidden = true;
    void checkToken(token).then((refusal) => {
      checking = false;
      submit.disabled = false;
      if (!refusal) {
        dialog.close('signed-in');
        saveToken(token);
        // The same token again (it was refused before, now it is taken): call again anyway.
        settle(true);
        return;
      }
      showError(refusalText(refusal));
    });
  });

  byId('signin-cancel').addEventListener('click', () => dialog.close());
  // Closed without a token (Not now, Escape): whoever waited gives up, until asked again.
  dialog.addEventListener('close', () => {
    if (dialog.returnValue === 'signed-in') {
      dialog.returnValue = '';
      return;
    }
    dismissedFor = getToken();
    signInButton().hidden = false;
    settle(false);
  });
  signInButton().addEventListener('click', () => {
    dismissedFor = undefined;
    open?.(getToken(), 401);
  });

  setUnauthorizedHandler(signIn);
}

function refusalText(refusal: ApiError): string {
  switch (refusal.status) {
    case 401:
      return 'This token was not accepted. Check that it was copied whole and has not been revoked.';
    case 403:
      return 'This token is valid but may not view the locks: it needs the lock:read scope.';
    case 429:
      return `Too many attempts: try again in ${Math.ceil((refusal.retryAfterMs ?? 1000) / 1000)} s.`;
    default:
      return refusal.status === 0
        ? `Could not reach the server to check the token: ${refusal.message}`
        : `Could not check the token (${refusal.status}): ${refusal.message}`;
  }
}
