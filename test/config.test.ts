import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, helpText, loadConfig } from '../src/config/load-config.js';

function config(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const result = loadConfig(argv, env);
  assert.equal(result.help, false);
  assert.ok(!result.help);
  return result.config;
}

describe('loadConfig', () => {
  test('defaults', () => {
    assert.deepEqual(config([]), {
      host: '127.0.0.1',
      httpPort: 8080,
      grpcPort: 8765,
      database: { kind: 'sqlite', path: './data/tracker.db', synchronous: 'normal' },
      databaseUrl: 'sqlite:./data/tracker.db',
      logLevel: 'info',
      defaultTtlSeconds: null,
      maxTtlSeconds: null,
      historyRetentionSeconds: 30 * 86_400,
      idempotencyRetentionSeconds: 86_400,
      authTokensFile: null,
      resourcesFile: null,
      tls: null,
      rateLimit: null,
      authFailureLimit: { perSecond: 1, burst: 20 },
      trustProxy: null,
      maxWaitersPerService: 1000,
      maxWaiters: 10000,
      maxLocks: 1_000_000,
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      watchPollMs: 1000,
      webhooksAllowPrivate: false,
      allowedHosts: [],
      watchLimits: {
        maxWatchers: 1000,
        maxWatchersPerCaller: 100,
        maxBufferedBytes: 4 * 1024 * 1024,
        maxTotalBufferedBytes: 64 * 1024 * 1024,
      },
      grpcLimits: {
        handshakeTimeoutMs: 10_000,
        idleTimeoutMs: 300_000,
        maxConnections: 10_000,
        maxConnectionsPerAddress: 100,
      },
    });
  });

  test('limits of watchers and gRPC connections: sizes with units, durations', () => {
    assert.equal(config(['--max-watcher-buffer', '512KiB']).watchLimits.maxBufferedBytes, 512 * 1024);
    assert.equal(config(['--max-watchers-buffer', '1GiB']).watchLimits.maxTotalBufferedBytes, 1024 ** 3);
    assert.equal(config(['--max-watcher-buffer', '100000']).watchLimits.maxBufferedBytes, 100_000);
    assert.equal(config([], { TRACKER_MAX_WATCHERS_PER_TOKEN: '3' }).watchLimits.maxWatchersPerCaller, 3);
    assert.equal(config(['--grpc-idle-timeout', '30s']).grpcLimits.idleTimeoutMs, 30_000);
    assert.equal(config(['--max-grpc-connections-per-address', '7']).grpcLimits.maxConnectionsPerAddress, 7);
    for (const [flag, value] of [
      ['--max-watcher-buffer', '4MB'],
      ['--max-watcher-buffer', '1KiB'],
      ['--max-watchers', '0'],
      ['--grpc-handshake-timeout', '0s'],
      ['--max-grpc-connections', 'lots'],
    ] as const) {
      assert.throws(() => config([flag, value]), new RegExp(flag.slice(2)), `${flag} ${value}`);
    }
  });

  test('--allowed-host: repeatable, commas, the environment, domains, and * for any', () => {
    assert.deepEqual(
      config(['--allowed-host', 'tracker', '--allowed-host', 'Tracker.Example.com.,.corp.example'])
        .allowedHosts,
      ['tracker', 'tracker.example.com', '.corp.example'],
    );
    assert.deepEqual(config([], { TRACKER_ALLOWED_HOSTS: 'tracker, tracker.default.svc' }).allowedHosts, [
      'tracker',
      'tracker.default.svc',
    ]);
    assert.deepEqual(
      config(['--allowed-host', 'flag'], { TRACKER_ALLOWED_HOSTS: 'env' }).allowedHosts,
      ['flag'],
      'the flag wins over the environment',
    );
    assert.equal(config(['--allowed-host', '*']).allowedHosts, null);
    assert.equal(config([], { TRACKER_ALLOWED_HOSTS: '*' }).allowedHosts, null);
    assert.deepEqual(config(['--allowed-host', '[::1]']).allowedHosts, ['[::1]']);
    assert.ok(helpText().includes('--allowed-host'));
    assert.ok(helpText().includes('TRACKER_ALLOWED_HOSTS'));
  });

  test('authentication, TLS and limits: flags, pairs that go together, and refusals', () => {
    const tls = config(['--tls-cert', 'c.pem', '--tls-key', 'k.pem', '--tls-ca', 'ca.pem']).tls;
    assert.deepEqual(tls, { cert: 'c.pem', key: 'k.pem', ca: 'ca.pem' });
    assert.equal(config(['--auth-tokens-file', 't.yaml']).authTokensFile, 't.yaml');
    assert.equal(config(['--resources-file', 'r.yaml']).resourcesFile, 'r.yaml');
    assert.equal(config([], { TRACKER_RESOURCES_FILE: 'env.yaml' }).resourcesFile, 'env.yaml');
    assert.equal(
      config(['--resources-file', 'flag.yaml'], { TRACKER_RESOURCES_FILE: 'env.yaml' }).resourcesFile,
      'flag.yaml',
    );
    assert.ok(helpText().includes('TRACKER_RESOURCES_FILE'));
    assert.deepEqual(config(['--rate-limit', '50/s']).rateLimit, { perSecond: 50, burst: 100 });
    assert.deepEqual(config(['--rate-limit', '600/m', '--rate-limit-burst', '5']).rateLimit, {
      perSecond: 10,
      burst: 5,
    });
    assert.equal(config(['--max-locks', '0']).maxLocks, null);
    assert.equal(config([], { TRACKER_MAX_WAITERS_PER_SERVICE: '5' }).maxWaitersPerService, 5);
    assert.equal(config(['--headers-timeout', '2s']).headersTimeoutMs, 2000);
    assert.equal(config(['--watch-poll', '1m']).watchPollMs, 60_000);
    for (const [argv, pattern] of [
      [['--tls-cert', 'c.pem'], /--tls-cert and --tls-key go together/],
      [['--tls-ca', 'ca.pem'], /needs --tls-cert and --tls-key/],
      [['--rate-limit', 'fast'], /not a rate such as 50\/s/],
      [['--rate-limit', '0/s'], /not a rate/],
      [['--max-waiters-per-service', '0'], /max-waiters-per-service/],
      [['--request-timeout', '0'], /not a duration from 1s to 1h/],
      [['--watch-poll', '0'], /not a duration from 1s to 1h/],
    ] as const) {
      assert.throws(
        () => config([...argv]),
        (error: Error) => error instanceof ConfigError && pattern.test(error.message),
      );
    }
  });

  test('failed authentications per address, and the proxies trusted to name the client', () => {
    assert.deepEqual(config(['--auth-failure-limit', '30/m', '--auth-failure-burst', '5']).authFailureLimit, {
      perSecond: 0.5,
      burst: 5,
    });
    assert.equal(config([], { TRACKER_AUTH_FAILURE_LIMIT: '0' }).authFailureLimit, null);
    for (const off of ['', 'false', '0']) assert.equal(config(['--trust-proxy', off]).trustProxy, null, off);
    assert.deepEqual(config(['--trust-proxy', 'true']).trustProxy, { hops: 1 });
    assert.deepEqual(config([], { TRACKER_TRUST_PROXY: '2' }).trustProxy, { hops: 2 });
    assert.deepEqual(config(['--trust-proxy', '10.0.0.0/8, 192.168.1.7,loopback,fd00::/8']).trustProxy, {
      addresses: ['10.0.0.0/8', '192.168.1.7', 'loopback', 'fd00::/8'],
    });
    for (const [argv, pattern] of [
      [['--auth-failure-limit', 'many'], /auth-failure-limit: "many" is not a rate/],
      [['--auth-failure-burst', '0'], /auth-failure-burst/],
      [
        ['--trust-proxy', 'proxy.internal'],
        /--trust-proxy: "proxy.internal" is not an IP address or CIDR range/,
      ],
      [['--trust-proxy', '10.0.0.0/33'], /"10.0.0.0\/33" has a bad prefix length/],
      [['--trust-proxy', '101'], /not an integer from 1 to 100/],
    ] as const) {
      assert.throws(
        () => config([...argv]),
        (error: Error) => error instanceof ConfigError && pattern.test(error.message),
        argv.join(' '),
      );
    }
  });

  test('history retention: a duration, or forever; anything else is refused', () => {
    assert.equal(config(['--history-retention', '12h']).historyRetentionSeconds, 12 * 3600);
    assert.equal(config(['--idempotency-retention', '2d']).idempotencyRetentionSeconds, 2 * 86_400);
    assert.equal(config([], { TRACKER_IDEMPOTENCY_RETENTION: '3h' }).idempotencyRetentionSeconds, 3 * 3600);
    // A key must outlive the longest wait (an hour).
    assert.throws(() => config(['--idempotency-retention', '59m']), /at least 1h/);
    assert.equal(config([], { TRACKER_HISTORY_RETENTION: '7d' }).historyRetentionSeconds, 7 * 86_400);
    assert.equal(config(['--history-retention', 'forever']).historyRetentionSeconds, null);
    for (const bad of ['0', '1w', 'soon', '1y']) {
      assert.throws(
        () => config(['--history-retention', bad]),
        (error: Error) => /history-retention.*not a duration/.test(error.message),
        bad,
      );
    }
  });

  test('environment over default, flag over environment', () => {
    const env = {
      TRACKER_HOST: '0.0.0.0',
      TRACKER_HTTP_PORT: '9000',
      TRACKER_GRPC_PORT: '9001',
      TRACKER_DATABASE_URL: 'sqlite::memory:',
      TRACKER_LOG_LEVEL: 'warn',
    };
    const fromEnv = config([], env);
    assert.equal(fromEnv.host, '0.0.0.0');
    assert.equal(fromEnv.httpPort, 9000);
    assert.equal(fromEnv.grpcPort, 9001);
    assert.deepEqual(fromEnv.database, { kind: 'sqlite', path: ':memory:', synchronous: 'normal' });
    assert.equal(fromEnv.logLevel, 'warn');
    const fromFlags = config(
      [
        '--host',
        '::1',
        '--http-port=0',
        '--grpc-port',
        '0',
        '--database-url',
        'sqlite:/tmp/x.db',
        '--log-level',
        'debug',
      ],
      env,
    );
    assert.equal(fromFlags.host, '::1');
    assert.equal(fromFlags.httpPort, 0);
    assert.equal(fromFlags.grpcPort, 0);
    assert.deepEqual(fromFlags.database, { kind: 'sqlite', path: '/tmp/x.db', synchronous: 'normal' });
    assert.equal(fromFlags.logLevel, 'debug');
  });

  test('an empty environment variable counts as unset', () => {
    assert.equal(config([], { TRACKER_HTTP_PORT: '' }).httpPort, 8080);
  });

  test('sqlite URL forms and synchronous=full', () => {
    const sqlite = (url: string) => config(['--database-url', url]).database;
    assert.deepEqual(sqlite('sqlite:///var/lib/tracker.db'), {
      kind: 'sqlite',
      path: '/var/lib/tracker.db',
      synchronous: 'normal',
    });
    assert.deepEqual(sqlite('sqlite://rel/t.db'), {
      kind: 'sqlite',
      path: 'rel/t.db',
      synchronous: 'normal',
    });
    assert.deepEqual(sqlite('sqlite:t.db?synchronous=full'), {
      kind: 'sqlite',
      path: 't.db',
      synchronous: 'full',
    });
  });

  test('postgres URLs select the PostgreSQL store with pool and timeout settings', () => {
    const url = 'postgres://tracker:s3cret@db.internal:5432/locks?sslmode=require';
    const defaults = config(['--database-url', url]);
    assert.deepEqual(defaults.database, {
      kind: 'postgres',
      url,
      poolSize: 10,
      connectTimeoutMs: 1500,
      poolTimeoutMs: 10_000,
      statementTimeoutMs: 1500,
      schema: undefined,
      synchronousCommit: undefined,
    });
    assert.equal(defaults.databaseUrl, 'postgres://tracker:***@db.internal:5432/locks?sslmode=require');
    const tuned = config(
      ['--database-url', 'postgresql://u@h/db', '--database-pool-size', '25', '--database-schema', 'tracker'],
      {
        TRACKER_DATABASE_CONNECT_TIMEOUT: '500',
        TRACKER_DATABASE_POOL_TIMEOUT: '3000',
        TRACKER_DATABASE_STATEMENT_TIMEOUT: '750',
      },
    );
    assert.deepEqual(tuned.database, {
      kind: 'postgres',
      url: 'postgresql://u@h/db',
      poolSize: 25,
      connectTimeoutMs: 500,
      poolTimeoutMs: 3000,
      statementTimeoutMs: 750,
      schema: 'tracker',
      synchronousCommit: undefined,
    });
    const relaxed = config(['--database-url', 'postgres://h/db', '--database-synchronous-commit', 'off']);
    assert.equal(relaxed.database.kind === 'postgres' && relaxed.database.synchronousCommit, 'off');
    const fromEnv = config(['--database-url', 'postgres://h/db'], {
      TRACKER_DATABASE_SYNCHRONOUS_COMMIT: 'local',
    });
    assert.equal(fromEnv.database.kind === 'postgres' && fromEnv.database.synchronousCommit, 'local');
    assert.equal(tuned.databaseUrl, 'postgresql://u@h/db');
  });

  test('--default-ttl and --max-ttl take durations or seconds', () => {
    const ttl = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
      const { defaultTtlSeconds, maxTtlSeconds } = config(argv, env);
      return [defaultTtlSeconds, maxTtlSeconds];
    };
    assert.deepEqual(ttl(['--default-ttl', '90s', '--max-ttl', '1h30m']), [90, 5400]);
    assert.deepEqual(ttl(['--default-ttl', '600']), [600, null]);
    assert.deepEqual(ttl([], { TRACKER_MAX_TTL: '2d' }), [null, 172_800]);
    assert.deepEqual(ttl(['--default-ttl', '30m', '--max-ttl', '30m']), [1800, 1800]);
  });

  test('--help and -h ask for help', () => {
    assert.deepEqual(loadConfig(['--help'], {}), { help: true });
    assert.deepEqual(loadConfig(['-h'], {}), { help: true });
    const text = helpText();
    for (const needle of [
      '--host',
      'TRACKER_HOST',
      'default: 127.0.0.1',
      '--http-port',
      'TRACKER_HTTP_PORT',
      'default: 8080',
      '--grpc-port',
      'default: 8765',
      '--database-url',
      'default: sqlite:./data/tracker.db',
      'sqlite::memory:',
      '--log-level',
      'default: info',
    ]) {
      assert.ok(text.includes(needle), `help mentions ${needle}`);
    }
  });

  const bad: Array<[string, string[], NodeJS.ProcessEnv, RegExp]> = [
    ['port not a number', ['--http-port', 'eighty'], {}, /--http-port: "eighty" is not a port number/],
    ['port too big', ['--grpc-port', '70000'], {}, /--grpc-port: "70000" is not a port number/],
    [
      'negative port from env',
      [],
      { TRACKER_HTTP_PORT: '-1' },
      /TRACKER_HTTP_PORT: "-1" is not a port number/,
    ],
    ['unknown log level', ['--log-level', 'loud'], {}, /"loud" is not one of fatal, error/],
    [
      'unknown log level from env',
      [],
      { TRACKER_LOG_LEVEL: 'shouty' },
      /^TRACKER_LOG_LEVEL: "shouty" is not one of fatal, error/,
    ],
    ['unsupported database', ['--database-url', 'mysql://x'], {}, /not supported; use sqlite:PATH/],
    [
      'unsupported database, password masked',
      ['--database-url', 'mysql://u:hunter2@x/db'],
      {},
      /^--database-url: "mysql:\/\/u:\*\*\*@x\/db" is not supported/,
    ],
    ['postgres URL without host', ['--database-url', 'postgres:///db'], {}, /names no host/],
    [
      'pool size zero',
      ['--database-url', 'postgres://h/db', '--database-pool-size', '0'],
      {},
      /from 1 to 1000/,
    ],
    [
      'bad timeout',
      ['--database-url', 'postgres://h/db', '--database-statement-timeout', '2s'],
      {},
      /"2s" is not an integer/,
    ],
    [
      'bad schema',
      ['--database-url', 'postgres://h/db', '--database-schema', 'Tracker; DROP'],
      {},
      /lower-case SQL identifier/,
    ],
    [
      'bad synchronous_commit',
      ['--database-url', 'postgres://h/db', '--database-synchronous-commit', 'sometimes'],
      {},
      /--database-synchronous-commit: "sometimes" is not one of on, off, local, remote_write, remote_apply/,
    ],
    ['empty sqlite path', ['--database-url', 'sqlite:'], {}, /names no file/],
    [
      'unknown sqlite parameter',
      ['--database-url', 'sqlite:x.db?mode=ro'],
      {},
      /unknown or invalid parameter "mode=ro"/,
    ],
    ['bad host', ['--host', 'a b'], {}, /not a host name/],
    [
      'allowed host with a port',
      ['--allowed-host', 'tracker:8080'],
      {},
      /--allowed-host: "tracker:8080" is not a host name/,
    ],
    [
      'allowed host as a URL',
      [],
      { TRACKER_ALLOWED_HOSTS: 'http://tracker' },
      /TRACKER_ALLOWED_HOSTS: "http:\/\/tracker" is not a host name/,
    ],
    [
      'allowed host with a wildcard label',
      ['--allowed-host', '*.example.com'],
      {},
      /use .example.com|not a host name/,
    ],
    ['bad duration', ['--default-ttl', '5 minutes'], {}, /--default-ttl: "5 minutes" is not a duration/],
    ['zero TTL', ['--max-ttl', '0'], {}, /--max-ttl: "0" is not a duration from 1s to 365d/],
    ['TTL over a year', [], { TRACKER_DEFAULT_TTL: '366d' }, /TRACKER_DEFAULT_TTL: "366d" is not a duration/],
    [
      'default above max',
      ['--default-ttl', '2h', '--max-ttl', '1h'],
      {},
      /--default-ttl \(7200s\) is longer than --max-ttl \(3600s\)/,
    ],
    ['unknown flag', ['--colour', 'red'], {}, /Unknown option '--colour'/],
    ['missing value', ['--http-port'], {}, /argument missing/],
    ['stray argument', ['serve'], {}, /unexpected argument: serve/],
  ];
  for (const [name, argv, env, message] of bad) {
    test(`refuses ${name} with one line`, () => {
      assert.throws(
        () => loadConfig(argv, env),
        (error: unknown) =>
          error instanceof ConfigError && message.test(error.message) && !error.message.includes('\n'),
      );
    });
  }
});
