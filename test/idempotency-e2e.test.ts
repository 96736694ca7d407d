import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Metadata, type ServiceError } from '@grpc/grpc-js';
import { TrackerClient } from '../src/sdk/index.js';
import { FaultProxy } from './support/fault-proxy.js';
import { lockServiceClient, unary } from './support/grpc-client.js';
import { API, call } from './support/rest.js';
import { ROOT, runToExit, type ServerProcess, startServerProcess } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

/** Idempotency-Key over REST and request_id over gRPC, against the real server process. */
describe('idempotent acquire over REST and gRPC (real server)', () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServerProcess();
  });
  after(async () => {
    await server?.stop();
  });
  let n = 0;
  const fresh = (prefix: string) => `${prefix}-${++n}-${randomUUID().slice(0, 8)}`;
  const acquire = (body: object, key?: string) =>
    call(server.baseUrl, 'POST', `${API}/lock`, body, {
      headers: key === undefined ? {} : { 'idempotency-key': key },
    });

  test('REST: 201 first, then 200 with Idempotent-Replayed and the same lock; 422 for another body', async () => {
    const key = randomUUID();
    const body = { service: fresh('rest'), who: 'ci-1', ttlSeconds: 600 };
    const first = await acquire(body, key);
    assert.equal(first.status, 201);
    assert.equal(first.headers.get('idempotent-replayed'), null);
    const again = await acquire(body, key);
    assert.equal(again.status, 200);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(again.json.id, first.json.id);
    assert.equal(again.json.fencingToken, first.json.fencingToken);
    const other = await acquire({ ...body, who: 'ci-2' }, key);
    assert.equal(other.status, 422);
    assert.equal(other.json.code, 'IDEMPOTENCY_KEY_REUSED');
    assert.equal(other.json.field, 'Idempotency-Key');
  });

  test('REST: once released, a retry answers 409 LOCK_ENDED naming the lock, and grants nothing', async () => {
    const key = randomUUID();
    const body = { service: fresh('rest'), who: 'ci-1' };
    const first = await acquire(body, key);
    assert.equal(first.status, 201);
    assert.equal((await call(server.baseUrl, 'DELETE', `${API}/lock/${first.json.id}`)).status, 200);
    const retry = await acquire(body, key);
    assert.equal(retry.status, 409);
    assert.equal(retry.json.code, 'LOCK_ENDED');
    assert.equal(retry.json.lockId, first.json.id);
    const list = await call(server.baseUrl, 'GET', `${API}/locks/list?service=${body.service}`);
    assert.equal(list.json.total, 0);
  });

  test('REST: a key that is too long is a 400 naming Idempotency-Key', async () => {
    const reply = await acquire({ service: fresh('rest'), who: 'w' }, 'k'.repeat(256));
    assert.equal(reply.status, 400);
    assert.equal(reply.json.field, 'Idempotency-Key');
  });

  test('gRPC: request_id twice gives the same lock, the second with idempotent-replayed metadata', async () => {
    const client = lockServiceClient(server.grpcAddress);
    try {
      const request = { service: fresh('grpc'), who: 'ci-1', requestId: randomUUID() };
      const headers: Metadata[] = [];
      const first = (await unary(client, 'CreateLock', request)) as { id: string; fencingToken: string };
      // The response metadata (headers) of the retry.
      const createLock = client.CreateLock as (
        request: object,
        metadata: Metadata,
        options: object,
        callback: (error: ServiceError | null, value: { id: string; fencingToken: string }) => void,
      ) => { on(event: 'metadata', listener: (metadata: Metadata) => void): void };
      const second = await new Promise<{ id: string; fencingToken: string }>((resolve, reject) => {
        const pending = createLock.call(
          client,
          request,
          new Metadata(),
          { deadline: Date.now() + 10_000 },
          (error, value) => (error ? reject(error) : resolve(value)),
        );
        pending.on('metadata', (metadata) => headers.push(metadata));
      });
      assert.equal(second.id, first.id);
      assert.equal(second.fencingToken, first.fencingToken);
      assert.deepEqual(
        headers.map((metadata) => metadata.get('idempotent-replayed')),
        [['true']],
      );
      await assert.rejects(
        unary(client, 'CreateLock', { ...request, who: 'ci-2' }),
        (error: ServiceError) => {
          assert.deepEqual(error.metadata.get('tracker-code'), ['IDEMPOTENCY_KEY_REUSED']);
          return true;
        },
      );
    } finally {
      client.close();
    }
  });

  describe('an answer lost right after the commit (the proxy cuts the connection as the answer comes back)', () => {
    let proxy: FaultProxy;
    before(async () => {
      proxy = await FaultProxy.start(`tcp://127.0.0.1:${server.httpPort}`);
    });
    after(async () => {
      await proxy?.close();
    });
    const through = () => `http://127.0.0.1:${proxy.port}`;
    const acquiredEvents = async (service: string) => {
      const history = await call(server.baseUrl, 'GET', `${API}/history?service=${service}`);
      return (history.json.events as { type: string }[]).filter((event) => event.type === 'acquired').length;
    };

    test('the SDK retries the acquire with its key and gets the one lock that was granted', async () => {
      const service = fresh('sdk-cut');
      const client = new TrackerClient({ url: through(), retryDelayMs: 10 });
      proxy.cutAnswers(1);
      const lock = await client.acquire(service, { who: 'ci', ttl: 600 });
      const list = await call(server.baseUrl, 'GET', `${API}/locks/list?service=${service}`);
      assert.deepEqual(
        (list.json.locks as { id: string }[]).map((held) => held.id),
        [lock.id],
      );
      assert.equal(await acquiredEvents(service), 1, 'granted once');
    });

    test('a waiting acquire whose grant was lost: the retry gets that grant, nobody else is served twice', async () => {
      const service = fresh('sdk-cut-wait');
      const holder = await acquire({ service, who: 'holder' });
      const client = new TrackerClient({ url: through(), retryDelayMs: 10 });
      const waiting = client.acquire(service, { who: 'ci', wait: 30 });
      await waitFor(
        async () =>
          ((await call(server.baseUrl, 'GET', `${API}/queue/${service}`)).json.waiters as unknown[])
            .length === 1,
        { what: 'the acquire in line' },
      );
      proxy.cutAnswers(1);
      await call(server.baseUrl, 'DELETE', `${API}/lock/${holder.json.id}`);
      const lock = await waiting;
      assert.equal(lock.who, 'ci');
      const list = await call(server.baseUrl, 'GET', `${API}/locks/list?service=${service}`);
      assert.deepEqual(
        (list.json.locks as { id: string }[]).map((held) => held.id),
        [lock.id],
      );
      assert.equal(await acquiredEvents(service), 2, 'the holder, then the one grant');
    });

    test('the CLI does the same: tracker lock acquire prints the one lock', async () => {
      const service = fresh('cli-cut');
      proxy.cutAnswers(1);
      const run = await runToExit(
        process.execPath,
        [`${ROOT}/dist/src/cli/main.js`, 'lock', 'acquire', '--service', service, '--who', 'ci'],
        {
          env: { ...process.env, TRACKER_URL: through(), TRACKER_TOKEN: '' },
        },
      );
      assert.equal(run.code, 0, run.stderr);
      const list = await call(server.baseUrl, 'GET', `${API}/locks/list?service=${service}`);
      assert.deepEqual(
        (list.json.locks as { id: string }[]).map((held) => held.id),
        [run.stdout.trim()],
      );
      assert.equal(await acquiredEvents(service), 1);
    });
  });
});
