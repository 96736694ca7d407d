/**
 * Cross-replica watch news without polling: two real Tracker processes on one PostgreSQL
 * database, the watching one (B) with a safety poll of an hour, so that whatever reaches
 * its watchers came through LISTEN/NOTIFY (or the read it makes when its LISTEN connection
 * is back), never through the poll.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { describePostgres, withClient } from './support/postgres.js';
import { API, call } from './support/rest.js';
import { type ServerProcess, startServerProcess } from './support/server-process.js';
import { openSse, type SseStream } from './support/sse.js';
import { waitFor } from './support/wait-for.js';

const FREE = ['--host', '127.0.0.1', '--http-port', '0', '--grpc-port', '0'];
/** Far beyond any wait below: an event that arrives did not come through the poll. */
const NO_POLL = ['--watch-poll', '1h'];
/** A generous bound for delivery by NOTIFY (milliseconds in practice), on a loaded machine. */
const DELIVERY_MS = 5000;

await describePostgres('watch news across replicas, by NOTIFY', (database) => {
  let a: ServerProcess;
  let b: ServerProcess;
  const streams: SseStream[] = [];

  before(async () => {
    [a, b] = await Promise.all([
      startServerProcess({ args: [...FREE, '--database-url', database().url, ...NO_POLL] }),
      startServerProcess({ args: [...FREE, '--database-url', database().url, ...NO_POLL] }),
    ]);
  });
  after(async () => {
    for (const stream of streams) stream.close();
    await Promise.all([a?.stop(), b?.stop()]);
  });

  /** Watches `service` on `replica`; resolves once the (empty) snapshot came. */
  const watch = async (replica: ServerProcess, service: string): Promise<SseStream> => {
    const stream = await openSse(`${replica.baseUrl}${API}/watch?service=${encodeURIComponent(service)}`);
    streams.push(stream);
    assert.equal(stream.status, 200);
    const snapshot = await stream.next();
    assert.equal(snapshot.event, 'snapshot');
    return stream;
  };

  /** Takes a lock on `service` through A; its id. */
  const acquireOnA = async (service: string): Promise<string> => {
    const reply = await call(a.baseUrl, 'POST', `${API}/lock`, { service, who: 'on-a' });
    assert.equal(reply.status, 201, JSON.stringify(reply.json));
    return String(reply.json.id);
  };

  /** Resolves once `stream` sent the `acquired` event of lock `id`. */
  const acquiredOn = (stream: SseStream, id: string) =>
    stream.until(
      (message) =>
        message.event === 'acquired' && (message.json.lock as Record<string, unknown> | undefined)?.id === id,
      DELIVERY_MS,
    );

  /** The backend pids of B's LISTEN connection (named after its process). */
  const listenersOfB = () =>
    withClient(database().url, async (client) => {
      const result = await client.query<{ pid: number }>(
        'SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()',
        [`tracker listen ${b.child.pid}`],
      );
      return result.rows.map((row) => row.pid);
    });

  test('a watcher on B gets an event made through A, with B polling once an hour', async () => {
    const service = `news-${randomUUID()}`;
    const stream = await watch(b, service);
    for (let round = 0; round < 3; round++) {
      const id = await acquireOnA(service);
      await acquiredOn(stream, id);
      const released = await call(a.baseUrl, 'DELETE', `${API}/lock/${id}`);
      assert.equal(released.status, 200);
      const gone = (await stream.until((message) => message.event === 'released', DELIVERY_MS)).at(-1);
      assert.equal((gone?.json.lock as Record<string, unknown> | undefined)?.id, id);
    }
  });

  test("B's LISTEN connection killed: B listens again, and reads what it missed meanwhile", async () => {
    const service = `cut-${randomUUID()}`;
    const stream = await watch(b, service);
    const [listener] = await waitFor(
      async () => {
        const pids = await listenersOfB();
        return pids.length === 1 ? pids : null;
      },
      { what: "B's LISTEN connection in pg_stat_activity" },
    );
    const killed = await withClient(database().url, async (client) => {
      const result = await client.query<{ done: boolean }>('SELECT pg_terminate_backend($1) AS done', [
        listener,
      ]);
      return result.rows[0]?.done;
    });
    assert.equal(killed, true);
    // Made while B's connection is down (or already back: either way B must show it, and
    // not through its hour-long poll).
    const during = await acquireOnA(service);
    await waitFor(
      async () => {
        const pids = await listenersOfB();
        return pids.length === 1 && pids[0] !== listener;
      },
      { what: 'B to LISTEN again on a new connection' },
    );
    await acquiredOn(stream, during);
    // And what comes after, by NOTIFY again.
    assert.equal((await call(a.baseUrl, 'DELETE', `${API}/lock/${during}`)).status, 200);
    const next = await acquireOnA(service);
    await acquiredOn(stream, next);
    await waitFor(() => b.lines.some((line) => line.includes('postgres LISTEN connection lost')), {
      what: 'B logged the lost connection',
    });
  });
});
