/**
 * The per-label gauges of /metrics: holders, waiters, capacity and free count of the
 * resources carrying each label, read from the registry at scrape time.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { freeSlots } from '../src/core/grants.js';
import type { Lock, LockMode, Resource, Waiter } from '../src/core/lock.js';
import { createMetrics, labelTotals } from '../src/metrics.js';

let next = 0;
const lock = (service: string, mode: LockMode = 'exclusive', limit = 1): Lock => ({
  id: `00000000-0000-4000-8000-${String(++next).padStart(12, '0')}`,
  service,
  who: `job-${next}`,
  createdAt: new Date(0),
  ttlSeconds: null,
  expiresAt: null,
  fencingToken: next,
  waiters: 0,
  owner: null,
  limit,
  mode,
  groupId: null,
  resource: null,
  note: null,
  link: null,
});
const waiter = (service: string, lockId: string, label: string | null = null): Waiter => ({
  ticket: ++next,
  lockId,
  service,
  who: `waiter-${next}`,
  since: new Date(0),
  position: 1,
  priority: 0,
  mode: 'exclusive',
  label,
  groupId: null,
  note: null,
  link: null,
});
const resource = (
  name: string,
  labels: string[],
  capacity: number,
  holders: Lock[] = [],
  waiters: Waiter[] = [],
): Resource => ({ name, labels, properties: {}, capacity, description: null, holders, waiters });

describe('per-label metrics', () => {
  test('free: what a resource still admits exclusively; nothing beside a shared holder', () => {
    assert.equal(freeSlots(resource('a', [], 3)), 3);
    assert.equal(freeSlots(resource('a', [], 3, [lock('a', 'exclusive', 3)])), 2);
    assert.equal(freeSlots(resource('a', [], 3, [lock('a', 'shared', 3)])), 0);
    // A registered resource's capacity is its limit, whatever its holders were granted under.
    assert.equal(freeSlots(resource('a', [], 3, [lock('a', 'exclusive', 2), lock('a', 'exclusive', 2)])), 1);
    assert.equal(freeSlots(resource('a', [], 1, [lock('a'), lock('a')])), 0, 'never negative');
  });

  test('totals per label; a label request waiting on several resources counts once', () => {
    const phoneWaiter = 'ffffffff-0000-4000-8000-000000000001';
    const resources = [
      resource('phone-1', ['phone'], 1, [lock('phone-1')], [waiter('phone', phoneWaiter, 'phone')]),
      resource('phone-2', ['phone', 'fast'], 1, [lock('phone-2')], [waiter('phone', phoneWaiter, 'phone')]),
      resource('rack', ['phone', 'rack'], 4, [lock('rack', 'exclusive', 4)], [waiter('rack', 'x')]),
      resource('bare', [], 2),
    ];
    assert.deepEqual(Object.fromEntries(labelTotals(resources)), {
      phone: { resources: 3, capacity: 6, holders: 3, waiters: 2, free: 3 },
      fast: { resources: 1, capacity: 1, holders: 1, waiters: 1, free: 0 },
      rack: { resources: 1, capacity: 4, holders: 1, waiters: 1, free: 3 },
    });
  });

  test('/metrics reads the registry at scrape time, once for all the label gauges', async () => {
    let reads = 0;
    let registry: Resource[] = [resource('db-1', ['db'], 2, [lock('db-1', 'exclusive', 2)])];
    const metrics = createMetrics({
      stats: async () => ({ locks: 1, waiters: 0 }),
      resources: async () => {
        reads++;
        return registry;
      },
      watchers: { size: 0, bufferedBytes: 0, dropped: 0 },
    });
    const scrape = async () => {
      const text = await metrics.registry.metrics();
      return (name: string, label: string) => {
        const match = new RegExp(`^${name}\\{label="${label}"\\} (\\d+)$`, 'm').exec(text);
        return match ? Number(match[1]) : undefined;
      };
    };
    let value = await scrape();
    assert.equal(reads, 1, 'one read of the registry per scrape');
    assert.equal(value('tracker_label_resources', 'db'), 1);
    assert.equal(value('tracker_label_capacity', 'db'), 2);
    assert.equal(value('tracker_label_holders', 'db'), 1);
    assert.equal(value('tracker_label_waiters', 'db'), 0);
    assert.equal(value('tracker_label_free', 'db'), 1);
    // The next scrape sees the registry as it is then: a label that went away is not reported.
    registry = [resource('cache', ['cache'], 1)];
    value = await scrape();
    assert.equal(reads, 2);
    assert.equal(value('tracker_label_holders', 'db'), undefined);
    assert.equal(value('tracker_label_free', 'cache'), 1);
    assert.match(await metrics.registry.metrics(), /^# TYPE tracker_label_waiters gauge$/m);
  });
});
