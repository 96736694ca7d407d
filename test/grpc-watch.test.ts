/**
 * ForceReleaseLock, GetHistory, WatchLocks and grpc.health.v1.Health end to end, against the
 * real server process (`node dist/src/main.js`, SQLite in memory).
 *
 * Each is called through server reflection alone (`buf curl`, no .proto at hand), as grpcurl
 * users call them; the rest goes through a grpc-js client loaded from the .proto, which is
 * cheap and sees every message of a stream as it arrives: the snapshot, each event in order,
 * resuming after a disconnect, expiry by the sweeper, cancellation, and what a stopping
 * server does to open streams.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { bufOk, bufStream } from './support/buf-curl.js';
import {
  HEALTH_SERVICE,
  healthClient,
  type LockEventMessage,
  type LockMessage,
  type LockServiceClient,
  lockMessageAsJson,
  lockServiceClient,
  rejectsWith,
  SERVICE,
  type StreamRecorder,
  serverStream,
  unary,
  type WatchLocksMessage,
} from './support/grpc-client.js';
import { API, call } from './support/rest.js';
import { type ServerProcess, startServerProcess } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

const EVENT_ID = /^[1-9][0-9]*$/;
const EVENT_AT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** A fresh service name, so tests sharing one server never see each other's events. */
const unique = (label: string) => `${label}-${randomUUID()}`;

/** A lock as buf curl prints it (proto3 JSON: zero values left out, int64 as a string). */
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

/** A LockEvent as buf curl prints it. */
interface EventJson {
  id: string;
  type: string;
  at: string;
  service: string;
  who: string;
  lock: LockJson;
  heldSeconds?: number;
  reason?: string;
}

/** A GetHistory response: as buf prints it (no events, no next page: left out) ... */
interface HistoryJson {
  events?: EventJson[];
  nextBefore?: string;
}

/** ... and as grpc-js decodes it (every field present; no next page is '0'). */
interface HistoryMessage {
  events: LockEventMessage[];
  nextBefore: string;
}

/** The server's `tracker_watchers` gauge: watch streams (SSE and gRPC) connected now. */
async function watcherCount(baseUrl: string): Promise<number> {
  const response = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
  const match = /^tracker_watchers (\d+)$/m.exec(await response.text());
  assert.ok(match, 'the tracker_watchers gauge is exported');
  return Number(match[1]);
}

/** How many WatchLocks calls ended CANCELLED, by the server's metrics. */
async function cancelledWatches(baseUrl: string): Promise<number> {
  const response = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
  const match =
    /^tracker_grpc_request_duration_seconds_count\{method="WatchLocks",code="CANCELLED"\} (\d+)$/m.exec(
      await response.text(),
    );
  return match ? Number(match[1]) : 0;
}

/** The events of a watch, without its snapshot. */
const eventsOf = (messages: readonly WatchLocksMessage[]): LockEventMessage[] =>
  messages.flatMap((message) => (message.event ? [message.event] : []));

/** Ids of events, as numbers, must grow strictly. */
function assertIncreasing(events: readonly { id: string }[], label: string): void {
  for (let i = 1; i < events.length; i++) {
    assert.ok(
      Number(events[i]?.id) > Number(events[i - 1]?.id),
      `${label}: event ids do not increase: ${events.map((event) => event.id).join(', ')}`,
    );
  }
}

/** The lock of an event without its waiters count (which says what came right after it). */
const withoutWaiters = ({ waiters: _waiters, ...lock }: LockMessage) => lock;

const NOT_FOUND = { 'tracker-code': 'LOCK_NOT_FOUND' };
const invalid = (field: string) => ({ 'tracker-code': 'INVALID_ARGUMENT', 'tracker-field': field });

describe('history, force release, watch and health on one server', () => {
  let server: ServerProcess;
  let address: string;
  let client: LockServiceClient;
  const open: StreamRecorder<unknown>[] = [];
  /** Through buf and reflection alone. */
  const ok = <T>(method: string, body?: unknown) => bufOk<T>(address, `${SERVICE}/${method}`, body);
  /** Through the grpc-js client. */
  const rpc = <T>(method: string, request: object, timeoutMs?: number) =>
    unary<T>(client, method, request, timeoutMs);
  /** A WatchLocks call, cancelled after the tests if it is still running. */
  const watch = (request: { service?: string; lastEventId?: string }, deadlineMs?: number) => {
    const recorder = serverStream<WatchLocksMessage>(client, 'WatchLocks', request, deadlineMs);
    open.push(recorder as StreamRecorder<unknown>);
    return recorder;
  };
  /** Waits until the watch has received `n` events after its snapshot (or resume). */
  const events = async (recorder: StreamRecorder<WatchLocksMessage>, n: number, timeoutMs?: number) =>
    eventsOf(await recorder.until((messages) => eventsOf(messages).length >= n, timeoutMs));

  before(async () => {
    server = await startServerProcess();
    address = server.grpcAddress;
    client = lockServiceClient(address);
  });
  after(async () => {
    for (const recorder of open) recorder.cancel();
    client?.close();
    await server?.stop();
  });

  test('ForceReleaseLock releases whoever holds it, records the reason, grants the next waiter', async () => {
    const service = unique('force-release');
    const lock = await rpc<LockMessage>('CreateLock', { service, who: 'stuck-job', ttlSeconds: 600 });

    // An over-long reason is refused, naming the field, and changes nothing.
    const tooLong = await rejectsWith(
      rpc('ForceReleaseLock', { id: lock.id, reason: 'r'.repeat(1025) }),
      status.INVALID_ARGUMENT,
      invalid('reason'),
    );
    assert.match(tooLong.details, /\breason\b/);
    assert.match(tooLong.details, /1024/);
    assert.deepEqual(await rpc('GetLock', { id: lock.id }), lock);

    // Through reflection, as grpcurl users call it.
    const released = await ok('ForceReleaseLock', { id: lock.id, reason: 'runner crashed' });
    assert.deepEqual(released, {
      success: true,
      message: 'Lock force-released',
      lock: lockMessageAsJson(lock),
    });
    await Promise.all([
      rejectsWith(rpc('GetLock', { id: lock.id }), status.NOT_FOUND, NOT_FOUND),
      rejectsWith(rpc('ForceReleaseLock', { id: lock.id }), status.NOT_FOUND, NOT_FOUND),
      rejectsWith(rpc('ForceReleaseLock', { id: randomUUID(), reason: 'gone' }), status.NOT_FOUND, NOT_FOUND),
      rejectsWith(rpc('ForceReleaseLock', { id: 'not-a-uuid' }), status.NOT_FOUND, NOT_FOUND),
    ]);

    const history = await rpc<HistoryMessage>('GetHistory', { service });
    assert.deepEqual(
      history.events.map((event) => [event.type, event.who, event.lock.id]),
      [
        ['force-released', 'stuck-job', lock.id],
        ['acquired', 'stuck-job', lock.id],
      ],
      'the refused force release recorded nothing',
    );
    assert.equal(history.events[0]?.reason, 'runner crashed');
    const heldSeconds = history.events[0]?.heldSeconds ?? -1;
    assert.ok(heldSeconds >= 0 && heldSeconds < 60, `heldSeconds ${heldSeconds}`);

    // With someone waiting in line, the force release hands the lock to them; a reason of
    // exactly 1024 characters is accepted and recorded whole.
    const holder = await rpc<LockMessage>('CreateLock', { service, who: 'holder' });
    const waiting = call(server.baseUrl, 'POST', `${API}/lock`, { service, who: 'next', waitSeconds: 20 });
    await waitFor(
      async () => {
        const { waiters } = (await call(server.baseUrl, 'GET', `${API}/queue/${service}`)).json;
        return Array.isArray(waiters) && waiters.length === 1;
      },
      { what: 'the waiter in line' },
    );
    const reason = 'x'.repeat(1024);
    const forced = await rpc<{ lock: LockMessage }>('ForceReleaseLock', { id: holder.id, reason });
    assert.equal(forced.lock.id, holder.id);
    const granted = await waiting;
    assert.equal(granted.status, 201);
    assert.equal(granted.json.who, 'next');
    const latest = (await rpc<HistoryMessage>('GetHistory', { service, limit: 4 })).events;
    const forcedEvent = latest.find((event) => event.type === 'force-released');
    assert.equal(forcedEvent?.reason, reason);
    assert.equal(forcedEvent?.lock.id, holder.id);
    assert.ok(latest.some((event) => event.type === 'acquired' && event.lock.id === granted.json.id));
  });

  test('GetHistory: newest first, exact filters, since/until bounds, limit and before paging', async () => {
    const s1 = unique('history-one');
    const s2 = unique('history-two');
    const alice = unique('alice');
    const bob = unique('bob');
    // One change after the other, each once the clock has passed the one before (the
    // server's clock is this machine's), so that every event has its own `at`.
    const step = async <T>(method: string, request: object): Promise<T> => {
      const result = await rpc<T>(method, request);
      const answered = Date.now();
      await waitFor(() => Date.now() > answered, { what: 'the clock to pass the last event', intervalMs: 1 });
      return result;
    };
    const l1 = await step<LockMessage>('CreateLock', { service: s1, who: alice, ttlSeconds: 60 });
    await step('RenewLock', { id: l1.id, ttlSeconds: 120 });
    await step('UnLock', { id: l1.id });
    const l2 = await step<LockMessage>('CreateLock', { service: s2, who: bob });
    const l3 = await step<LockMessage>('CreateLock', { service: s1, who: bob });
    await step('UnLock', { id: l3.id });
    await step('UnLock', { id: l2.id });

    // Through reflection, as grpcurl prints it.
    const all = await ok<HistoryJson>('GetHistory', { service: s1 });
    const newestFirst = all.events ?? [];
    assert.deepEqual(
      newestFirst.map((event) => [event.type, event.who]),
      [
        ['released', bob],
        ['acquired', bob],
        ['released', alice],
        ['renewed', alice],
        ['acquired', alice],
      ],
    );
    assert.equal(all.nextBefore, undefined, 'one page only: next_before is 0 (left out of the JSON)');
    assertIncreasing([...newestFirst].reverse(), 'GetHistory');
    for (const event of newestFirst) {
      assert.match(event.id, EVENT_ID);
      assert.match(event.at, EVENT_AT);
      assert.equal(event.service, s1);
      assert.equal(event.lock.service, s1);
      assert.equal(event.lock.who, event.who);
    }
    const renewed = newestFirst[3] as EventJson;
    assert.equal(renewed.lock.id, l1.id);
    assert.equal(renewed.lock.ttlSeconds, 120);
    // grpc-js decodes the same events.
    const same = await rpc<HistoryMessage>('GetHistory', { service: s1 });
    assert.deepEqual(
      same.events.map((event) => [event.id, event.type, event.at, event.lock.id]),
      newestFirst.map((event) => [event.id, event.type, event.at, event.lock.id]),
    );
    assert.equal(same.nextBefore, '0');
    const history = async (request: object) =>
      (await rpc<HistoryMessage>('GetHistory', request)).events.map((event) => event.id);

    // who, and both filters together.
    const byBob = (await rpc<HistoryMessage>('GetHistory', { who: bob })).events;
    assert.deepEqual(
      byBob.map((event) => [event.type, event.service]),
      [
        ['released', s2],
        ['released', s1],
        ['acquired', s1],
        ['acquired', s2],
      ],
    );
    assert.deepEqual(
      await history({ service: s1, who: bob }),
      newestFirst.slice(0, 2).map((event) => event.id),
    );

    // since is inclusive, until exclusive; the expectation comes from the events' own `at`.
    const oldestFirst = [...newestFirst].reverse();
    const at = (i: number) => (oldestFirst[i] as EventJson).at;
    const between = (since: string | undefined, until: string | undefined) =>
      newestFirst
        .filter(
          (event) =>
            (since === undefined || Date.parse(event.at) >= Date.parse(since)) &&
            (until === undefined || Date.parse(event.at) < Date.parse(until)),
        )
        .map((event) => event.id);
    const bounds: Array<{ since?: string; until?: string }> = [
      { since: at(2) },
      { until: at(2) },
      { since: at(1), until: at(4) },
    ];
    for (const bound of bounds) {
      const expected = between(bound.since, bound.until);
      assert.ok(expected.length > 0 && expected.length < newestFirst.length, 'the bound selects some events');
      assert.deepEqual(await history({ service: s1, ...bound }), expected, JSON.stringify(bound));
    }
    assert.deepEqual(
      (await history({ service: s1, since: at(2) })).at(-1),
      oldestFirst[2]?.id,
      'since includes an event recorded exactly then',
    );

    // limit and before: pages of 2 chained through next_before give the whole history.
    const pages: string[][] = [];
    let before = '0';
    for (let page = 0; page < 10; page++) {
      const reply = await rpc<HistoryMessage>('GetHistory', { service: s1, limit: 2, before });
      pages.push(reply.events.map((event) => event.id));
      before = reply.nextBefore;
      if (before === '0') break;
      assert.equal(before, reply.events.at(-1)?.id, 'next_before is the last id of the page');
    }
    assert.deepEqual(
      pages.map((ids) => ids.length),
      [2, 2, 1],
    );
    assert.deepEqual(
      pages.flat(),
      newestFirst.map((event) => event.id),
    );
    assert.deepEqual(
      await history({ service: s1, before: oldestFirst[2]?.id }),
      [oldestFirst[1]?.id, oldestFirst[0]?.id],
      'before: only smaller ids',
    );

    // Unfiltered, limit 1: the newest event of the whole store, and a next page to fetch.
    const newest = await rpc<HistoryMessage>('GetHistory', { limit: 1 });
    assert.equal(newest.events.length, 1);
    assert.equal(newest.events[0]?.lock.id, l2.id);
    assert.equal(newest.events[0]?.type, 'released');
    assert.equal(newest.nextBefore, newest.events[0]?.id);

    await Promise.all(
      (
        [
          [{ since: 'yesterday' }, 'since'],
          [{ since: '2026-13-45T00:00:00Z' }, 'since'],
          [{ since: '2024-02-30T00:00:00Z' }, 'since'],
          [{ until: '2023-02-29T12:00:00Z' }, 'until'],
          [{ since: '2024-01-15T24:00:00Z' }, 'since'],
          [{ since: '2024-01-15T10:00:00' }, 'since'],
          [{ until: '2024-01-15T10:00Z' }, 'until'],
          [{ since: '2024-01-15T10:00:00+25:00' }, 'since'],
          [{ until: 'soon' }, 'until'],
          [{ limit: 1001 }, 'limit'],
        ] as const
      ).map(async ([request, field]) => {
        const error = await rejectsWith(rpc('GetHistory', request), status.INVALID_ARGUMENT, invalid(field));
        assert.match(error.details, new RegExp(`\\b${field}\\b`));
      }),
    );
  });

  test('WatchLocks through reflection streams a snapshot first, then each event as it happens', async () => {
    const service = unique('buf-watch');
    const held = await rpc<LockMessage>('CreateLock', { service, who: 'before-watch' });
    // buf prints each message as it arrives; the stream never ends by itself.
    const watching = bufStream(address, `${SERVICE}/WatchLocks`, { service });
    try {
      const [first] = (await watching.until(1, 'the snapshot through buf')) as Array<{
        snapshot?: { eventId: string; locks?: LockJson[] };
      }>;
      await rpc('UnLock', { id: held.id });
      const next = await rpc<LockMessage>('CreateLock', { service, who: 'during-watch', ttlSeconds: 30 });
      // A last change, so that anything stray (a repeat) would show up before its event.
      await rpc('UnLock', { id: next.id });
      const messages = (await watching.until(4, 'three events through buf')) as Array<{
        snapshot?: { eventId: string; locks?: LockJson[] };
        event?: EventJson;
      }>;
      assert.ok(watching.running, `the stream is still open: ${watching.stderr}`);
      assert.equal(messages.length, 4, JSON.stringify(messages));
      const [, ...rest] = messages;
      assert.deepEqual(Object.keys(first ?? {}), ['snapshot']);
      assert.match(String(first?.snapshot?.eventId), /^[0-9]+$/);
      assert.deepEqual(first?.snapshot?.locks, [lockMessageAsJson(held)]);
      const events = rest.map((message) => {
        assert.deepEqual(Object.keys(message), ['event']);
        return message.event as EventJson;
      });
      assert.deepEqual(
        events.map((event) => [event.type, event.lock.id]),
        [
          ['released', held.id],
          ['acquired', next.id],
          ['released', next.id],
        ],
      );
      assert.ok(Number(events[0]?.id) > Number(first?.snapshot?.eventId), 'events come after the snapshot');
      assertIncreasing(events, 'buf WatchLocks');
      assert.deepEqual(events[1]?.lock, lockMessageAsJson(next));
    } finally {
      await watching.stop();
    }
  });

  test('grpc.health.v1.Health/Check through reflection: SERVING', async () => {
    assert.deepEqual(await bufOk(address, `${HEALTH_SERVICE}/Check`, {}), { status: 'SERVING' });
  });

  test('a snapshot, then renewed, queued, released, dequeued (granted), acquired, force-released in order', async () => {
    const service = unique('watched');
    const other = unique('unwatched');
    const holder = await rpc<LockMessage>('CreateLock', { service, who: 'holder', ttlSeconds: 60 });

    const mine = watch({ service });
    const everything = watch({});
    const elsewhere = watch({ service: other });
    const [snapshot] = await mine.until((messages) => messages.length >= 1);
    assert.deepEqual(Object.keys(snapshot ?? {}), ['snapshot'], 'the first message is the snapshot');
    assert.match(String(snapshot?.snapshot?.eventId), /^[0-9]+$/);
    assert.deepEqual(snapshot?.snapshot?.locks, [holder]);
    const [otherSnapshot] = await elsewhere.until((messages) => messages.length >= 1);
    assert.deepEqual(otherSnapshot?.snapshot?.locks, []);
    const [allSnapshot] = await everything.until((messages) => messages.length >= 1);
    assert.ok(allSnapshot?.snapshot?.locks.some((lock) => lock.id === holder.id));

    const renewed = await rpc<LockMessage>('RenewLock', { id: holder.id, ttlSeconds: 120 });
    const waiting = rpc<LockMessage>('CreateLock', { service, who: 'waiter', waitSeconds: 30 }, 35_000);
    const [, queued] = await events(mine, 2);
    assert.equal(queued?.type, 'queued');
    await rpc('UnLock', { id: holder.id });
    const granted = await waiting;
    // Changes to another service, before the last change here: the filter must keep them out.
    const stranger = await rpc<LockMessage>('CreateLock', { service: other, who: 'stranger' });
    await rpc('UnLock', { id: stranger.id });
    await rpc('ForceReleaseLock', { id: granted.id, reason: 'stuck deploy' });
    // A last change to each service: anything stray (a repeat, another service's event)
    // would arrive before these, since a watch is in order.
    const [lastMine, lastOther] = await Promise.all([
      rpc<LockMessage>('CreateLock', { service, who: 'last' }),
      rpc<LockMessage>('CreateLock', { service: other, who: 'last' }),
    ]);

    const seenWithLast = await events(mine, 7);
    assert.equal(eventsOf(mine.messages).length, 7, JSON.stringify(mine.messages));
    assert.deepEqual([seenWithLast[6]?.type, seenWithLast[6]?.lock.id], ['acquired', lastMine.id]);
    const seen = seenWithLast.slice(0, 6);
    assert.equal(
      mine.messages.filter((message) => message.snapshot).length,
      1,
      'one snapshot, at the start only',
    );
    const types = seen.map((event) => event.type);
    assert.deepEqual(types.slice(0, 3), ['renewed', 'queued', 'released']);
    // A grant is one transaction: the waiter leaves the queue and its lock is inserted.
    assert.deepEqual(types.slice(3, 5).sort(), ['acquired', 'dequeued']);
    assert.equal(types[5], 'force-released');
    assert.ok(Number(seen[0]?.id) > Number(snapshot?.snapshot?.eventId), 'events come after the snapshot');
    assertIncreasing(seen, 'WatchLocks');
    const byType = (type: string) => seen.find((event) => event.type === type) as LockEventMessage;
    for (const event of seen) {
      assert.equal(event.service, service);
      assert.equal(event.lock.service, service);
      assert.equal(event.who, event.lock.who);
      assert.match(event.at, EVENT_AT);
    }

    assert.deepEqual(byType('renewed').lock, renewed);
    assert.equal(byType('renewed').lock.ttlSeconds, 120);
    const waiterRequest = byType('queued');
    assert.equal(waiterRequest.who, 'waiter');
    assert.equal(waiterRequest.lock.id, granted.id, 'the waiting request carries the id its lock gets');
    assert.equal(waiterRequest.lock.fencingToken, '0');
    assert.equal(waiterRequest.lock.waiters, 1);
    const released = byType('released');
    assert.deepEqual(withoutWaiters(released.lock), withoutWaiters(renewed));
    assert.ok(released.heldSeconds > 0 && released.heldSeconds < 60, `heldSeconds ${released.heldSeconds}`);
    const dequeued = byType('dequeued');
    assert.equal(dequeued.reason, 'granted');
    assert.equal(dequeued.lock.id, granted.id);
    assert.equal(dequeued.lock.waiters, 0);
    assert.deepEqual(byType('acquired').lock, granted);
    assert.ok(BigInt(granted.fencingToken) > BigInt(holder.fencingToken));
    const forced = byType('force-released');
    assert.equal(forced.reason, 'stuck deploy');
    assert.deepEqual(withoutWaiters(forced.lock), withoutWaiters(granted));
    assert.ok(forced.heldSeconds >= 0 && forced.heldSeconds < 60);

    // The watcher of the other service saw only its own events; the unfiltered one saw all.
    const strangers = await events(elsewhere, 3);
    assert.deepEqual(
      strangers.map((event) => [event.type, event.lock.id]),
      [
        ['acquired', stranger.id],
        ['released', stranger.id],
        ['acquired', lastOther.id],
      ],
    );
    assert.equal(eventsOf(elsewhere.messages).length, 3, JSON.stringify(elsewhere.messages));
    const all = eventsOf(
      await everything.until((messages) => {
        const ids = new Set(eventsOf(messages).map((event) => event.lock.id));
        return ids.has(lastMine.id) && ids.has(lastOther.id);
      }),
    );
    assertIncreasing(all, 'unfiltered WatchLocks');
    const allIds = new Set(all.map((event) => event.id));
    for (const event of [...seenWithLast, ...strangers])
      assert.ok(allIds.has(event.id), `unfiltered watch missed ${event.id}`);
    for (const recorder of [mine, everything, elsewhere]) recorder.cancel();
  });

  test('resuming with last_event_id gives exactly the events missed while away, then live ones', async () => {
    const service = unique('resume');
    const first = await rpc<LockMessage>('CreateLock', { service, who: 'first' });
    const before = watch({ service });
    await before.until((messages) => messages.length >= 1);
    await rpc('UnLock', { id: first.id });
    const [seen] = await events(before, 1);
    assert.equal(seen?.type, 'released');
    const lastEventId = String(seen?.id);
    before.cancel();
    assert.equal((await before.ended).code, status.CANCELLED);

    // Away: four changes.
    const second = await rpc<LockMessage>('CreateLock', { service, who: 'second', ttlSeconds: 30 });
    await rpc('RenewLock', { id: second.id, ttlSeconds: 60 });
    await rpc('UnLock', { id: second.id });
    const third = await rpc<LockMessage>('CreateLock', { service, who: 'third' });

    const resumed = watch({ service, lastEventId });
    const missed = await events(resumed, 4);
    assert.equal(resumed.messages[0]?.snapshot, undefined, 'a resume sends no snapshot');
    assert.deepEqual(
      missed.map((event) => [event.type, event.who]),
      [
        ['acquired', 'second'],
        ['renewed', 'second'],
        ['released', 'second'],
        ['acquired', 'third'],
      ],
    );
    // No gap, no repeat: exactly the history's events after the last one seen.
    const history = await rpc<{ events: LockEventMessage[] }>('GetHistory', { service });
    assert.deepEqual(
      missed.map((event) => event.id),
      history.events
        .filter((event) => Number(event.id) > Number(lastEventId))
        .map((event) => event.id)
        .reverse(),
    );
    assert.deepEqual(missed, [...history.events].slice(0, 4).reverse(), 'the same events as the history');

    // Then it is live.
    await rpc('UnLock', { id: third.id });
    const live = await events(resumed, 5);
    assert.deepEqual([live[4]?.type, live[4]?.lock.id], ['released', third.id]);
    assertIncreasing(live, 'resumed WatchLocks');

    // Resuming from the newest event: nothing to replay, no snapshot, and live again.
    const upToDate = watch({ service, lastEventId: String(live[4]?.id) });
    const fourth = await rpc<LockMessage>('CreateLock', { service, who: 'fourth' });
    const [next] = await events(upToDate, 1);
    assert.deepEqual([next?.type, next?.lock.id], ['acquired', fourth.id]);
    assert.equal(upToDate.messages[0]?.snapshot, undefined);
    assert.equal(upToDate.messages.length, 1, 'nothing came before the new event');
    // The first resumed watch got that event too, and nothing between it and the release
    // of `third` (a repeat would have come before it).
    const [, , , , , fifth] = await events(resumed, 6);
    assert.deepEqual([fifth?.type, fifth?.lock.id], ['acquired', fourth.id]);
    assert.equal(resumed.messages.length, 6, JSON.stringify(resumed.messages));
    resumed.cancel();
    upToDate.cancel();
  });

  test('a bad last_event_id or service filter is INVALID_ARGUMENT, ending the call', async () => {
    const cases: Array<[request: { service?: string; lastEventId?: string }, field: RegExp]> = [
      [{ lastEventId: 'abc' }, /last_event_id/],
      [{ lastEventId: '-1' }, /last_event_id/],
      [{ lastEventId: '1.5' }, /last_event_id/],
      [{ service: ' ' }, /service/],
    ];
    // A generous deadline: a server that never ends the call shows up as DEADLINE_EXCEEDED.
    const calls = cases.map(([request]) => watch(request, 5000));
    const ended = await Promise.all(calls.map((recorder) => recorder.ended));
    ended.forEach((final, i) => {
      const [request, field] = cases[i] as (typeof cases)[number];
      const context = `${JSON.stringify(request)}: ${final.code} ${final.details}`;
      assert.equal(final.code, status.INVALID_ARGUMENT, context);
      assert.match(final.details, field, context);
      assert.deepEqual(final.metadata.get('tracker-code'), ['INVALID_ARGUMENT'], context);
      assert.equal(calls[i]?.messages.length, 0, 'nothing is sent before the error');
    });
  });

  test('a lease of 1 s ends with an `expired` event from the sweeper, with no request at all', async (t) => {
    const service = unique('expiring');
    const watcher = watch({ service });
    await watcher.until((messages) => messages.length >= 1);
    const lock = await rpc<LockMessage>('CreateLock', { service, who: 'short-lease', ttlSeconds: 1 });
    const started = performance.now();
    // About a second of lease and a sweep about every second: generous.
    const seen = await events(watcher, 2, 8000);
    t.diagnostic(`expired event ${Math.round(performance.now() - started)} ms after the acquire`);
    assert.deepEqual(
      seen.map((event) => event.type),
      ['acquired', 'expired'],
    );
    const expired = seen[1] as LockEventMessage;
    assert.deepEqual(withoutWaiters(expired.lock), withoutWaiters(lock));
    assert.equal(expired.lock.ttlSeconds, 1);
    assert.ok(
      Math.abs(expired.heldSeconds - 1) < 0.01,
      `an expiry is held until expiresAt: ${expired.heldSeconds}`,
    );
    assert.ok(Date.parse(expired.at) >= Date.parse(lock.expiresAt), `${expired.at} before ${lock.expiresAt}`);
    const history = await rpc<{ events: LockEventMessage[] }>('GetHistory', { service });
    assert.deepEqual(
      history.events.map((event) => event.type),
      ['expired', 'acquired'],
      'recorded once',
    );
    watcher.cancel();
  });

  test('cancelling a watch ends it cleanly: CANCELLED, the watcher gone, the server still serving', async () => {
    // Earlier tests' watches were cancelled; the server forgets them a moment later.
    for (const recorder of open) recorder.cancel();
    await waitFor(async () => (await watcherCount(server.baseUrl)) === 0, { what: 'no watcher left' });
    // A watch the server forgets has been counted (and logged) in the same turn.
    const cancelledBefore = await cancelledWatches(server.baseUrl);
    const watcher = watch({});
    await watcher.until((messages) => messages.length >= 1);
    assert.equal(await watcherCount(server.baseUrl), 1);
    watcher.cancel();
    const final = await watcher.ended;
    assert.equal(final.code, status.CANCELLED);
    await waitFor(async () => (await watcherCount(server.baseUrl)) === 0, {
      what: 'the server to forget the cancelled watcher',
    });
    assert.equal(await cancelledWatches(server.baseUrl), cancelledBefore + 1, 'counted as CANCELLED, once');
    // Every cancelled watch is logged as such, this one too.
    await waitFor(
      () =>
        server.lines.filter((line) => /"method":"WatchLocks","status":"CANCELLED"/.test(line)).length ===
        cancelledBefore + 1,
      { what: 'a log line for each cancelled watch' },
    );
    // The server is fine: a new watch gets its snapshot and events.
    const again = watch({});
    await again.until((messages) => messages.length >= 1);
    const lock = await rpc<LockMessage>('CreateLock', { service: unique('after-cancel'), who: 'w' });
    const [event] = await events(again, 1);
    assert.equal(event?.lock.id, lock.id);
    again.cancel();
  });

  test('Health: Check and Watch say SERVING; an unknown service is NOT_FOUND, or SERVICE_UNKNOWN in Watch', async () => {
    const health = healthClient(server.grpcAddress);
    try {
      for (const service of ['', SERVICE]) {
        assert.deepEqual(await unary(health, 'Check', { service }), { status: 'SERVING' }, service);
      }
      await assert.rejects(unary(health, 'Check', { service: 'no.such.Service' }), {
        code: status.NOT_FOUND,
      });
      const watching = serverStream<{ status: string }>(health, 'Watch', { service: '' }, 10_000);
      const unknown = serverStream<{ status: string }>(
        health,
        'Watch',
        { service: 'no.such.Service' },
        10_000,
      );
      assert.deepEqual(await watching.until((messages) => messages.length >= 1), [{ status: 'SERVING' }]);
      assert.deepEqual(await unknown.until((messages) => messages.length >= 1), [
        { status: 'SERVICE_UNKNOWN' },
      ]);
      watching.cancel();
      unknown.cancel();
      assert.equal((await watching.ended).code, status.CANCELLED);
    } finally {
      health.close();
    }
  });
});

describe('a stopping server ends its watch streams', () => {
  test('SIGTERM: WatchLocks and SSE streams end, Health/Watch says NOT_SERVING, exit 0 promptly', async (t) => {
    const server = await startServerProcess();
    const client = lockServiceClient(server.grpcAddress);
    const health = healthClient(server.grpcAddress);
    const sse = new AbortController();
    try {
      const watcher = serverStream<WatchLocksMessage>(client, 'WatchLocks', {}, 30_000);
      const healthWatch = serverStream<{ status: string }>(health, 'Watch', { service: SERVICE }, 30_000);
      await watcher.until((messages) => messages.length >= 1);
      assert.deepEqual(await healthWatch.until((messages) => messages.length >= 1), [{ status: 'SERVING' }]);
      const response = await fetch(`${server.baseUrl}${API}/watch`, { signal: sse.signal });
      assert.equal(response.status, 200);
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      assert.equal((await reader.read()).done, false);
      const sseEnded = (async () => {
        // Bounded: the stream sends little besides its snapshot.
        for (let chunk = 0; chunk < 100; chunk++) if ((await reader.read()).done) return true;
        return false;
      })().catch(() => false);

      const started = performance.now();
      const exit = server.stop(15_000);
      const final = await watcher.ended;
      const healthFinal = await healthWatch.ended;
      const code = await exit;
      const ms = performance.now() - started;
      t.diagnostic(`exited ${Math.round(ms)} ms after SIGTERM`);

      assert.equal(final.code, status.OK, `WatchLocks ended with ${final.code} ${final.details}`);
      assert.equal(
        healthFinal.code,
        status.OK,
        `Health/Watch ended with ${healthFinal.code} ${healthFinal.details}`,
      );
      const statuses = healthWatch.messages.map((message) => message.status);
      assert.equal(statuses[0], 'SERVING');
      assert.ok(
        statuses.slice(1).every((s) => s === 'NOT_SERVING'),
        `after SERVING only NOT_SERVING: ${statuses.join(', ')}`,
      );
      t.diagnostic(`Health/Watch said: ${statuses.join(', ')}`);
      assert.equal(await sseEnded, true, 'the SSE stream ends');
      assert.equal(code, 0);
      // The forced exit (9.5 s) also exits 0: a prompt stop is well before it.
      assert.ok(ms < 5000, `took ${Math.round(ms)} ms`);
      assert.ok(!server.lines.some((line) => line.includes('graceful shutdown took too long')));
    } finally {
      sse.abort();
      client.close();
      health.close();
      await server.stop();
    }
  });
});
