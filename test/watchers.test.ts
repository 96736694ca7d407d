import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode, TrackerError } from '../src/core/errors.js';
import { createWatcherRegistry } from '../src/core/watchers.js';

const LIMITS = {
  maxWatchers: 3,
  maxWatchersPerCaller: 2,
  maxBufferedBytes: 1000,
  maxTotalBufferedBytes: 1500,
};

const code = (expected: string) => (error: unknown) => {
  assert.ok(error instanceof TrackerError);
  assert.equal(error.code, expected, error.message);
  return true;
};

test('watch streams are capped per caller and in total; a closed one gives its place back', () => {
  const registry = createWatcherRegistry(LIMITS);
  const a1 = registry.open('token:a', () => {});
  registry.open('token:a', () => {});
  assert.throws(() => registry.open('token:a', () => {}), code(ErrorCode.TOO_MANY_WATCHERS));
  registry.open('token:b', () => {});
  assert.throws(() => registry.open('token:c', () => {}), code(ErrorCode.TOO_MANY_WATCHERS));
  a1.close();
  a1.close();
  assert.equal(registry.size, 2);
  registry.open('token:a', () => {});
  assert.equal(registry.size, 3);
});

test('a stream with more than its limit waiting is dropped with WATCHER_TOO_SLOW; what it sent counts back', () => {
  const registry = createWatcherRegistry(LIMITS);
  const reasons: TrackerError[] = [];
  const slot = registry.open('x', (reason) => reasons.push(reason));
  slot.queued(600);
  slot.sent(600);
  slot.queued(900);
  assert.equal(reasons.length, 0, 'what went out is no longer waiting');
  assert.equal(registry.bufferedBytes, 900);
  slot.queued(200);
  assert.equal(reasons.length, 1);
  assert.equal(reasons[0]?.code, ErrorCode.WATCHER_TOO_SLOW);
  assert.match(reasons[0]?.message ?? '', /1100 bytes/);
  assert.equal(registry.size, 0);
  assert.equal(registry.bufferedBytes, 0);
  assert.equal(registry.dropped, 1);
});

test('past the total, the stream with the most waiting is dropped, not the one that wrote last', () => {
  const registry = createWatcherRegistry(LIMITS);
  const dropped: string[] = [];
  const slow = registry.open('slow', () => dropped.push('slow'));
  const fast = registry.open('fast', () => dropped.push('fast'));
  slow.queued(900);
  fast.queued(500);
  assert.deepEqual(dropped, []);
  fast.queued(200);
  assert.deepEqual(dropped, ['slow']);
  assert.equal(registry.bufferedBytes, 700);
});

test('drained waits until little is waiting, and never for a closed stream', async () => {
  const registry = createWatcherRegistry({
    ...LIMITS,
    maxBufferedBytes: 100_000,
    maxTotalBufferedBytes: 1_000_000,
  });
  const slot = registry.open('x', () => {});
  await slot.drained();
  slot.queued(30_000);
  let drained = false;
  const waiting = slot.drained().then(() => {
    drained = true;
  });
  slot.sent(1000);
  await Promise.resolve();
  assert.equal(drained, false, 'still more than a quarter of the limit waiting');
  slot.sent(29_000);
  await waiting;
  slot.queued(50_000);
  const closing = slot.drained();
  slot.close();
  await closing;
});
