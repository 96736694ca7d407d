/**
 * The `tracker` CLI as a real child process against a real server: every command and exit
 * code, and `run` with its child, signals, renewal and loss of the lock.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, symlinkSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { addToken } from '../src/auth/token-file.js';
import {
  FREE_ARGS,
  type ProcessRun,
  ROOT,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';
import { makeTlsFiles, type TlsFiles } from './support/tls.js';
import { waitFor } from './support/wait-for.js';

const CLI = join(ROOT, 'dist/src/cli/main.js');
const API = '/api/v1alpha1';
const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

/**
 * `work` on every item, `limit` at a time, the results in the items' order. Each CLI run is
 * a Node process that spends its life starting up: a few at once keep both cores busy.
 */
async function mapLimited<T, R>(items: readonly T[], work: (item: T) => Promise<R>, limit = 4): Promise<R[]> {
  const results: R[] = [];
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) results[i] = await work(items[i] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** The pairs [a[i], b[i]]. */
const zip = <A, B>(a: readonly A[], b: readonly B[]): Array<[A, B]> => a.map((item, i) => [item, b[i] as B]);

interface HistoryEvent {
  id: number;
  type: string;
  at: string;
  service: string;
  who: string;
  lock: { id: string };
  heldSeconds: number | null;
  reason: string | null;
}

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
  const historyOf = async (service: string) => {
    const response = await fetch(`${server.baseUrl}${API}/history?service=${encodeURIComponent(service)}`);
    return ((await response.json()) as { events: HistoryEvent[] }).events;
  };
  const acquire = async (service: string, who: string) => {
    const response = await fetch(`${server.baseUrl}${API}/lock`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service, who }),
    });
    assert.equal(response.status, 201);
    return ((await response.json()) as { id: string }).id;
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
    const commands = [
      [],
      ['run'],
      ['lock', 'acquire'],
      ['lock', 'list'],
      ['lock', 'renew'],
      ['lock', 'queue'],
      ['lock', 'force-release'],
      ['lock', 'history'],
    ];
    const results = await mapLimited([...commands, ['serve']], (command) => tracker([...command, '--help']));
    for (const [i, command] of commands.entries()) {
      const result = results[i] as ProcessRun;
      assert.equal(result.code, 0, command.join(' '));
      assert.match(result.stdout, /Usage: tracker/);
      assert.match(result.stdout, /75 +lock lost during `run`/);
      assert.match(result.stdout, /--url URL/);
    }
    const top = results[0] as ProcessRun;
    assert.match(top.stdout, /lock force-release ID \[--reason R\]/);
    assert.match(
      top.stdout,
      /lock history \[--service S\] \[--who W\] \[--since T\] \[--until T\] \[--limit N\]/,
    );
    const serve = results[commands.length] as ProcessRun;
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
    const usages = [
      ['lock', 'acquire'],
      ['lock', 'acquire', '--service', 's', '--ttl', 'soon'],
      ['lock', 'get'],
      ['nope'],
    ];
    for (const [args, usage] of zip(usages, await mapLimited(usages, tracker))) {
      assert.equal(usage.code, 2, args.join(' '));
      assert.equal(usage.stderr.trim().split('\n').length, 1);
    }
    const missing = await tracker(['lock', 'get', randomUUID()]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^tracker: lock not found\n$/);
    await tracker(['lock', 'release', holder.stdout.trim()]);
  });

  test('lock force-release releases whoever holds it; the history keeps the reason', async () => {
    const service = unique('force');
    const withReason = await acquire(service, 'stuck-runner');
    const released = await tracker(['lock', 'force-release', withReason, '--reason', 'runner died']);
    assert.equal(released.code, 0, released.stderr);
    assert.match(
      released.stdout,
      new RegExp(`^force-released ${withReason}: ${service} held by stuck-runner for \\d+s\n$`),
    );
    assert.equal(released.stderr, '');
    assert.deepEqual(await locksOf(service), []);

    const withoutReason = await acquire(service, 'other-runner');
    const json = await tracker(['lock', 'force-release', withoutReason, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const lock = JSON.parse(json.stdout) as {
      id: string;
      service: string;
      who: string;
      fencingToken: number;
    };
    assert.deepEqual([lock.id, lock.service, lock.who], [withoutReason, service, 'other-runner']);
    assert.equal(lock.fencingToken, 2);

    const forced = (await historyOf(service)).filter((event) => event.type === 'force-released');
    assert.deepEqual(
      forced.map((event) => [event.lock.id, event.who, event.reason]),
      [
        [withoutReason, 'other-runner', null],
        [withReason, 'stuck-runner', 'runner died'],
      ],
    );

    // Released already, or never existed: exit 1 with one line, like `lock release`.
    for (const id of [withReason, randomUUID()]) {
      const missing = await tracker(['lock', 'force-release', id, '--reason', 'again']);
      assert.equal(missing.code, 1);
      assert.equal(missing.stdout, '');
      assert.equal(missing.stderr, 'tracker: lock not found\n');
    }
  });

  test('lock force-release hands the service to the next waiter', async () => {
    const service = unique('force-grant');
    const holder = await acquire(service, 'holder');
    const waiting = tracker(['lock', 'acquire', '--service', service, '--who', 'next', '--wait', '30s']);
    await waitFor(async () => (await historyOf(service)).some((event) => event.type === 'queued'), {
      what: 'the acquire --wait in the queue',
    });
    assert.equal((await tracker(['lock', 'force-release', holder])).code, 0);
    const granted = await waiting;
    assert.equal(granted.code, 0, granted.stderr);
    assert.deepEqual(
      (await locksOf(service)).map((lock) => [lock.id, lock.who]),
      [[granted.stdout.trim(), 'next']],
    );
  });

  test('lock history: a table newest first, filters, --limit, --since/--until and --json', async () => {
    const service = unique('history');
    const first = await acquire(service, 'alice');
    assert.equal((await tracker(['lock', 'release', first])).code, 0);
    const second = await acquire(service, 'bob');
    assert.equal((await tracker(['lock', 'force-release', second, '--reason', 'bob left'])).code, 0);
    const other = await acquire(unique('history-other'), 'alice');

    const table = await tracker(['lock', 'history', '--service', service]);
    assert.equal(table.code, 0, table.stderr);
    const [header, ...rows] = table.stdout.trimEnd().split('\n');
    assert.match(header ?? '', /^AT +TYPE +SERVICE +WHO +HELD FOR +REASON$/);
    const stamp = '\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2}Z';
    assert.equal(rows.length, 4);
    assert.match(rows[0] ?? '', new RegExp(`^${stamp} +force-released +${service} +bob +\\d+s +bob left$`));
    assert.match(rows[1] ?? '', new RegExp(`^${stamp} +acquired +${service} +bob +- +-$`));
    assert.match(rows[2] ?? '', new RegExp(`^${stamp} +released +${service} +alice +\\d+s +-$`));
    assert.match(rows[3] ?? '', new RegExp(`^${stamp} +acquired +${service} +alice +- +-$`));

    const json = await tracker(['lock', 'history', '--service', service, '--json']);
    const events = JSON.parse(json.stdout) as HistoryEvent[];
    assert.deepEqual(
      events.map((event) => [event.type, event.who, event.lock.id, event.reason]),
      [
        ['force-released', 'bob', second, 'bob left'],
        ['acquired', 'bob', second, null],
        ['released', 'alice', first, null],
        ['acquired', 'alice', first, null],
      ],
    );
    assert.ok(
      events.every((event, i) => i === 0 || (events[i - 1]?.id ?? 0) > event.id),
      'newest first',
    );

    const limited = await tracker(['lock', 'history', '--service', service, '--limit', '2', '--json']);
    assert.deepEqual(
      (JSON.parse(limited.stdout) as HistoryEvent[]).map((event) => event.id),
      events.slice(0, 2).map((event) => event.id),
    );
    const byWho = await tracker(['lock', 'history', '--who', 'alice', '--limit', '1000', '--json']);
    const alices = JSON.parse(byWho.stdout) as HistoryEvent[];
    assert.ok(alices.every((event) => event.who === 'alice'));
    assert.ok(alices.some((event) => event.lock.id === other) && alices.some((e) => e.lock.id === first));
    const both = await tracker(['lock', 'history', '--service', service, '--who', 'bob', '--json']);
    assert.deepEqual(
      (JSON.parse(both.stdout) as HistoryEvent[]).map((event) => event.type),
      ['force-released', 'acquired'],
    );

    // --since is inclusive and --until exclusive: split at one event's time, the two halves
    // are the whole history of the service, without overlap.
    const pivot = events[1]?.at ?? '';
    const since = await tracker(['lock', 'history', '--service', service, '--since', pivot, '--json']);
    const until = await tracker(['lock', 'history', '--service', service, '--until', pivot, '--json']);
    const newer = (JSON.parse(since.stdout) as HistoryEvent[]).map((event) => event.id);
    const older = (JSON.parse(until.stdout) as HistoryEvent[]).map((event) => event.id);
    assert.ok(newer.includes(events[1]?.id ?? -1) && newer.includes(events[0]?.id ?? -1));
    assert.deepEqual(
      [...newer, ...older],
      events.map((event) => event.id),
    );
    // A duration means that long ago.
    const recent = await tracker(['lock', 'history', '--service', service, '--since', '10m', '--json']);
    assert.equal((JSON.parse(recent.stdout) as HistoryEvent[]).length, 4);
    const old = await tracker(['lock', 'history', '--service', service, '--until', '1h', '--json']);
    assert.deepEqual(JSON.parse(old.stdout), []);
    const none = await tracker(['lock', 'history', '--service', unique('quiet')]);
    assert.equal(none.stdout, 'no events\n');
  });

  test('lock history --limit above one page fetches page after page', async () => {
    const service = unique('history-pages');
    // 501 acquire/release pairs: 1002 events, more than the server's largest page (1000).
    for (let i = 0; i < 501; i++) {
      const id = await acquire(service, `worker-${i}`);
      const response = await fetch(`${server.baseUrl}${API}/lock/${id}`, { method: 'DELETE' });
      assert.equal(response.status, 200);
    }
    const all = await tracker(['lock', 'history', '--service', service, '--limit', '5000', '--json']);
    const events = JSON.parse(all.stdout) as HistoryEvent[];
    assert.equal(events.length, 1002);
    assert.equal(new Set(events.map((event) => event.id)).size, 1002);
    assert.deepEqual(
      [events[0]?.type, events[0]?.who, events.at(-1)?.type, events.at(-1)?.who],
      ['released', 'worker-500', 'acquired', 'worker-0'],
    );
    const some = await tracker(['lock', 'history', '--service', service, '--limit', '1001', '--json']);
    assert.deepEqual(
      (JSON.parse(some.stdout) as HistoryEvent[]).map((event) => event.id),
      events.slice(0, 1001).map((event) => event.id),
    );
  });

  test('lock history prints user text safely: no control or bidi character reaches the terminal', async () => {
    const service = unique('hostile');
    // The server refuses control characters (C1's U+009B is CSI on some terminals) and bidi
    // or invisible characters in names: the CLI says so in one line.
    const refused = await tracker([
      'lock',
      'acquire',
      '--service',
      service,
      '--who',
      'eve\u009b31m\u202eevil',
    ]);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /^tracker: .*who must not contain control characters/);
    assert.equal(refused.stderr.trim().split('\n').length, 1, refused.stderr);
    assert.doesNotMatch(refused.stderr, /[\u0080-\u009f\u202a-\u202e\u2066-\u2069]/);
    // A reason is free text and may hold bidi controls (right-to-left scripts): the table
    // shows them escaped.
    const id = await acquire(service, 'eve');
    const forced = await tracker(['lock', 'force-release', id, '--reason', 'gone\u202e\u2066!']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stdout, /held by eve for/);
    const table = await tracker(['lock', 'history', '--service', service]);
    assert.match(table.stdout, /force-released +\S+ +eve +\d+s +gone\\u202e\\u2066!\n/);
    assert.doesNotMatch(table.stdout, /[\u0080-\u009f\u202a-\u202e\u2066-\u2069]/);
    const json = await tracker(['lock', 'history', '--service', service, '--json']);
    assert.equal(
      (JSON.parse(json.stdout) as HistoryEvent[])[0]?.reason,
      'gone\u202e\u2066!',
      'JSON keeps the exact text',
    );
  });

  test('force-release and history usage errors exit 2 with one line', async () => {
    const usages = [
      ['lock', 'force-release'],
      ['lock', 'force-release', 'a', 'b'],
      ['lock', 'force-release', randomUUID(), '--reason'],
      ['lock', 'force-release', randomUUID(), '--reason', 'line\nbreak'],
      ['lock', 'force-release', randomUUID(), '--reason', 'x'.repeat(1025)],
      ['lock', 'force-release', randomUUID(), '--ttl', '1m'],
      ['lock', 'history', 'extra'],
      ['lock', 'history', '--limit', '0'],
      ['lock', 'history', '--limit', 'ten'],
      ['lock', 'history', '--limit', '100001'],
      ['lock', 'history', '--since', 'yesterday'],
      ['lock', 'history', '--until', '2026-02-30T00:00:00'],
      ['lock', 'history', '--page', '2'],
    ];
    for (const [args, usage] of zip(usages, await mapLimited(usages, tracker))) {
      assert.equal(usage.code, 2, args.join(' '));
      assert.equal(usage.stdout, '');
      assert.match(usage.stderr, /^tracker: [^\n]+; see --help\n$/, args.join(' '));
    }
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
    // Released once run waits in the queue (it has said who holds the lock by then).
    await waitFor(async () => (await historyOf(service)).some((event) => event.type === 'queued'), {
      what: 'tracker run --wait in the queue',
    });
    assert.equal((await tracker(['lock', 'release', holder])).code, 0);
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
    await waitFor(() => stdout.includes('ready'), { what: 'the command to set its trap' });
    assert.equal((await locksOf(service)).length, 1);
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 143);
    assert.match(stdout, /got-term/);
    assert.deepEqual(await locksOf(service), []);
  });

  test('a lock force-released by an operator during run: the command is stopped and run exits 75', async () => {
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
    const id = await waitFor(async () => (await locksOf(service))[0]?.id, { what: 'the lock run took' });
    // What an operator does about a job that holds a lock it should not: force release.
    const forced = await tracker(['lock', 'force-release', id, '--reason', 'stuck deploy']);
    assert.equal(forced.code, 0, forced.stderr);
    const result = await running;
    assert.equal(result.code, 75);
    assert.match(result.stderr, /lost the lock on .*renewal refused/);
    // Within a third of the TTL plus a second (plus the kill grace sleep needs).
    assert.ok(Date.now() - started < 3000 / 3 + 1000 + 1000 + 2000, 'stopped promptly');
    const [last, ...earlier] = await historyOf(service);
    assert.deepEqual([last?.type, last?.lock.id, last?.reason], ['force-released', id, 'stuck deploy']);
    assert.ok(
      earlier.every((event) => event.type !== 'released'),
      'run did not release it again: it was already gone',
    );
  });
});

/** This process's environment without the variables that give the CLI a token, a tokens file or TLS files. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of [
    'TRACKER_URL',
    'TRACKER_TOKEN',
    'TRACKER_AUTH_TOKENS_FILE',
    'TRACKER_CA_FILE',
    'TRACKER_CLIENT_CERT_FILE',
    'TRACKER_CLIENT_KEY_FILE',
  ]) {
    delete env[name];
  }
  return { ...env, ...extra };
}

/** `tracker ...` with exactly these Tracker variables. */
function trackerWith(env: NodeJS.ProcessEnv, args: string[], cwd?: string) {
  return runToExit(process.execPath, [CLI, ...args], { env: cleanEnv(env), timeoutMs: 30_000, cwd });
}

const sha256 = (text: string) => `sha256:${createHash('sha256').update(text).digest('hex')}`;
const TOKEN = /^trk_[A-Za-z0-9_-]{43}\n$/;

/** `tracker token create`: the token, checked to be printed alone. */
async function createToken(file: string, name: string, scopes: string): Promise<string> {
  const created = await trackerWith({}, [
    'token',
    'create',
    '--name',
    name,
    '--scopes',
    scopes,
    '--file',
    file,
  ]);
  assert.equal(created.code, 0, created.stderr);
  assert.match(created.stdout, TOKEN);
  return created.stdout.trim();
}

/** The status of `GET /locks/list` on `base` with `token` (cheaper to poll than a CLI process). */
async function listStatus(base: string, token: string): Promise<number> {
  const response = await fetch(`${base}${API}/locks/list`, { headers: { authorization: `Bearer ${token}` } });
  await response.arrayBuffer();
  return response.status;
}

describe('tracker token', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir();
  });
  after(() => dir?.remove());

  test('create prints the token alone, once; the file (mode 0600) holds only its hash', async () => {
    const file = join(dir.path, 'tokens.yaml');
    const created = await trackerWith({}, [
      'token',
      'create',
      '--name',
      'ci',
      '--scopes',
      'lock:write',
      '--services',
      'deploy-*,release-?',
      '--file',
      file,
    ]);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, TOKEN, 'the token alone on stdout, for TOKEN=$(...)');
    const token = created.stdout.trim();
    assert.match(
      created.stderr,
      /^tracker: added token "ci" to .*tokens\.yaml: scopes lock:write; services deploy-\*, release-\?\n/,
    );
    assert.match(created.stderr, /store it now, it is not kept\n$/);
    assert.ok(!created.stderr.includes(token), 'the token is printed once');

    assert.equal(statSync(file).mode & 0o777, 0o600);
    const text = readFileSync(file, 'utf8');
    assert.ok(!text.includes(token), 'the file never holds the token');
    assert.ok(!text.includes(token.slice(4)), 'nor its random part');
    assert.ok(text.includes(sha256(token)), 'only its SHA-256 hash');

    // The file from TRACKER_AUTH_TOKENS_FILE, several scopes; the file keeps its mode.
    const second = await trackerWith({ TRACKER_AUTH_TOKENS_FILE: file }, [
      'token',
      'create',
      '--name',
      'ops.admin',
      '--scopes',
      'lock:read,lock:admin',
    ]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, TOKEN);
    assert.notEqual(second.stdout.trim(), token);
    assert.match(second.stderr, /services \(all\)/);
    assert.equal(statSync(file).mode & 0o777, 0o600);

    const listed = await trackerWith({ TRACKER_AUTH_TOKENS_FILE: file }, ['token', 'list']);
    assert.equal(listed.code, 0, listed.stderr);
    const [header, ...rows] = listed.stdout.trimEnd().split('\n');
    assert.match(header ?? '', /^NAME +SCOPES +SERVICES +CREATED$/);
    assert.match(
      rows[0] ?? '',
      /^ci +lock:write +deploy-\*,release-\? +\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z$/,
    );
    assert.match(rows[1] ?? '', /^ops\.admin +lock:read,lock:admin +\(all\) +\d{4}-/);
    assert.doesNotMatch(listed.stdout, /sha256|trk_/, 'never a hash, never a token');
    const json = await trackerWith({}, ['token', 'list', '--file', file, '--json']);
    assert.deepEqual(
      (JSON.parse(json.stdout) as Array<{ name: string; scopes: string[]; services: string[] | null }>).map(
        ({ name, scopes, services }) => [name, scopes, services],
      ),
      [
        ['ci', ['lock:write'], ['deploy-*', 'release-?']],
        ['ops.admin', ['lock:read', 'lock:admin'], null],
      ],
    );
    assert.doesNotMatch(json.stdout, /sha256|hash/);

    const taken = await trackerWith({}, [
      'token',
      'create',
      '--name',
      'ci',
      '--scopes',
      'lock:read',
      '--file',
      file,
    ]);
    assert.equal(taken.code, 1);
    assert.equal(taken.stdout, '');
    assert.match(taken.stderr, /^tracker: .*a token named "ci" exists already \(revoke it first\)\n$/);

    const revoked = await trackerWith({}, ['token', 'revoke', '--name', 'ci', '--file', file]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, /^revoked token "ci" in /);
    assert.ok(!readFileSync(file, 'utf8').includes(sha256(token)));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const again = await trackerWith({}, ['token', 'revoke', '--name', 'ci', '--file', file]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^tracker: no such token: "ci" in .*\n$/);
    const rest = await trackerWith({}, ['token', 'list', '--file', file]);
    assert.match(rest.stdout, /^NAME .*\nops\.admin /);
    assert.doesNotMatch(rest.stdout, /^ci /m);
  });

  test('usage errors exit 2 with one line; file errors exit 1', async () => {
    const file = join(dir.path, 'usage.json');
    const usages = [
      ['token'],
      ['token', 'nope'],
      ['token', 'create', '--scopes', 'lock:read', '--file', file],
      ['token', 'create', '--name', 'x', '--file', file],
      ['token', 'create', '--name', 'has space', '--scopes', 'lock:read', '--file', file],
      ['token', 'create', '--name', 'x'.repeat(65), '--scopes', 'lock:read', '--file', file],
      ['token', 'create', '--name', 'x', '--scopes', 'lock:delete', '--file', file],
      ['token', 'create', '--name', 'x', '--scopes', 'lock:read,', '--file', file],
      ['token', 'create', '--name', 'x', '--scopes', 'lock:read', '--services', '', '--file', file],
      ['token', 'create', '--name', 'x', '--scopes', 'lock:read'],
      ['token', 'create', '--name', 'x', '--scopes', 'lock:read', '--file', file, 'extra'],
      ['token', 'list'],
      ['token', 'revoke', '--file', file],
      ['token', 'revoke', '--name', 'x', '--who', 'y', '--file', file],
    ];
    for (const [args, usage] of zip(usages, await mapLimited(usages, (args) => trackerWith({}, args)))) {
      assert.equal(usage.code, 2, args.join(' '));
      assert.equal(usage.stdout, '', args.join(' '));
      assert.equal(usage.stderr.split('\n').length, 2, args.join(' '));
    }
    const failures = [
      ['token', 'list', '--file', join(dir.path, 'missing.yaml')],
      ['token', 'revoke', '--name', 'x', '--file', join(dir.path, 'missing.yaml')],
      [
        'token',
        'create',
        '--name',
        'x',
        '--scopes',
        'lock:read',
        '--file',
        join(dir.path, 'no/such/dir.yaml'),
      ],
    ];
    for (const [args, failed] of zip(failures, await mapLimited(failures, (args) => trackerWith({}, args)))) {
      assert.equal(failed.code, 1, args.join(' '));
      assert.match(failed.stderr, /^tracker: [^\n]+\n$/, args.join(' '));
    }
    const help = await trackerWith({}, ['token', 'create', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--scopes S +lock:read/);
    assert.match((await trackerWith({}, ['--help'])).stdout, /token create --name N --scopes S\[,S\]/);
  });
});

describe('tracker client commands with authentication', () => {
  let dir: ReturnType<typeof tempDir>;
  let file: string;
  let server: ServerProcess;
  const tokens: Record<'admin' | 'writer' | 'reader' | 'deployer', string> = {
    admin: '',
    writer: '',
    reader: '',
    deployer: '',
  };
  /** `tracker` against the server with TRACKER_TOKEN set (or none for null). */
  const as = (token: string | null, args: string[]) =>
    trackerWith(
      token === null
        ? { TRACKER_URL: server.baseUrl }
        : { TRACKER_URL: server.baseUrl, TRACKER_TOKEN: token },
      args,
    );

  before(async () => {
    dir = tempDir();
    file = join(dir.path, 'tokens.yaml');
    // Written in this process (`tracker token create` itself is tested above).
    tokens.admin = addToken(file, { name: 'admin', scopes: ['lock:admin'] });
    tokens.writer = addToken(file, { name: 'writer', scopes: ['lock:write'] });
    tokens.reader = addToken(file, { name: 'reader', scopes: ['lock:read'] });
    tokens.deployer = addToken(file, { name: 'deployer', scopes: ['lock:write'], services: ['deploy-*'] });
    server = await startServerProcess({ args: [...FREE_ARGS, '--auth-tokens-file', file] });
  });
  after(async () => {
    await server?.stop();
    dir?.remove();
  });

  test('TRACKER_TOKEN is sent: acquire and release with a write token; the lock records its owner', async () => {
    const service = unique('auth');
    const acquired = await as(tokens.writer, [
      'lock',
      'acquire',
      '--service',
      service,
      '--who',
      'ci-1',
      '--json',
    ]);
    assert.equal(acquired.code, 0, acquired.stderr);
    const lock = JSON.parse(acquired.stdout) as { id: string; owner: string | null; who: string };
    assert.deepEqual([lock.who, lock.owner], ['ci-1', 'writer']);
    const table = await as(tokens.reader, ['lock', 'list', '--service', service]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^SERVICE +WHO +AGE +EXPIRES IN +TOKEN +WAITERS +OWNER\n/);
    assert.match(table.stdout, new RegExp(`\\n${service} +ci-1 .* writer\\n$`));
    const released = await as(tokens.writer, ['lock', 'release', lock.id]);
    assert.equal(released.code, 0, released.stderr);

    // --token wins over TRACKER_TOKEN.
    const flagged = await as('trk_wrong', [
      'lock',
      'acquire',
      '--service',
      service,
      '--token',
      tokens.writer,
    ]);
    assert.equal(flagged.code, 0, flagged.stderr);
    assert.equal((await as(tokens.writer, ['lock', 'release', flagged.stdout.trim()])).code, 0);

    const ran = await as(tokens.writer, [
      'run',
      '--service',
      service,
      '--ttl',
      '1m',
      '--',
      'sh',
      '-c',
      'echo "$TRACKER_SERVICE"',
    ]);
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(ran.stdout, `${service}\n`);
  });

  test('no token, or an unknown one: exit 1 with one line (401)', async () => {
    const none = await as(null, ['lock', 'list']);
    assert.equal(none.code, 1);
    assert.equal(
      none.stderr,
      'tracker: unauthenticated: a valid bearer token is required (set TRACKER_TOKEN or pass --token)\n',
    );
    const unknown = await as('trk_not-a-token', ['lock', 'acquire', '--service', unique('x')]);
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr, 'tracker: unauthenticated: a valid bearer token is required\n');
    const ran = await as(null, ['run', '--service', unique('x'), '--', 'sh', '-c', 'echo ran']);
    assert.equal(ran.code, 1);
    assert.equal(ran.stdout, '', 'the command did not run');
  });

  test('scopes and service patterns: exit 1 with one line (403)', async () => {
    const reader = await as(tokens.reader, ['lock', 'acquire', '--service', unique('read-only')]);
    assert.equal(reader.code, 1);
    assert.equal(reader.stderr, 'tracker: permission denied: this token lacks the lock:write scope\n');
    const run = await as(tokens.reader, [
      'run',
      '--service',
      unique('read-only'),
      '--',
      'sh',
      '-c',
      'echo ran',
    ]);
    assert.equal(run.code, 1);
    assert.equal(run.stdout, '');

    const deploy = unique('deploy');
    const own = await as(tokens.deployer, ['lock', 'acquire', '--service', deploy]);
    assert.equal(own.code, 0, own.stderr);
    const other = await as(tokens.deployer, ['lock', 'acquire', '--service', unique('other')]);
    assert.equal(other.code, 1);
    assert.match(
      other.stderr,
      /^tracker: permission denied: this token may not use the service "other-[0-9a-f]+"\n$/,
    );
    assert.equal((await as(tokens.deployer, ['lock', 'release', own.stdout.trim()])).code, 0);
  });

  test("another token's lock: release refused (403); an admin token may release it", async () => {
    const service = unique('deploy-shared');
    const id = (await as(tokens.writer, ['lock', 'acquire', '--service', service])).stdout.trim();
    assert.match(id, /^[0-9a-f-]{36}$/);
    const refused = await as(tokens.deployer, ['lock', 'release', id]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^tracker: permission denied: [^\n]+\n$/);
    const admin = await as(tokens.admin, ['lock', 'release', id]);
    assert.equal(admin.code, 0, admin.stderr);
    assert.equal((await as(tokens.admin, ['lock', 'get', id])).code, 1, 'gone');
  });

  test('a token created while the server runs is accepted without a restart (the file is watched)', async () => {
    const late = await createToken(file, unique('late'), 'lock:read');
    await waitFor(async () => (await listStatus(server.baseUrl, late)) === 200, {
      what: 'the server to accept the new token',
    });
    const listed = await as(late, ['lock', 'list']);
    assert.equal(listed.code, 0, listed.stderr);
  });
});

describe('tracker server reloads the tokens file on SIGHUP', () => {
  test('a token revoked where no watch sees it is refused after SIGHUP', async () => {
    // The server is given a symbolic link to the file, in another folder: it watches the
    // link's folder, so a change made through the real path is seen only on SIGHUP.
    const dir = tempDir();
    let server: ServerProcess | undefined;
    try {
      mkdirSync(join(dir.path, 'real'));
      mkdirSync(join(dir.path, 'link'));
      const real = join(dir.path, 'real', 'tokens.json');
      const link = join(dir.path, 'link', 'tokens.json');
      // lock:write (which includes lock:read): it takes locks to read the server's clock.
      const kept = addToken(real, { name: 'kept', scopes: ['lock:write'] });
      const doomed = addToken(real, { name: 'doomed', scopes: ['lock:read'] });
      symlinkSync(real, link);
      server = await startServerProcess({ args: [...FREE_ARGS, '--auth-tokens-file', link] });
      const base = server.baseUrl;
      const list = (token: string) =>
        trackerWith({ TRACKER_URL: base, TRACKER_TOKEN: token }, ['lock', 'list']);
      /** The server's clock, in unix ms: when it took a lock (released at once) for `kept`. */
      const serverClock = async () => {
        const headers = { authorization: `Bearer ${kept}`, 'content-type': 'application/json' };
        const taken = await fetch(`${base}${API}/lock`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ service: 'server-clock', who: 'sighup-test' }),
        });
        assert.equal(taken.status, 201);
        const lock = (await taken.json()) as { id: string; createdAt: string };
        const released = await fetch(`${base}${API}/lock/${lock.id}`, { method: 'DELETE', headers });
        assert.equal(released.status, 200);
        return Date.parse(lock.createdAt);
      };
      assert.equal(await listStatus(base, doomed), 200);

      const revoked = await trackerWith({}, ['token', 'revoke', '--name', 'doomed', '--file', real]);
      assert.equal(revoked.code, 0, revoked.stderr);
      // A watch that saw the change would have seen it by the server's first answer after
      // it, and reloaded 100 ms later (its debounce). Once the server's clock is well past
      // that, a request is answered after any such reload: the token must still work.
      const changeSeenBy = await serverClock();
      await waitFor(async () => (await serverClock()) >= changeSeenBy + 300, {
        what: "the server's clock 300 ms past its first answer after the change",
        intervalMs: 25,
      });
      assert.equal(await listStatus(base, doomed), 200, 'not reloaded yet: no watch saw the change');
      assert.ok(!server.lines.some((line) => line.includes('"tokens reloaded"')), 'no reload before SIGHUP');

      server.child.kill('SIGHUP');
      await waitFor(async () => (await listStatus(base, doomed)) === 401, {
        what: 'the revoked token refused after SIGHUP',
      });
      const refusedAfter = await list(doomed);
      assert.equal(refusedAfter.code, 1);
      assert.equal(refusedAfter.stderr, 'tracker: unauthenticated: a valid bearer token is required\n');
      assert.equal(await listStatus(base, kept), 200, 'the other token still works');
      // Log lines are written asynchronously: wait for it.
      await waitFor(
        () =>
          server?.lines.some(
            (line) => line.includes('"tokens reloaded"') && line.includes('"why":"SIGHUP"'),
          ) ?? false,
        { what: 'the server logged the reload' },
      );
    } finally {
      await server?.stop();
      dir.remove();
    }
  });
});

describe('tracker client commands over TLS', () => {
  let tls: TlsFiles;
  let server: ServerProcess;
  let mutual: ServerProcess;
  const httpsUrl = (target: ServerProcess) => `https://127.0.0.1:${target.httpPort}`;

  before(async () => {
    tls = makeTlsFiles();
    const serving = ['--tls-cert', tls.serverCert, '--tls-key', tls.serverKey];
    [server, mutual] = await Promise.all([
      startServerProcess({ args: [...FREE_ARGS, ...serving] }),
      startServerProcess({ args: [...FREE_ARGS, ...serving, '--tls-ca', tls.ca] }),
    ]);
  });
  after(async () => {
    await server?.stop();
    await mutual?.stop();
    tls?.remove();
  });

  test('https:// with --ca-file (or TRACKER_CA_FILE) works; without the CA it fails with one clear line', async () => {
    const url = httpsUrl(server);
    const service = unique('tls');
    const acquired = await trackerWith({}, [
      'lock',
      'acquire',
      '--service',
      service,
      '--url',
      url,
      '--ca-file',
      tls.ca,
    ]);
    assert.equal(acquired.code, 0, acquired.stderr);
    const listed = await trackerWith({ TRACKER_URL: url, TRACKER_CA_FILE: tls.ca }, [
      'lock',
      'list',
      '--json',
    ]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      (JSON.parse(listed.stdout) as Array<{ id: string }>).map((lock) => lock.id),
      [acquired.stdout.trim()],
    );
    const released = await trackerWith({ TRACKER_CA_FILE: tls.ca }, [
      'lock',
      'release',
      acquired.stdout.trim(),
      '--url',
      url,
    ]);
    assert.equal(released.code, 0, released.stderr);

    const untrusted = await trackerWith({ TRACKER_URL: url }, ['lock', 'list']);
    assert.equal(untrusted.code, 1);
    assert.match(
      untrusted.stderr,
      /^tracker: cannot reach Tracker at https:\/\/127\.0\.0\.1:\d+: the server's TLS certificate is not trusted \([A-Z_]+\): give the CA certificate that signed it \(TRACKER_CA_FILE\)\n$/,
    );
    // A CA for a plaintext URL, or a CA file that is not there: usage errors.
    const plain = await trackerWith({}, ['lock', 'list', '--url', 'http://127.0.0.1:1', '--ca-file', tls.ca]);
    assert.equal(plain.code, 2);
    assert.match(plain.stderr, /apply to https:\/\/ URLs only/);
    const missing = await trackerWith({}, [
      'lock',
      'list',
      '--url',
      url,
      '--ca-file',
      join(tls.dir, 'nope.pem'),
    ]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^tracker: cannot read the CA file .*nope\.pem \(ENOENT\); see --help\n$/);
  });

  test('mutual TLS: a client certificate signed by the CA is accepted; none is refused', async () => {
    const url = httpsUrl(mutual);
    const withCert = await trackerWith({ TRACKER_URL: url, TRACKER_CA_FILE: tls.ca }, [
      'run',
      '--service',
      unique('mtls'),
      '--cert-file',
      tls.clientCert,
      '--key-file',
      tls.clientKey,
      '--',
      'sh',
      '-c',
      'echo ran',
    ]);
    assert.equal(withCert.code, 0, withCert.stderr);
    assert.equal(withCert.stdout, 'ran\n');
    const fromEnv = await trackerWith(
      {
        TRACKER_URL: url,
        TRACKER_CA_FILE: tls.ca,
        TRACKER_CLIENT_CERT_FILE: tls.clientCert,
        TRACKER_CLIENT_KEY_FILE: tls.clientKey,
      },
      ['lock', 'list'],
    );
    assert.equal(fromEnv.code, 0, fromEnv.stderr);

    const without = await trackerWith({ TRACKER_URL: url, TRACKER_CA_FILE: tls.ca }, ['lock', 'list']);
    assert.equal(without.code, 1);
    assert.match(without.stderr, /^tracker: cannot reach Tracker at https:.*client certificate[^\n]*\n$/);
    const halfOfIt = await trackerWith({ TRACKER_URL: url, TRACKER_CA_FILE: tls.ca }, [
      'lock',
      'list',
      '--cert-file',
      tls.clientCert,
    ]);
    assert.equal(halfOfIt.code, 2);
    assert.match(halfOfIt.stderr, /go together/);
  });
});
