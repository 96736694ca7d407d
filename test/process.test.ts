import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { lockServiceClient, unary } from './support/grpc-client.js';
import { duplicateKeys } from './support/json-keys.js';
import { runServerToExit, runToExit, startServerProcess, tempDir } from './support/server-process.js';
import { writeFutureSchema } from './support/sqlite.js';
import { waitFor } from './support/wait-for.js';

const API = '/api/v1alpha1';
const FREE = ['--http-port', '0', '--grpc-port', '0'];

async function acquire(base: string, service: string, who = 'tester') {
  const response = await fetch(`${base}${API}/lock`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, who }),
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

describe('the server process', () => {
  test('`npm start -- --help` lists every option with its default', async () => {
    const result = await runToExit('npm', ['start', '--silent', '--', '--help'], { timeoutMs: 120_000 });
    assert.equal(result.code, 0);
    for (const option of ['--host', '--http-port', '--grpc-port', '--database-url', '--log-level']) {
      assert.ok(result.stdout.includes(option), `help lists ${option}`);
    }
    assert.match(result.stdout, /default: 8080/);
    assert.match(result.stdout, /default: 8765/);
    assert.match(result.stdout, /default: sqlite:\.\/data\/tracker\.db/);
  });

  for (const [name, args, env] of [
    ['bad flag value', ['--http-port', 'x'], {}],
    ['bad environment value', [], { TRACKER_LOG_LEVEL: 'shouty' }],
    ['unknown flag', ['--nope'], {}],
  ] as Array<[string, string[], NodeJS.ProcessEnv]>) {
    test(`${name}: one clear line and exit 2`, async () => {
      const result = await runServerToExit(args, env);
      assert.equal(result.code, 2);
      assertOneLine(result.stderr, /^tracker: /);
    });
  }

  for (const transport of ['http', 'grpc'] as const) {
    test(`${transport} port already in use: one clear line, exit 1`, async () => {
      const { server, port } = await occupyPort();
      try {
        const args = ['--http-port', '0', '--grpc-port', '0', '--database-url', 'sqlite::memory:'];
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
    const path = join(dir.path, 'future.db');
    writeFutureSchema(path, 42);
    const result = await runServerToExit([...FREE, '--database-url', `sqlite:${path}`]);
    assert.equal(result.code, 1);
    assertOneLine(
      result.stderr,
      /^tracker: database schema is version 42 but this Tracker knows only up to \d+; upgrade Tracker$/,
    );
    dir.remove();
  });

  test('port 0 picks free ports and the bound ports are logged; env configures it', async () => {
    const server = await startServerProcess({
      args: [],
      env: { TRACKER_HTTP_PORT: '0', TRACKER_GRPC_PORT: '0', TRACKER_DATABASE_URL: 'sqlite::memory:' },
    });
    try {
      assert.ok(server.httpPort > 0 && server.grpcPort > 0);
      const listening = server.lines.find((line) => line.includes('"tracker listening"'));
      assert.ok(listening);
      assert.equal(JSON.parse(listening).httpPort, server.httpPort);
      assert.equal((await fetch(`${server.baseUrl}/healthz`)).status, 200);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  test('the default store is ./data/tracker.db, folder created', async () => {
    const dir = tempDir();
    const server = await startServerProcess({ args: FREE, cwd: dir.path });
    try {
      assert.ok(existsSync(join(dir.path, 'data', 'tracker.db')));
      assert.equal((await acquire(server.baseUrl, 'default-store')).status, 201);
    } finally {
      await server.stop();
      dir.remove();
    }
  });

  test('logs one JSON line per request and per lock event, each with unique keys', async () => {
    const server = await startServerProcess();
    try {
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
    } finally {
      await server.stop();
    }
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal} with a kept-alive client stops cleanly with exit 0 within 10 s`, async () => {
      const dir = tempDir();
      const server = await startServerProcess({
        args: [...FREE, '--database-url', `sqlite:${dir.path}/t.db`],
      });
      // A kept-alive connection and an open gRPC channel must not hold the process up.
      await acquire(server.baseUrl, 'before-stop');
      const client = lockServiceClient(server.grpcAddress);
      await unary(client, 'ListLocks', {});
      const started = Date.now();
      server.child.kill(signal);
      const code = await Promise.race([
        server.exited,
        new Promise((resolve) => setTimeout(() => resolve('timeout'), 10_000)),
      ]);
      assert.equal(code, 0);
      assert.ok(Date.now() - started < 10_000);
      assert.ok(server.lines.some((line) => line.includes('"stopped"')));
      client.close();
      dir.remove();
    });
  }

  test('SIGTERM sends requests waiting in a queue away with 503 instead of holding the stop', async () => {
    const server = await startServerProcess();
    await acquire(server.baseUrl, 'busy-at-shutdown', 'holder');
    const waiting = fetch(`${server.baseUrl}${API}/lock`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service: 'busy-at-shutdown', who: 'waiter', waitSeconds: 3600 }),
      signal: AbortSignal.timeout(15_000),
    });
    for (let i = 0; i < 200; i++) {
      const queue = await fetch(`${server.baseUrl}${API}/queue/busy-at-shutdown`);
      if (((await queue.json()) as { waiters: unknown[] }).waiters.length === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    server.child.kill('SIGTERM');
    const reply = await waiting;
    assert.equal(reply.status, 503);
    assert.deepEqual(await reply.json(), { error: 'store unavailable', code: 'STORE_UNAVAILABLE' });
    assert.equal(await server.exited, 0);
    assert.ok(!server.lines.some((line) => line.includes('graceful shutdown took too long')));
  });

  test('SIGTERM under load: every answered acquire is committed, none is half-done', async () => {
    const dir = tempDir();
    const args = [...FREE, '--database-url', `sqlite:${dir.path}/drain.db`];
    const server = await startServerProcess({ args });
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
    const restarted = await startServerProcess({ args });
    try {
      const listed = await fetch(`${restarted.baseUrl}${API}/locks/list?per_page=1000`);
      const { locks } = (await listed.json()) as { locks: Array<Record<string, unknown>> };
      assert.deepEqual(
        locks.map((lock) => lock.id).sort(),
        created.map((result) => result.json.id).sort(),
        'exactly the answered locks are in the store',
      );
    } finally {
      await restarted.stop();
      dir.remove();
    }
  });

  test('a real 1-second lease expires on the real clock, across a restart', async () => {
    const dir = tempDir();
    const args = [...FREE, '--database-url', `sqlite:${dir.path}/lease.db`];
    const first = await startServerProcess({ args });
    const response = await fetch(`${first.baseUrl}${API}/lock`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service: 'short-lease', who: 'crashing-job', ttlSeconds: 1 }),
    });
    const lock = (await response.json()) as { id: string; fencingToken: number; expiresAt: string };
    assert.equal(response.status, 201);
    assert.equal((await acquire(first.baseUrl, 'short-lease')).status, 409);
    first.child.kill('SIGKILL');
    await first.exited;
    // Past expiresAt (whole seconds are rounded down, so wait a little over 2 s at most).
    await new Promise((resolve) =>
      setTimeout(resolve, Math.max(0, Date.parse(lock.expiresAt) + 1100 - Date.now())),
    );
    const second = await startServerProcess({ args });
    try {
      assert.equal((await fetch(`${second.baseUrl}${API}/lock/${lock.id}`)).status, 404);
      const next = await acquire(second.baseUrl, 'short-lease', 'next-job');
      assert.equal(next.status, 201);
      assert.ok(Number(next.json.fencingToken) > lock.fencingToken);
    } finally {
      await second.stop();
      dir.remove();
    }
  });

  test('a lock survives kill -9 and a restart on the same file, and is still exclusive', async () => {
    const dir = tempDir();
    const args = [...FREE, '--database-url', `sqlite:${dir.path}/crash.db`];
    const first = await startServerProcess({ args });
    const created = await acquire(first.baseUrl, 'crash-proof', 'survivor');
    assert.equal(created.status, 201);
    first.child.kill('SIGKILL');
    assert.equal(await first.exited, 'SIGKILL');
    const second = await startServerProcess({ args });
    try {
      const read = await fetch(`${second.baseUrl}${API}/lock/${created.json.id}`);
      assert.equal(read.status, 200);
      assert.deepEqual(await read.json(), created.json);
      const again = await acquire(second.baseUrl, 'crash-proof', 'intruder');
      assert.equal(again.status, 409);
      assert.deepEqual(again.json.existingLock, created.json);
    } finally {
      await second.stop();
      dir.remove();
    }
  });
});
