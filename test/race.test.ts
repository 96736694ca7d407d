/**
 * "Exactly one winner": many clients race to create the same lock, over REST and gRPC at once,
 * against real server processes on a real SQLite file. Of each burst exactly one create
 * succeeds; every other one is told who holds the lock (the winner's id); nothing else happens
 * (no 5xx, no UNAVAILABLE, no timeouts).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { type ServiceError, status } from '@grpc/grpc-js';
import {
  type LockMessage,
  type LockServiceClient,
  lockMessageAsRest,
  lockServiceClient,
  unary,
} from './support/grpc-client.js';
import { API, quickRequest } from './support/rest.js';
import { type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';

/** Every request, REST or gRPC, is abandoned after this long (and then counts as a failure). */
const REQUEST_TIMEOUT_MS = 10_000;
const RACERS = 100;
/** gRPC channels per server process; each has its own connection. */
const CHANNELS = 3;

type LockJson = ReturnType<typeof lockMessageAsRest>;

/** What one racer got back. */
type Outcome =
  | { kind: 'won'; via: string; who: string; lock: LockJson }
  | { kind: 'held'; via: string; who: string; holderId: string; holderWho: string; message: string }
  | { kind: 'other'; via: string; who: string; detail: string };

/** One server process as the racers see it: its REST base URL and a few gRPC channels. */
interface Target {
  readonly name: string;
  readonly server: ServerProcess;
  readonly clients: LockServiceClient[];
}

/**
 * The racers' REST connections, kept alive between rounds. node:http rather than fetch:
 * fetch costs the test process about five times the CPU per request.
 */
const agent = new http.Agent({ keepAlive: true });

/** One request over `agent`; the status and the body as text. Bounded by REQUEST_TIMEOUT_MS of silence. */
const request = (url: string, method: string, body?: unknown) =>
  quickRequest(agent, method, url, body, REQUEST_TIMEOUT_MS);

async function connect(name: string, server: ServerProcess): Promise<Target> {
  const clients = Array.from({ length: CHANNELS }, () =>
    lockServiceClient(server.grpcAddress, { ownConnection: true }),
  );
  // Warm every connection up, so that the races measure the store, not connection setup.
  await Promise.all([
    ...clients.map((client) => unary(client, 'ListLocks', { perPage: 1 })),
    ...Array.from({ length: RACERS / 2 }, () => request(`${server.baseUrl}/healthz`, 'GET')),
  ]);
  return { name, server, clients };
}

async function restCreate(target: Target, service: string, who: string): Promise<Outcome> {
  const via = `${target.name} REST`;
  try {
    const reply = await request(`${target.server.baseUrl}${API}/lock`, 'POST', { service, who });
    const text = reply.text;
    const json = JSON.parse(text) as {
      id?: string;
      code?: string;
      error?: string;
      existingLock?: LockJson;
    };
    if (reply.status === 201) return { kind: 'won', via, who, lock: json as LockJson };
    if (reply.status === 409 && json.code === 'LOCK_HELD' && json.existingLock) {
      const { id: holderId, who: holderWho } = json.existingLock;
      return { kind: 'held', via, who, holderId, holderWho, message: text };
    }
    return { kind: 'other', via, who, detail: `${reply.status} ${text}` };
  } catch (error) {
    return { kind: 'other', via, who, detail: String(error) };
  }
}

async function grpcCreate(target: Target, channel: number, service: string, who: string): Promise<Outcome> {
  const via = `${target.name} gRPC`;
  const client = target.clients[channel % target.clients.length];
  assert.ok(client);
  try {
    const lock = lockMessageAsRest(await unary<LockMessage>(client, 'CreateLock', { service, who }));
    return { kind: 'won', via, who, lock };
  } catch (caught) {
    const error = caught as ServiceError;
    const trailer = (key: string) => String(error.metadata?.get(key)[0] ?? '');
    if (error.code === status.ALREADY_EXISTS && trailer('tracker-code') === 'LOCK_HELD') {
      // The holder's who is only in the message: `... is held by "WHO" (lock id ID, ...)`.
      const holderWho = /is held by "([^"]*)"/.exec(error.details)?.[1] ?? '';
      return {
        kind: 'held',
        via,
        who,
        holderId: trailer('tracker-existing-lock-id'),
        holderWho,
        message: error.details,
      };
    }
    return { kind: 'other', via, who, detail: `${status[error.code] ?? error.code}: ${error.details}` };
  }
}

/**
 * Fires RACERS creates for one fresh service, all started before any is awaited, spread over
 * every target, alternating REST and gRPC and cycling through the gRPC channels.
 */
async function race(targets: readonly Target[], service: string): Promise<Outcome[]> {
  const attempts: Promise<Outcome>[] = [];
  // In a random order, so that no transport or process always gets the head start.
  for (const i of shuffled(RACERS)) {
    const slot = Math.floor(i / 2);
    const target = targets[slot % targets.length];
    assert.ok(target);
    const who = `racer-${i}`;
    attempts.push(
      i % 2 === 0
        ? restCreate(target, service, who)
        : grpcCreate(target, Math.floor(slot / targets.length), service, who),
    );
  }
  return Promise.all(attempts);
}

/** 0 .. n-1 in a random order (Fisher-Yates). */
function shuffled(n: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i -= 1) {
    const j = Math.floor(Math.random() * (i + 1));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  return order;
}

/** Exactly one winner; all the others were refused naming it; nothing else. */
function assertOneWinner(outcomes: readonly Outcome[], service: string, round: number): LockJson {
  const label = `round ${round} (${service})`;
  assert.equal(outcomes.length, RACERS);
  const others = outcomes.filter((outcome) => outcome.kind === 'other');
  assert.deepEqual(others, [], `${label}: unexpected outcomes`);
  const winners = outcomes.filter((outcome) => outcome.kind === 'won');
  assert.equal(
    winners.length,
    1,
    `${label}: ${winners.length} winners: ${winners.map((w) => `${w.via} ${w.who}`).join(', ')}`,
  );
  const [winner] = winners;
  assert.ok(winner);
  assert.equal(winner.lock.service, service, label);
  assert.equal(winner.lock.who, winner.who, label);

  const held = outcomes.filter((outcome) => outcome.kind === 'held');
  assert.equal(held.length, RACERS - 1, label);
  for (const loser of held) {
    const context = `${label}: ${loser.via} ${loser.who} was refused with ${loser.message}`;
    assert.equal(loser.holderId, winner.lock.id, context);
    assert.equal(loser.holderWho, winner.who, context);
    assert.ok(loser.message.includes(winner.lock.id), context);
  }
  return winner.lock;
}

/** Both transports of `target` list exactly the winner for `service`. */
async function assertListed(target: Target, service: string, winner: LockJson): Promise<void> {
  const listedByRest = await request(
    `${target.server.baseUrl}${API}/locks/list?service=${encodeURIComponent(service)}`,
    'GET',
  );
  assert.equal(listedByRest.status, 200);
  assert.deepEqual(JSON.parse(listedByRest.text), { locks: [winner], total: 1, page: 1, perPage: 100 });
  const [client] = target.clients;
  assert.ok(client);
  const listed = await unary<{ locks: LockMessage[]; total: number }>(client, 'ListLocks', { service });
  assert.deepEqual(listed.locks.map(lockMessageAsRest), [winner]);
  assert.equal(listed.total, 1);
}

/** Releases over REST on even rounds and over gRPC on odd ones, then checks it is gone. */
async function release(target: Target, lock: LockJson, round: number): Promise<void> {
  const [client] = target.clients;
  assert.ok(client);
  if (round % 2 === 0) {
    const released = await request(`${target.server.baseUrl}${API}/unlock/${lock.id}`, 'GET');
    assert.equal(released.status, 200);
    assert.deepEqual(JSON.parse(released.text), { success: true, message: 'Lock released successfully' });
  } else {
    assert.deepEqual(await unary(client, 'UnLock', { id: lock.id }), {
      success: true,
      message: 'Lock released successfully',
    });
  }
  await assert.rejects(unary(client, 'GetLock', { id: lock.id }), { code: status.NOT_FOUND });
}

async function assertEmpty(target: Target): Promise<void> {
  const listed = await request(`${target.server.baseUrl}${API}/locks/list`, 'GET');
  assert.deepEqual(JSON.parse(listed.text), { locks: [], total: 0, page: 1, perPage: 100 });
}

/** "REST 37, gRPC 63": which transport (and process) won how many rounds. */
function tally(winners: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const via of winners) counts.set(via, (counts.get(via) ?? 0) + 1);
  return [...counts.entries()]
    .sort()
    .map(([via, count]) => `${via} ${count}`)
    .join(', ');
}

describe('exactly one winner', () => {
  const dir = tempDir('tracker-race-');
  const started: ServerProcess[] = [];
  const targets: Target[] = [];

  /** A server process on `sqlite:<tempdir>/<file>`, a real file shared by all that name it. */
  const start = async (name: string, file: string): Promise<Target> => {
    const databaseUrl = `sqlite:${join(dir.path, file)}`;
    const server = await startServerProcess({
      args: ['--http-port', '0', '--grpc-port', '0', '--database-url', databaseUrl],
    });
    started.push(server);
    const target = await connect(name, server);
    targets.push(target);
    return target;
  };
  /** Process A, on shared.db: the one process of the first test, and the first of two in the second. */
  let first: Promise<Target> | undefined;
  const processA = () => {
    first ??= start('A', 'shared.db');
    return first;
  };

  after(async () => {
    for (const target of targets) for (const client of target.clients) client.close();
    agent.destroy();
    await Promise.all(started.map((server) => server.stop()));
    dir.remove();
  });

  test('20 rounds of 100 concurrent creates over REST and gRPC on one process', {
    timeout: 120_000,
  }, async (t) => {
    const target = await processA();
    const winners: string[] = [];
    for (let round = 0; round < 20; round += 1) {
      const service = `race-${round}-${randomUUID()}`;
      const outcomes = await race([target], service);
      const lock = assertOneWinner(outcomes, service, round);
      winners.push(outcomes.find((outcome) => outcome.kind === 'won')?.via ?? '');
      await assertListed(target, service, lock);
      await release(target, lock, round);
    }
    await assertEmpty(target);
    t.diagnostic(`winners by transport: ${tally(winners)}`);
  });

  test('10 rounds of 100 concurrent creates over two processes sharing one SQLite file', {
    timeout: 120_000,
  }, async (t) => {
    const a = await processA();
    const b = await start('B', 'shared.db');
    assert.notEqual(a.server.httpPort, b.server.httpPort);
    assert.notEqual(a.server.grpcPort, b.server.grpcPort);
    assert.notEqual(a.server.child.pid, b.server.child.pid);
    const winners: string[] = [];
    for (let round = 0; round < 10; round += 1) {
      const service = `shared-${round}-${randomUUID()}`;
      const outcomes = await race([a, b], service);
      for (const via of ['A REST', 'A gRPC', 'B REST', 'B gRPC']) {
        assert.equal(outcomes.filter((outcome) => outcome.via === via).length, RACERS / 4, via);
      }
      const lock = assertOneWinner(outcomes, service, round);
      const winnerVia = outcomes.find((outcome) => outcome.kind === 'won')?.via ?? '';
      winners.push(winnerVia);
      // Each process sees the other's commit.
      await assertListed(a, service, lock);
      await assertListed(b, service, lock);
      // Released through the process that did not win, and gone for both.
      const [winnerSide, otherSide] = winnerVia.startsWith('A') ? [a, b] : [b, a];
      await release(otherSide, lock, round);
      const [winnerClient] = winnerSide.clients;
      assert.ok(winnerClient);
      await assert.rejects(unary(winnerClient, 'GetLock', { id: lock.id }), { code: status.NOT_FOUND });
    }
    await assertEmpty(a);
    await assertEmpty(b);
    t.diagnostic(`winners by process and transport: ${tally(winners)}`);
  });
});
