import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  checkLinearizable,
  type Model,
  type Operation,
  UNKNOWN,
  type Unknown,
} from './support/linearizability/checker.js';
import {
  type LockInput,
  type LockOperation,
  type LockOutput,
  lockModel,
  type ModelClaim,
  type ModelResource,
  type SeenLock,
} from './support/linearizability/lock-model.js';

/**
 * The checker on its own: hand-made histories that are not linearizable must be refused, and
 * their legal twins (one detail changed) accepted. Times are in ms on one clock; the store's
 * clock is the same clock here (`at` is the operation's interval).
 */

// ---------------------------------------------------------------- a register, for the search itself

type RegisterInput = { kind: 'write'; value: number } | { kind: 'read' };
type RegisterOutput = { value?: number };

const register: Model<number, RegisterInput, RegisterOutput> = {
  init: () => [0],
  step(state, input, output: RegisterOutput | Unknown) {
    if (input.kind === 'write') return [input.value];
    if (output === UNKNOWN) return [state];
    return output.value === state ? [state] : [];
  },
  key: String,
};

const reg = (
  client: string,
  input: RegisterInput,
  output: RegisterOutput | Unknown,
  call: number,
  ret: number,
): Operation<RegisterInput, RegisterOutput> => ({ client, input, output, call, return: ret });

describe('linearizability checker (a register)', () => {
  test('concurrent operations may take effect in either order', () => {
    const history = [
      reg('a', { kind: 'write', value: 1 }, {}, 0, 10),
      reg('b', { kind: 'read' }, { value: 1 }, 1, 2),
      reg('c', { kind: 'read' }, { value: 0 }, 3, 4),
    ];
    // b read 1 then c read 0: the write cannot come before b and after c; not linearizable.
    assert.equal(checkLinearizable(register, history).result, 'illegal');
    const twin = [history[0], history[2], { ...history[1], call: 5, return: 6 }] as typeof history;
    assert.equal(checkLinearizable(register, twin).result, 'ok');
  });

  test('a read after a completed write sees it', () => {
    const illegal = [
      reg('a', { kind: 'write', value: 7 }, {}, 0, 1),
      reg('b', { kind: 'read' }, { value: 0 }, 2, 3),
    ];
    assert.equal(checkLinearizable(register, illegal).result, 'illegal');
    const legal = [
      reg('a', { kind: 'write', value: 7 }, {}, 0, 1),
      reg('b', { kind: 'read' }, { value: 7 }, 2, 3),
    ];
    assert.equal(checkLinearizable(register, legal).result, 'ok');
  });

  test('an operation with an unknown outcome may have happened at any time after its call, or never', () => {
    const history = [
      reg('a', { kind: 'write', value: 3 }, UNKNOWN, 0, Infinity),
      reg('b', { kind: 'read' }, { value: 0 }, 1, 2),
      reg('b', { kind: 'read' }, { value: 3 }, 5, 6),
      reg('b', { kind: 'read' }, { value: 3 }, 7, 8),
    ];
    assert.equal(checkLinearizable(register, history).result, 'ok');
    // Once seen, it stays: a later read of the old value is a stale read.
    const stale = [...history, reg('b', { kind: 'read' }, { value: 0 }, 9, 10)];
    assert.equal(checkLinearizable(register, stale).result, 'illegal');
    // Nothing before its call can see it.
    const early = [
      reg('a', { kind: 'write', value: 3 }, UNKNOWN, 5, Infinity),
      reg('b', { kind: 'read' }, { value: 3 }, 1, 2),
    ];
    assert.equal(checkLinearizable(register, early).result, 'illegal');
  });

  test('a search that runs out of its time budget answers unknown, never ok', () => {
    // Many overlapping writes and reads of values that never match: an exhausting search.
    const history: Operation<RegisterInput, RegisterOutput>[] = [];
    for (let i = 0; i < 40; i++) history.push(reg(`w${i}`, { kind: 'write', value: i + 1 }, {}, 0, 100));
    for (let i = 0; i < 40; i++) history.push(reg(`r${i}`, { kind: 'read' }, { value: 1000 + i }, 0, 100));
    const verdict = checkLinearizable(register, history, { timeoutMs: 20 });
    assert.equal(verdict.result, 'unknown');
  });

  test('the steps of an operation take effect in their order', () => {
    // `pair` takes effect in two steps that append 1, then 2, to the register's digits.
    type StepInput = { kind: 'pair' | 'first' | 'second' } | { kind: 'read' };
    const digits: Model<number, StepInput, RegisterOutput> = {
      init: () => [0],
      step(state, input, output: RegisterOutput | Unknown) {
        if (input.kind === 'first') return [state * 10 + 1];
        if (input.kind === 'second') return [state * 10 + 2];
        if (input.kind === 'pair' || output === UNKNOWN) return [state];
        return output.value === state ? [state] : [];
      },
      key: String,
      expand: (op) =>
        op.input.kind === 'pair'
          ? [
              { ...op, input: { kind: 'first' } },
              { ...op, input: { kind: 'second' } },
            ]
          : [op],
    };
    const history = (read: number): Operation<StepInput, RegisterOutput>[] => [
      { client: 'a', input: { kind: 'pair' }, output: {}, call: 0, return: 10 },
      { client: 'b', input: { kind: 'read' }, output: { value: read }, call: 11, return: 12 },
    ];
    assert.equal(checkLinearizable(digits, history(12)).result, 'ok');
    assert.equal(checkLinearizable(digits, history(21)).result, 'illegal', 'the second step came first');
  });

  test('an illegal history is reported with a small excerpt that is still illegal', () => {
    const history: Operation<RegisterInput, RegisterOutput>[] = [];
    for (let i = 0; i < 30; i++) history.push(reg('a', { kind: 'write', value: i }, {}, i * 10, i * 10 + 1));
    // Read 5 long after 29 was written.
    history.push(reg('b', { kind: 'read' }, { value: 5 }, 400, 401));
    const verdict = checkLinearizable(register, history);
    assert.equal(verdict.result, 'illegal');
    if (verdict.result !== 'illegal') return;
    assert.ok(verdict.excerpt.length <= 3, `excerpt of ${verdict.excerpt.length}`);
    assert.equal(checkLinearizable(register, verdict.excerpt).result, 'illegal');
    assert.ok(verdict.excerpt.some((op) => op.input.kind === 'read'));
  });
});

// ---------------------------------------------------------------- Tracker's lock

/** An operation of the lock history; the store's clock is the caller's here. */
/** A lock input without its time (and, optionally, without its service: `deploy`). */
type Input = LockInput extends infer T
  ? T extends LockInput
    ? Omit<T, 'at' | 'service'> & { service?: string }
    : never
  : never;

function op(
  client: string,
  input: Input,
  output: LockOutput | Unknown,
  call: number,
  ret: number,
): LockOperation {
  const full = { service: 'deploy', ...input, at: { from: call, to: ret } } as LockInput;
  return { client, input: full, output, call, return: ret };
}

const lock = (id: string, token: number, expiresAt: number | null = null): LockOutput => ({
  ok: true,
  lock: { id, token, expiresAt } satisfies SeenLock,
});
const ok: LockOutput = { ok: true };
const held = (holderId?: string): LockOutput => ({
  ok: false,
  code: 'LOCK_HELD',
  ...(holderId ? { holderId } : {}),
});
const notFound: LockOutput = { ok: false, code: 'LOCK_NOT_FOUND' };
const acquire = (request: string, ttlMs: number | null = null) =>
  ({ kind: 'acquire', phase: 'now', request, ttlMs }) as const;
const wait = (request: string, ttlMs: number | null = null) =>
  ({ kind: 'acquire', phase: 'complete', request, ttlMs }) as const;

function check(history: LockOperation[], resources: readonly ModelResource[] = []) {
  return checkLinearizable(lockModel(history, { resources }), history, { timeoutMs: 5000 });
}

describe('the lock model', () => {
  test('a double grant is refused; the refused twin is accepted', () => {
    const double = [op('a', acquire('a1'), lock('L1', 1), 0, 1), op('b', acquire('b1'), lock('L2', 2), 2, 3)];
    assert.equal(check(double).result, 'illegal');
    const twin = [op('a', acquire('a1'), lock('L1', 1), 0, 1), op('b', acquire('b1'), held('L1'), 2, 3)];
    assert.equal(check(twin).result, 'ok');
    // Two overlapping acquires may not both win either.
    const racing = [
      op('a', acquire('a1'), lock('L1', 1), 0, 10),
      op('b', acquire('b1'), lock('L2', 2), 0, 10),
    ];
    assert.equal(check(racing).result, 'illegal');
  });

  test('a release that did not release is refused', () => {
    const history = [
      op('a', acquire('a1'), lock('L1', 1), 0, 1),
      op('a', { kind: 'release', id: 'L1' }, ok, 2, 3),
      op('b', acquire('b1'), held('L1'), 4, 5),
    ];
    assert.equal(check(history).result, 'illegal');
    const twin = [...history.slice(0, 2), op('b', acquire('b1'), lock('L2', 2), 4, 5)];
    assert.equal(check(twin).result, 'ok');
    // Releasing twice: the second answers 404.
    const twice = [...history.slice(0, 2), op('a', { kind: 'release', id: 'L1' }, ok, 4, 5)];
    assert.equal(check(twice).result, 'illegal');
    const twiceTwin = [...history.slice(0, 2), op('a', { kind: 'release', id: 'L1' }, notFound, 4, 5)];
    assert.equal(check(twiceTwin).result, 'ok');
  });

  test('a stale read is refused; a read overlapping the release may see either', () => {
    const stale = [
      op('a', acquire('a1'), lock('L1', 1), 0, 1),
      op('a', { kind: 'release', id: 'L1' }, ok, 2, 3),
      op('c', { kind: 'get', id: 'L1' }, lock('L1', 1), 4, 5),
    ];
    assert.equal(check(stale).result, 'illegal');
    const overlapping = [...stale.slice(0, 2), op('c', { kind: 'get', id: 'L1' }, lock('L1', 1), 2, 5)];
    assert.equal(check(overlapping).result, 'ok');
    // A read that shows another token than the one granted is stale too.
    const wrongToken = [
      op('a', acquire('a1'), lock('L1', 4), 0, 1),
      op('c', { kind: 'get', id: 'L1' }, lock('L1', 3), 2, 3),
    ];
    assert.equal(check(wrongToken).result, 'illegal');
  });

  test('a fencing token that goes backwards (or repeats) is refused', () => {
    const history = (token: number) => [
      op('a', acquire('a1'), lock('L1', 5), 0, 1),
      op('a', { kind: 'release', id: 'L1' }, ok, 2, 3),
      op('b', acquire('b1'), lock('L2', token), 4, 5),
    ];
    assert.equal(check(history(3)).result, 'illegal');
    assert.equal(check(history(5)).result, 'illegal');
    assert.equal(check(history(6)).result, 'ok');
    assert.equal(check(history(9)).result, 'ok', 'gaps are allowed');
  });

  test('a waiter overtaken by a later one is refused; the FIFO twin is accepted', () => {
    const base = [
      op('h', acquire('h1'), lock('H', 1), 0, 1),
      // w1 is seen in line before w2 even asks.
      op('q', { kind: 'queue' }, { ok: true, queue: { holderId: 'H', waiters: ['w1'] } }, 3, 4),
      op('h', { kind: 'release', id: 'H' }, ok, 10, 11),
    ];
    const overtaken = [
      ...base,
      op('w1', wait('w1'), lock('W1', 3), 2, 30),
      op('w2', wait('w2'), lock('W2', 2), 5, 12),
      op('w2', { kind: 'release', id: 'W2' }, ok, 13, 14),
    ];
    assert.equal(check(overtaken).result, 'illegal');
    const fifo = [
      ...base,
      op('w1', wait('w1'), lock('W1', 2), 2, 12),
      op('w1', { kind: 'release', id: 'W1' }, ok, 13, 14),
      op('w2', wait('w2'), lock('W2', 3), 5, 20),
    ];
    assert.equal(check(fifo).result, 'ok');
    // A newcomer that takes the lock while someone waits overtakes too.
    const newcomer = [
      ...base,
      op('w1', wait('w1'), lock('W1', 3), 2, 30),
      op('n', acquire('n1'), lock('N', 2), 12, 13),
    ];
    assert.equal(check(newcomer).result, 'illegal');
  });

  test('a wait retried after a lost connection may have kept its place, or joined the line again at the back', () => {
    const history = (retried: boolean) => [
      op('h', acquire('h1'), lock('H', 1), 0, 1),
      op('q', { kind: 'queue' }, { ok: true, queue: { holderId: 'H', waiters: ['w1'] } }, 3, 4),
      // w1's connection broke; the server dropped it, and its retry joined behind w2.
      op('q', { kind: 'queue' }, { ok: true, queue: { holderId: 'H', waiters: ['w2', 'w1'] } }, 7, 8),
      op('w1', { ...wait('w1'), retried }, lock('W1', 3), 2, 30),
      op('w2', wait('w2'), lock('W2', 2), 5, 12),
      op('h', { kind: 'release', id: 'H' }, ok, 10, 11),
      op('w2', { kind: 'release', id: 'W2' }, ok, 13, 14),
    ];
    assert.equal(check(history(true)).result, 'ok');
    assert.equal(check(history(false)).result, 'illegal', 'a wait never retried keeps its place');
    // A retry excuses a lost place, not a double grant: w1 is answered W1 while W2 holds.
    const double = [
      op('h', acquire('h1'), lock('H', 1), 0, 1),
      op('w2', wait('w2'), lock('W2', 2), 5, 12),
      op('h', { kind: 'release', id: 'H' }, ok, 10, 11),
      op('w1', { ...wait('w1'), retried: true }, lock('W1', 3), 2, 14),
      op('w2', { kind: 'release', id: 'W2' }, ok, 20, 21),
    ];
    assert.equal(check(double).result, 'illegal');
  });

  test('a wait answered LOCK_ENDED was granted a lock that ended unseen, by its answer', () => {
    const ended: LockOutput = { ok: false, code: 'LOCK_ENDED' };
    const history = (answered: number) => [
      op('h', acquire('h1'), lock('H', 1), 0, 1),
      op('w', wait('w1'), ended, 2, answered),
      op('h', { kind: 'release', id: 'H' }, ok, 5, 6),
      // W, the waiter's lock, whose id its client never saw, holds the service for a while.
      op('n', acquire('n1'), held('W'), 7, 8),
      op('n', acquire('n2'), lock('N', 3), 20, 21),
    ];
    assert.equal(check(history(30)).result, 'ok');
    // Its lock still held after the answer said it had ended: not what LOCK_ENDED means.
    assert.equal(check(history(6.5)).result, 'illegal');
  });

  test('a wait that times out leaves the line without the lock', () => {
    const timedOut = [
      op('h', acquire('h1'), lock('H', 1), 0, 1),
      op('w', wait('w1'), { ok: false, code: 'WAIT_TIMEOUT', holderId: 'H' }, 2, 10),
      op('h', { kind: 'release', id: 'H' }, ok, 11, 12),
      op('n', acquire('n1'), lock('N', 2), 13, 14),
    ];
    assert.equal(check(timedOut).result, 'ok');
    // A request that times out cannot have been granted the lock.
    const granted = [
      op('h', acquire('h1'), lock('H', 1), 0, 1),
      op('h', { kind: 'release', id: 'H' }, ok, 3, 4),
      op('w', wait('w1'), { ok: false, code: 'WAIT_TIMEOUT' }, 2, 10),
      op('n', acquire('n1'), held(), 11, 12),
      op('n', { kind: 'queue' }, { ok: true, queue: { holderId: null, waiters: [] } }, 13, 14),
    ];
    assert.equal(check(granted).result, 'illegal');
  });

  test("a lease ends by the store's clock, not before", () => {
    const early = [
      op('a', acquire('a1', 10_000), lock('L1', 1, 10_000), 0, 1),
      op('b', acquire('b1'), lock('L2', 2), 5000, 5001),
    ];
    assert.equal(check(early).result, 'illegal');
    const late = [
      op('a', acquire('a1', 10_000), lock('L1', 1, 10_000), 0, 1),
      op('b', acquire('b1'), lock('L2', 2), 11_000, 11_001),
    ];
    assert.equal(check(late).result, 'ok');
    // After its end it is gone for every purpose: a renewal or a read finds nothing.
    const renewed = [
      op('a', acquire('a1', 10_000), lock('L1', 1, 10_000), 0, 1),
      op('a', { kind: 'renew', id: 'L1', ttlMs: 10_000 }, lock('L1', 1, 22_000), 12_000, 12_001),
    ];
    assert.equal(check(renewed).result, 'illegal');
    const renewedInTime = [
      op('a', acquire('a1', 10_000), lock('L1', 1, 10_000), 0, 1),
      op('a', { kind: 'renew', id: 'L1', ttlMs: 10_000 }, lock('L1', 1, 18_000), 8000, 8001),
      op('b', acquire('b1'), held('L1'), 12_000, 12_001),
    ];
    assert.equal(check(renewedInTime).result, 'ok');
  });

  test('an acquire whose answer was lost may hold the lock (unseen) or not', () => {
    const lost = op('a', acquire('a1'), UNKNOWN, 0, Infinity);
    assert.equal(check([lost, op('b', acquire('b1'), held('X'), 5, 6)]).result, 'ok');
    assert.equal(check([lost, op('b', acquire('b1'), lock('L2', 2), 5, 6)]).result, 'ok');
    // But it cannot explain two grants.
    const two = [
      lost,
      op('b', acquire('b1'), lock('L2', 2), 5, 6),
      op('c', acquire('c1'), lock('L3', 3), 7, 8),
    ];
    assert.equal(check(two).result, 'illegal');
    // Nor can a refusal name a lock that is known to be over.
    const named = [
      op('b', acquire('b1'), lock('L2', 1), 1, 2),
      op('b', { kind: 'release', id: 'L2' }, ok, 3, 4),
      lost,
      op('c', acquire('c1'), held('L2'), 5, 6),
    ];
    assert.equal(check(named).result, 'illegal');
  });

  test('histories are checked per service, and the excerpt names the culprits', () => {
    const history: LockOperation[] = [];
    for (let i = 0; i < 20; i++) {
      const service = `s${i}`;
      history.push(op(`c${i}`, { ...acquire(`r${i}`), service }, lock(`L${i}`, 1), i * 10, i * 10 + 1));
      history.push(op(`c${i}`, { kind: 'release', id: `L${i}`, service }, ok, i * 10 + 2, i * 10 + 3));
    }
    history.push(op('x', { ...acquire('x1'), service: 's7' }, lock('X', 2), 500, 501));
    history.push(op('y', { ...acquire('y1'), service: 's7' }, lock('Y', 3), 502, 503));
    const verdict = check(history);
    assert.equal(verdict.result, 'illegal');
    if (verdict.result !== 'illegal') return;
    assert.ok(verdict.partition.every((o) => o.input.service === 's7'));
    assert.deepEqual(verdict.excerpt.map((o) => o.client).sort(), ['x', 'y']);
  });
});

// ---------------------------------------------------------------- many holders

const on = (service: string, more: Partial<ModelClaim> = {}): ModelClaim => ({
  service,
  label: null,
  mode: 'exclusive',
  limit: null,
  quantity: 1,
  ...more,
});
const labelled = (label: string, quantity = 1): ModelClaim => ({
  service: null,
  label,
  mode: 'exclusive',
  limit: null,
  quantity,
});
/** An acquire of `claims` (no wait unless `waits`), its service the first claim's. */
const take = (
  request: string,
  claims: ModelClaim[],
  more: { waits?: boolean; group?: boolean; priority?: number } = {},
): Input => ({
  kind: 'acquire',
  phase: more.waits ? 'complete' : 'now',
  request,
  ttlMs: null,
  claims,
  service: claims[0]?.service ?? claims[0]?.label ?? '',
  ...(more.group ? { group: true } : {}),
  ...(more.priority !== undefined ? { priority: more.priority } : {}),
});
const seen = (service: string, id: string, token: number, more: Partial<SeenLock> = {}): SeenLock => ({
  id,
  token,
  expiresAt: null,
  service,
  ...more,
});
const got = (lock: SeenLock): LockOutput => ({ ok: true, lock });
const gotGroup = (group: string, locks: SeenLock[]): LockOutput => ({ ok: true, group, locks });
const release = (service: string, id: string): Input => ({ kind: 'release', id, service });
const queue = (service: string, holderIds: string[], waiters: string[]): [Input, LockOutput] => [
  { kind: 'queue', service },
  { ok: true, queue: { holderId: holderIds[0] ?? null, holderIds, waiters } },
];
const PHONES: ModelResource[] = ['phone-1', 'phone-2', 'phone-3'].map((name) => ({
  name,
  labels: ['phone'],
  capacity: 1,
}));

describe('the lock model: semaphores, shared mode, labels, groups and priorities', () => {
  const pool = (request: string) => take(request, [on('pool', { limit: 3 })]);

  test('a semaphore admits up to its limit; one more is over capacity', () => {
    const three = [
      op('a', pool('a1'), got(seen('pool', 'A', 1, { limit: 3 })), 0, 1),
      op('b', pool('b1'), got(seen('pool', 'B', 2, { limit: 3 })), 2, 3),
      op('c', pool('c1'), got(seen('pool', 'C', 3, { limit: 3 })), 4, 5),
    ];
    assert.equal(check(three).result, 'ok');
    const over = [...three, op('d', pool('d1'), got(seen('pool', 'D', 4, { limit: 3 })), 6, 7)];
    assert.equal(check(over).result, 'illegal', 'a fourth holder at limit 3');
    const refused = [...three, op('d', pool('d1'), held('A'), 6, 7)];
    assert.equal(check(refused).result, 'ok');
    // Once one leaves, a fourth may come.
    const after = [
      ...three,
      op('b', release('pool', 'B'), ok, 6, 7),
      op('d', pool('d1'), got(seen('pool', 'D', 4, { limit: 3 })), 8, 9),
    ];
    assert.equal(check(after).result, 'ok');
    // A lock showing another limit than it was granted under.
    const wrongLimit = [op('a', pool('a1'), got(seen('pool', 'A', 1, { limit: 2 })), 0, 1)];
    assert.equal(check(wrongLimit).result, 'illegal');
  });

  test('a request naming another limit than the holders was refused LIMIT_MISMATCH, at once', () => {
    const base = [op('a', pool('a1'), got(seen('pool', 'A', 1, { limit: 3 })), 0, 1)];
    const other = take('b1', [on('pool', { limit: 2 })]);
    assert.equal(check([...base, op('b', other, { ok: false, code: 'LIMIT_MISMATCH' }, 2, 3)]).result, 'ok');
    assert.equal(
      check([...base, op('b', other, got(seen('pool', 'B', 2, { limit: 2 })), 2, 3)]).result,
      'illegal',
    );
    // With nothing held there is nothing to mismatch.
    assert.equal(check([op('b', other, { ok: false, code: 'LIMIT_MISMATCH' }, 2, 3)]).result, 'illegal');
  });

  test('shared holders coexist, never with an exclusive one', () => {
    const shared = (request: string) => take(request, [on('db', { mode: 'shared' })]);
    const readers = [
      op('a', shared('a1'), got(seen('db', 'A', 1, { mode: 'shared' })), 0, 1),
      op('b', shared('b1'), got(seen('db', 'B', 2, { mode: 'shared' })), 2, 3),
    ];
    assert.equal(check(readers).result, 'ok');
    const writer = take('w1', [on('db')]);
    assert.equal(check([...readers, op('w', writer, got(seen('db', 'W', 3)), 4, 5)]).result, 'illegal');
    assert.equal(check([...readers, op('w', writer, held('A'), 4, 5)]).result, 'ok');
    // A shared lock while an exclusive one holds.
    const exclusiveFirst = [
      op('w', writer, got(seen('db', 'W', 1)), 0, 1),
      op('a', shared('a1'), got(seen('db', 'A', 2, { mode: 'shared' })), 2, 3),
    ];
    assert.equal(check(exclusiveFirst).result, 'illegal');
  });

  test('a waiting exclusive request is not overtaken by later shared ones', () => {
    const shared = (request: string) => take(request, [on('db', { mode: 'shared' })]);
    const base = [
      op('a', shared('a1'), got(seen('db', 'A', 1, { mode: 'shared' })), 0, 1),
      // w waits for the writer's place; it is seen in line before b asks.
      op('w', take('w1', [on('db')], { waits: true }), got(seen('db', 'W', 3)), 2, 20),
      op('q', ...queue('db', ['A'], ['w1']), 3, 4),
    ];
    const overtaken = [...base, op('b', shared('b1'), got(seen('db', 'B', 2, { mode: 'shared' })), 5, 6)];
    assert.equal(check(overtaken).result, 'illegal');
    const twin = [
      ...base,
      op('b', shared('b1'), held('A'), 5, 6),
      op('a', release('db', 'A'), ok, 7, 8),
      op('w', release('db', 'W'), ok, 21, 22),
    ];
    assert.equal(check(twin).result, 'ok');
  });

  test('consecutive shared waiters at the head are granted together', () => {
    const shared = (request: string) => take(request, [on('db', { mode: 'shared' })], { waits: true });
    const history = (secondWaits: boolean) => [
      op('h', take('h1', [on('db')]), got(seen('db', 'H', 1)), 0, 1),
      op('a', shared('a1'), got(seen('db', 'A', 2, { mode: 'shared' })), 2, 30),
      op('b', shared('b1'), got(seen('db', 'B', 3, { mode: 'shared' })), 3, 30),
      op('q', ...queue('db', ['H'], ['a1', 'b1']), 4, 5),
      op('h', release('db', 'H'), ok, 10, 11),
      // After the release's answer: both readers hold, or one still waits.
      op('q', ...queue('db', ['A', ...(secondWaits ? [] : ['B'])], secondWaits ? ['b1'] : []), 12, 13),
    ];
    assert.equal(check(history(false)).result, 'ok');
    assert.equal(check(history(true)).result, 'illegal', 'the second reader was left waiting');
  });

  test('a group is granted all its claims at once, or holds nothing', () => {
    const group = (waits: boolean) => take('g1', [on('a'), on('b')], { group: true, waits });
    const base = [op('h', take('h1', [on('b')]), got(seen('b', 'H', 1)), 0, 1)];
    // Granted both while b was held: half of it was granted early.
    const early = [
      ...base,
      op('g', group(false), gotGroup('G', [seen('a', 'GA', 1), seen('b', 'GB', 2)]), 2, 3),
    ];
    assert.equal(check(early).result, 'illegal');
    const refused = [...base, op('g', group(false), held('H'), 2, 3)];
    assert.equal(check(refused).result, 'ok');
    // A waiting group holds nothing: a plain acquire of `a` meanwhile is granted, never refused.
    const waiting = [
      ...base,
      op('g', group(true), gotGroup('G', [seen('a', 'GA', 2), seen('b', 'GB', 2)]), 2, 30),
      op('q', ...queue('b', ['H'], ['g1']), 3, 4),
      op('x', take('x1', [on('a')]), got(seen('a', 'X', 1)), 5, 6),
      op('x', release('a', 'X'), ok, 7, 8),
      op('h', release('b', 'H'), ok, 9, 10),
    ];
    assert.equal(check(waiting).result, 'ok');
    const halfHeld = [
      ...base,
      op('g', group(true), gotGroup('G', [seen('a', 'GA', 1), seen('b', 'GB', 2)]), 2, 30),
      op('q', ...queue('b', ['H'], ['g1']), 3, 4),
      op('x', take('x1', [on('a')]), held('GA'), 5, 6),
      op('h', release('b', 'H'), ok, 9, 10),
    ];
    assert.equal(check(halfHeld).result, 'illegal', 'a waiting group held one of its claims');
    // An answer with fewer locks than claims.
    const partial = [...base.slice(0, 0), op('g', group(false), gotGroup('G', [seen('a', 'GA', 1)]), 2, 3)];
    assert.equal(check(partial).result, 'illegal');
    // Releasing the group releases every member.
    const released = [
      op('g', group(false), gotGroup('G', [seen('a', 'GA', 1), seen('b', 'GB', 1)]), 0, 1),
      op(
        'g',
        { kind: 'release-group', group: 'G', services: ['a', 'b'], ttlMs: null, service: 'a' },
        gotGroup('G', [seen('a', 'GA', 1), seen('b', 'GB', 1)]),
        2,
        3,
      ),
      op('x', take('x1', [on('b')]), got(seen('b', 'X', 2)), 4, 5),
    ];
    assert.equal(check(released).result, 'ok');
  });

  test('higher priority is granted first; an inversion is refused', () => {
    const history = (first: 'low' | 'high') => [
      op('h', take('h1', [on('deploy')]), got(seen('deploy', 'H', 1)), 0, 1),
      op(
        'l',
        take('l1', [on('deploy')], { waits: true }),
        got(seen('deploy', 'L', first === 'low' ? 2 : 3)),
        2,
        first === 'low' ? 11.5 : 40,
      ),
      op(
        'p',
        take('p1', [on('deploy')], { waits: true, priority: 5 }),
        got(seen('deploy', 'P', first === 'low' ? 3 : 2)),
        4,
        first === 'low' ? 40 : 11.5,
      ),
      // Both in line, the later one first (its priority is higher).
      op('q', ...queue('deploy', ['H'], ['p1', 'l1']), 5, 6),
      op('h', release('deploy', 'H'), ok, 10, 11),
      // The first one granted gives it back while the other still waits.
      op(first === 'low' ? 'l' : 'p', release('deploy', first === 'low' ? 'L' : 'P'), ok, 12, 13),
    ];
    assert.equal(check(history('high')).result, 'ok');
    assert.equal(check(history('low')).result, 'illegal', 'the lower priority went first');
    // The line is shown in grant order: arrival order would be a wrong look.
    const arrivalOrder = [
      op('h', take('h1', [on('deploy')]), got(seen('deploy', 'H', 1)), 0, 1),
      op('l', take('l1', [on('deploy')], { waits: true }), { ok: false, code: 'WAIT_TIMEOUT' }, 2, 40),
      op(
        'p',
        take('p1', [on('deploy')], { waits: true, priority: 5 }),
        { ok: false, code: 'WAIT_TIMEOUT' },
        4,
        40,
      ),
      op('q', ...queue('deploy', ['H'], ['l1', 'p1']), 5, 6),
    ];
    assert.equal(check(arrivalOrder).result, 'illegal');
  });

  test('fencing tokens grow per service across every holder', () => {
    const history = (second: number) => [
      op('a', pool('a1'), got(seen('pool', 'A', 4, { limit: 3 })), 0, 1),
      op('b', pool('b1'), got(seen('pool', 'B', second, { limit: 3 })), 2, 3),
    ];
    assert.equal(check(history(5)).result, 'ok');
    assert.equal(check(history(4)).result, 'illegal', 'a token given twice');
    assert.equal(check(history(3)).result, 'illegal', 'a token going backwards');
    // Two waiters granted in one pass: the one granted first has the smaller token, whichever
    // client hears first.
    const pair = (firstToken: number, secondToken: number) => [
      op('h', take('h1', [on('db')]), got(seen('db', 'H', 1)), 0, 1),
      op(
        'a',
        take('a1', [on('db', { mode: 'shared' })], { waits: true }),
        got(seen('db', 'A', firstToken, { mode: 'shared' })),
        2,
        50,
      ),
      op(
        'b',
        take('b1', [on('db', { mode: 'shared' })], { waits: true }),
        got(seen('db', 'B', secondToken, { mode: 'shared' })),
        3,
        20,
      ),
      op('q', ...queue('db', ['H'], ['a1', 'b1']), 4, 5),
      op('h', release('db', 'H'), ok, 10, 11),
    ];
    assert.equal(check(pair(2, 3)).result, 'ok');
    assert.equal(check(pair(3, 2)).result, 'illegal', 'the later grant got the smaller token');
  });

  test('a label takes a free resource carrying it; none free is LOCK_HELD', () => {
    const phone = (request: string) => take(request, [labelled('phone')]);
    const two = [
      op('a', phone('a1'), got(seen('phone-2', 'A', 1)), 0, 1),
      op('b', phone('b1'), got(seen('phone-1', 'B', 1)), 2, 3),
    ];
    assert.equal(check(two, PHONES).result, 'ok');
    const same = [...two.slice(0, 1), op('b', phone('b1'), got(seen('phone-2', 'B', 2)), 2, 3)];
    assert.equal(check(same, PHONES).result, 'illegal', 'a held phone given again');
    const full = [
      ...two,
      op('c', phone('c1'), got(seen('phone-3', 'C', 1)), 4, 5),
      op('d', phone('d1'), held('B'), 6, 7),
    ];
    assert.equal(check(full, PHONES).result, 'ok');
    const refusedEarly = [...two, op('d', phone('d1'), held('B'), 6, 7)];
    assert.equal(check(refusedEarly, PHONES).result, 'illegal', 'refused while phone-3 was free');
    // A resource without the label.
    const stranger = [op('a', phone('a1'), got(seen('tablet-1', 'A', 1)), 0, 1)];
    assert.equal(
      check(stranger, [...PHONES, { name: 'tablet-1', labels: ['tablet'], capacity: 1 }]).result,
      'illegal',
    );
    // Two of them in one group: distinct resources.
    const pair = take('g1', [labelled('phone', 2)], { group: true });
    const twice = [op('g', pair, gotGroup('G', [seen('phone-1', 'G1', 1), seen('phone-1', 'G2', 2)]), 0, 1)];
    assert.equal(check(twice, PHONES).result, 'illegal');
    const distinct = [
      op('g', pair, gotGroup('G', [seen('phone-1', 'G1', 1), seen('phone-3', 'G2', 1)]), 0, 1),
    ];
    assert.equal(check(distinct, PHONES).result, 'ok');
  });

  test('a label waiter is not overtaken on the resources it waits for', () => {
    const phone = (request: string, waits = false) => take(request, [labelled('phone')], { waits });
    const history = (late: LockOutput) => [
      op('a', phone('a1'), got(seen('phone-1', 'A', 1)), 0, 1),
      op('b', phone('b1'), got(seen('phone-2', 'B', 1)), 2, 3),
      op('c', phone('c1'), got(seen('phone-3', 'C', 1)), 4, 5),
      op('w', phone('w1', true), got(seen('phone-2', 'W', 2)), 6, 40),
      op('q', ...queue('phone-1', ['A'], ['w1']), 7, 8),
      op('b', release('phone-2', 'B'), ok, 10, 11),
      // Asks for phone-2 by name after it was freed: the label waiter came first.
      op('n', take('n1', [on('phone-2')]), late, 12, 13),
    ];
    assert.equal(check(history(held('W')), PHONES).result, 'ok');
    assert.equal(check(history(got(seen('phone-2', 'N', 2))), PHONES).result, 'illegal');
  });

  test('services linked by a group or a label are checked together; others apart', () => {
    const history = [
      op(
        'a',
        take('a1', [on('x'), on('y')], { group: true }),
        gotGroup('G', [seen('x', 'X', 1), seen('y', 'Y', 1)]),
        0,
        1,
      ),
      op('b', take('b1', [on('z')]), got(seen('z', 'Z', 1)), 2, 3),
      op('c', take('c1', [labelled('phone')]), got(seen('phone-1', 'P', 1)), 4, 5),
      op('d', take('d1', [on('phone-2')]), got(seen('phone-2', 'Q', 1)), 6, 7),
      op('e', take('e1', [on('y')]), held('Y'), 8, 9),
    ];
    const verdict = check(history, PHONES);
    assert.equal(verdict.result, 'ok');
    if (verdict.result !== 'ok') return;
    // {x, y}, {z}, {phone-1, phone-2, phone-3}.
    assert.equal(verdict.partitions, 3);
  });
});
