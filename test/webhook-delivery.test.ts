import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { join } from 'node:path';
import { test } from 'node:test';
import { startWebhookDelivery } from '../src/core/webhooks.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { sendWebhook, signWebhook } from '../src/webhook-transport.js';
import { ManualClock } from './support/manual-clock.js';
import { tempDir } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

/**
 * The delivery loop's time rules, on a real SQLite file and a real receiver, with the clock
 * moved by hand (the one fake): the backoff doubles, and an event refused for 24 hours is
 * dropped so that the ones after it go on.
 */
test('a refused event is retried with a doubling backoff, then dropped after 24 h; the next one goes', async () => {
  const dir = tempDir();
  const clock = new ManualClock();
  const store = openSqliteLockStore({ path: join(dir.path, 'delivery.db'), clock });
  const attempts: Array<{ at: number; event: string }> = [];
  let refuse = true;
  const receiver = http.createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => {
      body += chunk.toString();
    });
    request.on('end', () => {
      attempts.push({ at: clock.now().getTime(), event: String(request.headers['x-tracker-event']) });
      const refused = refuse && (JSON.parse(body) as { event: string }).event === 'acquired';
      response.writeHead(refused ? 500 : 200).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const address = receiver.address();
  assert.ok(address && typeof address === 'object');
  const delivery = startWebhookDelivery({
    store,
    clock,
    owner: 'test',
    send: sendWebhook,
    sign: signWebhook,
    checkUrl: async () => null,
    present: { event: (event) => ({ id: event.id, type: event.type }), alert: () => ({}) },
    intervalMs: 20,
    onError: (error) => assert.fail(error as Error),
  });
  try {
    await store.webhooks.putWebhook(
      {
        name: 'drops',
        url: `http://127.0.0.1:${address.port}/`,
        secret: 'a-long-enough-shared-secret',
        events: ['acquired', 'released'],
        services: null,
        format: 'json',
        alertAfterSeconds: null,
      },
      0,
    );
    const taken = await store.acquire({ id: randomUUID(), service: 'db', who: 'ci', ttlSeconds: null });
    assert.ok(taken.acquired);
    await store.release(taken.lock.id);
    // Attempts 1, 2, 3 …: each after the backoff of the one before (1 s, 2 s, 4 s …).
    const gaps: number[] = [];
    for (let attempt = 1; attempt <= 4; attempt++) {
      // The receiver has its request before the loop records the answer: wait for both.
      const state = await waitFor(
        async () => {
          const now = await store.webhooks.getWebhook('drops');
          return attempts.length === attempt && now?.failures === attempt ? now : null;
        },
        { what: `attempt ${attempt}, recorded` },
      );
      assert.equal(state?.lastStatus, 500);
      const wait = (state?.nextAttemptAt?.getTime() ?? 0) - clock.now().getTime();
      gaps.push(wait);
      clock.advance(wait);
    }
    assert.deepEqual(gaps, [1000, 2000, 4000, 8000]);
    // A day later the same event is still refused: it is dropped, and `released` goes.
    clock.advance(24 * 3600 * 1000);
    const dropped = await waitFor(
      async () => {
        const state = await store.webhooks.getWebhook('drops');
        return state && state.dropped === 1 && state.delivered === 1 ? state : null;
      },
      { what: 'the drop and the next delivery' },
    );
    assert.equal(dropped.failures, 0);
    assert.deepEqual(
      attempts.slice(-2).map((one) => one.event),
      ['acquired', 'released'],
    );
  } finally {
    refuse = false;
    await delivery.stop();
    await store.close();
    receiver.closeAllConnections();
    await new Promise<void>((resolve) => receiver.close(() => resolve()));
    dir.remove();
  }
});
