/**
 * The gRPC API end to end, against the real server process (`node dist/src/main.js`).
 *
 * Every method is called at least once the way the guide's grpcurl commands call it: `buf
 * curl` with no .proto at hand, so the request and the response are encoded from the
 * server's reflection service alone. The many other calls (error cases, repeats) go through
 * a @grpc/grpc-js client loaded from the .proto, which is cheap (no process per call) and
 * sees the numeric status codes and the `tracker-*` trailers that clients branch on.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { bufFails, bufOk, bufRaw } from './support/buf-curl.js';
import {
  type LockMessage,
  type LockServiceClient,
  lockMessageAsJson,
  lockMessageAsRest,
  lockServiceClient,
  rejectsWith,
  SERVICE,
  unary,
} from './support/grpc-client.js';
import { type ServerProcess, startServerProcess } from './support/server-process.js';

const METHODS = [
  'AcquireLocks',
  'CreateLock',
  'DeleteResource',
  'ForceReleaseLock',
  'GetHistory',
  'GetLock',
  'GetLockGroup',
  'GetQueue',
  'GetResource',
  'ListLocks',
  'ListResources',
  'PutResource',
  'ReleaseLockGroup',
  'RenewLock',
  'RenewLockGroup',
  'StealLock',
  'UnLock',
  'UpdateLock',
  'WatchLocks',
] as const;
type Method = (typeof METHODS)[number];
const API = '/api/v1alpha1';

const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A lock as buf curl prints it. */
interface LockJson {
  id: string;
  service: string;
  who: string;
  createdAt: string;
  ttlSeconds?: number;
  expiresAt?: string;
  fencingToken: string;
  waiters?: number;
  limit: number;
  mode: string;
}

/** A ListLocks response as grpc-js decodes it (every field present). */
interface ListMessage {
  locks: LockMessage[];
  total: number;
  page: number;
  perPage: number;
}

/** A fresh service name, so tests sharing one server never collide. */
const uniqueService = (label: string) => `${label}-${randomUUID()}`;

async function rest(
  baseUrl: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const init: RequestInit = { method, signal: AbortSignal.timeout(10_000) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { 'content-type': 'application/json' };
  }
  const response = await fetch(`${baseUrl}${path}`, init);
  const text = await response.text();
  return { status: response.status, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

const NOT_FOUND = { 'tracker-code': 'LOCK_NOT_FOUND' };
/** LOCK_HELD's trailers when `id` is the one holder. */
const heldBy = (id: string) => ({
  'tracker-code': 'LOCK_HELD',
  'tracker-existing-lock-id': id,
  'tracker-holder-lock-ids': id,
  'tracker-holder-count': '1',
});
const invalid = (field: string) => ({ 'tracker-code': 'INVALID_ARGUMENT', 'tracker-field': field });

describe('gRPC on one server: through reflection (buf curl, no .proto) and a grpc-js client', () => {
  let server: ServerProcess;
  let address: string;
  let client: LockServiceClient;
  /** Through buf and reflection alone. */
  const ok = <T>(method: Method, body?: unknown) => bufOk<T>(address, `${SERVICE}/${method}`, body);
  /** Through the grpc-js client. */
  const rpc = <T>(method: Method, request: object) => unary<T>(client, method, request);
  const take = (service: string, who: string) => rpc<LockMessage>('CreateLock', { service, who });

  before(async () => {
    server = await startServerProcess();
    address = server.grpcAddress;
    client = lockServiceClient(address);
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });

  test('reflection lists the LockService, the health service and their methods', async () => {
    const base = `http://${address}`;
    const flags = ['curl', '--protocol', 'grpc', '--http2-prior-knowledge'];
    // buf wants the base URL for --list-methods (a URL with the service name in it is taken as a base path).
    const [services, methods] = await Promise.all([
      bufRaw([...flags, '--list-services', base]),
      bufRaw([...flags, '--list-methods', base]),
    ]);
    assert.equal(services.exitCode, 0, services.stderr);
    assert.deepEqual(services.stdout.trim().split('\n'), ['grpc.health.v1.Health', SERVICE]);
    assert.equal(methods.exitCode, 0, methods.stderr);
    assert.deepEqual(methods.stdout.trim().split('\n').sort(), [
      'grpc.health.v1.Health/Check',
      'grpc.health.v1.Health/Watch',
      ...METHODS.map((method) => `${SERVICE}/${method}`),
    ]);
  });

  test('CreateLock returns the lock: uuid id, service, who and a whole-second UTC createdAt', async () => {
    const service = uniqueService('production-deployment');
    const startedAt = Date.now();
    // The guide's call, through reflection.
    const lock = await ok<LockJson>('CreateLock', { service, who: 'ci-pipeline-123' });
    assert.deepEqual(Object.keys(lock).sort(), [
      'createdAt',
      'fencingToken',
      'id',
      'limit',
      'mode',
      'service',
      'who',
    ]);
    // A plain acquire is a mutex: one exclusive holder.
    assert.equal(lock.limit, 1);
    assert.equal(lock.mode, 'exclusive');
    assert.match(lock.fencingToken, /^[1-9]\d*$/);
    assert.match(lock.id, UUID);
    assert.equal(lock.service, service);
    assert.equal(lock.who, 'ci-pipeline-123');
    assert.match(lock.createdAt, TIMESTAMP);
    const createdAt = Date.parse(lock.createdAt);
    assert.ok(
      createdAt >= Math.floor(startedAt / 1000) * 1000 - 5000 && createdAt <= Date.now() + 5000,
      `createdAt ${lock.createdAt} is not about now`,
    );
    assert.deepEqual(await ok<LockJson>('GetLock', { id: lock.id }), lock);
  });

  test('CreateLock on a held service is ALREADY_EXISTS naming the holder and the lock id', async () => {
    const service = uniqueService('held');
    const lock = await take(service, 'ci-pipeline-123');
    const [other, same] = await Promise.all([
      // As grpcurl shows it: the status message alone.
      bufFails(address, `${SERVICE}/CreateLock`, { service, who: 'someone-else' }, 'already_exists'),
      // Not re-entrant: the holder asking again is refused too.
      rejectsWith(
        rpc('CreateLock', { service, who: 'ci-pipeline-123' }),
        status.ALREADY_EXISTS,
        heldBy(lock.id),
      ),
    ]);
    assert.equal(other, same.details, 'grpcurl shows the message grpc-js gets');
    for (const message of [other, same.details]) {
      assert.ok(message.includes('"ci-pipeline-123"'), `message does not name the holder: ${message}`);
      assert.ok(message.includes(lock.id), `message does not name the lock id: ${message}`);
      assert.ok(message.includes(lock.createdAt), `message does not say since when: ${message}`);
      assert.ok(!message.includes('someone-else'), `message names the caller, not the holder: ${message}`);
    }
    // The refused calls changed nothing.
    assert.deepEqual(await rpc('GetLock', { id: lock.id }), lock);
  });

  test('CreateLock rejects missing, empty, blank, overlong and control-character names, naming the field', async () => {
    const service = uniqueService('invalid');
    const cases: Array<{ body: Record<string, string>; field: 'service' | 'who'; rule: RegExp }> = [
      { body: {}, field: 'service', rule: /non-empty/ },
      { body: { who: 'x' }, field: 'service', rule: /non-empty/ },
      { body: { service }, field: 'who', rule: /non-empty/ },
      { body: { service: '', who: 'x' }, field: 'service', rule: /non-empty/ },
      { body: { service, who: '' }, field: 'who', rule: /non-empty/ },
      { body: { service: '   ', who: 'x' }, field: 'service', rule: /non-empty/ },
      { body: { service, who: ' \t ' }, field: 'who', rule: /non-empty/ },
      { body: { service: 's'.repeat(257), who: 'x' }, field: 'service', rule: /at most 256/ },
      { body: { service, who: 'w'.repeat(257) }, field: 'who', rule: /at most 256/ },
      { body: { service: 'bad\u0001name', who: 'x' }, field: 'service', rule: /control characters/ },
      { body: { service, who: 'line\nbreak' }, field: 'who', rule: /control characters/ },
      { body: { service, who: 'del\u007f' }, field: 'who', rule: /control characters/ },
      { body: { service: 'csi\u009b31m', who: 'x' }, field: 'service', rule: /control characters/ },
      { body: { service: 'deploy\u202eyalp', who: 'x' }, field: 'service', rule: /bidirectional.*U\+202E/ },
      { body: { service, who: '\u2066isolated\u2069' }, field: 'who', rule: /U\+2066/ },
      { body: { service: 'prod\u200bdeploy', who: 'x' }, field: 'service', rule: /invisible.*U\+200B/ },
      { body: { service, who: 'soft\u00adhyphen' }, field: 'who', rule: /U\+00AD/ },
      { body: { service: '\ufeffbom', who: 'x' }, field: 'service', rule: /U\+FEFF/ },
    ];
    const errors = await Promise.all(
      cases.map(({ body, field }) =>
        rejectsWith(rpc('CreateLock', body), status.INVALID_ARGUMENT, invalid(field)),
      ),
    );
    cases.forEach(({ body, field, rule }, index) => {
      const message = errors[index]?.details ?? '';
      assert.ok(
        message.startsWith(`${field} `),
        `${JSON.stringify(body)}: ${message} does not name ${field}`,
      );
      assert.match(message, rule, JSON.stringify(body));
    });
    // None of them took the lock.
    assert.deepEqual(await rpc('ListLocks', { service }), { locks: [], total: 0, page: 1, perPage: 100 });

    // 256 code points is the limit, not 256 bytes or UTF-16 units.
    const longest = await Promise.all([
      take(`${service}-`.padEnd(256, 's'), 'x'),
      take(service, '😀'.repeat(256)),
    ]);
    assert.equal(longest[0]?.service.length, 256);
    assert.equal(longest[1]?.who, '😀'.repeat(256));
  });

  test('names are kept in Unicode NFC: a decomposed café is the composed one in every method', async () => {
    const tag = randomUUID().slice(0, 8);
    const composed = `caf\u00e9-${tag}`;
    const decomposed = `cafe\u0301-${tag}`;
    const first = await take(decomposed, 'j\u00f6rg');
    assert.equal(first.service, composed);
    await rejectsWith(take(composed, 'jo\u0308rg'), status.ALREADY_EXISTS, heldBy(first.id));
    for (const service of [composed, decomposed]) {
      assert.deepEqual((await rpc<ListMessage>('ListLocks', { service })).locks, [first], service);
      assert.equal((await rpc<{ holder: LockMessage }>('GetQueue', { service })).holder.id, first.id);
    }
    assert.deepEqual(
      (await rpc<ListMessage>('ListLocks', { service: decomposed, who: 'jo\u0308rg' })).locks,
      [first],
    );
    const history = await rpc<{ events: Array<{ lock: { id: string } }> }>('GetHistory', {
      service: decomposed,
      who: 'jo\u0308rg',
    });
    assert.ok(history.events.some((event) => event.lock.id === first.id));
    await rpc('UnLock', { id: first.id });
  });

  test('GetLock returns the held lock; unknown, malformed and empty ids are NOT_FOUND', async () => {
    const lock = await take(uniqueService('get'), 'getter');
    assert.deepEqual(await rpc('GetLock', { id: lock.id }), lock);
    // Ids are compared in lower case.
    assert.deepEqual(await rpc('GetLock', { id: lock.id.toUpperCase() }), lock);
    const [guide, ...errors] = await Promise.all([
      // The guide's own example id, through reflection.
      bufFails(address, `${SERVICE}/GetLock`, { id: '507f1f77bcf86cd799439011' }, 'not_found'),
      ...[randomUUID(), '507f1f77bcf86cd799439011', "'; DROP TABLE locks; --", ''].map((id) =>
        rejectsWith(rpc('GetLock', { id }), status.NOT_FOUND, NOT_FOUND),
      ),
      rejectsWith(rpc('GetLock', {}), status.NOT_FOUND, NOT_FOUND),
    ]);
    for (const message of [guide, ...errors.map((error) => error.details)]) {
      assert.equal(message, 'lock not found');
    }
  });

  test('UnLock releases once; then GetLock and UnLock are NOT_FOUND and the service is free again', async () => {
    const service = uniqueService('unlock');
    const lock = await take(service, 'releaser');
    assert.deepEqual(await ok('UnLock', { id: lock.id }), {
      success: true,
      message: 'Lock released successfully',
    });
    const errors = await Promise.all([
      rejectsWith(rpc('UnLock', { id: lock.id }), status.NOT_FOUND, NOT_FOUND),
      rejectsWith(rpc('GetLock', { id: lock.id }), status.NOT_FOUND, NOT_FOUND),
      rejectsWith(rpc('UnLock', { id: randomUUID() }), status.NOT_FOUND, NOT_FOUND),
      rejectsWith(rpc('UnLock', { id: 'not-a-uuid' }), status.NOT_FOUND, NOT_FOUND),
      rejectsWith(rpc('UnLock', {}), status.NOT_FOUND, NOT_FOUND),
    ]);
    for (const error of errors) assert.equal(error.details, 'lock not found');
    const again = await take(service, 'next');
    assert.notEqual(again.id, lock.id);
    assert.equal(again.who, 'next');
  });

  test('REST and gRPC share one store: a gRPC lock is seen, refused and released over REST', async () => {
    const service = uniqueService('cross-grpc');
    const lock = await take(service, 'grpc-holder');

    const seen = await rest(server.baseUrl, 'GET', `${API}/lock/${lock.id}`);
    assert.equal(seen.status, 200);
    assert.deepEqual(seen.json, lockMessageAsRest(lock));

    const refused = await rest(server.baseUrl, 'POST', `${API}/lock`, { service, who: 'rest-caller' });
    assert.equal(refused.status, 409);
    assert.equal(refused.json.code, 'LOCK_HELD');
    assert.deepEqual(refused.json.existingLock, lockMessageAsRest(lock));

    const listed = await rest(
      server.baseUrl,
      'GET',
      `${API}/locks/list?service=${encodeURIComponent(service)}`,
    );
    assert.equal(listed.status, 200);
    assert.deepEqual(listed.json.locks, [lockMessageAsRest(lock)]);
    assert.equal(listed.json.total, 1);

    const released = await rest(server.baseUrl, 'GET', `${API}/unlock/${lock.id}`);
    assert.equal(released.status, 200);
    assert.deepEqual(released.json, { success: true, message: 'Lock released successfully' });

    await Promise.all([
      rejectsWith(rpc('GetLock', { id: lock.id }), status.NOT_FOUND, NOT_FOUND),
      rejectsWith(rpc('UnLock', { id: lock.id }), status.NOT_FOUND, NOT_FOUND),
    ]);
    assert.deepEqual(await rpc('ListLocks', { service }), { locks: [], total: 0, page: 1, perPage: 100 });
  });

  test('REST and gRPC share one store: a REST lock is seen, refused and released over gRPC', async () => {
    const service = uniqueService('cross-rest');
    const created = await rest(server.baseUrl, 'POST', `${API}/lock`, { service, who: 'rest-holder' });
    assert.equal(created.status, 201);
    const id = String(created.json.id);
    assert.match(id, UUID);

    const [seen, listed, refusal] = await Promise.all([
      rpc<LockMessage>('GetLock', { id }),
      rpc<ListMessage>('ListLocks', { service }),
      rejectsWith(rpc('CreateLock', { service, who: 'grpc-caller' }), status.ALREADY_EXISTS, heldBy(id)),
    ]);
    assert.deepEqual(lockMessageAsRest(seen), created.json);
    assert.deepEqual(listed, { locks: [seen], total: 1, page: 1, perPage: 100 });
    assert.ok(refusal.details.includes('"rest-holder"'), refusal.details);
    assert.ok(refusal.details.includes(id), refusal.details);

    assert.deepEqual(await rpc('UnLock', { id }), {
      success: true,
      message: 'Lock released successfully',
    });
    const gone = await rest(server.baseUrl, 'GET', `${API}/lock/${id}`);
    assert.equal(gone.status, 404);
    assert.equal(gone.json.code, 'LOCK_NOT_FOUND');
    const releasedTwice = await rest(server.baseUrl, 'GET', `${API}/unlock/${id}`);
    assert.equal(releasedTwice.status, 404);
    assert.equal(releasedTwice.json.code, 'LOCK_NOT_FOUND');
  });

  test('CreateLock with ttlSeconds and RenewLock: the lease fields, renewal, LOCK_NOT_HELD', async () => {
    const service = uniqueService('leased');
    // Through reflection: the JSON name ttlSeconds, then the proto name ttl_seconds.
    const lock = await ok<LockJson>('CreateLock', { service, who: 'leaser', ttlSeconds: 120 });
    assert.equal(lock.ttlSeconds, 120);
    assert.match(String(lock.expiresAt), TIMESTAMP);
    assert.equal(Date.parse(String(lock.expiresAt)) - Date.parse(lock.createdAt), 120_000);
    const renewed = await ok<LockJson>('RenewLock', { id: lock.id, ttl_seconds: 600 });
    assert.equal(renewed.ttlSeconds, 600);
    assert.equal(renewed.fencingToken, lock.fencingToken);
    assert.ok(Date.parse(String(renewed.expiresAt)) >= Date.parse(String(lock.expiresAt)) + 480_000);
    const again = await rpc<LockMessage>('RenewLock', { id: lock.id });
    assert.equal(again.ttlSeconds, 600, 'no ttlSeconds: the lock keeps its own');
    const rest200 = await rest(server.baseUrl, 'GET', `${API}/lock/${lock.id}`);
    assert.deepEqual(rest200.json, lockMessageAsRest(again));
    await rpc('UnLock', { id: lock.id });
    const notHeld = await rejectsWith(rpc('RenewLock', { id: lock.id }), status.NOT_FOUND, {
      'tracker-code': 'LOCK_NOT_HELD',
    });
    assert.match(notHeld.details, /lock not held/);
    await rejectsWith(
      rpc('RenewLock', { id: lock.id, ttlSeconds: -1 }),
      status.INVALID_ARGUMENT,
      invalid('ttlSeconds'),
    );
    await rejectsWith(
      rpc('CreateLock', { service, who: 'w', ttlSeconds: 31_536_001 }),
      status.INVALID_ARGUMENT,
      invalid('ttlSeconds'),
    );
    const next = await take(service, 'next');
    assert.ok(BigInt(next.fencingToken) > BigInt(lock.fencingToken), 'tokens grow across releases');
    // GetQueue through reflection too: the holder (the oldest of the holders, here the only
    // one), and an empty line (proto3 JSON omits it).
    assert.deepEqual(await ok('GetQueue', { service }), {
      service,
      holder: lockMessageAsJson(next),
      holders: [lockMessageAsJson(next)],
    });
    await rejectsWith(rpc('GetQueue', { service: '' }), status.INVALID_ARGUMENT, invalid('service'));
  });

  test('ListLocks accepts the proto field name per_page, as grpcurl does', async () => {
    const service = uniqueService('proto-names');
    assert.deepEqual(await ok('ListLocks', { per_page: 2, service }), { page: 1, perPage: 2 });
  });

  test('status codes are numeric ALREADY_EXISTS=6, NOT_FOUND=5, INVALID_ARGUMENT=3 with tracker-* trailers', async () => {
    assert.equal(status.ALREADY_EXISTS, 6);
    assert.equal(status.NOT_FOUND, 5);
    assert.equal(status.INVALID_ARGUMENT, 3);

    const service = uniqueService('grpc-js');
    const lock = await take(service, 'holder');
    assert.match(lock.id, UUID);
    assert.match(lock.createdAt, TIMESTAMP);
    assert.deepEqual(lock, {
      id: lock.id,
      service,
      who: 'holder',
      createdAt: lock.createdAt,
      ttlSeconds: 0,
      expiresAt: '',
      fencingToken: lock.fencingToken,
      waiters: 0,
      owner: '',
      limit: 1,
      mode: 'exclusive',
      groupId: '',
      resource: null,
      note: '',
      link: '',
    });
    assert.deepEqual(await rpc('GetLock', { id: lock.id }), lock);

    const held = await rejectsWith(rpc('CreateLock', { service, who: 'other' }), 6, heldBy(lock.id));
    assert.ok(held.details.includes('"holder"') && held.details.includes(lock.id), held.details);

    await rejectsWith(rpc('GetLock', { id: randomUUID() }), 5, NOT_FOUND);
    await rejectsWith(rpc('UnLock', { id: 'nope' }), 5, NOT_FOUND);

    for (const [method, request, field] of [
      ['CreateLock', { service: '', who: 'x' }, 'service'],
      ['CreateLock', { service, who: '\u0000' }, 'who'],
      ['ListLocks', { page: -1 }, 'page'],
      ['ListLocks', { perPage: 1001 }, 'per_page'],
    ] as const) {
      const error = await rejectsWith(rpc(method, request), 3, invalid(field));
      assert.ok(error.details.startsWith(`${field} `), error.details);
    }

    assert.deepEqual(await rpc('UnLock', { id: lock.id }), {
      success: true,
      message: 'Lock released successfully',
    });
    await rejectsWith(rpc('UnLock', { id: lock.id }), 5, NOT_FOUND);
    assert.deepEqual(await rpc('ListLocks', { service }), { locks: [], total: 0, page: 1, perPage: 100 });
  });
});

describe('gRPC ListLocks on a fresh server', () => {
  let server: ServerProcess;
  let client: LockServiceClient;
  const rpc = <T>(method: Method, request: object) => unary<T>(client, method, request);
  const list = (request: object) => rpc<ListMessage>('ListLocks', request);
  const page = (locks: LockMessage[], total: number, page: number, perPage: number): ListMessage => ({
    locks,
    total,
    page,
    perPage,
  });

  before(async () => {
    server = await startServerProcess();
    client = lockServiceClient(server.grpcAddress);
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });

  test('an empty store lists as {page: 1, perPage: 100}: proto3 JSON omits the empty locks and zero total', async () => {
    // No body at all, as in the guide's `grpcurl --plaintext localhost:8765 .../ListLocks`.
    const [guide, empty] = await Promise.all([bufOk(server.grpcAddress, `${SERVICE}/ListLocks`), list({})]);
    assert.deepEqual(guide, { page: 1, perPage: 100 });
    assert.deepEqual(empty, page([], 0, 1, 100));
  });

  test('lists oldest first, pages, and filters exactly on service and who', async () => {
    // One after the other, so each is strictly younger than the one before.
    const a = await rpc<LockMessage>('CreateLock', { service: 'list-a', who: 'alice' });
    const b = await rpc<LockMessage>('CreateLock', { service: 'list-b', who: 'bob' });
    const c = await rpc<LockMessage>('CreateLock', { service: 'list-c', who: 'alice' });

    const cases: Array<[request: Record<string, unknown>, expected: ListMessage]> = [
      [{}, page([a, b, c], 3, 1, 100)],
      [{ page: 0, perPage: 0 }, page([a, b, c], 3, 1, 100)],
      [{ perPage: 2 }, page([a, b], 3, 1, 2)],
      [{ page: 2, perPage: 2 }, page([c], 3, 2, 2)],
      [{ page: 3, perPage: 1 }, page([c], 3, 3, 1)],
      [{ page: 5, perPage: 2 }, page([], 3, 5, 2)],
      [{ perPage: 1000 }, page([a, b, c], 3, 1, 1000)],
      [{ service: 'list-b' }, page([b], 1, 1, 100)],
      [{ who: 'alice' }, page([a, c], 2, 1, 100)],
      [{ who: 'alice', perPage: 1, page: 2 }, page([c], 2, 2, 1)],
      [{ service: 'list-c', who: 'alice' }, page([c], 1, 1, 100)],
      [{ service: 'list-a', who: 'bob' }, page([], 0, 1, 100)],
      // Exact, case-sensitive: no prefixes, no wildcards.
      [{ service: 'list' }, page([], 0, 1, 100)],
      [{ service: 'list-%' }, page([], 0, 1, 100)],
      [{ who: 'ALICE' }, page([], 0, 1, 100)],
    ];
    const responses = await Promise.all(cases.map(([request]) => list(request)));
    cases.forEach(([request, expected], index) => {
      assert.deepEqual(responses[index], expected, `ListLocks ${JSON.stringify(request)}`);
    });

    await rpc('UnLock', { id: b.id });
    assert.deepEqual(await list({}), page([a, c], 2, 1, 100));
  });

  test('ListLocks rejects a negative page, a perPage out of range and bad filters with INVALID_ARGUMENT', async () => {
    const cases: Array<[request: Record<string, unknown>, field: string]> = [
      [{ page: -1 }, 'page'],
      [{ page: -2147483648 }, 'page'],
      [{ perPage: 1001 }, 'per_page'],
      [{ perPage: 2147483647 }, 'per_page'],
      [{ perPage: -5 }, 'per_page'],
      [{ service: ' ' }, 'service'],
      [{ who: 'w'.repeat(257) }, 'who'],
      [{ who: 'tab\there' }, 'who'],
    ];
    const errors = await Promise.all(
      cases.map(([request, field]) => rejectsWith(list(request), status.INVALID_ARGUMENT, invalid(field))),
    );
    cases.forEach(([request, field], index) => {
      const message = errors[index]?.details ?? '';
      assert.ok(message.startsWith(`${field} `), `ListLocks ${JSON.stringify(request)}: ${message}`);
    });
  });
});
