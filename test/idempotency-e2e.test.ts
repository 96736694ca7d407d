import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Metadata, type ServiceError } from '@grpc/grpc-js';
import { lockServiceClient, unary } from './support/grpc-client.js';
import { API, call } from './support/rest.js';
import { type ServerProcess, startServerProcess } from './support/server-process.js';

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
});
