/**
 * The `tracker` CLI as a real child process against a real server: every command and exit
 * code, and `run` with its child, signals, renewal and loss of the lock.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  ROOT,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';

const CLI = join(ROOT, 'dist/src/cli/main.js');
const API = '/api/v1alpha1';
const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('tracker CLI', () => {
  let server: ServerProcess;
  let dir: ReturnType<typeof tempDir>;
  const env = () => ({ ...process.env, TRACKER_URL: server.baseUrl });
  const tracker = (args: string[], timeoutMs = 30_000) =>
    runToExit(process.execPath, [CLI, ...args], { env: env(), timeoutMs, cwd: dir.path });
  const locksOf = async (service: string) => {
    const response = await fetch(`${server.baseUrl}${API}/locks/list?service=${service}`);
    return ((await response.json()) as { locks: Array<{ id: string; who: string }> }).locks;
  };

  before(async () => {
    dir = tempDir();
    server = await startServerProcess();
  });
  after(async () => {
    await server?.stop();
    dir?.remove();
  });

  test('--help on every command lists its options and the exit codes', async () => {
    for (const command of [
      [],
      ['run'],
      ['lock', 'acquire'],
      ['lock', 'list'],
      ['lock', 'renew'],
      ['lock', 'queue'],
    ]) {
      const result = await tracker([...command, '--help']);
      assert.equal(result.code, 0, command.join(' '));
      assert.match(result.stdout, /Usage: tracker/);
      assert.match(result.stdout, /75 +lock lost during `run`/);
      assert.match(result.stdout, /--url URL/);
    }
    const serve = await tracker(['serve', '--help']);
    assert.equal(serve.code, 0);
    assert.match(serve.stdout, /--database-url/);
  });

  test('lock acquire prints the id; get, renew, list, queue and release work on it', async () => {
    const service = unique('cli');
    const acquired = await tracker([
      'lock',
      'acquire',
      '--service',
      service,
      '--who',
      'cli-user',
      '--ttl',
      '1h30m',
    ]);
    assert.equal(acquired.code, 0, acquired.stderr);
    const id = acquired.stdout.trim();
    assert.match(id, /^[0-9a-f-]{36}$/);
    const got = await tracker(['lock', 'get', id, '--json']);
    assert.equal(JSON.parse(got.stdout).ttlSeconds, 5400);
    const renewed = await tracker(['lock', 'renew', id, '--ttl', '90s', '--json']);
    assert.equal(JSON.parse(renewed.stdout).ttlSeconds, 90);
    const table = await tracker(['lock', 'list', '--service', service]);
    const [header, row] = table.stdout.trim().split('\n');
    assert.match(header ?? '', /^SERVICE +WHO +AGE +EXPIRES IN +TOKEN +WAITERS$/);
    assert.match(row ?? '', new RegExp(`^${service} +cli-user +\\d+s +1m 30s|1m 29s`));
    const queue = await tracker(['lock', 'queue', service]);
    assert.match(queue.stdout, new RegExp(`${service} is held by cli-user`));
    const released = await tracker(['lock', 'release', id]);
    assert.equal(released.code, 0);
    assert.deepEqual(await locksOf(service), []);
  });

  test('exit codes: 3 held, 4 wait timed out, 2 usage, 1 other failure', async () => {
    const service = unique('codes');
    const holder = await tracker(['lock', 'acquire', '--service', service, '--who', 'holder']);
    const held = await tracker(['lock', 'acquire', '--service', service]);
    assert.equal(held.code, 3);
    assert.match(held.stderr, new RegExp(`^tracker: ${service} is held by holder`));
    const waited = await tracker(['lock', 'acquire', '--service', service, '--wait', '1s']);
    assert.equal(waited.code, 4);
    for (const args of [
      ['lock', 'acquire'],
      ['lock', 'acquire', '--service', 's', '--ttl', 'soon'],
      ['lock', 'get'],
      ['nope'],
    ]) {
      const usage = await tracker(args);
      assert.equal(usage.code, 2, args.join(' '));
      assert.equal(usage.stderr.trim().split('\n').length, 1);
    }
    const missing = await tracker(['lock', 'get', randomUUID()]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^tracker: lock not found\n$/);
    await tracker(['lock', 'release', holder.stdout.trim()]);
  });

  test('against a stopped server: exit 1 with one clear line, no stack trace', async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port: free } = probe.address() as AddressInfo;
        probe.close(() => resolve(free));
      });
    });
    const url = `http://127.0.0.1:${port}`;
    const result = await runToExit(process.execPath, [CLI, 'lock', 'list', '--url', url], {
      timeoutMs: 30_000,
    });
    assert.equal(result.code, 1);
    assert.equal(result.stderr, `tracker: cannot reach Tracker at ${url}: ECONNREFUSED\n`);
  });

  test('run passes the lock to the command, passes its exit code through and releases', async () => {
    const service = unique('run');
    const ok = await tracker([
      'run',
      '--service',
      service,
      '--ttl',
      '1m',
      '--',
      'sh',
      '-c',
      `echo "$TRACKER_SERVICE $TRACKER_LOCK_ID $TRACKER_FENCING_TOKEN"; curl -s "$TRACKER_URL${API}/locks/list?service=$TRACKER_SERVICE"`,
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    const [line, listed] = ok.stdout.trim().split('\n');
    const [seenService, id, token] = (line ?? '').split(' ');
    assert.equal(seenService, service);
    assert.deepEqual(
      (JSON.parse(listed ?? '{}') as { locks: Array<{ id: string }> }).locks.map((lock) => lock.id),
      [id],
      'the command ran while holding the lock',
    );
    assert.ok(Number(token) > 0);
    assert.deepEqual(await locksOf(service), [], 'released afterwards');
    const failing = await tracker(['run', '--service', service, '--', 'sh', '-c', 'exit 7']);
    assert.equal(failing.code, 7);
    assert.deepEqual(await locksOf(service), [], 'released after a failure too');
    const crashing = await tracker(['run', '--service', service, '--', 'sh', '-c', 'kill -9 $$']);
    assert.equal(crashing.code, 137);
    assert.deepEqual(await locksOf(service), [], 'released after a crash too');
  });

  test('run passes stdin, stdout and stderr through untouched', async () => {
    const service = unique('run-stdio');
    const child = spawn(
      process.execPath,
      [CLI, 'run', '--service', service, '--', 'sh', '-c', 'tr a-z A-Z; echo to-stderr >&2'],
      { env: env(), stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.stdin.end('hello\nworld\n');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0);
    assert.equal(stdout, 'HELLO\nWORLD\n');
    assert.equal(stderr, 'to-stderr\n');
  });

  test('run on a held service: exit 3 without running; with --wait it runs once released', async () => {
    const service = unique('run-held');
    const holder = (await tracker(['lock', 'acquire', '--service', service])).stdout.trim();
    const refused = await tracker(['run', '--service', service, '--', 'sh', '-c', 'echo ran']);
    assert.equal(refused.code, 3);
    assert.equal(refused.stdout, '');
    const waiting = tracker(['run', '--service', service, '--wait', '30s', '--', 'sh', '-c', 'echo ran']);
    await delay(500);
    await tracker(['lock', 'release', holder]);
    const ran = await waiting;
    assert.equal(ran.code, 0);
    assert.equal(ran.stdout, 'ran\n');
    assert.match(ran.stderr, /tracker: waiting .* for .*: held by /, 'says who holds it while waiting');
  });

  test('SIGTERM to tracker run reaches the command and the lock is released', async () => {
    const service = unique('run-signal');
    const child = spawn(
      process.execPath,
      [
        CLI,
        'run',
        '--service',
        service,
        '--',
        'sh',
        '-c',
        'trap "echo got-term; exit 143" TERM; echo ready; while true; do sleep 0.05; done',
      ],
      {
        env: env(),
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    // Signal only once the command has set its trap (it prints "ready" after).
    for (let i = 0; i < 250 && !stdout.includes('ready'); i++) await delay(20);
    assert.equal((await locksOf(service)).length, 1);
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 143);
    assert.match(stdout, /got-term/);
    assert.deepEqual(await locksOf(service), []);
  });

  test('a lock released from outside during run: the command is stopped and run exits 75', async () => {
    const service = unique('run-lost');
    const started = Date.now();
    const running = tracker([
      'run',
      '--service',
      service,
      '--ttl',
      '3s',
      '--kill-grace',
      '1s',
      '--',
      'sleep',
      '60',
    ]);
    let id: string | undefined;
    for (let i = 0; i < 100 && !id; i++) {
      id = (await locksOf(service))[0]?.id;
      if (!id) await delay(20);
    }
    assert.ok(id);
    await fetch(`${server.baseUrl}${API}/lock/${id}`, { method: 'DELETE' });
    const result = await running;
    assert.equal(result.code, 75);
    assert.match(result.stderr, /lost the lock on .*renewal refused/);
    // Within a third of the TTL plus a second (plus the kill grace sleep needs).
    assert.ok(Date.now() - started < 3000 / 3 + 1000 + 1000 + 2000, 'stopped promptly');
  });
});
