/**
 * Many holders over gRPC, end to end against the real server process: semaphores (`limit`),
 * shared mode, label acquires on registered resources, groups (AcquireLocks and the group
 * methods), the resource registry, priorities in the queue, the new fields of events, and
 * each new error with its status and `tracker-*` trailers.
 *
 * As in grpc.test.ts, every new method is called at least once through `buf curl` with no
 * .proto at hand (the schema from reflection alone: the Resource map fields and the proto3
 * `optional` fields must survive it), and the error cases through a @grpc/grpc-js client.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { addToken } from '../src/auth/token-file.js';
import { bufFails, bufOk } from './support/buf-curl.js';
import {
  type LockEventMessage,
  type LockMessage,
  type LockServiceClient,
  lockMessageAsJson,
  lockMessageAsRest,
  lockServiceClient,
  rejectsWith,
  SERVICE,
  unary,
  unaryOutcome,
} from './support/grpc-client.js';
import { FREE_ARGS, type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

const API = '/api/v1alpha1';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A fresh name, so tests sharing one server never collide. */
const unique = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;

interface GroupMessage {
  id: string;
  locks: LockMessage[];
}

interface WaiterMessage {
  who: string;
  since: string;
  position: number;
  priority: number;
  mode: string;
  label: string;
  groupId: string;
}

interface QueueMessage {
  service: string;
  holder: LockMessage | null;
  holders: LockMessage[];
  waiters: WaiterMessage[];
}

/** A Resource as grpc-js decodes it: `description` is proto3 `optional`, absent when none. */
interface ResourceMessage {
  name: string;
  labels: string[];
  properties: Record<string, string>;
  capacity: number;
  description?: string;
  holders: LockMessage[];
  waiters: WaiterMessage[];
  free: number;
}

const invalid = (field: string) => ({ 'tracker-code': 'INVALID_ARGUMENT', 'tracker-field': field });

/** LOCK_HELD's trailers: the oldest holder, and every holder's id (oldest first). */
const heldBy = (holders: readonly LockMessage[]) => ({
  'tracker-code': 'LOCK_HELD',
  'tracker-existing-lock-id': holders[0]?.id ?? '',
  'tracker-holder-lock-ids': holders.map((holder) => holder.id).join(','),
  'tracker-holder-count': String(holders.length),
});

/** A failure with this status and tracker-code, whatever else its trailers say. */
async function failsWith(
  promise: Promise<unknown>,
  code: status,
  trackerCode: string,
): Promise<ServiceError> {
  let caught: ServiceError | undefined;
  await assert.rejects(promise, (error: ServiceError) => {
    caught = error;
    return true;
  });
  assert.ok(caught);
  assert.equal(caught.code, code, `${status[caught.code]}: ${caught.details}`);
  assert.deepEqual(caught.metadata.get('tracker-code'), [trackerCode], caught.details);
  return caught;
}

describe('gRPC: limits, shared mode, labels, groups and resources on one server', {
  concurrency: true,
}, () => {
  let server: ServerProcess;
  let address: string;
  let client: LockServiceClient;
  /** Through buf and reflection alone. */
  const ok = <T>(method: string, body?: unknown) => bufOk<T>(address, `${SERVICE}/${method}`, body);
  const bufRefused = (method: string, body: unknown, code: Parameters<typeof bufFails>[3]) =>
    bufFails(address, `${SERVICE}/${method}`, body, code);
  /** Through the grpc-js client. */
  const rpc = <T>(method: string, request: object, timeoutMs?: number) =>
    unary<T>(client, method, request, timeoutMs);
  const lock = (request: object) => rpc<LockMessage>('CreateLock', request);
  const put = (request: object) =>
    rpc<{ resource: ResourceMessage; created: boolean }>('PutResource', request);
  const queueOf = (service: string) => rpc<QueueMessage>('GetQueue', { service });
  /**
   * LOCK_HELD's trailers for `service` as its holders are now, oldest first as GetQueue
   * lists them (two locks taken in the same millisecond go by id).
   */
  const heldNow = async (service: string) => heldBy((await queueOf(service)).holders);
  /** CreateLock `request` on `service` is refused as LOCK_HELD, naming its holders. */
  const refusedAsHeld = async (service: string, request: object) => {
    const trailers = await heldNow(service);
    return rejectsWith(lock(request), status.ALREADY_EXISTS, trailers);
  };
  /** The response and its metadata (idempotent-replayed). */
  const withMetadata = <T>(method: string, request: object) =>
    new Promise<{ response: T; replayed: boolean }>((resolve, reject) => {
      let replayed = false;
      const start = client[method] as (
        request: object,
        metadata: Metadata,
        options: object,
        callback: (error: ServiceError | null, response?: T) => void,
      ) => { on(event: 'metadata', listener: (metadata: Metadata) => void): void };
      const call = start.call(
        client,
        request,
        new Metadata(),
        { deadline: Date.now() + 10_000 },
        (error, response) => (error ? reject(error) : resolve({ response: response as T, replayed })),
      );
      call.on('metadata', (metadata) => {
        replayed = metadata.get('idempotent-replayed')[0] === 'true';
      });
    });

  before(async () => {
    server = await startServerProcess();
    address = server.grpcAddress;
    client = lockServiceClient(address);
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });

  test('a semaphore: limit 3 admits three holders, each its own id and a growing token; the fourth is LOCK_HELD naming all', async () => {
    const service = unique('build-agents');
    // Through reflection: `limit` is a proto3 optional field.
    const first = await ok<Record<string, unknown>>('CreateLock', { service, who: 'job-1', limit: 3 });
    assert.equal(first.limit, 3);
    assert.equal(first.mode, 'exclusive');
    assert.equal(first.groupId, undefined, 'no group: left out');
    assert.equal(first.resource, undefined, 'not a registered resource: left out');
    const holders = [await rpc<LockMessage>('GetLock', { id: first.id })];
    for (const who of ['job-2', 'job-3']) holders.push(await lock({ service, who, limit: 3 }));
    assert.deepEqual(lockMessageAsJson(holders[0] as LockMessage), first);
    assert.equal(new Set(holders.map((holder) => holder.id)).size, 3);
    const tokens = holders.map((holder) => BigInt(holder.fencingToken));
    assert.deepEqual(
      tokens,
      [...tokens].sort((x, y) => (x < y ? -1 : 1)),
      `tokens grow: ${tokens.join(' ')}`,
    );
    assert.equal(new Set(tokens).size, 3);
    for (const holder of holders) assert.equal(holder.limit, 3);

    const full = await refusedAsHeld(service, { service, who: 'job-4', limit: 3 });
    assert.match(full.details, /held by "job-1".* and 2 other holders$/);
    const queue = await queueOf(service);
    assert.deepEqual(queue.holder, holders[0]);
    // job-1 first (taken well before); job-2 and job-3 may share a millisecond.
    assert.deepEqual(queue.holders[0], holders[0]);
    assert.deepEqual(
      new Set(queue.holders.map((holder) => holder.id)),
      new Set(holders.map((holder) => holder.id)),
    );
    assert.deepEqual(queue.waiters, []);

    // REST shows the same locks with the same fields.
    const viaRest = await fetch(`${server.baseUrl}${API}/lock/${holders[1]?.id}`);
    assert.equal(viaRest.status, 200);
    assert.deepEqual(await viaRest.json(), lockMessageAsRest(holders[1] as LockMessage));

    await rpc('UnLock', { id: holders[1]?.id });
    const fourth = await lock({ service, who: 'job-4', limit: 3 });
    assert.ok(
      tokens.every((token) => BigInt(fourth.fencingToken) > token),
      'tokens grow across holders and releases',
    );
    for (const holder of [holders[0], holders[2], fourth]) await rpc('UnLock', { id: holder?.id });
  });

  test('a full semaphore of 40 names its 32 oldest holders in the trailer, and how many there are', async () => {
    const service = unique('wide');
    const holders: LockMessage[] = [];
    for (let index = 0; index < 40; index++)
      holders.push(await lock({ service, who: `w-${index}`, limit: 40 }));
    const full = await failsWith(
      lock({ service, who: 'late', limit: 40 }),
      status.ALREADY_EXISTS,
      'LOCK_HELD',
    );
    assert.deepEqual(full.metadata.get('tracker-holder-count'), ['40']);
    // Oldest first, as GetQueue lists them (two taken in the same millisecond go by id).
    const oldest = (await queueOf(service)).holders.map((holder) => holder.id);
    assert.deepEqual(new Set(oldest), new Set(holders.map((holder) => holder.id)));
    assert.deepEqual(full.metadata.get('tracker-existing-lock-id'), [oldest[0]]);
    assert.deepEqual(String(full.metadata.get('tracker-holder-lock-ids')[0]).split(','), oldest.slice(0, 32));
    assert.match(full.details, / and 39 other holders$/);
    await Promise.all(holders.map((holder) => rpc('UnLock', { id: holder.id })));
  });

  test('LIMIT_MISMATCH: another limit while held is FAILED_PRECONDITION at once, naming the limit and the service', async () => {
    const service = unique('caf\u00e9-pool');
    const held = await lock({ service, who: 'a', limit: 2 });
    const encoded = encodeURIComponent(service);
    const mismatch = {
      'tracker-code': 'LIMIT_MISMATCH',
      'tracker-field': 'limit',
      'tracker-limit': '2',
      'tracker-service': encoded,
    };
    const [asJson, withWait] = await Promise.all([
      bufRefused('CreateLock', { service, who: 'b', limit: 5 }, 'failed_precondition'),
      // It never waits, even with wait_seconds.
      rejectsWith(
        lock({ service, who: 'b', limit: 5, waitSeconds: 30 }),
        status.FAILED_PRECONDITION,
        mismatch,
      ),
    ]);
    assert.equal(asJson, withWait.details);
    assert.match(asJson, /limit 2/);
    assert.equal(decodeURIComponent(encoded), service, 'the trailer is the name, percent-encoded');
    assert.deepEqual((await queueOf(service)).waiters, [], 'nothing queued');
    // The same limit is a plain LOCK_HELD... after the second holder.
    const second = await lock({ service, who: 'b', limit: 2 });
    await refusedAsHeld(service, { service, who: 'c', limit: 2 });
    await Promise.all([rpc('UnLock', { id: held.id }), rpc('UnLock', { id: second.id })]);
  });

  test('shared mode: shared holders coexist, an exclusive one is refused; a waiting exclusive request shows its priority', async () => {
    const service = unique('schema');
    const reader = await ok<Record<string, unknown>>('CreateLock', {
      service,
      who: 'reader-1',
      mode: 'shared',
    });
    assert.equal(reader.mode, 'shared');
    const readers = [
      await rpc<LockMessage>('GetLock', { id: reader.id }),
      await lock({ service, who: 'reader-2', mode: 'shared' }),
    ];
    assert.equal(readers[1]?.mode, 'shared');
    await refusedAsHeld(service, { service, who: 'writer', mode: 'exclusive' });
    await refusedAsHeld(service, { service, who: 'writer' });

    // An exclusive request waits; GetQueue shows its priority and mode.
    const writing = lock({ service, who: 'writer', waitSeconds: 30, priority: 7 });
    const queue = await waitFor(
      async () => {
        const seen = await queueOf(service);
        return seen.waiters.length === 1 ? seen : null;
      },
      { what: 'the writer in the queue' },
    );
    const { since, ...waiter } = queue.waiters[0] as WaiterMessage;
    assert.deepEqual(waiter, {
      who: 'writer',
      position: 1,
      priority: 7,
      mode: 'exclusive',
      label: '',
      groupId: '',
      note: '',
      link: '',
    });
    assert.deepEqual(
      queue.holders.map((holder) => holder.who),
      ['reader-1', 'reader-2'],
    );
    // Through reflection too: the waiter's new fields.
    const printed = await ok<{ waiters: Array<Record<string, unknown>> }>('GetQueue', { service });
    assert.deepEqual(printed.waiters, [
      { who: 'writer', since, position: 1, priority: 7, mode: 'exclusive' },
    ]);

    for (const holder of readers) await rpc('UnLock', { id: holder?.id });
    const written = await writing;
    assert.equal(written.who, 'writer');
    assert.equal(written.mode, 'exclusive');
    await rpc('UnLock', { id: written.id });
  });

  test('CreateLock refuses a bad mode, limit or priority, and service with label, naming the field', async () => {
    const service = unique('invalid');
    const cases: Array<[request: Record<string, unknown>, field: string]> = [
      [{ service, who: 'w', mode: 'SHARED' }, 'mode'],
      [{ service, who: 'w', mode: 'read' }, 'mode'],
      [{ service, who: 'w', limit: 0 }, 'limit'],
      [{ service, who: 'w', limit: 1001 }, 'limit'],
      [{ service, who: 'w', limit: -1 }, 'limit'],
      [{ service, who: 'w', limit: 2, mode: 'shared' }, 'limit'],
      [{ service, who: 'w', priority: 1001 }, 'priority'],
      [{ service, who: 'w', priority: -1001 }, 'priority'],
      [{ service, label: 'phones', who: 'w' }, 'label'],
      [{ label: 'phones', who: 'w', limit: 2 }, 'limit'],
      [{ who: 'w' }, 'service'],
    ];
    const errors = await Promise.all(
      cases.map(([request, field]) => rejectsWith(lock(request), status.INVALID_ARGUMENT, invalid(field))),
    );
    cases.forEach(([request, field], index) => {
      const message = errors[index]?.details ?? '';
      assert.ok(message.includes(field), `${JSON.stringify(request)}: ${message}`);
    });
    // Through reflection: an explicit 0 is not "absent" for an optional field.
    const message = await bufRefused('CreateLock', { service, who: 'w', limit: 0 }, 'invalid_argument');
    assert.ok(message.startsWith('limit '), message);
    assert.deepEqual((await queueOf(service)).holders, [], 'none of them took the lock');
  });

  test('resources: put (created, then replaced), get, list by label, held, RESOURCE_IN_USE, delete, RESOURCE_NOT_FOUND', async () => {
    const label = unique('android-phone');
    // By name, galaxy-… comes before pixel-….
    const [pixel, galaxy] = [unique('pixel'), unique('galaxy')];
    // Through reflection: the map and the optional fields.
    const created = await ok<{ resource: Record<string, unknown>; created: boolean }>('PutResource', {
      name: pixel,
      labels: [label, 'usb'],
      properties: { serial: 'R58M', 'os.version': '14' },
      capacity: 1,
      description: 'the Pixel on hub 2',
    });
    assert.deepEqual(created, {
      resource: {
        name: pixel,
        labels: [label, 'usb'],
        properties: { serial: 'R58M', 'os.version': '14' },
        capacity: 1,
        description: 'the Pixel on hub 2',
        free: 1,
      },
      created: true,
    });
    const replaced = await put({ name: pixel, labels: [label], properties: { serial: 'R58M' } });
    assert.equal(replaced.created, false);
    assert.deepEqual(replaced.resource, {
      name: pixel,
      labels: [label],
      properties: { serial: 'R58M' },
      capacity: 1,
      holders: [],
      waiters: [],
      free: 1,
    });
    assert.equal('description' in replaced.resource, false, 'no description: the optional field is absent');
    await put({ name: galaxy, labels: [label], capacity: 2 });

    const listed = await ok<{ resources: Array<{ name: string }> }>('ListResources', { label });
    assert.deepEqual(
      listed.resources.map((resource) => resource.name),
      [galaxy, pixel],
    );
    const unlabelled = await rpc<{ resources: ResourceMessage[] }>('ListResources', {});
    assert.ok(unlabelled.resources.some((resource) => resource.name === pixel));
    assert.deepEqual(await rpc('ListResources', { label: unique('nobody') }), { resources: [] });

    const held = await lock({ service: pixel, who: 'tester' });
    assert.deepEqual(held.resource, { name: pixel, labels: [label], properties: { serial: 'R58M' } });
    const got = await ok<Record<string, unknown>>('GetResource', { name: pixel });
    assert.deepEqual(got.holders, [lockMessageAsJson(held)]);
    assert.equal(got.free, undefined, 'free 0: left out');
    // A registered resource's capacity is its limit.
    await rejectsWith(lock({ service: galaxy, who: 'x', limit: 5 }), status.FAILED_PRECONDITION, {
      'tracker-code': 'LIMIT_MISMATCH',
      'tracker-field': 'limit',
      'tracker-limit': '2',
      'tracker-service': encodeURIComponent(galaxy),
    });

    const inUse = await bufRefused('DeleteResource', { name: pixel }, 'failed_precondition');
    await rejectsWith(rpc('DeleteResource', { name: pixel }), status.FAILED_PRECONDITION, {
      'tracker-code': 'RESOURCE_IN_USE',
    });
    assert.match(inUse, /held/);
    await rpc('UnLock', { id: held.id });
    assert.deepEqual(await ok('DeleteResource', { name: pixel }), {});
    const notFound = { 'tracker-code': 'RESOURCE_NOT_FOUND' };
    await Promise.all([
      rejectsWith(rpc('GetResource', { name: pixel }), status.NOT_FOUND, notFound),
      rejectsWith(rpc('DeleteResource', { name: pixel }), status.NOT_FOUND, notFound),
      bufRefused('GetResource', { name: unique('never') }, 'not_found'),
    ]);
    await rpc('DeleteResource', { name: galaxy });
  });

  test('PutResource refuses bad names, labels, properties and capacities, naming the field', async () => {
    const name = unique('bad');
    const cases: Array<[request: Record<string, unknown>, field: string]> = [
      [{ name: '' }, 'name'],
      [{ name: 'tab\there' }, 'name'],
      [{ name, capacity: 0 }, 'capacity'],
      [{ name, capacity: 1001 }, 'capacity'],
      [{ name, labels: [' '] }, 'labels'],
      [{ name, properties: { key: 'line\nbreak' } }, 'properties'],
    ];
    const errors = await Promise.all(
      cases.map(([request]) => failsWith(put(request), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT')),
    );
    cases.forEach(([request, field], index) => {
      const [got] = errors[index]?.metadata.get('tracker-field') ?? [];
      assert.ok(
        String(got).startsWith(field),
        `${JSON.stringify(request)}: field ${got}, ${errors[index]?.details}`,
      );
    });
    await rejectsWith(rpc('GetResource', { name }), status.NOT_FOUND, {
      'tracker-code': 'RESOURCE_NOT_FOUND',
    });
  });

  test('a label acquire takes a free resource carrying it and shows it; none carrying it is NO_SUCH_LABEL', async () => {
    const label = unique('t\u00e9l\u00e9phone');
    const names = [unique('phone-a'), unique('phone-b')].sort();
    for (const name of names)
      await put({ name, labels: [label], properties: { serial: name.toUpperCase() } });

    const first = await ok<Record<string, unknown>>('CreateLock', { label, who: 'suite-1' });
    const second = await lock({ label, who: 'suite-2' });
    const taken = [String(first.service), second.service].sort();
    assert.deepEqual(taken, names, 'each took another resource');
    for (const [taker, name] of [
      [first.resource, first.service],
      [second.resource, second.service],
    ] as const) {
      assert.deepEqual(taker, { name, labels: [label], properties: { serial: String(name).toUpperCase() } });
    }
    // Both taken: refused at once.
    await failsWith(lock({ label, who: 'suite-3' }), status.ALREADY_EXISTS, 'LOCK_HELD');

    // A waiting label request shows its label in the queue of each resource it could take.
    const waiting = lock({ label, who: 'suite-3', waitSeconds: 30 });
    const queue = await waitFor(
      async () => {
        const seen = await queueOf(second.service);
        return seen.waiters.length === 1 ? seen : null;
      },
      { what: 'the label request in the queue' },
    );
    assert.equal(queue.waiters[0]?.label, label);
    assert.equal(queue.waiters[0]?.who, 'suite-3');
    await rpc('UnLock', { id: second.id });
    const third = await waiting;
    assert.equal(third.service, second.service);

    // Its queued event carries the label.
    const history = await rpc<{ events: LockEventMessage[] }>('GetHistory', { who: 'suite-3' });
    const queued = history.events.find((event) => event.type === 'queued');
    assert.ok(queued, JSON.stringify(history.events));
    assert.equal(queued.label, label);
    assert.equal(queued.lock.limit, 0, 'a waiting request has no limit yet');

    const missing = unique('no-such-\u00e9tiquette');
    const noLabel = await rejectsWith(lock({ label: missing, who: 'w' }), status.NOT_FOUND, {
      'tracker-code': 'NO_SUCH_LABEL',
      'tracker-field': 'label',
      'tracker-label': encodeURIComponent(missing),
    });
    assert.ok(noLabel.details.includes(missing), noLabel.details);
    assert.equal(await bufRefused('CreateLock', { label: missing, who: 'w' }, 'not_found'), noLabel.details);
    for (const held of [first.id, third.id]) await rpc('UnLock', { id: held });
  });

  test('a group: AcquireLocks takes all or nothing; GetLockGroup, RenewLockGroup, ReleaseLockGroup act on all', async () => {
    const [a, b, c] = [unique('db'), unique('cache'), unique('queue')];
    const label = unique('agent');
    const agents = [unique('agent-1'), unique('agent-2'), unique('agent-3')];
    for (const name of agents) await put({ name, labels: [label] });

    const group = await ok<{ id: string; locks: Array<Record<string, unknown>> }>('AcquireLocks', {
      who: 'e2e',
      ttlSeconds: 120,
      locks: [{ service: a }, { service: b, mode: 'shared' }, { label, quantity: 2 }],
    });
    assert.match(group.id, UUID);
    assert.equal(group.locks.length, 4);
    for (const member of group.locks) {
      assert.equal(member.groupId, group.id);
      assert.equal(member.who, 'e2e');
      assert.equal(member.ttlSeconds, 120);
    }
    assert.deepEqual(
      group.locks.slice(0, 2).map((member) => [member.service, member.mode]),
      [
        [a, 'exclusive'],
        [b, 'shared'],
      ],
    );
    const labelled = group.locks.slice(2).map((member) => String(member.service));
    assert.equal(new Set(labelled).size, 2);
    for (const name of labelled) assert.ok(agents.includes(name), name);

    // Read back in the claims' order, as granted.
    const got = await rpc<GroupMessage>('GetLockGroup', { id: group.id });
    assert.deepEqual({ id: got.id, locks: got.locks.map(lockMessageAsJson) }, group);
    assert.deepEqual(await ok<typeof group>('GetLockGroup', { id: group.id }), group);

    // All or nothing: [c, a] cannot have a, so it does not take c either.
    await failsWith(
      rpc('AcquireLocks', { who: 'other', locks: [{ service: c }, { service: a }] }),
      status.ALREADY_EXISTS,
      'LOCK_HELD',
    );
    assert.deepEqual((await queueOf(c)).holders, [], 'c was not taken');
    // A shared claim joins b's shared holder.
    const reader = await lock({ service: b, who: 'reader', mode: 'shared' });

    const renewed = await ok<{ id: string; locks: Array<{ ttlSeconds: number }> }>('RenewLockGroup', {
      id: group.id,
      ttlSeconds: 600,
    });
    assert.equal(renewed.id, group.id);
    assert.deepEqual(
      renewed.locks.map((member) => member.ttlSeconds),
      [600, 600, 600, 600],
    );

    // A member released alone leaves the others in the group, in the claims' order.
    await rpc('UnLock', { id: got.locks[0]?.id });
    const rest = await rpc<GroupMessage>('GetLockGroup', { id: group.id });
    assert.deepEqual(
      rest.locks.map((member) => member.id),
      got.locks.slice(1).map((member) => member.id),
    );

    // Events carry the group id.
    const history = await rpc<{ events: LockEventMessage[] }>('GetHistory', { service: b, who: 'e2e' });
    const acquired = history.events.find((event) => event.type === 'acquired');
    assert.equal(acquired?.groupId, group.id);
    assert.equal(acquired?.lock.groupId, group.id);
    assert.equal(acquired?.lock.mode, 'shared');

    const released = await ok<{ id: string; locks: Array<{ id: string }> }>('ReleaseLockGroup', {
      id: group.id,
    });
    assert.equal(released.id, group.id);
    assert.deepEqual(
      released.locks.map((member) => member.id),
      rest.locks.map((member) => member.id),
    );
    await Promise.all([
      rejectsWith(rpc('GetLockGroup', { id: group.id }), status.NOT_FOUND, {
        'tracker-code': 'LOCK_NOT_FOUND',
      }),
      rejectsWith(rpc('ReleaseLockGroup', { id: group.id }), status.NOT_FOUND, {
        'tracker-code': 'LOCK_NOT_FOUND',
      }),
      rejectsWith(rpc('RenewLockGroup', { id: group.id }), status.NOT_FOUND, {
        'tracker-code': 'LOCK_NOT_HELD',
      }),
      rejectsWith(rpc('GetLockGroup', { id: 'not-a-uuid' }), status.NOT_FOUND, {
        'tracker-code': 'LOCK_NOT_FOUND',
      }),
      bufRefused('GetLockGroup', { id: randomUUID() }, 'not_found'),
    ]);
    // Now [c, a] gets both.
    const after = await rpc<GroupMessage>('AcquireLocks', {
      who: 'other',
      locks: [{ service: c }, { service: a }],
    });
    assert.deepEqual(
      after.locks.map((member) => member.service),
      [c, a],
    );
    await rpc('ReleaseLockGroup', { id: after.id });
    await rpc('UnLock', { id: reader.id });
    for (const name of agents) await rpc('DeleteResource', { name });
  });

  test('AcquireLocks with a request_id answers a retry with the same group, marked idempotent-replayed', async () => {
    const requestId = randomUUID();
    const request = {
      who: 'retrier',
      requestId,
      locks: [{ service: unique('x') }, { service: unique('y') }],
    };
    const first = await withMetadata<GroupMessage>('AcquireLocks', request);
    const again = await withMetadata<GroupMessage>('AcquireLocks', request);
    assert.equal(first.replayed, false);
    assert.equal(again.replayed, true);
    assert.deepEqual(again.response, first.response);
    await rpc('ReleaseLockGroup', { id: first.response.id });
  });

  test('AcquireLocks: a group waits holding nothing, then takes everything at once', async () => {
    const [x, y] = [unique('x'), unique('y')];
    const holder = await lock({ service: y, who: 'holder' });
    const waiting = rpc<GroupMessage>('AcquireLocks', {
      who: 'patient',
      waitSeconds: 30,
      priority: 3,
      locks: [{ service: x }, { service: y }],
    });
    const queue = await waitFor(
      async () => {
        const seen = await queueOf(y);
        return seen.waiters.length === 1 ? seen : null;
      },
      { what: 'the group in the queue of y' },
    );
    assert.equal(queue.waiters[0]?.priority, 3);
    assert.match(String(queue.waiters[0]?.groupId), UUID);
    // While it waits it holds nothing: x is free for anyone.
    const passer = await lock({ service: x, who: 'passer' });
    await rpc('UnLock', { id: passer.id });
    await rpc('UnLock', { id: holder.id });
    const group = await waiting;
    assert.equal(group.id, queue.waiters[0]?.groupId);
    assert.deepEqual(
      group.locks.map((member) => member.service),
      [x, y],
    );
    await rpc('ReleaseLockGroup', { id: group.id });
  });

  test('AcquireLocks refuses bad claims naming the field, and a group with no claims', async () => {
    const service = unique('claims');
    const cases: Array<[locks: unknown[], field: string]> = [
      [[{ service, mode: 'both' }], 'locks[0].mode'],
      [[{ service }, { service: unique('s'), mode: 'Shared' }], 'locks[1].mode'],
      [[{ service, limit: 0 }], 'locks[0].limit'],
      [[{ service, quantity: 2 }], 'locks[0].quantity'],
      [[{ label: 'phones', quantity: 33 }], 'locks[0].quantity'],
      [[{}], 'locks[0].service'],
      [[], 'locks'],
    ];
    const errors = await Promise.all(
      cases.map(([locks]) =>
        failsWith(rpc('AcquireLocks', { who: 'w', locks }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT'),
      ),
    );
    cases.forEach(([locks, field], index) => {
      const error = errors[index];
      assert.deepEqual(
        error?.metadata.get('tracker-field'),
        [field],
        `${JSON.stringify(locks)}: ${error?.details}`,
      );
      assert.ok(error?.details.includes(field), `${JSON.stringify(locks)}: ${error?.details}`);
    });
    const tooMany = Array.from({ length: 33 }, (_, index) => ({ service: `${service}-${index}` }));
    await rejectsWith(
      rpc('AcquireLocks', { who: 'w', locks: tooMany }),
      status.INVALID_ARGUMENT,
      invalid('locks'),
    );
    assert.deepEqual((await queueOf(service)).holders, []);
  });
});

describe('gRPC: groups and the resource registry with authentication (tokens file)', () => {
  const dir = tempDir();
  const file = join(dir.path, 'tokens.yaml');
  const tokens = {
    reader: addToken(file, { name: 'reader', scopes: ['lock:read'] }),
    writer: addToken(file, { name: 'writer', scopes: ['lock:write'] }),
    other: addToken(file, { name: 'other', scopes: ['lock:write'] }),
    admin: addToken(file, { name: 'admin', scopes: ['lock:admin'] }),
  };
  let server: ServerProcess;
  let client: LockServiceClient;
  const as = (token: string | undefined, method: string, request: object) =>
    unaryOutcome(client, method, request, token === undefined ? {} : { authorization: `Bearer ${token}` });
  /** The call failed with this status and tracker-code. */
  const refused = (
    outcome: { response?: unknown; error?: ServiceError },
    code: status,
    trackerCode: string,
    what: string,
  ) => {
    assert.equal(
      outcome.error?.code,
      code,
      `${what}: ${JSON.stringify(outcome.response)} ${outcome.error?.details}`,
    );
    assert.deepEqual(outcome.error?.metadata.get('tracker-code'), [trackerCode], what);
  };

  before(async () => {
    server = await startServerProcess({
      args: [...FREE_ARGS, '--auth-tokens-file', file],
    });
    client = lockServiceClient(server.grpcAddress);
  });
  after(async () => {
    client?.close();
    await server?.stop();
    dir.remove();
  });

  test('writing the registry needs lock:admin, reading it lock:read', async () => {
    const name = unique('device');
    const spec = { name, labels: [unique('label')], capacity: 2 };
    refused(await as(undefined, 'PutResource', spec), status.UNAUTHENTICATED, 'UNAUTHENTICATED', 'no token');
    refused(
      await as(tokens.writer, 'PutResource', spec),
      status.PERMISSION_DENIED,
      'PERMISSION_DENIED',
      'writer',
    );
    refused(
      await as(tokens.reader, 'PutResource', spec),
      status.PERMISSION_DENIED,
      'PERMISSION_DENIED',
      'reader',
    );
    const created = await as(tokens.admin, 'PutResource', spec);
    assert.equal(created.response?.created, true, created.error?.details);
    assert.equal((await as(tokens.reader, 'GetResource', { name })).response?.name, name);
    const listed = await as(tokens.reader, 'ListResources', { label: spec.labels[0] });
    assert.deepEqual(
      ((listed.response?.resources ?? []) as Array<{ name: string }>).map((resource) => resource.name),
      [name],
    );
    refused(
      await as(undefined, 'GetResource', { name }),
      status.UNAUTHENTICATED,
      'UNAUTHENTICATED',
      'no token',
    );
    refused(
      await as(tokens.writer, 'DeleteResource', { name }),
      status.PERMISSION_DENIED,
      'PERMISSION_DENIED',
      'writer deletes',
    );
    assert.deepEqual((await as(tokens.admin, 'DeleteResource', { name })).response, {});
  });

  test("a group's locks carry the token's name; another writer can neither renew nor release them", async () => {
    const locks = [{ service: unique('a') }, { service: unique('b') }];
    refused(
      await as(tokens.reader, 'AcquireLocks', { who: 'job', locks }),
      status.PERMISSION_DENIED,
      'PERMISSION_DENIED',
      'reader acquires',
    );
    const acquired = await as(tokens.writer, 'AcquireLocks', { who: 'job', locks });
    const group = acquired.response as unknown as GroupMessage;
    assert.equal(group.locks.length, 2, acquired.error?.details);
    for (const member of group.locks) assert.equal(member.owner, 'writer');
    for (const method of ['RenewLockGroup', 'ReleaseLockGroup']) {
      const outcome = await as(tokens.other, method, { id: group.id });
      assert.ok(outcome.error, `${method} by another writer: ${JSON.stringify(outcome.response)}`);
      assert.ok(
        [status.PERMISSION_DENIED, status.NOT_FOUND].includes(outcome.error.code),
        `${method} by another writer: ${status[outcome.error.code]} ${outcome.error.details}`,
      );
    }
    assert.equal((await as(tokens.reader, 'GetLockGroup', { id: group.id })).response?.id, group.id);
    const released = await as(tokens.writer, 'ReleaseLockGroup', { id: group.id });
    assert.equal(((released.response?.locks ?? []) as unknown[]).length, 2, released.error?.details);
  });
});
