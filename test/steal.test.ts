import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { addToken } from '../src/auth/token-file.js';
import {
  type LockMessage,
  type LockServiceClient,
  lockServiceClient,
  unaryOutcome,
} from './support/grpc-client.js';
import { API, call } from './support/rest.js';
import {
  ROOT,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';
import { waitFor, within } from './support/wait-for.js';

/** Steal, with a reason (issue 18, point 4), end to end with authentication on. */

const CLI = join(ROOT, 'dist/src/cli/main.js');
const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

interface Lock {
  id: string;
  service: string;
  who: string;
  owner: string | null;
  fencingToken: number;
  note: string | null;
}

interface Event {
  type: string;
  who: string;
  reason: string | null;
  lock: { id: string };
  stolenBy: { lockId: string; who: string; owner: string | null } | null;
}

describe('steal on one server (tokens file)', () => {
  const dir = tempDir();
  const file = join(dir.path, 'tokens.yaml');
  const tokens = {
    writer: addToken(file, { name: 'writer', scopes: ['lock:write'] }),
    admin: addToken(file, { name: 'admin', scopes: ['lock:admin'] }),
    deployAdmin: addToken(file, { name: 'deploy-admin', scopes: ['lock:admin'], services: ['deploy-*'] }),
  };
  let server: ServerProcess;
  let grpc: LockServiceClient;
  const rest = (method: string, path: string, token: string, body?: unknown) =>
    call(server.baseUrl, method, `${API}${path}`, body, { headers: { authorization: `Bearer ${token}` } });
  const take = async (service: string, body: Record<string, unknown> = {}) => {
    const reply = await rest('POST', '/lock', tokens.writer, { service, who: 'nightly', ...body });
    assert.equal(reply.status, 201, JSON.stringify(reply.json));
    return reply.json as unknown as Lock;
  };
  const historyOf = async (service: string) =>
    ((await rest('GET', `/history?service=${service}`, tokens.admin)).json as { events: Event[] }).events;

  before(async () => {
    server = await startServerProcess({
      args: [
        ...['--http-port', '0', '--grpc-port', '0'],
        ...['--database-url', `sqlite:${join(dir.path, 'steal.db')}`, '--auth-tokens-file', file],
      ],
    });
    grpc = lockServiceClient(server.grpcAddress);
  });
  after(async () => {
    grpc?.close();
    await server?.stop();
    dir.remove();
  });

  test('REST: the admin takes the service at once, ahead of the queue; the history says who and why', async () => {
    const service = unique('db');
    const old = await take(service, { ttlSeconds: 600 });
    const waiting = rest('POST', '/lock', tokens.writer, { service, who: 'patient', waitSeconds: 30 });
    await waitFor(
      async () =>
        ((await rest('GET', `/queue/${service}`, tokens.admin)).json as { waiters: unknown[] }).waiters
          .length === 1,
      { what: 'the waiter in line' },
    );
    const reply = await rest('POST', `/lock/${old.id}/steal`, tokens.admin, {
      who: 'oncall',
      reason: 'prod is down',
      ttlSeconds: 120,
      note: 'hotfix',
    });
    assert.equal(reply.status, 201, JSON.stringify(reply.json));
    const { lock, stolen } = reply.json as unknown as { lock: Lock; stolen: Lock };
    assert.equal(stolen.id, old.id);
    assert.deepEqual([lock.service, lock.who, lock.owner, lock.note], [service, 'oncall', 'admin', 'hotfix']);
    assert.ok(lock.fencingToken > old.fencingToken);
    // The old holder's renewal: not held (its tools stop the work on that).
    const renewal = await rest('POST', `/lock/${old.id}/renew`, tokens.writer, {});
    assert.equal(renewal.status, 404);
    assert.equal(renewal.json.code, 'LOCK_NOT_HELD');
    const queue = (await rest('GET', `/queue/${service}`, tokens.admin)).json as {
      holders: Lock[];
      waiters: Array<{ who: string }>;
    };
    assert.deepEqual(
      queue.holders.map((holder) => holder.id),
      [lock.id],
    );
    assert.deepEqual(
      queue.waiters.map((waiter) => waiter.who),
      ['patient'],
    );
    const [acquired, theft] = await historyOf(service);
    assert.equal(acquired?.type, 'acquired');
    assert.equal(theft?.type, 'stolen');
    assert.equal(theft?.who, 'nightly');
    assert.equal(theft?.reason, 'prod is down');
    assert.deepEqual(theft?.stolenBy, { lockId: lock.id, who: 'oncall', owner: 'admin' });
    // The waiter gets the service after the thief, as after any holder.
    await rest('DELETE', `/lock/${lock.id}`, tokens.admin);
    const granted = await waiting;
    assert.equal(granted.status, 201);
    assert.equal((granted.json as unknown as Lock).who, 'patient');
  });

  test('REST: only lock:admin steals, of its own services; a reason and a who are required', async () => {
    const service = unique('db');
    const old = await take(service);
    const byWriter = await rest('POST', `/lock/${old.id}/steal`, tokens.writer, {
      who: 'me',
      reason: 'mine now',
    });
    assert.equal(byWriter.status, 403, JSON.stringify(byWriter.json));
    const limited = await rest('POST', `/lock/${old.id}/steal`, tokens.deployAdmin, {
      who: 'me',
      reason: 'r',
    });
    assert.equal(limited.status, 404, 'a lock of a service the admin may not use is unknown to it');
    for (const [body, field] of [
      [{ who: 'me' }, 'reason'],
      [{ who: 'me', reason: '' }, 'reason'],
      [{ who: 'me', reason: '   ' }, 'reason'],
      [{ who: 'me', reason: 'a\u0007' }, 'reason'],
      [{ reason: 'r' }, 'who'],
      [{ who: 'me', reason: 'r', ttlSeconds: 0 }, 'ttlSeconds'],
      [{ who: 'me', reason: 'r', link: 'https://x.example/' }, 'link'],
    ] as const) {
      const reply = await rest('POST', `/lock/${old.id}/steal`, tokens.admin, body);
      assert.equal(reply.status, 400, `${JSON.stringify(body)}: ${JSON.stringify(reply.json)}`);
      assert.equal(reply.json.field, field, JSON.stringify(reply.json));
    }
    assert.equal((await rest('GET', `/lock/${old.id}`, tokens.writer)).status, 200, 'nothing was stolen');
    const unknown = await rest('POST', `/lock/${randomUUID()}/steal`, tokens.admin, {
      who: 'me',
      reason: 'r',
    });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.code, 'LOCK_NOT_FOUND');
  });

  test('gRPC: StealLock answers both locks; a missing reason is INVALID_ARGUMENT', async () => {
    const service = unique('grpc');
    const old = await take(service);
    const metadata = { authorization: `Bearer ${tokens.admin}` };
    const refused = await unaryOutcome(grpc, 'StealLock', { id: old.id, who: 'oncall' }, metadata);
    assert.equal(refused.error?.code, 3);
    assert.equal(refused.error?.metadata.get('tracker-field')[0], 'reason');
    const { response, error } = await unaryOutcome(
      grpc,
      'StealLock',
      { id: old.id, who: 'oncall', reason: 'rollback' },
      metadata,
    );
    assert.equal(error, undefined);
    const { lock, stolen } = response as unknown as { lock: LockMessage; stolen: LockMessage };
    assert.equal(stolen.id, old.id);
    assert.deepEqual([lock.service, lock.who, lock.owner], [service, 'oncall', 'admin']);
  });

  test('CLI: tracker lock steal prints the new id; a tracker run whose lock is stolen stops its command (exit 75)', async () => {
    const service = unique('run');
    const env = { ...process.env, TRACKER_URL: server.baseUrl, TRACKER_TOKEN: tokens.writer };
    const marker = join(dir.path, `${service}.started`);
    // `tracker run` renews every third of its 3 s lease; the command would run for a minute.
    const run = spawn(
      process.execPath,
      [
        CLI,
        'run',
        '--service',
        service,
        '--ttl',
        '3s',
        '--kill-grace',
        '1s',
        '--',
        'sh',
        '-c',
        `touch ${marker}; sleep 60`,
      ],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    run.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => run.once('exit', (code) => resolve(code)));
    try {
      const held = await waitFor(
        async () => {
          const reply = await rest('GET', `/locks/list?service=${service}`, tokens.writer);
          return (reply.json as { locks: Lock[] }).locks[0] ?? null;
        },
        { what: 'tracker run to hold the lock' },
      );
      const steal = await runToExit(
        process.execPath,
        [CLI, 'lock', 'steal', held.id, '--reason', 'emergency', '--who', 'oncall'],
        { env: { ...env, TRACKER_TOKEN: tokens.admin }, timeoutMs: 30_000 },
      );
      assert.equal(steal.code, 0, steal.stderr);
      const newId = steal.stdout.trim();
      assert.match(steal.stderr, new RegExp(`took ${service} from .* \\(lock ${held.id} ended\\)`));
      assert.equal(
        ((await rest('GET', `/lock/${newId}`, tokens.admin)).json as unknown as Lock).who,
        'oncall',
      );
      assert.equal(
        await within(exited, { what: 'tracker run to stop once its lock is gone', timeoutMs: 20_000 }),
        75,
      );
      assert.match(stderr, /lost/i);
      const missing = await runToExit(process.execPath, [CLI, 'lock', 'steal', newId], {
        env: { ...env, TRACKER_TOKEN: tokens.admin },
        timeoutMs: 30_000,
      });
      assert.equal(missing.code, 2, 'no --reason: a usage error');
    } finally {
      run.kill('SIGKILL');
    }
  });
});
