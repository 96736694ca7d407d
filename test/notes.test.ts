import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { addToken } from '../src/auth/token-file.js';
import {
  type LockMessage,
  type LockServiceClient,
  lockServiceClient,
  unary,
  unaryOutcome,
} from './support/grpc-client.js';
import { API, call } from './support/rest.js';
import {
  FREE_ARGS,
  ROOT,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

/** Notes and links end to end (issue 18, point 3): REST, gRPC, the CLI, the rules on input. */

const CLI = join(ROOT, 'dist/src/cli/main.js');
const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const LINK = 'https://ci.example.com/acme/app/actions/runs/42';

interface Lock {
  id: string;
  service: string;
  note: string | null;
  link: string | null;
}

describe('notes and links on one server', () => {
  const dir = tempDir();
  let server: ServerProcess;
  let grpc: LockServiceClient;
  const rest = (method: string, path: string, body?: unknown) =>
    call(server.baseUrl, method, `${API}${path}`, body);

  before(async () => {
    server = await startServerProcess({
      args: [
        '--http-port',
        '0',
        '--grpc-port',
        '0',
        '--database-url',
        `sqlite:${join(dir.path, 'notes.db')}`,
      ],
    });
    grpc = lockServiceClient(server.grpcAddress);
  });
  after(async () => {
    grpc?.close();
    await server?.stop();
    dir.remove();
  });

  test('REST: an acquire takes a note and a link; the lock, the list, the queue and the history show them', async () => {
    const service = unique('deploy');
    const taken = await rest('POST', '/lock', { service, who: 'ci', note: 'v2.3 to prod', link: LINK });
    assert.equal(taken.status, 201, JSON.stringify(taken.json));
    const lock = taken.json as unknown as Lock;
    assert.deepEqual([lock.note, lock.link], ['v2.3 to prod', LINK]);
    assert.equal(((await rest('GET', `/lock/${lock.id}`)).json as unknown as Lock).note, 'v2.3 to prod');
    const listed = (await rest('GET', `/locks/list?service=${service}`)).json as { locks: Lock[] };
    assert.deepEqual(
      listed.locks.map((held) => held.link),
      [LINK],
    );
    const refused = await rest('POST', '/lock', { service, who: 'other' });
    assert.equal(refused.status, 409);
    assert.equal((refused.json.existingLock as Lock).note, 'v2.3 to prod', 'a 409 says why it is held');
    // A waiter's note shows in the queue, and its lock carries it once granted.
    const waiting = rest('POST', '/lock', { service, who: 'next', waitSeconds: 30, note: 'then v2.4' });
    const queue = await waitFor(
      async () => {
        const reply = (await rest('GET', `/queue/${service}`)).json as {
          waiters: Array<{ note: string | null }>;
        };
        return reply.waiters.length === 1 ? reply : null;
      },
      { what: 'the waiter in the queue' },
    );
    assert.equal(queue.waiters[0]?.note, 'then v2.4');
    await rest('GET', `/unlock/${lock.id}`);
    const granted = await waiting;
    assert.equal(granted.status, 201);
    assert.deepEqual(
      [(granted.json as unknown as Lock).note, (granted.json as unknown as Lock).link],
      ['then v2.4', null],
    );
    const history = (await rest('GET', `/history?service=${service}`)).json as {
      events: Array<{ type: string; lock: { note: string | null; link: string | null } }>;
    };
    assert.deepEqual(
      history.events.map((event) => [event.type, event.lock.note]),
      [
        ['acquired', 'then v2.4'],
        ['dequeued', 'then v2.4'],
        ['released', 'v2.3 to prod'],
        ['queued', 'then v2.4'],
        ['acquired', 'v2.3 to prod'],
      ],
    );
  });

  test('REST: PATCH changes the note of a held lock, records noted; null clears it', async () => {
    const service = unique('patch');
    const lock = (
      await rest('POST', '/lock', { service, who: 'ci', ttlSeconds: 600, note: 'first', link: LINK })
    ).json as unknown as Lock & { expiresAt: string; fencingToken: number };
    const changed = await rest('PATCH', `/lock/${lock.id}`, { note: 'second' });
    assert.equal(changed.status, 200, JSON.stringify(changed.json));
    const after = changed.json as unknown as typeof lock;
    assert.deepEqual(
      [after.note, after.link, after.expiresAt, after.fencingToken],
      ['second', LINK, lock.expiresAt, lock.fencingToken],
    );
    const cleared = await rest('PATCH', `/lock/${lock.id}`, { note: null });
    assert.equal((cleared.json as unknown as Lock).note, null);
    const history = (await rest('GET', `/history?service=${service}`)).json as {
      events: Array<{ type: string; lock: { note: string | null } }>;
    };
    assert.deepEqual(
      history.events.map((event) => [event.type, event.lock.note]),
      [
        ['noted', null],
        ['noted', 'second'],
        ['acquired', 'first'],
      ],
    );
    await rest('GET', `/unlock/${lock.id}`);
    const gone = await rest('PATCH', `/lock/${lock.id}`, { note: 'late' });
    assert.equal(gone.status, 404);
    assert.equal(gone.json.code, 'LOCK_NOT_HELD');
  });

  test('REST: bad notes and links are 400s naming the field, and write nothing', async () => {
    const service = unique('bad');
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ note: 'a\u0007bell' }, 'note'],
      [{ note: 'x'.repeat(1025) }, 'note'],
      [{ note: 42 }, 'note'],
      [{ link: 'javascript:alert(1)' }, 'link'],
      [{ link: 'data:text/html,<b>x</b>' }, 'link'],
      [{ link: 'ftp://files.example.com/x' }, 'link'],
      [{ link: '/relative/path' }, 'link'],
      [{ link: 'https://user:secret@ci.example.com/' }, 'link'],
      [{ link: 'https://ci.example.com/a b' }, 'link'],
      [{ link: `https://ci.example.com/${'x'.repeat(2048)}` }, 'link'],
      [{ link: ['https://ci.example.com/'] }, 'link'],
    ];
    for (const [extra, field] of cases) {
      const reply = await rest('POST', '/lock', { service, who: 'ci', ...extra });
      assert.equal(reply.status, 400, `${JSON.stringify(extra).slice(0, 80)}: ${JSON.stringify(reply.json)}`);
      assert.equal(reply.json.code, 'INVALID_ARGUMENT');
      assert.equal(reply.json.field, field, JSON.stringify(reply.json));
    }
    assert.equal(((await rest('GET', `/locks/list?service=${service}`)).json as { total: number }).total, 0);
    const lock = (await rest('POST', '/lock', { service, who: 'ci' })).json as unknown as Lock;
    for (const body of [{ note: 'a\u0000' }, { note: 'x'.repeat(1025) }, {}, { note: 'ok', link: LINK }]) {
      const reply = await rest('PATCH', `/lock/${lock.id}`, body);
      assert.equal(reply.status, 400, JSON.stringify(reply.json));
    }
    assert.equal(((await rest('GET', `/lock/${lock.id}`)).json as unknown as Lock).note, null);
    // An empty note or link counts as none.
    const empty = (await rest('POST', '/lock', { service: unique('empty'), who: 'ci', note: '', link: '' }))
      .json as unknown as Lock;
    assert.deepEqual([empty.note, empty.link], [null, null]);
  });

  test('gRPC: CreateLock and AcquireLocks take note and link; UpdateLock changes the note', async () => {
    const service = unique('grpc');
    const lock = await unary<LockMessage>(grpc, 'CreateLock', {
      service,
      who: 'ci',
      note: 'from gRPC',
      link: LINK,
    });
    assert.deepEqual([lock.note, lock.link], ['from gRPC', LINK]);
    const updated = await unary<LockMessage>(grpc, 'UpdateLock', { id: lock.id, note: 'changed' });
    assert.deepEqual([updated.note, updated.link], ['changed', LINK]);
    const cleared = await unary<LockMessage>(grpc, 'UpdateLock', { id: lock.id, note: '' });
    assert.equal(cleared.note, '');
    const bad = await unaryOutcome(grpc, 'CreateLock', {
      service: unique('grpc-bad'),
      who: 'ci',
      link: 'javascript:x',
    });
    assert.equal(bad.error?.code, 3);
    assert.equal(bad.error?.metadata.get('tracker-field')[0], 'link');
    const [a, b] = [unique('grpc-a'), unique('grpc-b')];
    const group = await unary<{ id: string; locks: LockMessage[] }>(grpc, 'AcquireLocks', {
      who: 'ci',
      note: 'both',
      link: LINK,
      locks: [{ service: a }, { service: b }],
    });
    assert.deepEqual(
      group.locks.map((member) => [member.note, member.link]),
      [
        ['both', LINK],
        ['both', LINK],
      ],
    );
    await unary(grpc, 'UnLock', { id: lock.id });
    const gone = await unaryOutcome(grpc, 'UpdateLock', { id: lock.id, note: 'late' });
    assert.equal(gone.error?.code, 5);
  });

  test('CLI: lock acquire --note --link, the table shows them, lock note changes the note', async () => {
    const service = unique('cli');
    const env = { ...process.env, TRACKER_URL: server.baseUrl };
    const tracker = (args: string[]) =>
      runToExit(process.execPath, [CLI, ...args], { env, timeoutMs: 30_000 });
    const acquired = await tracker([
      'lock',
      'acquire',
      '--service',
      service,
      '--note',
      'from the CLI',
      '--link',
      LINK,
    ]);
    assert.equal(acquired.code, 0, acquired.stderr);
    const id = acquired.stdout.trim();
    const table = await tracker(['lock', 'list', '--service', service]);
    const [header, row] = table.stdout.trim().split('\n');
    assert.match(header ?? '', /^SERVICE +WHO +AGE +EXPIRES IN +TOKEN +WAITERS +LINK +NOTE$/);
    assert.ok(row?.endsWith(`${LINK}  from the CLI`), row);
    const noted = await tracker(['lock', 'note', id, '--note', 'changed']);
    assert.equal(noted.code, 0, noted.stderr);
    assert.equal(noted.stdout.trim(), `noted ${id}`);
    const held = await tracker(['lock', 'acquire', '--service', service]);
    assert.equal(held.code, 3);
    assert.match(held.stderr, new RegExp(`is held by .* \\(lock ${id}\\) — changed \\(${LINK}\\)`));
    const cleared = await tracker(['lock', 'note', id]);
    assert.equal(cleared.stdout.trim(), `cleared the note of ${id}`);
    const badLink = await tracker([
      'lock',
      'acquire',
      '--service',
      unique('cli-bad'),
      '--link',
      'file:///etc/passwd',
    ]);
    assert.notEqual(badLink.code, 0);
    assert.match(badLink.stderr, /link must be an absolute http/);
  });
});

describe('notes with authentication: only the holder (or an admin) changes a note', () => {
  const dir = tempDir();
  const file = join(dir.path, 'tokens.yaml');
  const tokens = {
    writer: addToken(file, { name: 'writer', scopes: ['lock:write'] }),
    other: addToken(file, { name: 'other', scopes: ['lock:write'] }),
    reader: addToken(file, { name: 'reader', scopes: ['lock:read'] }),
    admin: addToken(file, { name: 'admin', scopes: ['lock:admin'] }),
  };
  let server: ServerProcess;
  const rest = (method: string, path: string, token: string, body?: unknown) =>
    call(server.baseUrl, method, `${API}${path}`, body, { headers: bearer(token) });

  before(async () => {
    server = await startServerProcess({
      args: [...FREE_ARGS, '--auth-tokens-file', file],
    });
  });
  after(async () => {
    await server?.stop();
    dir.remove();
  });

  test("another token's PATCH and a read token's are 403, an admin's goes through", async () => {
    const lock = (
      await rest('POST', '/lock', tokens.writer, { service: unique('auth'), who: 'ci', note: 'mine' })
    ).json as unknown as Lock;
    const stranger = await rest('PATCH', `/lock/${lock.id}`, tokens.other, { note: 'hijacked' });
    assert.equal(stranger.status, 403, JSON.stringify(stranger.json));
    assert.equal(stranger.json.code, 'PERMISSION_DENIED', 'as for a renewal: another token’s lock');
    const reader = await rest('PATCH', `/lock/${lock.id}`, tokens.reader, { note: 'hijacked' });
    assert.equal(reader.status, 403, JSON.stringify(reader.json));
    const anonymous = await call(server.baseUrl, 'PATCH', `${API}/lock/${lock.id}`, { note: 'hijacked' });
    assert.equal(anonymous.status, 401);
    assert.equal(
      ((await rest('GET', `/lock/${lock.id}`, tokens.reader)).json as unknown as Lock).note,
      'mine',
    );
    const own = await rest('PATCH', `/lock/${lock.id}`, tokens.writer, { note: 'still mine' });
    assert.equal(own.status, 200);
    const admin = await rest('PATCH', `/lock/${lock.id}`, tokens.admin, { note: 'by the operator' });
    assert.equal(admin.status, 200);
    assert.equal((admin.json as unknown as Lock).note, 'by the operator');
  });
});
