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
    });
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
    assert.equal(fromEnv.database.path, ':memory:');
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
    assert.equal(fromFlags.database.path, '/tmp/x.db');
    assert.equal(fromFlags.logLevel, 'debug');
  });

  test('an empty environment variable counts as unset', () => {
    assert.equal(config([], { TRACKER_HTTP_PORT: '' }).httpPort, 8080);
  });

  test('sqlite URL forms and synchronous=full', () => {
    assert.equal(
      config(['--database-url', 'sqlite:///var/lib/tracker.db']).database.path,
      '/var/lib/tracker.db',
    );
    assert.equal(config(['--database-url', 'sqlite://rel/t.db']).database.path, 'rel/t.db');
    assert.equal(config(['--database-url', 'sqlite:t.db?synchronous=full']).database.synchronous, 'full');
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
    ['unsupported database', ['--database-url', 'mysql://x'], {}, /not supported; use sqlite:PATH/],
    ['empty sqlite path', ['--database-url', 'sqlite:'], {}, /names no file/],
    [
      'unknown sqlite parameter',
      ['--database-url', 'sqlite:x.db?mode=ro'],
      {},
      /unknown or invalid parameter "mode=ro"/,
    ],
    ['bad host', ['--host', 'a b'], {}, /not a host name/],
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
