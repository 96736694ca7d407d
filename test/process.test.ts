import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { lockServiceClient, unary } from './support/grpc-client.js';
import { duplicateKeys } from './support/json-keys.js';
import {
  FREE_ARGS,
  ROOT,
  runServerToExit,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';
import { writeFutureSchema } from './support/sqlite.js';
import { waitFor, within } from './support/wait-for.js';

const API = '/api/v1alpha1';
const FREE = ['--http-port', '0', '--grpc-port', '0'];

async function acquire(base: string, service: string, who = 'tester', extra: Record<string, unknown> = {}) {
  const response = await fetch(`${base}${API}/lock`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, who, ...extra }),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

function occupyPort(): Promise<{ server: Server; port: number }> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      assert.ok(address && typeof address === 'object');
      resolve({ server, port: address.port });
    });
  });
}

function assertOneLine(stderr: string, pattern: RegExp) {
  const lines = stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `exactly one line on stderr, got: ${stderr}`);
  assert.match(lines[0] ?? '', pattern);
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
}

/** The server's log lines that record lock event `event` for `service`. */
const eventLines = (server: ServerProcess, event: string, service: string) =>
  server.lines.filter(
    (line) => line.includes(`"event":"${event}"`) && line.includes(`"service":"${service}"`),
  );

describe('the server process: start-up', () => {
  test('`npm start -- --help` lists every option with its default', async () => {
    // `npm start` builds first (prestart); the build is done (the tests run dist/), and
    // rebuilding dist/ under the other test files running at the same time would break
    // them, so the pre-script is skipped: this runs the start script itself.
    const scripts = (
      JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
        scripts: Record<string, string>;
      }
    ).scripts;
    assert.match(scripts.prestart ?? '', /^npm run build\b/, '`npm start` builds first');
    const result = await runToExit('npm', ['start', '--ignore-scripts', '--silent', '--', '--help'], {
      timeoutMs: 60_000,
    });
    assert.equal(result.code, 0, result.stderr);
    for (const option of ['--host', '--http-port', '--grpc-port', '--database-url', '--log-level']) {
      assert.ok(result.stdout.includes(option), `help lists ${option}`);
    }
    assert.match(result.stdout, /default: 8080/);
    assert.match(result.stdout, /default: 8765/);
    assert.match(result.stdout, /default: sqlite:\.\/data\/tracker\.db/);
  });

  // Which settings are refused, and with which message, is test/config.test.ts's part (each
  // refusal is one ConfigError of one line); this is the process's part: the line, exit 2.
  test('a bad setting: one clear line and exit 2', async () => {
    const result = await runServerToExit([], { TRACKER_LOG_LEVEL: 'shouty' });
    assert.equal(result.code, 2);
    assertOneLine(result.stderr, /^tracker: TRACKER_LOG_LEVEL: "shouty" is not one of /);
  });

  for (const transport of ['http', 'grpc'] as const) {
    test(`${transport} port already in use: one clear line, exit 1`, async () => {
      const { server, port } = await occupyPort();
      try {
        const args = [...FREE_ARGS];
        args[transport === 'http' ? 1 : 3] = String(port);
        const result = await runServerToExit(args);
        assert.equal(result.code, 1);
        assertOneLine(
          result.stderr,
          new RegExp(`^tracker: cannot serve .* on 127\\.0\\.0\\.1:${port}: address already in use$`),
        );
      } finally {
        server.close();
      }
    });
  }

  test('a SQLite file migrated by a newer Tracker is refused with one line, exit 1', async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, 'future.db');
      writeFutureSchema(path, 42);
      const result = await runServerToExit([...FREE, '--database-url', `sqlite:${path}`]);
      assert.equal(result.code, 1);
      assertOneLine(
        result.stderr,
        /^tracker: database schema is version 42 but this Tracker knows only up to \d+; upgrade Tracker$/,
      );
    } finally {
      dir.remove();
    }
  });
});

/*
 * One server for these tests, in order: configured by its environment alone (no flags), in a
 * fresh folder (so its store is the default one), stopped by SIGINT at the end.
 */
describe('the server process: configured by the environment, default store, logs, SIGINT', () => {
  const dir = tempDir();
  let server: ServerProcess;

  before(async () => {
    server = await startServerProcess({
      args: [],
      cwd: dir.path,
      // An empty variable counts as unset: the default store, whatever the test run's env says.
      env: { TRACKER_HTTP_PORT: '0', TRACKER_GRPC_PORT: '0', TRACKER_DATABASE_URL: '' },
    });
  });
  after(async () => {
    await server?.stop();
    dir.remove();
  });

  // First, while the server has answered no request yet: its requests are exactly these.
  test('logs one JSON line per request and per lock event, each with unique keys', async () => {
    const { json } = await acquire(server.baseUrl, 'logged-service', 'logged-who');
    await fetch(`${server.baseUrl}${API}/unlock/${json.id}`);
    await fetch(`${server.baseUrl}${API}/lock/nope`);
    // Lines are written asynchronously: wait for the last one.
    await waitFor(() => server.lines.some((l) => l.includes('"status":404')), { what: 'the 404 log line' });
    for (const line of server.lines) assert.deepEqual(duplicateKeys(line), [], line);
    const parsed = server.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    // The process is `app`; `service` is always a lock's service.
    for (const line of parsed) assert.equal(line.app, 'tracker', JSON.stringify(line));
    const requests = parsed.filter((line) => line.msg === 'request');
    assert.deepEqual(
      requests.map((line) => [line.method, line.route, line.status]),
      [
        ['POST', `${API}/lock`, 201],
        ['GET', `${API}/unlock/:id`, 200],
        ['GET', `${API}/lock/:id`, 404],
      ],
    );
    for (const line of requests) assert.equal(typeof line.ms, 'number');
    const events = parsed.filter((line) => typeof line.event === 'string');
    assert.deepEqual(
      events.map((line) => [line.event, line.service, line.who, line.id]),
      [
        ['acquired', 'logged-service', 'logged-who', json.id],
        ['released', 'logged-service', 'logged-who', json.id],
      ],
    );
  });

  test('port 0 picks free ports and the bound ports are logged; env configures it', async () => {
    assert.ok(server.httpPort > 0 && server.grpcPort > 0);
    const listening = server.lines.find((line) => line.includes('"tracker listening"'));
    assert.ok(listening);
    assert.equal(JSON.parse(listening).httpPort, server.httpPort);
    assert.equal(JSON.parse(listening).grpcPort, server.grpcPort);
    assert.equal((await fetch(`${server.baseUrl}/healthz`)).status, 200);
  });

  test('the default store is ./data/tracker.db, folder created', async () => {
    assert.equal(
      JSON.parse(server.lines.find((l) => l.includes('"tracker listening"')) ?? '{}').database,
      'sqlite:./data/tracker.db',
    );
    const path = join(dir.path, 'data', 'tracker.db');
    assert.ok(existsSync(path));
    const created = await acquire(server.baseUrl, 'default-store');
    assert.equal(created.status, 201);
    const db = new Database(path, { readonly: true });
    try {
      const row = db.prepare('SELECT service FROM locks WHERE id = ?').get(created.json.id);
      assert.deepEqual(row, { service: 'default-store' }, 'the lock is in that file');
    } finally {
      db.close();
    }
  });

  test('SIGINT with a kept-alive client stops cleanly with exit 0 within 10 s', async () => {
    // A kept-alive connection (fetch keeps it) and an open gRPC channel must not hold the
    // process up.
    assert.equal((await acquire(server.baseUrl, 'before-stop')).status, 201);
    const client = lockServiceClient(server.grpcAddress);
    try {
      await unary(client, 'ListLocks', {});
      server.child.kill('SIGINT');
      assert.equal(await within(server.exited, { what: 'the exit after SIGINT', timeoutMs: 10_000 }), 0);
      assert.ok(server.lines.some((line) => line.includes('"stopped"')));
    } finally {
      client.close();
    }
  });
});

describe('the server process: SIGTERM', () => {
  test('with a kept-alive client and a request waiting in a queue: the waiter gets 503, exit 0 within 10 s', async () => {
    const server = await startServerProcess();
    const client = lockServiceClient(server.grpcAddress);
    try {
      assert.equal((await acquire(server.baseUrl, 'busy-at-shutdown', 'holder')).status, 201);
      await unary(client, 'ListLocks', {});
      const waiting = acquire(server.baseUrl, 'busy-at-shutdown', 'waiter', { waitSeconds: 3600 });
      await waitFor(() => eventLines(server, 'queued', 'busy-at-shutdown').length === 1, {
        what: 'the waiter in the queue',
      });
      server.child.kill('SIGTERM');
      const reply = await waiting;
      assert.equal(reply.status, 503);
      assert.deepEqual(reply.json, { error: 'store unavailable', code: 'STORE_UNAVAILABLE' });
      assert.equal(await within(server.exited, { what: 'the exit after SIGTERM', timeoutMs: 10_000 }), 0);
      assert.ok(server.lines.some((line) => line.includes('"stopped"')));
      assert.ok(!server.lines.some((line) => line.includes('graceful shutdown took too long')));
    } finally {
      client.close();
      await server.stop();
    }
  });

  test('with nobody reading its logs any more (a broken stdout pipe): exit 0 within 10 s', async () => {
    // Its first lines into the broken pipe are those of the shutdown; before, the last ones
    // were written synchronously at exit, and that write retried the broken pipe forever: the
    // process never exited.
    const servers = await Promise.all([1, 2, 3].map(() => startServerProcess()));
    try {
      for (const server of servers) server.child.stdout?.destroy();
      await Promise.all(
        servers.map(async (server) => {
          server.child.kill('SIGTERM');
          assert.equal(await within(server.exited, { what: 'the exit after SIGTERM', timeoutMs: 10_000 }), 0);
        }),
      );
    } finally {
      await Promise.all(servers.map((server) => server.stop(1000)));
    }
  });

  test('under load: every answered acquire is committed, none is half-done', async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, 'drain.db');
      const server = await startServerProcess({ args: [...FREE, '--database-url', `sqlite:${path}`] });
      const requests = Array.from({ length: 200 }, (_, i) =>
        acquire(server.baseUrl, `drain-${i}`).then(
          (result) => result,
          (error: unknown) => ({ status: 0, json: { error: String(error) } as Record<string, unknown> }),
        ),
      );
      await requests[0];
      server.child.kill('SIGTERM');
      const results = await Promise.all(requests);
      assert.equal(await server.exited, 0);
      // In-flight requests finish (201); requests arriving after the close get 503 or a closed
      // connection; nothing else.
      const created = results.filter((result) => result.status === 201);
      for (const result of results) assert.ok([0, 201, 503].includes(result.status), JSON.stringify(result));
      assert.ok(created.length >= 1);
      // The store itself, read once the process is gone.
      const db = new Database(path, { readonly: true });
      try {
        const stored = db.prepare<[], { id: string }>('SELECT id FROM locks').all();
        assert.deepEqual(
          stored.map((row) => row.id).sort(),
          created.map((result) => String(result.json.id)).sort(),
          'exactly the answered locks are in the store',
        );
      } finally {
        db.close();
      }
    } finally {
      dir.remove();
    }
  });
});

/*
 * One crash for both: a lock without a lease and one with a 1-second lease, then kill -9,
 * then a new process on the same file.
 */
describe('the server process: kill -9 and a restart on the same file', () => {
  const dir = tempDir();
  const args = [...FREE, '--database-url', `sqlite:${dir.path}/crash.db`];
  let second: ServerProcess;
  let kept: Record<string, unknown>;
  let leased: { id: string; fencingToken: number; expiresAt: string };

  before(async () => {
    const first = await startServerProcess({ args });
    try {
      const created = await acquire(first.baseUrl, 'crash-proof', 'survivor');
      assert.equal(created.status, 201);
      kept = created.json;
      const short = await acquire(first.baseUrl, 'short-lease', 'crashing-job', { ttlSeconds: 1 });
      assert.equal(short.status, 201);
      leased = short.json as unknown as typeof leased;
      assert.equal((await acquire(first.baseUrl, 'short-lease')).status, 409);
    } finally {
      first.child.kill('SIGKILL');
    }
    assert.equal(await first.exited, 'SIGKILL');
    second = await startServerProcess({ args });
  });
  after(async () => {
    await second?.stop();
    dir.remove();
  });

  test('a lock survives kill -9 and a restart, and is still exclusive', async () => {
    const read = await fetch(`${second.baseUrl}${API}/lock/${kept.id}`);
    assert.equal(read.status, 200);
    assert.deepEqual(await read.json(), kept);
    const again = await acquire(second.baseUrl, 'crash-proof', 'intruder');
    assert.equal(again.status, 409);
    assert.deepEqual(again.json.existingLock, kept);
  });

  test('a real 1-second lease expires on the real clock, across the restart', async () => {
    await waitFor(async () => (await fetch(`${second.baseUrl}${API}/lock/${leased.id}`)).status === 404, {
      what: 'the leased lock to expire',
      intervalMs: 100,
    });
    const next = await acquire(second.baseUrl, 'short-lease', 'next-job');
    assert.equal(next.status, 201);
    assert.ok(Number(next.json.fencingToken) > leased.fencingToken);
    // Not before its time (both are whole seconds of the server's clock, rounded down).
    assert.ok(
      Date.parse(String(next.json.createdAt)) >= Date.parse(leased.expiresAt),
      `taken again at ${next.json.createdAt}, the lease ran to ${leased.expiresAt}`,
    );
  });
});
