/**
 * The gRPC API end to end, against the real server process (`node dist/src/main.js`).
 *
 * Most tests call it the way the guide's grpcurl commands do: `buf curl` with no .proto at
 * hand, so every request and response is encoded from the server's reflection service alone.
 * One test uses a real @grpc/grpc-js client loaded from the .proto, to check the numeric
 * status codes and the `tracker-*` trailers that clients branch on.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { type ServiceError, status } from '@grpc/grpc-js';
import { bufFails, bufOk, bufRaw } from './support/buf-curl.js';
import { type LockServiceClient, lockServiceClient, SERVICE, unary } from './support/grpc-client.js';
import { type ServerProcess, startServerProcess } from './support/server-process.js';

const METHODS = [
  'CreateLock',
  'ForceReleaseLock',
  'GetHistory',
  'GetLock',
  'GetQueue',
  'ListLocks',
  'RenewLock',
  'UnLock',
  'WatchLocks',
] as const;
type Method = (typeof METHODS)[number];
const API = '/api/v1alpha1';

const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface LockJson {
  id: string;
  service: string;
  who: string;
  createdAt: string;
  ttlSeconds?: number;
  expiresAt?: string;
  fencingToken: string;
  waiters?: number;
}

/**
 * A REST lock as grpcurl/buf print the same lock: proto3 JSON leaves out zero values (no
 * TTL is 0, no expiry is ''), and an int64 prints as a string.
 */
function asGrpcJson(lock: Record<string, unknown>): LockJson {
  const { ttlSeconds, expiresAt, fencingToken, waiters, owner, ...rest } = lock;
  return {
    ...(rest as Omit<LockJson, 'fencingToken'>),
    ...(ttlSeconds === null ? {} : { ttlSeconds: ttlSeconds as number }),
    ...(expiresAt === null ? {} : { expiresAt: expiresAt as string }),
    fencingToken: String(fencingToken),
    ...(waiters === 0 ? {} : { waiters: waiters as number }),
    ...(owner === null ? {} : { owner: owner as string }),
  };
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

describe('gRPC through server reflection (buf curl, no .proto)', () => {
  let server: ServerProcess;
  let address: string;
  const ok = <T>(method: Method, body?: unknown) => bufOk<T>(address, `${SERVICE}/${method}`, body);
  const fails = (method: Method, body: unknown, code: 'already_exists' | 'not_found' | 'invalid_argument') =>
    bufFails(address, `${SERVICE}/${method}`, body, code);

  before(async () => {
    server = await startServerProcess();
    address = server.grpcAddress;
  });
  after(async () => {
    await server?.stop();
  });

  test('reflection lists the LockService, the health service and their methods', async () => {
    const base = `http://${address}`;
    const flags = ['curl', '--protocol', 'grpc', '--http2-prior-knowledge'];
    const services = await bufRaw([...flags, '--list-services', base]);
    assert.equal(services.exitCode, 0, services.stderr);
    assert.deepEqual(services.stdout.trim().split('\n'), ['grpc.health.v1.Health', SERVICE]);

    // buf wants the base URL here (a URL with the service name in it is taken as a base path).
    const methods = await bufRaw([...flags, '--list-methods', base]);
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
    const lock = await ok<LockJson>('CreateLock', { service, who: 'ci-pipeline-123' });
    assert.deepEqual(Object.keys(lock).sort(), ['createdAt', 'fencingToken', 'id', 'service', 'who']);
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
    const lock = await ok<LockJson>('CreateLock', { service, who: 'ci-pipeline-123' });
    const [other, same] = await Promise.all([
      fails('CreateLock', { service, who: 'someone-else' }, 'already_exists'),
      // Not re-entrant: the holder asking again is refused too.
      fails('CreateLock', { service, who: 'ci-pipeline-123' }, 'already_exists'),
    ]);
    for (const message of [other, same]) {
      assert.ok(message.includes('"ci-pipeline-123"'), `message does not name the holder: ${message}`);
      assert.ok(message.includes(lock.id), `message does not name the lock id: ${message}`);
      assert.ok(message.includes(lock.createdAt), `message does not say since when: ${message}`);
      assert.ok(!message.includes('someone-else'), `message names the caller, not the holder: ${message}`);
    }
    // The refused calls changed nothing.
    assert.deepEqual(await ok<LockJson>('GetLock', { id: lock.id }), lock);
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
    ];
    const messages = await Promise.all(
      cases.map(({ body }) => fails('CreateLock', body, 'invalid_argument')),
    );
    cases.forEach(({ body, field, rule }, index) => {
      const message = messages[index] ?? '';
      assert.ok(
        message.startsWith(`${field} `),
        `${JSON.stringify(body)}: ${message} does not name ${field}`,
      );
      assert.match(message, rule, JSON.stringify(body));
    });
    // None of them took the lock.
    assert.deepEqual(await ok('ListLocks', { service }), { page: 1, perPage: 100 });

    // 256 code points is the limit, not 256 bytes or UTF-16 units.
    const longest = await Promise.all([
      ok<LockJson>('CreateLock', { service: `${service}-`.padEnd(256, 's'), who: 'x' }),
      ok<LockJson>('CreateLock', { service, who: '😀'.repeat(256) }),
    ]);
    assert.equal(longest[0]?.service.length, 256);
    assert.equal(longest[1]?.who, '😀'.repeat(256));
  });

  test('GetLock returns the held lock; unknown, malformed and empty ids are NOT_FOUND', async () => {
    const lock = await ok<LockJson>('CreateLock', { service: uniqueService('get'), who: 'getter' });
    assert.deepEqual(await ok<LockJson>('GetLock', { id: lock.id }), lock);
    // Ids are compared in lower case.
    assert.deepEqual(await ok<LockJson>('GetLock', { id: lock.id.toUpperCase() }), lock);
    const messages = await Promise.all([
      fails('GetLock', { id: randomUUID() }, 'not_found'),
      fails('GetLock', { id: '507f1f77bcf86cd799439011' }, 'not_found'),
      fails('GetLock', { id: "'; DROP TABLE locks; --" }, 'not_found'),
      fails('GetLock', { id: '' }, 'not_found'),
      fails('GetLock', undefined, 'not_found'),
    ]);
    for (const message of messages) assert.equal(message, 'lock not found');
  });

  test('UnLock releases once; then GetLock and UnLock are NOT_FOUND and the service is free again', async () => {
    const service = uniqueService('unlock');
    const lock = await ok<LockJson>('CreateLock', { service, who: 'releaser' });
    assert.deepEqual(await ok('UnLock', { id: lock.id }), {
      success: true,
      message: 'Lock released successfully',
    });
    const messages = await Promise.all([
      fails('UnLock', { id: lock.id }, 'not_found'),
      fails('GetLock', { id: lock.id }, 'not_found'),
      fails('UnLock', { id: randomUUID() }, 'not_found'),
      fails('UnLock', { id: 'not-a-uuid' }, 'not_found'),
      fails('UnLock', {}, 'not_found'),
    ]);
    for (const message of messages) assert.equal(message, 'lock not found');
    const again = await ok<LockJson>('CreateLock', { service, who: 'next' });
    assert.notEqual(again.id, lock.id);
    assert.equal(again.who, 'next');
  });

  test('REST and gRPC share one store: a gRPC lock is seen, refused and released over REST', async () => {
    const service = uniqueService('cross-grpc');
    const lock = await ok<LockJson>('CreateLock', { service, who: 'grpc-holder' });

    const seen = await rest(server.baseUrl, 'GET', `${API}/lock/${lock.id}`);
    assert.equal(seen.status, 200);
    assert.deepEqual(asGrpcJson(seen.json), lock);

    const refused = await rest(server.baseUrl, 'POST', `${API}/lock`, { service, who: 'rest-caller' });
    assert.equal(refused.status, 409);
    assert.equal(refused.json.code, 'LOCK_HELD');
    assert.deepEqual(asGrpcJson(refused.json.existingLock as Record<string, unknown>), lock);

    const listed = await rest(
      server.baseUrl,
      'GET',
      `${API}/locks/list?service=${encodeURIComponent(service)}`,
    );
    assert.equal(listed.status, 200);
    assert.deepEqual((listed.json.locks as Record<string, unknown>[]).map(asGrpcJson), [lock]);
    assert.equal(listed.json.total, 1);

    const released = await rest(server.baseUrl, 'GET', `${API}/unlock/${lock.id}`);
    assert.equal(released.status, 200);
    assert.deepEqual(released.json, { success: true, message: 'Lock released successfully' });

    await Promise.all([
      fails('GetLock', { id: lock.id }, 'not_found'),
      fails('UnLock', { id: lock.id }, 'not_found'),
    ]);
    assert.deepEqual(await ok('ListLocks', { service }), { page: 1, perPage: 100 });
  });

  test('REST and gRPC share one store: a REST lock is seen, refused and released over gRPC', async () => {
    const service = uniqueService('cross-rest');
    const created = await rest(server.baseUrl, 'POST', `${API}/lock`, { service, who: 'rest-holder' });
    assert.equal(created.status, 201);
    const lock = asGrpcJson(created.json);
    assert.match(lock.id, UUID);

    const [seen, listed, refusal] = await Promise.all([
      ok<LockJson>('GetLock', { id: lock.id }),
      ok('ListLocks', { service }),
      fails('CreateLock', { service, who: 'grpc-caller' }, 'already_exists'),
    ]);
    assert.deepEqual(seen, lock);
    assert.deepEqual(listed, { locks: [lock], total: 1, page: 1, perPage: 100 });
    assert.ok(refusal.includes('"rest-holder"'), refusal);
    assert.ok(refusal.includes(lock.id), refusal);

    assert.deepEqual(await ok('UnLock', { id: lock.id }), {
      success: true,
      message: 'Lock released successfully',
    });
    const gone = await rest(server.baseUrl, 'GET', `${API}/lock/${lock.id}`);
    assert.equal(gone.status, 404);
    assert.equal(gone.json.code, 'LOCK_NOT_FOUND');
    const releasedTwice = await rest(server.baseUrl, 'GET', `${API}/unlock/${lock.id}`);
    assert.equal(releasedTwice.status, 404);
    assert.equal(releasedTwice.json.code, 'LOCK_NOT_FOUND');
  });

  test('CreateLock with ttlSeconds and RenewLock: the lease fields, renewal, LOCK_NOT_HELD', async () => {
    const service = uniqueService('leased');
    const lock = await ok<LockJson>('CreateLock', { service, who: 'leaser', ttlSeconds: 120 });
    assert.equal(lock.ttlSeconds, 120);
    assert.match(String(lock.expiresAt), TIMESTAMP);
    assert.equal(Date.parse(String(lock.expiresAt)) - Date.parse(lock.createdAt), 120_000);
    const renewed = await ok<LockJson>('RenewLock', { id: lock.id, ttl_seconds: 600 });
    assert.equal(renewed.ttlSeconds, 600);
    assert.equal(renewed.fencingToken, lock.fencingToken);
    assert.ok(Date.parse(String(renewed.expiresAt)) >= Date.parse(String(lock.expiresAt)) + 480_000);
    const again = await ok<LockJson>('RenewLock', { id: lock.id });
    assert.equal(again.ttlSeconds, 600, 'no ttlSeconds: the lock keeps its own');
    const rest200 = await rest(server.baseUrl, 'GET', `${API}/lock/${lock.id}`);
    assert.deepEqual(asGrpcJson(rest200.json), again);
    await ok('UnLock', { id: lock.id });
    const notHeld = await fails('RenewLock', { id: lock.id }, 'not_found');
    assert.match(notHeld, /lock not held/);
    await fails('RenewLock', { id: lock.id, ttlSeconds: -1 }, 'invalid_argument');
    await fails('CreateLock', { service, who: 'w', ttlSeconds: 31_536_001 }, 'invalid_argument');
    const next = await ok<LockJson>('CreateLock', { service, who: 'next' });
    assert.ok(BigInt(next.fencingToken) > BigInt(lock.fencingToken), 'tokens grow across releases');
    // GetQueue through reflection too: the holder, and an empty line (proto3 JSON omits it).
    assert.deepEqual(await ok('GetQueue', { service }), { service, holder: next });
    await fails('GetQueue', { service: '' }, 'invalid_argument');
  });

  test('ListLocks accepts the proto field name per_page, as grpcurl does', async () => {
    const service = uniqueService('proto-names');
    assert.deepEqual(await ok('ListLocks', { per_page: 2, service }), { page: 1, perPage: 2 });
  });
});

describe('gRPC ListLocks through reflection, on a fresh server', () => {
  let server: ServerProcess;
  let address: string;
  const ok = <T>(method: Method, body?: unknown) => bufOk<T>(address, `${SERVICE}/${method}`, body);
  const fails = (method: Method, body: unknown) =>
    bufFails(address, `${SERVICE}/${method}`, body, 'invalid_argument');

  before(async () => {
    server = await startServerProcess();
    address = server.grpcAddress;
  });
  after(async () => {
    await server?.stop();
  });

  test('an empty store lists as {page: 1, perPage: 100}: proto3 JSON omits the empty locks and zero total', async () => {
    // No body at all, as in the guide's `grpcurl --plaintext localhost:8765 .../ListLocks`.
    assert.deepEqual(await ok('ListLocks'), { page: 1, perPage: 100 });
    assert.deepEqual(await ok('ListLocks', {}), { page: 1, perPage: 100 });
  });

  test('lists oldest first, pages, and filters exactly on service and who', async () => {
    // One after the other, so each is strictly younger than the one before.
    const a = await ok<LockJson>('CreateLock', { service: 'list-a', who: 'alice' });
    const b = await ok<LockJson>('CreateLock', { service: 'list-b', who: 'bob' });
    const c = await ok<LockJson>('CreateLock', { service: 'list-c', who: 'alice' });

    const cases: Array<[body: Record<string, unknown>, expected: Record<string, unknown>]> = [
      [{}, { locks: [a, b, c], total: 3, page: 1, perPage: 100 }],
      [
        { page: 0, perPage: 0 },
        { locks: [a, b, c], total: 3, page: 1, perPage: 100 },
      ],
      [{ perPage: 2 }, { locks: [a, b], total: 3, page: 1, perPage: 2 }],
      [
        { page: 2, perPage: 2 },
        { locks: [c], total: 3, page: 2, perPage: 2 },
      ],
      [
        { page: 3, perPage: 1 },
        { locks: [c], total: 3, page: 3, perPage: 1 },
      ],
      [
        { page: 5, perPage: 2 },
        { total: 3, page: 5, perPage: 2 },
      ],
      [{ perPage: 1000 }, { locks: [a, b, c], total: 3, page: 1, perPage: 1000 }],
      [{ service: 'list-b' }, { locks: [b], total: 1, page: 1, perPage: 100 }],
      [{ who: 'alice' }, { locks: [a, c], total: 2, page: 1, perPage: 100 }],
      [
        { who: 'alice', perPage: 1, page: 2 },
        { locks: [c], total: 2, page: 2, perPage: 1 },
      ],
      [
        { service: 'list-c', who: 'alice' },
        { locks: [c], total: 1, page: 1, perPage: 100 },
      ],
      [
        { service: 'list-a', who: 'bob' },
        { page: 1, perPage: 100 },
      ],
      // Exact, case-sensitive: no prefixes, no wildcards.
      [{ service: 'list' }, { page: 1, perPage: 100 }],
      [{ service: 'list-%' }, { page: 1, perPage: 100 }],
      [{ who: 'ALICE' }, { page: 1, perPage: 100 }],
    ];
    const responses = await Promise.all(cases.map(([body]) => ok('ListLocks', body)));
    cases.forEach(([body, expected], index) => {
      assert.deepEqual(responses[index], expected, `ListLocks ${JSON.stringify(body)}`);
    });

    await ok('UnLock', { id: b.id });
    assert.deepEqual(await ok('ListLocks'), { locks: [a, c], total: 2, page: 1, perPage: 100 });
  });

  test('ListLocks rejects a negative page, a perPage out of range and bad filters with INVALID_ARGUMENT', async () => {
    const cases: Array<[body: Record<string, unknown>, prefix: string]> = [
      [{ page: -1 }, 'page '],
      [{ page: -2147483648 }, 'page '],
      [{ perPage: 1001 }, 'per_page '],
      [{ perPage: 2147483647 }, 'per_page '],
      [{ perPage: -5 }, 'per_page '],
      [{ service: ' ' }, 'service '],
      [{ who: 'w'.repeat(257) }, 'who '],
      [{ who: 'tab\there' }, 'who '],
    ];
    const messages = await Promise.all(cases.map(([body]) => fails('ListLocks', body)));
    cases.forEach(([body, prefix], index) => {
      const message = messages[index] ?? '';
      assert.ok(message.startsWith(prefix), `ListLocks ${JSON.stringify(body)}: ${message}`);
    });
  });
});

/** Asserts that `promise` fails with `code` and the given `tracker-*` trailers (and no others). */
async function rejectsWith(
  promise: Promise<unknown>,
  code: status,
  trailers: Record<string, string>,
): Promise<ServiceError> {
  let caught: ServiceError | undefined;
  await assert.rejects(promise, (error: ServiceError) => {
    caught = error;
    return true;
  });
  assert.ok(caught);
  assert.equal(caught.code, code, `${status[caught.code]}: ${caught.details}`);
  const tracker = Object.fromEntries(
    Object.entries(caught.metadata.getMap()).filter(([key]) => key.startsWith('tracker-')),
  );
  assert.deepEqual(tracker, trailers);
  for (const [key, value] of Object.entries(trailers)) assert.deepEqual(caught.metadata.get(key), [value]);
  return caught;
}

describe('gRPC with a grpc-js client from the .proto', () => {
  let server: ServerProcess;
  let client: LockServiceClient;

  before(async () => {
    server = await startServerProcess();
    client = lockServiceClient(server.grpcAddress);
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });

  test('status codes are numeric ALREADY_EXISTS=6, NOT_FOUND=5, INVALID_ARGUMENT=3 with tracker-* trailers', async () => {
    assert.equal(status.ALREADY_EXISTS, 6);
    assert.equal(status.NOT_FOUND, 5);
    assert.equal(status.INVALID_ARGUMENT, 3);

    const service = uniqueService('grpc-js');
    const lock = await unary<LockJson>(client, 'CreateLock', { service, who: 'holder' });
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
    });
    assert.deepEqual(await unary(client, 'GetLock', { id: lock.id }), lock);

    const held = await rejectsWith(unary(client, 'CreateLock', { service, who: 'other' }), 6, {
      'tracker-code': 'LOCK_HELD',
      'tracker-existing-lock-id': lock.id,
    });
    assert.ok(held.details.includes('"holder"') && held.details.includes(lock.id), held.details);

    await rejectsWith(unary(client, 'GetLock', { id: randomUUID() }), 5, {
      'tracker-code': 'LOCK_NOT_FOUND',
    });
    await rejectsWith(unary(client, 'UnLock', { id: 'nope' }), 5, { 'tracker-code': 'LOCK_NOT_FOUND' });

    for (const [method, request, field] of [
      ['CreateLock', { service: '', who: 'x' }, 'service'],
      ['CreateLock', { service, who: '\u0000' }, 'who'],
      ['ListLocks', { page: -1 }, 'page'],
      ['ListLocks', { perPage: 1001 }, 'per_page'],
    ] as const) {
      const error = await rejectsWith(unary(client, method, request), 3, {
        'tracker-code': 'INVALID_ARGUMENT',
        'tracker-field': field,
      });
      assert.ok(error.details.startsWith(`${field} `), error.details);
    }

    assert.deepEqual(await unary(client, 'UnLock', { id: lock.id }), {
      success: true,
      message: 'Lock released successfully',
    });
    await rejectsWith(unary(client, 'UnLock', { id: lock.id }), 5, { 'tracker-code': 'LOCK_NOT_FOUND' });
    assert.deepEqual(await unary(client, 'ListLocks', { service }), {
      locks: [],
      total: 0,
      page: 1,
      perPage: 100,
    });
  });
});
