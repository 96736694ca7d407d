import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { createEventFeed, type FeedMessage, SNAPSHOT_PAGE } from '../src/core/event-feed.js';
import { startHousekeeping } from '../src/core/housekeeping.js';
import type { LockStore } from '../src/core/lock-store.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { ManualClock } from './support/manual-clock.js';
import { tempDir } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

/** A real SQLite file, a clock the test moves, and a count of the feed's reads. */
function setup() {
  const dir = tempDir();
  const clock = new ManualClock();
  const store = openSqliteLockStore({ path: join(dir.path, 'tracker.db'), clock });
  const reads = { events: 0 };
  const counted: LockStore = new Proxy(store, {
    get(target, name) {
      if (name === 'readEvents') {
        return (...args: Parameters<LockStore['readEvents']>) => {
          reads.events++;
          return target.readEvents(...args);
        };
      }
      const member: unknown = Reflect.get(target, name);
      return typeof member === 'function' ? member.bind(target) : member;
    },
  });
  return {
    clock,
    store,
    counted,
    reads,
    take: async (service: string, who = 'w') => {
      const result = await store.acquire({ id: randomUUID(), service, who, ttlSeconds: null });
      assert.ok(result.acquired);
      return result.lock;
    },
    close: async () => {
      await store.close();
      dir.remove();
    },
  };
}

/** Collects what a watcher receives. */
function inbox() {
  const messages: FeedMessage[] = [];
  return {
    messages,
    send: (message: FeedMessage) => messages.push(message),
    events: () => messages.flatMap((m) => (m.kind === 'event' ? [[m.event.type, m.event.who] as const] : [])),
    async waitFor(count: number, timeoutMs = 3000) {
      await waitFor(() => messages.length >= count, { what: `${count} messages`, timeoutMs });
    },
  };
}

describe('event feed: one tail shared by every watcher', () => {
  test('a watcher gets a snapshot, then the changes of any writer, by polling; unwatched, no polling', async (t) => {
    // The poll's timer is the test's to move: no waiting for it, and proof that it stops.
    t.mock.timers.enable({ apis: ['setInterval'] });
    const s = setup();
    const feed = createEventFeed({ store: s.counted, pollMs: 20 });
    try {
      await s.take('held-before', 'early');
      const box = inbox();
      const stop = await feed.watch({}, box.send);
      const [snapshot] = box.messages;
      assert.equal(snapshot?.kind, 'snapshot');
      assert.deepEqual(snapshot?.kind === 'snapshot' ? snapshot.locks.map((l) => l.who) : [], ['early']);
      // Written behind the feed's back (no kick), as another replica would: the poll finds it.
      const lock = await s.take('deploy', 'a');
      await s.store.release(lock.id);
      const readsBeforePoll = s.reads.events;
      t.mock.timers.tick(20);
      assert.equal(s.reads.events, readsBeforePoll + 1, 'a poll period read the history once');
      await box.waitFor(3);
      assert.deepEqual(box.events(), [
        ['acquired', 'a'],
        ['released', 'a'],
      ]);
      assert.equal(feed.watchers, 1);
      stop();
      assert.equal(feed.watchers, 0);
      const readsWhenStopped = s.reads.events;
      // Fifty poll periods.
      t.mock.timers.tick(1000);
      assert.equal(s.reads.events, readsWhenStopped, 'nobody watches: the tail does not poll');
    } finally {
      feed.close();
      await s.close();
    }
  });

  test('kick reads at once, without waiting for the poll', async () => {
    const s = setup();
    const feed = createEventFeed({ store: s.counted, pollMs: 60_000 });
    try {
      const box = inbox();
      const stop = await feed.watch({ service: 'kicked' }, box.send);
      await s.take('kicked', 'k');
      await s.take('ignored', 'i');
      feed.kick();
      await box.waitFor(2);
      assert.deepEqual(box.events(), [['acquired', 'k']]);
      stop();
    } finally {
      feed.close();
      await s.close();
    }
  });

  test('each event reaches the watchers of every service and those of its own, and no one else', async () => {
    const s = setup();
    const feed = createEventFeed({ store: s.counted, pollMs: 60_000 });
    try {
      const all = inbox();
      const a1 = inbox();
      const a2 = inbox();
      const b = inbox();
      const leaving = inbox();
      const stops = [
        await feed.watch({}, all.send),
        await feed.watch({ service: 'a' }, a1.send),
        await feed.watch({ service: 'a' }, a2.send),
        await feed.watch({ service: 'b' }, b.send),
      ];
      const stopLeaving = await feed.watch({ service: 'a' }, leaving.send);
      stopLeaving();
      const first = await s.take('a', 'wa');
      await s.take('b', 'wb');
      await s.take('c', 'wc');
      feed.kick();
      await all.waitFor(4);
      await a2.waitFor(2);
      await b.waitFor(2);
      assert.deepEqual(all.events(), [
        ['acquired', 'wa'],
        ['acquired', 'wb'],
        ['acquired', 'wc'],
      ]);
      assert.deepEqual(a1.events(), [['acquired', 'wa']]);
      assert.deepEqual(a2.events(), [['acquired', 'wa']]);
      assert.deepEqual(b.events(), [['acquired', 'wb']]);
      assert.deepEqual(leaving.events(), [], 'a watcher that left hears nothing more');
      // Every watcher of 'a' gone, then a new one: it hears of 'a' again.
      stops[1]?.();
      stops[2]?.();
      const again = inbox();
      stops.push(await feed.watch({ service: 'a' }, again.send));
      await s.take('a2', 'other');
      await s.store.release(first.id);
      await s.take('a', 'wa-again');
      feed.kick();
      await again.waitFor(3);
      assert.deepEqual(again.events(), [
        ['released', 'wa'],
        ['acquired', 'wa-again'],
      ]);
      assert.deepEqual(a1.events(), [['acquired', 'wa']]);
      for (const stop of stops) stop?.();
    } finally {
      feed.close();
      await s.close();
    }
  });

  test('a resume far behind the memory buffer replays from the store, in order, with no snapshot', async () => {
    const s = setup();
    const feed = createEventFeed({ store: s.counted, pollMs: 10, bufferSize: 5 });
    try {
      const keeper = inbox();
      const stopKeeper = await feed.watch({}, keeper.send);
      const from = keeper.messages[0]?.kind === 'snapshot' ? keeper.messages[0].eventId : -1;
      for (let i = 0; i < 30; i++) await s.store.release((await s.take(`svc-${i}`, `w${i}`)).id);
      await keeper.waitFor(61);
      const box = inbox();
      const stop = await feed.watch({ after: from }, box.send);
      assert.equal(box.messages.length, 60);
      assert.ok(box.messages.every((m) => m.kind === 'event'));
      const ids = box.messages.map((m) => (m.kind === 'event' ? m.event.id : 0));
      assert.deepEqual(
        ids,
        Array.from({ length: 60 }, (_, i) => from + 1 + i),
      );
      stop();
      stopKeeper();
    } finally {
      feed.close();
      await s.close();
    }
  });

  test('a resume from a pruned or unknown id gets a fresh snapshot instead', async () => {
    const s = setup();
    const feed = createEventFeed({ store: s.counted, pollMs: 10 });
    try {
      const old = await s.take('old', 'old');
      await s.store.release(old.id);
      s.clock.advance(60_000);
      await s.take('fresh', 'fresh');
      assert.equal(await s.store.pruneHistory(30_000, 1000), 2);
      const pruned = inbox();
      const stop1 = await feed.watch({ after: 1 }, pruned.send);
      assert.equal(pruned.messages[0]?.kind, 'snapshot', 'events 2.. are gone: no gap-free resume');
      const future = inbox();
      const stop2 = await feed.watch({ after: 1_000_000 }, future.send);
      assert.equal(future.messages[0]?.kind, 'snapshot');
      const kept = inbox();
      const stop3 = await feed.watch({ after: 2 }, kept.send);
      assert.deepEqual(kept.events(), [['acquired', 'fresh']], 'from the floor on, a resume still works');
      for (const stop of [stop1, stop2, stop3]) stop();
    } finally {
      feed.close();
      await s.close();
    }
  });

  test('a store that cannot be read rejects the watch and leaves no watcher behind', async () => {
    const s = setup();
    const feed = createEventFeed({
      store: { ...s.store, eventCursor: () => Promise.reject(new Error('store down')) },
    });
    try {
      await assert.rejects(
        feed.watch({}, () => {}),
        /store down/,
      );
      assert.equal(feed.watchers, 0);
    } finally {
      feed.close();
      await s.close();
    }
  });
});

describe('housekeeping', () => {
  test('the sweep expires due leases and the prune applies retention, until stopped', async () => {
    const s = setup();
    const swept: number[] = [];
    const errors: unknown[] = [];
    const lease = await s.store.acquire({ id: randomUUID(), service: 'lease', who: 'w', ttlSeconds: 1 });
    assert.ok(lease.acquired);
    s.clock.advance(120_000);
    await s.take('recent', 'r');
    const chores = startHousekeeping({
      sweep: async () => {
        const { expired } = await s.store.sweep(100);
        swept.push(expired.length);
        return expired.length;
      },
      store: s.store,
      keyRetentionMs: 3_600_000,
      retentionMs: 60_000,
      sweepMs: 10,
      pruneMs: 10,
      onError: (_task, error) => errors.push(error),
    });
    try {
      await waitFor(() => swept.length >= 3, { what: 'three sweeps' });
      assert.deepEqual(
        swept.filter((n) => n > 0),
        [1],
        'the due lease was swept once',
      );
      const history = await waitFor(
        async () => {
          const events = await s.store.history({ service: 'lease', limit: 10 });
          return events.length === 1 && events;
        },
        { what: 'the prune of the acquire' },
      );
      assert.deepEqual(
        history.map((e) => e.type),
        ['expired'],
        'the acquire, recorded 2 minutes ago, is past the 1-minute retention',
      );
      assert.deepEqual(errors, []);
    } finally {
      await chores.stop();
    }
    const after = swept.length;
    // A second housekeeping with the same period: by the time it has swept three times, the
    // first would have swept again, had it not stopped.
    const reference: number[] = [];
    const referenceErrors: unknown[] = [];
    const clockwork = startHousekeeping({
      sweep: async () => reference.push(0),
      store: s.store,
      retentionMs: null,
      keyRetentionMs: 3_600_000,
      sweepMs: 10,
      onError: (_task, error) => referenceErrors.push(error),
    });
    try {
      await waitFor(() => reference.length >= 3, { what: 'three sweeps of a second housekeeping' });
    } finally {
      await clockwork.stop();
    }
    assert.equal(swept.length, after, 'no sweep after stop');
    assert.deepEqual(referenceErrors, []);
    await s.close();
  });
});

describe('event feed: large snapshots and replays go a page at a time', () => {
  test('a snapshot larger than a page comes in pages, each once the stream has drained the last', async () => {
    const s = setup();
    const feed = createEventFeed({ store: s.counted, pollMs: 60_000 });
    try {
      const total = 2 * SNAPSHOT_PAGE + 7;
      for (let i = 0; i < total; i++) await s.take(`paged-${i}`);
      const box = inbox();
      // The stream drains only when the test says so: the feed must wait for it.
      let release: () => void = () => {};
      let asked = 0;
      const drained = () => {
        asked++;
        return new Promise<void>((resolve) => {
          release = resolve;
        });
      };
      const watching = feed.watch({ drained }, box.send);
      await waitFor(() => asked === 1, { what: 'the feed to wait after the first page' });
      assert.equal(box.messages.length, 1, 'one page sent, the next one waits');
      release();
      await waitFor(() => asked === 2, { what: 'the second page' });
      assert.equal(box.messages.length, 2);
      release();
      const stop = await watching;
      const pages = box.messages.flatMap((m) => (m.kind === 'snapshot' ? [m] : []));
      assert.deepEqual(
        pages.map((page) => [page.locks.length, page.continued, page.more]),
        [
          [SNAPSHOT_PAGE, false, true],
          [SNAPSHOT_PAGE, true, true],
          [7, true, false],
        ],
      );
      const services = new Set(pages.flatMap((page) => page.locks.map((lock) => lock.service)));
      assert.equal(services.size, total, 'every lock once');
      assert.equal(new Set(pages.map((page) => page.eventId)).size, 1, 'one eventId for the whole snapshot');
      stop();
    } finally {
      feed.close();
      await s.close();
    }
  });

  test('a resume further back than a replay sends (here two pages of events) gets a fresh snapshot instead', async () => {
    const s = setup();
    const feed = createEventFeed({ store: s.counted, pollMs: 60_000, bufferSize: 100, replayPages: 2 });
    try {
      const keeper = inbox();
      const stopKeeper = await feed.watch({}, keeper.send);
      const from = keeper.messages[0]?.kind === 'snapshot' ? keeper.messages[0].eventId : -1;
      // 2,002 events: more than two pages.
      for (let i = 0; i < 1001; i++) await s.store.release((await s.take('busy', `w${i}`)).id);
      feed.kick();
      await waitFor(() => keeper.messages.length > 2002, { what: 'the keeper to see every event' });
      const near = inbox();
      // 1,002 events: a page from the store, the rest from memory.
      const stopNear = await feed.watch({ after: from + 1000 }, near.send);
      assert.equal(near.messages.length, 1002, 'the events, no snapshot');
      assert.ok(near.messages.every((m) => m.kind === 'event'));
      const far = inbox();
      const stopFar = await feed.watch({ after: from }, far.send);
      assert.equal(far.messages[0]?.kind, 'snapshot', 'a snapshot at once instead of 2,002 events');
      assert.ok(far.messages.every((m) => m.kind === 'snapshot'));
      stopFar();
      stopNear();
      stopKeeper();
    } finally {
      feed.close();
      await s.close();
    }
  });
});
