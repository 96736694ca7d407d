import { type Caller, hasScope, mayUseService, type Principal, type Scope } from './auth.js';
import { permissionDenied, type TrackerError, unauthenticated } from './errors.js';

/**
 * What a caller's credentials are now, after the tokens file was read again: the principal
 * with the same identity (Principal.key), with its current name, scopes and services; null
 * when it was revoked (no entry has that identity any more).
 */
export type CredentialCheck = (caller: Principal) => Principal | null;

/** Something a caller started that outlives its request: a watch stream, a waiting acquire. */
export interface SessionSpec {
  /** The scope it needs to go on. */
  readonly scope: Scope;
  /** The one service it is about; undefined: every service the caller may see (a watch of all). */
  readonly service: string | undefined;
  /** Ends it with this error (UNAUTHENTICATED or PERMISSION_DENIED); called at most once. */
  readonly end: (reason: TrackerError) => void;
}

interface Session extends SessionSpec {
  /** The principal it runs as; replaced by the current one after each reload that keeps it. */
  caller: Principal;
}

/**
 * The sessions of this process that run on a token's rights, so that revoking or narrowing a
 * token ends what it had started instead of only refusing its next request. After each reload
 * of the tokens file every session is checked against the token's current entry:
 * - revoked (no entry with its identity): ends UNAUTHENTICATED;
 * - the scope gone, or its one service no longer among the token's patterns: PERMISSION_DENIED;
 * - a watch of every service whose token's patterns changed other than by adding some:
 *   PERMISSION_DENIED, so that its client reconnects and gets a snapshot of what it may see now
 *   (its own snapshot may hold locks it may no longer see). Widened patterns keep it going
 *   (the stream goes on showing what the token could see when it started).
 * Sessions that start after a reload are checked against it at once, so a request admitted
 * just before a revocation cannot slip through.
 */
export function createSessions() {
  const live = new Set<Session>();
  let latest: CredentialCheck | null = null;

  /** Why the session must end now; null when it may go on (with `current`'s rights). */
  const verdict = (session: Session, current: Principal | null): TrackerError | null => {
    if (current === null) return unauthenticated('the token of this request was revoked');
    if (!hasScope(current, session.scope)) {
      return permissionDenied(`this token no longer has the ${session.scope} scope`);
    }
    if (session.service !== undefined) {
      return mayUseService(current, session.service)
        ? null
        : permissionDenied(`this token may no longer use the service "${session.service}"`);
    }
    return covers(current, session.caller)
      ? null
      : permissionDenied("this token's services changed: watch again for what it may see now");
  };

  /** Ends the session if its caller's current rights no longer allow it; true when it ended. */
  const check = (session: Session, credentials: CredentialCheck): boolean => {
    const current = credentials(session.caller);
    const reason = verdict(session, current);
    if (reason === null) {
      if (current) session.caller = current;
      return false;
    }
    live.delete(session);
    try {
      session.end(reason);
    } catch {
      // A transport that fails to say goodbye must not keep the others going.
    }
    return true;
  };

  return {
    /**
     * Registers what `caller` started; returns the function that unregisters it (call it when
     * it ends by itself). Without authentication there is nothing to revoke: nothing is kept.
     * May end the session at once (through `spec.end`) if a reload already revoked the caller.
     */
    open(caller: Caller, spec: SessionSpec): () => void {
      if (caller.kind !== 'token') return () => {};
      const session: Session = { ...spec, caller };
      live.add(session);
      if (latest) check(session, latest);
      return () => {
        live.delete(session);
      };
    },

    /** After a reload: ends every session its token's current entry no longer allows; returns how many. */
    revalidate(credentials: CredentialCheck): number {
      latest = credentials;
      let ended = 0;
      for (const session of [...live]) if (check(session, credentials)) ended++;
      return ended;
    },

    /** How many sessions run on tokens. */
    get size(): number {
      return live.size;
    },
  };
}

export type Sessions = ReturnType<typeof createSessions>;

/** Whether `current`'s patterns allow every service `before`'s did. */
function covers(current: Principal, before: Principal): boolean {
  if (current.services === null) return true;
  if (before.services === null) return false;
  return before.services.every((pattern) => current.services?.includes(pattern));
}
