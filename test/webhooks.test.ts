import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { addToken } from '../src/auth/token-file.js';
import { describePostgres } from './support/postgres.js';
import { API, call } from './support/rest.js';
import { type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

/** Webhooks (issue 18, point 5) with a real receiver over HTTP. */

const SECRET = 'a-long-enough-shared-secret';
const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

interface Received {
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
  readonly json: { webhook?: string; event?: string; data?: Record<string, unknown>; text?: string };
}

/**
 * A receiver on 127.0.0.1: records every POST, answers `status` (a function of the request,
 * 204 by default), or hangs (never answers) while `hang` is set.
 */
async function startReceiver() {
  const received: Received[] = [];
  let answer: (request: Received) => number = () => 204;
  let hang = false;
  const hanging: http.ServerResponse[] = [];
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      const entry: Received = { headers: request.headers, body, json: JSON.parse(body) };
      if (hang) {
        hanging.push(response);
        received.push(entry);
        return;
      }
      const status = answer(entry);
      if (status >= 200 && status < 300) received.push(entry);
      response.writeHead(status).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address && typeof address === 'object');
  return {
    url: `http://127.0.0.1:${address.port}/hook`,
    received,
    answerWith(status: (request: Received) => number) {
      answer = status;
    },
    set hang(value: boolean) {
      hang = value;
    },
    /** The deliveries of one service (JSON format), in arrival order. */
    of(service: string) {
      return received.filter((entry) => {
        const data = entry.json.data as {
          service?: string;
          lock?: { service?: string };
          request?: { service?: string };
        };
        return (data?.service ?? data?.lock?.service ?? data?.request?.service) === service;
      });
    },
    async close() {
      for (const response of hanging) response.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
type Receiver = Awaited<ReturnType<typeof startReceiver>>;

const verify = (entry: Received) =>
  entry.headers['x-tracker-signature-256'] ===
  `sha256=${createHmac('sha256', SECRET).update(entry.body).digest('hex')}`;

function serverArgs(database: string, ...more: string[]): string[] {
  return [
    '--http-port',
    '0',
    '--grpc-port',
    '0',
    '--database-url',
    database,
    '--webhooks-allow-private',
    ...more,
  ];
}

describe('webhooks on one server (SQLite)', () => {
  const dir = tempDir();
  const database = `sqlite:${join(dir.path, 'hooks.db')}`;
  let server: ServerProcess;
  let receiver: Receiver;
  const rest = (method: string, path: string, body?: unknown) =>
    call(server.baseUrl, method, `${API}${path}`, body);
  const put = async (name: string, body: Record<string, unknown>) => {
    const reply = await rest('PUT', `/webhooks/${name}`, { url: receiver.url, secret: SECRET, ...body });
    assert.ok(reply.status === 201 || reply.status === 200, JSON.stringify(reply.json));
    return reply;
  };

  before(async () => {
    receiver = await startReceiver();
    server = await startServerProcess({ args: serverArgs(database) });
  });
  after(async () => {
    await server?.stop();
    await receiver?.close();
    dir.remove();
  });

  test('every history type and both alerts arrive, signed, in order, with their headers', async () => {
    const service = unique('all');
    const name = unique('all');
    const created = await put(name, {
      events: [
        'acquired',
        'renewed',
        'noted',
        'released',
        'queued',
        'dequeued',
        'force-released',
        'expired',
        'stolen',
        'held-too-long',
        'waited-too-long',
      ],
      services: `${service}*`,
      alertAfterSeconds: 1,
    });
    assert.equal(created.status, 201);
    assert.equal((created.json as { secret?: string }).secret, undefined, 'the secret is never shown');
    const lock = (
      await rest('POST', '/lock', {
        service,
        who: 'ci',
        ttlSeconds: 60,
        note: 'n',
        link: 'https://ci.example/1',
      })
    ).json as { id: string };
    await rest('POST', `/lock/${lock.id}/renew`, {});
    await rest('PATCH', `/lock/${lock.id}`, { note: 'changed' });
    // A waiter that waits long enough for waited-too-long, while the lock is held that long too.
    const waiting = rest('POST', '/lock', { service, who: 'next', waitSeconds: 30 });
    await waitFor(() => receiver.of(service).some((entry) => entry.json.event === 'waited-too-long'), {
      what: 'waited-too-long',
    });
    await waitFor(() => receiver.of(service).some((entry) => entry.json.event === 'held-too-long'), {
      what: 'held-too-long',
    });
    await rest('GET', `/unlock/${lock.id}`);
    const next = (await waiting).json as { id: string };
    await rest('POST', `/lock/${next.id}/force-release`, { reason: 'done' });
    const short = (await rest('POST', '/lock', { service, who: 'short', ttlSeconds: 1 })).json as {
      id: string;
    };
    await waitFor(() => receiver.of(service).some((entry) => entry.json.event === 'expired'), {
      what: 'the expiry',
      timeoutMs: 15_000,
    });
    const victim = (await rest('POST', '/lock', { service, who: 'victim' })).json as { id: string };
    await rest('POST', `/lock/${victim.id}/steal`, { who: 'thief', reason: 'urgent' });
    await waitFor(() => receiver.of(service).some((entry) => entry.json.event === 'stolen'), {
      what: 'the steal',
    });
    const entries = receiver.of(service);
    const types = new Set(entries.map((entry) => entry.json.event));
    for (const type of [
      'acquired',
      'renewed',
      'noted',
      'released',
      'queued',
      'dequeued',
      'force-released',
      'expired',
      'stolen',
      'held-too-long',
      'waited-too-long',
    ]) {
      assert.ok(types.has(type), `${type} was delivered: ${[...types].join(', ')}`);
    }
    for (const entry of entries) {
      assert.ok(verify(entry), 'the signature is the HMAC-SHA256 of the raw body');
      assert.equal(entry.headers['x-tracker-event'], entry.json.event);
      assert.equal(entry.headers['content-type'], 'application/json');
      assert.equal(entry.json.webhook, name);
    }
    const ids = entries.map((entry) => entry.headers['x-tracker-delivery']);
    assert.equal(new Set(ids).size, ids.length, 'each delivery has its own id');
    // History events arrive in history order.
    const history = entries.filter((entry) => !String(entry.json.event).endsWith('-too-long'));
    const eventIds = history.map((entry) => (entry.json.data as { id: number }).id);
    assert.deepEqual(
      eventIds,
      [...eventIds].sort((a, b) => a - b),
    );
    assert.equal(short.id.length, 36);
    const acquired = history.find((entry) => entry.json.event === 'acquired');
    assert.deepEqual(
      (acquired?.json.data as { lock?: { link?: string } } | undefined)?.lock?.link,
      'https://ci.example/1',
    );
    // The receiver has each delivery before the server records its answer: wait for the record.
    const status = await waitFor(
      async () => {
        const state = (await rest('GET', `/webhooks/${name}`)).json as {
          delivery: { delivered: number; failures: number; lastStatus: number; cursor: number };
        };
        return state.delivery.delivered >= entries.length ? state : null;
      },
      { what: 'the deliveries recorded' },
    );
    assert.equal(status.delivery.failures, 0);
    assert.equal(status.delivery.lastStatus, 204);
    await rest('DELETE', `/webhooks/${name}`);
  });

  test('slack format: one readable line with service, who, note and link', async () => {
    const service = unique('slack');
    const name = unique('slack');
    await put(name, { events: ['acquired'], services: service, format: 'slack' });
    await rest('POST', '/lock', {
      service,
      who: 'deployer',
      note: 'v2.3 to prod',
      link: 'https://ci.example/42',
    });
    const entry = await waitFor(
      () => receiver.received.find((one) => one.headers['x-tracker-webhook'] === name) ?? null,
      { what: 'the slack delivery' },
    );
    assert.deepEqual(Object.keys(entry.json), ['text']);
    assert.equal(
      entry.json.text,
      `Tracker: ${service}: acquired by deployer — v2.3 to prod (https://ci.example/42)`,
    );
    assert.ok(verify(entry));
    await rest('DELETE', `/webhooks/${name}`);
  });

  test('a receiver that is down: retried with backoff, nothing lost, the state shows the failures', async () => {
    const service = unique('down');
    const name = unique('down');
    await put(name, { events: ['acquired', 'released'], services: service });
    let refusing = true;
    receiver.answerWith((entry) => (entry.headers['x-tracker-webhook'] === name && refusing ? 503 : 204));
    for (let i = 0; i < 3; i++) {
      const lock = (await rest('POST', '/lock', { service, who: `job-${i}` })).json as { id: string };
      await rest('GET', `/unlock/${lock.id}`);
    }
    const failing = await waitFor(
      async () => {
        const state = (await rest('GET', `/webhooks/${name}`)).json as {
          delivery: {
            failures: number;
            lastStatus: number | null;
            lastError: string | null;
            pending: number;
            nextAttemptAt: string | null;
          };
        };
        return state.delivery.failures >= 2 ? state : null;
      },
      { what: 'two failed attempts', timeoutMs: 15_000 },
    );
    assert.equal(failing.delivery.lastStatus, 503);
    assert.match(failing.delivery.lastError ?? '', /503/);
    assert.equal(failing.delivery.pending, 6);
    assert.ok(failing.delivery.nextAttemptAt);
    const metrics = await (await fetch(`${server.baseUrl}/metrics`)).text();
    assert.match(metrics, new RegExp(`tracker_webhook_failures\\{webhook="${name}"\\} [1-9]`));
    assert.match(
      metrics,
      new RegExp(`tracker_webhook_deliveries_total\\{webhook="${name}",result="failed"\\} [1-9]`),
    );
    refusing = false;
    const delivered = await waitFor(() => (receiver.of(service).length === 6 ? receiver.of(service) : null), {
      what: 'all six events once the receiver is back',
      timeoutMs: 20_000,
    });
    assert.deepEqual(
      delivered.map((entry) => entry.json.event),
      ['acquired', 'released', 'acquired', 'released', 'acquired', 'released'],
    );
    await waitFor(
      async () => {
        const state = (await rest('GET', `/webhooks/${name}`)).json as {
          delivery: { failures: number; pending: number };
        };
        return state.delivery.failures === 0 && state.delivery.pending === 0;
      },
      { what: 'the state caught up: no failure, nothing pending' },
    );
    receiver.answerWith(() => 204);
    await rest('DELETE', `/webhooks/${name}`);
  });

  test('a receiver that hangs holds back no other webhook', async () => {
    const stuck = await startReceiver();
    stuck.hang = true;
    const service = unique('isolated');
    // Listed first (by name): delivered one after the other, it would hold the second back 10 s.
    await rest('PUT', `/webhooks/a-stuck-${service}`, {
      url: stuck.url,
      secret: SECRET,
      events: ['acquired'],
      services: service,
    });
    await put(`b-fine-${service}`, { events: ['acquired'], services: service });
    try {
      await rest('POST', '/lock', { service, who: 'ci' });
      await waitFor(() => receiver.of(service).length === 1, {
        what: 'the healthy receiver’s delivery, while the other hangs',
        timeoutMs: 5_000,
      });
      assert.equal(stuck.received.length, 1, 'the stuck receiver has its request, unanswered');
    } finally {
      await rest('DELETE', `/webhooks/a-stuck-${service}`);
      await rest('DELETE', `/webhooks/b-fine-${service}`);
      await stuck.close();
    }
  });

  test('the admin API: validation names the field, GET never shows the secret, DELETE forgets it', async () => {
    const name = unique('api');
    for (const [body, field] of [
      [{ url: 'ftp://x.example/', secret: SECRET, events: ['acquired'] }, 'url'],
      [{ url: receiver.url, secret: 'short', events: ['acquired'] }, 'secret'],
      [{ url: receiver.url, secret: SECRET, events: [] }, 'events'],
      [{ url: receiver.url, secret: SECRET, events: ['nope'] }, 'events[0]'],
      [{ url: receiver.url, secret: SECRET, events: ['held-too-long'] }, 'alertAfterSeconds'],
      [{ url: receiver.url, secret: SECRET, events: ['acquired'], format: 'xml' }, 'format'],
      [{ url: receiver.url, secret: SECRET, events: ['acquired'], extra: 1 }, 'extra'],
    ] as const) {
      const reply = await rest('PUT', `/webhooks/${name}`, body);
      assert.equal(reply.status, 400, `${JSON.stringify(body)}: ${JSON.stringify(reply.json)}`);
      assert.equal(reply.json.field, field, JSON.stringify(reply.json));
    }
    // The name follows the rules of every name (validateName): nothing invisible, not blank.
    for (const bad of ['a%E2%80%8Bb', '%20%20']) {
      const reply = await rest('PUT', `/webhooks/${bad}`, {
        url: receiver.url,
        secret: SECRET,
        events: ['acquired'],
      });
      assert.equal(reply.status, 400, `${bad}: ${JSON.stringify(reply.json)}`);
      assert.equal(reply.json.field, 'name', JSON.stringify(reply.json));
    }
    assert.equal((await rest('GET', `/webhooks/${name}`)).status, 404);
    const created = await put(name, { events: ['acquired'] });
    assert.equal(created.status, 201);
    const replaced = await put(name, { events: ['released'], format: 'slack' });
    assert.equal(replaced.status, 200);
    const listed = (await rest('GET', '/webhooks')).json as {
      webhooks: Array<{ name: string; events: string[] }>;
    };
    assert.deepEqual(listed.webhooks.find((one) => one.name === name)?.events, ['released']);
    assert.ok(!JSON.stringify(listed).includes(SECRET), 'no secret in the list');
    assert.equal((await rest('DELETE', `/webhooks/${name}`)).status, 204);
    const gone = await rest('DELETE', `/webhooks/${name}`);
    assert.equal(gone.status, 404);
    assert.equal(gone.json.code, 'WEBHOOK_NOT_FOUND');
  });
});

describe('webhooks survive a kill -9 mid-delivery (SQLite file)', () => {
  const dir = tempDir();
  const database = `sqlite:${join(dir.path, 'kill.db')}`;

  test('the event being delivered when the server died is delivered after the restart, none lost', async () => {
    const receiver = await startReceiver();
    let server = await startServerProcess({ args: serverArgs(database) });
    try {
      const rest = (method: string, path: string, body?: unknown) =>
        call(server.baseUrl, method, `${API}${path}`, body);
      const service = unique('kill');
      await rest('PUT', '/webhooks/kill', {
        url: receiver.url,
        secret: SECRET,
        events: ['acquired', 'released'],
      });
      receiver.hang = true;
      const lock = (await rest('POST', '/lock', { service, who: 'a' })).json as { id: string };
      await rest('GET', `/unlock/${lock.id}`);
      await waitFor(() => receiver.received.length === 1, {
        what: 'the first delivery to reach the hanging receiver',
      });
      const first = receiver.received[0];
      server.child.kill('SIGKILL');
      await server.exited;
      receiver.hang = false;
      server = await startServerProcess({ args: serverArgs(database) });
      // The dead server's claim on the webhook runs out (15 s) before the new one delivers.
      const after = await waitFor(() => (receiver.received.length >= 3 ? receiver.received : null), {
        what: 'both events after the restart',
        timeoutMs: 40_000,
      });
      const ids = after.map((entry) => entry.headers['x-tracker-delivery']);
      assert.equal(ids[1], first?.headers['x-tracker-delivery'], 'the interrupted delivery again, same id');
      assert.deepEqual(
        after.slice(1).map((entry) => entry.json.event),
        ['acquired', 'released'],
      );
    } finally {
      await server.stop();
      await receiver.close();
      dir.remove();
    }
  });
});

describe('webhooks refuse private addresses unless allowed', () => {
  test('loopback, link-local and metadata URLs are 400 naming url; a public name is taken', async () => {
    const server = await startServerProcess();
    try {
      for (const url of [
        'http://127.0.0.1:9/hook',
        'http://localhost:9/hook',
        'http://169.254.169.254/latest/meta-data/',
        'http://[::1]:9/hook',
        'http://[::ffff:127.0.0.1]:9/hook',
      ]) {
        const reply = await call(server.baseUrl, 'PUT', `${API}/webhooks/private`, {
          url,
          secret: SECRET,
          events: ['acquired'],
        });
        assert.equal(reply.status, 400, `${url}: ${JSON.stringify(reply.json)}`);
        assert.equal(reply.json.field, 'url');
        assert.match(String(reply.json.error), /loopback, link-local or metadata|does not resolve/);
      }
      const privateNetwork = await call(server.baseUrl, 'PUT', `${API}/webhooks/private`, {
        url: 'http://10.1.2.3/hook',
        secret: SECRET,
        events: ['acquired'],
      });
      assert.equal(privateNetwork.status, 201, 'a private network address is allowed');
    } finally {
      await server.stop();
    }
  });
});

describe('webhooks need lock:admin over every service', () => {
  const dir = tempDir();
  const file = join(dir.path, 'tokens.yaml');
  const tokens = {
    writer: addToken(file, { name: 'writer', scopes: ['lock:write'] }),
    limited: addToken(file, { name: 'limited', scopes: ['lock:admin'], services: ['deploy-*'] }),
    admin: addToken(file, { name: 'admin', scopes: ['lock:admin'] }),
  };
  test('a writer and a limited admin are 403; an admin manages them', async () => {
    const server = await startServerProcess({
      args: serverArgs('sqlite::memory:', '--auth-tokens-file', file),
    });
    try {
      const body = { url: 'http://127.0.0.1:9/hook', secret: SECRET, events: ['acquired'] };
      const as = (token: string, method: string, path: string, payload?: unknown) =>
        call(server.baseUrl, method, `${API}${path}`, payload, {
          headers: { authorization: `Bearer ${token}` },
        });
      assert.equal((await as(tokens.writer, 'PUT', '/webhooks/w', body)).status, 403);
      assert.equal((await as(tokens.limited, 'PUT', '/webhooks/w', body)).status, 403);
      assert.equal((await as(tokens.writer, 'GET', '/webhooks')).status, 403);
      assert.equal((await as(tokens.admin, 'PUT', '/webhooks/w', body)).status, 201);
      assert.equal((await as(tokens.admin, 'GET', '/webhooks/w')).status, 200);
    } finally {
      await server.stop();
      dir.remove();
    }
  });
});

await describePostgres('webhooks on two PostgreSQL replicas', (database) => {
  test('each event is delivered once, by one replica or the other, in order', async () => {
    const receiver = await startReceiver();
    const replicas = await Promise.all([
      startServerProcess({ args: serverArgs(database().url) }),
      startServerProcess({ args: serverArgs(database().url) }),
    ]);
    try {
      const [a, b] = replicas as [ServerProcess, ServerProcess];
      const service = unique('pg');
      const put = await call(a.baseUrl, 'PUT', `${API}/webhooks/pg`, {
        url: receiver.url,
        secret: SECRET,
        events: ['acquired', 'released'],
        services: `${service}*`,
      });
      assert.equal(put.status, 201, JSON.stringify(put.json));
      for (let i = 0; i < 10; i++) {
        const on = i % 2 === 0 ? a : b;
        const lock = (
          await call(on.baseUrl, 'POST', `${API}/lock`, { service: `${service}-${i}`, who: 'job' })
        ).json as { id: string };
        await call(on.baseUrl, 'GET', `${API}/unlock/${lock.id}`);
      }
      const delivered = await waitFor(() => (receiver.received.length >= 20 ? receiver.received : null), {
        what: 'twenty deliveries',
        timeoutMs: 20_000,
      });
      const ids = delivered.map((entry) => entry.headers['x-tracker-delivery']);
      assert.equal(new Set(ids).size, ids.length, `no event delivered twice: ${ids.join(' ')}`);
      const eventIds = delivered.map((entry) => (entry.json.data as { id: number }).id);
      assert.deepEqual(
        eventIds,
        [...eventIds].sort((x, y) => x - y),
        'in history order',
      );
      // Both replicas see the one state (once the last answer is recorded).
      await waitFor(
        async () => {
          const state = (await call(b.baseUrl, 'GET', `${API}/webhooks/pg`)).json as {
            delivery: { delivered: number };
          };
          return state.delivery.delivered === 20;
        },
        { what: 'twenty deliveries recorded, seen from the other replica' },
      );
    } finally {
      await Promise.all(replicas.map((replica) => replica.stop()));
      await receiver.close();
    }
  });
});
