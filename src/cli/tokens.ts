import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseSubject } from '../auth/client-certificate.js';
import {
  addCertificateIdentity,
  addToken,
  readTokenFile,
  revokeToken,
  TokenFileError,
} from '../auth/token-file.js';
import { SCOPES, type Scope } from '../core/auth.js';
import { formatTokens, printable } from './table.js';
import { CommandError, EXIT, parsed, strict, UsageError } from './usage.js';

/**
 * `tracker token create|list|revoke`: edit the server's tokens file (`--auth-tokens-file`)
 * on the host where it lives. No server call: a running server picks the change up itself
 * (it watches the file, and SIGHUP reloads it).
 */

/** The server's rule for token names (src/auth/token-file.ts), checked first for a usage error. */
const NAME = /^[A-Za-z0-9._-]{1,64}$/;
/** The server's limit on a service pattern. */
const MAX_PATTERN_LENGTH = 256;

const TOKEN_EXIT_HELP = `Exit codes:
  0   done
  1   the tokens file cannot be read or written, the name is taken, or no such token
  2   usage error`;

const FILE_OPTION = `  --file F       the tokens file: the server's --auth-tokens-file
                 (env TRACKER_AUTH_TOKENS_FILE; one of the two is required)`;

export const TOKEN_HELP: Record<string, string> = {
  token: `Usage: tracker token <command> [options]

Commands:
  token create --name N --scopes S[,S] [--services P[,P]] [--certificate-subject S] [--file F]
                                    add a token (prints it once), or a client-certificate identity
  token list [--file F]             the tokens: name, scopes, services, created, certificate
  token revoke --name N [--file F]  remove a token

These edit the tokens file of a server run with --auth-tokens-file, which holds only the
tokens' SHA-256 hashes. A running server picks changes up by itself: it watches the file,
and SIGHUP makes it read the file again.

${TOKEN_EXIT_HELP}
`,
  'token create': `Usage: tracker token create --name N --scopes S[,S] [--services P[,P]] [--certificate-subject S] [--file F]

Makes a new random token, adds its SHA-256 hash to the tokens file (created if missing,
readable by its owner only, replaced atomically) and prints the token alone on stdout.
It is shown this once and kept nowhere: store it now (a CI secret, a secrets manager).
A running server accepts it at once.

With --certificate-subject, no token is made: a client certificate with that subject (signed
by the server's --tls-ca, on a request without Authorization) acts as this entry.

  --name N       unique name, 1 to 64 of A-Z a-z 0-9 . _ -; locks it takes record it as owner
  --scopes S     lock:read (get, list, queue, history, watch, metrics), lock:write (also
                 acquire, and release or renew its own locks), lock:admin (also release,
                 renew or force-release any lock); comma-separated, each includes the one before
  --services P   glob patterns of the services it may see and lock (* any run of characters,
                 ? one character), comma-separated (default: every service)
  --certificate-subject S
                 a client certificate's subject, e.g. "CN=ci-runner,O=Example" (attributes in any
                 order, all of them, values exact): that certificate acts as this entry; no token
${FILE_OPTION}

Example:
  export TRACKER_AUTH_TOKENS_FILE=/etc/tracker/tokens.yaml
  TOKEN=$(tracker token create --name ci --scopes lock:write --services 'deploy-*')

${TOKEN_EXIT_HELP}
`,
  'token list': `Usage: tracker token list [--file F] [--json]

The tokens in the file, as an aligned table: name, scopes, services, created, and the
certificate subject of client-certificate identities (never the hashes; the tokens themselves
are not in the file).

${FILE_OPTION}
  --json         the tokens as a JSON array

${TOKEN_EXIT_HELP}
`,
  'token revoke': `Usage: tracker token revoke --name N [--file F]

Removes the token from the file; a running server refuses it from then on (401).

  --name N       the token's name
${FILE_OPTION}

${TOKEN_EXIT_HELP}
`,
};

const fileFlags = { file: { type: 'string' }, help: { type: 'boolean', short: 'h' } } as const;

function tokensFile(flag: string | undefined): string {
  const file = flag ?? (process.env.TRACKER_AUTH_TOKENS_FILE || undefined);
  if (file === undefined || file === '') {
    throw new UsageError("give --file F or set TRACKER_AUTH_TOKENS_FILE (the server's --auth-tokens-file)");
  }
  return file;
}

function noPositionals(positionals: string[]): void {
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${printable(positionals[0] ?? '')}`);
}

function tokenName(value: string | undefined): string {
  if (value === undefined) throw new UsageError('--name is required');
  if (!NAME.test(value)) {
    throw new UsageError(`--name must be 1 to 64 of A-Z a-z 0-9 . _ -; got "${printable(value)}"`);
  }
  return value;
}

/** `a,b` (the flag may also be repeated): the items, without duplicates; none may be empty. */
function items(values: string[] | undefined, flag: string): string[] | undefined {
  if (values === undefined) return undefined;
  const all = values.flatMap((value) => value.split(',')).map((item) => item.trim());
  if (all.some((item) => item === '')) throw new UsageError(`${flag} has an empty item`);
  return [...new Set(all)];
}

function scopesOf(values: string[] | undefined): Scope[] {
  const scopes = items(values, '--scopes');
  if (scopes === undefined) throw new UsageError(`--scopes is required: some of ${SCOPES.join(', ')}`);
  for (const scope of scopes) {
    if (!(SCOPES as readonly string[]).includes(scope)) {
      throw new UsageError(`--scopes: "${printable(scope)}" is not one of ${SCOPES.join(', ')}`);
    }
  }
  return scopes as Scope[];
}

function servicesOf(values: string[] | undefined): string[] | undefined {
  const patterns = items(values, '--services');
  for (const pattern of patterns ?? []) {
    if ([...pattern].length > MAX_PATTERN_LENGTH) {
      throw new UsageError(`--services: a pattern must be at most ${MAX_PATTERN_LENGTH} characters`);
    }
    // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
    if (/[\u0000-\u001f\u007f]/.test(pattern)) {
      throw new UsageError('--services: a pattern must not contain control characters');
    }
  }
  return patterns;
}

/** Runs a file operation; a bad file or a failed write is one line, exit 1. */
function onFile<T>(file: string, run: () => T): T {
  try {
    return run();
  } catch (error) {
    if (error instanceof TokenFileError) throw new CommandError(error.message);
    const code = (error as NodeJS.ErrnoException).code;
    if (typeof code === 'string') throw new CommandError(`cannot write the tokens file ${file} (${code})`);
    throw error;
  }
}

function mustExist(file: string): void {
  if (!existsSync(file)) {
    throw new CommandError(`${file} does not exist (tracker token create makes it)`);
  }
}

export const TOKEN_COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  async 'token create'(args) {
    const { values, positionals } = parsed(() =>
      parseArgs({
        args,
        options: {
          ...fileFlags,
          name: { type: 'string' },
          scopes: { type: 'string', multiple: true },
          services: { type: 'string', multiple: true },
          'certificate-subject': { type: 'string' },
        },
        ...strict,
      }),
    );
    noPositionals(positionals);
    const name = tokenName(values.name);
    const scopes = scopesOf(values.scopes);
    const services = servicesOf(values.services);
    const certificateSubject = values['certificate-subject'];
    if (certificateSubject !== undefined && parseSubject(certificateSubject) === null) {
      throw new UsageError(
        `--certificate-subject must be a subject such as "CN=ci-runner,O=Example"; got "${printable(certificateSubject)}"`,
      );
    }
    const file = tokensFile(values.file);
    const allowed = services ? printable(services.join(', ')) : '(all)';
    if (certificateSubject !== undefined) {
      onFile(file, () => addCertificateIdentity(file, { name, certificateSubject, scopes, services }));
      process.stderr.write(
        `tracker: added "${name}" to ${printable(file)}: a client certificate with the subject ` +
          `${printable(certificateSubject)} acts as it; scopes ${scopes.join(', ')}; services ${allowed}\n`,
      );
      return EXIT.OK;
    }
    const token = onFile(file, () => addToken(file, { name, scopes, services }));
    // The token alone on stdout, for TOKEN=$(tracker token create ...); the rest on stderr.
    process.stdout.write(`${token}\n`);
    process.stderr.write(
      `tracker: added token "${name}" to ${printable(file)}: scopes ${scopes.join(', ')}; services ${allowed}\n`,
    );
    process.stderr.write('tracker: this is the only time the token is shown: store it now, it is not kept\n');
    return EXIT.OK;
  },

  async 'token list'(args) {
    const { values, positionals } = parsed(() =>
      parseArgs({ args, options: { ...fileFlags, json: { type: 'boolean' } }, ...strict }),
    );
    noPositionals(positionals);
    const file = tokensFile(values.file);
    mustExist(file);
    const tokens = onFile(file, () => readTokenFile(file));
    const text = values.json
      ? JSON.stringify(
          tokens.map((token) => ({
            name: token.name,
            scopes: token.scopes,
            services: token.services ?? null,
            createdAt: token.createdAt ?? null,
            certificateSubject: token.certificateSubject ?? null,
          })),
        )
      : formatTokens(tokens);
    process.stdout.write(`${text}\n`);
    return EXIT.OK;
  },

  async 'token revoke'(args) {
    const { values, positionals } = parsed(() =>
      parseArgs({ args, options: { ...fileFlags, name: { type: 'string' } }, ...strict }),
    );
    noPositionals(positionals);
    const name = tokenName(values.name);
    const file = tokensFile(values.file);
    mustExist(file);
    if (!onFile(file, () => revokeToken(file, name))) {
      throw new CommandError(`no such token: "${name}" in ${file}`);
    }
    process.stdout.write(`revoked token "${name}" in ${printable(file)}\n`);
    return EXIT.OK;
  },
};
