/**
 * Many holders (issue 16) from the client side, against one real server process: the SDK
 * (imported by the package's own name) and the `tracker` CLI as real child processes, with
 * `tracker run` printing the environment its command gets.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  LimitMismatchError,
  LockHeldError,
  type LockInfo,
  LockLostError,
  NoSuchLabelError,
  PermissionDeniedError,
  ResourceInUseError,
  ResourceNotFoundError,
  TrackerClient,
  WaitTimeoutError,
} from 'tracker-lock';
import { addToken } from '../src/auth/token-file.js';
import {
  FREE_ARGS,
  ROOT,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

const CLI = join(ROOT, 'dist/src/cli/main.js');
const API = '/api/v1alpha1';
const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

interface HistoryEvent {
  type: string;
  service: string;
  groupId: string | null;
  lock: { id: string };
}

describe('many holders from the SDK and the CLI', () => {
  let server: ServerProcess;
  let dir: ReturnType<typeof tempDir>;
  let client: TrackerClient;
  const env = () => ({ ...process.env, TRACKER_URL: server.baseUrl, TRACKER_TOKEN: '' });
  const tracker = (args: string[], timeoutMs = 30_000) =>
    runToExit(process.execPath, [CLI, ...args], { env: env(), timeoutMs, cwd: dir.path });
  /** `tracker run ARGS -- sh -c 'env'`: the exit, and the TRACKER_* variables the command got. */
  const runEnv = async (args: string[]) => {
    const result = await tracker(['run', ...args, '--', 'sh', '-c', 'env']);
    const vars = Object.fromEntries(
      result.stdout
        .split('\n')
        .filter(
          (line) =>
            line.startsWith('TRACKER_') &&
            !line.startsWith('TRACKER_URL=') &&
            !line.startsWith('TRACKER_TOKEN='),
        )
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    );
    return { ...result, vars };
  };
  const historyOf = async (service: string) => {
    const response = await fetch(`${server.baseUrl}${API}/history?service=${encodeURIComponent(service)}`);
    return ((await response.json()) as { events: HistoryEvent[] }).events;
  };
  const held = async (service: string) => (await client.list({ service })).locks;

  before(async () => {
    dir = tempDir();
    server = await startServerProcess({
      args: ['--http-port', '0', '--grpc-port', '0', '--database-url', `sqlite:${dir.path}/many.db`],
    });
    client = new TrackerClient({ url: server.baseUrl, token: null });
  });
  after(async () => {
    await server?.stop();
    dir?.remove();
  });

  describe('SDK', () => {
    test('acquire with limit, mode and priority; LockHeldError carries every holder; LimitMismatchError the limit', async () => {
      const service = unique('sdk-pool');
      const one = await client.acquire(service, { who: 'a', limit: 2 });
      const two = await client.acquire(service, { who: 'b', limit: 2, priority: 5 });
      assert.deepEqual([one.limit, one.mode, two.limit], [2, 'exclusive', 2]);
      const full = await client.acquire(service, { who: 'c', limit: 2 }).then(
        () => assert.fail('granted over the limit'),
        (error: unknown) => error,
      );
      assert.ok(full instanceof LockHeldError);
      assert.equal(full.existingLock.id, one.id);
      assert.deepEqual(full.holders.map((l) => l.id).sort(), [one.id, two.id].sort());
      const timedOut = await client.acquire(service, { who: 'd', limit: 2, wait: 1 }).catch((error) => error);
      assert.ok(timedOut instanceof WaitTimeoutError);
      assert.equal(timedOut.holders.length, 2);
      const mismatch = await client.acquire(service, { who: 'e', limit: 3 }).catch((error) => error);
      assert.ok(mismatch instanceof LimitMismatchError);
      assert.deepEqual(
        [mismatch.status, mismatch.service, mismatch.limit, mismatch.field],
        [409, service, 2, 'limit'],
      );
      await client.release(one.id);
      await client.release(two.id);

      const shared = await client.acquire(service, { who: 'reader', mode: 'shared' });
      assert.equal(shared.mode, 'shared');
      await client.release(shared.id);
    });

    test('resources: putResource (created, then replaced), getResource, listResources by label, acquire by label, deleteResource', async () => {
      const label = unique('sdk-phone');
      const name = unique('sdk-pixel');
      const made = await client.putResource(name, { labels: [label], properties: { serial: 'X1' } });
      assert.equal(made.created, true);
      assert.deepEqual(
        [made.resource.name, made.resource.capacity, made.resource.free, made.resource.description],
        [name, 1, 1, null],
      );
      const replaced = await client.putResource(name, {
        labels: [label],
        properties: { serial: 'X2' },
        capacity: 2,
        description: 'two seats',
      });
      assert.deepEqual([replaced.created, replaced.resource.capacity], [false, 2]);
      assert.deepEqual(await client.getResource(name), replaced.resource);
      assert.deepEqual(
        (await client.listResources({ label })).map((r) => r.name),
        [name],
      );

      const lock = await client.acquire(null, { label, who: 'job' });
      assert.equal(lock.service, name);
      assert.deepEqual(lock.resource, { name, labels: [label], properties: { serial: 'X2' } });
      await assert.rejects(client.deleteResource(name), ResourceInUseError);
      const noLabel = await client
        .acquire(null, { label: unique('none'), who: 'job' })
        .catch((error) => error);
      assert.ok(noLabel instanceof NoSuchLabelError);
      assert.equal(noLabel.status, 404);
      await client.release(lock.id);

      await client.deleteResource(name);
      await assert.rejects(client.getResource(name), ResourceNotFoundError);
      await assert.rejects(client.deleteResource(name), ResourceNotFoundError);
    });

    test('acquireGroup, getGroup, renewGroup, releaseGroup', async () => {
      const [a, b] = [unique('sdk-a'), unique('sdk-b')];
      const group = await client.acquireGroup({
        who: 'grouper',
        ttl: '1m',
        locks: [{ service: a }, { service: b, mode: 'shared' }],
      });
      assert.deepEqual(
        group.locks.map((l) => l.groupId),
        [group.id, group.id],
      );
      assert.deepEqual((await client.getGroup(group.id)).locks.length, 2);
      const renewed = await client.renewGroup(group.id, { ttl: '2m' });
      assert.deepEqual(
        renewed.locks.map((l) => l.ttlSeconds),
        [120, 120],
      );
      const released = await client.releaseGroup(group.id);
      assert.equal(released.locks.length, 2);
      assert.deepEqual(await held(a), []);
      await assert.rejects(client.getGroup(group.id), { code: 'LOCK_NOT_FOUND' });
    });

    test('withLocks renews the group while the function runs, and releases it afterwards, even when it throws', async () => {
      const [a, b] = [unique('with-a'), unique('with-b')];
      const seen = await client.withLocks(
        { who: 'with', ttl: 1, locks: [{ service: a }, { service: b }] },
        async (group) => {
          // Renewed (every third of the TTL) before the function returns.
          await waitFor(async () => (await historyOf(a)).some((event) => event.type === 'renewed'), {
            what: 'the group renewed',
          });
          assert.equal((await client.getGroup(group.id)).locks.length, 2);
          return group.id;
        },
      );
      assert.deepEqual(await held(a), []);
      assert.deepEqual(await held(b), []);
      const released = (await historyOf(b)).find((event) => event.type === 'released');
      assert.equal(released?.groupId, seen);

      await assert.rejects(
        client.withLocks({ who: 'with', locks: [{ service: a }] }, async () => {
          throw new Error('boom');
        }),
        /boom/,
      );
      assert.deepEqual(await held(a), []);
    });

    test('withLocks aborts the signal once a member is lost', async () => {
      const [a, b] = [unique('lost-a'), unique('lost-b')];
      const reason = await client.withLocks(
        { who: 'loser', ttl: 1, locks: [{ service: a }, { service: b }] },
        async (group, signal) => {
          const member = group.locks[0] as LockInfo;
          await client.forceRelease(member.id, { reason: 'test' });
          await waitFor(() => signal.aborted, { what: 'the signal aborted' });
          return signal.reason as unknown;
        },
      );
      assert.ok(reason instanceof LockLostError);
      assert.match(reason.message, /group .* was lost/);
    });
  });

  describe('tracker run', () => {
    test('--label: the command gets TRACKER_RESOURCES, TRACKER_RESOURCE_0 and its properties', async () => {
      const label = unique('cli-phone');
      const name = unique('cli-pixel');
      await client.putResource(name, {
        labels: [label],
        properties: { serial: 'ABC', 'os-version': '14', 'a.b': 'c' },
      });
      const result = await runEnv(['--label', label, '--ttl', '1m']);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.vars.TRACKER_RESOURCES, name);
      assert.equal(result.vars.TRACKER_RESOURCE_0, name);
      assert.equal(result.vars.TRACKER_RESOURCE_0_SERIAL, 'ABC');
      assert.equal(result.vars.TRACKER_RESOURCE_0_OS_VERSION, '14');
      assert.equal(result.vars.TRACKER_RESOURCE_0_A_B, 'c');
      assert.equal(result.vars.TRACKER_SERVICE, name);
      assert.match(result.vars.TRACKER_LOCK_ID ?? '', /^[0-9a-f-]{36}$/);
      assert.equal(result.vars.TRACKER_FENCING_TOKENS, result.vars.TRACKER_FENCING_TOKEN);
      assert.deepEqual(await held(name), [], 'released afterwards');

      const missing = await runEnv(['--label', unique('no-such')]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /no registered resource carries the label/);
      assert.equal(missing.stdout, '');
    });

    test('repeated --service and --label --quantity take a group: TRACKER_GROUP_ID and each resource in grant order', async () => {
      const [a, b] = [unique('cli-a'), unique('cli-b')];
      const result = await runEnv(['--service', a, '--service', b, '--ttl', '1m']);
      assert.equal(result.code, 0, result.stderr);
      const names = (result.vars.TRACKER_RESOURCES ?? '').split(',');
      assert.deepEqual([...names].sort(), [a, b].sort());
      assert.deepEqual([result.vars.TRACKER_RESOURCE_0, result.vars.TRACKER_RESOURCE_1], names);
      assert.equal((result.vars.TRACKER_FENCING_TOKENS ?? '').split(',').length, 2);
      assert.match(result.vars.TRACKER_GROUP_ID ?? '', /^[0-9a-f-]{36}$/);
      assert.equal(result.vars.TRACKER_LOCK_ID, undefined);
      const acquired = (await historyOf(a)).find((event) => event.type === 'acquired');
      assert.equal(acquired?.groupId, result.vars.TRACKER_GROUP_ID);
      assert.deepEqual(await held(a), []);
      assert.deepEqual(await held(b), []);

      const label = unique('cli-gpu');
      const gpus = [unique('gpu'), unique('gpu')];
      for (const gpu of gpus) await client.putResource(gpu, { labels: [label], properties: { slot: gpu } });
      const two = await runEnv(['--label', label, '--quantity', '2']);
      assert.equal(two.code, 0, two.stderr);
      assert.deepEqual((two.vars.TRACKER_RESOURCES ?? '').split(',').sort(), [...gpus].sort());
      assert.equal(two.vars.TRACKER_RESOURCE_0_SLOT, two.vars.TRACKER_RESOURCE_0);
      assert.equal(two.vars.TRACKER_RESOURCE_1_SLOT, two.vars.TRACKER_RESOURCE_1);
    });

    test('--limit joins a semaphore (another limit exits 1); --shared joins shared holders (exclusive exits 3)', async () => {
      const pool = unique('cli-pool');
      const first = await client.acquire(pool, { who: 'other', limit: 2 });
      const joined = await runEnv(['--service', pool, '--limit', '2']);
      assert.equal(joined.code, 0, joined.stderr);
      assert.equal(joined.vars.TRACKER_SERVICE, pool);
      const mismatch = await runEnv(['--service', pool]);
      assert.equal(mismatch.code, 1);
      assert.match(mismatch.stderr, /held \(or registered\) with limit 2: ask with --limit 2/);
      await client.release(first.id);

      const shared = unique('cli-shared');
      const reader = await client.acquire(shared, { who: 'reader', mode: 'shared' });
      assert.equal((await runEnv(['--service', shared, '--shared'])).code, 0);
      assert.equal((await runEnv(['--service', shared])).code, 3);
      await client.release(reader.id);
    });

    test('--priority: a waiting run is queued with its priority and runs once released', async () => {
      const service = unique('cli-prio');
      const holder = await client.acquire(service, { who: 'holder' });
      const waiting = runEnv(['--service', service, '--wait', '30s', '--priority', '7']);
      const queue = await waitFor(
        async () => {
          const line = await client.queue(service);
          return line.waiters.length === 1 ? line : null;
        },
        { what: 'the run in line' },
      );
      assert.equal(queue.waiters[0]?.priority, 7);
      await client.release(holder.id);
      const result = await waiting;
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.vars.TRACKER_SERVICE, service);
    });

    test("a group's heartbeat renews the group and the run releases it as one; a lost member stops the command (exit 75)", async () => {
      const [a, b] = [unique('beat-a'), unique('beat-b')];
      const child = spawn(
        process.execPath,
        [CLI, 'run', '--service', a, '--service', b, '--ttl', '1', '--', 'sh', '-c', 'read line'],
        { env: env(), stdio: ['pipe', 'ignore', 'pipe'] },
      );
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      for (const service of [a, b]) {
        await waitFor(async () => (await historyOf(service)).some((event) => event.type === 'renewed'), {
          what: `${service} renewed by the run`,
        });
      }
      child.stdin.end('done\n');
      assert.equal(await exited, 0);
      const [releasedA] = await historyOf(a);
      const [releasedB] = await historyOf(b);
      assert.deepEqual([releasedA?.type, releasedB?.type], ['released', 'released']);
      assert.equal(releasedA?.groupId, releasedB?.groupId);

      const lost = runToExit(
        process.execPath,
        [CLI, 'run', '--service', a, '--service', b, '--ttl', '3', '--kill-grace', '1s', '--', 'sleep', '60'],
        { env: env(), timeoutMs: 30_000 },
      );
      const member = await waitFor(async () => (await held(b))[0], { what: 'the group held' });
      await client.forceRelease(member.id, { reason: 'operator' });
      const result = await lost;
      assert.equal(result.code, 75);
      assert.match(result.stderr, /lost group .* \(renewal refused/);
    });

    test('usage errors exit 2 with one line', async () => {
      const cases: Array<[string[], RegExp]> = [
        [['--who', 'w'], /--service or --label is required/],
        [['--service', 's', '--quantity', '2'], /--quantity goes with --label/],
        [['--service', 's', '--limit', '2', '--shared'], /not with --shared/],
        [['--label', 'l', '--limit', '2'], /capacity is its limit/],
        [['--service', 's', '--limit', '0'], /--limit must be a whole number from 1 to 1000/],
        [['--label', 'l', '--quantity', '33'], /--quantity must be a whole number from 1 to 32/],
        [['--service', 's', '--priority', '1001'], /--priority must be a whole number from -1000 to 1000/],
        [['--service', 's', '--priority', 'high'], /--priority must be a whole number/],
      ];
      for (const [args, message] of cases) {
        const result = await tracker(['run', ...args, '--', 'true']);
        assert.equal(result.code, 2, args.join(' '));
        assert.match(result.stderr, message);
        assert.equal(result.stderr.trim().split('\n').length, 1);
      }
      const negative = await runEnv(['--service', unique('neg'), '--priority=-5']);
      assert.equal(negative.code, 0, negative.stderr);
    });
  });

  describe('tracker resource', () => {
    test('put, get, list and delete, as tables and as JSON', async () => {
      const label = unique('cli-label');
      const name = unique('cli-res');
      const put = await tracker([
        'resource',
        'put',
        name,
        '--label',
        label,
        '--label',
        'shelf-2',
        '--property',
        'serial=A=1',
        '--property',
        'os=14',
        '--capacity',
        '2',
        '--description',
        'the second phone',
      ]);
      assert.equal(put.code, 0, put.stderr);
      assert.equal(put.stdout, `created ${name}\n`);
      const again = await tracker([
        'resource',
        'put',
        name,
        '--label',
        label,
        '--property',
        'serial=A=1',
        '--json',
      ]);
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(JSON.parse(again.stdout).properties, { serial: 'A=1' });
      assert.equal(
        (await tracker(['resource', 'put', name, '--label', label, '--capacity', '2'])).stdout,
        `replaced ${name}\n`,
      );

      const lock = await client.acquire(name, { who: 'holder-7' });
      const got = await tracker(['resource', 'get', name]);
      assert.equal(got.code, 0, got.stderr);
      const [header, row] = got.stdout.split('\n');
      assert.match(header ?? '', /^NAME +CAPACITY +FREE +HOLDERS +WAITERS +LABELS$/);
      assert.match(row ?? '', new RegExp(`^${name} +2 +1 +1 +0 +${label}$`));
      assert.match(got.stdout, /holder-7/);
      const json = JSON.parse((await tracker(['resource', 'get', name, '--json'])).stdout);
      assert.equal(json.holders[0].id, lock.id);

      const listed = await tracker(['resource', 'list', '--label', label]);
      assert.equal(listed.code, 0);
      assert.equal(listed.stdout.trim().split('\n').length, 2);
      assert.deepEqual(
        JSON.parse((await tracker(['resource', 'list', '--label', label, '--json'])).stdout).map(
          (r: { name: string }) => r.name,
        ),
        [name],
      );
      assert.equal(
        (await tracker(['resource', 'list', '--label', unique('empty')])).stdout,
        'no resources\n',
      );

      const busy = await tracker(['resource', 'delete', name]);
      assert.equal(busy.code, 1);
      assert.match(busy.stderr, /held/);
      await client.release(lock.id);
      const deleted = await tracker(['resource', 'delete', name]);
      assert.equal(deleted.code, 0, deleted.stderr);
      assert.equal(deleted.stdout, `deleted ${name}\n`);
      const gone = await tracker(['resource', 'get', name]);
      assert.equal(gone.code, 1);
      assert.equal(gone.stderr, 'tracker: resource not found\n');
    });

    test('usage errors exit 2; --help lists the options', async () => {
      for (const args of [
        ['resource', 'put'],
        ['resource', 'put', 'x', '--property', 'novalue'],
        ['resource', 'put', 'x', '--property', 'k=1', '--property', 'k=2'],
        ['resource', 'put', 'x', '--capacity', '0'],
        ['resource', 'get', 'a', 'b'],
        ['resource', 'list', 'extra'],
        ['resource', 'frobnicate'],
      ]) {
        const result = await tracker(args);
        assert.equal(result.code, 2, args.join(' '));
        assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
      }
      const help = await tracker(['resource', 'put', '--help']);
      assert.equal(help.code, 0);
      assert.match(help.stdout, /--property K=V/);
      const run = await tracker(['run', '--help']);
      for (const flag of [
        '--label L',
        '--quantity N',
        '--limit N',
        '--shared',
        '--priority P',
        'TRACKER_RESOURCE_<i>',
      ]) {
        assert.ok(run.stdout.includes(flag), flag);
      }
      const top = await tracker(['--help']);
      assert.match(top.stdout, /resource list \[--label L\]/);
    });
  });
});

describe('many holders with authentication', () => {
  let server: ServerProcess;
  let dir: ReturnType<typeof tempDir>;
  const tokens = { admin: '', writer: '', reader: '', deployer: '' };
  const as = (token: string) => new TrackerClient({ url: server.baseUrl, token });

  before(async () => {
    dir = tempDir();
    const file = join(dir.path, 'tokens.json');
    tokens.admin = addToken(file, { name: 'admin', scopes: ['lock:admin'] });
    tokens.writer = addToken(file, { name: 'writer', scopes: ['lock:write'] });
    tokens.reader = addToken(file, { name: 'reader', scopes: ['lock:read'] });
    tokens.deployer = addToken(file, { name: 'deployer', scopes: ['lock:write'], services: ['deploy-*'] });
    server = await startServerProcess({
      args: [...FREE_ARGS, '--auth-tokens-file', file],
    });
  });
  after(async () => {
    await server?.stop();
    dir?.remove();
  });

  test('the registry is written with lock:admin only, and read with lock:read', async () => {
    const name = unique('auth-res');
    await assert.rejects(as(tokens.writer).putResource(name, {}), PermissionDeniedError);
    assert.equal((await as(tokens.admin).putResource(name, { labels: ['auth'] })).created, true);
    assert.equal((await as(tokens.reader).getResource(name)).name, name);
    assert.ok((await as(tokens.reader).listResources({ label: 'auth' })).some((r) => r.name === name));
    await assert.rejects(as(tokens.writer).deleteResource(name), PermissionDeniedError);
    await as(tokens.admin).deleteResource(name);
  });

  test("groups: a read token cannot take one, a token's service patterns bound every claim, another token's group is refused", async () => {
    const service = unique('deploy-auth');
    await assert.rejects(
      as(tokens.reader).acquireGroup({ who: 'r', locks: [{ service }] }),
      PermissionDeniedError,
    );
    await assert.rejects(
      as(tokens.deployer).acquireGroup({ who: 'd', locks: [{ service }, { service: unique('other') }] }),
      PermissionDeniedError,
    );
    const group = await as(tokens.deployer).acquireGroup({ who: 'd', locks: [{ service }] });
    assert.equal(group.locks[0]?.owner, 'deployer');
    await assert.rejects(as(tokens.writer).releaseGroup(group.id), {
      code: /PERMISSION_DENIED|LOCK_NOT_FOUND/,
    });
    assert.equal((await as(tokens.deployer).getGroup(group.id)).locks.length, 1, 'still held');
    assert.equal((await as(tokens.deployer).releaseGroup(group.id)).locks.length, 1);
  });
});
