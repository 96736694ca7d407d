#!/usr/bin/env node
import { parseArgs } from 'node:util';
// The server's limits, said in the help (a pure module of constants: no server comes with it).
import { MAX_NOTE_LENGTH, MAX_REASON_LENGTH } from '../core/lock.js';
import {
  type Claim,
  LimitMismatchError,
  LockHeldError,
  NoSuchLabelError,
  PermissionDeniedError,
  RateLimitedError,
  ServerUnreachableError,
  TrackerApiError,
  TrackerClient,
  UnauthenticatedError,
  WaitTimeoutError,
} from '../sdk/index.js';
import { durationSeconds, type LockEvent } from '../sdk/tracker-client.js';
import { runLocked } from './run-locked.js';
import {
  about,
  formatHistory,
  formatLockTable,
  formatQueue,
  formatResource,
  formatResources,
  humanDuration,
  printable,
} from './table.js';
import { CommandError, EXIT, parsed, strict, UsageError } from './usage.js';

export { EXIT } from './usage.js';

/** `lock history --limit`: the server's page size by default; more are fetched page by page. */
const DEFAULT_HISTORY_EVENTS = 100;
const MAX_HISTORY_EVENTS = 100_000;
const HISTORY_PAGE = 1000;
/** The server's ranges, checked first so that a mistake is a usage error (exit 2). */
const MAX_LIMIT = 1000;
const MAX_QUANTITY = 32;
const MAX_PRIORITY = 1000;
const MAX_LABELS = 32;
const MAX_PROPERTIES = 64;

const EXIT_HELP = `Exit codes:
  0   done
  1   server unreachable, refused (401 unauthenticated, 403 permission denied,
      429 rate limited), or any other failure (one line on stderr)
  2   usage error
  3   lock held by someone else (not waiting)
  4   wait timed out
  75  lock lost during \`run\``;

const CLIENT_OPTIONS = `Client options:
  --url URL      Tracker's REST API, http:// or https:// (env TRACKER_URL;
                 default http://localhost:8080)
  --token T      bearer token, for a server run with --auth-tokens-file (env TRACKER_TOKEN;
                 prefer the variable: other users can see arguments in ps)
  --ca-file F    https: the CA certificate (PEM) that signed the server's (env TRACKER_CA_FILE;
                 default: the public CAs Node knows)
  --cert-file F  https: a client certificate (PEM), for a server run with --tls-ca
                 (env TRACKER_CLIENT_CERT_FILE)
  --key-file F   https: the client certificate's private key (env TRACKER_CLIENT_KEY_FILE)
  --json         machine output (JSON)
  --help         this help`;

const LOCK_OPTIONS = `Lock options:
  --service S    the service to lock (required)
  --who W        the holder (default user@hostname)
  --ttl D        lease length: 90s, 30m, 1h30m or seconds (default: the server's)
  --wait D       wait in line up to D when the service is held (default: do not wait)
  --note TEXT    why the lock is held (up to ${MAX_NOTE_LENGTH} characters), shown with it everywhere
  --link URL     where to look: an http(s) URL, e.g. the CI run's`;

const HELP: Record<string, string> = {
  tracker: `Usage: tracker <command> [options]

Commands:
  serve [server options]            run the Tracker server (same flags as npm start)
  run [lock options] -- CMD ARGS    run a command while holding a lock
  lock acquire [lock options]       take a lock; prints its id
  lock get ID                       show a lock
  lock release ID                   release a lock
  lock renew ID [--ttl D]           extend a lock's lease
  lock note ID [--note TEXT]        change a held lock's note (without --note: clear it)
  lock steal ID --reason R          end a lock and take its service at once (admin)
  lock list [--service S] [--who W] list held locks
  lock queue SERVICE                show a service's holder and waiters
  lock force-release ID [--reason R]
                                    release a lock whoever holds it (operators)
  lock history [--service S] [--who W] [--since T] [--until T] [--limit N]
                                    what happened to locks, newest first
  resource put NAME [--label L]... [--property K=V]... [--capacity N] [--description D]
                                    register (or replace) a resource (lock:admin)
  resource get NAME                 show a resource, its holders and waiters
  resource list [--label L]         list resources (those carrying a label)
  resource delete NAME              remove a resource that nobody holds (lock:admin)
  token create --name N --scopes S[,S] [--services P[,P]] [--certificate-subject S] [--file F]
                                    add a token to the server's tokens file; prints it once
                                    (or a client-certificate identity: no token)
  token list [--file F]             the tokens: name, scopes, services, created, certificate
  token revoke --name N [--file F]  remove a token from the tokens file

Run \`tracker <command> --help\` for a command's options.

${CLIENT_OPTIONS}

${EXIT_HELP}
`,
  run: `Usage: tracker run [lock options] [--kill-grace D] -- COMMAND [ARGS...]

Takes the lock (waiting if --wait is given), runs COMMAND with TRACKER_LOCK_ID,
TRACKER_FENCING_TOKEN and TRACKER_SERVICE in its environment, renews the lease every third
of the TTL, forwards SIGINT, SIGTERM and SIGHUP, and releases the lock when COMMAND ends.
Exits with COMMAND's exit code. If the lock is lost, COMMAND gets SIGTERM at once and
SIGKILL after --kill-grace (default 10s), and run exits 75.

Several --service, or --label with --quantity over 1, take a group: every lock at once or
none (the command then gets TRACKER_GROUP_ID instead of TRACKER_LOCK_ID). The command also
gets TRACKER_RESOURCES (the names it holds, comma-separated, in grant order),
TRACKER_FENCING_TOKENS (theirs, in the same order) and, for each one i from 0,
TRACKER_RESOURCE_<i> (its name) and TRACKER_RESOURCE_<i>_<PROPERTY> (each property of a
registered resource, the name upper-cased, other characters than A-Z and 0-9 as _).

${LOCK_OPTIONS}
                 (repeat it to hold several services at once, as a group)
  --label L      any free registered resource carrying label L (with --service too: a group)
  --quantity N   with --label: N resources of it, 1 to ${MAX_QUANTITY} (default 1)
  --limit N      the services admit N holders at once, 1 to ${MAX_LIMIT} (a semaphore; default 1)
  --shared       hold in shared mode: with other shared holders, never with an exclusive one
  --priority P   when waiting: higher is granted first, -${MAX_PRIORITY} to ${MAX_PRIORITY} (default 0;
                 a negative one as --priority=-5)
  --kill-grace D time between SIGTERM and SIGKILL when the lock is lost (default 10s)

${CLIENT_OPTIONS}

${EXIT_HELP}
`,
  'lock acquire': `Usage: tracker lock acquire [lock options]

Prints the lock's id (the lock as JSON with --json).

${LOCK_OPTIONS}

${CLIENT_OPTIONS}

${EXIT_HELP}
`,
  resource: `Usage: tracker resource <put|get|list|delete> ...

  resource put NAME [--label L]... [--property K=V]... [--capacity N] [--description D]
  resource get NAME
  resource list [--label L]
  resource delete NAME

Run \`tracker resource <command> --help\` for a command's options.

${CLIENT_OPTIONS}

${EXIT_HELP}
`,
  'resource put': `Usage: tracker resource put NAME [--label L]... [--property K=V]... [--capacity N] [--description D]

Registers the resource NAME, or replaces it (its holders keep it): a request for one of its
labels (tracker run --label L) may take it, and every lock on it shows its properties.
Prints "created NAME" or "replaced NAME" (the resource as JSON with --json). Needs a
lock:admin token when the server has authentication on.

  --label L        a label (repeat it: at most ${MAX_LABELS})
  --property K=V   a property, shown to its holders (repeat it: at most ${MAX_PROPERTIES})
  --capacity N     how many exclusive holders it admits at once, 1 to ${MAX_LIMIT} (default 1)
  --description D  what it is, in words

${CLIENT_OPTIONS}

${EXIT_HELP}
`,
  'resource get': `Usage: tracker resource get NAME

The resource: capacity, free, holders, waiters, labels; its description and properties,
then its holders as a table (the resource as JSON with --json).

${CLIENT_OPTIONS}

${EXIT_HELP}
`,
  'resource list': `Usage: tracker resource list [--label L]

An aligned table, by name: name, capacity, free, holders, waiters, labels.

  --label L      only the resources carrying label L

${CLIENT_OPTIONS}

${EXIT_HELP}
`,
  'resource delete': `Usage: tracker resource delete NAME

Removes the resource from the registry; refused while a lock holds it. Needs a lock:admin
token when the server has authentication on.

${CLIENT_OPTIONS}

${EXIT_HELP}
`,
  'lock get': `Usage: tracker lock get ID\n\n${CLIENT_OPTIONS}\n\n${EXIT_HELP}\n`,
  'lock release': `Usage: tracker lock release ID\n\n${CLIENT_OPTIONS}\n\n${EXIT_HELP}\n`,
  'lock renew': `Usage: tracker lock renew ID [--ttl D]\n\n  --ttl D        new lease length (default: the lock's own)\n\n${CLIENT_OPTIONS}\n\n${EXIT_HELP}\n`,
  'lock note': `Usage: tracker lock note ID [--note TEXT]\n\nChanges the note of a lock you hold; without --note, clears it.\n\n  --note TEXT    the new note (up to ${MAX_NOTE_LENGTH} characters)\n\n${CLIENT_OPTIONS}\n\n${EXIT_HELP}\n`,
  'lock list': `Usage: tracker lock list [--service S] [--who W]

An aligned table: service, who, age, expires in, token, waiters (and note and link when a
lock has one).

${CLIENT_OPTIONS}

${EXIT_HELP}
`,
  'lock queue': `Usage: tracker lock queue SERVICE\n\n${CLIENT_OPTIONS}\n\n${EXIT_HELP}\n`,
  'lock force-release': `Usage: tracker lock force-release ID [--reason R]

Releases the lock whoever holds it, for a holder that will never come back; the history
keeps the reason, and the next waiter gets the service as after a release. Prints one line
(the released lock as JSON with --json).

  --reason R     why, kept in the history (at most ${MAX_REASON_LENGTH} characters)

${CLIENT_OPTIONS}

${EXIT_HELP}
`,
  'lock steal': `Usage: tracker lock steal ID --reason R [--who W] [--ttl D] [--note TEXT]

Ends the lock ID whoever holds it and takes its service for you at once, ahead of everyone
waiting (needs a lock:admin token). The history keeps the reason; the old holder's renewal
fails, which stops its tracker run and its GitHub Action. Prints the new lock's id (both
locks as JSON with --json).

  --reason R     why, required, kept in the history (at most ${MAX_REASON_LENGTH} characters)
  --who W        the new holder (default user@hostname)
  --ttl D        the new lock's lease (default: the server's)
  --note TEXT    the new lock's note

${CLIENT_OPTIONS}

${EXIT_HELP}
`,
  'lock history': `Usage: tracker lock history [--service S] [--who W] [--since T] [--until T] [--limit N]

What happened to locks, newest first, as an aligned table: at (UTC), type, service, who,
held for, reason (the events as a JSON array with --json).

  --service S    only this service
  --who W        only this holder
  --since T      from T on: an RFC 3339 timestamp (2026-11-26T17:00:00Z) or a duration
                 ago (90s, 30m, 1h30m, 2d)
  --until T      before T (same forms)
  --limit N      at most N events, 1 to ${MAX_HISTORY_EVENTS} (default ${DEFAULT_HISTORY_EVENTS})

${CLIENT_OPTIONS}

${EXIT_HELP}
`,
};

const clientFlags = {
  url: { type: 'string' },
  token: { type: 'string' },
  'ca-file': { type: 'string' },
  'cert-file': { type: 'string' },
  'key-file': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;
const lockFlags = {
  service: { type: 'string' },
  who: { type: 'string' },
  ttl: { type: 'string' },
  wait: { type: 'string' },
  note: { type: 'string' },
  link: { type: 'string' },
} as const;

function duration(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  try {
    return durationSeconds(value, flag);
  } catch {
    throw new UsageError(`${flag}: "${value}" is not a duration (90s, 30m, 1h30m or seconds)`);
  }
}

/** `--since`/`--until`: an RFC 3339 timestamp as given, or a duration ago. */
function moment(value: string | undefined, flag: string, now: number): string | undefined {
  if (value === undefined) return undefined;
  const rfc3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/i;
  if (rfc3339.test(value) && !Number.isNaN(Date.parse(value))) return value.toUpperCase();
  let seconds: number | undefined;
  try {
    seconds = durationSeconds(value, flag);
  } catch {
    seconds = undefined;
  }
  const at = seconds === undefined ? Number.NaN : now - seconds * 1000;
  if (!Number.isFinite(at) || at < 0) {
    throw new UsageError(
      `${flag}: "${printable(value)}" is neither a timestamp (2026-11-26T17:00:00Z) nor a duration ago (30m, 2d)`,
    );
  }
  return new Date(at).toISOString();
}

/** A whole number from `min` to `max`, or a usage error. */
function count(value: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const number = /^\d{1,9}$/.test(value) ? Number(value) : Number.NaN;
  if (!(number >= min && number <= max)) {
    throw new UsageError(`${flag} must be a whole number from ${min} to ${max}; got "${printable(value)}"`);
  }
  return number;
}

/** A whole number, maybe negative, from `min` to `max`, or a usage error. */
function integer(value: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const number = /^-?\d{1,9}$/.test(value) ? Number(value) : Number.NaN;
  if (!(number >= min && number <= max)) {
    throw new UsageError(`${flag} must be a whole number from ${min} to ${max}; got "${printable(value)}"`);
  }
  return number;
}

/**
 * `run`'s claims: one per --service, and --label with its --quantity; --limit and --shared
 * apply to each (--limit to the services only: a resource's capacity is its limit).
 */
function claimsOf(values: {
  service?: string[] | undefined;
  label?: string | undefined;
  quantity?: string | undefined;
  limit?: string | undefined;
  shared?: boolean | undefined;
}): Claim[] {
  const services = values.service ?? [];
  const { label, shared } = values;
  if (services.length === 0 && label === undefined) throw new UsageError('--service or --label is required');
  const quantity = count(values.quantity, '--quantity', 1, MAX_QUANTITY);
  if (quantity !== undefined && label === undefined) throw new UsageError('--quantity goes with --label');
  const limit = count(values.limit, '--limit', 1, MAX_LIMIT);
  if (limit !== undefined && shared) {
    throw new UsageError('--limit applies to exclusive locks: not with --shared');
  }
  if (limit !== undefined && services.length === 0) {
    throw new UsageError("--limit applies to --service: a resource's capacity is its limit");
  }
  const mode = shared ? ('shared' as const) : undefined;
  return [
    ...services.map((service) => ({ service, mode, limit })),
    ...(label === undefined ? [] : [{ label, mode, quantity }]),
  ];
}

/** `--property K=V` flags as an object; a key given twice is a usage error. */
function propertiesOf(flags: readonly string[] | undefined): Record<string, string> | undefined {
  if (flags === undefined) return undefined;
  const properties: Record<string, string> = {};
  for (const flag of flags) {
    const equals = flag.indexOf('=');
    if (equals <= 0) throw new UsageError(`--property must be KEY=VALUE; got "${printable(flag)}"`);
    const key = flag.slice(0, equals);
    if (Object.hasOwn(properties, key)) throw new UsageError(`--property ${printable(key)} is given twice`);
    properties[key] = flag.slice(equals + 1);
  }
  return properties;
}

/** The one positional NAME a resource command takes. */
function withName<V>(result: { values: V; positionals: string[] }): { values: V; name: string } {
  const [name, more] = result.positionals;
  if (!name || more !== undefined) throw new UsageError('give exactly one resource NAME');
  return { values: result.values, name };
}

/** Whether the last client made carried a token: a 401 without one says how to give it. */
let sentToken = false;

/** The SDK client for the client options; TRACKER_TOKEN and the TLS variables are its defaults. */
function clientOf(values: {
  url?: string | undefined;
  token?: string | undefined;
  'ca-file'?: string | undefined;
  'cert-file'?: string | undefined;
  'key-file'?: string | undefined;
}): TrackerClient {
  let client: TrackerClient;
  try {
    client = new TrackerClient({
      url: values.url ?? (process.env.TRACKER_URL || 'http://localhost:8080'),
      token: values.token,
      caFile: values['ca-file'],
      certFile: values['cert-file'],
      keyFile: values['key-file'],
    });
  } catch (error) {
    // Contradictory options (a CA for an http:// URL), or a file that cannot be read.
    throw new UsageError((error as Error).message);
  }
  sentToken = client.hasToken;
  return client;
}

function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** One small function per command; each returns the exit code. */
const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  async 'lock acquire'(args) {
    const { values, positionals } = parsed(() =>
      parseArgs({ args, options: { ...clientFlags, ...lockFlags }, ...strict }),
    );
    if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
    if (!values.service) throw new UsageError('--service is required');
    const lock = await clientOf(values).acquire(values.service, {
      who: values.who,
      ttl: duration(values.ttl, '--ttl'),
      wait: duration(values.wait, '--wait'),
      note: values.note,
      link: values.link,
    });
    print(values.json ? JSON.stringify(lock) : lock.id);
    return EXIT.OK;
  },

  async 'lock get'(args) {
    const { values, id } = withId(parsed(() => parseArgs({ args, options: clientFlags, ...strict })));
    const lock = await clientOf(values).get(id);
    print(values.json ? JSON.stringify(lock) : formatLockTable([lock], Date.now()));
    return EXIT.OK;
  },

  async 'lock release'(args) {
    const { values, id } = withId(parsed(() => parseArgs({ args, options: clientFlags, ...strict })));
    await clientOf(values).release(id);
    print(values.json ? JSON.stringify({ success: true, id }) : `released ${id}`);
    return EXIT.OK;
  },

  async 'lock renew'(args) {
    const { values, id } = withId(
      parsed(() => parseArgs({ args, options: { ...clientFlags, ttl: lockFlags.ttl }, ...strict })),
    );
    const lock = await clientOf(values).renew(id, { ttl: duration(values.ttl, '--ttl') });
    print(values.json ? JSON.stringify(lock) : `renewed ${id} until ${lock.expiresAt ?? 'released'}`);
    return EXIT.OK;
  },

  async 'lock note'(args) {
    const { values, id } = withId(
      parsed(() => parseArgs({ args, options: { ...clientFlags, note: lockFlags.note }, ...strict })),
    );
    const lock = await clientOf(values).setNote(id, values.note ?? null);
    print(
      values.json ? JSON.stringify(lock) : lock.note === null ? `cleared the note of ${id}` : `noted ${id}`,
    );
    return EXIT.OK;
  },

  async 'lock list'(args) {
    const { values, positionals } = parsed(() =>
      parseArgs({
        args,
        options: { ...clientFlags, service: lockFlags.service, who: lockFlags.who },
        ...strict,
      }),
    );
    if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
    const client = clientOf(values);
    const locks = [];
    // Every page, bounded: a million locks at 1000 per page.
    for (let page = 1; page <= 1000; page++) {
      const result = await client.list({ service: values.service, who: values.who, page, perPage: 1000 });
      locks.push(...result.locks);
      if (locks.length >= result.total || result.locks.length === 0) break;
    }
    print(values.json ? JSON.stringify(locks) : formatLockTable(locks, Date.now()));
    return EXIT.OK;
  },

  async 'lock force-release'(args) {
    const { values, id } = withId(
      parsed(() => parseArgs({ args, options: { ...clientFlags, reason: { type: 'string' } }, ...strict })),
    );
    const { reason } = values;
    if (reason !== undefined) {
      // The server's rules, checked first so that a mistake is a usage error (exit 2).
      if ([...reason].length > MAX_REASON_LENGTH) {
        throw new UsageError(`--reason must be at most ${MAX_REASON_LENGTH} characters`);
      }
      // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
      if (/[\u0000-\u001f\u007f]/.test(reason)) {
        throw new UsageError('--reason must not contain control characters');
      }
    }
    const lock = await clientOf(values).forceRelease(id, { reason });
    print(
      values.json
        ? JSON.stringify(lock)
        : `force-released ${printable(lock.id)}: ${printable(lock.service)} held by ${printable(lock.who)} for ${humanDuration(Date.now() - Date.parse(lock.createdAt))}`,
    );
    return EXIT.OK;
  },

  async 'lock steal'(args) {
    const options = {
      ...clientFlags,
      reason: { type: 'string' },
      who: lockFlags.who,
      ttl: lockFlags.ttl,
      note: lockFlags.note,
    } as const;
    const { values, id } = withId(parsed(() => parseArgs({ args, options, ...strict })));
    if (values.reason === undefined || values.reason.trim() === '') {
      throw new UsageError('--reason is required: say why the lock is taken away');
    }
    const { lock, stolen } = await clientOf(values).steal(id, {
      who: values.who,
      reason: values.reason,
      ttl: duration(values.ttl, '--ttl'),
      note: values.note,
    });
    if (values.json) print(JSON.stringify({ lock, stolen }));
    else {
      print(lock.id);
      process.stderr.write(
        `tracker: ${printable(`took ${lock.service} from ${stolen.who} (lock ${stolen.id} ended)`)}\n`,
      );
    }
    return EXIT.OK;
  },

  async 'lock history'(args) {
    const { values, positionals } = parsed(() =>
      parseArgs({
        args,
        options: {
          ...clientFlags,
          service: lockFlags.service,
          who: lockFlags.who,
          since: { type: 'string' },
          until: { type: 'string' },
          limit: { type: 'string' },
        },
        ...strict,
      }),
    );
    if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
    const now = Date.now();
    const filters = {
      service: values.service,
      who: values.who,
      since: moment(values.since, '--since', now),
      until: moment(values.until, '--until', now),
    };
    const wanted = count(values.limit, '--limit', 1, MAX_HISTORY_EVENTS) ?? DEFAULT_HISTORY_EVENTS;
    const client = clientOf(values);
    const events: LockEvent[] = [];
    let before: number | undefined;
    // Page by page, newest first, until `wanted`; bounded by the number of pages it takes.
    for (let page = 0; page < Math.ceil(wanted / HISTORY_PAGE) && events.length < wanted; page++) {
      const limit = Math.min(HISTORY_PAGE, wanted - events.length);
      const result = await client.history({ ...filters, limit, before });
      events.push(...result.events);
      if (result.nextBefore === null) break;
      before = result.nextBefore;
    }
    print(values.json ? JSON.stringify(events) : formatHistory(events));
    return EXIT.OK;
  },

  async 'lock queue'(args) {
    const { values, positionals } = parsed(() => parseArgs({ args, options: clientFlags, ...strict }));
    const [service, extra] = positionals;
    if (!service || extra !== undefined) throw new UsageError('give exactly one SERVICE');
    const queue = await clientOf(values).queue(service);
    print(values.json ? JSON.stringify(queue) : formatQueue(queue, Date.now()));
    return EXIT.OK;
  },

  async run(args) {
    const dashes = args.indexOf('--');
    if (dashes < 0 || dashes === args.length - 1) throw new UsageError('give the command after --');
    const { values, positionals } = parsed(() =>
      parseArgs({
        args: args.slice(0, dashes),
        options: {
          ...clientFlags,
          ...lockFlags,
          service: { type: 'string', multiple: true },
          label: { type: 'string' },
          quantity: { type: 'string' },
          limit: { type: 'string' },
          shared: { type: 'boolean' },
          priority: { type: 'string' },
          'kill-grace': { type: 'string' },
        },
        ...strict,
      }),
    );
    if (positionals.length > 0)
      throw new UsageError(`unexpected argument: ${positionals[0]} (put the command after --)`);
    const claims = claimsOf(values);
    const [command, ...commandArgs] = args.slice(dashes + 1) as [string, ...string[]];
    return runLocked({
      client: clientOf(values),
      claims,
      who: values.who,
      ttlSeconds: duration(values.ttl, '--ttl'),
      waitSeconds: duration(values.wait, '--wait'),
      priority: integer(values.priority, '--priority', -MAX_PRIORITY, MAX_PRIORITY),
      note: values.note,
      link: values.link,
      killGraceMs: (duration(values['kill-grace'], '--kill-grace') ?? 10) * 1000,
      command,
      args: commandArgs,
    });
  },

  async 'resource put'(args) {
    const { values, name } = withName(
      parsed(() =>
        parseArgs({
          args,
          options: {
            ...clientFlags,
            label: { type: 'string', multiple: true },
            property: { type: 'string', multiple: true },
            capacity: { type: 'string' },
            description: { type: 'string' },
          },
          ...strict,
        }),
      ),
    );
    const properties = propertiesOf(values.property);
    if ((values.label?.length ?? 0) > MAX_LABELS) throw new UsageError(`at most ${MAX_LABELS} --label`);
    if (Object.keys(properties ?? {}).length > MAX_PROPERTIES) {
      throw new UsageError(`at most ${MAX_PROPERTIES} --property`);
    }
    const { resource, created } = await clientOf(values).putResource(name, {
      labels: values.label,
      properties,
      capacity: count(values.capacity, '--capacity', 1, MAX_LIMIT),
      description: values.description,
    });
    print(
      values.json
        ? JSON.stringify(resource)
        : `${created ? 'created' : 'replaced'} ${printable(resource.name)}`,
    );
    return EXIT.OK;
  },

  async 'resource get'(args) {
    const { values, name } = withName(parsed(() => parseArgs({ args, options: clientFlags, ...strict })));
    const resource = await clientOf(values).getResource(name);
    print(values.json ? JSON.stringify(resource) : formatResource(resource, Date.now()));
    return EXIT.OK;
  },

  async 'resource list'(args) {
    const { values, positionals } = parsed(() =>
      parseArgs({ args, options: { ...clientFlags, label: { type: 'string' } }, ...strict }),
    );
    if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
    const resources = await clientOf(values).listResources({ label: values.label });
    print(values.json ? JSON.stringify(resources) : formatResources(resources));
    return EXIT.OK;
  },

  async 'resource delete'(args) {
    const { values, name } = withName(parsed(() => parseArgs({ args, options: clientFlags, ...strict })));
    await clientOf(values).deleteResource(name);
    print(values.json ? JSON.stringify({ success: true, name }) : `deleted ${printable(name)}`);
    return EXIT.OK;
  },
};

/** The one positional lock ID a command takes. */
function withId<V>(result: { values: V; positionals: string[] }): { values: V; id: string } {
  const [id, more] = result.positionals;
  if (!id || more !== undefined) throw new UsageError('give exactly one lock ID');
  return { values: result.values, id };
}

/** Commands in groups: `tracker lock acquire`, `tracker token create`. */
const GROUPS = ['lock', 'token', 'resource'];

/** Runs the CLI; resolves with the exit code. */
export async function cli(argv: string[]): Promise<number> {
  const [first, second] = argv;
  if (first === 'serve') {
    // Loaded only here: client commands need neither the server nor its database drivers.
    const { runServer } = await import('../server.js');
    await runServer(argv.slice(1), 'tracker serve');
    return -1; // the server keeps running; it exits by itself
  }
  const group = first !== undefined && GROUPS.includes(first) ? first : undefined;
  if (group === 'token') {
    // Loaded only here: the tokens file's parser is not needed by client commands.
    const { TOKEN_COMMANDS, TOKEN_HELP } = await import('./tokens.js');
    Object.assign(COMMANDS, TOKEN_COMMANDS);
    Object.assign(HELP, TOKEN_HELP);
  }
  if (group && (second === '--help' || second === '-h')) {
    print((HELP[group] ?? HELP.tracker) as string);
    return EXIT.OK;
  }
  const name = group && second ? `${group} ${second}` : (first ?? '');
  const rest = argv.slice(group ? 2 : 1);
  if (!first || first === '--help' || first === '-h' || first === 'help') {
    print(HELP.tracker as string);
    return first ? EXIT.OK : EXIT.USAGE;
  }
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (group && !command) {
    process.stderr.write(
      `tracker: ${second ? `unknown ${group} command "${printable(second)}"` : `${group} needs a command`}; see tracker --help\n`,
    );
    return EXIT.USAGE;
  }
  if (!command) {
    process.stderr.write(`tracker: unknown command "${printable(name)}"; see tracker --help\n`);
    return EXIT.USAGE;
  }
  // For `run`, only the options before `--` are ours; the command's own --help is its own.
  const own = rest.includes('--') ? rest.slice(0, rest.indexOf('--')) : rest;
  if (own.includes('--help') || own.includes('-h')) {
    print(HELP[name] as string);
    return EXIT.OK;
  }
  try {
    return await command(rest);
  } catch (error) {
    return fail(error);
  }
}

/** One line on stderr, never a stack trace, and the exit code for it. */
function fail(error: unknown): number {
  // Messages may quote user text (a holder's name): one printable line, whatever it holds.
  const line = (message: string) => process.stderr.write(`tracker: ${printable(message)}\n`);
  if (error instanceof UsageError) {
    line(`${error.message}; see --help`);
    return EXIT.USAGE;
  }
  if (error instanceof LockHeldError) {
    line(
      `${error.existingLock.service} is held by ${error.existingLock.who} (lock ${error.existingLock.id})${about(error.existingLock)}`,
    );
    return EXIT.HELD;
  }
  if (error instanceof WaitTimeoutError) {
    line(
      `timed out waiting: ${error.existingLock.service} is held by ${error.existingLock.who}${about(error.existingLock)}`,
    );
    return EXIT.WAIT_TIMEOUT;
  }
  if (error instanceof LimitMismatchError) {
    line(
      `${error.service} is held (or registered) with limit ${error.limit}: ask with --limit ${error.limit}`,
    );
    return EXIT.FAILURE;
  }
  if (error instanceof NoSuchLabelError) {
    line(`no registered resource carries the label ${error.label} (see tracker resource list)`);
    return EXIT.FAILURE;
  }
  if (error instanceof UnauthenticatedError) {
    line(`unauthenticated: ${error.message}${sentToken ? '' : ' (set TRACKER_TOKEN or pass --token)'}`);
    return EXIT.FAILURE;
  }
  if (error instanceof PermissionDeniedError) {
    line(`permission denied: ${error.message}`);
    return EXIT.FAILURE;
  }
  if (error instanceof RateLimitedError) {
    const after = error.retryAfterSeconds === null ? '' : ` (retry after ${error.retryAfterSeconds}s)`;
    line(`rate limited: ${error.message}${after}`);
    return EXIT.FAILURE;
  }
  if (error instanceof CommandError) {
    line(error.message);
    return EXIT.FAILURE;
  }
  if (error instanceof ServerUnreachableError || error instanceof TrackerApiError) {
    line(error.message);
    return EXIT.FAILURE;
  }
  line(`unexpected error: ${(error as Error).message ?? String(error)}`);
  return EXIT.FAILURE;
}

cli(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (error: unknown) => {
    process.exitCode = fail(error);
  },
);
