import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ClientReadableStream, Metadata, type ServiceError } from '@grpc/grpc-js';
import { canonicalPeerSubject, parseSubject } from '../src/auth/client-certificate.js';
import { addToken, identityOf, parseTokenFile, readTokenFile, revokeToken } from '../src/auth/token-file.js';
import { type LockServiceClient, lockServiceClient, unaryOutcome } from './support/grpc-client.js';
import { API, call } from './support/rest.js';
import { FREE_ARGS, type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';
import { openSse } from './support/sse.js';
import { waitFor, within } from './support/wait-for.js';

interface LockJson {
  id: string;
  service: string;
  who: string;
  owner: string | null;
}

const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** A unary gRPC call with an optional bearer token; resolves with the response or the error. */
function grpcCall(
  client: LockServiceClient,
  method: string,
  request: object,
  token?: string,
): Promise<{ response?: Record<string, unknown>; error?: ServiceError }> {
  return unaryOutcome(
    client,
    method,
    request,
    token === undefined ? {} : { authorization: `Bearer ${token}` },
  );
}

/** The server's log lines that record lock event `event` for `service`. */
const eventLines = (server: ServerProcess, event: string, service: string) =>
  server.lines.filter(
    (line) => line.includes(`"event":"${event}"`) && line.includes(`"service":"${service}"`),
  );

describe('authentication and permissions (real server, tokens file)', () => {
  const dir = tempDir();
  const file = join(dir.path, 'tokens.yaml');
  const tokens = {
    reader: addToken(file, { name: 'reader', scopes: ['lock:read'] }),
    writer: addToken(file, { name: 'writer', scopes: ['lock:write'] }),
    other: addToken(file, { name: 'other', scopes: ['lock:write'] }),
    deployer: addToken(file, { name: 'deployer', scopes: ['lock:write'], services: ['deploy-*'] }),
    admin: addToken(file, { name: 'admin', scopes: ['lock:admin'] }),
  };
  let server: ServerProcess;
  let grpc: LockServiceClient;
  const rest = (method: string, path: string, token?: string, body?: unknown) =>
    call(server.baseUrl, method, `${API}${path}`, body, { headers: token ? bearer(token) : {} });
  const take = async (service: string, token: string) => {
    const reply = await rest('POST', '/lock', token, { service, who: 'job' });
    assert.equal(reply.status, 201, JSON.stringify(reply.json));
    return reply.json as unknown as LockJson;
  };

  before(async () => {
    server = await startServerProcess({
      args: [...FREE_ARGS, '--auth-tokens-file', file],
    });
    grpc = lockServiceClient(server.grpcAddress);
  });
  after(async () => {
    grpc?.close();
    await server?.stop();
    dir.remove();
  });

  test('/metrics counts every service: a token limited to some services is refused it', async () => {
    const scoped = await fetch(`${server.baseUrl}/metrics`, { headers: bearer(tokens.deployer) });
    assert.equal(scoped.status, 403);
    assert.deepEqual(await scoped.json(), {
      error: 'this token may use only some services, and /metrics covers every service',
      code: 'PERMISSION_DENIED',
    });
    const unrestricted = await fetch(`${server.baseUrl}/metrics`, { headers: bearer(tokens.reader) });
    assert.equal(unrestricted.status, 200);
    assert.match(await unrestricted.text(), /^tracker_locks_held \d+$/m);
  });

  test('the file holds hashes only, readable by its owner alone', () => {
    const text = readFileSync(file, 'utf8');
    for (const token of Object.values(tokens)) assert.equal(text.includes(token), false);
    assert.match(text, /sha256:[0-9a-f]{64}/);
  });

  test('no token, a forged one or a malformed header: 401 that names no token; health stays open', async () => {
    const forged = `trk_${Buffer.from(randomUUID()).toString('base64url')}`;
    for (const headers of [
      {},
      bearer(forged),
      { authorization: tokens.writer },
      bearer(`${tokens.writer}x`),
    ]) {
      const reply = await call(
        server.baseUrl,
        'POST',
        `${API}/lock`,
        { service: 's', who: 'w' },
        { headers },
      );
      assert.equal(reply.status, 401);
      assert.deepEqual(reply.json, { error: 'a valid bearer token is required', code: 'UNAUTHENTICATED' });
      assert.equal(reply.headers.get('www-authenticate'), 'Bearer realm="tracker"');
    }
    for (const path of ['/locks/list', '/history', '/watch', `/lock/${randomUUID()}`]) {
      assert.equal((await rest('GET', path)).status, 401, path);
    }
    assert.equal((await call(server.baseUrl, 'GET', '/metrics')).status, 401);
    assert.equal((await call(server.baseUrl, 'GET', '/healthz')).status, 200);
    assert.equal((await call(server.baseUrl, 'GET', '/readyz')).status, 200);
    const metrics = await fetch(`${server.baseUrl}/metrics`, { headers: bearer(tokens.reader) });
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /tracker_locks_held/);
    // Log lines are written asynchronously.
    await waitFor(
      () =>
        server.lines.some((line) => line.includes('"request refused"') && line.includes('UNAUTHENTICATED')),
      { what: 'the refusals in the log' },
    );
  });

  test('scopes: read sees but cannot take; write takes and owns; only the owner or an admin releases', async () => {
    const service = unique('scoped');
    const refused = await rest('POST', '/lock', tokens.reader, { service, who: 'job' });
    assert.equal(refused.status, 403);
    assert.equal(refused.json.code, 'PERMISSION_DENIED');
    const lock = await take(service, tokens.writer);
    assert.equal(lock.owner, 'writer');
    assert.equal(
      ((await rest('GET', `/lock/${lock.id}`, tokens.reader)).json as unknown as LockJson).owner,
      'writer',
    );
    for (const [method, path] of [
      ['DELETE', `/lock/${lock.id}`],
      ['GET', `/unlock/${lock.id}`],
      ['POST', `/lock/${lock.id}/renew`],
    ] as const) {
      const other = await rest(method, path, tokens.other);
      assert.equal(other.status, 403, `${method} ${path} by another token`);
      assert.equal(other.json.code, 'PERMISSION_DENIED');
      assert.equal((await rest(method, path, tokens.reader)).status, 403, `${method} ${path} by a reader`);
    }
    assert.equal((await rest('GET', `/lock/${lock.id}`, tokens.reader)).status, 200, 'still held');
    assert.equal(
      (await rest('POST', `/lock/${lock.id}/renew`, tokens.writer)).status,
      200,
      'its owner renews',
    );
    assert.equal((await rest('POST', `/lock/${lock.id}/force-release`, tokens.writer)).status, 403);
    const second = await take(unique('owned'), tokens.writer);
    assert.equal(
      (await rest('DELETE', `/lock/${second.id}`, tokens.writer)).status,
      200,
      'its owner releases',
    );
    assert.equal(
      (await rest('DELETE', `/lock/${lock.id}`, tokens.admin)).status,
      200,
      'an admin releases any lock',
    );
    assert.equal((await rest('DELETE', `/lock/${lock.id}`, tokens.other)).status, 404, 'gone: 404, not 403');
    const third = await take(unique('forced'), tokens.other);
    const forced = await rest('POST', `/lock/${third.id}/force-release`, tokens.admin, { reason: 'audit' });
    assert.equal(forced.status, 200);
    const [event] = (await rest('GET', `/history?service=${third.service}&limit=1`, tokens.reader)).json
      .events as { type: string; lock: LockJson; reason: string }[];
    assert.deepEqual([event?.type, event?.lock.owner, event?.reason], ['force-released', 'other', 'audit']);
  });

  test('service patterns: a deploy-* token takes deploy-x only, and sees only deploy-* locks', async () => {
    const mine = `deploy-${randomUUID().slice(0, 8)}`;
    const theirs = unique('billing');
    await take(mine, tokens.deployer);
    await take(theirs, tokens.writer);
    const refused = await rest('POST', '/lock', tokens.deployer, { service: theirs, who: 'job' });
    assert.equal(refused.status, 403);
    assert.match(String(refused.json.error), /may not use the service/);
    const listed = (await rest('GET', '/locks/list?per_page=1000', tokens.deployer)).json as {
      locks: LockJson[];
      total: number;
    };
    assert.ok(listed.locks.some((lock) => lock.service === mine));
    assert.ok(listed.locks.every((lock) => lock.service.startsWith('deploy-')));
    assert.equal(listed.total, listed.locks.length);
    assert.equal((await rest('GET', `/queue/${theirs}`, tokens.deployer)).status, 403);
    assert.equal((await rest('GET', `/history?service=${theirs}`, tokens.deployer)).status, 403);
    const history = (await rest('GET', '/history?limit=1000', tokens.deployer)).json.events as LockJson[];
    assert.ok(history.length > 0 && history.every((event) => event.service.startsWith('deploy-')));

    const stream = await openSse(`${server.baseUrl}${API}/watch`, bearer(tokens.deployer));
    try {
      const snapshot = await stream.next();
      const services = (snapshot.json as { locks: LockJson[] }).locks.map((lock) => lock.service);
      assert.ok(services.includes(mine) && !services.includes(theirs));
      await take(unique('hidden'), tokens.writer);
      const visible = `deploy-${randomUUID().slice(0, 8)}`;
      await take(visible, tokens.deployer);
      const next = await stream.next();
      assert.equal((next.json as { service: string }).service, visible, 'the hidden service never shows');
    } finally {
      stream.close();
    }
    assert.equal((await rest('GET', `/watch?service=${theirs}`, tokens.deployer)).status, 403);
  });

  test('gRPC: the same rules through metadata; reflection and health need no token', async () => {
    const service = unique('grpc-auth');
    const none = await grpcCall(grpc, 'CreateLock', { service, who: 'job' });
    assert.equal(none.error?.code, 16, 'UNAUTHENTICATED');
    assert.equal(none.error?.metadata.get('tracker-code')[0], 'UNAUTHENTICATED');
    const forged = await grpcCall(grpc, 'CreateLock', { service, who: 'job' }, 'trk_forged');
    assert.equal(forged.error?.code, 16);
    const reader = await grpcCall(grpc, 'CreateLock', { service, who: 'job' }, tokens.reader);
    assert.equal(reader.error?.code, 7, 'PERMISSION_DENIED');
    const created = await grpcCall(grpc, 'CreateLock', { service, who: 'job' }, tokens.writer);
    assert.equal(created.response?.owner, 'writer');
    const id = String(created.response?.id);
    assert.equal((await grpcCall(grpc, 'UnLock', { id }, tokens.other)).error?.code, 7);
    assert.equal((await grpcCall(grpc, 'ForceReleaseLock', { id }, tokens.writer)).error?.code, 7);
    assert.equal((await grpcCall(grpc, 'GetLock', { id }, tokens.reader)).response?.id, id);
    assert.equal((await grpcCall(grpc, 'UnLock', { id }, tokens.writer)).response?.success, true);
  });

  test('gRPC WatchLocks: a token is needed, and a deploy-* token sees deploy-* only', async () => {
    const watch = (token: string | undefined, request: object = {}) => {
      const metadata = new Metadata();
      if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
      const start = grpc.WatchLocks as (
        request: object,
        metadata: Metadata,
        options: object,
      ) => ClientReadableStream<Record<string, Record<string, unknown>>>;
      const stream = start.call(grpc, request, metadata, { deadline: Date.now() + 10_000 });
      const messages: Record<string, Record<string, unknown>>[] = [];
      stream.on('data', (message) => messages.push(message));
      const status = new Promise<number>((resolve) =>
        stream.on('status', (s: { code: number }) => resolve(s.code)),
      );
      stream.on('error', () => {});
      return { stream, messages, status };
    };
    assert.equal(await watch(undefined).status, 16, 'UNAUTHENTICATED');
    assert.equal(await watch(tokens.deployer, { service: unique('billing') }).status, 7, 'PERMISSION_DENIED');
    const deployer = watch(tokens.deployer);
    try {
      await waitFor(() => deployer.messages.length > 0, { what: 'the snapshot' });
      await take(unique('hidden'), tokens.writer);
      const visible = `deploy-${randomUUID().slice(0, 8)}`;
      await take(visible, tokens.deployer);
      // Events come in order: once the visible one is here, the hidden one would have been too.
      await waitFor(() => deployer.messages.some((message) => message.event?.service === visible), {
        what: 'the event of the visible service',
      });
      const services = deployer.messages.slice(1).map((message) => message.event?.service);
      assert.deepEqual(services, [visible]);
      const snapshotLocks = (deployer.messages[0]?.snapshot?.locks ?? []) as { service: string }[];
      assert.ok(snapshotLocks.every((lock) => lock.service.startsWith('deploy-')));
    } finally {
      deployer.stream.cancel();
    }
  });

  test('a token added to the file works without a restart; one revoked stops working after SIGHUP', async () => {
    const late = addToken(file, { name: `late-${randomUUID().slice(0, 6)}`, scopes: ['lock:read'] });
    await waitFor(async () => (await rest('GET', '/locks/list', late)).status === 200, {
      what: 'the new token accepted (file watch)',
    });
    assert.equal(revokeToken(file, 'other'), true);
    server.child.kill('SIGHUP');
    // The file watch would reload the file too: the SIGHUP reload must show in the log.
    await waitFor(
      () =>
        server.lines.some((line) => line.includes('"tokens reloaded"') && line.includes('"why":"SIGHUP"')),
      { what: 'the reload on SIGHUP' },
    );
    assert.equal(
      (await rest('GET', '/locks/list', tokens.other)).status,
      401,
      'the revoked token is refused',
    );
    assert.equal((await rest('GET', '/locks/list', tokens.writer)).status, 200, 'the others still work');
  });
});

describe('limits (real server)', () => {
  const dir = tempDir();
  const file = join(dir.path, 'tokens.json');
  const busy = addToken(file, { name: 'busy', scopes: ['lock:write'] });
  const calm = addToken(file, { name: 'calm', scopes: ['lock:write'] });
  let server: ServerProcess;
  const rest = (method: string, path: string, token: string, body?: unknown) =>
    call(server.baseUrl, method, `${API}${path}`, body, { headers: bearer(token) });
  // One request an hour: a token's bucket never refills during the tests, so a token may make
  // exactly BURST calls, whatever the machine's speed.
  const BURST = 20;

  before(async () => {
    server = await startServerProcess({
      args: [
        ...FREE_ARGS,
        ...['--auth-tokens-file', file, '--rate-limit', '1/h', '--rate-limit-burst', String(BURST)],
        ...['--max-waiters-per-service', '2', '--headers-timeout', '1s'],
      ],
    });
  });
  after(async () => {
    await server?.stop();
    dir.remove();
  });

  test('rate limit: per token, 429 with Retry-After, RESOURCE_EXHAUSTED on gRPC', async () => {
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i <= BURST; i++) {
      const reply = await rest('GET', '/locks/list', busy);
      statuses.push(reply.status);
      if (reply.status === 429) {
        retryAfter = reply.headers.get('retry-after');
        assert.equal(reply.json.code, 'RATE_LIMITED');
      }
    }
    assert.deepEqual(statuses, [...Array<number>(BURST).fill(200), 429], 'the burst passes, then 429');
    assert.ok(retryAfter !== null && Number(retryAfter) >= 1 && Number(retryAfter) <= 3600, `${retryAfter}`);
    assert.equal((await rest('GET', '/locks/list', calm)).status, 200, 'another token has its own bucket');
    const client = lockServiceClient(server.grpcAddress);
    try {
      const answer = await grpcCall(client, 'ListLocks', {}, busy);
      assert.equal(answer.error?.code, 8, 'RESOURCE_EXHAUSTED');
      assert.equal(answer.error?.metadata.get('tracker-code')[0], 'RATE_LIMITED');
      assert.ok(Number(answer.error?.metadata.get('retry-after')[0]) >= 1);
      assert.equal((await grpcCall(client, 'ListLocks', {}, calm)).error, undefined, 'calm is served');
    } finally {
      client.close();
    }
    await waitFor(() => server.lines.some((line) => line.includes('RATE_LIMITED')), {
      what: 'the refusal in the log',
    });
  });

  test('a full queue answers 429 QUEUE_FULL', async () => {
    const service = unique('queue');
    const holder = await rest('POST', '/lock', calm, { service, who: 'holder' });
    assert.equal(holder.status, 201);
    const waiting = [1, 2].map((i) =>
      rest('POST', '/lock', calm, { service, who: `w${i}`, waitSeconds: 10 }).then((reply) => ({ reply, i })),
    );
    await waitFor(() => eventLines(server, 'queued', service).length === 2, { what: 'two requests in line' });
    const third = await rest('POST', '/lock', calm, { service, who: 'w3', waitSeconds: 3 });
    assert.equal(third.status, 429);
    assert.equal(third.json.code, 'QUEUE_FULL');
    assert.equal((await rest('DELETE', `/lock/${holder.json.id}`, calm)).status, 200);
    // One waiter gets the lock; the other still waits, and gets it when that one releases it.
    const first = await Promise.race(waiting);
    assert.equal(first.reply.status, 201, JSON.stringify(first.reply.json));
    const queue = await rest('GET', `/queue/${service}`, calm);
    assert.deepEqual(
      (queue.json.waiters as { who: string }[]).map((waiter) => waiter.who),
      [`w${3 - first.i}`],
      'the other one still waits',
    );
    assert.equal((await rest('DELETE', `/lock/${first.reply.json.id}`, calm)).status, 200);
    const second = (await waiting[2 - first.i])?.reply;
    assert.equal(second?.status, 201, JSON.stringify(second?.json));
    assert.ok(Number(second?.json.fencingToken) > Number(first.reply.json.fencingToken));
    assert.equal((await rest('DELETE', `/lock/${second?.json.id}`, calm)).status, 200);
  });

  test('a client that sends its headers too slowly is cut off; others are served meanwhile', async () => {
    const address = new URL(server.baseUrl);
    const socket = net.connect(Number(address.port), address.hostname);
    const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())));
    socket.on('error', () => {});
    let answer = '';
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString();
    });
    await within(new Promise<void>((resolve) => socket.once('connect', () => resolve())), {
      what: 'the connection',
    });
    const opened = Date.now();
    socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    // The client under test: a header line every 300 ms, never the end of the headers.
    const trickle = setInterval(() => socket.writable && socket.write('X-Slow: 1\r\n'), 300);
    try {
      assert.equal((await call(server.baseUrl, 'GET', '/healthz')).status, 200);
      const at = await within(closed, { what: 'the server to close the slow connection', timeoutMs: 10_000 });
      const after = at - opened;
      assert.ok(after >= 900 && after < 5000, `closed after ${after} ms`);
      assert.match(answer, /^HTTP\/1\.1 408 /);
      assert.match(answer, /\{"error":"the request was not received in time","code":"REQUEST_TIMEOUT"\}$/);
    } finally {
      clearInterval(trickle);
      socket.destroy();
    }
  });
});

/** One server without authentication, on loopback, for the tests below. */
describe('a server without authentication', () => {
  let server: ServerProcess;

  before(async () => {
    server = await startServerProcess({ args: [...FREE_ARGS, '--max-locks', '4'] });
  });
  after(async () => {
    await server?.stop();
  });

  test('a gRPC request larger than 64 KiB is refused with RESOURCE_EXHAUSTED, and the server carries on', async () => {
    const client = lockServiceClient(server.grpcAddress);
    try {
      const huge = await grpcCall(client, 'CreateLock', { service: 'x'.repeat(70 * 1024), who: 'w' });
      assert.equal(huge.error?.code, 8, 'RESOURCE_EXHAUSTED');
      const service = unique('small');
      const fine = await grpcCall(client, 'CreateLock', { service, who: 'w' });
      assert.equal(fine.response?.service, service);
    } finally {
      client.close();
    }
  });

  test('more locks than --max-locks answer 429 TOO_MANY_LOCKS', async () => {
    // No lock on this server is ever released: the count of held locks it checks against
    // (at most a second old, plus its own acquires since) is exact.
    const held = Number((await call(server.baseUrl, 'GET', `${API}/locks/list`)).json.total);
    assert.ok(held < 4, `${held} locks held already`);
    for (let i = held; i < 4; i++) {
      const reply = await call(server.baseUrl, 'POST', `${API}/lock`, { service: unique('many'), who: 'w' });
      assert.equal(reply.status, 201, `lock ${i + 1} of 4`);
    }
    const over = await call(server.baseUrl, 'POST', `${API}/lock`, { service: unique('many'), who: 'w' });
    assert.equal(over.status, 429);
    assert.equal(over.json.code, 'TOO_MANY_LOCKS');
    assert.equal((await call(server.baseUrl, 'GET', `${API}/locks/list`)).json.total, 4);
  });

  test('listening beyond loopback without tokens logs a warning; on loopback it does not', async () => {
    const open = await startServerProcess({ args: ['--host', '0.0.0.0', ...FREE_ARGS] });
    try {
      // The warning comes before the "tracker listening" line, which both have written.
      const warned = (server: ServerProcess) =>
        server.lines.some((line) => line.includes('"level":40') && line.includes('authentication is off'));
      assert.equal(warned(open), true);
      assert.equal(warned(server), false);
      const reply = await call(`http://127.0.0.1:${open.httpPort}`, 'POST', `${API}/lock`, {
        service: 's',
        who: 'w',
      });
      assert.equal(reply.status, 201, 'open as before');
      assert.equal(reply.json.owner, null);
    } finally {
      await open.stop();
    }
  });
});

describe('the tokens file', () => {
  test('create and revoke keep the comments of a YAML file; a JSON file stays JSON; only hashes are written', () => {
    const dir = tempDir();
    try {
      const yaml = join(dir.path, 'tokens.yaml');
      const first = addToken(yaml, { name: 'first', scopes: ['lock:read'] });
      const edited = readFileSync(yaml, 'utf8').replace(/^tokens:/m, '# owned by the platform team\ntokens:');
      writeFileSync(yaml, edited);
      const second = addToken(yaml, { name: 'second', scopes: ['lock:write'], services: ['deploy-*'] });
      assert.equal(revokeToken(yaml, 'first'), true);
      assert.equal(revokeToken(yaml, 'first'), false);
      const text = readFileSync(yaml, 'utf8');
      assert.match(text, /^# owned by the platform team$/m);
      assert.match(text, /^tokens:\n {2}- name: second$/m, 'block YAML, not JSON');
      assert.equal(text.includes(first) || text.includes(second), false);
      assert.deepEqual(
        readTokenFile(yaml).map((token) => [token.name, token.scopes, token.services]),
        [['second', ['lock:write'], ['deploy-*']]],
      );
      assert.equal((statSync(yaml).mode & 0o777).toString(8), '600');

      const json = join(dir.path, 'tokens.json');
      addToken(json, { name: 'a', scopes: ['lock:admin'] });
      addToken(json, { name: 'b', scopes: ['lock:read'] });
      assert.equal(revokeToken(json, 'a'), true);
      const parsed = JSON.parse(readFileSync(json, 'utf8')) as { tokens: { name: string }[] };
      assert.deepEqual(
        parsed.tokens.map((token) => token.name),
        ['b'],
      );
      assert.throws(() => addToken(json, { name: 'b', scopes: ['lock:read'] }), /exists already/);
    } finally {
      dir.remove();
    }
  });

  test('certificate subjects: attributes in any order, names in any case, exact values; entries need a hash or a subject', () => {
    const subject = parseSubject('CN=ci-runner,O=Example');
    assert.equal(subject, 'CN=ci-runner\nO=Example');
    assert.equal(parseSubject(' o=Example ,  CN=ci-runner '), subject);
    assert.equal(canonicalPeerSubject('O=Example\nCN=ci-runner'), subject, "Node's form of the same subject");
    assert.notEqual(canonicalPeerSubject('O=Example\nCN=ci-runner\nC=US'), subject, 'one attribute more');
    assert.notEqual(parseSubject('CN=CI-Runner,O=Example'), subject, 'values are exact');
    assert.equal(parseSubject('CN=a\\,b,O=x\\=y'), 'CN=a,b\nO=x=y', 'escaped commas and equals signs');
    for (const bad of ['', 'CN', '=x', 'CN=', 'CN=a,,O=b', '1N=a'])
      assert.equal(parseSubject(bad), null, bad);

    const hash = `sha256:${'a'.repeat(64)}`;
    const entries = parseTokenFile(
      JSON.stringify({
        tokens: [
          { name: 'both', hash, certificateSubject: 'CN=both', scopes: ['lock:read'] },
          { name: 'cert', certificateSubject: 'CN=cert', scopes: ['lock:read'] },
        ],
      }),
      'tokens.json',
    );
    assert.deepEqual(
      entries.map((entry) => identityOf(entry)),
      [`sha256:${'a'.repeat(32)}`, identityOf({ certificateSubject: 'CN=cert' })],
    );
    assert.match(identityOf({ certificateSubject: 'CN=cert' }), /^subject:[0-9a-f]{32}$/);
    assert.equal(
      identityOf({ certificateSubject: 'CN=cert' }),
      identityOf({ certificateSubject: ' cn=cert' }),
    );
    for (const [tokens, pattern] of [
      [[{ name: 'none', scopes: ['lock:read'] }], /needs a hash \(of a token\) or a certificateSubject/],
      [
        [{ name: 'bad', certificateSubject: 'ci-runner', scopes: ['lock:read'] }],
        /certificateSubject must be/,
      ],
      [
        [
          { name: 'a', certificateSubject: 'CN=x,O=y', scopes: ['lock:read'] },
          { name: 'b', certificateSubject: 'O=y,CN=x', scopes: ['lock:read'] },
        ],
        /tokens\[1\]\.certificateSubject is used twice/,
      ],
    ] as const) {
      assert.throws(() => parseTokenFile(JSON.stringify({ tokens }), 'tokens.json'), pattern);
    }
  });
});
