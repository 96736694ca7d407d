/**
 * Failed authentications are limited per client address (REST and gRPC share the allowance),
 * logged once per address and interval, and counted; behind a reverse proxy the client
 * address comes from X-Forwarded-For (--trust-proxy), by the rightmost-untrusted-hop rule.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ServiceError, status } from '@grpc/grpc-js';
import { clientAddress, failureKey, proxyTrust } from '../src/auth/client-address.js';
import { addToken } from '../src/auth/token-file.js';
import { type LockServiceClient, lockServiceClient, unaryOutcome } from './support/grpc-client.js';
import { API, call } from './support/rest.js';
import { FREE_ARGS, type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

const FORGED = `trk_${'A'.repeat(43)}`;

/** A unary gRPC call with the given metadata; resolves with the response or the error. */
function grpcCall(
  client: LockServiceClient,
  method: string,
  request: object,
  entries: Record<string, string>,
): Promise<{ response?: Record<string, unknown>; error?: ServiceError }> {
  return unaryOutcome(client, method, request, entries);
}

describe('the client address and the failure key (pure functions)', () => {
  test('rightmost untrusted hop: the peer first, then X-Forwarded-For from its end', () => {
    const hops = proxyTrust({ hops: 1 });
    assert.equal(clientAddress('10.0.0.1', undefined, hops), '10.0.0.1');
    assert.equal(clientAddress('10.0.0.1', '198.51.100.9, 203.0.113.50', hops), '203.0.113.50');
    assert.equal(clientAddress('10.0.0.1', '203.0.113.50', undefined), '10.0.0.1', 'no trust: the peer');
    assert.equal(clientAddress('10.0.0.1', '1.1.1.1, 2.2.2.2, 3.3.3.3', proxyTrust({ hops: 2 })), '2.2.2.2');
    const listed = proxyTrust({ addresses: ['loopback', '10.0.0.0/8'] });
    assert.equal(
      clientAddress('::ffff:127.0.0.1', '198.51.100.9, 203.0.113.50, 10.1.2.3', listed),
      '203.0.113.50',
    );
    assert.equal(
      clientAddress('192.0.2.1', '203.0.113.50', listed),
      '192.0.2.1',
      'an untrusted peer is the client',
    );
    assert.equal(
      clientAddress('127.0.0.1', '10.0.0.2, 10.0.0.3', listed),
      '10.0.0.2',
      'all trusted: the leftmost',
    );
    assert.equal(clientAddress('127.0.0.1', ' , 203.0.113.1 ,, ', listed), '203.0.113.1');
    assert.equal(listed('not an address', 0), false);
  });

  test('an IPv6 client counts by its /64; IPv4 (also mapped) by its address', () => {
    assert.equal(failureKey('203.0.113.7'), '203.0.113.7');
    assert.equal(failureKey('::ffff:203.0.113.7'), '203.0.113.7');
    assert.equal(failureKey('2001:db8:1:2::1'), '2001:db8:1:2::/64');
    assert.equal(failureKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64');
    assert.equal(failureKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(failureKey('::1'), '0:0:0:0::/64');
    assert.equal(failureKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
  });
});

describe('failed authentications against a rate limit (the probe: 30 bad tokens, --rate-limit 5/s)', () => {
  const dir = tempDir();
  const file = join(dir.path, 'tokens.yaml');
  addToken(file, { name: 'ci', scopes: ['lock:write'] });
  let server: ServerProcess;

  before(async () => {
    server = await startServerProcess({
      args: [...FREE_ARGS, '--auth-tokens-file', file, '--rate-limit', '5/s'],
    });
  });
  after(async () => {
    await server?.stop();
    dir.remove();
  });

  test('past the allowance of failures (20 at once, then one a second), an address gets 429', async () => {
    const started = performance.now();
    const replies = [];
    for (let i = 0; i < 30; i++) {
      replies.push(
        await call(server.baseUrl, 'GET', `${API}/locks/list`, undefined, {
          headers: { authorization: `Bearer ${FORGED}${i}` },
        }),
      );
    }
    const seconds = (performance.now() - started) / 1000;
    const statuses = replies.map((reply) => reply.status);
    assert.deepEqual(statuses.slice(0, 20), Array<number>(20).fill(401), statuses.join(' '));
    const limited = replies.filter((reply) => reply.status === 429);
    assert.ok(limited.length > 0, `some 429 among ${statuses.join(' ')}`);
    assert.ok(
      statuses.filter((code) => code === 401).length <= 21 + seconds,
      'one more failure a second at most',
    );
    for (const reply of limited) {
      assert.equal(reply.json.code, 'RATE_LIMITED');
      assert.ok(Number(reply.headers.get('retry-after')) >= 1);
    }
  });
});

describe('failed authentications behind a trusted proxy (X-Forwarded-For)', () => {
  const dir = tempDir();
  const file = join(dir.path, 'tokens.yaml');
  const token = addToken(file, { name: 'ci', scopes: ['lock:write'] });
  let server: ServerProcess;
  let grpc: LockServiceClient;
  const from = (address: string, authorization?: string) => ({
    headers: { 'x-forwarded-for': address, ...(authorization ? { authorization } : {}) },
  });
  const list = (address: string, authorization?: string) =>
    call(server.baseUrl, 'GET', `${API}/locks/list`, undefined, from(address, authorization));
  const warnings = (address: string) =>
    server.lines.filter(
      (line) =>
        line.includes('"authentication failures from this address') &&
        line.includes(`"address":"${address}"`),
    );

  before(async () => {
    server = await startServerProcess({
      args: [
        ...FREE_ARGS,
        ...['--auth-tokens-file', file, '--trust-proxy', 'loopback'],
        // No refill during the tests: an address may fail exactly three times.
        ...['--auth-failure-limit', '1/h', '--auth-failure-burst', '3'],
      ],
    });
    grpc = lockServiceClient(server.grpcAddress);
  });
  after(async () => {
    grpc?.close();
    await server?.stop();
    dir.remove();
  });

  test('REST: three failures, then every request from that address answers 429, a correct token too; other addresses are served', async () => {
    const address = '203.0.113.7';
    for (let i = 0; i < 3; i++) assert.equal((await list(address, `Bearer ${FORGED}`)).status, 401);
    for (const authorization of [`Bearer ${FORGED}`, undefined, `Bearer ${token}`]) {
      const reply = await list(address, authorization);
      assert.equal(reply.status, 429, `${authorization}`);
      assert.equal(reply.json.code, 'RATE_LIMITED');
      assert.ok(Number(reply.headers.get('retry-after')) > 60, 'an hour to refill');
    }
    assert.equal((await list('203.0.113.8', `Bearer ${token}`)).status, 200, 'another client');
    // One warning for the address however many 429s, and no per-request refusal line for them.
    await waitFor(() => warnings(address).length === 1, { what: 'the warning' });
    assert.equal(warnings(address).length, 1);
    assert.equal(
      server.lines.filter(
        (line) =>
          line.includes('"request refused"') &&
          line.includes(`"ip":"${address}"`) &&
          line.includes('RATE_LIMITED'),
      ).length,
      0,
    );
    const metrics = await fetch(`${server.baseUrl}/metrics`, {
      headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': '203.0.113.9' },
    });
    const text = await metrics.text();
    assert.match(text, /tracker_auth_failures_total\{result="refused"\} [3-9]/);
    assert.match(text, /tracker_auth_failures_total\{result="limited"\} [3-9]/);
  });

  test('gRPC: the same allowance, keyed by x-forwarded-for metadata, shared with REST', async () => {
    const address = '203.0.113.20';
    for (let i = 0; i < 2; i++) {
      const refused = await grpcCall(
        grpc,
        'ListLocks',
        {},
        { authorization: `Bearer ${FORGED}`, 'x-forwarded-for': address },
      );
      assert.equal(refused.error?.code, status.UNAUTHENTICATED);
    }
    assert.equal((await list(address, `Bearer ${FORGED}`)).status, 401, 'the third failure, over REST');
    for (const authorization of [`Bearer ${FORGED}`, `Bearer ${token}`]) {
      const limited = await grpcCall(grpc, 'ListLocks', {}, { authorization, 'x-forwarded-for': address });
      assert.equal(limited.error?.code, status.RESOURCE_EXHAUSTED);
      assert.equal(limited.error?.metadata.get('tracker-code')[0], 'RATE_LIMITED');
      assert.ok(Number(limited.error?.metadata.get('retry-after')[0]) > 60);
    }
    const served = await grpcCall(
      grpc,
      'ListLocks',
      {},
      { authorization: `Bearer ${token}`, 'x-forwarded-for': '203.0.113.21' },
    );
    assert.equal(served.error, undefined);
    await waitFor(() => warnings(address).length === 1, { what: 'the warning' });
  });

  test('an IPv6 client counts by its /64: changing the rest of its address does not reset its allowance', async () => {
    for (const address of ['2001:db8:1:2::1', '2001:db8:1:2::2', '2001:db8:1:2:aaaa::3']) {
      assert.equal((await list(address, `Bearer ${FORGED}`)).status, 401, address);
    }
    assert.equal((await list('2001:db8:1:2:ffff::ffff', `Bearer ${FORGED}`)).status, 429);
    assert.equal((await list('2001:db8:1:3::1', `Bearer ${FORGED}`)).status, 401, 'another /64');
  });

  test('the client is the rightmost untrusted hop: what it writes to the left of it is ignored', async () => {
    const address = (forwarded: string) => list(forwarded, `Bearer ${FORGED}`).then(() => forwarded);
    await address('198.51.100.99, 203.0.113.50');
    await address('203.0.113.60, 127.0.0.1');
    const refusedFrom = (ip: string) =>
      server.lines.some((line) => line.includes('"request refused"') && line.includes(`"ip":"${ip}"`));
    await waitFor(() => refusedFrom('203.0.113.50') && refusedFrom('203.0.113.60'), {
      what: 'the refusals, by client address',
    });
    assert.equal(refusedFrom('198.51.100.99'), false, 'a spoofed entry left of the client');
  });
});

describe('--trust-proxy decides which address the rate limit counts (authentication off)', () => {
  const limitedServer = (trust: string[]) =>
    startServerProcess({ args: [...FREE_ARGS, '--rate-limit', '1/h', '--rate-limit-burst', '2', ...trust] });

  test('without it, X-Forwarded-For is ignored: every client behind the proxy shares one bucket', async () => {
    const server = await limitedServer([]);
    try {
      const statuses = [];
      for (const forwarded of ['203.0.113.1', '203.0.113.2', '203.0.113.3']) {
        statuses.push(
          (
            await call(server.baseUrl, 'GET', `${API}/locks/list`, undefined, {
              headers: { 'x-forwarded-for': forwarded },
            })
          ).status,
        );
      }
      assert.deepEqual(statuses, [200, 200, 429]);
    } finally {
      await server.stop();
    }
  });

  test('with one trusted hop, each client has its own bucket, and a spoofed left entry changes nothing', async () => {
    const server = await limitedServer(['--trust-proxy', '1']);
    const client = lockServiceClient(server.grpcAddress);
    try {
      const get = (forwarded: string) =>
        call(server.baseUrl, 'GET', `${API}/locks/list`, undefined, {
          headers: { 'x-forwarded-for': forwarded },
        }).then((reply) => reply.status);
      assert.deepEqual(
        [await get('203.0.113.1'), await get('203.0.113.2'), await get('203.0.113.3')],
        [200, 200, 200],
        'three clients',
      );
      assert.deepEqual(
        [
          await get('1.1.1.1, 203.0.113.5'),
          await get('2.2.2.2, 203.0.113.5'),
          await get('3.3.3.3, 203.0.113.5'),
        ],
        [200, 200, 429],
        'one client, whatever it puts before its address',
      );
      const viaGrpc = await grpcCall(client, 'ListLocks', {}, { 'x-forwarded-for': '9.9.9.9, 203.0.113.5' });
      assert.equal(viaGrpc.error?.code, status.RESOURCE_EXHAUSTED, 'gRPC counts the same client');
      assert.equal(
        (await grpcCall(client, 'ListLocks', {}, { 'x-forwarded-for': '203.0.113.6' })).error,
        undefined,
      );
    } finally {
      client.close();
      await server.stop();
    }
  });
});
