/**
 * What a change to the tokens file does to a running server (a real process, its file
 * rewritten): ownership follows the token's identity, not its name; a token's service
 * patterns are checked on renew and release too; a lock id of a service a token may not see
 * answers like an unknown id; and revoking or narrowing a token ends what it had started
 * (watch streams, waiting acquires), over REST and gRPC.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { copyFileSync, mkdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { addToken, readTokenFile, revokeToken, type TokenEntry } from '../src/auth/token-file.js';
import {
  type LockServiceClient,
  lockServiceClient,
  serverStream,
  unaryOutcome,
  type WatchLocksMessage,
} from './support/grpc-client.js';
import { API, call } from './support/rest.js';
import { FREE_ARGS, type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';
import { openSse } from './support/sse.js';
import { waitFor, within } from './support/wait-for.js';

const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** A unary gRPC call with a bearer token; resolves with the response or the error. */
function grpcCall(
  client: LockServiceClient,
  method: string,
  request: object,
  token: string,
): Promise<{ response?: Record<string, unknown>; error?: ServiceError }> {
  return unaryOutcome(client, method, request, { authorization: `Bearer ${token}` });
}

/** Rewrites the tokens file atomically (as `tracker token` does), changing the named entries. */
function editEntries(file: string, change: (entry: TokenEntry) => TokenEntry | null): void {
  const tokens = readTokenFile(file).flatMap((entry) => change(entry) ?? []);
  const temporary = `${file}.${randomUUID()}.tmp`;
  writeFileSync(temporary, JSON.stringify({ tokens }, null, 2), { mode: 0o600 });
  renameSync(temporary, file);
}

describe('a tokens file rewritten under a running server', () => {
  const dir = tempDir();
  const file = join(dir.path, 'tokens.json');
  const tokens = {
    admin: addToken(file, { name: 'admin', scopes: ['lock:admin'] }),
    ci: addToken(file, { name: 'ci', scopes: ['lock:write'] }),
    deployer: addToken(file, { name: 'deployer', scopes: ['lock:write'], services: ['deploy-*'] }),
    aReader: addToken(file, { name: 'a-reader', scopes: ['lock:read'], services: ['a-*'] }),
    aWriter: addToken(file, { name: 'a-writer', scopes: ['lock:write'], services: ['a-*'] }),
    aAdmin: addToken(file, { name: 'a-admin', scopes: ['lock:admin'], services: ['a-*'] }),
    watcher: addToken(file, { name: 'watcher', scopes: ['lock:read'] }),
    waiter: addToken(file, { name: 'waiter', scopes: ['lock:write'] }),
    narrow: addToken(file, { name: 'narrow', scopes: ['lock:write'], services: ['n-*', 'm-*'] }),
  };
  const metadata = (token: string) => {
    const result = new Metadata();
    result.set('authorization', `Bearer ${token}`);
    return result;
  };
  const watchGrpc = (token: string, service = '') =>
    serverStream<WatchLocksMessage>(grpc, 'WatchLocks', { service }, 60_000, metadata(token));
  /** The waiters of a service, as an admin sees them. */
  const waiters = async (service: string) =>
    ((await rest('GET', `/queue/${service}`, tokens.admin)).json.waiters as { who: string }[]).map(
      (waiter) => waiter.who,
    );
  let server: ServerProcess;
  let grpc: LockServiceClient;
  const rest = (method: string, path: string, token: string, body?: unknown) =>
    call(server.baseUrl, method, `${API}${path}`, body, { headers: bearer(token) });
  /** How many reloads the server has logged; a test waits for the next one after an edit. */
  const reloads = () => server.lines.filter((line) => line.includes('"tokens reloaded"')).length;
  const reloaded = async (edit: () => void) => {
    const seen = reloads();
    edit();
    server.child.kill('SIGHUP');
    await waitFor(() => reloads() > seen, { what: 'the tokens file reloaded' });
  };

  before(async () => {
    server = await startServerProcess({
      args: [...FREE_ARGS, ...['--auth-tokens-file', file]],
    });
    grpc = lockServiceClient(server.grpcAddress);
  });
  after(async () => {
    grpc?.close();
    await server?.stop();
    dir.remove();
  });

  test("a new token under a revoked name owns none of the old one's locks (REST and gRPC)", async () => {
    const viaRest = await rest('POST', '/lock', tokens.ci, {
      service: unique('owned'),
      who: 'job',
      ttlSeconds: 60,
    });
    assert.equal(viaRest.status, 201);
    const viaGrpc = await grpcCall(
      grpc,
      'CreateLock',
      { service: unique('owned'), who: 'job', ttlSeconds: 60 },
      tokens.ci,
    );
    assert.equal(viaGrpc.response?.owner, 'ci');
    let successor = '';
    await reloaded(() => {
      assert.equal(revokeToken(file, 'ci'), true);
      successor = addToken(file, { name: 'ci', scopes: ['lock:write'] });
    });
    assert.equal((await rest('GET', '/locks/list', tokens.ci)).status, 401, 'the old token is gone');
    const restId = String(viaRest.json.id);
    const grpcId = String(viaGrpc.response?.id);
    for (const id of [restId, grpcId]) {
      const renew = await rest('POST', `/lock/${id}/renew`, successor, { ttlSeconds: 31_536_000 });
      assert.equal(renew.status, 403, JSON.stringify(renew.json));
      assert.equal(renew.json.code, 'PERMISSION_DENIED');
      assert.equal((await rest('DELETE', `/lock/${id}`, successor)).status, 403);
      assert.equal(
        (await grpcCall(grpc, 'RenewLock', { id, ttlSeconds: 31_536_000 }, successor)).error?.code,
        status.PERMISSION_DENIED,
      );
      assert.equal((await grpcCall(grpc, 'UnLock', { id }, successor)).error?.code, status.PERMISSION_DENIED);
      const lock = await rest('GET', `/lock/${id}`, successor);
      assert.equal(lock.status, 200);
      assert.equal(lock.json.owner, 'ci', 'the owner shown is still the name');
      assert.equal(lock.json.ttlSeconds, 60, 'not renewed');
    }
    assert.equal((await rest('DELETE', `/lock/${restId}`, tokens.admin)).status, 200, 'an admin releases it');
    assert.equal((await grpcCall(grpc, 'UnLock', { id: grpcId }, tokens.admin)).response?.success, true);
    const own = await rest('POST', '/lock', successor, { service: unique('own'), who: 'job' });
    assert.equal(
      (await rest('DELETE', `/lock/${own.json.id}`, successor)).status,
      200,
      'its own locks it releases',
    );
  });

  test("a token whose services no longer match a lock's may neither renew nor release it", async () => {
    const service = `deploy-${randomUUID().slice(0, 8)}`;
    const taken = await rest('POST', '/lock', tokens.deployer, { service, who: 'job', ttlSeconds: 60 });
    assert.equal(taken.status, 201);
    const id = String(taken.json.id);
    await reloaded(() =>
      editEntries(file, (entry) => (entry.name === 'deployer' ? { ...entry, services: ['web-*'] } : entry)),
    );
    const renew = await rest('POST', `/lock/${id}/renew`, tokens.deployer, { ttlSeconds: 31_536_000 });
    assert.deepEqual([renew.status, renew.json.code], [404, 'LOCK_NOT_HELD']);
    const release = await rest('DELETE', `/lock/${id}`, tokens.deployer);
    assert.deepEqual([release.status, release.json.code], [404, 'LOCK_NOT_FOUND']);
    const grpcRenew = await grpcCall(grpc, 'RenewLock', { id, ttlSeconds: 60 }, tokens.deployer);
    assert.equal(grpcRenew.error?.code, status.NOT_FOUND);
    assert.equal(grpcRenew.error?.metadata.get('tracker-code')[0], 'LOCK_NOT_HELD');
    assert.equal((await grpcCall(grpc, 'UnLock', { id }, tokens.deployer)).error?.code, status.NOT_FOUND);
    const held = await rest('GET', `/lock/${id}`, tokens.admin);
    assert.deepEqual([held.status, held.json.ttlSeconds], [200, 60], 'still held, not renewed');
    await reloaded(() =>
      editEntries(file, (entry) =>
        entry.name === 'deployer' ? { ...entry, services: ['deploy-*'] } : entry,
      ),
    );
    assert.equal((await rest('DELETE', `/lock/${id}`, tokens.deployer)).status, 200, 'allowed again');
  });

  test('a lock id of a service a token may not see answers as an unknown id: 404, never its service', async () => {
    const taken = await rest('POST', '/lock', tokens.admin, { service: unique('b-svc'), who: 'job' });
    assert.equal(taken.status, 201);
    const unknown = randomUUID();
    const answers = async (id: string) => ({
      get: await rest('GET', `/lock/${id}`, tokens.aReader),
      release: await rest('DELETE', `/lock/${id}`, tokens.aWriter),
      renew: await rest('POST', `/lock/${id}/renew`, tokens.aWriter),
      adminRelease: await rest('DELETE', `/lock/${id}`, tokens.aAdmin),
      adminRenew: await rest('POST', `/lock/${id}/renew`, tokens.aAdmin),
      force: await rest('POST', `/lock/${id}/force-release`, tokens.aAdmin),
      grpcGet: (await grpcCall(grpc, 'GetLock', { id }, tokens.aReader)).error,
      grpcUnlock: (await grpcCall(grpc, 'UnLock', { id }, tokens.aWriter)).error,
      grpcRenew: (await grpcCall(grpc, 'RenewLock', { id }, tokens.aAdmin)).error,
      grpcForce: (await grpcCall(grpc, 'ForceReleaseLock', { id }, tokens.aAdmin)).error,
    });
    const shown = (replies: Awaited<ReturnType<typeof answers>>) =>
      Object.fromEntries(
        Object.entries(replies).map(([key, reply]) => [
          key,
          reply && 'status' in reply
            ? [reply.status, reply.json]
            : [reply?.code, reply?.details, reply?.metadata.get('tracker-code')],
        ]),
      );
    const ofHidden = shown(await answers(String(taken.json.id)));
    assert.deepEqual(ofHidden, shown(await answers(unknown)), 'the same answers as for an unknown id');
    assert.deepEqual(ofHidden.get, [404, { error: 'lock not found', code: 'LOCK_NOT_FOUND' }]);
    assert.deepEqual(ofHidden.renew, [404, { error: 'lock not held', code: 'LOCK_NOT_HELD' }]);
    assert.deepEqual(ofHidden.force?.[0], 404);
    assert.deepEqual(ofHidden.grpcForce, [status.NOT_FOUND, 'lock not found', ['LOCK_NOT_FOUND']]);
    assert.equal((await rest('GET', `/lock/${taken.json.id}`, tokens.admin)).status, 200, 'still held');
    // A token without the scope at all is refused before the id is looked at: 403 tells nothing.
    const force = await rest('POST', `/lock/${taken.json.id}/force-release`, tokens.aWriter);
    assert.deepEqual([force.status, force.json.code], [403, 'PERMISSION_DENIED']);
  });

  test('revoking a token ends its SSE and gRPC watches and its waiting acquires (401 / UNAUTHENTICATED), granting it nothing', async () => {
    const service = unique('revoked');
    const holder = await rest('POST', '/lock', tokens.admin, { service, who: 'holder' });
    assert.equal(holder.status, 201);
    const sse = await openSse(`${server.baseUrl}${API}/watch`, bearer(tokens.watcher));
    const sseOne = await openSse(`${server.baseUrl}${API}/watch?service=${service}`, bearer(tokens.watcher));
    const stream = watchGrpc(tokens.watcher);
    const others = watchGrpc(tokens.admin, service);
    try {
      assert.equal((await sse.next()).event, 'snapshot');
      assert.equal((await sseOne.next()).event, 'snapshot');
      await stream.until((messages) => messages.length > 0);
      await others.until((messages) => messages.length > 0);
      const restWait = rest('POST', '/lock', tokens.waiter, { service, who: 'rest-waiter', waitSeconds: 60 });
      await waitFor(async () => (await waiters(service)).length === 1, { what: 'the REST waiter in line' });
      const grpcWait = grpcCall(
        grpc,
        'CreateLock',
        { service, who: 'grpc-waiter', waitSeconds: 60 },
        tokens.waiter,
      );
      await waitFor(async () => (await waiters(service)).length === 2, { what: 'the gRPC waiter in line' });

      await reloaded(() => {
        assert.equal(revokeToken(file, 'watcher'), true);
        assert.equal(revokeToken(file, 'waiter'), true);
      });

      const refused = await within(restWait, { what: 'the REST waiter refused' });
      assert.equal(refused.status, 401, JSON.stringify(refused.json));
      assert.equal(refused.json.code, 'UNAUTHENTICATED');
      const grpcRefused = await within(grpcWait, { what: 'the gRPC waiter refused' });
      assert.equal(grpcRefused.error?.code, status.UNAUTHENTICATED);
      assert.equal(grpcRefused.error?.metadata.get('tracker-code')[0], 'UNAUTHENTICATED');
      for (const watch of [sse, sseOne]) {
        // Events (the waiters queued and leaving) come first, then the error, then nothing.
        const last = (await watch.until((message) => message.event === 'error')).at(-1);
        assert.ok(last);
        assert.equal(last.event, 'error');
        assert.equal(last.json.code, 'UNAUTHENTICATED');
        await assert.rejects(watch.next(), /the stream ended/);
      }
      const ended = await within(stream.ended, { what: 'the gRPC watch ended' });
      assert.equal(ended.code, status.UNAUTHENTICATED, ended.details);
      assert.deepEqual(await waiters(service), [], 'both left the line');

      // Released now, the service goes to nobody; the admin's watch goes on and sees it.
      assert.equal((await rest('DELETE', `/lock/${holder.json.id}`, tokens.admin)).status, 200);
      await others.until((messages) => messages.some((message) => message.event?.type === 'released'));
      const queue = await rest('GET', `/queue/${service}`, tokens.admin);
      assert.deepEqual(
        [queue.json.holder, queue.json.waiters],
        [null, []],
        'nothing granted to a revoked waiter',
      );
      assert.equal(others.status, null, "the admin's stream still runs");
      await waitFor(
        () =>
          server.lines.some(
            (line) => line.includes('"watch stream closed"') && line.includes('"ended":"UNAUTHENTICATED"'),
          ),
        { what: 'the SSE stream logged as ended' },
      );
    } finally {
      sse.close();
      sseOne.close();
      stream.cancel();
      others.cancel();
    }
  });

  test('narrowing a token ends what it may no longer do (403 / PERMISSION_DENIED); the rest goes on', async () => {
    const kept = `n-${randomUUID().slice(0, 8)}`;
    const lost = `m-${randomUUID().slice(0, 8)}`;
    const holder = await rest('POST', '/lock', tokens.admin, { service: lost, who: 'holder' });
    assert.equal(holder.status, 201);
    const sseKept = await openSse(`${server.baseUrl}${API}/watch?service=${kept}`, bearer(tokens.narrow));
    const sseLost = await openSse(`${server.baseUrl}${API}/watch?service=${lost}`, bearer(tokens.narrow));
    const grpcLost = watchGrpc(tokens.narrow, lost);
    try {
      assert.equal((await sseKept.next()).event, 'snapshot');
      assert.equal((await sseLost.next()).event, 'snapshot');
      await grpcLost.until((messages) => messages.length > 0);
      const restWait = rest('POST', '/lock', tokens.narrow, {
        service: lost,
        who: 'waiter',
        waitSeconds: 60,
      });
      await waitFor(async () => (await waiters(lost)).length === 1, { what: 'the waiter in line' });

      await reloaded(() =>
        editEntries(file, (entry) => (entry.name === 'narrow' ? { ...entry, services: ['n-*'] } : entry)),
      );

      const refused = await within(restWait, { what: 'the waiter refused' });
      assert.deepEqual([refused.status, refused.json.code], [403, 'PERMISSION_DENIED']);
      const last = (await sseLost.until((message) => message.event === 'error')).at(-1);
      assert.deepEqual([last?.event, last?.json.code], ['error', 'PERMISSION_DENIED']);
      await assert.rejects(sseLost.next(), /the stream ended/);
      assert.equal(
        (await within(grpcLost.ended, { what: 'the gRPC watch ended' })).code,
        status.PERMISSION_DENIED,
      );
      assert.deepEqual(await waiters(lost), []);
      // The stream of a service still allowed goes on.
      const taken = await rest('POST', '/lock', tokens.narrow, { service: kept, who: 'still-allowed' });
      assert.equal(taken.status, 201);
      const next = await sseKept.next();
      assert.deepEqual(
        [next.event, next.json.service],
        ['acquired', kept],
        'the first event since its snapshot',
      );
    } finally {
      sseKept.close();
      sseLost.close();
      grpcLost.cancel();
    }
  });
});

describe('a tokens file in a Kubernetes Secret volume', () => {
  test('an update swapped in by the kubelet (a new folder, the ..data link renamed over) is read', async () => {
    const dir = tempDir();
    // The kubelet's layout: tokens.yaml -> ..data/tokens.yaml, ..data -> ..<timestamp>/.
    const version = (name: string) => {
      mkdirSync(join(dir.path, name));
      return join(dir.path, name, 'tokens.yaml');
    };
    const first = version('..2026_12_07_10_00_00');
    const admin = addToken(first, { name: 'admin', scopes: ['lock:admin'] });
    symlinkSync('..2026_12_07_10_00_00', join(dir.path, '..data'));
    symlinkSync('..data/tokens.yaml', join(dir.path, 'tokens.yaml'));
    const server = await startServerProcess({
      args: [...FREE_ARGS, '--auth-tokens-file', join(dir.path, 'tokens.yaml')],
    });
    try {
      const second = version('..2026_12_07_10_05_00');
      copyFileSync(first, second);
      const late = addToken(second, { name: 'late', scopes: ['lock:read'] });
      const before = await call(server.baseUrl, 'GET', `${API}/locks/list`, undefined, {
        headers: bearer(late),
      });
      assert.equal(before.status, 401, 'not in the file the server read');
      // The swap: a new link, renamed over ..data (one event, on ..data_tmp and ..data).
      symlinkSync('..2026_12_07_10_05_00', join(dir.path, '..data_tmp'));
      renameSync(join(dir.path, '..data_tmp'), join(dir.path, '..data'));
      await waitFor(
        async () =>
          (await call(server.baseUrl, 'GET', `${API}/locks/list`, undefined, { headers: bearer(late) }))
            .status === 200,
        { what: 'the token of the swapped-in file to be taken' },
      );
      const still = await call(server.baseUrl, 'GET', `${API}/locks/list`, undefined, {
        headers: bearer(admin),
      });
      assert.equal(still.status, 200);
    } finally {
      await server.stop();
      dir.remove();
    }
  });
});
