import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { LockStore } from '../../src/core/lock-store.js';
import type { WebhookProgress, WebhookSpec } from '../../src/core/webhooks.js';
import type { StoreUnderTest } from './lock-store.contract.js';

/** The webhooks' part of the LockStore contract: every store runs exactly these tests. */
export function runWebhookStoreContract(name: string, open: () => Promise<StoreUnderTest>): void {
  describe(`LockStore contract, webhooks: ${name}`, () => {
    let subject: StoreUnderTest;
    let store: LockStore;
    const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;
    const spec = (webhook: string, more: Partial<WebhookSpec> = {}): WebhookSpec => ({
      name: webhook,
      url: 'https://hooks.example.com/tracker',
      secret: 'a-long-enough-shared-secret',
      events: ['acquired', 'released'],
      services: null,
      format: 'json',
      alertAfterSeconds: null,
      ...more,
    });

    before(async () => {
      subject = await open();
      store = subject.store;
    });
    after(async () => {
      await subject.cleanup();
    });

    test('put creates with the given cursor, a second put replaces the spec and keeps the state', async () => {
      const webhook = unique('put');
      const first = await store.webhooks.putWebhook(spec(webhook), 41);
      assert.equal(first.created, true);
      assert.equal(first.webhook.cursor, 41);
      assert.deepEqual(first.webhook.events, ['acquired', 'released']);
      assert.ok(await store.webhooks.claimWebhook(webhook, 'replica-a', 10_000));
      const progress: WebhookProgress = { ...first.webhook, cursor: 50, delivered: 3 };
      assert.equal(await store.webhooks.recordWebhook(webhook, 'replica-a', progress, 10_000), true);
      const second = await store.webhooks.putWebhook(
        spec(webhook, { format: 'slack', services: 'deploy-*' }),
        99,
      );
      assert.equal(second.created, false);
      assert.deepEqual(
        [second.webhook.cursor, second.webhook.delivered, second.webhook.format, second.webhook.services],
        [50, 3, 'slack', 'deploy-*'],
      );
      assert.ok((await store.webhooks.listWebhooks()).some((one) => one.name === webhook));
      assert.equal(await store.webhooks.deleteWebhook(webhook), true);
      assert.equal(await store.webhooks.deleteWebhook(webhook), false);
      assert.equal(await store.webhooks.getWebhook(webhook), null);
    });

    test('one claim at a time: another owner waits for its release or its lease; progress needs the claim', async () => {
      const webhook = unique('claim');
      const { webhook: created } = await store.webhooks.putWebhook(spec(webhook), 0);
      assert.ok(await store.webhooks.claimWebhook(webhook, 'a', 5_000));
      assert.equal(await store.webhooks.claimWebhook(webhook, 'b', 5_000), null, 'held by a');
      assert.equal(await store.webhooks.recordWebhook(webhook, 'b', { ...created, cursor: 9 }, 5_000), false);
      assert.ok(await store.webhooks.claimWebhook(webhook, 'a', 5_000), 'a claims again');
      await store.webhooks.releaseWebhook(webhook, 'a');
      assert.ok(await store.webhooks.claimWebhook(webhook, 'b', 5_000), 'released: b takes it');
      await subject.advance(6_000);
      assert.ok(await store.webhooks.claimWebhook(webhook, 'c', 5_000), 'the lease ran out: c takes it');
      assert.equal(await store.webhooks.recordWebhook(webhook, 'b', { ...created, cursor: 9 }, 5_000), false);
      // A backoff keeps everyone out until it is due.
      const later = new Date((subject.now?.() ?? new Date()).getTime() + 3_000);
      assert.equal(
        await store.webhooks.recordWebhook(
          webhook,
          'c',
          { ...created, failures: 1, nextAttemptAt: later },
          5_000,
        ),
        true,
      );
      await store.webhooks.releaseWebhook(webhook, 'c');
      assert.equal(await store.webhooks.claimWebhook(webhook, 'c', 5_000), null, 'not due yet');
      await subject.advance(4_000);
      const due = await store.webhooks.claimWebhook(webhook, 'c', 5_000);
      assert.equal(due?.failures, 1);
    });

    test('alerts: locks held and requests waiting since a time, of matching services, each once', async () => {
      const webhook = unique('alerts');
      await store.webhooks.putWebhook(
        spec(webhook, { events: ['held-too-long', 'waited-too-long'], alertAfterSeconds: 1 }),
        0,
      );
      const prefix = unique('alert');
      const held = await store.acquire({
        id: randomUUID(),
        service: `${prefix}-db`,
        who: 'old',
        ttlSeconds: null,
        note: 'n',
      });
      assert.ok(held.acquired);
      const waiter = randomUUID();
      await store.acquire(
        { id: waiter, service: `${prefix}-db`, who: 'patient', ttlSeconds: null },
        { owner: 'replica-a' },
      );
      await store.acquire({ id: randomUUID(), service: unique('other'), who: 'elsewhere', ttlSeconds: null });
      await subject.advance(2_000);
      const before = new Date((subject.now?.() ?? new Date()).getTime() - 1_000);
      const glob = `${prefix}-*`;
      const heldDue = await store.webhooks.dueAlerts(webhook, 'held-too-long', before, glob, 10);
      assert.deepEqual(
        heldDue.map((one) => [one.id, one.who, one.note]),
        [[held.lock.id, 'old', 'n']],
      );
      const waitingDue = await store.webhooks.dueAlerts(webhook, 'waited-too-long', before, glob, 10);
      assert.deepEqual(
        waitingDue.map((one) => [one.id, one.who]),
        [[waiter, 'patient']],
      );
      await store.webhooks.markAlerted(webhook, 'held-too-long', held.lock.id);
      await store.webhooks.markAlerted(webhook, 'held-too-long', held.lock.id);
      assert.deepEqual(
        await store.webhooks.dueAlerts(webhook, 'held-too-long', before, glob, 10),
        [],
        'once',
      );
      // Gone and pruned: a new lock with the same service is alerted again, the old one never.
      await store.release(held.lock.id);
      await store.webhooks.pruneAlerts(webhook);
      assert.deepEqual(
        (
          await store.webhooks.dueAlerts(webhook, 'held-too-long', new Date('2100-01-01T00:00:00Z'), glob, 10)
        ).map((one) => one.id),
        [waiter],
        'the waiter was granted the lock under its id: a lock now, not yet alerted as held',
      );
    });
  });
}
