/**
 * Waiting in line, end to end over real sockets against a real server process on a SQLite
 * file: FIFO grants, hand-off on release and on expiry, the wait deadline, a waiter whose
 * client hangs up, and the queue's visibility. Real time, short waits; no timing is asserted
 * beyond "it did wait" (the bench measures hand-off latency).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { type ServiceError, status } from '@grpc/grpc-js';
import { type LockMessage, type LockServiceClient, lockServiceClient, unary } from './support/grpc-client.js';
import { API, call, type Reply } from './support/rest.js';
import { type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

// The tests use services of their own and mostly wait (for a lease, a deadline): they run side by side.
describe('waiting in line (REST and gRPC, one server on a SQLite file)', { concurrency: true }, () => {
  let server: ServerProcess;
  let client: LockServiceClient;
  let dir: ReturnType<typeof tempDir>;
  const acquire = (body: Record<string, unknown>, signal?: AbortSignal) =>
    call(server.baseUrl, 'POST', `${API}/lock`, body, { signal });
  const queueOf = async (service: string) =>
    (await call(server.baseUrl, 'GET', `${API}/queue/${service}`)).json;
  /** Waits until `count` waiters are in the queue of `service`. */
  const waitersReach = (service: string, count: number) =>
    waitFor(async () => ((await queueOf(service)).waiters as unknown[]).length === count, {
      what: `${count} waiters in the queue of ${service}`,
    });

  before(async () => {
    dir = tempDir();
    server = await startServerProcess({
      args: ['--http-port', '0', '--grpc-port', '0', '--database-url', `sqlite:${dir.path}/wait.db`],
    });
    client = lockServiceClient(server.grpcAddress);
  });
  after(async () => {
    client?.close();
    await server?.stop();
    dir?.remove();
  });

  test('waiters are granted in arrival order, each when the one before releases', async () => {
    const service = `fifo-${randomUUID().slice(0, 8)}`;
    const holder = await acquire({ service, who: 'holder' });
    const waiting: Array<Promise<Reply>> = [];
    for (let i = 0; i < 5; i++) {
      waiting.push(acquire({ service, who: `waiter-${i}`, waitSeconds: 30 }));
      await waitersReach(service, i + 1); // arrival order is the order of joining the queue
    }
    const queue = await queueOf(service);
    assert.equal((queue.holder as { id: string }).id, holder.json.id);
    assert.deepEqual(
      (queue.waiters as Array<{ who: string; position: number }>).map((w) => [w.who, w.position]),
      [0, 1, 2, 3, 4].map((i) => [`waiter-${i}`, i + 1]),
    );
    assert.equal((await call(server.baseUrl, 'GET', `${API}/lock/${holder.json.id}`)).json.waiters, 5);
    let current = String(holder.json.id);
    let lastToken = Number(holder.json.fencingToken);
    for (let i = 0; i < 5; i++) {
      await call(server.baseUrl, 'DELETE', `${API}/lock/${current}`);
      const granted = await (waiting[i] as Promise<Reply>);
      assert.equal(granted.status, 201);
      assert.equal(granted.json.who, `waiter-${i}`);
      assert.ok(Number(granted.json.fencingToken) > lastToken);
      current = String(granted.json.id);
      lastToken = Number(granted.json.fencingToken);
    }
    await call(server.baseUrl, 'DELETE', `${API}/lock/${current}`);
    assert.deepEqual(await queueOf(service), { service, holder: null, holders: [], waiters: [] });
  });

  test('a holder that expires hands over to the waiter without anyone releasing', async () => {
    const service = `expiry-${randomUUID().slice(0, 8)}`;
    await acquire({ service, who: 'crashed', ttlSeconds: 1 });
    const granted = await acquire({ service, who: 'patient', waitSeconds: 10 });
    assert.equal(granted.status, 201);
    assert.equal(granted.json.who, 'patient');
  });

  test('a wait that runs out answers 409 WAIT_TIMEOUT with the holder, and leaves the queue', async () => {
    const service = `timeout-${randomUUID().slice(0, 8)}`;
    const holder = await acquire({ service, who: 'slow-holder' });
    const started = performance.now();
    const reply = await acquire({ service, who: 'impatient', waitSeconds: 1 });
    assert.equal(reply.status, 409);
    assert.equal(reply.json.code, 'WAIT_TIMEOUT');
    assert.equal(reply.json.error, 'timed out waiting for the lock');
    assert.deepEqual((reply.json.existingLock as { id: string }).id, holder.json.id);
    assert.equal('id' in reply.json, false);
    assert.ok(reply.at - started >= 900, 'it waited for its waitSeconds before giving up');
    assert.deepEqual((await queueOf(service)).waiters, []);
  });

  test('a waiter whose client hangs up leaves at once and is never granted', async () => {
    const service = `hangup-${randomUUID().slice(0, 8)}`;
    const holder = await acquire({ service, who: 'holder' });
    const hangUp = new AbortController();
    const vanished = acquire({ service, who: 'vanishing', waitSeconds: 30 }, hangUp.signal).catch(() => null);
    await waitersReach(service, 1);
    const patient = acquire({ service, who: 'patient', waitSeconds: 30 });
    await waitersReach(service, 2);
    hangUp.abort();
    assert.equal(await vanished, null);
    await waitersReach(service, 1);
    const line = (await queueOf(service)).waiters as Array<{ who: string; position: number }>;
    assert.deepEqual(
      line.map((waiter) => [waiter.who, waiter.position]),
      [['patient', 1]],
      'the vanished waiter left the line at once',
    );
    await call(server.baseUrl, 'DELETE', `${API}/lock/${holder.json.id}`);
    const granted = await patient;
    assert.equal(granted.status, 201);
    assert.equal(granted.json.who, 'patient');
    const listed = await call(server.baseUrl, 'GET', `${API}/locks/list?service=${service}`);
    assert.deepEqual(
      (listed.json.locks as Array<{ who: string }>).map((lock) => lock.who),
      ['patient'],
    );
  });

  test('without waitSeconds nothing changes: 409 LOCK_HELD at once, nobody queued', async () => {
    const service = `no-wait-${randomUUID().slice(0, 8)}`;
    await acquire({ service, who: 'holder' });
    const reply = await acquire({ service, who: 'other' });
    assert.equal(reply.status, 409);
    assert.equal(reply.json.code, 'LOCK_HELD');
    assert.deepEqual((await queueOf(service)).waiters, []);
    for (const waitSeconds of [-1, 3601, 1.5, '5']) {
      const bad = await acquire({ service, who: 'bad', waitSeconds });
      assert.equal(bad.status, 400, String(waitSeconds));
      assert.equal(bad.json.field, 'waitSeconds');
    }
    const queue = await call(server.baseUrl, 'GET', `${API}/queue/${encodeURIComponent('bad\u0001name')}`);
    assert.equal(queue.status, 400);
  });

  test('gRPC: CreateLock waits with wait_seconds; GetQueue shows the line; the deadline bounds the wait', async () => {
    const service = `grpc-wait-${randomUUID().slice(0, 8)}`;
    const holder = await acquire({ service, who: 'holder' });
    const waiting = unary<LockMessage>(
      client,
      'CreateLock',
      { service, who: 'grpc-waiter', waitSeconds: 30 },
      20_000,
    );
    await waitersReach(service, 1);
    const queue = await unary<{ holder: LockMessage; waiters: Array<{ who: string; position: number }> }>(
      client,
      'GetQueue',
      { service },
    );
    assert.equal(queue.holder.id, holder.json.id);
    assert.equal(queue.holder.waiters, 1);
    assert.deepEqual(
      queue.waiters.map((w) => [w.who, w.position]),
      [['grpc-waiter', 1]],
    );
    await call(server.baseUrl, 'DELETE', `${API}/lock/${holder.json.id}`);
    const granted = await waiting;
    assert.equal(granted.who, 'grpc-waiter');

    // A deadline shorter than wait_seconds: DEADLINE_EXCEEDED, and the call left the queue.
    const deadlined = await unary(
      client,
      'CreateLock',
      { service, who: 'hurried', waitSeconds: 30 },
      800,
    ).then(
      () => assert.fail('granted while held'),
      (error: ServiceError) => error,
    );
    assert.equal(deadlined.code, status.DEADLINE_EXCEEDED);
    await waitersReach(service, 0);

    // wait_seconds running out first: ALREADY_EXISTS with tracker-code WAIT_TIMEOUT.
    const timedOut = await unary(
      client,
      'CreateLock',
      { service, who: 'short', waitSeconds: 1 },
      10_000,
    ).then(
      () => assert.fail('granted while held'),
      (error: ServiceError) => error,
    );
    assert.equal(timedOut.code, status.ALREADY_EXISTS);
    assert.deepEqual(timedOut.metadata.get('tracker-code'), ['WAIT_TIMEOUT']);
    assert.match(timedOut.details, /timed out waiting for the lock: service ".*" is held by "grpc-waiter"/);
  });
});
