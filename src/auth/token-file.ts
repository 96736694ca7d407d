import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, renameSync, watch, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { YAMLSeq } from 'yaml';
import { yaml } from '../config/yaml.js';
import { type Principal, SCOPES, type Scope } from '../core/auth.js';
import { unauthenticated } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { CredentialCheck } from '../core/sessions.js';
import { canonicalPeerSubject, parseSubject } from './client-certificate.js';

/**
 * The tokens file: JSON or YAML, holding only SHA-256 hashes of tokens (a token is 32
 * random bytes, so a fast hash is as good as a slow one: there is nothing to guess).
 *
 * ```yaml
 * tokens:
 *   - name: ci                      # unique; recorded as the owner of the locks it takes
 *     hash: sha256:9f86d081884c…    # of the token, hex
 *     scopes: [lock:write]          # lock:read, lock:write, lock:admin (each includes the one before)
 *     services: ["deploy-*"]        # optional glob patterns; absent: every service
 *   - name: ci-runner
 *     certificateSubject: "CN=ci-runner,O=Example"   # a client certificate (mutual TLS) instead
 *     scopes: [lock:write]
 * ```
 *
 * An entry has a `hash`, a `certificateSubject` (see client-certificate.ts), or both.
 */
export interface TokenEntry {
  readonly name: string;
  /** Of the token; absent for an entry that only a client certificate acts as. */
  readonly hash?: string | undefined;
  /** The subject of the client certificate that acts as this entry (mutual TLS). */
  readonly certificateSubject?: string | undefined;
  readonly scopes: readonly Scope[];
  readonly services?: readonly string[] | undefined;
  readonly createdAt?: string | undefined;
}

/** A bad tokens file; `message` is one line naming the file and the problem. */
export class TokenFileError extends Error {
  override readonly name = 'TokenFileError';
}

const NAME = /^[A-Za-z0-9._-]{1,64}$/;
const HASH = /^sha256:[0-9a-f]{64}$/;
const TOKEN_PREFIX = 'trk_';

/**
 * An entry's identity (Principal.key), which the locks it takes record: the first 32 hex
 * digits (128 bits) of its token's hash; for an entry with only a certificate subject,
 * `subject:` and the same of the SHA-256 of the canonical subject. Not the name: a new token
 * under a revoked one's name owns none of its locks (a certificate entry keeps its identity
 * as long as its subject stays the same). Adding a hash to a certificate entry gives it a new one.
 */
export function identityOf(entry: Pick<TokenEntry, 'hash' | 'certificateSubject'>): string {
  if (entry.hash !== undefined) return `sha256:${entry.hash.slice('sha256:'.length, 'sha256:'.length + 32)}`;
  const subject = parseSubject(entry.certificateSubject ?? '') ?? '';
  return `subject:${createHash('sha256').update(subject, 'utf8').digest('hex').slice(0, 32)}`;
}

export function hashToken(token: string): string {
  return `sha256:${createHash('sha256').update(token, 'utf8').digest('hex')}`;
}

/** A new token: `trk_` and 32 random bytes, base64url. */
export function newToken(): string {
  return `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
}

/** Parses and validates the file's text; throws TokenFileError naming the first problem. */
export function parseTokenFile(text: string, path: string): TokenEntry[] {
  let document: unknown;
  try {
    document = text.trimStart().startsWith('{') ? JSON.parse(text) : yaml().parse(text);
  } catch (error) {
    throw new TokenFileError(`${path}: not valid JSON or YAML (${(error as Error).message.split('\n')[0]})`);
  }
  if (document === null || document === undefined) return [];
  const tokens = (document as { tokens?: unknown }).tokens;
  if (typeof document !== 'object' || !Array.isArray(tokens)) {
    throw new TokenFileError(`${path}: expected an object with a "tokens" list`);
  }
  const names = new Set<string>();
  const hashes = new Set<string>();
  const subjects = new Set<string>();
  return tokens.map((raw: unknown, index): TokenEntry => {
    const where = `${path}: tokens[${index}]`;
    if (typeof raw !== 'object' || raw === null) throw new TokenFileError(`${where} is not an object`);
    const { name, hash, certificateSubject, scopes, services, createdAt } = raw as Record<string, unknown>;
    if (typeof name !== 'string' || !NAME.test(name)) {
      throw new TokenFileError(`${where}.name must be 1 to 64 of A-Z a-z 0-9 . _ -`);
    }
    if (names.has(name)) throw new TokenFileError(`${where}.name "${name}" is used twice`);
    names.add(name);
    if (hash === undefined && certificateSubject === undefined) {
      throw new TokenFileError(
        `${where} needs a hash (of a token) or a certificateSubject (of a client certificate)`,
      );
    }
    if (hash !== undefined) {
      if (typeof hash !== 'string' || !HASH.test(hash)) {
        throw new TokenFileError(
          `${where}.hash must be "sha256:" and 64 hex digits (never the token itself)`,
        );
      }
      if (hashes.has(hash)) throw new TokenFileError(`${where}.hash is used twice`);
      hashes.add(hash);
    }
    if (certificateSubject !== undefined) {
      const subject =
        typeof certificateSubject === 'string' && certificateSubject.length <= 1024
          ? parseSubject(certificateSubject)
          : null;
      if (subject === null) {
        throw new TokenFileError(
          `${where}.certificateSubject must be a certificate subject such as "CN=ci-runner,O=Example"`,
        );
      }
      if (subjects.has(subject)) throw new TokenFileError(`${where}.certificateSubject is used twice`);
      subjects.add(subject);
    }
    if (
      !Array.isArray(scopes) ||
      scopes.length === 0 ||
      !scopes.every((scope) => (SCOPES as readonly unknown[]).includes(scope))
    ) {
      throw new TokenFileError(`${where}.scopes must list some of ${SCOPES.join(', ')}`);
    }
    if (
      services !== undefined &&
      (!Array.isArray(services) ||
        services.length === 0 ||
        !services.every((pattern) => typeof pattern === 'string' && pattern !== '' && pattern.length <= 256))
    ) {
      throw new TokenFileError(`${where}.services must be a non-empty list of service patterns`);
    }
    return {
      name,
      ...(hash === undefined ? {} : { hash: hash as string }),
      ...(certificateSubject === undefined ? {} : { certificateSubject: certificateSubject as string }),
      scopes: scopes as Scope[],
      services: services as string[] | undefined,
      createdAt: typeof createdAt === 'string' ? createdAt : undefined,
    };
  });
}

export function readTokenFile(path: string): TokenEntry[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new TokenFileError(`${path}: cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return parseTokenFile(text, path);
}

/**
 * Adds a token to the file (created if missing, readable by its owner only) and returns
 * the token, which exists nowhere else: print it once. The file is replaced atomically,
 * so a server watching it never reads half of it.
 */
export function addToken(
  path: string,
  entry: { name: string; scopes: readonly Scope[]; services?: readonly string[] | undefined },
): string {
  const token = newToken();
  appendEntry(path, {
    name: entry.name,
    hash: hashToken(token),
    scopes: [...entry.scopes],
    ...(entry.services ? { services: [...entry.services] } : {}),
    createdAt: new Date().toISOString(),
  });
  return token;
}

/**
 * Adds an entry that a client certificate with this subject acts as (mutual TLS), with no
 * token. The file is created and replaced as by addToken.
 */
export function addCertificateIdentity(
  path: string,
  entry: {
    name: string;
    certificateSubject: string;
    scopes: readonly Scope[];
    services?: readonly string[] | undefined;
  },
): void {
  appendEntry(path, {
    name: entry.name,
    certificateSubject: entry.certificateSubject,
    scopes: [...entry.scopes],
    ...(entry.services ? { services: [...entry.services] } : {}),
    createdAt: new Date().toISOString(),
  });
}

/**
 * Appends an entry to the file (created if missing), unless its name is taken; the entry is
 * validated first with the same rules as the server.
 */
function appendEntry(path: string, added: TokenEntry): void {
  const existing = existsSync(path) ? readTokenFile(path) : [];
  if (existing.some((token) => token.name === added.name)) {
    throw new TokenFileError(`${path}: a token named "${added.name}" exists already (revoke it first)`);
  }
  parseTokenFile(JSON.stringify({ tokens: [...existing, added] }), path);
  editTokenFile(path, (tokens) => {
    tokens.add(new (yaml().Document)(added).contents);
  });
}

/** Removes the named token; false when there was none. */
export function revokeToken(path: string, name: string): boolean {
  const index = readTokenFile(path).findIndex((token) => token.name === name);
  if (index < 0) return false;
  editTokenFile(path, (tokens) => {
    tokens.delete(index);
  });
  return true;
}

/**
 * Changes the file's `tokens` list in place and writes it back atomically (a temporary
 * file renamed over it, readable by its owner only), so that a server watching it never
 * reads half of it. A YAML file keeps its comments and layout; a JSON one (a `.json` name,
 * or text that starts with `{`) stays JSON; a new file is YAML with a header comment.
 */
function editTokenFile(path: string, edit: (tokens: YAMLSeq) => void): void {
  const text = existsSync(path) ? readFileSync(path, 'utf8') : null;
  const json = path.endsWith('.json') || (text?.trimStart().startsWith('{') ?? false);
  const doc = text === null || text.trim() === '' ? new (yaml().Document)({}) : yaml().parseDocument(text);
  if (text === null) {
    doc.commentBefore =
      ' Tracker tokens: hashes only (tracker token create / revoke).\n Reloaded on change and on SIGHUP.';
  }
  let tokens = doc.get('tokens');
  if (!yaml().isSeq(tokens)) {
    tokens = new (yaml().YAMLSeq)();
    doc.set('tokens', tokens);
  }
  edit(tokens as YAMLSeq);
  const output = json ? `${JSON.stringify(doc.toJS(), null, 2)}\n` : doc.toString();
  const temporary = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  writeFileSync(temporary, output, { mode: 0o600 });
  chmodSync(temporary, 0o600);
  renameSync(temporary, path);
}

interface Loaded {
  readonly principal: Principal;
  /** The token's hash; null for an entry only a client certificate acts as. */
  readonly hash: Buffer | null;
  /** The canonical certificate subject; null: none. */
  readonly subject: string | null;
}

/**
 * Checks bearer tokens against the file. Loaded at start (a bad file stops the start);
 * reloaded when the file changes and on `reload()` (SIGHUP): a reload that fails keeps
 * the tokens in force and logs why. After each reload that succeeds, `onReload` listeners
 * are told how to check a principal against the new file (by identity: the same entry, with
 * its current scopes and services, or null when revoked), so that what revoked or narrowed
 * tokens had started can end.
 */
export function createTokenAuthority(path: string, logger: Logger) {
  const load = (): Loaded[] =>
    readTokenFile(path).map((entry) => ({
      principal: {
        kind: 'token' as const,
        name: entry.name,
        key: identityOf(entry),
        scopes: new Set(entry.scopes),
        services: entry.services ? [...entry.services] : null,
      },
      hash: entry.hash === undefined ? null : Buffer.from(entry.hash.slice('sha256:'.length), 'hex'),
      subject: entry.certificateSubject === undefined ? null : parseSubject(entry.certificateSubject),
    }));
  let tokens = load();
  const subjectsOf = (loaded: Loaded[]) =>
    new Map(
      loaded.flatMap((token) => (token.subject === null ? [] : [[token.subject, token.principal] as const])),
    );
  let bySubject = subjectsOf(tokens);
  logger.info({ tokens: tokens.length, file: path }, 'authentication on: bearer tokens required');
  const listeners = new Set<(check: CredentialCheck) => void>();

  const reload = (why: string) => {
    try {
      tokens = load();
      bySubject = subjectsOf(tokens);
      logger.info({ tokens: tokens.length, file: path, why }, 'tokens reloaded');
      const byIdentity = new Map(tokens.map((token) => [token.principal.key, token.principal]));
      const check: CredentialCheck = (principal) => byIdentity.get(principal.key) ?? null;
      for (const listener of listeners) listener(check);
    } catch (error) {
      logger.error(
        { err: error, file: path, why },
        'tokens file not reloaded; the previous tokens stay in force',
      );
    }
  };

  // Editors and `tracker token create` replace the file (rename), which ends a watch on the
  // file itself: watch its folder, for its name. A Kubernetes Secret volume changes otherwise:
  // the kubelet writes a new folder and swaps the `..data` link the file's name points through,
  // so that name never shows in the folder's events; `..data` does.
  let debounce: NodeJS.Timeout | undefined;
  const watcher = watch(dirname(path), (_event, changed) => {
    if (changed !== null && changed !== basename(path) && changed !== KUBERNETES_DATA_LINK) return;
    clearTimeout(debounce);
    debounce = setTimeout(() => reload('file changed'), 100);
    debounce.unref();
  });
  watcher.unref();
  watcher.on('error', (error) => logger.error({ err: error, file: path }, 'cannot watch the tokens file'));

  return {
    kind: 'tokens' as const,
    /**
     * The principal of an `Authorization: Bearer <token>` value, or, for a request with no
     * Authorization at all, of the verified client certificate's subject (Node's form, see
     * client-certificate.ts); throws UNAUTHENTICATED for anything else. Every stored hash is
     * compared, in constant time, whatever matches.
     */
    authenticate(authorization: string | undefined, certificateSubject?: string): Principal {
      if (authorization === undefined && certificateSubject !== undefined) {
        const subject = canonicalPeerSubject(certificateSubject);
        const entry = subject === null ? undefined : bySubject.get(subject);
        if (!entry) throw unauthenticated();
        return entry;
      }
      const match = /^Bearer ([A-Za-z0-9._~+/=-]{1,512})$/.exec(authorization ?? '');
      if (!match?.[1]) throw unauthenticated();
      const presented = createHash('sha256').update(match[1], 'utf8').digest();
      let found: Principal | null = null;
      for (const token of tokens) {
        if (token.hash !== null && timingSafeEqual(presented, token.hash) && found === null) {
          found = token.principal;
        }
      }
      if (!found) throw unauthenticated();
      return found;
    },
    reload: () => reload('SIGHUP'),
    /** How many entries a client certificate may act as (they need mutual TLS: --tls-ca). */
    get certificateEntries(): number {
      return bySubject.size;
    },
    /** Calls `listener` after every reload that succeeded; returns the function that stops it. */
    onReload(listener: (check: CredentialCheck) => void): () => void {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
    close(): void {
      clearTimeout(debounce);
      watcher.close();
    },
  };
}

export type TokenAuthority = ReturnType<typeof createTokenAuthority>;

/** The link a Kubernetes Secret or ConfigMap volume swaps on each update (its atomic writer). */
const KUBERNETES_DATA_LINK = '..data';
