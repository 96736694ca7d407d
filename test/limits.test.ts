/**
 * What a careless or hostile client could grow without bound, against the real server
 * process: idle gRPC connections, large watch snapshots and replays, watchers that never read,
 * too many watchers. Each test reproduces a finding of the probe in issue 15.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import { credentials, status } from '@grpc/grpc-js';
import { systemClock } from '../src/core/clock.js';
import type { LockStore } from '../src/core/lock-store.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import {
  type LockServiceClient,
  lockServiceClient,
  serverStream,
  unary,
  type WatchLocksMessage,
} from './support/grpc-client.js';
import { FREE_ARGS, type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';
import { openSse } from './support/sse.js';
import { makeTlsFiles, type TlsFiles } from './support/tls.js';
import { waitFor } from './support/wait-for.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** An empty HTTP/2 SETTINGS frame: what a client sends right after the preface. */
const SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);

/** A metric's value from /metrics (summed over its series matching `labels`). */
async function metric(baseUrl: string, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const [series, value] = line.split(' ');
    if (series === undefined || value === undefined || line.startsWith('#')) continue;
    if (series.split('{')[0] === name && series.startsWith(`${name}${labels}`)) sum += Number(value);
  }
  return sum;
}

/** A TCP connection to `port`, from `localAddress`; resolves once connected. */
function connect(port: number, localAddress = '127.0.0.1'): Promise<net.Socket & { gone: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    socket.on('error', () => {});
    const closed = new Promise<void>((done) => socket.once('close', () => done()));
    socket.once('connect', () => resolve(Object.assign(socket, { gone: closed })));
    socket.once('close', () => reject(new Error('closed before connecting')));
  });
}

/** The types of the HTTP/2 frames in `bytes` (a server's side of a connection, no preface). */
function frameTypes(bytes: Buffer): number[] {
  const types: number[] = [];
  for (let at = 0; at + 9 <= bytes.length; ) {
    const length = bytes.readUIntBE(at, 3);
    types.push(bytes[at + 3] ?? -1);
    at += 9 + length;
  }
  return types;
}

describe('gRPC connections: handshake and idle timeouts, caps per address and in total', () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServerProcess({
      args: [
        ...FREE_ARGS,
        ...['--grpc-handshake-timeout', '1s', '--grpc-idle-timeout', '2s'],
        ...['--max-grpc-connections', '6', '--max-grpc-connections-per-address', '4'],
      ],
    });
  });
  after(() => server.stop());

  test('silent connections are cut at the handshake timeout; past the caps they are refused at once, logged and counted', async () => {
    const silent = await Promise.all([1, 2, 3, 4].map(() => connect(server.grpcPort)));
    // The fifth from the same address: refused at once.
    const fifth = await connect(server.grpcPort).catch(() => null);
    if (fifth) await fifth.gone;
    // Two more from another address fill the total; a third address is then refused too.
    const others = await Promise.all([1, 2].map(() => connect(server.grpcPort, '127.0.0.2')));
    const seventh = await connect(server.grpcPort, '127.0.0.3').catch(() => null);
    if (seventh) await seventh.gone;
    // REST still answers while the gRPC port is full.
    assert.equal((await fetch(`${server.baseUrl}/healthz`)).status, 200);
    await Promise.all([...silent, ...others].map((socket) => socket.gone));
    await waitFor(
      async () =>
        (await metric(server.baseUrl, 'tracker_grpc_connections_refused_total', '{reason="per-address"}')) >=
          1 &&
        (await metric(server.baseUrl, 'tracker_grpc_connections_refused_total', '{reason="total"}')) >= 1 &&
        (await metric(
          server.baseUrl,
          'tracker_grpc_connections_refused_total',
          '{reason="handshake-timeout"}',
        )) >= 6,
      { what: 'the refusals counted' },
    );
    // Log lines are written asynchronously: wait for one per reason.
    const refusals = () => server.lines.filter((line) => line.includes('gRPC connection refused'));
    for (const reason of ['per-address', 'total', 'handshake-timeout']) {
      await waitFor(() => refusals().some((line) => JSON.parse(line).reason === reason), {
        what: `a log line for ${reason}`,
      });
    }
    // Everything gone: a real client gets through.
    const client = lockServiceClient(server.grpcAddress);
    try {
      const page = await unary<{ total: number }>(client, 'ListLocks', {});
      assert.equal(page.total, 0);
    } finally {
      client.close();
    }
  });

  test('a connection that sends the HTTP/2 preface and then nothing is closed once idle, with GOAWAY', async () => {
    const socket = await connect(server.grpcPort);
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    const cutBefore = await metric(server.baseUrl, 'tracker_grpc_connections_refused_total');
    socket.write(Buffer.concat([PREFACE, SETTINGS]));
    await waitFor(() => socket.gone.then(() => true), {
      what: 'the idle connection closed',
      timeoutMs: 10_000,
    });
    // It spoke HTTP/2, so it passed the handshake: the server closed it as idle (an HTTP/2
    // GOAWAY frame, type 7), not by cutting it.
    assert.ok(frameTypes(Buffer.concat(received)).includes(7), 'a GOAWAY frame');
    assert.equal(await metric(server.baseUrl, 'tracker_grpc_connections_refused_total'), cutBefore);
  });

  test('a connection that speaks something else than HTTP/2 is cut at once', async () => {
    const socket = await connect(server.grpcPort);
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await socket.gone;
    await waitFor(
      async () =>
        (await metric(server.baseUrl, 'tracker_grpc_connections_refused_total', '{reason="not-http2"}')) >= 1,
      { what: 'counted' },
    );
  });
});

describe('gRPC over TLS: a connection that never completes its TLS handshake', () => {
  let files: TlsFiles;
  let server: ServerProcess;
  before(async () => {
    files = makeTlsFiles();
    server = await startServerProcess({
      args: [
        ...FREE_ARGS,
        ...['--tls-cert', files.serverCert, '--tls-key', files.serverKey, '--grpc-handshake-timeout', '1s'],
      ],
    });
  });
  after(async () => {
    await server.stop();
    files.remove();
  });

  test('is cut at the handshake timeout, silent or stuck half-way; a real client still gets through', async () => {
    const silent = await connect(server.grpcPort);
    // A TLS client that completes its handshake but never sends the HTTP/2 preface.
    const halfway = tls.connect({
      port: server.grpcPort,
      host: '127.0.0.1',
      ca: readFileSync(files.ca),
      servername: 'localhost',
      ALPNProtocols: ['h2'],
    });
    halfway.on('error', () => {});
    const halfwayClosed = new Promise<void>((resolve) => halfway.once('close', () => resolve()));
    await new Promise<void>((resolve) => halfway.once('secureConnect', () => resolve()));
    await Promise.all([silent.gone, halfwayClosed]);
    const client = lockServiceClient(`localhost:${server.grpcPort}`, {
      credentials: credentials.createSsl(readFileSync(files.ca)),
    });
    try {
      assert.equal((await unary<{ total: number }>(client, 'ListLocks', {})).total, 0);
    } finally {
      client.close();
    }
  });
});

/**
 * Long names (255 characters), so that 7,500 locks make a snapshot of about 5 MB: more than
 * gRPC's default 4 MiB per message, in 15 pages.
 */
const longName = (prefix: string, i: number) => `${prefix}-${i}-`.padEnd(255, 'x');

describe('large watch snapshots and resumes, and watchers that never read', () => {
  const LOCKS = 7_500;
  let dir: { path: string; remove: () => void };
  let store: LockStore;
  let server: ServerProcess;
  let client: LockServiceClient;
  let firstEventId = 0;

  before(async () => {
    dir = tempDir();
    const path = join(dir.path, 'tracker.db');
    // Written by this process into the server's file (SQLite is shared by processes): far
    // quicker than 15,000 requests, and the server's watchers see it as another replica's.
    store = openSqliteLockStore({ path, clock: systemClock });
    for (let i = 0; i < LOCKS; i++) {
      const result = await store.acquire({
        id: randomUUID(),
        service: longName('svc', i),
        who: longName('who', i),
        ttlSeconds: null,
      });
      assert.ok(result.acquired);
    }
    firstEventId = (await store.readEvents(0, 1))[0]?.id ?? 0;
    server = await startServerProcess({
      args: [
        ...['--http-port', '0', '--grpc-port', '0', '--database-url', `sqlite:${path}`],
        ...['--max-watcher-buffer', '2MiB', '--max-watchers-per-token', '6'],
      ],
    });
    client = lockServiceClient(server.grpcAddress);
  });
  after(async () => {
    client.close();
    await server.stop();
    await store.close();
    dir.remove();
  });

  test('SSE: a snapshot of 7,500 locks with long names arrives whole, in pages', async () => {
    const stream = await openSse(`${server.baseUrl}/api/v1alpha1/watch`);
    try {
      const pages = await stream.until((message) => message.json.more === false, 20_000, 100);
      const locks = pages.flatMap((page) => page.json.locks as { service: string }[]);
      assert.equal(new Set(locks.map((lock) => lock.service)).size, LOCKS);
      assert.equal(pages[0]?.json.continued, false);
      assert.ok(pages.slice(1).every((page) => page.json.continued === true));
      // Only the last page carries the id a client resumes from.
      assert.deepEqual(
        pages.map((page) => page.id !== undefined),
        pages.map((_, i) => i === pages.length - 1),
      );
    } finally {
      stream.close();
    }
  });

  test('gRPC: the same snapshot gets through a default client (4 MiB per message)', async () => {
    const watch = serverStream<WatchLocksMessage & { snapshot?: { more: boolean; continued: boolean } }>(
      client,
      'WatchLocks',
      {},
    );
    try {
      const messages = await watch.until((all) => all.some((m) => m.snapshot?.more === false), 20_000);
      const locks = messages.flatMap((m) => m.snapshot?.locks ?? []);
      assert.equal(new Set(locks.map((lock) => lock.service)).size, LOCKS);
    } finally {
      watch.cancel();
    }
  });

  test('a resume over thousands of events (about 6 MB) gets every one of them, a page at a time', async () => {
    const stream = await openSse(`${server.baseUrl}/api/v1alpha1/watch`, {
      'last-event-id': String(firstEventId),
    });
    try {
      const events = await stream.until(
        (message) => message.id === String(firstEventId + LOCKS - 1),
        20_000,
        LOCKS,
      );
      assert.equal(events.length, LOCKS - 1);
      assert.ok(events.every((message) => message.event === 'acquired'));
    } finally {
      stream.close();
    }
  });

  test('a watcher that never reads is dropped with WATCHER_TOO_SLOW, once over its buffer; a reading one is not', async () => {
    const reader = await openSse(`${server.baseUrl}/api/v1alpha1/watch?service=${longName('busy', 0)}`);
    const reading = await reader.next(20_000);
    assert.equal(reading.event, 'snapshot');
    // The SSE watcher that never reads: a raw socket, paused after the request went out.
    // Both watch the one busy service: their snapshots are small, and they go live at once.
    const busy = longName('busy', 0);
    const slow = await connect(server.httpPort);
    slow.write(
      `GET /api/v1alpha1/watch?service=${busy} HTTP/1.1\r\nHost: 127.0.0.1:${server.httpPort}\r\n\r\n`,
    );
    slow.pause();
    // The gRPC one: a call whose client stops reading.
    const grpcSlow = serverStream<WatchLocksMessage>(client, 'WatchLocks', { service: busy });
    await grpcSlow.until((all) => all.length > 0, 20_000);
    grpcSlow.call.pause();
    const dropped = await metric(server.baseUrl, 'tracker_watchers_dropped_total');
    // Events with long names until both are dropped (the kernel's socket buffers fill first).
    for (let round = 0; round < 40; round++) {
      if ((await metric(server.baseUrl, 'tracker_watchers_dropped_total')) >= dropped + 2) break;
      for (let i = 0; i < 300; i++) {
        const result = await store.acquire({
          id: randomUUID(),
          service: longName('busy', 0),
          who: longName(`round-${round}`, i),
          ttlSeconds: null,
        });
        assert.ok(result.acquired);
        await store.release(result.lock.id);
        // The reading watcher reads in this process: let it.
        if (i % 50 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
    }
    await waitFor(
      async () => (await metric(server.baseUrl, 'tracker_watchers_dropped_total')) >= dropped + 2,
      {
        what: 'both slow watchers dropped',
        timeoutMs: 20_000,
      },
    );
    // Each sees why, as its last message, once it reads again.
    let text = '';
    slow.setEncoding('utf8');
    slow.on('data', (chunk: string) => {
      text += chunk;
    });
    slow.resume();
    await slow.gone;
    assert.match(text, /event: error\ndata: \{[^\n]*"code":"WATCHER_TOO_SLOW"/);
    grpcSlow.call.resume();
    const ended = await grpcSlow.ended;
    assert.equal(ended.code, status.RESOURCE_EXHAUSTED);
    assert.match(ended.details, /read too slowly/);
    assert.equal(ended.metadata.get('tracker-code')[0], 'WATCHER_TOO_SLOW');
    // The reading watcher got every event, to the last one.
    const last = (await store.history({ service: longName('busy', 0), limit: 1 }))[0];
    await reader.until((message) => message.id === String(last?.id), 20_000, 100_000);
    reader.close();
  });

  test('past --max-watchers-per-token (per address without authentication), a new watch answers 429 TOO_MANY_WATCHERS', async () => {
    await waitFor(async () => (await metric(server.baseUrl, 'tracker_watchers')) === 0, {
      what: 'the earlier tests to have closed their watchers',
    });
    const open = await Promise.all(
      [1, 2, 3, 4, 5, 6].map(() => openSse(`${server.baseUrl}/api/v1alpha1/watch?service=none`)),
    );
    try {
      await waitFor(async () => (await metric(server.baseUrl, 'tracker_watchers')) >= 6, {
        what: 'six watchers',
      });
      const refused = await fetch(`${server.baseUrl}/api/v1alpha1/watch`);
      assert.equal(refused.status, 429);
      assert.equal(((await refused.json()) as { code: string }).code, 'TOO_MANY_WATCHERS');
      const watch = serverStream<WatchLocksMessage>(client, 'WatchLocks', {});
      const ended = await watch.ended;
      assert.equal(ended.code, status.RESOURCE_EXHAUSTED);
      assert.equal(ended.metadata.get('tracker-code')[0], 'TOO_MANY_WATCHERS');
    } finally {
      for (const stream of open) stream.close();
    }
    // Places given back: a watch opens again.
    await waitFor(
      async () => {
        const stream = await openSse(`${server.baseUrl}/api/v1alpha1/watch?service=none`);
        stream.close();
        return stream.status === 200;
      },
      { what: 'a place again' },
    );
  });
});
