import { parseArgs } from 'node:util';
import { type TrustProxy, trustEntryProblem } from '../auth/client-address.js';
import { MAX_TTL_SECONDS } from '../core/lock.js';
import type { WatchLimits } from '../core/watchers.js';
import { parseDurationSeconds } from '../duration.js';

/** Where locks are kept, parsed from `--database-url` and the `--database-*` options. */
export type DatabaseConfig =
  | {
      readonly kind: 'sqlite';
      /** A file path, or ':memory:'. */
      readonly path: string;
      readonly synchronous: 'normal' | 'full';
    }
  | {
      readonly kind: 'postgres';
      /** The URL as given, password included: never log it, use `Config.databaseUrl`. */
      readonly url: string;
      readonly poolSize: number;
      readonly connectTimeoutMs: number;
      readonly poolTimeoutMs: number;
      readonly statementTimeoutMs: number;
      /** Schema for Tracker's tables; undefined means the server's search_path (public). */
      readonly schema: string | undefined;
      /**
       * `synchronous_commit` for Tracker's sessions; undefined (the default): the database's
       * own setting. An opt-in trade of durability for speed (see the README).
       */
      readonly synchronousCommit: SynchronousCommit | undefined;
    };

/** PostgreSQL's values of `synchronous_commit`. */
export const SYNCHRONOUS_COMMIT = ['on', 'off', 'local', 'remote_write', 'remote_apply'] as const;
export type SynchronousCommit = (typeof SYNCHRONOUS_COMMIT)[number];

export interface Config {
  readonly host: string;
  readonly httpPort: number;
  readonly grpcPort: number;
  readonly database: DatabaseConfig;
  /** The database URL with any password masked: the form to log and print. */
  readonly databaseUrl: string;
  readonly logLevel: LogLevel;
  /** TTL given to acquires that ask for none; null: such locks never expire (the guide's behaviour). */
  readonly defaultTtlSeconds: number | null;
  /** Longest TTL accepted; null: only the API's own limit (one year). */
  readonly maxTtlSeconds: number | null;
  /** How long the lock history keeps events, in seconds; null: forever. */
  readonly historyRetentionSeconds: number | null;
  /** How long an idempotency key is kept once its lock is gone, in seconds. */
  readonly idempotencyRetentionSeconds: number;
  /** The tokens file; null: authentication off (anyone who reaches the ports may do anything). */
  readonly authTokensFile: string | null;
  /**
   * The YAML (or JSON) file declaring registered resources, applied at start, on change and
   * on SIGHUP (see config/resources-file.ts); null: the registry is only what the API put.
   */
  readonly resourcesFile: string | null;
  /** TLS for REST and gRPC; null: plaintext. */
  readonly tls: { readonly cert: string; readonly key: string; readonly ca: string | null } | null;
  /** Requests per second per token (or per address without authentication); null: no limit. */
  readonly rateLimit: { readonly perSecond: number; readonly burst: number } | null;
  /** Failed authentications per second per client address; null: no limit. */
  readonly authFailureLimit: { readonly perSecond: number; readonly burst: number } | null;
  /** Which proxies may say who the client is (X-Forwarded-For); null: none, the socket's peer is. */
  readonly trustProxy: TrustProxy | null;
  readonly maxWaitersPerService: number;
  readonly maxWaiters: number;
  /** null: no limit. */
  readonly maxLocks: number | null;
  /** Longest a client may take to send a request's headers, and the whole request, in ms. */
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  /**
   * PostgreSQL: how often each replica re-reads the history for its watchers, in ms; only a
   * safety net, since every replica hears of new events through LISTEN/NOTIFY.
   */
  readonly watchPollMs: number;
  /** Webhooks may be delivered to loopback, link-local and metadata addresses (tests, one host). */
  readonly webhooksAllowPrivate: boolean;
  /**
   * Host names REST answers to besides IP addresses, `localhost`, --host and (beyond
   * loopback) this machine's name; `.example.com`: that domain and its subdomains. null: any
   * Host (`*`, no check).
   */
  readonly allowedHosts: readonly string[] | null;
  /** What watch streams may hold (open streams, bytes waiting). */
  readonly watchLimits: WatchLimits;
  /** What gRPC connections may hold. */
  readonly grpcLimits: GrpcConnectionLimits;
}

/** Limits of the gRPC ports' connections. */
export interface GrpcConnectionLimits {
  /** Longest a new connection may take to send its HTTP/2 preface and settings (and TLS handshake). */
  readonly handshakeTimeoutMs: number;
  /** A connection with no call in progress for this long is closed (GOAWAY). */
  readonly idleTimeoutMs: number;
  /** Most open connections, in total, and from one client address. */
  readonly maxConnections: number;
  readonly maxConnectionsPerAddress: number;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
type LogLevel = (typeof LOG_LEVELS)[number];

/** Every option: flag name, environment variable, default, and what it means. */
const OPTIONS = {
  host: { env: 'TRACKER_HOST', default: '127.0.0.1', help: 'address to listen on (REST and gRPC)' },
  'http-port': { env: 'TRACKER_HTTP_PORT', default: '8080', help: 'REST port; 0 picks a free one' },
  'grpc-port': { env: 'TRACKER_GRPC_PORT', default: '8765', help: 'gRPC port; 0 picks a free one' },
  'database-url': {
    env: 'TRACKER_DATABASE_URL',
    default: 'sqlite:./data/tracker.db',
    help:
      'sqlite:PATH (folder created), sqlite::memory: for a throwaway store (add ?synchronous=full to survive power cuts),\n' +
      '      or postgres://USER:PASSWORD@HOST:5432/DB (also postgresql://; ?sslmode= honoured) for several replicas',
  },
  'database-pool-size': {
    env: 'TRACKER_DATABASE_POOL_SIZE',
    default: '10',
    help: 'PostgreSQL: most connections each replica opens',
  },
  'database-connect-timeout': {
    env: 'TRACKER_DATABASE_CONNECT_TIMEOUT',
    default: '1500',
    help: 'PostgreSQL: ms to wait for a connection before answering 503',
  },
  'database-pool-timeout': {
    env: 'TRACKER_DATABASE_POOL_TIMEOUT',
    default: '10000',
    help: 'PostgreSQL: ms a request waits for a pooled connection while all are busy, then 503',
  },
  'database-statement-timeout': {
    env: 'TRACKER_DATABASE_STATEMENT_TIMEOUT',
    default: '1500',
    help: 'PostgreSQL: ms a statement may run before it is cancelled and the request answers 503',
  },
  'database-schema': {
    env: 'TRACKER_DATABASE_SCHEMA',
    default: '',
    help: "PostgreSQL: schema for Tracker's tables, created if missing (empty: the search_path, usually public)",
  },
  'database-synchronous-commit': {
    env: 'TRACKER_DATABASE_SYNCHRONOUS_COMMIT',
    default: '',
    help: `PostgreSQL: synchronous_commit for Tracker's sessions, ${SYNCHRONOUS_COMMIT.join('|')} (empty: the database's own; off trades the last commits on a database crash for speed)`,
  },
  'log-level': { env: 'TRACKER_LOG_LEVEL', default: 'info', help: LOG_LEVELS.join(', ') },
  'default-ttl': {
    env: 'TRACKER_DEFAULT_TTL',
    default: '',
    help: 'TTL for locks acquired without ttlSeconds, e.g. 90s, 30m, 1h30m or seconds (empty: they never expire)',
  },
  'max-ttl': {
    env: 'TRACKER_MAX_TTL',
    default: '',
    help: 'longest TTL accepted on acquire and renew (empty: one year)',
  },
  'history-retention': {
    env: 'TRACKER_HISTORY_RETENTION',
    default: '30d',
    help: 'how long the lock history keeps events, e.g. 30d, 12h (forever: never prune)',
  },
  'idempotency-retention': {
    env: 'TRACKER_IDEMPOTENCY_RETENTION',
    default: '24h',
    help: 'how long an Idempotency-Key is kept after its lock is gone (at least 1h: the longest wait)',
  },
  'auth-tokens-file': {
    env: 'TRACKER_AUTH_TOKENS_FILE',
    default: '',
    help: 'JSON or YAML file of token hashes (tracker token create); every call then needs a bearer token',
  },
  'resources-file': {
    env: 'TRACKER_RESOURCES_FILE',
    default: '',
    help:
      'YAML file declaring resources (name, labels, properties, capacity, description), applied at start,\n' +
      '      when it changes and on SIGHUP (empty: only the API registers resources)',
  },
  'tls-cert': {
    env: 'TRACKER_TLS_CERT',
    default: '',
    help: 'PEM certificate (chain): serve HTTPS and gRPC over TLS',
  },
  'tls-key': { env: 'TRACKER_TLS_KEY', default: '', help: 'PEM private key of --tls-cert' },
  'tls-ca': {
    env: 'TRACKER_TLS_CA',
    default: '',
    help: 'PEM CA bundle: require client certificates it signed (mutual TLS)',
  },
  'rate-limit': {
    env: 'TRACKER_RATE_LIMIT',
    default: '0',
    help: 'requests per token (or per address without auth) and replica, e.g. 50/s or 600/m; 0: no limit',
  },
  'rate-limit-burst': {
    env: 'TRACKER_RATE_LIMIT_BURST',
    default: '',
    help: 'requests allowed at once above the rate (empty: two seconds worth)',
  },
  'auth-failure-limit': {
    env: 'TRACKER_AUTH_FAILURE_LIMIT',
    default: '1/s',
    help:
      'failed authentications per client address and replica, e.g. 1/s or 30/m; past them and the burst,\n' +
      '      every request from the address answers 429 until it refills (0: no limit)',
  },
  'auth-failure-burst': {
    env: 'TRACKER_AUTH_FAILURE_BURST',
    default: '20',
    help: 'failed authentications a client address may make at once',
  },
  'webhooks-allow-private': {
    env: 'TRACKER_WEBHOOKS_ALLOW_PRIVATE',
    default: 'false',
    help:
      'a flag: webhooks may deliver to loopback, link-local and cloud metadata addresses (refused\n' +
      '      otherwise, at PUT and at each delivery; private networks such as 10.0.0.0/8 are always allowed)',
  },
  'trust-proxy': {
    env: 'TRACKER_TRUST_PROXY',
    default: '',
    help:
      'proxies trusted to name the client in X-Forwarded-For: a number of hops (true: 1), or addresses\n' +
      '      and CIDR ranges (10.0.0.0/8,loopback); the client is the rightmost untrusted hop (empty: none)',
  },
  'max-waiters-per-service': {
    env: 'TRACKER_MAX_WAITERS_PER_SERVICE',
    default: '1000',
    help: 'most requests one service queue takes; more answer 429 QUEUE_FULL',
  },
  'max-waiters': {
    env: 'TRACKER_MAX_WAITERS',
    default: '10000',
    help: 'most requests one replica lets wait at once, over all services; more answer 429 QUEUE_FULL',
  },
  'max-locks': {
    env: 'TRACKER_MAX_LOCKS',
    default: '1000000',
    help: 'most held locks in the store; more answer 429 TOO_MANY_LOCKS (0: no limit)',
  },
  'max-watchers': {
    env: 'TRACKER_MAX_WATCHERS',
    default: '1000',
    help: 'most watch streams (SSE and gRPC) one replica keeps open; more answer 429 TOO_MANY_WATCHERS',
  },
  'max-watchers-per-token': {
    env: 'TRACKER_MAX_WATCHERS_PER_TOKEN',
    default: '100',
    help: 'most watch streams of one token (of one client address without authentication)',
  },
  'max-watcher-buffer': {
    env: 'TRACKER_MAX_WATCHER_BUFFER',
    default: '4MiB',
    help: 'most bytes waiting for one slow watch stream; past it the stream ends with WATCHER_TOO_SLOW',
  },
  'max-watchers-buffer': {
    env: 'TRACKER_MAX_WATCHERS_BUFFER',
    default: '64MiB',
    help: 'most bytes waiting for all watch streams; past it the one with most waiting ends',
  },
  'grpc-handshake-timeout': {
    env: 'TRACKER_GRPC_HANDSHAKE_TIMEOUT',
    default: '10s',
    help: 'longest a new gRPC connection may take to complete its TLS and HTTP/2 handshake',
  },
  'grpc-idle-timeout': {
    env: 'TRACKER_GRPC_IDLE_TIMEOUT',
    default: '5m',
    help: 'a gRPC connection with no call for this long is closed',
  },
  'max-grpc-connections': {
    env: 'TRACKER_MAX_GRPC_CONNECTIONS',
    default: '10000',
    help: 'most open gRPC connections; more are refused (logged, counted in metrics)',
  },
  'max-grpc-connections-per-address': {
    env: 'TRACKER_MAX_GRPC_CONNECTIONS_PER_ADDRESS',
    default: '100',
    help: 'most open gRPC connections from one client address',
  },
  'headers-timeout': {
    env: 'TRACKER_HEADERS_TIMEOUT',
    default: '10s',
    help: 'longest a client may take to send request headers before its connection is closed',
  },
  'request-timeout': {
    env: 'TRACKER_REQUEST_TIMEOUT',
    default: '30s',
    help: 'longest a client may take to send a whole request (not the wait for a lock)',
  },
  'watch-poll': {
    env: 'TRACKER_WATCH_POLL',
    default: '1s',
    help: 'PostgreSQL: how often each replica re-reads the history for its watchers, a safety net behind NOTIFY',
  },
  'allowed-host': {
    env: 'TRACKER_ALLOWED_HOSTS',
    default: '',
    help:
      'a host name REST also answers to (Host header), e.g. tracker or .example.com (the domain and its\n' +
      '      subdomains); repeat the flag or separate with commas; * answers to any (empty: IP addresses,\n' +
      "      localhost, --host and, beyond loopback, this machine's name)",
  },
} as const;

type OptionName = keyof typeof OPTIONS;

/** Options that may be given several times; their values add up. */
const REPEATABLE: ReadonlySet<OptionName> = new Set(['allowed-host']);
/** Flags that take no value (their environment variable: true or false). */
const FLAGS: ReadonlySet<OptionName> = new Set(['webhooks-allow-private']);

/** A bad flag or value: the message is the one line printed before exiting with status 2. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export type ConfigResult = { readonly help: true } | { readonly help: false; readonly config: Config };

/**
 * Flag > environment > default, validated once. Takes argv (without node and the script)
 * and the environment as parameters so tests need no globals.
 */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv): ConfigResult {
  let parsed: ReturnType<typeof parseFlags>;
  try {
    parsed = parseFlags(argv);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
  if (parsed.values.help) return { help: true };
  if (parsed.positionals.length > 0) throw new ConfigError(`unexpected argument: ${parsed.positionals[0]}`);

  const pick = (name: OptionName): { value: string; source: string } => {
    const flag = parsed.values[name];
    if (typeof flag === 'string') return { value: flag, source: `--${name}` };
    if (flag === true) return { value: 'true', source: `--${name}` };
    if (Array.isArray(flag) && flag.length > 0) return { value: flag.join(','), source: `--${name}` };
    const fromEnv = env[OPTIONS[name].env];
    if (fromEnv !== undefined && fromEnv !== '') return { value: fromEnv, source: OPTIONS[name].env };
    // A URL may hold a password: messages name where it came from, never echo it whole.
    return { value: OPTIONS[name].default, source: `--${name} default` };
  };

  const databaseUrl = pick('database-url');
  const database = databaseUrl.value.startsWith('sqlite:')
    ? parseSqliteUrl(databaseUrl)
    : parsePostgresUrl(databaseUrl, {
        poolSize: parseInteger(pick('database-pool-size'), 1, 1000),
        connectTimeoutMs: parseInteger(pick('database-connect-timeout'), 1, 600_000),
        poolTimeoutMs: parseInteger(pick('database-pool-timeout'), 1, 600_000),
        statementTimeoutMs: parseInteger(pick('database-statement-timeout'), 1, 600_000),
        schema: parseSchema(pick('database-schema')),
        synchronousCommit: parseSynchronousCommit(pick('database-synchronous-commit')),
      });
  const defaultTtlSeconds = parseTtl(pick('default-ttl'));
  const maxTtlSeconds = parseTtl(pick('max-ttl'));
  if (defaultTtlSeconds !== null && maxTtlSeconds !== null && defaultTtlSeconds > maxTtlSeconds) {
    throw new ConfigError(
      `--default-ttl (${defaultTtlSeconds}s) is longer than --max-ttl (${maxTtlSeconds}s)`,
    );
  }
  return {
    help: false,
    config: {
      host: parseHost(pick('host')),
      httpPort: parsePort(pick('http-port')),
      grpcPort: parsePort(pick('grpc-port')),
      database,
      databaseUrl: maskPassword(databaseUrl.value),
      logLevel: parseLogLevel(pick('log-level')),
      defaultTtlSeconds,
      maxTtlSeconds,
      historyRetentionSeconds: parseRetention(pick('history-retention')),
      idempotencyRetentionSeconds: parseKeyRetention(pick('idempotency-retention')),
      authTokensFile: pick('auth-tokens-file').value || null,
      resourcesFile: pick('resources-file').value || null,
      tls: parseTls(pick('tls-cert'), pick('tls-key'), pick('tls-ca')),
      rateLimit: parseRateLimit(pick('rate-limit'), pick('rate-limit-burst')),
      authFailureLimit: parseFailureLimit(pick('auth-failure-limit'), pick('auth-failure-burst')),
      trustProxy: parseTrustProxy(pick('trust-proxy')),
      maxWaitersPerService: parseInteger(pick('max-waiters-per-service'), 1, 1_000_000),
      maxWaiters: parseInteger(pick('max-waiters'), 1, 1_000_000),
      maxLocks: parseInteger(pick('max-locks'), 0, 1_000_000_000) || null,
      headersTimeoutMs: parseTimeoutMs(pick('headers-timeout')),
      requestTimeoutMs: parseTimeoutMs(pick('request-timeout')),
      watchPollMs: parseTimeoutMs(pick('watch-poll')),
      webhooksAllowPrivate: parseBoolean(pick('webhooks-allow-private')),
      watchLimits: {
        maxWatchers: parseInteger(pick('max-watchers'), 1, 1_000_000),
        maxWatchersPerCaller: parseInteger(pick('max-watchers-per-token'), 1, 1_000_000),
        maxBufferedBytes: parseBytes(pick('max-watcher-buffer'), 64 * 1024),
        maxTotalBufferedBytes: parseBytes(pick('max-watchers-buffer'), 64 * 1024),
      },
      grpcLimits: {
        handshakeTimeoutMs: parseTimeoutMs(pick('grpc-handshake-timeout')),
        idleTimeoutMs: parseTimeoutMs(pick('grpc-idle-timeout')),
        maxConnections: parseInteger(pick('max-grpc-connections'), 1, 1_000_000),
        maxConnectionsPerAddress: parseInteger(pick('max-grpc-connections-per-address'), 1, 1_000_000),
      },
      allowedHosts: parseAllowedHosts(pick('allowed-host')),
    },
  };
}

function parseBoolean(setting: Setting): boolean {
  if (setting.value === 'true' || setting.value === '1') return true;
  if (setting.value === 'false' || setting.value === '0' || setting.value === '') return false;
  throw new ConfigError(`${setting.source}: must be true or false, not ${setting.value}`);
}

function parseTls(cert: Setting, key: Setting, ca: Setting): Config['tls'] {
  if (cert.value === '' && key.value === '') {
    if (ca.value !== '') throw new ConfigError(`${ca.source}: needs --tls-cert and --tls-key`);
    return null;
  }
  if (cert.value === '' || key.value === '') {
    throw new ConfigError('--tls-cert and --tls-key go together: give both or neither');
  }
  return { cert: cert.value, key: key.value, ca: ca.value || null };
}

function parseRateLimit({ value, source }: Setting, burst: Setting): Config['rateLimit'] {
  if (value === '0' || value === '') return null;
  const match = /^(\d{1,7})\/(s|m|h)$/.exec(value);
  if (!match || Number(match[1]) === 0) {
    throw new ConfigError(`${source}: "${value}" is not a rate such as 50/s, 600/m or 1000/h (0: no limit)`);
  }
  const perSecond = Number(match[1]) / { s: 1, m: 60, h: 3600 }[match[2] as 's' | 'm' | 'h'];
  const burstValue =
    burst.value === '' ? Math.max(1, Math.ceil(perSecond * 2)) : parseInteger(burst, 1, 10_000_000);
  return { perSecond, burst: burstValue };
}

/** `4MiB`, `512KiB`, `1GiB` or a number of bytes, at least `min`. */
function parseBytes({ value, source }: Setting, min: number): number {
  const match = /^(\d{1,12})\s*(B|KiB|MiB|GiB)?$/.exec(value.trim());
  const unit = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[(match?.[2] ?? 'B') as 'B'];
  const bytes = match ? Number(match[1]) * unit : Number.NaN;
  if (!Number.isSafeInteger(bytes) || bytes < min) {
    throw new ConfigError(
      `${source}: "${value}" is not a size of at least ${min} bytes such as 4MiB, 512KiB or 1GiB`,
    );
  }
  return bytes;
}

/** A host name, or `.domain` for it and its subdomains; an IPv6 address in brackets. */
const ALLOWED_HOST =
  /^(\.?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*|\[[0-9a-f:.]+\])$/;

function parseAllowedHosts({ value, source }: Setting): readonly string[] | null {
  const names = value
    .split(/[\s,]+/)
    .map((name) => name.trim().toLowerCase().replace(/\.$/, ''))
    .filter((name) => name !== '');
  if (names.includes('*')) return null;
  for (const name of names) {
    if (!ALLOWED_HOST.test(name) || name.length > 253) {
      throw new ConfigError(
        `${source}: "${name}" is not a host name (tracker, tracker.example.com, .example.com for a domain ` +
          'and its subdomains, or * for any; no scheme, port or path)',
      );
    }
  }
  return names;
}

function parseFailureLimit(rate: Setting, burst: Setting): Config['authFailureLimit'] {
  const limit = parseRateLimit(rate, { value: '', source: '' });
  return limit && { perSecond: limit.perSecond, burst: parseInteger(burst, 1, 1_000_000) };
}

/**
 * `false`, `0` or empty: no proxy is trusted. `true` or a number n: the n nearest hops (true:
 * one) are proxies. Otherwise a comma-separated list of IP addresses, CIDR ranges and
 * `loopback`: hops from those addresses are proxies.
 */
function parseTrustProxy({ value, source }: Setting): TrustProxy | null {
  if (value === '' || value === 'false' || value === '0') return null;
  if (value === 'true') return { hops: 1 };
  if (/^\d+$/.test(value)) return { hops: parseInteger({ value, source }, 1, 100) };
  const addresses = value.split(',').map((entry) => entry.trim());
  for (const entry of addresses) {
    const problem = trustEntryProblem(entry);
    if (problem) {
      throw new ConfigError(
        `${source}: ${problem}; give a number of proxy hops, or IP addresses, CIDR ranges and loopback, comma-separated`,
      );
    }
  }
  return { addresses };
}

function parseTimeoutMs({ value, source }: Setting): number {
  const seconds = parseDurationSeconds(value);
  if (seconds === null || seconds < 1 || seconds > 3600) {
    throw new ConfigError(`${source}: "${value}" is not a duration from 1s to 1h`);
  }
  return seconds * 1000;
}

function parseFlags(argv: readonly string[]) {
  const options = Object.fromEntries(
    Object.keys(OPTIONS).map((name) => [
      name,
      FLAGS.has(name as OptionName)
        ? { type: 'boolean' as const }
        : { type: 'string' as const, multiple: REPEATABLE.has(name as OptionName) },
    ]),
  ) as Record<OptionName, { type: 'string'; multiple: boolean } | { type: 'boolean' }>;
  return parseArgs({
    args: [...argv],
    options: { ...options, help: { type: 'boolean', short: 'h' } },
    strict: true,
    allowPositionals: true,
  });
}

export function helpText(program = 'tracker'): string {
  const rows = Object.entries(OPTIONS).map(
    ([name, option]) =>
      `  --${name.padEnd(14)} ${option.env.padEnd(22)} default: ${option.default}\n      ${option.help}`,
  );
  return [
    `Usage: ${program} [options]`,
    '',
    'Serves the Tracker lock API over REST and gRPC.',
    'Each option can also be set by its environment variable; a flag wins over the environment.',
    '',
    '  flag             environment variable',
    ...rows,
    '  --help, -h       print this help and exit',
    '',
  ].join('\n');
}

function parseHost({ value, source }: { value: string; source: string }): string {
  if (!/^[A-Za-z0-9.:_-]+$/.test(value) && !/^\[[0-9a-fA-F:.]+\]$/.test(value)) {
    throw new ConfigError(`${source}: "${value}" is not a host name or IP address`);
  }
  return value.startsWith('[') ? value.slice(1, -1) : value;
}

function parsePort({ value, source }: { value: string; source: string }): number {
  const port = /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN;
  if (!(port >= 0 && port <= 65535)) {
    throw new ConfigError(`${source}: "${value}" is not a port number (0 to 65535)`);
  }
  return port;
}

function parseLogLevel({ value, source }: { value: string; source: string }): LogLevel {
  const level = LOG_LEVELS.find((candidate) => candidate === value);
  if (!level) throw new ConfigError(`${source}: "${value}" is not one of ${LOG_LEVELS.join(', ')}`);
  return level;
}

type Setting = { value: string; source: string };

function parseSynchronousCommit({ value, source }: Setting): SynchronousCommit | undefined {
  if (value === '') return undefined;
  const setting = SYNCHRONOUS_COMMIT.find((candidate) => candidate === value);
  if (!setting) throw new ConfigError(`${source}: "${value}" is not one of ${SYNCHRONOUS_COMMIT.join(', ')}`);
  return setting;
}

function parseSqliteUrl({ value, source }: Setting): DatabaseConfig {
  const [rest = '', query = ''] = value.slice('sqlite:'.length).split('?', 2);
  const path = rest.startsWith('//') ? rest.slice(2) : rest;
  if (path === '')
    throw new ConfigError(`${source}: "${value}" names no file; use sqlite:PATH or sqlite::memory:`);
  let synchronous: 'normal' | 'full' = 'normal';
  for (const [key, setting] of new URLSearchParams(query)) {
    if (key === 'synchronous' && (setting === 'normal' || setting === 'full')) synchronous = setting;
    else
      throw new ConfigError(
        `${source}: unknown or invalid parameter "${key}=${setting}"; only synchronous=normal|full`,
      );
  }
  return { kind: 'sqlite', path, synchronous };
}

function parsePostgresUrl(
  { value, source }: Setting,
  settings: {
    poolSize: number;
    connectTimeoutMs: number;
    poolTimeoutMs: number;
    statementTimeoutMs: number;
    schema: string | undefined;
    synchronousCommit: SynchronousCommit | undefined;
  },
): DatabaseConfig {
  const masked = maskPassword(value);
  if (!/^postgres(ql)?:\/\//.test(value)) {
    throw new ConfigError(
      `${source}: "${masked}" is not supported; use sqlite:PATH, sqlite::memory: or postgres://USER@HOST:PORT/DB`,
    );
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${source}: "${masked}" is not a valid URL`);
  }
  if (url.hostname === '' && !url.searchParams.has('host')) {
    throw new ConfigError(`${source}: "${masked}" names no host`);
  }
  return { kind: 'postgres', url: value, ...settings };
}

/** `postgres://user:secret@host/db` → `postgres://user:***@host/db`; other strings unchanged. */
export function maskPassword(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:/@]*:)[^@/]*@/i, '$1***@');
}

function parseInteger({ value, source }: Setting, min: number, max: number): number {
  const number = /^\d{1,9}$/.test(value) ? Number(value) : Number.NaN;
  if (!(number >= min && number <= max)) {
    throw new ConfigError(`${source}: "${value}" is not an integer from ${min} to ${max}`);
  }
  return number;
}

function parseTtl({ value, source }: Setting): number | null {
  if (value === '') return null;
  const seconds = parseDurationSeconds(value);
  if (seconds === null || seconds < 1 || seconds > MAX_TTL_SECONDS) {
    throw new ConfigError(`${source}: "${value}" is not a duration from 1s to 365d (e.g. 90s, 30m, 1h30m)`);
  }
  return seconds;
}

function parseRetention({ value, source }: Setting): number | null {
  if (value === 'forever') return null;
  const seconds = parseDurationSeconds(value);
  // Up to about 100 years: beyond that the ms cutoff leaves the range a Date can hold.
  if (seconds === null || seconds < 1 || seconds > 3_650_000_000) {
    throw new ConfigError(`${source}: "${value}" is not a duration (e.g. 30d, 12h) or "forever"`);
  }
  return seconds;
}

/** At least the longest wait (a key must outlive its waiting request), at most about 100 years. */
function parseKeyRetention({ value, source }: Setting): number {
  const seconds = parseDurationSeconds(value);
  if (seconds === null || seconds < 3600 || seconds > 3_650_000_000) {
    throw new ConfigError(`${source}: "${value}" is not a duration of at least 1h (e.g. 24h, 7d)`);
  }
  return seconds;
}

function parseSchema({ value, source }: Setting): string | undefined {
  if (value === '') return undefined;
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(value)) {
    throw new ConfigError(`${source}: "${value}" is not a lower-case SQL identifier (a-z, 0-9, _)`);
  }
  return value;
}
